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

/// The smoke preset shrunk further: a run of a few seconds.
let private tiny =
    let smoke = TokenizerTrainConfig.smoke

    { smoke with
        Encoder =
            { smoke.Encoder with
                DModel = 32L
                VHeads = 4L
                DOut = 16L
                Quantizer =
                    { smoke.Encoder.Quantizer with
                        Codes = 32L
                        Dim = 16L
                    }
            }
        Decoder =
            {
                DModel = 32L
                Heads = 2L
                Layers = 1
                PairwiseDownproject = 8L
                PairwiseHidden = 16L
                StructureModule = None
                ChainFrames = false
            }
        CropLength = 40
        ValidChains = 1
        ValidLength = 50
        Trainer =
            { smoke.Trainer with
                Steps = 16
                BatchSize = 2
                LearningRate = 3e-3
                WarmupSteps = 2
                EvalEvery = 8
                CheckpointEvery = 8
                LogEvery = 1
                Seed = 5
                Progress = ProgressMode.Silent
            }
    }

let private chains =
    lazy
        (Data.smallNames.Value
         |> Array.truncate 4
         |> Array.map (fun n -> StructureFile.read (Data.small n) None))

let private examples () =
    let train = chains.Value.[1..] |> Array.map TokenizerData.ofChain
    let valid = [| TokenizerData.crop 0 50 (TokenizerData.ofChain chains.Value.[0]) |]
    train, valid

