namespace Esm3Structure.Models

open System
open System.Collections.Generic
open System.Text.RegularExpressions
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// Sizes of ESM's `StructureTokenDecoder` (ESM3-REFERENCE.md §1, §7). Everything else is fixed as in ESM: SwiGLU
/// ratio 8/3 without biases, QK-LayerNorm, rotary positions, no residual scaling, no geometric attention;
/// 64 + 96 + 64 pairwise bins; 50 pLDDT bins; translation scale 10.
type StructureDecoderConfig =
    {
        /// Model width d.
        DModel: int64
        /// Attention heads (ESM: d / 64).
        Heads: int64
        /// Transformer blocks.
        Layers: int
        /// Width of the pairwise head's down-projection (q and k halves; ESM: 128).
        PairwiseDownproject: int64
        /// Hidden width of the pairwise head (ESM: 128).
        PairwiseHidden: int64
        /// The backbone: None = ESM's affine head (each residue's frame read from its state); Some = an
        /// AlphaFold2-style structure module (invariant point attention and iterative frame updates, keys
        /// `structure_module.*` after ESM's) whose frames replace the affine head's (the affine head still gives the
        /// torsion channels). Not in ESM's release.
        StructureModule: StructureModuleConfig option
        /// With the affine head, read each residue's frame as its pose in the previous residue's frame and compose
        /// them along the chain (`Frame.chain`), so that local geometry is right wherever the steps are, instead of
        /// reading every frame in one global frame (ESM: false). No extra keys; our exports record it in the
        /// metadata (`StructureDecoderConfig.ChainFramesMetadataKey`). Excludes `StructureModule`.
        ChainFrames: bool
    }

