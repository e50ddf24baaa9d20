namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
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
        /// A geometric attention sub-layer (`geom_attn`), applied after the plain one.
        Geometric: GeometricAttentionConfig option
        FeedForward: FeedForwardKind
        ExpansionRatio: float
        /// Every branch is divided by this before it is added to the residual stream (ESM: sqrt(n_layers / 36)
        /// in the ESM3 trunk, 1 elsewhere).
        ResidualScale: float
    }

/// Checks of `TransformerBlockConfig`.
module TransformerBlockConfig =

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: TransformerBlockConfig) =
        [
            if c.ResidualScale <= 0.0 then
                "ResidualScale must be positive"
            if c.ExpansionRatio <= 0.0 then
                "ExpansionRatio must be positive"
            if c.UsePlainAttention then
                yield!
                    Validation.errors (
                        AttentionConfig.validate
                            {
                                DModel = c.DModel
                                Heads = c.Heads
                                Bias = c.Bias
                                QkLayerNorm = c.QkLayerNorm
                                Rotary = c.Rotary
                            }
                    )
            match c.Geometric with
            | Some g ->
                if g.DModel <> c.DModel then
                    sprintf "Geometric.DModel (%d) differs from DModel (%d)" g.DModel c.DModel

                yield! Validation.errors (GeometricAttentionConfig.validate g)
            | None -> ()
        ]
        |> Validation.ofErrors c

/// Settings of ESM's `TransformerStack`: `Layers` blocks (the first `GeometricLayers` with a geometric attention
/// sub-layer), then a LayerNorm without bias (`norm`).
type TransformerStackConfig =
    {
        DModel: int64
        Heads: int64
        /// Geometric (vector) heads of the geometric sub-layers.
        VHeads: int64
        Layers: int
        /// Blocks 0 … GeometricLayers−1 carry geometric attention (ESM3: 1).
        GeometricLayers: int
        /// Zero the geometric output of unframed residues (ESM3 trunk: true).
        MaskAndZeroFrameless: bool
        GeometricImplementation: GeometricAttentionImpl
        /// Score terms of the geometric sub-layers (ESM: both; the others are ablation switches).
        GeometricTerms: GeometricTerms
        Bias: bool
        QkLayerNorm: bool
        Rotary: RotaryConfig option
        FeedForward: FeedForwardKind
        ExpansionRatio: float
        /// Divide every branch by sqrt(Layers / 36), as the ESM3 trunk does.
        ScaleResidue: bool
        /// A plain attention sub-layer in every block (ESM's structure encoder has none).
        PlainAttention: bool
        /// The final LayerNorm `norm` (ESM's structure encoder replaces it by the identity: no `norm.weight` key).
        FinalNorm: bool
    }

    /// ESM's residual scale: sqrt(Layers / 36) when ScaleResidue, else 1 (ESM3-REFERENCE.md §3.4).
    static member ResidualScaleOf(c: TransformerStackConfig) =
        if c.ScaleResidue then
            Math.Sqrt(float c.Layers / 36.0)
        else
            1.0

    /// The configuration of block `i`.
    static member Block(c: TransformerStackConfig, i: int) : TransformerBlockConfig =
        {
            DModel = c.DModel
            Heads = c.Heads
            Bias = c.Bias
            QkLayerNorm = c.QkLayerNorm
            Rotary = c.Rotary
            UsePlainAttention = c.PlainAttention
            Geometric =
                if i < c.GeometricLayers then
                    Some
                        {
                            DModel = c.DModel
                            VHeads = c.VHeads
                            Bias = c.Bias
                            MaskAndZeroFrameless = c.MaskAndZeroFrameless
                            Implementation = c.GeometricImplementation
                            Terms = c.GeometricTerms
                        }
                else
                    None
            FeedForward = c.FeedForward
            ExpansionRatio = c.ExpansionRatio
            ResidualScale = TransformerStackConfig.ResidualScaleOf c
        }

