module Esm3Structure.Tests.Training.MultiTrackTrainingTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Training
open Esm3Structure.Tests

/// The smoke preset shrunk to a run of a few seconds.
let private tiny =
    let smoke = MultiTrackTrainConfig.smoke

    { smoke with
        Model =
            { smoke.Model with
                DModel = 32L
                Heads = 4L
                VHeads = 4L
                Layers = 2
            }
        CropLength = 48
        ValidChains = 2
        ValidLength = 40
        ValidBatchSize = 2
        Trainer =
            { smoke.Trainer with
                Steps = 80
                BatchSize = 4
                LearningRate = 3e-3
                WarmupSteps = 5
                EvalEvery = 40
                CheckpointEvery = 40
                LogEvery = 1
                Seed = 3
                Progress = ProgressMode.Silent
            }
    }

let private chains =
    lazy
        (Data.smallNames.Value
         |> Array.truncate 5
         |> Array.map (fun n -> StructureFile.read (Data.small n) None))

/// Structure tokens from a small, freshly initialised encoder (no shipped tokenizer is needed).
let private examples =
    lazy
        (use g = new torch.Generator(17UL)

         let encoderConfig =
             { TokenizerTrainConfig.smoke.Encoder with
                 DModel = 32L
                 VHeads = 4L
                 DOut = 16L
                 Quantizer =
                     { TokenizerTrainConfig.smoke.Encoder.Quantizer with
                         Codes = 32L
                         Dim = 16L
                     }
             }

         use encoder = new StructureEncoder(encoderConfig, g)
         Nn.Init.initialise g encoder
         encoder.eval ()
         let providers = TrackProviders.withStructureEncoder encoder
         chains.Value |> Array.map (MultiTrackData.ofChain providers))

[<Tests>]
let tests =
    testList
        "Training/MultiTrackTraining"
        [
            test "examples come from chains and providers; a wrong track is an InputException naming it" {
                let e = examples.Value.[0]
                let c = chains.Value.[0]
                let l = ProteinChain.length c
                Expect.equal e.Length l "length"
                Expect.equal e.Sequence (SequenceTokenizer.encode false c.Sequence) "sequence ids"
                Expect.isTrue (e.Structure |> Array.forall (fun t -> t < 32L || t = StructureTokens.Mask)) "codes"
                Expect.equal e.Function.Length (8 * l) "function [L, 8]"

                Expect.equal
                    e.Coordinates.[3..5]
                    [| c.Atom37.[0, 1, 0]; c.Atom37.[0, 1, 1]; c.Atom37.[0, 1, 2] |]
                    "CA of residue 0"

                let fails (bad: MultiTrackExample) (field: string) =
                    let ex =
                        raises<InputException> "input" (fun () -> MultiTrackData.check bad |> ignore)

                    Expect.equal ex.Error.File e.Name "names the example"
                    Expect.equal ex.Error.Location (InputLocation.Field field) "names the track"

                fails { e with Ss8 = Array.create (l - 1) 0L } "ss8"
                fails { e with Sasa = Array.create l 19L } "sasa"

                fails
                    { e with
                        Structure = Array.create l 4101L
                    }
                    "structure"

                fails
                    { e with
                        Function = Array.create (8 * l) -1L
                    }
                    "function"

                fails
                    { e with
                        ResidueAnnotations = Array.create l 0L
                    }
                    "residue_annotations"

                fails { e with Plddt = Array.create l 1.5f } "plddt"
                fails { e with Coordinates = [||] } "coordinates"
            }

            test "batches wrap every track with ESM's BOS/EOS/PAD ids and separate the padding" {
                use _ = torch.NewDisposeScope()
                let a = MultiTrackData.crop 0 5 examples.Value.[0]
                let b = MultiTrackData.crop 2 3 examples.Value.[1]
                let batch = MultiTrackData.batch [| a; b |]
                let t = batch.Tracks
                Expect.equal t.Sequence.shape [| 2L; 7L |] "L = 5 + 2"

                Expect.equal
                    (t.Sequence.[1L].data<int64>().ToArray())
                    (Array.concat [ [| 0L |]; b.Sequence; [| 2L; 1L; 1L |] ])
                    "sequence row"

                Expect.equal
                    (t.Structure.[1L].data<int64>().ToArray())
                    (Array.concat [ [| 4098L |]; b.Structure; [| 4097L; 4099L; 4099L |] ])
                    "structure row"

                Expect.equal (t.SequenceId.[1L].data<int64>().ToArray()) [| 0L; 0L; 0L; 0L; 0L; 1L; 1L |] "sequence id"

                Expect.equal
                    (batch.Residues.[1L].data<bool>().ToArray())
                    [| false; true; true; true; false; false; false |]
                    "residues"

                Expect.isTrue (t.Coordinates.[1L, 0L].isinf().all().ToBoolean()) "BOS: +∞ coordinates"
                Expect.equal t.Function.shape [| 2L; 7L; 8L |] "function"
                Expect.equal t.ResidueAnnotations.shape [| 2L; 7L; 16L |] "residue"
                Expect.equal t.AveragePlddt.shape [| 2L; 1L |] "average pLDDT"
                MultiTrackInput.checkShapes t
            }

            test "batches and masks of a step are pure functions of (seed, step)" {
                use _ = torch.NewDisposeScope()
                use task = new MultiTrackTraining.Task(tiny, torch.CPU, examples.Value, [||])
                let a = task.Batch 7
                let b = task.Batch 7
                let c = task.Batch 8

                let same (x: torch.Tensor) (y: torch.Tensor) =
                    x.shape = y.shape && x.eq(y).all().ToBoolean()

                Expect.isTrue (same a.Inputs.Sequence b.Inputs.Sequence) "same step"

                Expect.isTrue
                    (same (a.Inputs.Coordinates.nan_to_num ()) (b.Inputs.Coordinates.nan_to_num ()))
                    "same noise"

                Expect.isFalse (same a.Inputs.Sequence c.Inputs.Sequence) "next step differs"
            }

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
