namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

/// Which dimensions a rotary embedding pairs.
type RotaryStyle =
    /// GPT-NeoX "rotate half": dim k pairs with k + D/2 (ESM's default).
    | HalfSplit = 0
    /// GPT-J interleaved: dim 2k pairs with 2k + 1.
    | Interleaved = 1

/// Rotary position embedding settings.
type RotaryConfig =
    {
        /// Frequency base (ESM: 10000).
        Base: float
        /// Pairing of dimensions.
        Style: RotaryStyle
    }

/// Presets of `RotaryConfig`.
module RotaryConfig =

    /// ESM's rotary embedding: NeoX half-split, base 10000, the full head width rotated (ESM3-REFERENCE.md §3.1).
    let esm3 =
        {
            Base = 10000.0
            Style = RotaryStyle.HalfSplit
        }

/// Rotary position embeddings (RoPE) as pure functions, usable on any attention. Positions are row indices
/// 0 … L−1; frequencies θ_k = base^(−2k/D). For float32 and narrower inputs the angles m·θ_k are computed in
/// float32 and cos/sin cast to the input dtype, exactly as ESM does; for float64 inputs they are computed in
/// float64 (ESM has no float64 path; this keeps float64 properties exact).
/// Source: evolutionaryscale/esm `esm/layers/rotary.py` (NeoX variant).
module Rotary =

    /// cos and sin tables for positions 0 … L−1 and head width D (even), each [L, D] with the per-pair angles
    /// laid out as the style pairs them. Shapes: -> [L, D], [L, D]
    let tables
        (config: RotaryConfig)
        (length: int64)
        (headDim: int64)
        (dtype: torch.ScalarType)
        (device: torch.Device)
        =
        if headDim % 2L <> 0L then
            raise (ArgumentException(sprintf "rotary: head width must be even, got %d" headDim))

        let work =
            if dtype = torch.float64 then
                torch.float64
            else
                torch.float32

        let invFreq =
            1.0
            / torch.pow (
                torch.tensor (config.Base, dtype = work, device = device),
                torch.arange (0L, headDim, 2L, dtype = work, device = device) / float headDim
            )

        let positions = torch.arange (length, dtype = work, device = device)
        let angles = torch.outer (positions, invFreq) // [L, D/2]

        let laid =
            match config.Style with
            | RotaryStyle.Interleaved -> angles.repeat_interleave (2L, -1L) // θ0 θ0 θ1 θ1 …
            | _ -> torch.cat ([| angles; angles |], -1L) // θ0 … θ_{D/2−1} θ0 …

        laid.cos().to_type(dtype), laid.sin().to_type(dtype)

    /// The partner of each dim with its sign: NeoX cat(−x₂, x₁); interleaved (−x₁, x₀, −x₃, x₂, …).
    /// Shapes: [*, D] -> [*, D]
    let rotateHalf (style: RotaryStyle) (x: torch.Tensor) =
        let d = x.shape.[x.shape.Length - 1]

        match style with
        | RotaryStyle.Interleaved ->
            let pairs = Shape.unflattenLast [| d / 2L; 2L |] x
            let even, odd = pairs.select (-1L, 0L), pairs.select (-1L, 1L)
            torch.stack([| -odd; even |], -1L).flatten(-2L)
        | _ ->
            let half = d / 2L
            torch.cat ([| -(x.narrow (-1L, half, half)); x.narrow (-1L, 0L, half) |], -1L)

    /// Rotates per-head vectors by their row position: x·cos + rotateHalf(x)·sin.
    /// Shapes: x [B, L, H, D] -> [B, L, H, D] (positions along dim 1, as ESM applies it)
    let apply (config: RotaryConfig) (x: torch.Tensor) =
        if x.dim () <> 4L then
            Shape.mismatch "x" "[B, L, H, D]" x

        let length, headDim = x.shape.[1], x.shape.[3]
        let cos, sin = tables config length headDim x.dtype x.device
        let cos, sin = cos.unsqueeze (1L), sin.unsqueeze (1L) // [L, 1, D] broadcasts over heads
        x * cos + rotateHalf config.Style x * sin
