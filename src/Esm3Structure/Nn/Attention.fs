namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure
open TorchSharp.Modules
open Esm3Structure.Tensors

/// An attention mask, broadcastable to the scores [B, H, Lq, Lk].
[<RequireQualifiedAccess>]
type AttentionMask =
    /// Every query attends to every key (ESM3's default: padding is attended to).
    | None
    /// True = may attend. Masked scores are overwritten with the dtype's most negative finite value (ESM's
    /// convention), so a row with no allowed key becomes a uniform average instead of NaN.
    | Allowed of allowed: torch.Tensor
    /// Added to the scores (0 = attend, large negative = do not).
    | Additive of bias: torch.Tensor

/// Masks and scaled dot-product attention as pure functions.
module AttentionMask =

    /// Causal: query i may attend to keys j ≤ i + (Lk − Lq). Shapes: -> [Lq, Lk] bool
    let causal (queries: int64) (keys: int64) (device: torch.Device) =
        torch.ones([| queries; keys |], dtype = torch.ScalarType.Bool, device = device).tril(keys - queries)

    /// Key padding: `valid` [B, Lk] (true = real token). Shapes: -> [B, 1, 1, Lk] bool
    let keyPadding (valid: torch.Tensor) =
        Shape.expect "valid" [| -1L; -1L |] valid
        valid.to_type(torch.ScalarType.Bool).unsqueeze(1L).unsqueeze(1L)

    /// Same-sequence mask of bin-packed rows (ESM's `seq_id`): i may attend to j iff their ids are equal.
    /// Shapes: sequenceId [B, L] -> [B, 1, L, L] bool
    let sameSequence (sequenceId: torch.Tensor) =
        Shape.expect "sequenceId" [| -1L; -1L |] sequenceId
        sequenceId.unsqueeze(-1L).eq(sequenceId.unsqueeze (-2L)).unsqueeze(1L)

    /// Both masks must allow. Shapes: broadcastable bool masks -> their broadcast
    let both (a: torch.Tensor) (b: torch.Tensor) = a.logical_and b

/// Scaled dot-product attention.
module Attention =

    /// The most negative finite value of a float dtype (ESM's mask fill).
    let finfoMin (dtype: torch.ScalarType) =
        match dtype with
        | torch.ScalarType.Float64 -> Double.MinValue
        | torch.ScalarType.Float16 -> -65504.0
        | torch.ScalarType.BFloat16 -> -3.3895313892515355e38
        | _ -> float Single.MinValue

    /// Attention weights softmax(q kᵀ · scale + mask) over keys. `scale` defaults to 1/sqrt(d).
    /// Shapes: q [*, Lq, d], k [*, Lk, d] -> [*, Lq, Lk]
    let weights (mask: AttentionMask) (scale: float option) (q: torch.Tensor) (k: torch.Tensor) =
        let d = q.shape.[q.shape.Length - 1]

        if k.shape.[k.shape.Length - 1] <> d then
            raise (
                ArgumentException(
                    sprintf
                        "attention: q is %s but k is %s (feature widths differ)"
                        (Shape.show q.shape)
                        (Shape.show k.shape)
                )
            )

        let scale = defaultArg scale (1.0 / Math.Sqrt(float d))
        let scores = q.matmul (k.transpose (-1L, -2L)) * scale

        let masked =
            match mask with
            | AttentionMask.None -> scores
            | AttentionMask.Allowed allowed ->
                scores.masked_fill (allowed.logical_not (), (finfoMin scores.dtype).ToScalar())
            | AttentionMask.Additive bias -> scores + bias

        masked.softmax (-1L)

    /// softmax(q kᵀ · scale + mask) v. Shapes: q [*, Lq, d], k [*, Lk, d], v [*, Lk, dv] -> [*, Lq, dv]
    let scaledDotProduct
        (mask: AttentionMask)
        (scale: float option)
        (q: torch.Tensor)
        (k: torch.Tensor)
        (v: torch.Tensor)
        =
        (weights mask scale q k).matmul v

    /// Splits channels into heads. Shapes: [B, L, H·D] -> [B, H, L, D]
    let splitHeads (heads: int64) (x: torch.Tensor) =
        (Shape.unflattenLast [| heads; x.shape.[x.shape.Length - 1] / heads |] x).transpose(1L, 2L)

    /// Merges heads back. Shapes: [B, H, L, D] -> [B, L, H·D]
    let mergeHeads (x: torch.Tensor) = x.transpose(1L, 2L).flatten(-2L)