[<Tests>]
let tests =
    testList
        "Training/TokenizerTraining"
        [
            test "presets are valid and the config serialises to JSON" {
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate TokenizerTrainConfig.small)) "small"
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate TokenizerTrainConfig.smoke)) "smoke"
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate tiny)) "tiny"

                let json =
                    JsonDocument.Parse(TokenizerTrainConfig.toJson TokenizerTrainConfig.smoke).RootElement

                Expect.equal (json.GetProperty("CropLength").GetInt32()) 64 "crop"
                Expect.equal (json.GetProperty("Trainer").GetProperty("Steps").GetInt32()) 300 "steps"

                Expect.equal
                    (json.GetProperty("Encoder").GetProperty("Quantizer").GetProperty("Codes").GetInt64())
                    128L
                    "codes"
            }

            test
                "loss recipes: esm leaves ESM's weights, the others change only their terms; an unknown name is refused" {
                let small = TokenizerTrainConfig.small

                let weights name =
                    (TokenizerTrainConfig.withLosses name small).Weights

                Expect.equal (weights "esm") small.Weights "esm"

                Expect.equal
                    (weights " Linear ")
                    { small.Weights with
                        LinearBeyondClamp = true
                    }
                    "linear"

                Expect.equal
                    (weights "fape-pair-heads")
                    { small.Weights with
                        Distance = 0.0
                        Direction = 0.0
                        Fape = 1.0
                    }
                    "fape-pair-heads"

                Expect.equal
                    (weights "fape-alone")
                    { small.Weights with
                        Distance = 0.0
                        Direction = 0.0
                        BinnedDirection = 0.0
                        Distogram = 0.0
                        Fape = 1.0
                    }
                    "fape-alone"

                let message =
                    try
                        TokenizerTrainConfig.withLosses "fape" small |> ignore
                        "no error"
                    with :? ArgumentException as e ->
                        e.Message

                Expect.stringContains message "unknown loss recipe 'fape' (expected esm or linear" "unknown recipe"
            }

            test "the sampler is a pure function of (seed, step); crops are contiguous and at most the crop length" {
                use _ = torch.NewDisposeScope()
                let train, _ = examples ()
                let a = TokenizerData.sample 5 3 4 30 train
                let b = TokenizerData.sample 5 3 4 30 train
                let c = TokenizerData.sample 5 4 4 30 train
                Expect.equal a b "same step, same crops"
                Expect.notEqual a c "next step, other crops"

                for e in a do
                    Expect.isLessThanOrEqual e.Length 30 "crop length"
                    let source = train |> Array.find (fun t -> t.Name = e.Name)
                    let i0 = Array.IndexOf(source.ResidueIndex, e.ResidueIndex.[0])
                    Expect.sequenceEqual e.ResidueIndex source.ResidueIndex.[i0 .. i0 + e.Length - 1] "contiguous"

                let batch = TokenizerData.batch a
                let l = a |> Array.map (fun e -> e.Length) |> Array.max
                Expect.equal batch.Backbone.shape [| 4L; int64 l; 3L; 3L |] "backbone shape"

                Expect.equal
                    (batch.Padding.logical_not().sum().ToInt64())
                    (a |> Array.sumBy (fun e -> int64 e.Length))
                    "real rows"
            }

            test "a tiny run lowers the loss and writes ESM-format checkpoints that load into fresh modules" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let report =
                    TokenizerTraining.trainOn tiny torch.CPU chains.Value.[1..] chains.Value.[..0] dir.Path false

                let losses = report.History |> Array.map (fun r -> r.Loss)
                let early = Array.average losses.[0..3]
                let late = Array.average losses.[12..15]
                Expect.isLessThan late early "mean loss of the last 4 steps below the first 4"
                let validation = dict report.History.[15].Validation
                Expect.isTrue (Double.IsFinite validation.["rmsd"]) "RMSD"
                Expect.isTrue (validation.["lddt_ca"] >= 0.0 && validation.["lddt_ca"] <= 1.0) "LDDT-CA"
                Expect.isGreaterThan validation.["code_usage"] 0.0 "code usage"
                Expect.isGreaterThanOrEqual validation.["perplexity"] 1.0 "perplexity"
                let ckpt = report.Checkpoint
                use generator = new torch.Generator(1UL)
                use encoder = new StructureEncoder(tiny.Encoder, generator)
                use decoder = new StructureDecoder(tiny.Decoder)
                Checkpoint.load (Path.Combine(ckpt, "encoder.safetensors")) encoder
                Checkpoint.load (Path.Combine(ckpt, "decoder.safetensors")) decoder
                let header = Safetensors.readHeader (Path.Combine(ckpt, "decoder.safetensors"))
                let headWidth = int64 header.Metadata.["head_width"]
                let shapes = header.Entries |> List.map (fun e -> e.Name, e.Shape)

                Expect.equal
                    (StructureDecoderCheckpoint.ofKeyShapesWith headWidth "decoder.safetensors" shapes)
                    tiny.Decoder
                    "the decoder's sizes from its file"

                // what the scripts load: the head count from the metadata, not ESM's 64-wide default
                use loaded =
                    StructureDecoderCheckpoint.load (Path.Combine(ckpt, "decoder.safetensors"))

                Expect.equal loaded.Config tiny.Decoder "StructureDecoderCheckpoint.load reads the head width"

                // token ids through the exported decoder's embeddings = the training path's projected codes
                use task = new TokenizerTraining.Task(tiny, torch.CPU, [||], [||])
                Checkpoint.load (Path.Combine(ckpt, "model.safetensors")) task.Tokenizer
                encoder.eval ()
                decoder.eval ()
                task.Tokenizer.eval ()
                use _ = torch.no_grad ()

                let batch =
                    TokenizerData.batch [| TokenizerData.crop 0 30 (TokenizerData.ofChain chains.Value.[0]) |]

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
                    new TokenizerTraining.Task({ tiny with InitFrom = ckpt }, torch.CPU, [||], [||])

                restarted.Tokenizer.eval ()
                let again, continued = restarted.Tokenizer.Run batch

                Expect.equal
                    (again.Tokens.data<int64>().ToArray())
                    (encoding.Tokens.data<int64>().ToArray())
                    "--init tokens"

                Tol.close "--init: the training path's hidden states" 1e-4 continued.Hidden trained.Hidden

                let wider =
                    { tiny with
                        InitFrom = ckpt
                        Decoder = { tiny.Decoder with DModel = 64L }
                    }

                match
                    InputError.catch (fun () -> new TokenizerTraining.Task(wider, torch.CPU, [||], [||]) |> ignore)
                with
                | Ok() -> failtest "an incompatible --init must be refused"
                | Error e ->
                    Expect.stringContains e.Message "--init" "names the option"
                    Expect.stringContains e.File "decoder.safetensors" "names the file"
            }

            test "the confidence stage trains the pLDDT and pairwise heads only and marks the exported decoder" {
                use _ = torch.NewDisposeScope()
                use stage1 = new TempDir()
                use dir = new TempDir()
                let train, valid = examples ()

                let tokenizer =
                    (TokenizerTraining.trainOn tiny torch.CPU chains.Value.[1..] chains.Value.[..0] stage1.Path false)
                        .Checkpoint

                let c =
                    { ConfidenceTrainConfig.smoke with
                        Tokenizer = tokenizer
                        CropLength = 40
                        ValidChains = 1
                        ValidLength = 50
                        Trainer =
                            { tiny.Trainer with
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
                    (if validation.["ptm_pearson"] >= 0.5 then
                         "informative"
                     else
                         "uninformative")
                    "the pTM verdict follows the last validation"

                Expect.equal meta.["head_width"] (string (tiny.Decoder.DModel / tiny.Decoder.Heads)) "metadata kept"
            }

            test "a crashed tokenizer run resumed from its checkpoint ends with exactly the uninterrupted run's loss" {
                use _ = torch.NewDisposeScope()
                use a = new TempDir()
                use b = new TempDir()

                let c =
                    { tiny with
                        Trainer =
                            { tiny.Trainer with
                                Steps = 10
                                CheckpointEvery = 4
                                EvalEvery = 5
                            }
                    }

                let train, valid = examples ()

                let runWith (out: string) (crashAt: int) (resume: bool) =
                    use task = new TokenizerTraining.Task(c, torch.CPU, train, valid)
                    let t: TrainingTask = if crashAt > 0 then CrashingTask(task, crashAt) else task
                    Trainer.run c.Trainer t out resume "{}"

                let whole = runWith a.Path 0 false
                Expect.throws (fun () -> runWith b.Path 7 false |> ignore) "crash at step 7"
                let resumed = runWith b.Path 0 true
                Expect.equal resumed.History.[0].Step 5 "resumed after step 4"
                Expect.equal (sprintf "%.6f" resumed.FinalLoss) (sprintf "%.6f" whole.FinalLoss) "final loss as printed"
                // (BLAS may round the last bit differently on tensors at other alignments; see the Trainer test)
                let agree = { absolute = 1e-9; relative = 1e-5 }

                for row in resumed.History do
                    Expect.floatClose
                        agree
                        row.Loss
                        whole.History.[row.Step - 1].Loss
                        (sprintf "loss at step %d" row.Step)

                for (k, v), (_, w) in Array.zip resumed.History.[5].Validation whole.History.[9].Validation do
                    Expect.floatClose agree v w ("final validation " + k)
            }

            test "crop curriculum: the length at each step, and stages that never start or go backwards are refused" {
                let curriculum = [ 100, 128; 300, 256 ]
                let at = Crops.lengthAt 64 curriculum

                Expect.sequenceEqual
                    ([ 0; 99; 100; 299; 300; 4999 ] |> List.map at)
                    [ 64; 64; 128; 128; 256; 256 ]
                    "lengths"

                let small = TokenizerTrainConfig.small

                Expect.isEmpty
                    (Validation.errors
                     <| TokenizerTrainConfig.validate
                         { small with
                             CropCurriculum = curriculum
                         })
                    "valid"

                let late =
                    Validation.errors
                    <| TokenizerTrainConfig.validate
                        { small with
                            CropCurriculum = [ 5000, 256 ]
                        }

                Expect.exists
                    late
                    (fun e -> e.Contains "CropCurriculum" && e.Contains "never starts")
                    "after the budget"

                let backwards =
                    Validation.errors
                    <| TokenizerTrainConfig.validate
                        { small with
                            CropCurriculum = [ 300, 256; 100, 128 ]
                        }

                Expect.exists backwards (fun e -> e.Contains "ascending") "not ascending"

                let one =
                    Validation.errors (TokenizerTrainConfig.validate { small with PairResidues = 1 })

                Expect.exists one (fun e -> e.Contains "PairResidues") "one residue has no pairs"
            }

            test "pair subsampling: distinct ascending positions from (seed, step); all positions give the full losses" {
                let a = TokenizerData.pairPositions 0 7 16 100
                Expect.equal a.Length 16 "count"
                Expect.equal (Array.distinct a).Length 16 "distinct"
                Expect.sequenceEqual a (Array.sort a) "ascending"
                Expect.isTrue (a |> Array.forall (fun i -> i >= 0L && i < 100L)) "in range"
                Expect.sequenceEqual (TokenizerData.pairPositions 0 7 16 100) a "same (seed, step), same draw"
                Expect.notEqual (TokenizerData.pairPositions 0 8 16 100) a "another step, another draw"
                Expect.sequenceEqual (TokenizerData.pairPositions 0 7 0 5) [| 0L .. 4L |] "0 = all"

                use _ = torch.NewDisposeScope()
                let train, _ = examples ()
                use model = new TokenizerModel(tiny, new torch.Generator(1UL))
                let b = TokenizerData.batch (Array.truncate 2 train)
                let encoding, out = model.Run b
                let l = b.Mask.shape.[1]
                let _, full = TokenizerTraining.losses tiny.Weights encoding out b

                let _, all =
                    TokenizerTraining.lossesOn tiny.Weights encoding out b (torch.arange (l))

                for (name, x), (_, y) in Array.zip full all do
                    Tol.close name 0.0 y x

                let some = torch.tensor (TokenizerData.pairPositions 0 0 10 (int l))
                let _, part = TokenizerTraining.lossesOn tiny.Weights encoding out b some

                let term name (terms: (string * torch.Tensor)[]) =
                    terms |> Array.find (fst >> (=) name) |> snd

                Expect.notEqual ((term "distogram" part).ToDouble()) ((term "distogram" full).ToDouble()) "a subset"
                Tol.close "commitment unchanged" 0.0 (term "commitment" part) (term "commitment" full)
            }
        ]
