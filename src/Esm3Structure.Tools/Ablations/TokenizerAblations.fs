namespace Esm3Structure.Ablations

open System
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training

/// The structure tokenizer's ablations, each at a "tiny" budget derived from the smoke preset.
module TokenizerAblations =

    /// The ablation runner's adapter for stage-1 tokenizer training on the given chains (silent progress).
    let trainer
        (device: torch.Device)
        (train: ProteinChain[])
        (valid: ProteinChain[])
        : AblationTrainer<TokenizerTrainConfig> =
        {
            Configure =
                Func<_, _, _, _>(fun (c: TokenizerTrainConfig) seed budget ->
                    { c with
                        Trainer =
                            { Ablation.configureTrainer c.Trainer seed budget with
                                Progress = ProgressMode.Silent
                            }
                    })
            ToJson = Func<_, _>(TokenizerTrainConfig.toJson)
            Train =
                Func<_, _, _, _>(fun (c: TokenizerTrainConfig) (folder: string) (resume: bool) ->
                    TokenizerTraining.trainOn c device train valid folder resume)
        }

    /// Steps of the tiny budget: a run of the smoke preset takes about 100 s here (validation included), so an
    /// ablation of 3 variants × 2 seeds (the default) takes about 10 minutes, with `--seeds 3` about 15.
    [<Literal>]
    let TinySteps = 1000

    /// The smoke preset with validation and checkpoints every 50 steps (the budget itself is `Ablation.Budget`; its
    /// 300 steps are the schedule's length under a time budget).
    let tiny =
        let smoke = TokenizerTrainConfig.smoke

        { smoke with
            Trainer =
                { smoke.Trainer with
                    EvalEvery = 50
                    CheckpointEvery = 50
                    LogEvery = 10
                    WarmupSteps = 20
                }
        }

    let private quantizer (change: QuantizerConfig -> QuantizerConfig) (c: TokenizerTrainConfig) =
        let q = change c.Encoder.Quantizer

        { c with
            Encoder =
                { c.Encoder with
                    Quantizer = q
                    DOut = q.Dim
                }
        }

    let private ablation name variants : Ablation<TokenizerTrainConfig> =
        {
            Name = name
            Base = tiny
            Variants = variants
            Seeds = [| 0; 1 |]
            Budget = AblationBudget.Steps TinySteps
        }

    /// Geometric attention's score terms: both (ESM) / rotation only / distance only, in every encoder block.
    let geometricTerms =
        let terms name (t: GeometricTerms) =
            Ablation.variant name (fun (c: TokenizerTrainConfig) ->
                { c with
                    Encoder = { c.Encoder with GeometricTerms = t }
                })

        ablation
            "geometric-terms"
            [|
                terms "both" GeometricTerms.Both
                terms "rotation-only" GeometricTerms.RotationOnly
                terms "distance-only" GeometricTerms.DistanceOnly
            |]

    /// EMA (with restarts) / gradient-trained (seed loss) / reparameterised (AminoAseed) codebook.
    let codebookKind =
        ablation
            "codebook-kind"
            [|
                Ablation.variant "ema" id
                Ablation.variant
                    "gradient"
                    (quantizer (fun q ->
                        { q with
                            Kind = QuantizerKind.Gradient
                            Restart = NoRestart
                        }))
                Ablation.variant
                    "aminoaseed"
                    (quantizer (fun q ->
                        { q with
                            Kind = QuantizerKind.Reparameterised
                            Restart = NoRestart
                        }))
            |]

    /// Codebook size × code width: 256 × 64, 1024 × 64, 4096 × 128 (the encoder's output width follows).
    let codebookSize =
        let size (codes: int64) (dim: int64) =
            Ablation.variant (sprintf "%dx%d" codes dim) (quantizer (fun q -> { q with Codes = codes; Dim = dim }))

        ablation "codebook-size" [| size 256L 64L; size 1024L 64L; size 4096L 128L |]

    /// Neighbours per residue in the encoder: 8 / 16 / 32.
    let knn =
        let k (n: int) =
            Ablation.variant (sprintf "k%d" n) (fun (c: TokenizerTrainConfig) ->
                { c with
                    Encoder = { c.Encoder with Knn = n }
                })

        ablation "knn" [| k 8; k 16; k 32 |]

    /// Commitment weight β: 0.1 / 0.25 / 1.0.
    let commitment =
        let beta (b: float) =
            Ablation.variant (sprintf "beta%g" b) (quantizer (fun q -> { q with Beta = b }))

        ablation "commitment" [| beta 0.1; beta 0.25; beta 1.0 |]

    /// This library's recipe options beyond ESM's, against ESM's recipe: backbone FAPE (weight 1); FAPE with the
    /// encoder's explicit neighbour geometry; that with chain-composed decoder frames; FAPE with a 4-round structure
    /// module.
    let recipe =
        let fape (c: TokenizerTrainConfig) =
            { c with
                Weights = { c.Weights with Fape = 1.0 }
            }

        let geometry (c: TokenizerTrainConfig) =
            { c with
                Encoder =
                    { c.Encoder with
                        NeighbourGeometry = true
                    }
            }

        let chain (c: TokenizerTrainConfig) =
            { c with
                Decoder = { c.Decoder with ChainFrames = true }
            }

        let structureModule (c: TokenizerTrainConfig) =
            let d = c.Decoder.DModel

            { c with
                Decoder =
                    { c.Decoder with
                        StructureModule =
                            Some
                                {
                                    Iterations = 4
                                    Attention =
                                        { InvariantPointAttentionConfig.alphaFold2 d with
                                            Heads = c.Decoder.Heads
                                        }
                                    Start = StructureModuleStart.Identity
                                }
                    }
            }

        ablation
            "recipe"
            [|
                Ablation.variant "esm" id
                Ablation.variant "fape" fape
                Ablation.variant "fape-geometry" (fape >> geometry)
                Ablation.variant "fape-geometry-chain" (fape >> geometry >> chain)
                Ablation.variant "fape-module" (fape >> structureModule)
            |]

    /// The stage-1 loss recipes (`TokenizerTrainConfig.lossRecipes`) against ESM's: distance and direction linear
    /// beyond their clamps; backbone FAPE in their place (binned direction and distogram kept); FAPE alone.
    let losses =
        ablation
            "losses"
            (TokenizerTrainConfig.lossRecipes
             |> List.map (fun (name, _) -> Ablation.variant name (TokenizerTrainConfig.withLosses name))
             |> Array.ofList)

    /// What a token sees: ESM's neighbourhood alone ("esm") against 1 and 2 residue-level blocks over the whole
    /// chain after it (`StructureEncoderConfig.GlobalLayers`).
    let context =
        let globalLayers (n: int) =
            Ablation.variant (sprintf "global-%d" n) (fun (c: TokenizerTrainConfig) ->
                { c with
                    Encoder = { c.Encoder with GlobalLayers = n }
                })

        ablation "context" [| Ablation.variant "esm" id; globalLayers 1; globalLayers 2 |]

    /// The peak learning rate (AdamW, the preset's warm-up and cosine): the preset's 4e-4 ("esm", the paper's stage-1
    /// rate) against 1e-3 and 2e-3.
    let learningRate =
        let rate (name: string) (lr: float) =
            Ablation.variant name (fun (c: TokenizerTrainConfig) ->
                { c with
                    Trainer = { c.Trainer with LearningRate = lr }
                })

        ablation "learning-rate" [| Ablation.variant "esm" id; rate "lr1e-3" 1e-3; rate "lr2e-3" 2e-3 |]

    /// Where a token's residue sits: ESM's local inputs ("esm") against each residue's position in its chain's
    /// principal-axes frame as an encoder input (`StructureEncoderConfig.PrincipalPosition`), with the preset's EMA
    /// codebook ("principal"), an EMA codebook of 4,096 codes, ESM's count ("principal-4096"), and a 4,096-code finite
    /// scalar quantizer, levels 8 × 8 × 8 × 8 ("principal-fsq").
    let position =
        let principal (c: TokenizerTrainConfig) =
            { c with
                Encoder =
                    { c.Encoder with
                        PrincipalPosition = true
                    }
            }

        let codes (c: TokenizerTrainConfig) =
            { c with
                Encoder =
                    { c.Encoder with
                        Quantizer =
                            { c.Encoder.Quantizer with
                                Codes = 4096L
                            }
                    }
            }

        let fsq (c: TokenizerTrainConfig) =
            let q = QuantizerConfig.finite [ 8; 8; 8; 8 ]

            { c with
                Encoder =
                    { c.Encoder with
                        Quantizer = q
                        DOut = q.Dim
                    }
            }

        ablation
            "position"
            [|
                Ablation.variant "esm" id
                Ablation.variant "principal" principal
                Ablation.variant "principal-4096" (principal >> codes)
                Ablation.variant "principal-fsq" (principal >> fsq)
            |]

    /// Every built-in ablation.
    let all =
        [|
            geometricTerms
            codebookKind
            codebookSize
            knn
            commitment
            recipe
            losses
            context
            learningRate
            position
        |]

    /// A built-in ablation by name.
    let byName (name: string) =
        match all |> Array.tryFind (fun a -> a.Name = name.Trim().ToLowerInvariant()) with
        | Some a -> a
        | None ->
            raise (
                ArgumentException(
                    sprintf
                        "unknown ablation '%s' (expected one of: %s)"
                        name
                        (String.Join(", ", all |> Array.map (fun a -> a.Name)))
                )
            )
