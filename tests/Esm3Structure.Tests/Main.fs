module Esm3Structure.Tests.Main

open System
open Expecto
open Expecto.Impl

let mutable private counts = (0, 0)

/// Expecto's printer, plus a capture of the run's counts for the plain closing line CI reads, and one line per
/// failing property with what replays it (`build.fsx properties` collects these lines).
let private printer =
    let d = TestPrinters.defaultPrinter

    { d with
        summary =
            fun cfg summary ->
                async {
                    do! d.summary cfg summary
                    counts <- (summary.passed.Length, summary.failed.Length + summary.errored.Length)

                    for flat, s in summary.failed @ summary.errored do
                        let message =
                            match s.result with
                            | TestResult.Failed m -> m
                            | TestResult.Error e -> string e
                            | _ -> ""

                        match Props.replaySeeds message with
                        | Some(run, case) ->
                            Console.Out.WriteLine(
                                sprintf
                                    "property failed: %s | run ESM3_PROPERTY_SEED=\"%s\" | case ESM3_PROPERTY_SEED=\"%s\""
                                    (cfg.joinWith.format flat.name)
                                    run
                                    case
                            )
                        | None -> ()
                }
    }

/// Tests run one at a time: TorchSharp 0.107 frees the `Scalar`s that operators like `x * 2.0` create implicitly
/// from the GC finalizer, without keeping them alive across the native call, so a collection triggered by
/// another thread's allocations can free a scalar that a native op is still reading (seen as
/// "Expected false to be true ... Scalar.h" under parallel load; dotnet/TorchSharp PR #1434 is the upstream fix).
/// `--only-properties` (ours, before Expecto's own arguments) runs the FsCheck properties alone (`Props.isProperty`).
[<EntryPoint>]
let main argv =
    Esm3Structure.Native.TorchNative.ensureLoaded () |> ignore
    let onlyProperties = Array.contains "--only-properties" argv
    let args = argv |> Array.filter ((<>) "--only-properties")

    let all = testFromThisAssembly () |> Option.defaultValue (TestList([], Normal))

    let tests =
        if onlyProperties then
            Props.onlyProperties all |> Option.defaultValue (TestList([], Normal))
        else
            all

    let rc =
        runTestsWithCLIArgs [ Printer printer; No_Spinner; Colours 0; Sequenced ] args tests

    Console.Out.Flush()
    Console.Out.WriteLine()
    Console.Out.WriteLine(sprintf "%d passed, %d failed" (fst counts) (snd counts))
    rc
