module Esm3Structure.Tests.Training.TokenizerTrainingTests

open System
open System.IO
open System.Text.Json
open Expecto
open Esm3Structure
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

// (BLAS may round the last bit differently on tensors at other alignments; see the Trainer test)
let private resumeAgreement = { absolute = 1e-9; relative = 1e-5 }

/// Runs `c` whole, then again crashed at step 7 and resumed from its checkpoint of step 4 (`c` checkpoints every 4 of
/// 10 steps), each in a scratch folder, and checks that the resumed run's losses are the whole run's; `read` looks at
/// each complete run's task and last checkpoint folder before they are disposed. Returns (whole report, its reading), (resumed report, its reading).
let private crashedAndResumed (c: TokenizerTrainConfig) (read: TokenizerTraining.Task -> string -> 'r) =
    use a = new TempDir()
    use b = new TempDir()
    let train, valid = TokenizerFixtures.trainingExamples ()

    let runWith (out: string) (crashAt: int) (resume: bool) =
        use task = new TokenizerTraining.Task(c, torch.CPU, train, valid)
        let t: TrainingTask = if crashAt > 0 then CrashingTask(task, crashAt) else task
        let report = Trainer.run c.Trainer t out resume "{}"
        report, read task report.Checkpoint

    let whole, wholeRead = runWith a.Path 0 false
    Expect.throws (fun () -> runWith b.Path 7 false |> ignore) "crash at step 7"
    let resumed, resumedRead = runWith b.Path 0 true
    Expect.equal resumed.History.[0].Step 5 "resumed after step 4"

    for row in resumed.History do
        Expect.floatClose
            resumeAgreement
            row.Loss
            whole.History.[row.Step - 1].Loss
            (sprintf "loss at step %d" row.Step)

    (whole, wholeRead), (resumed, resumedRead)

/// The tensors of `file` in a run's checkpoint `folder`.
let private tensorsOf (folder: string) (file: string) =
    (Safetensors.read (Path.Combine(folder, file))).Tensors

/// Every encoder tensor of checkpoint `continued`, the codebook's EMA statistics included, is checkpoint `source`'s,
/// bit for bit.
let private sameEncoder (source: string) (continued: string) =
    for (name, a), (_, b) in
        List.zip (tensorsOf source "encoder.safetensors") (tensorsOf continued "encoder.safetensors") do
        Expect.isTrue (a.allclose (b, 0.0, 0.0)) (sprintf "encoder tensor %s unchanged" name)

[<Tests>]
let tests =
    testList
        "Training/TokenizerTraining"
        [
            test "evaluate counts the chains decoded closer to their mirror; a reflected decoder counts the others" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()

                use model =
                    new TokenizerModel(TokenizerFixtures.tinyTrainConfig, new torch.Generator(3UL))
                // As the trainer validates: in eval mode, where the EMA codebook takes no update.
                model.eval ()

                let examples =
                    TokenizerFixtures.smallChains.Value |> Array.map TokenizerData.ofChain

                let before = dict (TokenizerTraining.evaluate model torch.CPU examples)
                model.Decoder.ReflectStructures()
                let after = dict (TokenizerTraining.evaluate model torch.CPU examples)
                Expect.floatClose Accuracy.veryHigh after.["mirrored"] (1.0 - before.["mirrored"]) "swapped"
                Expect.floatClose Accuracy.high after.["lddt_ca"] before.["lddt_ca"] "LDDT-CA cannot see the mirror"
            }

            test
                "a TokenizerFixtures.tinyTrainConfig run lowers the loss and writes ESM-format checkpoints that load into fresh modules" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let report =
                    TokenizerTraining.trainOn
                        TokenizerFixtures.tinyTrainConfig
                        torch.CPU
                        TokenizerFixtures.smallChains.Value.[1..]
                        TokenizerFixtures.smallChains.Value.[..0]
                        dir.Path
                        false

                let losses = report.History |> Array.map (fun r -> r.Loss)
                let early = Array.average losses.[0..3]
                let late = Array.average losses.[12..15]
                Expect.isLessThan late early "mean loss of the last 4 steps below the first 4"
                let validation = dict report.History.[15].Validation
                Expect.isTrue (Double.IsFinite validation.["rmsd"]) "RMSD"
                Expect.isTrue (validation.["lddt_ca"] >= 0.0 && validation.["lddt_ca"] <= 1.0) "LDDT-CA"
                Expect.isGreaterThan validation.["code_usage"] 0.0 "code usage"
                Expect.isGreaterThanOrEqual validation.["perplexity"] 1.0 "perplexity"
                Expect.isTrue (validation.["mirrored"] >= 0.0 && validation.["mirrored"] <= 1.0) "mirrored fraction"
                let ckpt = report.Checkpoint
                use generator = new torch.Generator(1UL)

                use encoder =
                    new StructureEncoder(TokenizerFixtures.tinyTrainConfig.Encoder, generator)

                use decoder = new StructureDecoder(TokenizerFixtures.tinyTrainConfig.Decoder)
                Checkpoint.load (Path.Combine(ckpt, "encoder.safetensors")) encoder
                Checkpoint.load (Path.Combine(ckpt, "decoder.safetensors")) decoder
                let header = Safetensors.readHeader (Path.Combine(ckpt, "decoder.safetensors"))
                let headWidth = int64 header.Metadata.["head_width"]
                let shapes = header.Entries |> List.map (fun e -> e.Name, e.Shape)

                Expect.equal
                    (StructureDecoderCheckpoint.ofKeyShapesWith headWidth "decoder.safetensors" shapes)
                    TokenizerFixtures.tinyTrainConfig.Decoder
                    "the decoder's sizes from its file"

                // what the scripts load: the head count from the metadata, not ESM's 64-wide default
                use loaded =
                    StructureDecoderCheckpoint.load (Path.Combine(ckpt, "decoder.safetensors"))

                Expect.equal
                    loaded.Config
                    TokenizerFixtures.tinyTrainConfig.Decoder
                    "StructureDecoderCheckpoint.load reads the head width"

                // token ids through the exported decoder's embeddings = the training path's projected codes
                use task =
                    new TokenizerTraining.Task(TokenizerFixtures.tinyTrainConfig, torch.CPU, [||], [||])

                Checkpoint.load (Path.Combine(ckpt, "model.safetensors")) task.Tokenizer
                encoder.eval ()
                decoder.eval ()
                task.Tokenizer.eval ()
                use _ = torch.no_grad ()

                let batch =
                    TokenizerData.batch
                        [|
                            TokenizerData.crop 0 30 (TokenizerData.ofChain TokenizerFixtures.smallChains.Value.[0])
                        |]

                let encoding, trained = task.Tokenizer.Run batch

                let tokens =
                    encoder.Encode(batch.Backbone, batch.ResidueIndex, batch.Padding, null).Tokens

                Expect.equal (tokens.data<int64>().ToArray()) (encoding.Tokens.data<int64>().ToArray()) "same tokens"
                // Inference wraps the codes in BOS and EOS, as the training path does (`DecodeResidues`).
                let inference =
                    (decoder.Trunk(StructureTokens.wrapRows tokens)).narrow(1L, 1L, tokens.shape.[1])

                Tol.close "decoder hidden states" 1e-4 inference trained.Hidden

                // --init: a new run from the exported files recovers post_quant_proj and the training path
                use restarted =
                    new TokenizerTraining.Task(
                        { TokenizerFixtures.tinyTrainConfig with
                            InitFrom = ckpt
                        },
                        torch.CPU,
                        [||],
                        [||]
                    )

                restarted.Tokenizer.eval ()
                let again, continued = restarted.Tokenizer.Run batch

                Expect.equal
                    (again.Tokens.data<int64>().ToArray())
                    (encoding.Tokens.data<int64>().ToArray())
                    "--init tokens"

                Tol.close "--init: the training path's hidden states" 1e-4 continued.Hidden trained.Hidden

                // --init with --reflect: the same run from the same files draws the mirror image of every backbone.
                use reflected =
                    new TokenizerTraining.Task(
                        { TokenizerFixtures.tinyTrainConfig with
                            InitFrom = ckpt
                            ReflectInit = true
                        },
                        torch.CPU,
                        [||],
                        [||]
                    )

                reflected.Tokenizer.eval ()
                let _, mirrored = reflected.Tokenizer.Run batch
                let z = torch.tensor ([| 1.0f; 1.0f; -1.0f |])
                Tol.close "--reflect: the mirror image" 0.0 mirrored.Backbone (continued.Backbone * z)

                let wider =
                    { TokenizerFixtures.tinyTrainConfig with
                        InitFrom = ckpt
                        Decoder =
                            { TokenizerFixtures.tinyTrainConfig.Decoder with
                                DModel = 64L
                            }
                    }

                match
                    InputError.catch (fun () -> new TokenizerTraining.Task(wider, torch.CPU, [||], [||]) |> ignore)
                with
                | Ok() -> failtest "an incompatible --init must be refused"
                | Error e ->
                    Expect.stringContains e.Message "--init" "names the option"
                    Expect.stringContains e.File "decoder.safetensors" "names the file"
            }

            test
                "a product-quantized run exports ESM's one-table encoder that tokenizes alike, and --init cuts it back into groups" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let tiny = TokenizerFixtures.tinyTrainConfig

                let product =
                    { tiny with
                        Encoder =
                            { tiny.Encoder with
                                PrincipalPosition = true
                                PrincipalGrid = 4.0
                                // 6 codes of 4 channels a group: the table [36, 8] with a column of ones has full
                                // rank 9, so --init recovers post_quant_proj from the decoder's rows.
                                DOut = 8L
                                Quantizer =
                                    { tiny.Encoder.Quantizer with
                                        Codes = 36L
                                        Dim = 8L
                                        Groups = 2
                                        Restart = Esm3Structure.Nn.UnusedFor(1, 256)
                                    }
                            }
                        Trainer =
                            { tiny.Trainer with
                                Steps = 4
                                EvalEvery = 4
                                CheckpointEvery = 4
                            }
                    }

                let ckpt =
                    (TokenizerTraining.trainOn
                        product
                        torch.CPU
                        TokenizerFixtures.smallChains.Value.[1..]
                        TokenizerFixtures.smallChains.Value.[..0]
                        dir.Path
                        false)
                        .Checkpoint

                use trained = new TokenizerTraining.Task(product, torch.CPU, [||], [||])
                Checkpoint.load (Path.Combine(ckpt, "model.safetensors")) trained.Tokenizer
                trained.Tokenizer.eval ()

                use released =
                    StructureEncoderCheckpoint.load (Path.Combine(ckpt, "encoder.safetensors"))

                Expect.equal released.Config.Quantizer.Groups 1 "the release file holds one table"
                Expect.equal released.Config.PrincipalGrid 4.0 "and the grid"
                use _ = torch.no_grad ()

                let batch =
                    TokenizerData.batch
                        [|
                            TokenizerData.crop 0 40 (TokenizerData.ofChain TokenizerFixtures.smallChains.Value.[0])
                        |]

                let encoding, hidden = trained.Tokenizer.Run batch
                let tokens = encoding.Tokens.data<int64>().ToArray()

                let varied (digit: int64 -> int64) =
                    tokens |> Array.map digit |> Array.distinct |> Array.length

                Expect.isGreaterThan (varied (fun t -> t % 6L)) 1 "group 0's codes vary"
                Expect.isGreaterThan (varied (fun t -> t / 6L)) 1 "group 1's codes vary"

                let releasedTokens =
                    released.Encode(batch.Backbone, batch.ResidueIndex, batch.Padding, null).Tokens

                Expect.equal (releasedTokens.data<int64>().ToArray()) tokens "the release file's tokens"

                use restarted =
                    new TokenizerTraining.Task({ product with InitFrom = ckpt }, torch.CPU, [||], [||])

                restarted.Tokenizer.eval ()
                let again, continued = restarted.Tokenizer.Run batch
                Expect.equal (again.Tokens.data<int64>().ToArray()) tokens "--init tokens"
                Tol.close "--init: the training path's hidden states" 1e-4 continued.Hidden hidden.Hidden
            }

            test
                "--freeze-encoder: a run from a tokenizer keeps its encoder and codebook bit for bit and trains the decoder" {
                use _ = torch.NewDisposeScope()
                use first = new TempDir()
                use second = new TempDir()
                let train = TokenizerFixtures.smallChains.Value.[1..]
                let valid = TokenizerFixtures.smallChains.Value.[..0]

                let source =
                    (TokenizerTraining.trainOn TokenizerFixtures.tinyTrainConfig torch.CPU train valid first.Path false)
                        .Checkpoint

                let frozen =
                    { TokenizerFixtures.tinyTrainConfig with
                        InitFrom = source
                        FreezeEncoder = true
                        Trainer =
                            { TokenizerFixtures.tinyTrainConfig.Trainer with
                                Steps = 4
                                EvalEvery = 4
                                CheckpointEvery = 4
                            }
                    }

                let continued =
                    (TokenizerTraining.trainOn frozen torch.CPU train valid second.Path false).Checkpoint

                sameEncoder source continued

                let changed =
                    List.zip (tensorsOf source "decoder.safetensors") (tensorsOf continued "decoder.safetensors")
                    |> List.filter (fun ((_, a), (_, b)) -> not (a.allclose (b, 0.0, 0.0)))

                Expect.isNonEmpty changed "the decoder trained"

                let errors =
                    Validation.errors (
                        TokenizerTrainConfig.validate
                            { TokenizerFixtures.tinyTrainConfig with
                                FreezeEncoder = true
                            }
                    )

                Expect.exists errors (fun e -> e.Contains "FreezeEncoder") "a frozen encoder needs InitFrom"
            }

            test
                "--refine: a structure module on a tokenizer starts at its structures, is all that trains, and keeps the file's word on its confidence heads" {
                use _ = torch.NewDisposeScope()
                use first = new TempDir()
                use second = new TempDir()
                let tiny = TokenizerFixtures.tinyTrainConfig
                let train = TokenizerFixtures.smallChains.Value.[1..]
                let valid = TokenizerFixtures.smallChains.Value.[..0]

                let source =
                    (TokenizerTraining.trainOn tiny torch.CPU train valid first.Path false).Checkpoint

                // Mark the source's confidence heads as trained (as the confidence stage does), so that carrying
                // the mark over differs from a stage-1 export's "untrained".
                let decoderFile = Path.Combine(source, "decoder.safetensors")
                let stored = Safetensors.read decoderFile

                StructureDecoderCheckpoint.save
                    decoderFile
                    stored.Tensors
                    tiny.Decoder
                    [
                        StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained"
                        StructureDecoderCheckpoint.PtmMetadataKey, "uninformative"
                    ]

                let refine =
                    { tiny with
                        InitFrom = source
                        RefineOnly = true
                        Decoder =
                            { tiny.Decoder with
                                StructureModule =
                                    Some
                                        { StructureModuleConfig.alphaFold2 tiny.Decoder.DModel with
                                            Iterations = 2
                                            Start = StructureModuleStart.AffineHead
                                        }
                            }
                        Weights = { tiny.Weights with Fape = 1.0 }
                        Trainer =
                            { tiny.Trainer with
                                Steps = 4
                                EvalEvery = 4
                                CheckpointEvery = 4
                            }
                    }

                // Step 0: the source's structures (the module's update layers start at zero).
                do
                    use plain =
                        new TokenizerTraining.Task({ tiny with InitFrom = source }, torch.CPU, [||], [||])

                    use refining = new TokenizerTraining.Task(refine, torch.CPU, [||], [||])
                    plain.Tokenizer.eval ()
                    refining.Tokenizer.eval ()
                    use _ = torch.no_grad ()

                    let batch =
                        TokenizerData.batch [| TokenizerData.crop 0 30 (TokenizerData.ofChain valid.[0]) |]

                    let before = (snd (plain.Tokenizer.Run batch)).Backbone
                    let after = (snd (refining.Tokenizer.Run batch)).Backbone
                    // T / 10 into the module's nanometres and × 10 back: 2u on |T|, then the atoms' own sums
                    // (StructureModuleTests' bound).
                    let bound = Tol.derived torch.float32 4.0 (before.abs().max().ToDouble() + 1.5)
                    Tol.close "step 0: --init's backbones" bound after before

                let refined =
                    (TokenizerTraining.trainOn refine torch.CPU train valid second.Path false).Checkpoint

                sameEncoder source refined

                let before = dict (tensorsOf source "decoder.safetensors")
                let after = tensorsOf refined "decoder.safetensors"
                let prefix = StructureDecoderCheckpoint.StructureModulePrefix

                for name, b in after do
                    if not (name.StartsWith prefix) then
                        Expect.isTrue (before.[name].allclose(b, 0.0, 0.0)) (sprintf "decoder tensor %s unchanged" name)

                Expect.exists
                    after
                    (fun (name, t) -> name = prefix + "backbone_update.weight" && t.abs().max().ToDouble() > 0.0)
                    "the module's update layer trained away from zero"

                let metadata =
                    (Safetensors.readHeader (Path.Combine(refined, "decoder.safetensors"))).Metadata

                Expect.equal metadata.[StructureDecoderCheckpoint.ConfidenceMetadataKey] "trained" "confidence kept"
                Expect.equal metadata.[StructureDecoderCheckpoint.PtmMetadataKey] "uninformative" "pTM verdict kept"

                use loaded =
                    StructureDecoderCheckpoint.load (Path.Combine(refined, "decoder.safetensors"))

                Expect.equal loaded.Config refine.Decoder "the refining module read back"
                Expect.isTrue loaded.ConfidenceTrained "the loaded decoder's confidence heads count as trained"
            }

            test "the confidence stage trains the pLDDT and pairwise heads only and marks the exported decoder" {
                use _ = torch.NewDisposeScope()
                use stage1 = new TempDir()
                use dir = new TempDir()
                let train, valid = TokenizerFixtures.trainingExamples ()

                let tokenizer =
                    (TokenizerTraining.trainOn
                        TokenizerFixtures.tinyTrainConfig
                        torch.CPU
                        TokenizerFixtures.smallChains.Value.[1..]
                        TokenizerFixtures.smallChains.Value.[..0]
                        stage1.Path
                        false)
                        .Checkpoint

                let c =
                    { ConfidenceTrainConfig.smoke with
                        Tokenizer = tokenizer
                        CropLength = 40
                        ValidChains = 1
                        ValidLength = 50
                        Trainer =
                            { TokenizerFixtures.tinyTrainConfig.Trainer with
                                Steps = 16
                                LearningRate = 1e-2
                            }
                    }

                let report =
                    use task = new ConfidenceTraining.Task(c, torch.CPU, train, valid)
                    Trainer.run c.Trainer task dir.Path false (ConfidenceTrainConfig.toJson c)

                let plddt =
                    report.History
                    |> Array.map (fun r -> r.Terms |> Array.find (fst >> (=) "plddt") |> snd)
                // ln 50 = 3.91 at the start (a uniform head); the head learns the crops' LDDT distribution
                Expect.isLessThan (Array.average plddt.[12..15]) (Array.average plddt.[0..3]) "pLDDT loss falls"
                let validation = dict report.History.[15].Validation
                Expect.isTrue (Double.IsFinite validation.["plddt_pearson"]) "Pearson's r is reported"

                let tensors (file: string) =
                    (Safetensors.read file).Tensors |> Map.ofList

                let before = tensors (Path.Combine(tokenizer, "decoder.safetensors"))
                let after = tensors (Path.Combine(report.Checkpoint, "decoder.safetensors"))
                Expect.sequenceEqual (Map.keys after) (Map.keys before) "ESM's key set"

                for KeyValue(name, t) in before do
                    let same = t.eq(after.[name]).all().ToBoolean()

                    if ConfidenceTraining.trainedPrefixes |> Array.exists (fun p -> name.StartsWith p) then
                        if name.EndsWith ".weight" then
                            Expect.isFalse same (sprintf "%s trained" name)
                    else
                        Expect.isTrue same (sprintf "%s frozen, bit for bit" name)

                Expect.equal
                    (File.ReadAllBytes(Path.Combine(report.Checkpoint, "encoder.safetensors")))
                    (File.ReadAllBytes(Path.Combine(tokenizer, "encoder.safetensors")))
                    "the encoder file unchanged"

                use old =
                    StructureDecoderCheckpoint.load (Path.Combine(tokenizer, "decoder.safetensors"))

                use trained =
                    StructureDecoderCheckpoint.load (Path.Combine(report.Checkpoint, "decoder.safetensors"))

                Expect.isFalse old.ConfidenceTrained "stage 1: confidence untrained"
                Expect.isTrue trained.ConfidenceTrained "after the confidence stage: trained"

                let meta =
                    (Safetensors.readHeader (Path.Combine(report.Checkpoint, "decoder.safetensors"))).Metadata

                Expect.equal
                    meta.[StructureDecoderCheckpoint.PtmMetadataKey]
                    (if validation.["ptm_tm_pearson"] >= 0.5 then
                         "informative"
                     else
                         "uninformative")
                    "the pTM verdict follows the last validation"

                Expect.equal
                    meta.["head_width"]
                    (string (
                        TokenizerFixtures.tinyTrainConfig.Decoder.DModel
                        / TokenizerFixtures.tinyTrainConfig.Decoder.Heads
                    ))
                    "metadata kept"
            }

            test "a crashed tokenizer run resumed from its checkpoint ends with exactly the uninterrupted run's loss" {
                use _ = torch.NewDisposeScope()

                let c =
                    { TokenizerFixtures.tinyTrainConfig with
                        Trainer =
                            { TokenizerFixtures.tinyTrainConfig.Trainer with
                                Steps = 10
                                CheckpointEvery = 4
                                EvalEvery = 5
                            }
                    }

                let (whole, ()), (resumed, ()) = crashedAndResumed c (fun _ _ -> ())
                Expect.equal (sprintf "%.6f" resumed.FinalLoss) (sprintf "%.6f" whole.FinalLoss) "final loss as printed"

                for (k, v), (_, w) in Array.zip resumed.History.[5].Validation whole.History.[9].Validation do
                    Expect.floatClose resumeAgreement v w ("final validation " + k)
            }

            test
                "a crashed run under UnusedFor restarts resumes its dead-code counters and recent rows (state.safetensors)" {
                use _ = torch.NewDisposeScope()
                let tiny = TokenizerFixtures.tinyTrainConfig

                // 32 codes against ~300 rows a step, re-seeded after 2 unused steps: restarts happen after the
                // checkpoint at step 4, so a resume that forgot the counters or the recent rows would draw others.
                let c =
                    { tiny with
                        Encoder =
                            { tiny.Encoder with
                                Quantizer =
                                    { tiny.Encoder.Quantizer with
                                        Restart = Esm3Structure.Nn.UnusedFor(2, 64)
                                    }
                            }
                        Trainer =
                            { tiny.Trainer with
                                Steps = 10
                                CheckpointEvery = 4
                                EvalEvery = 10
                            }
                    }

                let codebookOf (task: TokenizerTraining.Task) (checkpoint: string) =
                    let codebook = task.Tokenizer.Encoder.Codebook

                    Expect.isTrue
                        (File.Exists(Path.Combine(checkpoint, TrainerCheckpoint.TrainingStateFile)))
                        "checkpoints hold the tracker's state"

                    codebook.Codes.detach().clone().DetachFromDisposeScope(), codebook.RestartCount

                let (_, (wholeCodes, wholeRestarts)), (_, (resumedCodes, resumedRestarts)) =
                    crashedAndResumed c codebookOf

                use _w = wholeCodes
                use _r = resumedCodes

                Expect.isGreaterThan wholeRestarts 0L "codes were re-seeded"
                Expect.equal resumedRestarts wholeRestarts "the same restart count"
                // A different re-seeded row would move a code by its whole length.
                Tol.close "final codes" 1e-4 resumedCodes wholeCodes
            }

        ]
