module Esm3Structure.Tests.Main

open System
open Expecto
open Expecto.Impl

let mutable private counts = (0, 0)

/// Expecto's printer, plus a capture of the run's counts for the plain closing line CI reads.
let private printer =
    let d = TestPrinters.defaultPrinter

    { d with
        summary =
            fun cfg summary ->
                async {
                    do! d.summary cfg summary
                    counts <- (summary.passed.Length, summary.failed.Length + summary.errored.Length)
                }
    }

/// Tests run one at a time: TorchSharp 0.107 frees the `Scalar`s that operators like `x * 2.0` create implicitly
/// from the GC finalizer, without keeping them alive across the native call, so a collection triggered by
/// another thread's allocations can free a scalar that a native op is still reading (seen as
/// "Expected false to be true ... Scalar.h" under parallel load; dotnet/TorchSharp PR #1434 is the upstream fix).
[<EntryPoint>]
let main argv =
    Esm3Structure.Native.TorchNative.ensureLoaded () |> ignore

    let rc =
        runTestsInAssemblyWithCLIArgs [ Printer printer; No_Spinner; Colours 0; Sequenced ] argv

    Console.Out.Flush()
    Console.Out.WriteLine()
    Console.Out.WriteLine(sprintf "%d passed, %d failed" (fst counts) (snd counts))
    rc
