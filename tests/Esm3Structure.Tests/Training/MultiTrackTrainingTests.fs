module Esm3Structure.Tests.Training.MultiTrackTrainingTests

open System.IO
open Expecto
open Esm3Structure
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Training
open Esm3Structure.Tests

let private tiny = MultiTrackFixtures.tinyTraining
let private examples = MultiTrackFixtures.examples

[<Tests>]
let tests =
    testList
        "Training/MultiTrackTraining"
        [
            test "a tiny multi-track run lowers its loss within 100 steps on real chains; its export loads" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let train = examples.Value.[1..]
                let valid = examples.Value.[..0]
                let report = MultiTrackTraining.trainOn tiny torch.CPU train valid dir.Path false
                let losses = report.History |> Array.map (fun r -> r.Loss)
                Expect.equal losses.Length 80 "one row per step"
                let early = Array.average losses.[0..9]
                let late = Array.average losses.[70..79]
                Expect.isLessThan late (early - 0.5) "mean loss of the last 10 steps well below the first 10"
                let validation = dict report.History.[79].Validation

                Expect.isTrue
                    (validation.["sequence_perplexity"] > 1.0
                     && validation.["sequence_perplexity"] < 64.0)
                    "sequence perplexity"

                Expect.isTrue
                    (validation.["structure_accuracy"] >= 0.0
                     && validation.["structure_accuracy"] <= 1.0)
                    "structure accuracy"

                Expect.isFalse (validation.ContainsKey "ss8_perplexity") "absent tracks are not reported"
                let file = Path.Combine(report.Checkpoint, "multitrack.safetensors")
                use loaded = MultiTrackCheckpoint.load file
                // The geometric implementation is a run-time choice, not a property of the weights.
                Expect.equal
                    { loaded.Config with
                        GeometricImplementation = tiny.Model.GeometricImplementation
                    }
                    tiny.Model
                    "config from the file"

                use task = new MultiTrackTraining.Task(tiny, torch.CPU, train, valid)
                Checkpoint.load (Path.Combine(report.Checkpoint, "model.safetensors")) task.MultiTrack
                task.MultiTrack.eval ()
                use _ = torch.no_grad ()
                let batch = task.Batch 0

                Tol.close
                    "same logits"
                    0.0
                    (loaded.forward batch.Inputs).SequenceLogits
                    (task.MultiTrack.forward batch.Inputs).SequenceLogits

                // --init: a new run starts from the exported model's weights, from its folder or its file
                for source in [ report.Checkpoint; file ] do
                    use continued =
                        new MultiTrackTraining.Task({ tiny with InitFrom = source }, torch.CPU, train, valid)

                    continued.MultiTrack.eval ()

                    Tol.close
                        (sprintf "--init %s: the exported model's logits" (Path.GetFileName source))
                        0.0
                        (continued.MultiTrack.forward batch.Inputs).SequenceLogits
                        (loaded.forward batch.Inputs).SequenceLogits

                let refused (config: MultiTrackTrainConfig) =
                    match
                        InputError.catch (fun () ->
                            new MultiTrackTraining.Task(config, torch.CPU, train, valid) |> ignore)
                    with
                    | Ok() -> failtestf "--init %s must be refused" config.InitFrom
                    | Error e ->
                        Expect.stringContains e.Message "--init" "names the option"
                        e.File

                let wider =
                    { tiny with
                        InitFrom = report.Checkpoint
                        Model = { tiny.Model with DModel = 64L }
                    }

                Expect.equal (refused wider) file "a model of other sizes: names the file"

                Expect.equal
                    (refused { tiny with InitFrom = dir.Path })
                    (Path.Combine(dir.Path, "multitrack.safetensors"))
                    "a folder without the model: names the file it looked for"
            }

            test "a crashed multi-track run resumed from its checkpoint ends with the uninterrupted run's loss" {
                use _ = torch.NewDisposeScope()
                use a = new TempDir()
                use b = new TempDir()

                let c =
                    { tiny with
                        Trainer =
                            { tiny.Trainer with
                                Steps = 6
                                CheckpointEvery = 3
                                EvalEvery = 0
                            }
                    }

                let runWith (out: string) (crashAt: int) (resume: bool) =
                    use task =
                        new MultiTrackTraining.Task(c, torch.CPU, examples.Value.[1..], examples.Value.[..0])

                    let t: TrainingTask = if crashAt > 0 then CrashingTask(task, crashAt) else task
                    Trainer.run c.Trainer t out resume "{}"

                let whole = runWith a.Path 0 false
                Expect.throws (fun () -> runWith b.Path 5 false |> ignore) "crash at step 5"
                let resumed = runWith b.Path 0 true
                Expect.equal resumed.Steps 6 "steps"
                Expect.equal resumed.FinalLoss whole.FinalLoss "same final loss"
            }
        ]
