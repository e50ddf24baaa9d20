namespace Esm3Structure.Models

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
            if c.Quantizer.Dim <> c.DOut then
                sprintf "Quantizer.Dim (%d) must equal DOut (%d)" c.Quantizer.Dim c.DOut
            yield! Validation.within "Quantizer" (QuantizerConfig.validate c.Quantizer)
        ]
        |> Validation.ofErrors c

    /// The geometric encoder stack's configuration: geometric attention only, biased, SwiGLU, no residual scale,
    /// no final norm (ESM's `GeometricEncoderStack`).
    let stack (c: StructureEncoderConfig) : TransformerStackConfig =
        { TransformerStackConfig.Esm3 with
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
