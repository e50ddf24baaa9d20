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

[<EntryPoint>]
let main argv =
    Esm3Structure.Native.TorchNative.ensureLoaded () |> ignore

    let rc =
        runTestsInAssemblyWithCLIArgs [ Printer printer; No_Spinner; Colours 0 ] argv

    Console.Out.Flush()
    Console.Out.WriteLine()
    Console.Out.WriteLine(sprintf "%d passed, %d failed" (fst counts) (snd counts))
    rc
