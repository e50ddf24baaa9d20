module Esm3Structure.Tests.Training.Stage2TrainingTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

let private chains =
    lazy
        (Data.smallNames.Value
         |> Array.truncate 4
         |> Array.map (fun n -> StructureFile.read (Data.small n) None))

/// A tiny stage-1 encoder (1 block × 32, 4 vector heads, 32 × 16 EMA codes), its codebook initialised from one
/// training-mode pass over a chain, as a stage-1 run would leave it; written to `path` with ESM's keys.
let private writeEncoder (path: string) =
    let config = TokenizerFixtures.tinyEncoderConfig

    use _ = torch.NewDisposeScope()
    use g = new torch.Generator(11UL)
    use encoder = new StructureEncoder(config, g)
    Init.initialise g encoder
    encoder.train ()
    let b = TokenizerData.batch [| TokenizerData.ofChain chains.Value.[1] |]
    encoder.Encode(b.Backbone, b.ResidueIndex, b.Padding, null) |> ignore
    encoder.eval ()
    Checkpoint.save path encoder null

/// The smoke preset shrunk to a run of a few seconds: the tiny stage-1 run's decoder, crops and trainer.
let private tiny (encoder: string) =
    let stage1 = TokenizerFixtures.tinyTrainConfig

    { Stage2TrainConfig.smoke with
        Encoder = encoder
        Decoder = stage1.Decoder
        CropLength = stage1.CropLength
        ValidChains = stage1.ValidChains
        ValidLength = stage1.ValidLength
        Trainer = stage1.Trainer
    }

/// Train chains 1–3 (chain 2 read as backbone-only), valid chain 0.
let private splits () =
    let c = chains.Value
    [| c.[1], true; c.[2], false; c.[3], true |], [| c.[0], true |]

let private tensorsOf (path: string) =
    (Safetensors.read path).Tensors |> List.map (fun (n, t) -> n, t)

[<Tests>]
let tests =
    testList
        "Training/Stage2Training"
        [
            test "a tiny stage-2 run lowers the loss, keeps the encoder frozen, and writes checkpoints that load" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let encoderPath = dir.File "stage1-encoder.safetensors"
                writeEncoder encoderPath
                let config = tiny encoderPath
                let train, valid = splits ()
                let out = Path.Combine(dir.Path, "run")
                let report = Stage2Training.trainOn config torch.CPU train valid out false
                let losses = report.History |> Array.map (fun r -> r.Loss)
                Expect.equal losses.Length 16 "16 rows"
                Expect.isTrue (losses |> Array.forall Double.IsFinite) "finite losses"
                let early = Array.average losses.[0..3]
                let late = Array.average losses.[12..15]
                Expect.isLessThan late early "mean loss of the last 4 steps below the first 4"

                let terms = dict report.History.[15].Terms

                for name in [ "allatom_distance"; "allatom_direction"; "plddt"; "pae"; "distance" ] do
                    Expect.isTrue (terms.ContainsKey name && Double.IsFinite terms.[name]) name

                let validation = dict report.History.[15].Validation
                Expect.isTrue (Double.IsFinite validation.["rmsd"]) "RMSD"
                Expect.isTrue (Double.IsFinite validation.["allatom_rmsd"]) "all-atom RMSD"
                Expect.isTrue (validation.["lddt_ca"] >= 0.0 && validation.["lddt_ca"] <= 1.0) "LDDT-CA"

                Expect.isTrue
                    (validation.["plddt_error"] >= 0.0 && validation.["plddt_error"] <= 1.0)
                    "pLDDT calibration"

                let json =
                    JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "config.json"))).RootElement

                Expect.equal (json.GetProperty("Stage").GetInt32()) 2 "config.json records the stage"

                // the encoder is frozen: the exported encoder equals the stage-1 file, tensor for tensor
                let ckpt = report.Checkpoint
                let before = tensorsOf encoderPath |> dict
                let after = tensorsOf (Path.Combine(ckpt, "encoder.safetensors"))
                Expect.equal after.Length before.Count "same encoder tensors"

                for name, t in after do
                    Expect.isTrue (t.eq(before.[name]).all().ToBoolean()) ("encoder tensor unchanged: " + name)

                // the decoder loads with ESM's loader (sizes from its shapes and metadata, sequence input)
                use decoder =
                    StructureDecoderCheckpoint.load (Path.Combine(ckpt, "decoder.safetensors"))

                Expect.equal decoder.Config config.Decoder "decoder sizes"
                Expect.isTrue decoder.SequenceInput "sequence input"

                use encoder =
                    StructureEncoderCheckpoint.load (Path.Combine(ckpt, "encoder.safetensors"))

                // decode a chain through the exported files: finite atoms, pLDDT in [0, 1]
                use _ = torch.no_grad ()
                let e = Stage2Data.crop 0 30 (Stage2Data.ofChain true chains.Value.[0])
                let tokens = Stage2Training.encodeTokens encoder torch.CPU e.Backbone
                Expect.isTrue (tokens |> Array.forall (fun t -> t >= 0L && t < 32L)) "codes of the 32-code book"
                let b = Stage2Data.batch [| e |] [| tokens |]
                let decoded, atoms = Stage2Training.run decoder b
                Expect.isTrue (atoms.Positions.isfinite().all().ToBoolean()) "finite atoms"
                let plddt = decoded.Plddt

                Expect.isTrue
                    (plddt.ge(0.0.ToScalar()).logical_and(plddt.le (1.0.ToScalar())).all().ToBoolean())
                    "pLDDT in [0, 1]"

                // the trainer's own checkpoint (model.safetensors) is the decoder's state
                use fresh = new StructureDecoder(config.Decoder, true)
                Checkpoint.load (Path.Combine(ckpt, "model.safetensors")) fresh
                fresh.eval ()

                Tol.close
                    "trainer checkpoint = exported decoder"
                    1e-6
                    (fst (Stage2Training.run fresh b)).Backbone
                    decoded.Backbone
            }

            test "the encoder object stays frozen through training steps (parameters and buffers)" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let encoderPath = dir.File "stage1-encoder.safetensors"
                writeEncoder encoderPath
                let config = tiny encoderPath

                let config =
                    { config with
                        Trainer =
                            { config.Trainer with
                                Steps = 3
                                EvalEvery = 0
                                CheckpointEvery = 0
                            }
                    }

                use encoder = StructureEncoderCheckpoint.load encoderPath

                let snapshot =
                    Checkpoint.stateDict encoder |> List.map (fun (n, t) -> n, t.detach().clone())

                let train, valid = splits ()

                let examples (set: (ProteinChain * bool)[]) =
                    set |> Array.map (fun (c, f) -> Stage2Data.ofChain f c)

                encoder.train () // even a training-mode encoder must not learn: the task sets it to eval

                use task =
                    new Stage2Training.Task(config, encoder, torch.CPU, examples train, examples valid)

                Trainer.run config.Trainer task (Path.Combine(dir.Path, "run")) false "{}"
                |> ignore

                Expect.isFalse encoder.training "eval mode"

                for (name, t), (_, s) in List.zip (Checkpoint.stateDict encoder) snapshot do
                    Expect.isTrue (t.eq(s).all().ToBoolean()) ("unchanged: " + name)

                Expect.isTrue
                    (encoder.parameters ()
                     |> Seq.forall (fun p -> isNull p.grad || p.grad.abs().max().ToDouble() = 0.0))
                    "no gradient reached the encoder"
            }
        ]
