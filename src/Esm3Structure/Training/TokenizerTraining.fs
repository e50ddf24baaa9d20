namespace Esm3Structure.Training

open System
open System.IO
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
            SquaredDistance = false
            LinearBeyondClamp = false
        }

    /// "small": encoder 2 × 128 with 16 geometric heads (SwiGLU ratio 3: ESM's rounding gives 512, not 384),
    /// EMA codebook 512 × 64 with restarts; decoder 4 × 128, 4 heads, pairwise 32 → 64; crop 128, batch 8;
    /// AdamW 4e-4, β (0.9, 0.95), wd 0.01, clip 1, warm-up 300, cosine to 10 %, 5k steps.
    let small =
        {
            Encoder = StructureEncoderConfig.small
            Decoder =
                {
                    DModel = 128L
                    Heads = 4L
                    Layers = 4
                    PairwiseDownproject = 32L
                    PairwiseHidden = 64L
                    StructureModule = None
                    ChainFrames = false
                }
            Weights = unitWeights
            CropLength = 128
            ValidChains = 32
            ValidLength = 256
            BypassQuantizer = false
            CropCurriculum = []
            PairResidues = 0
            InitFrom = ""
            Trainer = TrainerConfig.small
        }

    /// "smoke" (≤ 10 min): encoder 1 × 64 with 8 heads, codebook 128 × 32, decoder 2 × 64 (2 heads), pairwise
    /// 16 → 32, crop 64, batch 4, 300 steps (warm-up 30).
    let smoke =
        { small with
            Encoder =
                { small.Encoder with
                    DModel = 64L
                    VHeads = 8L
                    Layers = 1
                    DOut = 32L
                    Quantizer =
                        { QuantizerConfig.small with
                            Codes = 128L
                            Dim = 32L
                        }
                }
            Decoder =
                {
                    DModel = 64L
                    Heads = 2L
                    Layers = 2
                    PairwiseDownproject = 16L
                    PairwiseHidden = 32L
                    StructureModule = None
                    ChainFrames = false
                }
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

            if c.Encoder.Quantizer.Codes > StructureTokens.CodebookSize then
                sprintf
                    "the codebook (%d codes) must fit the decoder's %d code rows"
                    c.Encoder.Quantizer.Codes
                    StructureTokens.CodebookSize
        ]
        |> Validation.ofErrors c

    /// The config as JSON (`Json.ofRecord`), led by "Stage": 1.
    let toJson (c: TokenizerTrainConfig) =
        Json.ofRecord [ "Stage", box 1 ] (box c)

/// One chain ready for batching: backbone N, CA, C (NaN where missing), presence and author numbering.
type TokenizerExample =
    {
        Name: string
        /// [L·9] row-major [L, 3, 3].
        Backbone: float32[]
        /// [L] true where N, CA and C are present.
        Present: bool[]
        /// [L] author residue numbers.
        ResidueIndex: int64[]
    }

    member e.Length = e.Present.Length

/// A batch of crops padded to the longest.
type TokenizerBatch =
    {
        /// Shapes: [B, L, 3, 3] float32 (0 in padding, NaN where an atom is missing)
        Backbone: torch.Tensor
        /// True in padded rows. Shapes: [B, L] bool
        Padding: torch.Tensor
        /// Real residues with N, CA, C. Shapes: [B, L] bool
        Mask: torch.Tensor
        /// Shapes: [B, L] int64
        ResidueIndex: torch.Tensor
    }

