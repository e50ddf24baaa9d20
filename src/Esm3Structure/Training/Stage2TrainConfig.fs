namespace Esm3Structure.Training

open System
open Esm3Structure
open Esm3Structure.Models

/// Weights of the stage-2 loss terms (ESM3-TRAINING.md §1.4; the paper prints none: ours all 1). The stage-1
/// backbone terms stay on; the commitment term is gone (the encoder and codebook are frozen).
type Stage2LossWeights =
    {
        /// Backbone distance (§1.3 #1).
        Distance: float
        /// Backbone direction (§1.3 #2).
        Direction: float
        /// Binned direction classification (§1.3 #3).
        BinnedDirection: float
        /// Distogram (§1.3 #4).
        Distogram: float
        /// All-atom distance over the atom14 slots (§1.4).
        AllAtomDistance: float
        /// All-atom direction from intra-residue bonds (§1.4).
        AllAtomDirection: float
        /// pLDDT cross-entropy against the detached LDDT-CA of the decoded structure (§1.4).
        Plddt: float
        /// pAE cross-entropy against the binned distance difference (§1.4).
        Pae: float
        /// Distance losses on squared distances, as Algorithm 10 prints (§1.7 #1); default false.
        SquaredDistance: bool
    }

/// Settings of a stage-2 structure-tokenizer run (ESM3-TRAINING.md §1.4, §4.2): a frozen stage-1 encoder and
/// codebook, a new decoder trained on their tokens (with the residue sequence as a second input) to place all atoms.
type Stage2TrainConfig =
    {
        /// The stage-1 `encoder.safetensors` (ESM's keys): encoder and codebook, frozen.
        Encoder: string
        /// The new decoder.
        Decoder: StructureDecoderConfig
        /// Sum a learned residue embedding with the token embedding at the decoder input (§1.4).
        SequenceInput: bool
        Weights: Stage2LossWeights
        /// The all-atom direction loss uses at most this many vectors per protein (ESM3: 10,000).
        MaxDirectionVectors: int
        /// Random contiguous crops of at most this many residues (tokens come from the whole chain).
        CropLength: int
        /// Validation chains (the first of the valid split), each cut to `ValidLength` residues.
        ValidChains: int
        ValidLength: int
        Trainer: TrainerConfig
    }

/// Presets (ESM3-TRAINING.md §4.2, the CPU note on stage 2) and checks of `Stage2TrainConfig`.
module Stage2TrainConfig =

    /// Every term with weight 1, plain distances.
    let unitWeights =
        {
            Distance = 1.0
            Direction = 1.0
            BinnedDirection = 1.0
            Distogram = 1.0
            AllAtomDistance = 1.0
            AllAtomDirection = 1.0
            Plddt = 1.0
            Pae = 1.0
            SquaredDistance = false
        }

    /// "small" (§4.2's CPU note: "2k steps of a 6 × 128 decoder with sequence input and pLDDT/pAE heads"): decoder
    /// 6 × 128, 4 heads, pairwise 32 → 64; sequence input; crop 128, batch 8; AdamW 4e-4, β (0.9, 0.95), wd 0.01,
    /// clip 1, warm-up 100, cosine to 10 %, 2k steps. `Encoder` must be set.
    let small =
        {
            Encoder = ""
            Decoder =
                { StructureDecoderConfig.small with
                    Layers = 6
                }
            SequenceInput = true
            Weights = unitWeights
            MaxDirectionVectors = AllAtomLosses.MaxDirectionVectors
            CropLength = 128
            ValidChains = 32
            ValidLength = 256
            Trainer =
                { TrainerConfig.small with
                    Steps = 2000
                    WarmupSteps = 100
                    EvalEvery = 250
                    CheckpointEvery = 250
                }
        }

    /// "smoke": decoder 2 × 64 (2 heads), pairwise 16 → 32, crop 64, batch 4, 300 steps (warm-up 30).
    let smoke =
        { small with
            Decoder = StructureDecoderConfig.smoke
            CropLength = 64
            ValidChains = 16
            ValidLength = 128
            Trainer = TrainerConfig.smokeOf small.Trainer
        }

    /// "esm3-open": ESM's released decoder (`esm3_structure_decoder_v0`: 30 × 1280, 20 heads, pairwise 128 → 128,
    /// no sequence input, so the file has ESM's keys); the paper's stage 2A (ESM3-TRAINING.md §1.4): 90k steps, crops of 512; the
    /// learning rate and what else it leaves unstated are `small`'s. GPU-sized.
    let esm3Open =
        { small with
            Decoder = StructureDecoderConfig.esm3
            SequenceInput = false
            CropLength = 512
            ValidLength = 512
            Trainer = { small.Trainer with Steps = 90000 }
        }

    /// A preset by name ("small", "smoke" or "esm3-open").
    let preset (name: string) =
        TrainerConfig.pickPreset [ "small", small; "smoke", smoke; "esm3-open", esm3Open ] name

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: Stage2TrainConfig) =
        [
            if String.IsNullOrWhiteSpace c.Encoder then
                "Encoder: the path of a stage-1 encoder.safetensors is required"
            yield! Validation.within "Decoder" (StructureDecoderConfig.validate c.Decoder)
            yield! Validation.within "Trainer" (TrainerConfig.validate c.Trainer)
            if c.MaxDirectionVectors < 1 then
                sprintf "MaxDirectionVectors must be at least 1 (got %d)" c.MaxDirectionVectors
            yield! TrainerConfig.validateData 2 c.CropLength c.ValidChains c.ValidLength
        ]
        |> Validation.ofErrors c

    /// The config as JSON (`Json.ofRecord`), led by "Stage": 2.
    let toJson (c: Stage2TrainConfig) =
        Json.ofRecord [ "Stage", box 2 ] (box c)