/// Presets, checks and the state-dict layout of `StructureDecoderConfig`.
module StructureDecoderConfig =

    /// ESM's released decoder (`esm3_structure_decoder_v0`): d 1280, 20 heads, 30 layers (618,552,905 parameters).
    let esm3 =
        {
            DModel = 1280L
            Heads = 20L
            Layers = 30
            PairwiseDownproject = 128L
            PairwiseHidden = 128L
            StructureModule = None
            ChainFrames = false
        }

    /// A CPU-trainable decoder: d 256, 4 heads (d_head 64), 4 layers, ESM's pairwise head.
    let small =
        {
            DModel = 256L
            Heads = 4L
            Layers = 4
            PairwiseDownproject = 128L
            PairwiseHidden = 128L
            StructureModule = None
            ChainFrames = false
        }

    /// Distogram bins: pairwise channels 0 … 63 (the first of ESM's `pairwise_bins`).
    [<Literal>]
    let DistogramBins = 64L

    /// Direction bins, 6 × 16 (`VQVAE_DIRECTION_LOSS_BINS` × 6): pairwise channels 64 … 159.
    [<Literal>]
    let DirectionBins = 96L

    /// All pairwise channels: distogram, direction, then the 64 pAE bins (160 … 223).
    [<Literal>]
    let PairwiseBins = DistogramBins + DirectionBins + AlignedError.Bins

    /// The SwiGLU feed-forward ratio of the decoder's blocks.
    let expansionRatio = 8.0 / 3.0

    /// The SwiGLU hidden width F (1280 → 3584).
    let ffnHidden (c: StructureDecoderConfig) =
        FeedForward.swigluHidden expansionRatio c.DModel

    /// The trunk's settings: ESM's `TransformerStack(d, H, 1, n_layers, scale_residue=False, n_layers_geom=0)`.
    let stack (c: StructureDecoderConfig) : TransformerStackConfig =
        { TransformerStackConfig.Esm3 with
            DModel = c.DModel
            Heads = c.Heads
            VHeads = 1L
            Layers = c.Layers
            GeometricLayers = 0
            ScaleResidue = false
            ExpansionRatio = expansionRatio
        }

    /// The config, or the list of what is wrong with it (each message names the field).
    let validate (c: StructureDecoderConfig) : Result<StructureDecoderConfig, string list> =
        let errors =
            [
                if c.DModel <= 0L then
                    sprintf "DModel must be positive (got %d)" c.DModel
                if c.Heads <= 0L then
                    sprintf "Heads must be positive (got %d)" c.Heads
                elif c.DModel > 0L && c.DModel % c.Heads <> 0L then
                    sprintf "DModel (%d) must be divisible by Heads (%d)" c.DModel c.Heads
                elif c.DModel > 0L && (c.DModel / c.Heads) % 2L <> 0L then
                    sprintf "the head width DModel/Heads (%d) must be even for rotary embeddings" (c.DModel / c.Heads)
                if c.Layers < 1 then
                    sprintf "Layers must be at least 1 (got %d)" c.Layers
                if c.PairwiseDownproject <= 0L || c.PairwiseDownproject % 2L <> 0L then
                    sprintf "PairwiseDownproject must be positive and even (got %d)" c.PairwiseDownproject
                if c.PairwiseHidden <= 0L then
                    sprintf "PairwiseHidden must be positive (got %d)" c.PairwiseHidden
                match c.StructureModule with
                | Some m ->
                    yield! Validation.within "StructureModule" (StructureModuleConfig.validate m)

                    if m.Attention.DModel <> c.DModel then
                        sprintf
                            "StructureModule: Attention.DModel (%d) must equal DModel (%d)"
                            m.Attention.DModel
                            c.DModel

                    if c.ChainFrames then
                        "ChainFrames composes the affine head's frames; it cannot be combined with StructureModule"
                | None -> ()
            ]

        if errors.IsEmpty then Ok c else Error errors

    /// Metadata key of our exports saying whether the pLDDT and pAE heads were trained ("trained" after stage 2,
    /// "untrained" after stage 1).
    [<Literal>]
    let ConfidenceMetadataKey = "confidence_heads"

    /// Whether a decoder file's pLDDT and pAE heads carry information, from its metadata: `ConfidenceMetadataKey`
    /// when present; else our older exports tell by their keys (stage 2 wrote "sequence_input" and trained the
    /// heads, stage 1 wrote only "head_width" and did not); a file without metadata (ESM's) was trained.
    let confidenceTrainedOf (metadata: Map<string, string>) =
        match metadata.TryFind ConfidenceMetadataKey with
        | Some value -> value = "trained"
        | None -> metadata.ContainsKey "sequence_input" || not (metadata.ContainsKey "head_width")

    /// Metadata key of our confidence-stage exports: "uninformative" when the validated pTM did not track the
    /// reconstructions' quality (`ConfidenceTraining`), so scripts do not print it.
    [<Literal>]
    let PtmMetadataKey = "ptm"

    /// Whether a decoder file's pTM carries information: its confidence heads were trained
    /// (`confidenceTrainedOf`) and `PtmMetadataKey` does not say "uninformative".
    let ptmInformativeOf (metadata: Map<string, string>) =
        confidenceTrainedOf metadata
        && metadata.TryFind PtmMetadataKey <> Some "uninformative"

    /// Metadata key of our exports recording `ChainFrames` ("true" when set; absent in ESM's files).
    [<Literal>]
    let ChainFramesMetadataKey = "chain_frames"

    /// Key prefix of the optional structure module.
    [<Literal>]
    let StructureModulePrefix = "structure_module."

    /// Every state-dict key with its shape, in ESM's (PyTorch's) order, computed without building the model:
    /// `embed`, `decoder_stack.blocks.{i}.attn.*`/`.ffn.*`, `decoder_stack.norm`, `affine_output_projection.*`,
    /// `pairwise_classification_head.*`, `plddt_head.*` (ESM3-REFERENCE.md §7.7).
    let expectedKeys (c: StructureDecoderConfig) : (string * int64[]) list =
        let d = c.DModel
        let f = ffnHidden c
        let p, h = c.PairwiseDownproject, c.PairwiseHidden

        [
            "embed.weight", [| StructureTokens.VocabularySize; d |]
            for i in 0 .. c.Layers - 1 do
                let b = sprintf "decoder_stack.blocks.%d." i
                b + "attn.layernorm_qkv.0.weight", [| d |]
                b + "attn.layernorm_qkv.0.bias", [| d |]
                b + "attn.layernorm_qkv.1.weight", [| 3L * d; d |]
                b + "attn.out_proj.weight", [| d; d |]
                b + "attn.q_ln.weight", [| d |]
                b + "attn.k_ln.weight", [| d |]
                b + "ffn.0.weight", [| d |]
                b + "ffn.0.bias", [| d |]
                b + "ffn.1.weight", [| 2L * f; d |]
                b + "ffn.3.weight", [| d; f |]
            "decoder_stack.norm.weight", [| d |]
            "affine_output_projection.ffn1.weight", [| d; d |]
            "affine_output_projection.ffn1.bias", [| d |]
            "affine_output_projection.norm.weight", [| d |]
            "affine_output_projection.norm.bias", [| d |]
            "affine_output_projection.proj.weight", [| BackboneHead.ProjectionWidth; d |]
            "affine_output_projection.proj.bias", [| BackboneHead.ProjectionWidth |]
            "pairwise_classification_head.downproject.weight", [| p; d |]
            "pairwise_classification_head.linear1.weight", [| h; p |]
            "pairwise_classification_head.norm.weight", [| h |]
            "pairwise_classification_head.norm.bias", [| h |]
            "pairwise_classification_head.linear2.weight", [| PairwiseBins; h |]
            "plddt_head.dense.weight", [| d; d |]
            "plddt_head.dense.bias", [| d |]
            "plddt_head.norm.weight", [| d |]
            "plddt_head.norm.bias", [| d |]
            "plddt_head.output.weight", [| Plddt.Bins; d |]
            "plddt_head.output.bias", [| Plddt.Bins |]
            match c.StructureModule with
            | Some m -> yield! StructureModuleConfig.expectedKeys StructureModulePrefix m
            | None -> ()
        ]

    /// The number of parameters (sum over `expectedKeys`).
    let parameterCount (c: StructureDecoderConfig) : int64 =
        expectedKeys c |> List.sumBy (fun (_, s) -> Array.fold (*) 1L s)

    /// Rows of the optional sequence embedding: the residue types 0 … 20 of `ResidueConstants` (20 = X).
    [<Literal>]
    let SequenceRows = 21L

    /// The one key a sequence-conditioned decoder adds to ESM's (ESM3-TRAINING.md §1.4; not in ESM's release):
    /// `sequence_embed.weight` [21, d], the learned residue embedding summed with the token embedding.
    [<Literal>]
    let SequenceEmbedKey = "sequence_embed.weight"

    /// `expectedKeys`, followed by `SequenceEmbedKey` [21, d] when `sequenceInput`.
    let expectedKeysWith (sequenceInput: bool) (c: StructureDecoderConfig) : (string * int64[]) list =
        if sequenceInput then
            expectedKeys c @ [ SequenceEmbedKey, [| SequenceRows; c.DModel |] ]
        else
            expectedKeys c

    /// Infers the sizes from the tensors' shapes of an ESM-format state dict, with `headWidth` channels per head
    /// (the one size the shapes do not determine): d from `embed.weight` [4101, d], Layers from the highest
    /// `decoder_stack.blocks.{i}` + 1, the pairwise widths from `pairwise_classification_head.downproject.weight`
    /// [P, d] and `.linear1.weight` [H, P]. A missing or mis-shaped tensor, or a d that is not a multiple of
    /// `headWidth`, raises an `InputException` naming `file` and the tensor. Shapes are not checked beyond what
    /// the inference reads (a strict load does that).
    let ofKeyShapesWith (headWidth: int64) (file: string) (shapes: seq<string * int64[]>) : StructureDecoderConfig =
        let keys = KeyShapes(file, "decoder", shapes)
        let fail (name: string) message = keys.Fail(name, message)
        let shapeOf (name: string) (rank: int) = keys.Require(name, rank)

        let embed = shapeOf "embed.weight" 2

        if embed.[0] <> StructureTokens.VocabularySize then
            fail
                "embed.weight"
                (sprintf
                    "expected %d rows (4096 codes + 5 special tokens), got shape %s"
                    StructureTokens.VocabularySize
                    (Shape.show embed))

        let d = embed.[1]

        if headWidth <= 0L || d % headWidth <> 0L then
            fail "embed.weight" (sprintf "d = %d is not a multiple of the head width %d" d headWidth)

        let layers =
            match Checkpoint.blockCount "decoder_stack.blocks" keys.Names with
            | Ok n -> n
            | Error key -> fail key "block index does not fit an int"

        if layers = 0 then
            fail "decoder_stack.blocks.0.attn.layernorm_qkv.1.weight" "missing: the file holds no decoder block"

        let down = shapeOf "pairwise_classification_head.downproject.weight" 2
        let linear1 = shapeOf "pairwise_classification_head.linear1.weight" 2

        // The structure module's sizes from its tensors (its round count is not in any shape: AlphaFold2's here;
        // `StructureDecoder.load` reads our export's metadata).
        let structureModule =
            if keys.Names |> Seq.exists (fun n -> n.StartsWith StructureModulePrefix) then
                let rows (name: string) =
                    (shapeOf (StructureModulePrefix + name) 2).[0]

                let h = (shapeOf (StructureModulePrefix + "ipa.head_weights") 1).[0]

                let per (name: string) (by: int64) =
                    let r = rows name

                    if h < 1L || r % (h * by) <> 0L then
                        fail (StructureModulePrefix + name) (sprintf "%d rows do not split into %d heads" r h)

                    r / (h * by)

                Some
                    {
                        Iterations = StructureModuleConfig.AlphaFold2Rounds
                        Attention =
                            {
                                DModel = d
                                Heads = h
                                ScalarQk = per "ipa.q.weight" 1L
                                ScalarV = per "ipa.v.weight" 1L
                                PointQk = per "ipa.q_points.weight" 3L
                                PointV = per "ipa.v_points.weight" 3L
                                MaxOffset = (rows "ipa.relative_position.weight" - 1L) / 2L
                            }
                    }
            else
                None

        let config =
            {
                DModel = d
                Heads = d / headWidth
                Layers = layers
                PairwiseDownproject = down.[0]
                PairwiseHidden = linear1.[0]
                StructureModule = structureModule
                ChainFrames = false
            }

        match validate config with
        | Ok c -> c
        | Error errors ->
            InputError.raise
                file
                InputLocation.Whole
                ("the tensors' shapes give an invalid decoder: " + String.Join("; ", errors))

    /// `ofKeyShapesWith 64` (ESM's d_head). Shapes: any.
    let ofKeyShapes (file: string) (shapes: seq<string * int64[]>) = ofKeyShapesWith 64L file shapes

    /// Infers the sizes from a state dict's tensors (see `ofKeyShapesWith`; heads = d / 64, ESM's d_head).
    /// Shapes: any.
    let ofStateDict (file: string) (tensors: seq<string * torch.Tensor>) =
        ofKeyShapes file (tensors |> Seq.map (fun (n, t) -> n, t.shape))

    /// Compares a state dict's (name, shape) list with `expectedKeys`: missing, unexpected, duplicated and
    /// mis-shaped keys, without building the model. Shapes: any.
    let mismatches (c: StructureDecoderConfig) (shapes: seq<string * int64[]>) : CheckpointMismatch =
        Checkpoint.mismatchesOfShapes (expectedKeys c) shapes

