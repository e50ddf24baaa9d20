namespace Esm3Structure.Models

open Esm3Structure
open Esm3Structure.Nn

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
        /// metadata (`StructureDecoderCheckpoint.ChainFramesMetadataKey`). Excludes `StructureModule`.
        ChainFrames: bool
    }

/// Presets, sizes and checks of `StructureDecoderConfig`.
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

    /// The CPU-trainable decoder of the tokenizer's `small` training preset (the shipped tokenizer's): d 128, 4 heads
    /// (d_head 32), 4 layers, pairwise head 32 → 64.
    let small =
        {
            DModel = 128L
            Heads = 4L
            Layers = 4
            PairwiseDownproject = 32L
            PairwiseHidden = 64L
            StructureModule = None
            ChainFrames = false
        }

    /// The decoder of the `smoke` training presets (minutes on a CPU): d 64, 2 heads, 2 layers, pairwise 16 → 32.
    let smoke =
        { small with
            DModel = 64L
            Heads = 2L
            Layers = 2
            PairwiseDownproject = 16L
            PairwiseHidden = 32L
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
        { TransformerStackConfig.esm3 with
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

    /// Rows of the optional sequence embedding: the residue types 0 … 20 of `ResidueConstants` (20 = X).
    [<Literal>]
    let SequenceRows = 21L