/// The data pipeline of tokenizer training: examples from chains, random contiguous crops, padded batches, and a
/// sampler that is a pure function of (seed, step).
module TokenizerData =

    /// An example from a chain.
    let ofChain (chain: ProteinChain) : TokenizerExample =
        let l = ProteinChain.length chain

        {
            Name = chain.Name
            Backbone = Array.init (l * 9) (fun k -> chain.Atom37.[k / 9, (k / 3) % 3, k % 3])
            Present =
                Array.init l (fun i -> chain.Atom37Mask.[i, 0] && chain.Atom37Mask.[i, 1] && chain.Atom37Mask.[i, 2])
            ResidueIndex = chain.ResidueIndex |> Array.map int64
        }

    /// Residues [start, start + length) of an example.
    let crop (start: int) (length: int) (e: TokenizerExample) =
        {
            Name = e.Name
            Backbone = Array.sub e.Backbone (start * 9) (length * 9)
            Present = Array.sub e.Present start length
            ResidueIndex = Array.sub e.ResidueIndex start length
        }

    /// Pads examples into a batch. Shapes: -> TokenizerBatch with B = examples.Length, L = the longest
    let batch (examples: TokenizerExample[]) : TokenizerBatch =
        let b = examples.Length
        let l = examples |> Array.map (fun e -> e.Length) |> Array.max
        let coords = Array.zeroCreate<float32>(b * l * 9)
        let padding = Array.create (b * l) true
        let mask = Array.zeroCreate<bool>(b * l)
        let index = Array.zeroCreate<int64>(b * l)

        examples
        |> Array.iteri (fun r e ->
            Array.blit e.Backbone 0 coords (r * l * 9) e.Backbone.Length

            for i in 0 .. e.Length - 1 do
                padding.[r * l + i] <- false
                mask.[r * l + i] <- e.Present.[i]
                index.[r * l + i] <- e.ResidueIndex.[i])

        let bl = [| int64 b; int64 l |]

        {
            Backbone = torch.tensor(coords).reshape(int64 b, int64 l, 3L, 3L)
            Padding = torch.tensor(padding).reshape bl
            Mask = torch.tensor(mask).reshape bl
            ResidueIndex = torch.tensor(index).reshape bl
        }

    /// The crops of step `step` (`Crops.sample`).
    let sample (seed: int) (step: int) (batchSize: int) (cropLength: int) (examples: TokenizerExample[]) =
        Crops.sample (fun (e: TokenizerExample) -> e.Length) crop seed step batchSize cropLength examples

    /// Examples of the chains with at least 2 residues; none at all raises an `ArgumentException`.
    let trainingExamples (chains: ProteinChain[]) =
        chains
        |> Array.map ofChain
        |> Crops.trainable 2 (fun (e: TokenizerExample) -> e.Length)

    /// The first `count` chains, each cut to its first `length` residues.
    let validationExamples (count: int) (length: int) (chains: ProteinChain[]) =
        chains
        |> Array.truncate count
        |> Array.map ofChain
        |> Crops.firstWindows (fun (e: TokenizerExample) -> e.Length) crop count length

    /// The batch's tensors on `device`. Shapes: as `batch`
    let toDevice (device: torch.Device) (b: TokenizerBatch) =
        {
            Backbone = b.Backbone.``to`` device
            Padding = b.Padding.``to`` device
            Mask = b.Mask.``to`` device
            ResidueIndex = b.ResidueIndex.``to`` device
        }

    /// The residue positions the pairwise losses read at step `step`: `count` distinct positions of `length`,
    /// ascending, drawn from (seed, step) apart from the batch draw; all positions when count is 0 or ≥ length.
    let pairPositions (seed: int) (step: int) (count: int) (length: int) : int64[] =
        if count <= 0 || count >= length then
            Array.init length int64
        else
            let random = Crops.stepRandom (seed + 7919) step
            let order = Array.init length id
            // Partial Fisher–Yates: the first `count` slots are a uniform sample without replacement.
            for i in 0 .. count - 1 do
                let j = i + random.Next(length - i)
                let t = order.[i]
                order.[i] <- order.[j]
                order.[j] <- t

            order |> Array.truncate count |> Array.sort |> Array.map int64

