namespace Esm3Structure.Models

open System
open Esm3Structure
open Esm3Structure.Nn

/// Settings of ESM's `StructureTokenEncoder` (ESM3-REFERENCE.md §5).
type StructureEncoderConfig =
    {
        DModel: int64
        /// Geometric (vector) heads.
        VHeads: int64
        /// Geometric encoder blocks (ESM: 2).
        Layers: int
        /// Width of the quantized vectors (ESM: 128).
        DOut: int64
        /// SwiGLU expansion ratio of the blocks (ESM: 4, biased).
        ExpansionRatio: float
        /// Neighbours per residue, the query included (ESM: 16).
        Knn: int
        /// Relative positions are clamped to ±PositionBins (ESM: 32; the table has 2·bins + 2 rows).
        PositionBins: int64
        GeometricImplementation: GeometricAttentionImpl
        /// Score terms of the geometric attention (ESM: both; rotation-only / distance-only are ablations).
        GeometricTerms: GeometricTerms
        /// Adds each neighbour's pose in its query residue's frame (`NeighbourGeometry.features`, through
        /// `neighbour_geometry_proj`) to the layer-0 input, beside ESM's relative-position embedding. Not one of
        /// ESM's inputs (ESM: false): ESM's layer 0 sees only sequence offsets, so the geometry reaches the
        /// residual stream only through the attention, which at small scale learns it slowly.
        NeighbourGeometry: bool
        /// Residue-level blocks after the neighbourhood stack (`global_transformer`, `StructureEncoderConfig.globalStack`):
        /// each residue's vector attends to every residue of its chain (plain attention with rotary positions, then
        /// geometric attention on the residues' own frames), so that a token can say where its residue sits in the
        /// whole fold, not only what its 16 neighbours look like. Not ESM's (ESM: 0): ESM's tokens are local, and
        /// decoding them is a folding problem that ESM solves at GPU scale.
        GlobalLayers: int
        /// Adds each residue's CA position in its chain's principal-axes frame (`PrincipalFrame.coordinates`, in
        /// units of 10 Å, through `principal_position_proj`) to its vector after the neighbourhood stack, so a token can
        /// say where in the fold its residue sits without learning a global frame. Not one of ESM's inputs (ESM:
        /// false). The frame is the encoded chain's (a training crop's own), invariant under proper rigid motions.
        PrincipalPosition: bool
        /// With `PrincipalPosition`: the grid, in Å, the principal-axes coordinates are rounded to before the
        /// projection (0: exact), so that a token can say where its residue sits only to within a cell of this size
        /// and spends the rest of its code on the residue's local geometry. Not ESM's (ESM has no position input).
        PrincipalGrid: float
        Quantizer: QuantizerConfig
    }

/// Presets, checks and the geometric stack of `StructureEncoderConfig`.
module StructureEncoderConfig =

    /// ESM3's released encoder (`esm3_structure_encoder_v0`): d 1024, 128 vector heads, 2 blocks, 4096 × 128 codes.
    let esm3 =
        {
            DModel = 1024L
            VHeads = 128L
            Layers = 2
            DOut = 128L
            ExpansionRatio = 4.0
            Knn = 16
            PositionBins = 32L
            GeometricImplementation = GeometricAttentionImpl.MemoryEfficient
            GeometricTerms = GeometricTerms.Both
            NeighbourGeometry = false
            GlobalLayers = 0
            PrincipalPosition = false
            PrincipalGrid = 0.0
            Quantizer = QuantizerConfig.esm3
        }

    /// A CPU-trainable encoder (the tokenizer's "small" training preset): d 128, 16 vector heads, 2 blocks, SwiGLU
    /// ratio 3 (ESM's rounding gives 512, not 384), a 512 × 64 EMA codebook with restarts (`QuantizerConfig.small`).
    let small =
        { esm3 with
            DModel = 128L
            VHeads = 16L
            Layers = 2
            DOut = 64L
            ExpansionRatio = 3.0
            Quantizer = QuantizerConfig.small
        }

    /// Head width of the global blocks' plain attention (the `small` decoder's).
    let globalHeadWidth = 32L

    /// The encoder of the `smoke` training preset (minutes on a CPU): d 64, 8 vector heads, 1 block, a 128 × 32
    /// codebook.
    let smoke =
        { small with
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

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: StructureEncoderConfig) : Result<StructureEncoderConfig, string list> =
        [
            if c.DModel <= 0L then
                "DModel must be positive"
            if c.VHeads <= 0L then
                "VHeads must be positive"
            if c.Layers < 1 then
                "Layers must be at least 1"
            if c.Knn < 1 then
                "Knn must be at least 1"
            if c.PositionBins < 1L then
                "PositionBins must be at least 1"
            if c.GlobalLayers < 0 then
                "GlobalLayers must be at least 0"
            if c.GlobalLayers > 0 && c.DModel % globalHeadWidth <> 0L then
                sprintf
                    "DModel (%d) must be a multiple of %d with GlobalLayers (heads of that width)"
                    c.DModel
                    globalHeadWidth
            if
                Double.IsNaN c.PrincipalGrid
                || Double.IsInfinity c.PrincipalGrid
                || c.PrincipalGrid < 0.0
            then
                sprintf "PrincipalGrid must be a finite number of Å ≥ 0 (0: exact), got %g" c.PrincipalGrid
            elif c.PrincipalGrid > 0.0 && not c.PrincipalPosition then
                "PrincipalGrid rounds the principal-axes position: it needs PrincipalPosition"
            if c.Quantizer.Dim <> c.DOut then
                sprintf "Quantizer.Dim (%d) must equal DOut (%d)" c.Quantizer.Dim c.DOut
            yield! Validation.within "Quantizer" (QuantizerConfig.validate c.Quantizer)
        ]
        |> Validation.ofErrors c

    /// The geometric encoder stack's configuration: geometric attention only, biased, SwiGLU, no residual scale,
    /// no final norm (ESM's `GeometricEncoderStack`).
    let stack (c: StructureEncoderConfig) : TransformerStackConfig =
        { TransformerStackConfig.esm3 with
            DModel = c.DModel
            Heads = 1L
            VHeads = c.VHeads
            Layers = c.Layers
            GeometricLayers = c.Layers
            MaskAndZeroFrameless = false
            GeometricImplementation = c.GeometricImplementation
            GeometricTerms = c.GeometricTerms
            Bias = true
            ExpansionRatio = c.ExpansionRatio
            ScaleResidue = false
            PlainAttention = false
            FinalNorm = false
        }

    /// The residue-level stack of `GlobalLayers` blocks: plain attention (heads of `globalHeadWidth`, QK LayerNorm,
    /// ESM's rotary positions) then geometric attention (`VHeads`, unframed residues zeroed), biased SwiGLU of the
    /// encoder's ratio, no residual scale, no final norm (`pre_vq_proj` follows, as after the neighbourhood stack).
    let globalStack (c: StructureEncoderConfig) : TransformerStackConfig =
        { stack c with
            Heads = max 1L (c.DModel / globalHeadWidth)
            Layers = c.GlobalLayers
            GeometricLayers = c.GlobalLayers
            MaskAndZeroFrameless = true
            QkLayerNorm = true
            Rotary = Some RotaryConfig.esm3
            PlainAttention = true
        }