/// Settings of ESM's multi-head self-attention.
type AttentionConfig =
    {
        DModel: int64
        Heads: int64
        /// Biases in the qkv and output projections (and the q/k LayerNorms). ESM3: false.
        Bias: bool
        /// LayerNorm over the full width of q and k before the rotary embedding. ESM3: true.
        QkLayerNorm: bool
        /// Rotary embedding on q and k; None for none.
        Rotary: RotaryConfig option
    }

/// Presets and checks of `AttentionConfig`.
module AttentionConfig =

    /// ESM3's trunk attention (d 1536, 24 heads).
    let esm3 =
        {
            DModel = 1536L
            Heads = 24L
            Bias = false
            QkLayerNorm = true
            Rotary = Some RotaryConfig.esm3
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: AttentionConfig) =
        [
            if c.DModel <= 0L then
                "DModel must be positive"
            if c.Heads <= 0L then
                "Heads must be positive"
            elif c.DModel % c.Heads <> 0L then
                sprintf "DModel (%d) must be divisible by Heads (%d)" c.DModel c.Heads
            elif c.Rotary.IsSome && (c.DModel / c.Heads) % 2L <> 0L then
                "the head width must be even for rotary embeddings"
        ]
        |> Validation.ofErrors c

/// ESM's `MultiHeadAttention` (`esm/layers/attention.py`): LayerNorm on the input, one qkv projection, q/k
/// LayerNorms over the full width, rotary embedding per head, scaled dot-product attention, output projection.
/// State-dict keys: `layernorm_qkv.0.{weight,bias}`, `layernorm_qkv.1.weight` [3d, d], `out_proj.weight` [d, d],
/// `q_ln.weight`, `k_ln.weight` (when QkLayerNorm), plus the `.bias` keys when Bias.
type MultiHeadAttention(config: AttentionConfig) as this =
    inherit torch.nn.Module<torch.Tensor, AttentionMask, torch.Tensor>("MultiHeadAttention")

    do Validation.check "attention" (AttentionConfig.validate config) |> ignore

    let d = config.DModel

    let layernorm_qkv =
        torch.nn.Sequential(
            ("0", torch.nn.LayerNorm([| d |], 1e-5) :> torch.nn.Module<torch.Tensor, torch.Tensor>),
            ("1", torch.nn.Linear(d, 3L * d, hasBias = config.Bias) :> torch.nn.Module<torch.Tensor, torch.Tensor>)
        )

    let out_proj = torch.nn.Linear(d, d, hasBias = config.Bias)

    let q_ln: torch.nn.Module<torch.Tensor, torch.Tensor> =
        if config.QkLayerNorm then
            torch.nn.LayerNorm([| d |], 1e-5, bias = config.Bias)
        else
            torch.nn.Identity()

    let k_ln: torch.nn.Module<torch.Tensor, torch.Tensor> =
        if config.QkLayerNorm then
            torch.nn.LayerNorm([| d |], 1e-5, bias = config.Bias)
        else
            torch.nn.Identity()

    do this.RegisterComponents()

    member _.Config = config

    /// PyTorch's defaults: LayerNorms weight 1 (bias 0); `layernorm_qkv.1` and `out_proj` uniform in ±1/sqrt(d)
    /// (biases 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.layerNorm (layernorm_qkv.[0] :?> LayerNorm)
            Init.linear generator (layernorm_qkv.[1] :?> Linear)
            Init.linear generator out_proj
            Init.layerNormOrIdentity q_ln
            Init.layerNormOrIdentity k_ln

    /// Shapes: x [B, L, d] -> [B, L, d]. `mask` is broadcast to [B, H, L, L].
    override _.forward(x: torch.Tensor, mask: AttentionMask) =
        Shape.expect "x" [| -1L; -1L; d |] x
        let qkv_BLD3 = layernorm_qkv.forward x
        let chunks = qkv_BLD3.chunk (3L, -1L)

        let q_BLD, k_BLD, v_BLD =
            q_ln.forward chunks.[0], k_ln.forward chunks.[1], chunks.[2]

        let heads = config.Heads

        let perHead (t: torch.Tensor) =
            Shape.unflattenLast [| heads; d / heads |] t // [B, L, H, D]

        let q_BLHD, k_BLHD =
            match config.Rotary with
            | Some r -> Rotary.apply r (perHead q_BLD), Rotary.apply r (perHead k_BLD)
            | None -> perHead q_BLD, perHead k_BLD

        let context_BHLD =
            Attention.scaledDotProduct
                mask
                None
                (q_BLHD.transpose (1L, 2L))
                (k_BLHD.transpose (1L, 2L))
                (Attention.splitHeads heads v_BLD)

        out_proj.forward (Attention.mergeHeads context_BHLD)
