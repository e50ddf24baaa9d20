namespace Esm3Structure.Training

open Esm3Structure
open Esm3Structure.Models

/// Settings of a multi-track masked-LM run.
type MultiTrackTrainConfig =
    {
        Model: MultiTrackConfig
        /// The training noise (Table S6).
        Masking: MaskingConfig
        /// The validation noise, drawn from the fixed seed `ValidSeed` so that every validation sees the same masks.
        ValidMasking: MaskingConfig
        ValidSeed: int
        Weights: TrackWeights
        /// Random contiguous crops of at most this many residues (BOS/EOS come on top).
        CropLength: int
        /// Validation chains (the first of the valid split), each cut to `ValidLength` residues.
        ValidChains: int
        ValidLength: int
        /// Chains per validation batch.
        ValidBatchSize: int
        /// A multi-track model (a folder holding `multitrack.safetensors` or `.pth`, or the file itself) whose weights
        /// the run starts from, with the same sizes; "" = a fresh initialisation.
        InitFrom: string
        Trainer: TrainerConfig
    }

/// The presets (ESM3-TRAINING.md §4.3) and the run's `config.json`.
module MultiTrackTrainConfig =

    /// "small": d 192, 6 layers, 6 heads, 16 geometric heads in block 0, residual scale capped at 1; Table S6 noise,
    /// σ = 0.1 Å, coordinates hidden wherever structure tokens are; crop 128, batch 16; AdamW 5e-4, β (0.9, 0.95),
    /// wd 0.01, clip 1, warm-up 500, cosine to 10 %, 10k steps. Validation: 32 chains of ≤ 256 residues under the
    /// training noise with a fixed seed.
    let small =
        {
            Model = MultiTrackConfig.small
            Masking = MaskingConfig.esm3
            ValidMasking = MaskingConfig.esm3
            ValidSeed = 12345
            Weights = TrackWeights.Unit
            CropLength = 128
            ValidChains = 32
            ValidLength = 256
            ValidBatchSize = 8
            InitFrom = ""
            Trainer =
                { TrainerConfig.small with
                    Steps = 10000
                    BatchSize = 16
                    LearningRate = 5e-4
                    WarmupSteps = 500
                }
        }

    /// "smoke" (minutes): d 64, 2 layers, 4 heads, 8 geometric heads; crop 64, batch 4, 300 steps (warm-up 30).
    let smoke =
        { small with
            Model =
                { small.Model with
                    DModel = 64L
                    Heads = 4L
                    VHeads = 8L
                    Layers = 2
                }
            CropLength = 64
            ValidChains = 16
            ValidLength = 128
            Trainer = TrainerConfig.smokeOf small.Trainer
        }

    /// "esm3-open": ESM3-open's sizes (`esm3_sm_open_v1`: d 1536, 24 heads, 256 geometric heads, 48 layers; 1.4B
    /// parameters) and the paper's 1.4B schedule (ESM3 Table S1, ESM3-TRAINING.md §3.6): AdamW 4e-4, β (0.9, 0.95), wd 0.01, clip 1,
    /// warm-up 5k, cosine to 10 %, 50k steps, context 2048. ESM's batch is 1,572,864 tokens (768 × 2048), which
    /// this trainer (no gradient accumulation) cannot hold; the step batch stays `small`'s 16. GPU-sized.
    let esm3Open =
        { small with
            Model = MultiTrackConfig.esm3
            CropLength = 2048
            ValidLength = 2048
            ValidBatchSize = 1
            Trainer =
                { small.Trainer with
                    Steps = 50000
                    LearningRate = 4e-4
                    WarmupSteps = 5000
                }
        }

    /// A preset by name ("small", "smoke" or "esm3-open").
    let preset (name: string) =
        TrainerConfig.pickPreset [ "small", small; "smoke", smoke; "esm3-open", esm3Open ] name

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: MultiTrackTrainConfig) =
        [
            yield! Validation.within "Model" (MultiTrackConfig.validate c.Model)
            yield! Validation.within "Masking" (MaskingConfig.validate c.Masking)
            yield! Validation.within "ValidMasking" (MaskingConfig.validate c.ValidMasking)
            yield! Validation.within "Trainer" (TrainerConfig.validate c.Trainer)
            yield! TrainerConfig.validateData 1 c.CropLength c.ValidChains c.ValidLength
            if c.ValidBatchSize < 1 then
                sprintf "ValidBatchSize must be at least 1 (got %d)" c.ValidBatchSize
        ]
        |> Validation.ofErrors c

    /// The config as JSON (`Json.ofRecordWith`): noise schedules by their names (`NoiseSchedule.name`).
    let toJson (c: MultiTrackTrainConfig) =
        Json.ofRecordWith
            (function
            | :? NoiseSchedule as s -> Some(NoiseSchedule.name s)
            | _ -> None)
            []
            (box c)
