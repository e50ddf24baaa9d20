namespace Esm3Structure.Tests

open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Training

/// Helpers for tests of failures: expected exceptions and training runs that crash part-way.
[<AutoOpen>]
module Faults =

    /// Runs `f` and returns the exception of type 'E it raises; fails the test, naming `what`, when it raises
    /// nothing or an exception of another type.
    let raises<'E when 'E :> exn> (what: string) (f: unit -> unit) : 'E =
        let outcome =
            try
                f ()
                None
            with e ->
                Some e

        match outcome with
        | None -> failtestf "%s: expected %s, but nothing was raised" what typeof<'E>.Name
        | Some(:? 'E as e) -> e
        | Some e -> failtestf "%s: expected %s, got %s: %s" what typeof<'E>.Name (e.GetType().Name) e.Message

    /// Saves `m` to `path` with the one metadata field `key` = `value`, and expects `load` to refuse that file with
    /// an `InputException` located at the field.
    let refusesMetadata (path: string) (m: torch.nn.Module) (key: string) (value: string) (load: string -> unit) =
        Checkpoint.save path m (readOnlyDict [ key, value ])

        match InputError.catch (fun () -> load path) with
        | Ok() -> failtestf "%s = '%s': expected an InputException" key value
        | Error e -> Expect.equal e.Location (InputLocation.Field("__metadata__." + key)) e.Message

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
    override _.TrainingState() = inner.TrainingState()
    override _.RestoreTrainingState lookup = inner.RestoreTrainingState lookup