/// Presets of `TransformerStackConfig`.
module TransformerStackConfig =

    /// ESM3-open's trunk (`esm3_sm_open_v1`): d 1536, 24 heads, 256 vector heads, 48 layers, geometric attention in
    /// block 0, residual scale sqrt(48/36).
    let esm3 =
        {
            DModel = 1536L
            Heads = 24L
            VHeads = 256L
            Layers = 48
            GeometricLayers = 1
            MaskAndZeroFrameless = true
            GeometricImplementation = GeometricAttentionImpl.Reference
            GeometricTerms = GeometricTerms.Both
            Bias = false
            QkLayerNorm = true
            Rotary = Some RotaryConfig.esm3
            FeedForward = FeedForwardKind.SwiGlu
            ExpansionRatio = 8.0 / 3.0
            ScaleResidue = true
            PlainAttention = true
            FinalNorm = true
        }

/// The frames a geometric sub-layer reads (ESM's `affine`, `affine_mask`, `sequence_id`, `chain_id`).
type FrameContext =
    {
        /// Residue frames [B, L], in the features' dtype.
        Frames: Frame
        /// [B, L] bool: true where the residue has a real frame.
        Framed: torch.Tensor
        /// [B, L] int64 packed-sequence ids, or None (all one sequence).
        SequenceId: torch.Tensor option
        /// [B, L] int64 chain ids, or None (all one chain).
        ChainId: torch.Tensor option
    }

/// What a block's attention sub-layers see besides the features.
type BlockContext =
    {
        /// The plain attention's mask.
        Mask: AttentionMask
        /// Frames for the geometric sub-layer (required when the block has one).
        Geometry: FrameContext option
    }

    /// Plain attention only.
    static member Plain(mask: AttentionMask) = { Mask = mask; Geometry = None }

/// ESM's pre-LayerNorm transformer block (each sub-layer normalises its own input):
/// x ← x + attn(x)/s; x ← x + geom_attn(x, frames)/s; x ← x + ffn(x)/s.
/// Keys: `attn.*` (plain attention on), `geom_attn.*` (geometric on), `ffn.*`.
type TransformerBlock(config: TransformerBlockConfig) as this =
    inherit torch.nn.Module<torch.Tensor, BlockContext, torch.Tensor>("TransformerBlock")

    do
        Validation.check "transformer block" (TransformerBlockConfig.validate config)
        |> ignore

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

    let geom_attn: torch.nn.Module<GeometricAttentionInput, torch.Tensor> =
        match config.Geometric with
        | Some g -> new GeometricAttention(g)
        | None -> null

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

    /// Each sub-layer's own rules (`MultiHeadAttention`, `GeometricAttention`, `FeedForward.initialise`).
    interface IInitialise with
        member _.Initialise generator =
            if not (isNull attn) then
                Init.initialise generator (box attn :?> IInitialise)

            if not (isNull geom_attn) then
                Init.initialise generator (box geom_attn :?> IInitialise)

            FeedForward.initialise generator ffn

    /// The geometric sub-layer's input.
    member private _.GeometricInput(x: torch.Tensor, context: BlockContext) =
        match context.Geometry with
        | Some g ->
            {
                S = x
                Frames = g.Frames
                Framed = g.Framed
                SequenceId = g.SequenceId
                ChainId = g.ChainId
            }
        | None ->
            raise (
                ArgumentException("this block has geometric attention: its context needs Geometry (frames)", "context")
            )

    /// The plain attention sub-layer added to the stream (x itself without one).
    member private _.AttendPlain(x: torch.Tensor, context: BlockContext) =
        if isNull attn then
            x
        else
            x + attn.forward (x, context.Mask) / config.ResidualScale

    /// The attention sub-layers (plain, then geometric) added to the stream.
    member private this.Attend(x: torch.Tensor, context: BlockContext) =
        let x = this.AttendPlain(x, context)

        if isNull geom_attn then
            x
        else
            x + geom_attn.forward (this.GeometricInput(x, context)) / config.ResidualScale

    /// Shapes: x [B, L, d], frames [B, L] (when geometric) -> [B, L, d]
    override this.forward(x: torch.Tensor, context: BlockContext) =
        let x = this.Attend(x, context)
        x + ffn.forward x / config.ResidualScale

    /// The block's output at one sequence position only: every position is a key, the plain attention runs on the
    /// whole sequence, the geometric attention (the last sub-layer before the feed-forward) computes that query's
    /// scores alone, and the feed-forward runs on that position. The same values as `forward(x).select(1,
    /// position)` without the work of the other queries: the last block of a stack read at one position (the
    /// structure encoder's query slot).
    /// Shapes: x [B, L, d], frames [B, L] (when geometric) -> [B, d]
    member this.ForwardAt(x: torch.Tensor, context: BlockContext, position: int64) =
        let x =
            if isNull geom_attn then
                this.Attend(x, context).select(1L, position)
            else
                // The geometric sub-layer comes last: only its query at `position` is needed.
                let x = this.AttendPlain(x, context)

                x.select (1L, position)
                + (geom_attn :?> GeometricAttention).ForwardAt(this.GeometricInput(x, context), position)
                  / config.ResidualScale

        x + ffn.forward x / config.ResidualScale

