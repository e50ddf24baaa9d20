module Esm3Structure.Tests.Training.CausalLmTrainingTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Training
open Esm3Structure.Tests

/// The smoke preset shrunk to a run of a few seconds.
let private tiny =
    let smoke = CausalLmTrainConfig.smoke

    { smoke with
        Model =
            { smoke.Model with
                DModel = 32L
                Heads = 2L
                Layers = 1
                Context = 24L
            }
        ValidSequences = 3
        ValidBatchSize = 4
        Trainer =
            { smoke.Trainer with
                Steps = 8
                BatchSize = 3
                LearningRate = 3e-3
                WarmupSteps = 2
                EvalEvery = 4
                CheckpointEvery = 4
                LogEvery = 1
                Seed = 5
                Progress = ProgressMode.Silent
            }
    }

/// The first sequences of the corpus's train and valid splits.
let private sequences =
    lazy
        (let data = Data.root.Value
         Corpus.sequences data "train" |> Array.map snd, Corpus.sequences data "valid" |> Array.map snd)

[<Tests>]
let tests =
    testList
        "Training/CausalLm"
        [
            test "presets are valid, the config serialises to JSON, and validation names each bad field" {
                for c in [ CausalLmTrainConfig.small; CausalLmTrainConfig.smoke; tiny ] do
                    Expect.isEmpty (Validation.errors (CausalLmTrainConfig.validate c)) "valid"

                Expect.equal (CausalLmTrainConfig.preset " Smoke ") CausalLmTrainConfig.smoke "by name"

                let json =
                    JsonDocument.Parse(CausalLmTrainConfig.toJson CausalLmTrainConfig.small).RootElement

                Expect.equal (json.GetProperty("Model").GetProperty("DModel").GetInt64()) 128L "d"
                Expect.equal (json.GetProperty("Model").GetProperty("Context").GetInt64()) 256L "context"
                Expect.equal (json.GetProperty("Trainer").GetProperty("BatchSize").GetInt32()) 16 "batch"

                let errors =
                    Validation.errors (
                        CausalLmTrainConfig.validate
                            { tiny with
                                Model =
                                    { tiny.Model with
                                        Heads = 3L
                                        Context = 0L
                                    }
                                ValidSequences = -1
                                ValidBatchSize = 0
                                Trainer = { tiny.Trainer with Steps = 0 }
                            }
                    )

                for field in
                    [
                        "Model: Heads"
                        "Model: Context"
                        "ValidSequences"
                        "ValidBatchSize"
                        "Trainer: Steps"
                    ] do
                    Expect.exists errors (fun e -> e.StartsWith field) (sprintf "names %s in %A" field errors)

                Expect.equal errors.Length 5 "one error per bad field"
            }

            test "evaluation rows cover every target exactly once" {
                let encoded = CausalLmData.encodeAll [ "MKTAYIAK"; "GG" ]
                let rows = CausalLmData.evaluationRows 3 encoded

                let targets =
                    rows |> Array.collect snd |> Array.filter ((<>) CausalLmData.IgnoreIndex)

                Expect.equal targets (encoded |> Array.collect (fun ids -> ids.[1..])) "targets in order"
                Expect.equal (rows |> Array.map (fst >> Array.length) |> Array.distinct) [| 3 |] "context wide"
            }

            test "unigram perplexity of a one-token corpus is near 1, of uniform usage near the alphabet size" {
                let lp =
                    CausalLmData.unigramLogProbs (CausalLmData.encodeAll [ String.replicate 5000 "A" ])

                Expect.isLessThan
                    (CausalLmData.unigramPerplexity lp (CausalLmData.encodeAll [ String.replicate 1000 "A" ]))
                    1.05
                    "one token"

                let letters = "LAGVSERTIDPKQNFYMHWC"
                let uniform = CausalLmData.encodeAll [ String.replicate 500 letters ]

                let p =
                    CausalLmData.unigramPerplexity
                        (CausalLmData.unigramLogProbs uniform)
                        (CausalLmData.encodeAll [ String.replicate 50 letters ])

                Expect.isTrue (abs (p - 20.0) < 0.5) (sprintf "≈ 20, got %f" p)
            }

            test "the batch of a step is a pure function of (seed, step): windows with their next tokens" {
                use _ = torch.NewDisposeScope()
                let encoded = CausalLmData.encodeAll (Array.truncate 7 (fst sequences.Value))
                let inputs, targets = CausalLmData.sample 5 11 3 24 encoded
                let again, _ = CausalLmData.sample 5 11 3 24 encoded
                let next, _ = CausalLmData.sample 5 12 3 24 encoded
                Expect.equal inputs.shape [| 3L; 24L |] "inputs [B, context]"
                Expect.equal targets.shape [| 3L; 24L |] "targets [B, context]"
                Expect.isTrue (inputs.eq(again).all().ToBoolean()) "same step, same batch"
                Expect.isFalse (inputs.eq(next).all().ToBoolean()) "next step, another batch"
                let shifted = targets.narrow (1L, 0L, 23L)
                let padding = shifted.eq (CausalLmData.IgnoreIndex.ToScalar())
                let following = inputs.narrow (1L, 1L, 23L)
                let agree = following.eq(shifted).logical_or(padding).all().ToBoolean()
                Expect.isTrue agree "each target is the next input"
            }

            test "a short run writes config.json, metrics.jsonl and checkpoints; its export loads with the same logits" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let train, valid = sequences.Value
                let valid = Array.truncate tiny.ValidSequences valid

                let report =
                    CausalLmTraining.trainOn tiny torch.CPU (Array.truncate 20 train) valid dir.Path false

                Expect.equal report.Training.Steps 8 "steps"

                let config =
                    JsonDocument.Parse(File.ReadAllText(dir.File "config.json")).RootElement

                Expect.equal (config.GetProperty("Model").GetProperty("DModel").GetInt64()) 32L "config.json"
                Expect.equal (File.ReadAllLines(dir.File "metrics.jsonl").Length) 8 "one metrics row per step"
                let validation = dict report.Training.History.[7].Validation
                Expect.floatClose Accuracy.high validation.["perplexity"] report.ValidPerplexity "final perplexity"
                Expect.floatClose Accuracy.high (exp validation.["loss"]) validation.["perplexity"] "exp(loss)"
                Expect.isGreaterThan report.UnigramPerplexity 1.0 "baseline"
                Expect.isGreaterThan report.ValidTokens (valid |> Array.sumBy String.length) "residues and EOS"

                Expect.equal
                    report.Training.Checkpoint
                    (Path.Combine(dir.Path, "checkpoints", "step-000008"))
                    "last checkpoint"

                for f in
                    [
                        "model.safetensors"
                        "optimizer.bin"
                        "trainer.json"
                        "causal-lm.safetensors"
                    ] do
                    Expect.isTrue (File.Exists(Path.Combine(report.Training.Checkpoint, f))) f

                use loaded =
                    CausalLmCheckpoint.load (Path.Combine(report.Training.Checkpoint, "causal-lm.safetensors"))

                Expect.equal loaded.Config tiny.Model "config from the file"
                let resumeState = Path.Combine(report.Training.Checkpoint, "model.safetensors")

                let missingHeads =
                    try
                        (CausalLmCheckpoint.load resumeState).Dispose()
                        None
                    with :? InputException as e ->
                        Some e.Error.Location

                Expect.equal
                    missingHeads
                    (Some(InputLocation.Field "__metadata__.heads"))
                    "a file without metadata: the heads are unknown"

                use trained = new CausalLm(tiny.Model)
                Checkpoint.load resumeState trained
                trained.eval ()
                use _ = torch.no_grad ()
                let tokens = torch.tensor([| 0L; 5L; 9L; 12L; 4L; 2L |]).unsqueeze 0L
                Tol.close "same logits" 0.0 (loaded.forward tokens) (trained.forward tokens)
            }

            test "a run interrupted after k steps and resumed ends with the uninterrupted run's weights bit for bit" {
                use _ = torch.NewDisposeScope()
                use a = new TempDir()
                use b = new TempDir()
                let train, valid = sequences.Value
                let train, valid = Array.truncate 20 train, Array.truncate 3 valid

                let encoded = CausalLmData.encodeAll train, CausalLmData.encodeAll valid

                let runWith (out: string) (crashAt: int) (resume: bool) =
                    use task = new CausalLmTraining.Task(tiny, torch.CPU, fst encoded, snd encoded)
                    let t: TrainingTask = if crashAt > 0 then CrashingTask(task, crashAt) else task
                    Trainer.run tiny.Trainer t out resume "{}"

                let whole = runWith a.Path 0 false
                Expect.throws (fun () -> runWith b.Path 6 false |> ignore) "crash at step 6"
                let resumed = runWith b.Path 0 true
                Expect.equal resumed.History.[0].Step 5 "resumed after step 4"
                Expect.equal resumed.FinalLoss whole.FinalLoss "same final loss"

                let weights (report: TrainReport) =
                    File.ReadAllBytes(Path.Combine(report.Checkpoint, "causal-lm.safetensors"))

                Expect.isTrue (weights resumed = weights whole) "the same weights, bit for bit"
            }

            test "the loss falls when a tiny model overfits two short sequences" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let train = [| "MKTAYIAKQRQISFVKSHFSRQ"; "GSHMLEDPVDAFQ" |]

                let c =
                    { tiny with
                        Trainer =
                            { tiny.Trainer with
                                Steps = 60
                                BatchSize = 4
                                LearningRate = 1e-2
                                WarmupSteps = 0
                                FinalFraction = 1.0
                                EvalEvery = 0
                                CheckpointEvery = 0
                            }
                    }

                let report = CausalLmTraining.trainOn c torch.CPU train train dir.Path false
                let losses = report.Training.History |> Array.map (fun r -> r.Loss)
                let early = Array.average losses.[0..4]
                let late = Array.average losses.[55..59]

                Expect.isLessThan
                    late
                    (early / 3.0)
                    (sprintf "mean loss of the last 5 steps (%g) vs the first 5 (%g)" late early)

                Expect.isLessThan report.ValidPerplexity 2.0 "the training sequences memorised"
            }

            test "a short run on real sequences ends below the unigram baseline" {
                use dir = new TempDir()
                let train, valid = sequences.Value

                let small = CausalLmTrainConfig.small

                let config =
                    { small with
                        Model =
                            { small.Model with
                                DModel = 64L
                                Context = 64L
                            }
                        Trainer =
                            { small.Trainer with
                                Steps = 150
                                LearningRate = 4e-3
                                EvalEvery = 0
                                CheckpointEvery = 0
                                Progress = ProgressMode.Silent
                            }
                    }

                let report =
                    CausalLmTraining.trainOn config torch.CPU train (Array.truncate 30 valid) dir.Path false

                Expect.isLessThan report.ValidPerplexity report.UnigramPerplexity "model beats the unigram baseline"
            }
        ]
