namespace Esm3Structure.Nn

open System.Runtime.InteropServices
open TorchSharp
open Esm3Structure.Geometry

/// How the geometric attention computes its distance term.
type GeometricAttentionImpl =
    /// ESM's dense form: materialises the [B, V, L, L, 3] query–key differences. The parity oracle.
    | Reference
    /// Never materialises [B, V, L, L, 3]: squared distances `‖a‖² + ‖b‖² − 2 a·b` from one matmul (clamped at
    /// the dtype's smallest normal number, then square-rooted), translations first centred per chain on the
    /// framed residues to limit float32 cancellation; large temporaries are released as soon as consumed.
    | MemoryEfficient

/// Which terms of the attention score are on: ESM uses both; the others are ablation switches that zero the disabled
/// term's per-head weight (its scale parameter then gets a zero gradient), in both implementations.
type GeometricTerms =
    /// Rotation (direction agreement) and distance terms: ESM's layer.
    | Both
    /// The rotation term only: score = w_r · ⟨q_rot, k_rot⟩ / √3.
    | RotationOnly
    /// The distance term only: score = −w_d · ‖q_dist − k_dist‖ / √3.
    | DistanceOnly

/// Settings of ESM's `GeometricReasoningOriginalImpl` (with one vector message per head, as in every ESM model).
type GeometricAttentionConfig =
    {
        /// Model width d (`c_s`).
        DModel: int64
        /// Geometric ("vector") heads V (`v_heads`).
        VHeads: int64
        /// Biases in `s_norm`, `proj` and `out_proj` (ESM: false in the ESM3 trunk, true in the encoder).
        Bias: bool
        /// Zero the attention output of unframed query residues before `out_proj` (`mask_and_zero_frameless`;
        /// ESM: true in the ESM3 trunk, false in the encoder).
        MaskAndZeroFrameless: bool
        /// Which implementation of the same function to run.
        Implementation: GeometricAttentionImpl
        /// Which score terms are on (ESM: `Both`).
        Terms: GeometricTerms
    }

/// Presets and checks for `GeometricAttentionConfig` (ESM3-REFERENCE.md §4.4).
module GeometricAttentionConfig =

    /// Block 0 of the ESM3 (small, open) trunk: d 1536, V 256, no biases, unframed rows zeroed.
    let esm3Trunk =
        {
            DModel = 1536L
            VHeads = 256L
            Bias = false
            MaskAndZeroFrameless = true
            Implementation = Reference
            Terms = Both
        }

    /// The structure (VQ-VAE) encoder's blocks: d 1024, V 128, biases, unframed rows not zeroed.
    let esm3Encoder =
        {
            DModel = 1024L
            VHeads = 128L
            Bias = true
            MaskAndZeroFrameless = false
            Implementation = Reference
            Terms = Both
        }

    /// Width of `proj`'s output: 4·V·3 (q, k for both terms) + V·3 (values) = 15V.
    let projWidth (c: GeometricAttentionConfig) = 15L * c.VHeads

    /// Width of `out_proj`'s input: V·3.
    let valueWidth (c: GeometricAttentionConfig) = 3L * c.VHeads

    /// The config, or the list of what is wrong with it (each message names the field).
    let validate (c: GeometricAttentionConfig) : Result<GeometricAttentionConfig, string list> =
        let errors =
            [
                if c.DModel <= 0L then
                    sprintf "DModel must be positive, got %d" c.DModel
                if c.VHeads <= 0L then
                    sprintf "VHeads must be positive, got %d" c.VHeads
            ]

        if errors.IsEmpty then Ok c else Error errors

/// The parameters of a geometric attention layer, with ESM's meaning and shapes (ESM3-REFERENCE.md §4.4).
/// Absent biases are `None`.
type GeometricAttentionWeights =
    {
        /// `s_norm.weight` [d]
        NormWeight: torch.Tensor
        /// `s_norm.bias` [d]
        NormBias: torch.Tensor option
        /// `proj.weight` [15V, d]
        ProjWeight: torch.Tensor
        /// `proj.bias` [15V]
        ProjBias: torch.Tensor option
        /// `out_proj.weight` [d, 3V]
        OutWeight: torch.Tensor
        /// `out_proj.bias` [d]
        OutBias: torch.Tensor option
        /// `distance_scale_per_head` [V] (the distance weight is its softplus)
        DistanceScale: torch.Tensor
        /// `rotation_scale_per_head` [V] (the rotation weight is its softplus)
        RotationScale: torch.Tensor
    }

/// The inputs of one geometric attention call.
type GeometricAttentionInput =
    {
        /// Features [B, L, d], float32 or float64 (everything is computed in this dtype).
        S: torch.Tensor
        /// Residue frames [B, L], same dtype as `S`.
        Frames: Frame
        /// [B, L] bool: true where the residue has a real frame.
        Framed: torch.Tensor
        /// [B, L] int64 packed-sequence ids; `None` = all zeros (one sequence per row).
        SequenceId: torch.Tensor option
        /// [B, L] int64 chain ids; `None` = all ones (one chain per row).
        ChainId: torch.Tensor option
    }

    /// Builds an input; `sequenceId` and `chainId` may be null (C#-friendly).
    /// Shapes: s [B, L, d], frames [B, L], framed [B, L], sequenceId [B, L] | null, chainId [B, L] | null
    static member Create
        (
            s: torch.Tensor,
            frames: Frame,
            framed: torch.Tensor,
            [<Optional; DefaultParameterValue(null: torch.Tensor)>] sequenceId: torch.Tensor,
            [<Optional; DefaultParameterValue(null: torch.Tensor)>] chainId: torch.Tensor
        ) =
        {
            S = s
            Frames = frames
            Framed = framed
            SequenceId = Option.ofObj sequenceId
            ChainId = Option.ofObj chainId
        }
