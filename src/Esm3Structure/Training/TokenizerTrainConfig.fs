namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// Weights of the stage-1 loss terms (ESM3-TRAINING.md §1.3; the paper prints none: ours all 1). The commitment
/// weight β lives in the quantizer config. The inverse-folding term is not trained (the released decoder has no
/// sequence head).
type TokenizerLossWeights =
    {
        Distance: float
        Direction: float
        BinnedDirection: float
        Distogram: float
        /// Backbone FAPE (`StructureLosses.backboneFape`: clamped at 10 Å with 10 % unclamped), a global term that
        /// does not vanish for large errors; not one of ESM's terms (ESM: 0).
        Fape: float
        /// The local CA distance loss (`StructureLosses.localCaDistance`: the CA pairs within LDDT's 15 Å, mean
        /// absolute distance error in Å), a surrogate of LDDT-CA; not one of ESM's terms (ESM: 0).
        LocalDistance: float
        /// The local shape term (`StructureLosses.localShape`): a training-only linear head on each token's
        /// straight-through code vector classifies the CA trace's virtual bond angle and torsion at its residue, so
        /// that the encoder's vectors, and the codes that follow them, tell local shapes apart; not one of ESM's
        /// terms (ESM: 0).
        LocalShape: float
        /// Distance loss on squared distances, as Algorithm 10 prints (§1.7 #1); default false.
        SquaredDistance: bool
        /// The distance and direction losses let errors beyond their clamps grow linearly (Huber,
        /// `StructureLosses.limitError`) instead of clamping them, so that pairs far off keep a gradient; default
        /// false (ESM's clamps).
        LinearBeyondClamp: bool
    }

/// Settings of a stage-1 structure-tokenizer run.
type TokenizerTrainConfig =
    {
        Encoder: StructureEncoderConfig
        Decoder: StructureDecoderConfig
        Weights: TokenizerLossWeights
        /// Random contiguous crops of at most this many residues.
        CropLength: int
        /// Validation chains (the first of the valid split), each cut to `ValidLength` residues.
        ValidChains: int
        ValidLength: int
        /// Decode the encoder's continuous vectors instead of their codes (a diagnostic ceiling: no tokens, no
        /// information bottleneck; the codebook still trains and reports usage). Default false.
        BypassQuantizer: bool
        /// Crop lengths that take over from `CropLength` at given steps, ascending: `[(1000, 128); (3000, 256)]`
        /// trains on `CropLength` until step 1000, then on 128, then from step 3000 on 256. Empty (the default):
        /// `CropLength` throughout.
        CropCurriculum: (int * int) list
        /// The pairwise losses (distance, direction, binned direction, distogram) read only this many residues of
        /// each batch, drawn at random per step (the same for every row); 0 (the default, ESM's) reads all. Their
        /// cost falls with the square of the fraction kept.
        PairResidues: int
        /// A tokenizer folder (`encoder.safetensors`, `decoder.safetensors`, e.g. `models/structure-tokenizer`) whose
        /// weights a fresh run starts from instead of random ones (`TokenizerModel.InitialiseFrom`); "" (the
        /// default): random. A resumed run continues from its checkpoint either way.
        InitFrom: string
        /// Train the decoder (and the map from codes to its width) on the tokens of a frozen encoder and codebook:
        /// the encoder's weights get no gradient and the codebook no EMA update, so the run's tokens are `InitFrom`'s,
        /// token for token. Needs `InitFrom`. Default false (stage 1 trains all three).
        FreezeEncoder: bool
        /// Reflect `InitFrom`'s decoder through z = 0 before training (`StructureDecoder.ReflectStructures`): for a
        /// model that learned the mirror images of its chains. Needs `InitFrom`. Default false.
        ReflectInit: bool
        /// Train only the decoder's structure module, which must start from the affine head's frames
        /// (`StructureModuleStart.AffineHead`), on top of `InitFrom`'s tokenizer: every loaded weight (encoder,
        /// codebook, decoder trunk and heads, the map from codes to the decoder's width) is frozen, and the module,
        /// absent from `InitFrom`'s files, starts new (AlphaFold2's zero update layers: at step 0 the structures are
        /// `InitFrom`'s). The confidence heads are kept as loaded. Needs `InitFrom`. Default false.
        RefineOnly: bool
        Trainer: TrainerConfig
    }

