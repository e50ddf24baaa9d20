namespace Esm3Structure.Tests

open System
open System.IO
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training

/// Small encoder and decoder files with random weights (what the script tests also use).
module TokenizerFixtures =

    /// d 24, 4 vector heads, 2 blocks, 64 × 8 codes, 10 position bins; ESM's k = 16 (a file cannot say k, so a
    /// loaded encoder has ESM's).
    let smallEncoderConfig =
        { StructureEncoderConfig.esm3 with
            DModel = 24L
            VHeads = 4L
            DOut = 8L
            PositionBins = 10L
            Quantizer =
                { QuantizerConfig.esm3 with
                    Codes = 64L
                    Dim = 8L
                }
        }

    /// The smoke encoder at d 32 with 4 vector heads and 32 × 16 EMA codes: the stage-1 encoder of the stage-2 and
    /// multi-track training tests.
    let tinyEncoderConfig =
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

    /// A small decoder with all sizes different: d 48, 3 heads (d_head 16), 2 layers, pairwise 16 → 24.
    let tinyDecoderConfig: StructureDecoderConfig =
        {
            DModel = 48L
            Heads = 3L
            Layers = 2
            PairwiseDownproject = 16L
            PairwiseHidden = 24L
            StructureModule = None
            ChainFrames = false
        }

    /// A small encoder with random weights (codes spread by N(0, 1), geometric scales random).
    let smallEncoder (seed: uint64) =
        let g = new torch.Generator(seed)
        let m = new StructureEncoder(smallEncoderConfig, g)
        Init.initialise g m

        do
            use _ = torch.no_grad ()

            for struct (name, p) in m.named_parameters () do
                if name.EndsWith "_per_head" then
                    p.copy_ (torch.randn (p.shape, generator = g)) |> ignore

        m.eval ()
        m

    /// Writes a small random encoder to `path`.
    let writeEncoder (path: string) (seed: uint64) =
        use m = smallEncoder seed
        Checkpoint.save path m null

    /// Writes a small random decoder (`StructureDecoderConfig.small`) to `path`.
    let writeDecoder (path: string) (seed: uint64) =
        let g = new torch.Generator(seed)
        use m = new StructureDecoder(StructureDecoderConfig.small)
        Init.initialise g m
        Checkpoint.save path m null

    /// The tokenizer's smoke preset shrunk further: a stage-1 run of a few seconds.
    let tinyTrainConfig =
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

    /// The first four chains of the small test set.
    let smallChains =
        lazy
            (Data.smallNames.Value
             |> Array.truncate 4
             |> Array.map (fun n -> StructureFile.read (Data.small n) None))

    /// Training examples of the 2nd to 4th small chains, and the first cut to 50 residues for validation.
    let trainingExamples () =
        let train = smallChains.Value.[1..] |> Array.map TokenizerData.ofChain

        let valid =
            [| TokenizerData.crop 0 50 (TokenizerData.ofChain smallChains.Value.[0]) |]

        train, valid