/// ESM's `TransformerStack`: blocks, then `norm` (LayerNorm without bias).
/// Keys: `blocks.{i}.attn.*`, `blocks.{i}.geom_attn.*` (i < GeometricLayers), `blocks.{i}.ffn.*`, `norm.weight`.
type TransformerStack(config: TransformerStackConfig) as this =
    inherit torch.nn.Module<torch.Tensor, BlockContext, torch.Tensor>("TransformerStack")

    let blocks =
        torch.nn.ModuleList<TransformerBlock>(
            [|
                for i in 0 .. config.Layers - 1 -> new TransformerBlock(TransformerStackConfig.Block(config, i))
            |]
        )

    let norm: torch.nn.Module<torch.Tensor, torch.Tensor> =
        if config.FinalNorm then
            torch.nn.LayerNorm([| config.DModel |], 1e-5, bias = false)
        else
            torch.nn.Identity()

    do this.RegisterComponents()

    /// One block. Without autograd nothing later needs a block's intermediates: they are freed as the block ends,
    /// so an inference pass holds one block's temporaries at a time, not every block's until the caller's dispose
    /// scope ends (ESM3-open at L 512: 11.2 GiB of activations before, see README "Loading ESM3-open").
    let run (block: TransformerBlock) (h: torch.Tensor) (context: BlockContext) =
        if torch.is_grad_enabled () then
            block.forward (h, context)
        else
            use scope = torch.NewDisposeScope()
            scope.MoveToOuter(block.forward (h, context))

    member _.Config = config

    /// Every block's own rules, then the final LayerNorm (weight 1).
    interface IInitialise with
        member _.Initialise generator =
            for block in blocks do
                Init.initialise generator block

            Init.layerNormOrIdentity norm

    /// The normalised output and the stream before the final norm.
    /// Shapes: x [B, L, d] -> [B, L, d], [B, L, d]
    member _.ForwardWithPreNorm(x: torch.Tensor, context: BlockContext) =
        Shape.expect "x" [| -1L; -1L; config.DModel |] x
        let mutable h = x

        for block in blocks do
            h <- run block h context

        norm.forward h, h

    /// Shapes: x [B, L, d] -> [B, L, d]
    override this.forward(x: torch.Tensor, context: BlockContext) =
        fst (this.ForwardWithPreNorm(x, context))

    /// The normalised output at one sequence position only: the same values as `forward(x).select(1, position)`,
    /// with the last block's feed-forward run on that position alone (`TransformerBlock.ForwardAt`).
    /// Shapes: x [B, L, d] -> [B, d]
    member _.ForwardAt(x: torch.Tensor, context: BlockContext, position: int64) =
        Shape.expect "x" [| -1L; -1L; config.DModel |] x

        if position < 0L || position >= x.shape.[1] then
            raise (
                ArgumentOutOfRangeException(
                    "position",
                    sprintf "position %d is outside the sequence (length %d)" position x.shape.[1]
                )
            )

        if blocks.Count = 0 then
            norm.forward (x.select (1L, position))
        else
            let mutable h = x

            for i in 0 .. blocks.Count - 2 do
                h <- run blocks.[i] h context

            norm.forward (blocks.[blocks.Count - 1].ForwardAt(h, context, position))
