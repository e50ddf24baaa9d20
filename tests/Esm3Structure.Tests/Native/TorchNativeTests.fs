module Esm3Structure.Tests.Native.TorchNativeTests

open System.IO
open Expecto
open TorchSharp
open Esm3Structure.Native

let private nativeDir = TorchNative.nativeDirBeside System.AppContext.BaseDirectory
let private wrapper = Path.Combine(nativeDir, "libLibTorchSharp.so")

[<Tests>]
let tests =
    testList
        "Native/TorchNative"
        [
            test "a tensor op works after ensureLoaded" {
                TorchNative.ensureLoaded () |> ignore
                use x = torch.arange(6L, dtype = torch.float64).reshape(2L, 3L)
                Expect.equal ((x.matmul (x.t ())).sum().ToDouble()) 83.0 "sum of x xᵀ (5 + 14 + 14 + 50)"
            }

            test "the wrapper's version requirements are read from its ELF header" {
                let needs = TorchNative.versionNeeds (File.ReadAllBytes wrapper)

                Expect.isTrue
                    (needs
                     |> List.exists (fun n -> n.File = "libstdc++.so.6" && n.Version = "GLIBCXX_3.4.32"))
                    "GLIBCXX_3.4.32 listed"

                Expect.isTrue (needs |> List.exists (fun n -> n.Version.StartsWith "GLIBC_")) "glibc versions listed"
            }

            test "markWeak changes only the flags of the named requirement" {
                let original = File.ReadAllBytes wrapper
                let patched, changed = TorchNative.markWeak (set [ "GLIBCXX_3.4.32" ]) original
                Expect.equal changed [ "GLIBCXX_3.4.32" ] "one requirement changed"

                let diffs =
                    Array.zip original patched
                    |> Array.filter (fun (a, b) -> a <> b)
                    |> Array.length

                Expect.equal diffs 1 "one byte differs"

                let need =
                    TorchNative.versionNeeds patched
                    |> List.find (fun n -> n.Version = "GLIBCXX_3.4.32")

                Expect.equal (need.Flags &&& 2us) 2us "weak flag set"
                let again, changed2 = TorchNative.markWeak (set [ "GLIBCXX_3.4.32" ]) patched
                Expect.isEmpty changed2 "idempotent"
                Expect.equal again patched "no further change"
            }

            test "the patch is applied only where the loaded libstdc++ lacks the version" {
                let missing = TorchNative.missingLibstdcxxVersions wrapper

                match TorchNative.loadedLibstdcxx () with
                | Some lib when TorchNative.mentionsVersion lib "GLIBCXX_3.4.32" ->
                    Expect.isEmpty missing "nothing missing"
                | Some _ -> Expect.equal missing [ "GLIBCXX_3.4.32" ] "exactly the one known version"
                | None -> Expect.isEmpty missing "no libstdc++ mapped"
            }

            test "a non-ELF file is rejected with a clear message" {
                Expect.throwsT<InvalidDataException>
                    (fun () -> TorchNative.versionNeeds [| 1uy; 2uy; 3uy |] |> ignore)
                    "rejected"
            }
        ]