/// Encoder, straight-through codes mapped to the decoder's width, and decoder: the stage-1 model. Keys: `encoder.*`
/// (ESM's `StructureTokenEncoder`), `decoder.*` (ESM's `StructureTokenDecoder`) and the training-only
/// `post_quant_proj.{weight,bias}` [d, DOut] (folded into the decoder's code embeddings on export).
type TokenizerModel(config: TokenizerTrainConfig, generator: torch.Generator) as this =
    inherit torch.nn.Module<TokenizerBatch, StructureDecoderOutput>("TokenizerModel")

    let encoder = new StructureEncoder(config.Encoder, generator)
    let decoder = new StructureDecoder(config.Decoder)
    let post_quant_proj = torch.nn.Linear(config.Encoder.DOut, config.Decoder.DModel)

    do
        this.RegisterComponents()
        Init.initialise generator encoder
        Init.initialise generator decoder
        Init.linear generator post_quant_proj

    member _.Encoder = encoder
    member _.Decoder = decoder

    /// Encodes, quantizes (straight-through) and decodes a batch. Shapes: batch [B, L, …] -> encoding, decoder output
    member this.Run(batch: TokenizerBatch) = this.RunTimed(batch, ignore, true)

    /// `Run`, calling `lap` after the encoder ("encoder"), the codebook ("quantizer") and the decoder ("decoder");
    /// without `confidence` the decoder leaves out pLDDT, pAE and pTM (null; `StructureDecoder.DecodeResidues`).
    member _.RunTimed(batch: TokenizerBatch, lap: string -> unit, confidence: bool) =
        let encoding =
            encoder.EncodeTimed(batch.Backbone, batch.ResidueIndex, batch.Padding, null, lap)

        let latent =
            if config.BypassQuantizer then
                encoding.Z
            else
                encoding.Quantized

        let x = post_quant_proj.forward latent
        let decoded = decoder.DecodeResidues(x, batch.Padding, confidence)
        lap "decoder"
        encoding, decoded

    /// Shapes: batch -> StructureDecoderOutput
    override this.forward(batch: TokenizerBatch) = snd (this.Run batch)

    /// Loads an exported tokenizer (`folder`/encoder.safetensors and decoder.safetensors, strictly: every key and
    /// shape must fit this model's config) and recovers `post_quant_proj`, which the export folded into the
    /// decoder's code embeddings, by least squares from the codes to those rows (exact up to rounding: the rows
    /// are an affine map of the codes). An EMA codebook keeps its loaded counts, so it is not re-initialised. A
    /// missing file or a model of other sizes raises an `InputException` naming the file and "--init".
    member _.InitialiseFrom(folder: string) =
        let fileOf (stem: string) =
            match TensorFile.inFolder folder stem with
            | Some file -> file
            | None ->
                InputError.raise
                    (Path.Combine(folder, stem + ".safetensors"))
                    InputLocation.Whole
                    "--init: no such file (a tokenizer folder holds encoder and decoder, .safetensors or .pth)"

        let encoderFile = fileOf "encoder"
        let decoderFile = fileOf "decoder"

        let load (file: string) (m: torch.nn.Module) =
            try
                Checkpoint.load file m
            with :? InputException as e ->
                InputError.raise
                    e.Error.File
                    e.Error.Location
                    ("--init: the model does not fit this run's config (a different preset or option?): "
                     + e.Error.Message)

        load encoderFile encoder
        load decoderFile decoder

        use _ = torch.no_grad ()
        use _scope = torch.NewDisposeScope()
        let codes = encoder.Codebook.Codes.detach ()
        let k, dOut = codes.shape.[0], codes.shape.[1]

        let rows =
            Checkpoint.stateDict decoder
            |> List.find (fun (name, _) -> name = "embed.weight")
            |> snd
            |> fun embed -> embed.narrow(0L, 0L, k).to_type torch.float64

        let x =
            torch.cat (
                [|
                    codes.to_type torch.float64
                    torch.ones ([| k; 1L |], dtype = torch.float64, device = codes.device)
                |],
                1L
            )

        let struct (solution, _, _, _) = torch.linalg.lstsq (x, rows) // [DOut + 1, d]

        post_quant_proj.weight.copy_ (solution.narrow(0L, 0L, dOut).t()) |> ignore
        post_quant_proj.bias.copy_ (solution.select (0L, dOut)) |> ignore

    /// The decoder's state_dict with the code rows of `embed.weight` replaced by post_quant_proj(codes), so that
    /// decoding token ids reproduces the training path; ESM's key set.
    member _.ExportDecoderState() =
        use _ = torch.no_grad ()
        let codes = encoder.Codebook.Codes.detach ()
        let rows = post_quant_proj.forward codes // [K, d]

        Checkpoint.stateDict decoder
        |> List.map (fun (name, t) ->
            if name = "embed.weight" then
                let folded = t.detach().clone()
                folded.narrow(0L, 0L, rows.shape.[0]).copy_ rows |> ignore
                name, folded
            else
                name, t)

