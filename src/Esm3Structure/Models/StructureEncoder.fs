namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Tensors

/// k-nearest-neighbour graphs over CA atoms, as ESM's `knn_graph` builds them (ESM3-REFERENCE.md §5.2).
module Knn =

    /// ESM's fallback distance base for pairs with an unframed residue.
    [<Literal>]
    let MaxSupportedDistance = 1e6

    /// For every residue the indices of its E = min(k, L) nearest residues, ascending: CA–CA distance between
    /// framed residues; `1e6 + 100·|i − j|` when either is unframed; +∞ across padding or packed sequences. The
    /// query is forced into slot 0 and ties keep index order (a stable sort; ESM's sort is unstable).
    /// Shapes: ca [B, L, 3], framed [B, L], padding [B, L] bool, sequenceId [B, L] | None -> [B, L, E] int64
    let graph
        (k: int)
        (ca: torch.Tensor)
        (framed: torch.Tensor)
        (padding: torch.Tensor)
        (sequenceId: torch.Tensor option)
        =
        Shape.expect "ca" [| -1L; -1L; 3L |] ca
        let l = ca.shape.[1]
        let e = min (int64 k) l
        use _ = torch.no_grad ()
        let ca = torch.where (framed.unsqueeze -1L, ca.nan_to_num (), torch.zeros_like ca)
        let distance = (ca.unsqueeze -2L - ca.unsqueeze -3L).norm(-1, false) // [B, L, L]
        let bothFramed = framed.unsqueeze(-1L).logical_and(framed.unsqueeze -2L)
        let index = torch.arange (l, device = ca.device)
        let separation = (index.unsqueeze -1L - index.unsqueeze 0L).abs().to_type(ca.dtype) // [L, L]
        let fallback = (separation * 100.0 + MaxSupportedDistance).expand_as distance
        let mutable d = torch.where (bothFramed, distance, fallback)
        let blocked = padding.unsqueeze(-1L).logical_or(padding.unsqueeze -2L)

        let blocked =
            match sequenceId with
            | Some ids -> blocked.logical_or (ids.unsqueeze(-1L).ne(ids.unsqueeze -2L))
            | None -> blocked

        d <- d.masked_fill (blocked, Double.PositiveInfinity.ToScalar())
        // The query first, whatever its coordinates (ESM relies on its distance 0).
        let diagonal =
            torch.eye(l, dtype = torch.ScalarType.Bool, device = ca.device).expand_as d

        d <- d.masked_fill (diagonal, (-1.0).ToScalar())
        let struct (_, order) = d.sort (-1L, false, true)
        order.narrow(-1L, 0L, e).contiguous()

    /// Gathers per-residue values at neighbour indices. Shapes: x [B, L, *], nbr [B, L, E] -> [B, L, E, *]
    let gather (x: torch.Tensor) (nbr: torch.Tensor) =
        let b, l, e = nbr.shape.[0], nbr.shape.[1], nbr.shape.[2]
        let rest = x.shape.[2..]
        let offsets = (torch.arange (b, device = nbr.device) * l).reshape(b, 1L, 1L)
        let flat = x.reshape (Array.append [| b * l |] rest)
        flat.index_select(0L, (nbr + offsets).flatten()).reshape(Array.append [| b; l; e |] rest)