/// Everything the decoder computes for a batch of structure tokens (ESM3-REFERENCE.md §7.2–7.5).
type StructureDecoderOutput =
    {
        /// The trunk's output (after the final LayerNorm). [B, L, d]
        Hidden: torch.Tensor
        /// Residue frames (ESM's `tensor7_affine`, which is the 12-float layout: `Frame.toTensor12`). [B, L]
        Frames: Frame
        /// N, CA, C in Å (ESM's `bb_pred`). [B, L, 3, 3]
        Backbone: torch.Tensor
        /// With a structure module, the backbone after every round, the last equal to `Backbone` (AlphaFold2
        /// averages its FAPE over them); empty for ESM's affine head. [B, L, 3, 3] each
        RoundBackbones: torch.Tensor list
        /// The backbone head's 14 unused channels as 7 torsions × (sin, cos), unnormalised. [B, L, 7, 2]
        TorsionLogits: torch.Tensor
        /// pLDDT bin logits; null when decoded without confidence (`DecodeEmbeddings`, stage-1 training). [B, L, 50]
        PlddtLogits: torch.Tensor
        /// pLDDT in [0.01, 0.99] (float32, or float64 for a float64 model); null without confidence. [B, L]
        Plddt: torch.Tensor
        /// Distogram logits (pairwise channels 0–63). [B, L, L, 64]
        DistogramLogits: torch.Tensor
        /// Direction logits, 6 × 16 bins (pairwise channels 64–159). [B, L, L, 96]
        DirectionLogits: torch.Tensor
        /// pAE logits (pairwise channels 160–223); null without confidence. [B, L, L, 64]
        PaeLogits: torch.Tensor
        /// Predicted aligned error in Å; entries involving a special token hold the uniform 16 Å; no gradient; null
        /// without confidence. [B, L, L]
        Pae: torch.Tensor
        /// pTM over the real (code) tokens; no gradient; null without confidence. [B]
        Ptm: torch.Tensor
    }