/// Stage-1 training of the structure tokenizer (ESM3-TRAINING.md §1.3) on `Trainer`.
module TokenizerTraining =

    /// The loss terms of a batch: distance, direction, binned direction, distogram, FAPE, commitment; and their
    /// weighted sum. The four pairwise terms read only the residues at `pairPositions` (ascending, int64; null:
    /// all, ESM's); FAPE and the commitment read every residue.
    let lossesOn
        (weights: TokenizerLossWeights)
        (encoding: StructureEncoding)
        (out: StructureDecoderOutput)
        (batch: TokenizerBatch)
        (pairPositions: torch.Tensor)
        =
        let target = batch.Backbone
        let mask = batch.Mask
        let predicted = out.Backbone

        let rows (x: torch.Tensor) =
            if isNull pairPositions then
                x
            else
                x.index_select (1L, pairPositions)

        let pairs (x: torch.Tensor) =
            if isNull pairPositions then
                x
            else
                x.index_select(1L, pairPositions).index_select(2L, pairPositions)

        let distance =
            StructureLosses.backboneDistanceWith
                weights.SquaredDistance
                weights.LinearBeyondClamp
                (rows predicted)
                (rows target)
                (rows mask)

        let direction =
            StructureLosses.backboneDirectionWith weights.LinearBeyondClamp (rows predicted) (rows target) (rows mask)

        let binned =
            StructureLosses.binnedDirection (pairs out.DirectionLogits) (rows target) (rows mask)

        let distogram =
            StructureLosses.distogram (pairs out.DistogramLogits) (rows target) (rows mask)

        let commitment = encoding.QuantizerLoss

        // AlphaFold2 averages FAPE over the structure module's rounds; the affine head has one.
        let fape =
            if weights.Fape > 0.0 then
                match out.RoundBackbones with
                | [] -> StructureLosses.backboneFape predicted target mask
                | rounds ->
                    rounds
                    |> List.map (fun r -> StructureLosses.backboneFape r target mask)
                    |> List.reduce (+)
                    |> fun sum -> sum / float rounds.Length
            else
                torch.zeros_like distance

        let total =
            distance * weights.Distance
            + direction * weights.Direction
            + binned * weights.BinnedDirection
            + distogram * weights.Distogram
            + fape * weights.Fape
            + commitment

        total,
        [|
            "distance", distance
            "direction", direction
            "binned_direction", binned
            "distogram", distogram
            "fape", fape
            "commitment", commitment
        |]

    /// `lossesOn` every residue. Shapes: batch [B, L, …] -> scalar, named terms
    let losses weights encoding out batch =
        lossesOn weights encoding out batch null

    /// Validation of `model` on examples one at a time: mean backbone RMSD after Kabsch, mean LDDT-CA (pooled per
    /// chain), and code usage over all residues (live fraction, perplexity).
    let evaluate (model: TokenizerModel) (device: torch.Device) (examples: TokenizerExample[]) =
        let codes = model.Encoder.Config.Quantizer.Codes
        let dim = model.Encoder.Config.DOut
        let mutable usage = CodebookUsage.empty codes dim
        let mutable rmsd, lddt, n = 0.0, 0.0, 0

        for e in examples do
            use _ = torch.NewDisposeScope()
            let b = TokenizerData.toDevice device (TokenizerData.batch [| e |])

            let encoding, out = model.RunTimed(b, ignore, false)
            let target = b.Backbone.nan_to_num (0.0, 0.0, 0.0)
            rmsd <- rmsd + (Metrics.backboneRmsd out.Backbone target b.Mask).ToDouble()

            let l =
                Metrics.lddtCa (out.Backbone.select (2L, 1L)) (target.select (2L, 1L)) (Some b.Mask)

            lddt <- lddt + l.Protein.ToDouble()
            n <- n + 1
            let real = encoding.Framed.logical_and b.Mask
            usage <- CodebookUsage.merge usage (CodebookUsage.ofIndices codes dim encoding.Tokens (Some real))

        let m = CodebookUsage.metrics usage

        [|
            "rmsd", (if n > 0 then rmsd / float n else nan)
            "lddt_ca", (if n > 0 then lddt / float n else nan)
            "code_usage", m.LiveFraction
            "perplexity", m.Perplexity
        |]

    /// The stage-1 task for `Trainer`: batches from `train`, validation on `valid` (already cut).
    type Task(config: TokenizerTrainConfig, device: torch.Device, train: TokenizerExample[], valid: TokenizerExample[])
        =
        inherit TrainingTask()
        let generator = new torch.Generator(uint64 config.Trainer.Seed)
        let model = new TokenizerModel(config, generator)

        do
            if config.InitFrom <> "" then
                model.InitialiseFrom config.InitFrom

            model.``to`` device |> ignore

        /// The model being trained.
        member _.Tokenizer = model

        override _.Model = model :> torch.nn.Module
        override _.Generators = [| generator |]

        override _.Step(step: int) =
            let clock = StageClock()

            let cropLength = Crops.lengthAt config.CropLength config.CropCurriculum step

            let crops =
                TokenizerData.sample config.Trainer.Seed step config.Trainer.BatchSize cropLength train

            let b = TokenizerData.toDevice device (TokenizerData.batch crops)

            clock.Lap "data"
            // Stage 1's losses read no confidence output.
            let encoding, out = model.RunTimed(b, clock.Lap, false)
            let l = int b.Mask.shape.[1]

            let positions =
                if config.PairResidues > 0 && config.PairResidues < l then
                    torch.tensor(TokenizerData.pairPositions config.Trainer.Seed step config.PairResidues l).``to``
                        device
                else
                    null

            let total, terms = lossesOn config.Weights encoding out b positions
            clock.Lap "losses"

            {
                Loss = total
                Terms = terms
                Stages = clock.Laps
            }

        override _.Evaluate() = evaluate model device valid

        /// Writes `encoder.safetensors` and `decoder.safetensors` (ESM's keys, no prefix). Head counts cannot be
        /// read from tensor shapes, so each file's metadata records them ("v_heads"; "heads", "head_width": pass the
        /// latter to `StructureDecoderCheckpoint.ofKeyShapesWith`).
        override _.Export(folder: string) =
            StructureEncoderCheckpoint.save (Path.Combine(folder, "encoder.safetensors")) model.Encoder

            use _ = torch.NewDisposeScope()

            StructureDecoderCheckpoint.save
                (Path.Combine(folder, "decoder.safetensors"))
                (model.ExportDecoderState())
                config.Decoder
                [ StructureDecoderCheckpoint.ConfidenceMetadataKey, "untrained" ]

        interface IDisposable with
            member _.Dispose() =
                model.Dispose()
                generator.Dispose()

    /// Trains a tokenizer on chains; writes `config.json`, `metrics.jsonl` and checkpoints (each with
    /// `encoder.safetensors` and `decoder.safetensors` in ESM's key format) under `out`.
    let trainOn
        (config: TokenizerTrainConfig)
        (device: torch.Device)
        (train: ProteinChain[])
        (valid: ProteinChain[])
        (out: string)
        (resume: bool)
        =
        Validation.check "tokenizer" (TokenizerTrainConfig.validate config) |> ignore

        let trainExamples = TokenizerData.trainingExamples train

        let validExamples =
            TokenizerData.validationExamples config.ValidChains config.ValidLength valid

        use task = new Task(config, device, trainExamples, validExamples)
        Trainer.run config.Trainer task out resume (TokenizerTrainConfig.toJson config)

    /// Reads the train and valid splits of the corpus under `dataDir` and trains (see `trainOn`).
    let train (config: TokenizerTrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train = Corpus.readSplit dataDir "train" 0
        let valid = Corpus.readSplit dataDir "valid" config.ValidChains
        trainOn config device train valid out resume