/// Invariant features of a neighbour's pose in its query residue's frame, the encoder's `NeighbourGeometry` input.
module NeighbourGeometry =

    /// Radial basis centres of the neighbour distance, Å: 16 centres from 0 to 20 Å (the spacing of
    /// ProteinMPNN's 16 Gaussian RBFs over 2–22 Å, shifted to start at the query itself).
    let RadialCentres = Array.init 16 (fun i -> float i * 20.0 / 15.0)

    /// Translations are divided by this length, Å (AlphaFold2's nm scale).
    [<Literal>]
    let TranslationScale = 10.0

    /// Features per neighbour: translation (3), rotation matrix (9), radial basis (16).
    [<Literal>]
    let Width = 28L

    /// The pose of every slot's frame in its row's slot-0 (query) frame: translation / 10 Å, the 9 rotation
    /// entries and Gaussian radial bases of the distance (width 20/15 Å); zero where the query or the neighbour
    /// has no frame. Invariant to any rigid motion of the input frames.
    /// Shapes: frames R [N, E, 3, 3], T [N, E, 3]; framed [N, E] bool -> [N, E, 28]
    let features (frames: Frame) (framed: torch.Tensor) =
        let query =
            {
                R = frames.R.narrow (1L, 0L, 1L)
                T = frames.T.narrow (1L, 0L, 1L)
            }

        let relative = Frame.compose (Frame.invert query) frames
        let n, e = frames.T.shape.[0], frames.T.shape.[1]
        let distance = relative.T.norm (-1, true) // [N, E, 1]

        let centres =
            torch.tensor(RadialCentres, dtype = frames.T.dtype, device = frames.T.device).reshape(1L, 1L, -1L)

        let width = 20.0 / 15.0
        let radial = (-((distance - centres) / width).square()).exp()

        let both =
            framed.logical_and(framed.narrow (1L, 0L, 1L)).unsqueeze(-1L).to_type frames.T.dtype

        torch.cat ([| relative.T / TranslationScale; relative.R.reshape (n, e, 9L); radial |], -1L)
        * both

    /// Width of `steps`: the poses of residues i − 1 and i + 1 (translation 3 + rotation 9 each).
    [<Literal>]
    let StepWidth = 24L

    /// Each residue's sequence-neighbour steps: the poses of residues i − 1 and i + 1 in residue i's frame
    /// (translation / 10 Å, rotation entries), each zero where that neighbour is missing, unframed, padding or not
    /// at residue index i ± 1 (a chain break). Invariant to any rigid motion.
    /// Shapes: frames [B, L], usable [B, L] bool, residueIndex [B, L] int64 -> [B, L, 24]
    let steps (frames: Frame) (usable: torch.Tensor) (residueIndex: torch.Tensor) =
        let b, l = frames.T.shape.[0], frames.T.shape.[1]
        let inverse = Frame.invert frames

        let shifted (offset: int64) =
            // Row i holds row i + offset; rows shifted in from outside are marked unusable.
            let take (x: torch.Tensor) (dim: int64) =
                let n = l - abs offset

                let moved =
                    if offset > 0L then
                        x.narrow (dim, offset, n)
                    else
                        x.narrow (dim, 0L, n)

                let fillShape =
                    x.shape |> Array.mapi (fun i s -> if int64 i = dim then abs offset else s)

                let fill = torch.zeros (fillShape, dtype = x.dtype, device = x.device)

                if offset > 0L then
                    torch.cat ([| moved; fill |], dim)
                else
                    torch.cat ([| fill; moved |], dim)

            let pose =
                Frame.compose
                    inverse
                    {
                        R = take frames.R 1L
                        T = take frames.T 1L
                    }

            let present = take usable 1L
            let adjacent = (take residueIndex 1L - residueIndex).eq(offset.ToScalar())

            let ok =
                present.logical_and(adjacent).logical_and(usable).unsqueeze(-1L).to_type frames.T.dtype

            torch.cat ([| pose.T / TranslationScale; pose.R.reshape (b, l, 9L) |], -1L) * ok

        if l < 2L then
            torch.zeros ([| b; l; StepWidth |], dtype = frames.T.dtype, device = frames.T.device)
        else
            torch.cat ([| shifted -1L; shifted 1L |], -1L)

