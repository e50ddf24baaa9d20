namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

/// Settings of ESM's `UnifiedTransformerBlock`.
type TransformerBlockConfig =
    {
        DModel: int64
        Heads: int64
        /// Biases in the attention projections and the feed-forward's linear layers (ESM3: false).
        Bias: bool
        QkLayerNorm: bool
        Rotary: RotaryConfig option
        /// A plain multi-head attention sub-layer (`attn`).
        UsePlainAttention: bool
        FeedForward: FeedForwardKind
        ExpansionRatio: float
        /// Every branch is divided by this before it is added to the residual stream (ESM: sqrt(n_layers / 36)
        /// in the ESM3 trunk, 1 elsewhere).
        ResidualScale: float
    }

    /// Named errors; empty when valid.
    static member Validate(c: TransformerBlockConfig) =
        [
            if c.ResidualScale <= 0.0 then
                "ResidualScale must be positive"
            if c.ExpansionRatio <= 0.0 then
                "ExpansionRatio must be positive"
            if c.UsePlainAttention then
                yield!
                    AttentionConfig.Validate
                        {
                            DModel = c.DModel
                            Heads = c.Heads
                            Bias = c.Bias
                            QkLayerNorm = c.QkLayerNorm
                            Rotary = c.Rotary
                        }
        ]

/// Settings of ESM's `TransformerStack`: `Layers` blocks, then a LayerNorm without bias (`norm`).
type TransformerStackConfig =
    {
        DModel: int64
        Heads: int64
        Layers: int
        Bias: bool
        QkLayerNorm: bool
        Rotary: RotaryConfig option
        FeedForward: FeedForwardKind
        ExpansionRatio: float
        /// Divide every branch by sqrt(Layers / 36), as the ESM3 trunk does.
        ScaleResidue: bool
    }

    /// ESM3-open's trunk sizes without its geometric block (d 1536, 24 heads, 48 layers).
    static member Esm3 =
        {
            DModel = 1536L
            Heads = 24L
            Layers = 48
            Bias = false
            QkLayerNorm = true
            Rotary = Some RotaryConfig.Esm
            FeedForward = FeedForwardKind.SwiGlu
            ExpansionRatio = 8.0 / 3.0
            ScaleResidue = true
        }

    /// ESM's residual scale: sqrt(Layers / 36) when ScaleResidue, else 1 (ESM3-REFERENCE.md §3.4).
    static member ResidualScaleOf(c: TransformerStackConfig) =
        if c.ScaleResidue then
            Math.Sqrt(float c.Layers / 36.0)
        else
            1.0

    /// The configuration of each block.
    static member Block(c: TransformerStackConfig) : TransformerBlockConfig =
        {
            DModel = c.DModel
            Heads = c.Heads
            Bias = c.Bias
            QkLayerNorm = c.QkLayerNorm
            Rotary = c.Rotary
            UsePlainAttention = true
            FeedForward = c.FeedForward
            ExpansionRatio = c.ExpansionRatio
            ResidualScale = TransformerStackConfig.ResidualScaleOf c
        }

/// ESM's pre-LayerNorm transformer block (each sub-layer normalises its own input):
/// x ← x + attn(x)/s; x ← x + ffn(x)/s. Keys: `attn.*` (when plain attention is on), `ffn.*`.
type TransformerBlock(config: TransformerBlockConfig) as this =
    inherit torch.nn.Module<torch.Tensor, AttentionMask, torch.Tensor>("TransformerBlock")

    do
        match TransformerBlockConfig.Validate config with
        | [] -> ()
        | errors -> raise (ArgumentException("transformer block config: " + String.Join("; ", errors)))

    let attn: torch.nn.Module<torch.Tensor, AttentionMask, torch.Tensor> =
        if config.UsePlainAttention then
            new MultiHeadAttention(
                {
                    DModel = config.DModel
                    Heads = config.Heads
                    Bias = config.Bias
                    QkLayerNorm = config.QkLayerNorm
                    Rotary = config.Rotary
                }
            )
        else
            null

    let ffn =
        FeedForward.create
            {
                DModel = config.DModel
                ExpansionRatio = config.ExpansionRatio
                Bias = config.Bias
                Kind = config.FeedForward
            }

    do this.RegisterComponents()

    member _.Config = config

    /// Shapes: x [B, L, d] -> [B, L, d]
    override _.forward(x: torch.Tensor, mask: AttentionMask) =
        let s = config.ResidualScale
        let x = if isNull attn then x else x + attn.forward (x, mask) / s
        x + ffn.forward x / s

/// ESM's `TransformerStack`: blocks, then `norm` (LayerNorm without bias). Keys: `blocks.{i}.*`, `norm.weight`.
type TransformerStack(config: TransformerStackConfig) as this =
    inherit torch.nn.Module<torch.Tensor, AttentionMask, torch.Tensor>("TransformerStack")

    let blocks =
        torch.nn.ModuleList<TransformerBlock>(
            [|
                for _ in 1 .. config.Layers -> new TransformerBlock(TransformerStackConfig.Block config)
            |]
        )

    let norm = torch.nn.LayerNorm([| config.DModel |], 1e-5, bias = false)

    do this.RegisterComponents()

    member _.Config = config

    /// The normalised output and the stream before the final norm.
    /// Shapes: x [B, L, d] -> [B, L, d], [B, L, d]
    member _.ForwardWithPreNorm(x: torch.Tensor, mask: AttentionMask) =
        Shape.expect "x" [| -1L; -1L; config.DModel |] x
        let mutable h = x

        for block in blocks do
            h <- block.forward (h, mask)

        norm.forward h, h

    /// Shapes: x [B, L, d] -> [B, L, d]
    override this.forward(x: torch.Tensor, mask: AttentionMask) = fst (this.ForwardWithPreNorm(x, mask))