/// ESM's `StructureTokenDecoder` (evolutionaryscale/esm `esm/models/vqvae.py`): token embedding, a plain
/// transformer stack, and three heads. State-dict keys and order as ESM (`StructureDecoderConfig.expectedKeys`):
/// `embed`, `decoder_stack`, `affine_output_projection`, `pairwise_classification_head`, `plddt_head`.
///
/// With `sequenceInput` (stage 2, ESM3-TRAINING.md §1.4) the decoder also owns a learned residue embedding
/// `sequence_embed` [21, d] (key `StructureDecoderConfig.SequenceEmbedKey`, after ESM's keys) that `DecodeTokens`
/// adds to the token embedding where a residue type is given. Without it (the default) the key set and every
/// output are ESM's.
type StructureDecoder(config: StructureDecoderConfig, sequenceInput: bool) as this =
    inherit torch.nn.Module<torch.Tensor, StructureDecoderOutput>("StructureTokenDecoder")

    do
        Validation.check "structure decoder" (StructureDecoderConfig.validate config)
        |> ignore

    let embed = torch.nn.Embedding(StructureTokens.VocabularySize, config.DModel)

    let decoder_stack = new TransformerStack(StructureDecoderConfig.stack config)

    let affine_output_projection = new Dim6RotStructureHead(config.DModel)

    let pairwise_classification_head =
        new PairwisePredictionHead(
            config.DModel,
            config.PairwiseDownproject,
            config.PairwiseHidden,
            StructureDecoderConfig.PairwiseBins,
            false
        )

    let plddt_head = new RegressionHead(config.DModel, Plddt.Bins)

    // Optional parts are not Module-typed fields, so RegisterComponents skips them; registered by name below.
    let structureModule =
        config.StructureModule |> Option.map (fun c -> new StructureModule(c))

    let sequenceEmbed =
        if sequenceInput then
            Some(torch.nn.Embedding(StructureDecoderConfig.SequenceRows, config.DModel))
        else
            None

    do
        this.RegisterComponents()

        match structureModule with
        | Some m -> this.register_module ("structure_module", m)
        | None -> ()

        match sequenceEmbed with
        | Some m -> this.register_module ("sequence_embed", m)
        | None -> ()

    /// ESM's decoder (no sequence input).
    new(config: StructureDecoderConfig) = new StructureDecoder(config, false)

    /// The sizes.
    member _.Config = config

    /// False when the pLDDT and pAE heads were never trained (a stage-1 export), so that pLDDT, pAE and pTM carry
    /// no information: `StructureDecoder.load` sets it from the file (`StructureDecoderConfig.confidenceTrainedOf`);
    /// true for a decoder built in code.
    member val ConfidenceTrained = true with get, set

    /// False when pTM carries no information (untrained heads, or a confidence stage whose validated pTM did not
    /// track quality): `StructureDecoder.load` sets it (`StructureDecoderConfig.ptmInformativeOf`); true in code.
    member val PtmInformative = true with get, set

    /// True when the decoder owns the residue embedding `sequence_embed` (stage-2 sequence conditioning).
    member _.SequenceInput = sequenceInput

    /// With a structure module, applies its AlphaFold2 "final" initialisation (`StructureModule.ZeroFinalLayers`);
    /// nothing otherwise. Training calls it after `Init.reset`.
    member _.ZeroFinalLayers() =
        structureModule |> Option.iter (fun m -> m.ZeroFinalLayers())

    /// The token embeddings (`embed`). Shapes: tokens [B, L] int64 -> [B, L, d]
    member _.Embed(tokens: torch.Tensor) = embed.forward tokens

    /// The trunk only: embedding then the transformer stack (no attention mask: ESM's `sequence_id` is all zeros).
    /// Tokens are not checked here. Shapes: tokens [B, L] int64 -> [B, L, d]
    member _.Trunk(tokens: torch.Tensor) =
        decoder_stack.forward (embed.forward tokens, BlockContext.Plain AttentionMask.None)

    /// The heads over trunk states `x`; `real` marks the residues pAE and pTM average over. Without `confidence`
    /// the pLDDT, pAE and pTM outputs are not computed (null), nor the pairwise head's pAE channels.
    /// Shapes: x [B, L, d], real [B, L] bool -> StructureDecoderOutput
    member _.HeadsWith(x: torch.Tensor, real: torch.Tensor, confidence: bool) =
        let projection = affine_output_projection.forward x

        // With a structure module its frames replace the affine head's, which are then never built.
        let backbone, rounds =
            match structureModule with
            | None when config.ChainFrames ->
                let steps = BackboneHead.ofProjection projection
                let frames = Frame.chain steps.Frames

                {
                    Frames = frames
                    Backbone = BackboneHead.place frames
                    TorsionLogits = steps.TorsionLogits
                },
                []
            | None -> BackboneHead.ofProjection projection, []
            | Some m ->
                let frames = m.Rounds(x, real)
                let rounds = frames |> List.map BackboneHead.place

                {
                    Frames = List.last frames
                    Backbone = List.last rounds
                    TorsionLogits = BackboneHead.torsionLogits projection
                },
                rounds

        let pairGroups =
            [|
                StructureDecoderConfig.DistogramBins
                StructureDecoderConfig.DirectionBins
                if confidence then
                    AlignedError.Bins
            |]

        let pairwise = pairwise_classification_head.ForwardGroups(x, pairGroups)
        let distogram, direction = pairwise.[0], pairwise.[1]

        let plddtLogits, plddt, paeLogits, pae, ptm =
            if confidence then
                let paeLogits = pairwise.[2]
                let plddtLogits = plddt_head.forward x

                // pAE and pTM are read-outs, never trained through (the pAE loss uses the logits): computing them
                // without autograd keeps two [B, L, L, 64] softmaxes out of every training step's graph.
                let pae, ptm =
                    use _ = torch.no_grad ()
                    let logits = paeLogits.detach ()
                    AlignedError.pae logits real, AlignedError.ptm logits real

                plddtLogits, Plddt.ofLogits plddtLogits, paeLogits, pae, ptm
            else
                null, null, null, null, null

        {
            Hidden = x
            Frames = backbone.Frames
            Backbone = backbone.Backbone
            RoundBackbones = rounds
            TorsionLogits = backbone.TorsionLogits
            PlddtLogits = plddtLogits
            Plddt = plddt
            DistogramLogits = distogram
            DirectionLogits = direction
            PaeLogits = paeLogits
            Pae = pae
            Ptm = ptm
        }

    /// `HeadsWith` with every output. Shapes: x [B, L, d], real [B, L] bool -> StructureDecoderOutput
    member this.Heads(x: torch.Tensor, real: torch.Tensor) = this.HeadsWith(x, real, true)

    /// Decodes input vectors given in place of the token embeddings (e.g. the encoder's straight-through quantized
    /// vectors mapped to width d, so gradients reach the encoder), with no BOS or EOS around them: the trunk on the
    /// residues alone (stage-1 training uses `DecodeResidues`, the layout inference reads). Padded rows are not
    /// attended to and count as not real. Uses no extra parameters (the key set stays
    /// ESM's). `confidence` false (stage-1 training, whose losses read none of them) leaves out pLDDT, pAE and pTM
    /// (null) and the pairwise head's pAE channels: a quarter of that head's work and two [B, L, L, 64] softmaxes.
    /// Shapes: embeddings [B, L, d], padding [B, L] bool | null -> StructureDecoderOutput
    member this.DecodeEmbeddings
        (
            embeddings: torch.Tensor,
            padding: torch.Tensor,
            [<Runtime.InteropServices.Optional; Runtime.InteropServices.DefaultParameterValue(true)>] confidence: bool
        ) =
        Shape.expect "embeddings" [| -1L; -1L; config.DModel |] embeddings

        let real =
            if isNull padding then
                torch.ones (
                    [| embeddings.shape.[0]; embeddings.shape.[1] |],
                    dtype = torch.ScalarType.Bool,
                    device = embeddings.device
                )
            else
                Shape.expect "padding" [| embeddings.shape.[0]; embeddings.shape.[1] |] padding
                padding.logical_not ()

        let mask =
            if isNull padding then
                AttentionMask.None
            else
                AttentionMask.Allowed(AttentionMask.keyPadding real)

        let x = decoder_stack.forward (embeddings, BlockContext.Plain mask)
        this.HeadsWith(x, real, confidence)

    /// The stage-1 training path in the layout ESM's decoder reads at inference: each row BOS, the residues'
    /// embeddings (e.g. the encoder's straight-through quantized vectors mapped to width d, so gradients reach the
    /// encoder), EOS, then its padding; BOS and EOS are the `embed` rows of those tokens, so they train with the rest
    /// and a decoder exported from training meets at inference (`StructureTokens.wrap`) what it was trained on.
    /// Padding must follow each row's residues (true from its first padded position on); padded positions are not
    /// attended to. The outputs cover the residue positions only (BOS and EOS dropped before the heads, which work
    /// per residue and per pair); `real` for pAE/pTM is the unpadded residues. This is the trunk of that path: its
    /// states at the residue positions and `real`, for `HeadsWith` (`DecodeResidues`) or for heads trained alone.
    /// Shapes: embeddings [B, L, d], padding [B, L] bool | null -> states [B, L, d], real [B, L] bool
    member _.ResidueTrunk(embeddings: torch.Tensor, padding: torch.Tensor) =
        Shape.expect "embeddings" [| -1L; -1L; config.DModel |] embeddings
        let b, l = embeddings.shape.[0], embeddings.shape.[1]

        let real =
            if isNull padding then
                torch.ones ([| b; l |], dtype = torch.ScalarType.Bool, device = embeddings.device)
            else
                Shape.expect "padding" [| b; l |] padding
                padding.logical_not ()

        let row (token: int64) =
            embed.weight.select(0L, token).to_type(embeddings.dtype).expand(b, 1L, config.DModel)

        let lengths = real.to_type(torch.int64).sum(1L, true) // [B, 1]

        let positions =
            torch.arange((l + 2L).ToScalar(), device = embeddings.device).unsqueeze 0L // [1, L + 2]

        let eos = positions.eq (lengths + 1L) // [B, L + 2]
        let kept = positions.le (lengths + 1L) // BOS, residues, EOS

        let x =
            torch.cat (
                [|
                    row StructureTokens.Bos
                    embeddings
                    torch.zeros_like (row StructureTokens.Eos)
                |],
                1L
            )

        let x = torch.where (eos.unsqueeze -1L, row(StructureTokens.Eos).expand_as x, x)

        let h =
            decoder_stack.forward (x, BlockContext.Plain(AttentionMask.Allowed(AttentionMask.keyPadding kept)))

        h.narrow (1L, 1L, l), real

    /// `ResidueTrunk` then the heads. Shapes: embeddings [B, L, d], padding [B, L] bool | null
    /// -> StructureDecoderOutput over the L residues
    member this.DecodeResidues(embeddings: torch.Tensor, padding: torch.Tensor, confidence: bool) =
        let h, real = this.ResidueTrunk(embeddings, padding)
        this.HeadsWith(h, real, confidence)

    /// Decodes token ids with an optional sequence and padding (the stage-2 training path, ESM3-TRAINING.md §1.4):
    /// x = embed(tokens) + sequence_embed(restypes) where restypes ≥ 0 (rows with −1, e.g. BOS/EOS/PAD, add
    /// nothing; `restypes` is ignored by a decoder without sequence input and may be null). Padded rows are not
    /// attended to and count as not real; real residues for pAE/pTM are the code tokens (< 4096) that are not
    /// padding. Tokens are not checked here. With both null this equals `forward` on the same tokens.
    /// Shapes: tokens [B, L] int64, restypes [B, L] int64 (−1 … 20) | null, padding [B, L] bool | null
    ///         -> StructureDecoderOutput
    member this.DecodeTokens(tokens: torch.Tensor, restypes: torch.Tensor, padding: torch.Tensor) =
        if tokens.dim () <> 2L then
            Shape.mismatch "tokens" "[B, L]" tokens

        let x = embed.forward tokens

        let x =
            match sequenceEmbed with
            | Some m when not (isNull restypes) ->
                Shape.expect "restypes" tokens.shape restypes

                let given = restypes.ge ((0L).ToScalar())

                let rows =
                    restypes.clamp ((0L).ToScalar(), (StructureDecoderConfig.SequenceRows - 1L).ToScalar())

                x + m.forward rows * given.unsqueeze(-1L).to_type x.dtype
            | _ -> x

        let codes = tokens.lt (StructureTokens.CodebookSize.ToScalar())

        let real, mask =
            if isNull padding then
                codes, AttentionMask.None
            else
                Shape.expect "padding" tokens.shape padding
                let kept = padding.logical_not ()
                codes.logical_and kept, AttentionMask.Allowed(AttentionMask.keyPadding kept)

        this.Heads(decoder_stack.forward (x, BlockContext.Plain mask), real)

    /// Decodes a batch of structure tokens: each row BOS, tokens, EOS, then optionally PAD (checked by
    /// `StructureTokens.checkBatch`; a bad token raises an `InputException` naming its row and position).
    /// Real residues for pAE/pTM are the code tokens (< 4096). Padding is attended to, as in ESM.
    /// Shapes: tokens [B, L] int64 -> StructureDecoderOutput (see its fields)
    override this.forward(tokens: torch.Tensor) =
        StructureTokens.checkBatch "structure tokens" tokens
        let x = this.Trunk tokens
        let real = tokens.lt (StructureTokens.CodebookSize.ToScalar())
        this.Heads(x, real)

