namespace Esm3Structure.Tests

open Expecto
open Esm3Structure.Training

/// Helpers for tests of failures: expected exceptions and training runs that crash part-way.
[<AutoOpen>]
module Faults =

    /// Runs `f` and returns the exception of type 'E it raises (fails the test otherwise).
    let raises<'E when 'E :> exn> (what: string) (f: unit -> unit) : 'E =
        try
            f ()
            failtestf "%s: no exception" what
        with :? 'E as e ->
            e

/// Delegates to a training task and throws at step `crashAt` (1-based): a run killed part-way, for resume tests.
type CrashingTask(inner: TrainingTask, crashAt: int) =
    inherit TrainingTask()
    override _.Model = inner.Model
    override _.Generators = inner.Generators

    override _.Step(step: int) =
        if step + 1 = crashAt then
            failwith "simulated crash"

        inner.Step step

    override _.Evaluate() = inner.Evaluate()
    override _.Export(folder: string) = inner.Export folder
