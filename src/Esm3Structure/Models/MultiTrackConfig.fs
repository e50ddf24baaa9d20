namespace Esm3Structure.Models

open System
open Esm3Structure
open Esm3Structure.Nn
open Esm3Structure.Tokenizers

/// Settings of the ESM3 multi-track model (ESM3-REFERENCE.md §9).
type MultiTrackConfig =
    {
        DModel: int64
        /// Plain attention heads of every block.
        Heads: int64
        /// Geometric (vector) heads of the geometric sub-layers.
        VHeads: int64
        Layers: int
        /// Blocks 0 … GeometricLayers−1 carry geometric attention (ESM3: 1).
        GeometricLayers: int
        /// SwiGLU expansion ratio (ESM3: 8/3).
        ExpansionRatio: float
        /// Divide every residual branch by sqrt(Layers / 36), as ESM3 does.
        ScaleResidue: bool
        /// Never let that divisor fall below 1, i.e. never amplify a branch (ours, ESM3-TRAINING.md §4.3: for
        /// fewer than 36 layers ESM's formula would multiply branches by more than 1). No effect at ≥ 36 layers.
        CapResidualScale: bool
        GeometricImplementation: GeometricAttentionImpl
        /// Score terms of the geometric attention (ESM3: both).
        GeometricTerms: GeometricTerms
    }

/// Presets, checks and the trunk settings of `MultiTrackConfig`.
module MultiTrackConfig =

    /// ESM3-open (`esm3_sm_open_v1`): d 1536, 24 heads, 256 vector heads, 48 layers, geometric attention in block 0,
    /// residual scale sqrt(48/36).
    let esm3 =
        {
            DModel = 1536L
            Heads = 24L
            VHeads = 256L
            Layers = 48
            GeometricLayers = 1
            ExpansionRatio = 8.0 / 3.0
            ScaleResidue = true
            CapResidualScale = false
            GeometricImplementation = GeometricAttentionImpl.Reference
            GeometricTerms = GeometricTerms.Both
        }

    /// Our CPU model (ESM3-TRAINING.md §4.3): d 192, 6 layers, 6 heads × 32, 16 geometric heads in block 0 only,
    /// the residual scale capped at 1.
    let small =
        { esm3 with
            DModel = 192L
            Heads = 6L
            VHeads = 16L
            Layers = 6
            CapResidualScale = true
            GeometricImplementation = GeometricAttentionImpl.MemoryEfficient
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: MultiTrackConfig) =
        [
            if c.DModel <= 0L || c.DModel % Tracks.FunctionSlots <> 0L then
                sprintf "DModel must be a positive multiple of 8 (the function track's sub-embeddings), got %d" c.DModel
            if c.Heads <= 0L || c.DModel % c.Heads <> 0L then
                sprintf "Heads (%d) must be positive and divide DModel (%d)" c.Heads c.DModel
            elif (c.DModel / c.Heads) % 2L <> 0L then
                "the head width DModel / Heads must be even (rotary embedding)"
            if c.VHeads <= 0L then
                sprintf "VHeads must be positive, got %d" c.VHeads
            if c.Layers < 1 then
                sprintf "Layers must be at least 1, got %d" c.Layers
            if c.GeometricLayers < 0 || c.GeometricLayers > c.Layers then
                sprintf "GeometricLayers must lie in 0 … Layers (%d), got %d" c.Layers c.GeometricLayers
            if not (c.ExpansionRatio > 0.0) then
                sprintf "ExpansionRatio must be positive, got %g" c.ExpansionRatio
        ]
        |> Validation.ofErrors c

    /// The divisor of every residual branch: sqrt(Layers/36) when ScaleResidue (at least 1 when capped), else 1.
    let residualScale (c: MultiTrackConfig) =
        if not c.ScaleResidue then
            1.0
        elif c.CapResidualScale then
            max 1.0 (Math.Sqrt(float c.Layers / 36.0))
        else
            Math.Sqrt(float c.Layers / 36.0)

    /// The trunk's `TransformerStackConfig` (ESM3: no biases, qk-LayerNorm, rotary, SwiGLU, unframed rows zeroed).
    let stack (c: MultiTrackConfig) : TransformerStackConfig =
        { TransformerStackConfig.esm3 with
            DModel = c.DModel
            Heads = c.Heads
            VHeads = c.VHeads
            Layers = c.Layers
            GeometricLayers = c.GeometricLayers
            GeometricImplementation = c.GeometricImplementation
            GeometricTerms = c.GeometricTerms
            ExpansionRatio = c.ExpansionRatio
            // The stack knows only on/off (sqrt(n/36)); the cap is "off" whenever it would bind.
            ScaleResidue = residualScale c <> 1.0
        }