/// ESM's `RelativePositionEmbedding`: offsets key − query clamped to ±bins, shifted by bins + 1 (row 0 unused).
/// Key: `embedding.weight` [2·bins + 2, d], initialised N(0, 0.02).
type RelativePositionEmbedding(bins: int64, dModel: int64) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor, torch.Tensor>("RelativePositionEmbedding")

    let embedding = torch.nn.Embedding(2L * bins + 2L, dModel)

    do
        use _ = torch.no_grad ()
        torch.nn.init.normal_ (embedding.weight, 0.0, 0.02) |> ignore
        this.RegisterComponents()

    /// N(0, 1), PyTorch's embedding default and the rule every initialised encoder has trained from (it replaces the
    /// constructor's N(0, 0.02)).
    interface IInitialise with
        member _.Initialise generator = Init.embedding generator embedding

    /// Shapes: query [N] int64, keys [N, E] int64 -> [N, E, d]
    override _.forward(query: torch.Tensor, keys: torch.Tensor) =
        let offset =
            (keys - query.unsqueeze 1L).clamp((-bins).ToScalar(), bins.ToScalar())
            + (bins + 1L)

        embedding.forward offset

/// The encoder's outputs for a batch of chains.
type StructureEncoding =
    {
        /// Pre-quantization vectors. Shapes: [B, L, DOut]
        Z: torch.Tensor
        /// Straight-through quantized vectors. Shapes: [B, L, DOut]
        Quantized: torch.Tensor
        /// Structure tokens 0 … K−1. Shapes: [B, L] int64
        Tokens: torch.Tensor
        /// The quantizer's loss (β·commitment for EMA codebooks), over real residues.
        QuantizerLoss: torch.Tensor
        /// Residues with a backbone frame. Shapes: [B, L] bool
        Framed: torch.Tensor
    }

