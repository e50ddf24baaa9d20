namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

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
                {
                    DModel = 128L
                    Heads = 4L
                    Layers = 6
                    PairwiseDownproject = 32L
                    PairwiseHidden = 64L
                    StructureModule = None
                    ChainFrames = false
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

/// One chain ready for stage-2 batching.
type Stage2Example =
    {
        /// Backbone, presence and numbering, as in stage 1.
        Backbone: TokenizerExample
        /// [L] residue types 0 … 20 (`ResidueConstants` order; 20 = X).
        Restypes: int64[]
        /// [L·14·3] row-major [L, 14, 3] atom14 coordinates; NaN where missing.
        Atom14: float32[]
        /// [L·14] the atoms the all-atom losses use: present in the file; for a backbone-only file (index column
        /// `atoms` = "backbone") only slots 0 … 3 (N, CA, C, O).
        Atom14Mask: bool[]
    }

    member e.Length = e.Backbone.Length

/// A padded stage-2 batch. The decoder sees BOS, the L structure tokens and EOS (then PAD), like ESM's decoder.
type Stage2Batch =
    {
        /// Backbone, padding, residue mask and numbering, as in stage 1. Shapes: [B, L, …]
        Structure: TokenizerBatch
        /// Decoder input: BOS, structure tokens (MASK where the encoder had no frame), EOS, then PAD.
        /// Shapes: [B, L + 2] int64
        Tokens: torch.Tensor
        /// The decoder's sequence input, aligned with `Tokens`: residue types, −1 at BOS, EOS and PAD.
        /// Shapes: [B, L + 2] int64
        SequenceInput: torch.Tensor
        /// Residue types (0 in padding). Shapes: [B, L] int64
        Restypes: torch.Tensor
        /// Atom14 coordinates (NaN where missing, 0 in padding). Shapes: [B, L, 14, 3] float32
        Atom14: torch.Tensor
        /// `Stage2Example.Atom14Mask` (false in padding). Shapes: [B, L, 14] bool
        Atom14Mask: torch.Tensor
    }

/// The stage-2 data pipeline: examples with atom14 targets, crops drawn as a pure function of (seed, step), and
/// padded batches with the decoder's token rows.
module Stage2Data =

    /// An example from a chain; `full` says whether the file has every heavy atom (index column `atoms`).
    let ofChain (full: bool) (chain: ProteinChain) : Stage2Example =
        let l = ProteinChain.length chain

        {
            Backbone = TokenizerData.ofChain chain
            Restypes = ProteinChain.restypeIndices chain |> Array.map int64
            Atom14 = Array.init (l * 42) (fun k -> chain.Atom14.[k / 42, (k / 3) % 14, k % 3])
            Atom14Mask = Array.init (l * 14) (fun k -> chain.Atom14Mask.[k / 14, k % 14] && (full || k % 14 < 4))
        }

    /// Residues [start, start + length) of an example.
    let crop (start: int) (length: int) (e: Stage2Example) =
        {
            Backbone = TokenizerData.crop start length e.Backbone
            Restypes = Array.sub e.Restypes start length
            Atom14 = Array.sub e.Atom14 (start * 42) (length * 42)
            Atom14Mask = Array.sub e.Atom14Mask (start * 14) (length * 14)
        }

    /// Pads examples into a batch; `tokens.[r]` are the structure tokens of example r (one per residue).
    /// Shapes: -> Stage2Batch with B = examples.Length, L = the longest
    let batch (examples: Stage2Example[]) (tokens: int64[][]) : Stage2Batch =
        if tokens.Length <> examples.Length then
            raise (ArgumentException(sprintf "%d token rows for %d examples" tokens.Length examples.Length, "tokens"))

        let structure = TokenizerData.batch (examples |> Array.map _.Backbone)
        let b = examples.Length
        let l = examples |> Array.map _.Length |> Array.max
        let w = l + 2
        let ids = Array.create (b * w) StructureTokens.Pad
        let sequence = Array.create (b * w) -1L
        let restypes = Array.zeroCreate<int64>(b * l)
        let atoms = Array.zeroCreate<float32>(b * l * 42)
        let mask = Array.zeroCreate<bool>(b * l * 14)

        examples
        |> Array.iteri (fun r e ->
            let n = e.Length

            if tokens.[r].Length <> n then
                raise (
                    ArgumentException(
                        sprintf "example %d (%s) has %d residues but %d tokens" r e.Backbone.Name n tokens.[r].Length,
                        "tokens"
                    )
                )

            ids.[r * w] <- StructureTokens.Bos
            ids.[r * w + n + 1] <- StructureTokens.Eos

            for i in 0 .. n - 1 do
                ids.[r * w + 1 + i] <- tokens.[r].[i]
                sequence.[r * w + 1 + i] <- e.Restypes.[i]
                restypes.[r * l + i] <- e.Restypes.[i]

            Array.blit e.Atom14 0 atoms (r * l * 42) e.Atom14.Length
            Array.blit e.Atom14Mask 0 mask (r * l * 14) e.Atom14Mask.Length)

        let bw = [| int64 b; int64 w |]

        {
            Structure = structure
            Tokens = torch.tensor(ids).reshape bw
            SequenceInput = torch.tensor(sequence).reshape bw
            Restypes = torch.tensor(restypes).reshape(int64 b, int64 l)
            Atom14 = torch.tensor(atoms).reshape(int64 b, int64 l, 14L, 3L)
            Atom14Mask = torch.tensor(mask).reshape(int64 b, int64 l, 14L)
        }

    /// The batch on `device`.
    let toDevice (device: torch.Device) (b: Stage2Batch) =
        let s = b.Structure

        {
            Structure =
                {
                    Backbone = s.Backbone.``to`` device
                    Padding = s.Padding.``to`` device
                    Mask = s.Mask.``to`` device
                    ResidueIndex = s.ResidueIndex.``to`` device
                }
            Tokens = b.Tokens.``to`` device
            SequenceInput = b.SequenceInput.``to`` device
            Restypes = b.Restypes.``to`` device
            Atom14 = b.Atom14.``to`` device
            Atom14Mask = b.Atom14Mask.``to`` device
        }

    /// Chains of one split of the corpus with their `atoms` column read as "full" (true) or not, at most `limit`
    /// (≤ 0: all), in index order.
    let readSplit (dataDir: string) (split: string) (limit: int) : (ProteinChain * bool)[] =
        Corpus.entriesOf dataDir split limit
        |> Array.map (fun e -> Corpus.readEntry dataDir e, e.Atoms = "full")

/// Stage-2 training of the structure tokenizer (ESM3-TRAINING.md §1.4) on `Trainer`: the frozen stage-1 encoder
/// turns whole chains into tokens; a new decoder (token + residue embeddings) predicts frames, torsions and
/// confidences; all atoms are placed by `AllAtom.decodeAllAtom`.
module Stage2Training =

    /// Structure tokens of one chain from the frozen encoder (eval mode, no gradient): codes, and MASK where the
    /// residue has no backbone frame (as `StructureTokenizer`). Shapes: -> [L]
    let encodeTokens (encoder: StructureEncoder) (device: torch.Device) (e: TokenizerExample) : int64[] =
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad ()
        let b = TokenizerData.batch [| e |]

        let encoding =
            encoder.Encode(b.Backbone.``to`` device, b.ResidueIndex.``to`` device, null, null)

        let tokens =
            torch.where (
                encoding.Framed,
                encoding.Tokens,
                torch.full_like (encoding.Tokens, StructureTokens.Mask.ToScalar())
            )

        tokens.select(0L, 0L).cpu().contiguous().data<int64>().ToArray()

    /// The decoder's outputs without the BOS and EOS rows: rows (and pairs) 1 … L; pTM is kept as computed.
    /// Shapes: out over [B, L + 2] -> out over [B, L]
    let residues (out: StructureDecoderOutput) (l: int64) : StructureDecoderOutput =
        let rows (x: torch.Tensor) = x.narrow (1L, 1L, l)
        let pairs (x: torch.Tensor) = x.narrow(1L, 1L, l).narrow(2L, 1L, l)

        {
            Hidden = rows out.Hidden
            Frames =
                {
                    R = rows out.Frames.R
                    T = rows out.Frames.T
                }
            Backbone = rows out.Backbone
            RoundBackbones = out.RoundBackbones |> List.map rows
            TorsionLogits = rows out.TorsionLogits
            PlddtLogits = rows out.PlddtLogits
            Plddt = rows out.Plddt
            DistogramLogits = pairs out.DistogramLogits
            DirectionLogits = pairs out.DirectionLogits
            PaeLogits = pairs out.PaeLogits
            Pae = pairs out.Pae
            Ptm = out.Ptm
        }

    /// Decodes a batch: the residues' outputs and their atom14 coordinates (`StructureDecoder.allAtom`).
    /// Shapes: batch [B, L, …] -> StructureDecoderOutput over [B, L], Positions [B, L, 14, 3], Mask [B, L, 14]
    let run (decoder: StructureDecoder) (batch: Stage2Batch) =
        let padding = batch.Tokens.eq (StructureTokens.Pad.ToScalar())
        let full = decoder.DecodeTokens(batch.Tokens, batch.SequenceInput, padding)
        let out = residues full batch.Restypes.shape.[1]
        out, StructureDecoder.allAtom out batch.Restypes

    /// The atoms the all-atom terms use: the example's mask, on real residues, in slots the residue type has.
    /// Shapes: -> [B, L, 14] bool
    let atomMask (batch: Stage2Batch) (atoms: AtomPositions) =
        batch.Atom14Mask.logical_and(batch.Structure.Mask.unsqueeze -1L).logical_and atoms.Mask

    /// Per-residue LDDT-CA of the decoded backbone against the truth (detached, the pLDDT target) and where it is
    /// defined. Shapes: -> [B, L] (0 where undefined), [B, L] bool
    let lddtTarget (out: StructureDecoderOutput) (batch: Stage2Batch) =
        use _ = torch.no_grad ()
        let s = batch.Structure

        let lddt =
            Metrics.lddtCa (out.Backbone.detach().select(2L, 1L)) (s.Backbone.select (2L, 1L)) (Some s.Mask)

        lddt.PerResidue.nan_to_num(0.0, 0.0, 0.0).to_type out.Backbone.dtype, lddt.Scored.logical_and s.Mask

    /// The loss terms of a batch and their weighted sum: the stage-1 backbone terms (distance, direction, binned
    /// direction, distogram), all-atom distance and direction (over `atomMask`; the direction loss subsamples from
    /// `generator`), pLDDT and pAE.
    /// Shapes: out over [B, L] (`residues`), atoms Positions [B, L, 14, 3], batch [B, L, …]
    ///         -> total scalar, named scalar terms
    let losses
        (config: Stage2TrainConfig)
        (generator: torch.Generator)
        (out: StructureDecoderOutput)
        (atoms: AtomPositions)
        (batch: Stage2Batch)
        =
        let w = config.Weights
        let target = batch.Structure.Backbone
        let mask = batch.Structure.Mask
        let predicted = out.Backbone

        let distance =
            StructureLosses.backboneDistanceWith w.SquaredDistance false predicted target mask

        let direction = StructureLosses.backboneDirection predicted target mask
        let binned = StructureLosses.binnedDirection out.DirectionLogits target mask
        let distogram = StructureLosses.distogram out.DistogramLogits target mask
        let allMask = atomMask batch atoms

        let allDistance =
            AllAtomLosses.allAtomDistanceWith w.SquaredDistance atoms.Positions batch.Atom14 allMask

        let allDirection =
            AllAtomLosses.allAtomDirectionWith config.MaxDirectionVectors generator atoms.Positions batch.Atom14 allMask

        let lddt, scored = lddtTarget out batch
        let plddt = StructureLosses.plddt out.PlddtLogits lddt scored
        let pae = StructureLosses.pae out.PaeLogits predicted target mask

        let total =
            distance * w.Distance
            + direction * w.Direction
            + binned * w.BinnedDirection
            + distogram * w.Distogram
            + allDistance * w.AllAtomDistance
            + allDirection * w.AllAtomDirection
            + plddt * w.Plddt
            + pae * w.Pae

        total,
        [|
            "distance", distance
            "direction", direction
            "binned_direction", binned
            "distogram", distogram
            "allatom_distance", allDistance
            "allatom_direction", allDirection
            "plddt", plddt
            "pae", pae
        |]

    /// Validation on examples one at a time (with their tokens): mean backbone RMSD after Kabsch, mean LDDT-CA
    /// (pooled per chain), mean all-atom RMSD (the prediction moved by the Kabsch fit of its CA onto the true CA,
    /// then over the atoms of `atomMask`), and pLDDT calibration: the mean over scored residues of
    /// |pLDDT − LDDT-CA|. Shapes: examples of L residues with L tokens each -> named floats
    let evaluate (decoder: StructureDecoder) (device: torch.Device) (examples: (Stage2Example * int64[])[]) =
        let mutable rmsd, lddtCa, allRmsd, calibration, n, scoredResidues =
            0.0, 0.0, 0.0, 0.0, 0, 0.0

        for e, tokens in examples do
            use _ = torch.NewDisposeScope()
            let b = Stage2Data.batch [| e |] [| tokens |] |> Stage2Data.toDevice device
            let out, atoms = run decoder b
            let s = b.Structure
            let target = s.Backbone.nan_to_num (0.0, 0.0, 0.0)
            rmsd <- rmsd + (Metrics.backboneRmsd out.Backbone target s.Mask).ToDouble()

            let l =
                Metrics.lddtCa (out.Backbone.select (2L, 1L)) (target.select (2L, 1L)) (Some s.Mask)

            lddtCa <- lddtCa + l.Protein.ToDouble()

            let fit =
                Superpose.kabsch (out.Backbone.select (2L, 1L)) (s.Backbone.select (2L, 1L)) (Some s.Mask)

            let moved = Frame.applyEach fit (atoms.Positions.reshape (1L, -1L, 3L))
            let used = (atomMask b atoms).reshape(1L, -1L)

            allRmsd <-
                allRmsd
                + (Superpose.rmsdNoSuperpose moved (b.Atom14.reshape (1L, -1L, 3L)) (Some used)).ToDouble()

            let lddt, scored = lddtTarget out b
            let gap = (out.Plddt.to_type lddt.dtype - lddt).abs()
            let w = scored.to_type lddt.dtype
            calibration <- calibration + (gap * w).sum().ToDouble()
            scoredResidues <- scoredResidues + w.sum().ToDouble()
            n <- n + 1

        let mean total = if n > 0 then total / float n else nan

        [|
            "rmsd", mean rmsd
            "lddt_ca", mean lddtCa
            "allatom_rmsd", mean allRmsd
            "plddt_error",
            (if scoredResidues > 0.0 then
                 calibration / scoredResidues
             else
                 nan)
        |]

    /// The stage-2 task for `Trainer`. `encoder` (the caller's; frozen, never in the trained state) makes the tokens
    /// of each whole chain once, when first drawn. The trained state is the decoder alone.
    type Task
        (
            config: Stage2TrainConfig,
            encoder: StructureEncoder,
            device: torch.Device,
            train: Stage2Example[],
            valid: Stage2Example[]
        ) =
        inherit TrainingTask()
        let generator = new torch.Generator(uint64 config.Trainer.Seed)
        let decoder = new StructureDecoder(config.Decoder, config.SequenceInput)

        do
            if encoder.Config.Quantizer.Codes > StructureTokens.CodebookSize then
                raise (
                    ArgumentException(
                        sprintf
                            "the encoder's codebook (%d codes) must fit the decoder's %d code rows"
                            encoder.Config.Quantizer.Codes
                            StructureTokens.CodebookSize
                    )
                )

            Init.initialise generator decoder
            decoder.``to`` device |> ignore
            encoder.``to`` device |> ignore
            encoder.eval ()

        let trainTokens: int64[][] = Array.zeroCreate train.Length

        let tokensOf (i: int) =
            if isNull trainTokens.[i] then
                trainTokens.[i] <- encodeTokens encoder device train.[i].Backbone

            trainTokens.[i]

        let validSet =
            lazy (valid |> Array.map (fun e -> e, encodeTokens encoder device e.Backbone))

        /// The decoder being trained.
        member _.Decoder = decoder

        /// The frozen encoder.
        member _.Encoder = encoder

        override _.Model = decoder :> torch.nn.Module
        override _.Generators = [| generator |]

        override _.Step(step: int) =
            let picks =
                Crops.draws
                    config.Trainer.Seed
                    step
                    config.Trainer.BatchSize
                    config.CropLength
                    (train |> Array.map _.Length)

            let examples =
                picks
                |> Array.map (fun (i, start) ->
                    Stage2Data.crop start (min train.[i].Length config.CropLength) train.[i])

            let tokens =
                picks
                |> Array.map (fun (i, start) -> Array.sub (tokensOf i) start (min train.[i].Length config.CropLength))

            let b = Stage2Data.batch examples tokens |> Stage2Data.toDevice device
            let out, atoms = run decoder b
            let total, terms = losses config generator out atoms b

            {
                Loss = total
                Terms = terms
                Stages = [||]
            }

        override _.Evaluate() = evaluate decoder device validSet.Value

        /// Writes `encoder.safetensors` (the frozen encoder, ESM's keys) and `decoder.safetensors` (ESM's keys, plus
        /// `sequence_embed.weight` with sequence input). The decoder's metadata records "heads", "head_width" (read
        /// back by `StructureDecoderCheckpoint.load`) and "sequence_input".
        override _.Export(folder: string) =
            StructureEncoderCheckpoint.save (Path.Combine(folder, "encoder.safetensors")) encoder

            StructureDecoderCheckpoint.save
                (Path.Combine(folder, "decoder.safetensors"))
                (Checkpoint.stateDict decoder)
                config.Decoder
                [
                    "sequence_input", (if config.SequenceInput then "true" else "false")
                    StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained"
                ]

        interface IDisposable with
            member _.Dispose() =
                decoder.Dispose()
                generator.Dispose()

    /// Trains a stage-2 decoder on chains (each with its "full atoms" flag); the frozen encoder is loaded from
    /// `config.Encoder`. Writes `config.json` ("Stage": 2), `metrics.jsonl` and checkpoints (each with ESM-format
    /// `encoder.safetensors` and `decoder.safetensors`) under `out`.
    let trainOn
        (config: Stage2TrainConfig)
        (device: torch.Device)
        (train: (ProteinChain * bool)[])
        (valid: (ProteinChain * bool)[])
        (out: string)
        (resume: bool)
        =
        Validation.check "stage-2" (Stage2TrainConfig.validate config) |> ignore

        let trainExamples =
            train
            |> Array.map (fun (c, full) -> Stage2Data.ofChain full c)
            |> Crops.trainable 2 (fun (e: Stage2Example) -> e.Length)

        let validExamples =
            valid
            |> Array.truncate config.ValidChains
            |> Array.map (fun (c, full) -> Stage2Data.ofChain full c)
            |> Crops.firstWindows
                (fun (e: Stage2Example) -> e.Length)
                Stage2Data.crop
                config.ValidChains
                config.ValidLength

        use encoder = StructureEncoderCheckpoint.load config.Encoder
        use task = new Task(config, encoder, device, trainExamples, validExamples)
        Trainer.run config.Trainer task out resume (Stage2TrainConfig.toJson config)

    /// Reads the train and valid splits of the corpus under `dataDir` and trains (see `trainOn`).
    let train (config: Stage2TrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train = Stage2Data.readSplit dataDir "train" 0
        let valid = Stage2Data.readSplit dataDir "valid" config.ValidChains
        trainOn config device train valid out resume