/// A decoded chain with its confidences (BOS and EOS stripped).
type DecodedStructure =
    {
        /// N, CA, C from the decoder, O inferred (none on the last residue); B-factors = 100 · pLDDT.
        Chain: ProteinChain
        /// pLDDT per residue, in [0.01, 0.99]. [L]
        Plddt: float32[]
        /// pTM of the chain.
        Ptm: float
        /// Predicted aligned error in Å between residues (ESM returns it with the BOS/EOS rows; here they are
        /// stripped). [L, L]
        Pae: float32[,]
    }

/// Decoding, oxygen inference and loading of `StructureDecoder`s.
module StructureDecoder =

    /// The local position of the backbone oxygen in the frame (origin C, x̂ ∝ C − CA, N_{i+1} in the xy-plane):
    /// (0.6240, −1.0613, 0.0103) Å (evolutionaryscale/esm `ProteinChain.infer_oxygen`).
    let private oxygenLocal = [| 0.6240; -1.0613; 0.0103 |]

    /// ESM's `infer_oxygen`: O_i = T_i(0.6240, −1.0613, 0.0103) with
    /// T_i = `Frame.ofGramSchmidt 1e-10 CA_i C_i N_{i+1}`. O_i depends only on CA_i, C_i and N_{i+1}; the last
    /// residue has no N_{i+1}, so its O is NaN (as is any O whose inputs are not finite).
    /// Shapes: backbone [*, L, 3 (N, CA, C), 3] -> [*, L, 3]
    let inferOxygen (backbone: torch.Tensor) =
        Shape.expectTrailing "backbone" [| 3L; 3L |] backbone

        if backbone.dim () < 3L then
            Shape.mismatch "backbone" "[*, L, 3 (N, CA, C), 3]" backbone

        let l = backbone.shape.[backbone.shape.Length - 3]
        let n = backbone.select (-2L, 0L) // [*, L, 3]
        let ca = backbone.select (-2L, 1L)
        let c = backbone.select (-2L, 2L)

        let missing =
            torch.full (
                Array.append (Shape.batchDims 3 backbone) [| 1L; 3L |],
                Double.NaN.ToScalar(),
                dtype = backbone.dtype,
                device = backbone.device
            )

        let nNext = torch.cat ([| n.narrow (-2L, 1L, max 0L (l - 1L)); missing |], -2L)
        let frames = Frame.ofGramSchmidt Rotation.EsmFrameEps ca c nNext

        let local =
            torch.tensor(oxygenLocal, dtype = torch.float64).``to``(backbone.dtype, backbone.device)

        Frame.apply frames local

    /// All-atom coordinates of a decoder output (ESM3 Alg. 8; ESM3-REFERENCE.md §7.8): `AllAtom.decodeAllAtom` of
    /// the predicted backbone frames and the 7 torsion (sin, cos) pairs in the backbone head's channels 9–22.
    /// Shapes: out.Frames [B, L], out.TorsionLogits [B, L, 7, 2], restypes [B, L] (0 … 20)
    ///         -> Positions [B, L, 14, 3], Mask [B, L, 14]
    let allAtom (out: StructureDecoderOutput) (restypes: torch.Tensor) : AtomPositions =
        AllAtom.decodeAllAtom out.Frames restypes out.TorsionLogits

    /// Decodes one structure (ESM's `decode_structure`): `tokens` = BOS, codes, EOS, with no MASK (checked; an
    /// `InputException` names the position). The chain holds N, CA, C of residues 1 … L (BOS/EOS stripped) and
    /// the inferred O; `sequence` (length L) names the residues, chain id "A", residue numbers 1 … L, and every
    /// atom's B-factor is 100 · pLDDT. A decoder with sequence input also reads `sequence` (`DecodeTokens`).
    /// Runs without gradients in its own dispose scope.
    /// Shapes: tokens [L + 2], sequence length L.
    let decodeWithSequence (model: StructureDecoder) (sequence: string) (tokens: int64[]) : DecodedStructure =
        let source = "structure tokens"
        StructureTokens.checkWrapped source tokens

        tokens
        |> Array.iteri (fun i id ->
            if id = StructureTokens.Mask then
                InputError.raise
                    source
                    (InputLocation.Field(sprintf "position %d" i))
                    "MASK: only fully unmasked structure tokens can be decoded")

        let l = tokens.Length - 2

        if isNull sequence || sequence.Length <> l then
            raise (
                ArgumentException(
                    sprintf
                        "sequence has length %d but the tokens hold %d residues"
                        (if isNull sequence then 0 else sequence.Length)
                        l,
                    "sequence"
                )
            )

        use _scope = torch.NewDisposeScope()
        use _noGrad = torch.no_grad ()

        let input =
            torch.tensor(tokens, ReadOnlySpan<int64> [| 1L; int64 tokens.Length |]).``to``(Checkpoint.deviceOf model)

        let out =
            if model.SequenceInput then
                let restypes =
                    Array.concat
                        [
                            [| -1L |]
                            sequence.ToCharArray() |> Array.map (ResidueConstants.restypeIndex >> int64)
                            [| -1L |]
                        ]

                let r =
                    torch
                        .tensor(restypes, ReadOnlySpan<int64> [| 1L; int64 restypes.Length |])
                        .``to``(Checkpoint.deviceOf model)

                model.DecodeTokens(input, r, null)
            else
                model.forward input

        let bb = out.Backbone.select(0L, 0L).narrow(0L, 1L, int64 l) // [L, 3, 3]
        let oxygen = inferOxygen bb // [L, 3]

        let atom37 =
            torch.full ([| int64 l; 37L; 3L |], Double.NaN.ToScalar(), dtype = bb.dtype, device = bb.device)

        atom37.narrow(1L, 0L, 3L).copy_ bb |> ignore
        atom37.select(1L, int64 ResidueConstants.oIndex).copy_ oxygen |> ignore

        let chain =
            ProteinChain.ofAtom37Tensor "decoded" "A" sequence (Array.init l (fun i -> i + 1)) atom37

        let toArray (t: torch.Tensor) =
            t.detach().cpu().to_type(torch.float32).contiguous().data<float32>().ToArray()

        let plddt = toArray (out.Plddt.select(0L, 0L).narrow(0L, 1L, int64 l))

        let paeFlat =
            toArray (out.Pae.select(0L, 0L).narrow(0L, 1L, int64 l).narrow(1L, 1L, int64 l))

        let bfactors =
            Array2D.init l 37 (fun i a -> if chain.Atom37Mask.[i, a] then 100.0f * plddt.[i] else 0.0f)

        {
            Chain = { chain with BFactors = bfactors }
            Plddt = plddt
            Ptm = out.Ptm.select(0L, 0L).ToDouble()
            Pae = Array2D.init l l (fun i j -> paeFlat.[i * l + j])
        }

    /// `decodeWithSequence` with ESM's default sequence, all alanine. Shapes: tokens [L + 2].
    let decode (model: StructureDecoder) (tokens: int64[]) : DecodedStructure =
        decodeWithSequence model (String('A', max 0 (tokens.Length - 2))) tokens

    /// The attention head width a decoder file declares in its metadata ("head_width", written by our training
    /// export: shapes cannot tell it), else ESM's 64. A value that is not a positive integer raises an
    /// `InputException` naming `path` and the field.
    let headWidthOf (path: string) (metadata: Map<string, string>) : int64 =
        CheckpointMetadata.read path metadata "head_width" "a positive integer" CheckpointMetadata.positiveInt64 64L

    /// The structure module's round count from a file's metadata (`StructureModuleConfig.RoundsMetadataKey`, which
    /// our export writes), else AlphaFold2's 8. A value that is not a positive integer raises an `InputException`
    /// naming `path` and the field.
    let structureModuleIterationsOf (path: string) (metadata: Map<string, string>) : int =
        CheckpointMetadata.read
            path
            metadata
            StructureModuleConfig.RoundsMetadataKey
            "a positive integer"
            CheckpointMetadata.positiveInt
            StructureModuleConfig.AlphaFold2Rounds

    /// Loads an ESM-format decoder from a safetensors file or a PyTorch checkpoint such as ESM's
    /// `esm3_structure_decoder_v0.pth` (`TensorFile`, told apart by content): the sizes are inferred from the tensors' shapes
    /// (`StructureDecoderConfig.ofKeyShapesWith`, heads = d / head width, the head width read from the file's
    /// "head_width" metadata when present (our exports write it), else ESM's 64), every key and shape is checked
    /// against `StructureDecoderConfig.expectedKeysWith` before the model is built, then the tensors are loaded
    /// strictly. A file holding `sequence_embed.weight` gives a decoder with sequence input; ESM's files give
    /// ESM's decoder. Any problem raises an `InputException` naming `path` and the tensors concerned. The model is
    /// float32 on the CPU, in eval mode. `heads` (a script's `--heads`) states the attention head count, which no
    /// state dict records: Some n overrides the metadata (n must divide d); None reads "head_width" from our metadata,
    /// else takes ESM's 64-wide heads, and a file without that metadata whose d is not a multiple of 64 (no ESM
    /// decoder) is refused with an error that names --heads rather than guessed.
    let loadWith (heads: int64 option) (path: string) : StructureDecoder =
        let header = TensorFile.readHeader path
        let shapes = header.Shapes

        let width =
            shapes
            |> List.tryFind (fun (n, _) -> n = "embed.weight")
            |> Option.bind (fun (_, s) -> if s.Length = 2 then Some s.[1] else None)

        let headWidth =
            match heads, width with
            | Some h, Some d when h > 0L && d % h = 0L -> d / h
            | Some h, Some d ->
                InputError.raise
                    path
                    (InputLocation.Field "embed.weight")
                    (sprintf "--heads %d does not divide the decoder's width d = %d" h d)
            | Some h, None when h <= 0L ->
                InputError.raise path InputLocation.Whole (sprintf "--heads must be positive (got %d)" h)
            | None, Some d when not (header.Metadata.ContainsKey "head_width") && d % 64L <> 0L ->
                InputError.raise
                    path
                    (InputLocation.Field "embed.weight")
                    (sprintf
                        "the file does not say how many attention heads its decoder has, and d = %d is not a multiple of ESM's 64-wide heads: pass --heads N"
                        d)
            | _ -> headWidthOf path header.Metadata

        let sequenceInput =
            shapes
            |> List.exists (fun (n, _) -> n = StructureDecoderConfig.SequenceEmbedKey)

        let config =
            match StructureDecoderConfig.ofKeyShapesWith headWidth path shapes with
            | { StructureModule = Some m } as c ->
                { c with
                    StructureModule =
                        Some
                            { m with
                                Iterations = structureModuleIterationsOf path header.Metadata
                            }
                }
            | c -> c

        let config =
            let chainFrames =
                CheckpointMetadata.read
                    path
                    header.Metadata
                    StructureDecoderConfig.ChainFramesMetadataKey
                    "true or false"
                    (function
                    | "true" -> Some true
                    | "false" -> Some false
                    | _ -> None)
                    false

            { config with
                ChainFrames = chainFrames
            }

        let mismatch =
            Checkpoint.mismatchesOfShapes (StructureDecoderConfig.expectedKeysWith sequenceInput config) shapes

        if not (Checkpoint.isEmpty mismatch) then
            InputError.raise
                path
                InputLocation.Whole
                (sprintf
                    "not a structure decoder with the inferred sizes (d %d, %d heads, %d layers, pairwise %d/%d): %s"
                    config.DModel
                    config.Heads
                    config.Layers
                    config.PairwiseDownproject
                    config.PairwiseHidden
                    (Checkpoint.describe mismatch))

        let model = new StructureDecoder(config, sequenceInput)

        try
            Checkpoint.load path model
            model.ConfidenceTrained <- StructureDecoderConfig.confidenceTrainedOf header.Metadata
            model.PtmInformative <- StructureDecoderConfig.ptmInformativeOf header.Metadata
            model.eval ()
            model
        with _ ->
            model.Dispose()
            reraise ()

    /// `loadWith None`: the head count from our metadata, else ESM's 64-wide heads.
    let load (path: string) : StructureDecoder = loadWith None path