/// ESM's `StructureTokenEncoder` (ESM3-REFERENCE.md §5): backbone frames → 16-NN neighbourhoods batched as
/// B·L sequences of E residues → relative-position embedding → geometric encoder blocks → the query residue's
/// vector (zero for unframed residues) → `pre_vq_proj` → codebook.
/// Keys (no prefix, in ESM's order): `transformer.blocks.{i}.geom_attn.*`, `transformer.blocks.{i}.ffn.*`,
/// `pre_vq_proj.{weight,bias}`, `codebook.*`, `relative_positional_embedding.embedding.weight`.
type StructureEncoder(config: StructureEncoderConfig, generator: torch.Generator) as this =
    inherit torch.nn.Module<torch.Tensor, StructureEncoding>("StructureTokenEncoder")

    do
        Validation.check "structure encoder" (StructureEncoderConfig.validate config)
        |> ignore

    let transformer = new TransformerStack(StructureEncoderConfig.stack config)
    let pre_vq_proj = torch.nn.Linear(config.DModel, config.DOut)
    let codebook: VectorQuantizer = Quantizer.create config.Quantizer generator

    let relative_positional_embedding =
        new RelativePositionEmbedding(config.PositionBins, config.DModel)

    let neighbourGeometry =
        if config.NeighbourGeometry then
            Some(
                torch.nn.Linear(NeighbourGeometry.Width, config.DModel),
                torch.nn.Linear(NeighbourGeometry.StepWidth, config.DModel)
            )
        else
            None

    let principalPosition =
        if config.PrincipalPosition then
            Some(torch.nn.Linear(3L, config.DModel))
        else
            None

    let globalTransformer =
        if config.GlobalLayers > 0 then
            Some(new TransformerStack(StructureEncoderConfig.globalStack config))
        else
            None

    do
        this.RegisterComponents()

        match neighbourGeometry with
        | Some(neighbours, steps) ->
            this.register_module ("neighbour_geometry_proj", neighbours)
            this.register_module ("sequence_step_proj", steps)
        | None -> ()

        principalPosition
        |> Option.iter (fun proj -> this.register_module ("principal_position_proj", proj) |> ignore)

        globalTransformer
        |> Option.iter (fun stack -> this.register_module ("global_transformer", stack) |> ignore)

    member _.Config = config
    member _.Codebook = codebook

    /// In key order: the stack's, `pre_vq_proj` (PyTorch's linear default), the codebook's, the position
    /// embedding's, the neighbour-geometry and principal-position projections (PyTorch's linear default) and the
    /// global stack's own rules.
    interface IInitialise with
        member _.Initialise generator =
            Init.initialise generator transformer
            Init.linear generator pre_vq_proj
            Init.initialise generator codebook
            Init.initialise generator relative_positional_embedding

            neighbourGeometry
            |> Option.iter (fun (neighbours, steps) ->
                Init.linear generator neighbours
                Init.linear generator steps)

            principalPosition |> Option.iter (Init.linear generator)
            globalTransformer |> Option.iter (Init.initialise generator)

    /// Encodes backbones. `residueIndex` defaults to the row index (plain sequence separations); `padding` marks
    /// padded rows (default none); `sequenceId` separates packed chains (default one per row).
    /// Shapes: backbone [B, L, ≥3, 3] (N, CA, C first), residueIndex [B, L] int64 | null, padding [B, L] bool | null,
    /// sequenceId [B, L] int64 | null -> StructureEncoding
    member this.Encode
        (backbone: torch.Tensor, residueIndex: torch.Tensor, padding: torch.Tensor, sequenceId: torch.Tensor)
        =
        this.EncodeTimed(backbone, residueIndex, padding, sequenceId, ignore)

    /// `Encode`, calling `lap "encoder"` when the continuous vectors are ready and `lap "quantizer"` after the
    /// codebook (for per-stage timings).
    member _.EncodeTimed
        (
            backbone: torch.Tensor,
            residueIndex: torch.Tensor,
            padding: torch.Tensor,
            sequenceId: torch.Tensor,
            lap: string -> unit
        ) =
        if backbone.dim () <> 4L || backbone.shape.[2] < 3L || backbone.shape.[3] <> 3L then
            Shape.mismatch "backbone" "[B, L, ≥3 (N, CA, C, …), 3]" backbone

        let b, l = backbone.shape.[0], backbone.shape.[1]

        let dtype =
            if backbone.dtype = torch.float64 then
                torch.float64
            else
                torch.float32

        let coords = backbone.narrow(2L, 0L, 3L).to_type dtype
        let bf = Frame.ofBackbone coords
        let framed = bf.Mask

        let padding =
            if isNull padding then
                torch.zeros ([| b; l |], dtype = torch.ScalarType.Bool, device = coords.device)
            else
                padding

        // Residues with a frame that are not padding: the ones a token is computed for. Shapes: [B, L] bool
        let real = framed.logical_and (padding.logical_not ())
        let sequence = Option.ofObj sequenceId

        let nbr = Knn.graph config.Knn (coords.select (2L, 1L)) framed padding sequence // [B, L, E]
        let e = nbr.shape.[2]

        let rows (x: torch.Tensor) =
            x.reshape (Array.append [| b * l; e |] x.shape.[3..])

        let frames =
            {
                R = rows (Knn.gather bf.Frames.R nbr)
                T = rows (Knn.gather bf.Frames.T nbr)
            }

        let framedN = rows (Knn.gather framed nbr)

        let sequenceN =
            match sequence with
            | Some ids -> rows (Knn.gather ids nbr)
            | None -> torch.zeros ([| b * l; e |], dtype = torch.int64, device = coords.device)

        let chainN =
            torch.zeros ([| b * l; e |], dtype = torch.int64, device = coords.device)

        let positions =
            if isNull residueIndex then
                nbr.reshape (b * l, e)
            else
                rows (Knn.gather residueIndex nbr)

        let z0 =
            relative_positional_embedding.forward (positions.select (1L, 0L), positions) // [B·L, E, d]

        let z0 =
            match neighbourGeometry with
            | Some(neighbours, steps) ->
                let index =
                    if isNull residueIndex then
                        torch.arange(l, device = coords.device).unsqueeze(0L).expand(b, l)
                    else
                        residueIndex

                let own = NeighbourGeometry.steps bf.Frames real index |> steps.forward // [B, L, d]

                let query =
                    torch.zeros ([| b * l; e; config.DModel |], dtype = z0.dtype, device = z0.device)

                query.narrow(1L, 0L, 1L).copy_(own.reshape(b * l, 1L, config.DModel).to_type z0.dtype)
                |> ignore

                z0
                + neighbours.forward (NeighbourGeometry.features (frames |> Frame.toType z0.dtype) framedN)
                + query
            | None -> z0

        let context =
            {
                Mask = AttentionMask.None
                Geometry =
                    Some
                        {
                            Frames = frames |> Frame.toType z0.dtype
                            Framed = framedN
                            SequenceId = Some sequenceN
                            ChainId = Some chainN
                        }
            }

        // Each residue's CA in its own chain's principal-axes frame (one cloud per row and chain id; unframed
        // residues, possibly NaN, and padding left out), projected to the model width. Shapes: [B, L, d]
        let principal =
            principalPosition
            |> Option.map (fun proj ->
                let ca =
                    coords.select(2L, 1L).masked_fill(real.logical_not().unsqueeze -1L, (0.0).ToScalar()) // [B, L, 3]

                let position =
                    match sequence with
                    | None -> PrincipalFrame.coordinates ca real
                    | Some ids ->
                        let chains = ids.max().ToInt64() + 1L

                        let inChain =
                            ids.unsqueeze(1L).eq(torch.arange(chains, device = ids.device).view(1L, -1L, 1L)) // [B, S, L]

                        let weights = inChain.logical_and (real.unsqueeze 1L)

                        (PrincipalFrame.coordinates (ca.unsqueeze(1L).expand(b, chains, l, 3L)) weights
                         * weights.unsqueeze(-1L).to_type ca.dtype)
                            .sum(1L)

                // Rounded to the grid when one is set (`PrincipalGrid`), then in units of 10 Å.
                let position =
                    if config.PrincipalGrid > 0.0 then
                        (position / config.PrincipalGrid).round() * config.PrincipalGrid
                    else
                        position

                proj.forward (position / 10.0))

        // The query residue of each neighbourhood (slot 0): the last block's feed-forward runs on it alone.
        let query = transformer.ForwardAt(z0, context, 0L).reshape(b, l, config.DModel)

        // The position joins after the neighbourhood stack (and its final norm), a linear path to the codes.
        let query =
            match principal with
            | Some own -> query + own.to_type query.dtype
            | None -> query

        let query = query.masked_fill (framed.logical_not().unsqueeze -1L, (0.0).ToScalar())

        let query =
            match globalTransformer with
            | Some stack ->
                // Every real residue of the same chain is a key; unframed and padded rows are neither keys nor kept.
                let allowed =
                    match sequence with
                    | Some ids -> AttentionMask.sameSequence(ids).logical_and(AttentionMask.keyPadding real)
                    | None -> AttentionMask.keyPadding real

                let context =
                    {
                        Mask = AttentionMask.Allowed allowed
                        Geometry =
                            Some
                                {
                                    Frames = bf.Frames |> Frame.toType query.dtype
                                    Framed = real
                                    // ESM's geometric attention turns `sequence_id` into a +1 bias, not a mask;
                                    // chain ids mask, so packed chains go there as well.
                                    SequenceId = sequence
                                    ChainId = sequence
                                }
                    }

                stack.forward(query, context).masked_fill(real.logical_not().unsqueeze -1L, (0.0).ToScalar())
            | None -> query

        let zPre = pre_vq_proj.forward query // [B, L, DOut]
        lap "encoder"
        let q = codebook.Quantize(zPre, real)
        lap "quantizer"

        {
            Z = zPre
            Quantized = q.Quantized
            Tokens = q.Indices
            QuantizerLoss = q.Loss
            Framed = framed
        }

    /// Shapes: backbone [B, L, ≥3, 3] -> StructureEncoding (row-index positions, no padding, one chain per row)
    override this.forward(backbone: torch.Tensor) = this.Encode(backbone, null, null, null)