/// The presets of ESM3-TRAINING.md §4.2 and the run's `config.json`.
module TokenizerTrainConfig =

    /// All stage-1 terms with weight 1, plain distances.
    let unitWeights =
        {
            Distance = 1.0
            Direction = 1.0
            BinnedDirection = 1.0
            Distogram = 1.0
            Fape = 0.0
            LocalDistance = 0.0
            LocalShape = 0.0
            SquaredDistance = false
            LinearBeyondClamp = false
        }

    /// "small": encoder 2 × 128 with 16 geometric heads (SwiGLU ratio 3: ESM's rounding gives 512, not 384),
    /// EMA codebook 512 × 64 with restarts; decoder 4 × 128, 4 heads, pairwise 32 → 64; crop 128, batch 8;
    /// AdamW 4e-4, β (0.9, 0.95), wd 0.01, clip 1, warm-up 300, cosine to 10 %, 5k steps.
    let small =
        {
            Encoder = StructureEncoderConfig.small
            Decoder = StructureDecoderConfig.small
            Weights = unitWeights
            CropLength = 128
            ValidChains = 32
            ValidLength = 256
            BypassQuantizer = false
            CropCurriculum = []
            PairResidues = 0
            InitFrom = ""
            FreezeEncoder = false
            ReflectInit = false
            RefineOnly = false
            Trainer = TrainerConfig.small
        }

    /// "smoke" (≤ 10 min): encoder 1 × 64 with 8 heads, codebook 128 × 32, decoder 2 × 64 (2 heads), pairwise
    /// 16 → 32, crop 64, batch 4, 300 steps (warm-up 30).
    let smoke =
        { small with
            Encoder = StructureEncoderConfig.smoke
            Decoder = StructureDecoderConfig.smoke
            CropLength = 64
            ValidChains = 16
            ValidLength = 128
            Trainer = TrainerConfig.smokeOf TrainerConfig.small
        }

    /// "small-decoder": `small` with its compute moved from the encoder to the decoder: encoder 1 × 64 (8
    /// geometric heads; the encoder's B·L·k tokens made it about 60 % of `small`'s step), decoder 6 × 192 (3
    /// heads of ESM's width 64); the codebook, losses and schedule of `small`.
    let smallDecoder =
        { small with
            Encoder =
                { small.Encoder with
                    DModel = 64L
                    VHeads = 8L
                    Layers = 1
                }
            Decoder =
                { small.Decoder with
                    DModel = 192L
                    Heads = 3L
                    Layers = 6
                }
        }

    /// "esm3-open": ESM's released sizes (`esm3_structure_encoder_v0` and `esm3_structure_decoder_v0`, so that
    /// `--init` can start from ESM's own files): encoder 2 × 1024 with 128 geometric heads, EMA codebook
    /// 4096 × 128; decoder 30 × 1280, 20 heads, pairwise 128 → 128 (the paper's stage-1 decoder was 8 × 1024; the
    /// released one is stage 2's). The paper's stated stage-1 schedule (ESM3-TRAINING.md §1.3): AdamW 4e-4 with cosine decay,
    /// 90k steps, crops of 512; what it leaves unstated (batch, warm-up, betas, weight decay, clipping) is `small`'s.
    /// GPU-sized: a step here takes minutes.
    let esm3Open =
        { small with
            Encoder = StructureEncoderConfig.esm3
            Decoder = StructureDecoderConfig.esm3
            CropLength = 512
            ValidLength = 512
            Trainer = { small.Trainer with Steps = 90000 }
        }

    /// "overfit": the `small` model memorising a few chains (a diagnosis: can the losses, labels, heads
    /// and frames learn a structure at all?): crops of 64 (short chains whole), batch 4, Adam 4e-4 constant from
    /// step 1 (no warm-up, no decay, β₂ 0.999, no weight decay), 1,000 steps, validation every 100 steps on up to 8
    /// chains cut to 64 (the training chains themselves, `scripts/overfit.fsx`), a checkpoint at the end only.
    let overfit =
        { small with
            CropLength = 64
            ValidChains = 8
            ValidLength = 64
            Trainer =
                { small.Trainer with
                    Steps = 1000
                    BatchSize = 4
                    LearningRate = 4e-4
                    Beta2 = 0.999
                    WeightDecay = 0.0
                    WarmupSteps = 0
                    FinalFraction = 1.0
                    EvalEvery = 100
                    LogEvery = 100
                    CheckpointEvery = 1000
                }
        }

    /// "overfit-smoke": `overfit` with the `smoke` model and Adam 1e-3 for 2,000 steps: the suite's overfit test
    /// (about 3 minutes; 1smx_B, 1ii7_A, 1hyk_A, 1j34_C reach a mean of 0.66 Å here, 0.59 after 2,400 steps; the small
    /// model's 4e-4 needs over 1,200 slower steps for < 1 Å; 2e-3 is slower to converge).
    let overfitSmoke =
        { overfit with
            Encoder = smoke.Encoder
            Decoder = smoke.Decoder
            Trainer =
                { overfit.Trainer with
                    Steps = 2000
                    LearningRate = 1e-3
                    CheckpointEvery = 2000
                }
        }

    /// The stage-1 loss recipes by name, each a change of the weights: "esm" (ESM's four terms, unchanged);
    /// "linear" (ESM's, with distance and direction linear beyond their clamps, `LinearBeyondClamp`);
    /// "fape-pair-heads" (backbone FAPE at weight 1 in place of distance and direction; binned direction and
    /// distogram kept); "fape-alone" (backbone FAPE only).
    let lossRecipes: (string * (TokenizerLossWeights -> TokenizerLossWeights)) list =
        let fape (pairHeads: bool) (w: TokenizerLossWeights) =
            { w with
                Distance = 0.0
                Direction = 0.0
                BinnedDirection = (if pairHeads then w.BinnedDirection else 0.0)
                Distogram = (if pairHeads then w.Distogram else 0.0)
                Fape = 1.0
            }

        [
            "esm", id
            "linear", (fun w -> { w with LinearBeyondClamp = true })
            "fape-pair-heads", fape true
            "fape-alone", fape false
        ]

    /// The config with the named loss recipe (`lossRecipes`) applied to its weights.
    let withLosses (name: string) (c: TokenizerTrainConfig) =
        match lossRecipes |> List.tryFind (fun (n, _) -> n = name.Trim().ToLowerInvariant()) with
        | Some(_, change) -> { c with Weights = change c.Weights }
        | None ->
            raise (
                ArgumentException(
                    sprintf
                        "unknown loss recipe '%s' (expected %s)"
                        name
                        (String.Join(" or ", lossRecipes |> List.map fst))
                )
            )

    /// A preset by name ("small", "small-decoder", "smoke" or "esm3-open"; `overfit` and `overfitSmoke` are for
    /// `scripts/overfit.fsx` and the suite only).
    let preset (name: string) =
        TrainerConfig.pickPreset
            [
                "small", small
                "small-decoder", smallDecoder
                "smoke", smoke
                "esm3-open", esm3Open
            ]
            name

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: TokenizerTrainConfig) =
        [
            yield! Validation.within "Encoder" (StructureEncoderConfig.validate c.Encoder)
            yield! Validation.within "Decoder" (StructureDecoderConfig.validate c.Decoder)
            yield! Validation.within "Trainer" (TrainerConfig.validate c.Trainer)
            yield! TrainerConfig.validateData 2 c.CropLength c.ValidChains c.ValidLength

            let mutable previous = 0

            for step, length in c.CropCurriculum do
                if step <= previous then
                    sprintf "CropCurriculum: the steps must be positive and ascending (got %d after %d)" step previous

                if step >= c.Trainer.Steps then
                    sprintf
                        "CropCurriculum: the stage at step %d never starts (the run has %d steps)"
                        step
                        c.Trainer.Steps

                if length < 2 then
                    sprintf "CropCurriculum: crop length %d at step %d is below 2" length step

                previous <- max previous step

            if c.PairResidues < 0 || c.PairResidues = 1 then
                sprintf "PairResidues must be 0 (all) or at least 2 (got %d)" c.PairResidues

            if c.FreezeEncoder && String.IsNullOrWhiteSpace c.InitFrom then
                "FreezeEncoder: a frozen encoder must come from InitFrom (a trained tokenizer folder)"

            if c.ReflectInit && String.IsNullOrWhiteSpace c.InitFrom then
                "ReflectInit: the decoder to reflect must come from InitFrom (a trained tokenizer folder)"

            if c.ReflectInit && c.Decoder.StructureModule.IsSome then
                "ReflectInit: a structure module's frames cannot be reflected (only the affine head's)"

            if c.RefineOnly && String.IsNullOrWhiteSpace c.InitFrom then
                "RefineOnly: the tokenizer to refine must come from InitFrom (a trained tokenizer folder)"

            match c.Decoder.StructureModule with
            | Some m when m.Start = StructureModuleStart.AffineHead -> ()
            | _ when c.RefineOnly ->
                "RefineOnly: the decoder needs a structure module that starts from the affine head's frames (Decoder.StructureModule.Start = AffineHead)"
            | _ -> ()

            if c.RefineOnly && c.BypassQuantizer then
                "RefineOnly: the structure module refines the decoding of InitFrom's tokens; BypassQuantizer decodes no tokens"

            if c.RefineOnly && c.ReflectInit then
                "RefineOnly: reflect the tokenizer in a run of its own first (ReflectInit), then refine that"

            if c.FreezeEncoder && c.BypassQuantizer then
                "FreezeEncoder: the frozen tokens are the point; BypassQuantizer decodes no tokens"

            if c.Encoder.Quantizer.Codes > StructureTokens.CodebookSize then
                sprintf
                    "the codebook (%d codes) must fit the decoder's %d code rows"
                    c.Encoder.Quantizer.Codes
                    StructureTokens.CodebookSize
        ]
        |> Validation.ofErrors c

    /// What in a valid config makes training degenerate, one line each (the scripts print them; nothing is
    /// refused, so that runs made before a warning existed can be repeated). Today one: VideoGPT's restart
    /// (`BelowCount T`) compares each code's EMA count per step with T, and those counts average rows / K, so with
    /// T·K at least the encoder rows of a step nearly every code is overwritten by a batch row at every step and the
    /// codebook ends as the last batch's rows, tiled with noise (how the tokenizer shipped in session 13 was
    /// trained: 4,096 codes against 1,024 rows).
    let warnings (c: TokenizerTrainConfig) =
        [
            match c.Encoder.Quantizer.Restart with
            | RestartPolicy.BelowCount threshold when
                c.Encoder.Quantizer.Kind = QuantizerKind.Ema
                && not c.Encoder.Quantizer.FreezeCodebook
                && not c.FreezeEncoder
                && not c.RefineOnly
                ->
                let shortest =
                    c.CropCurriculum |> List.fold (fun m (_, length) -> min m length) c.CropLength

                let rows = c.Trainer.BatchSize * shortest

                if threshold * float c.Encoder.Quantizer.Codes >= float rows then
                    sprintf
                        "Encoder.Quantizer.Restart below:%g with %d codes (--codes) needs more than %g encoder rows per step, and a step has at most %d (batch %d × crop %d): every code's EMA count sits below %g, so every code restarts at every step and the codebook ends as the last batch's rows; use --restart unused:STEPS, or fewer codes"
                        threshold
                        c.Encoder.Quantizer.Codes
                        (threshold * float c.Encoder.Quantizer.Codes)
                        rows
                        c.Trainer.BatchSize
                        shortest
                        threshold
            | _ -> ()
        ]

    /// The config as JSON (`Json.ofRecord`), led by "Stage": 1.
    let toJson (c: TokenizerTrainConfig) =
        Json.ofRecord [ "Stage", box 1 ] (box c)
