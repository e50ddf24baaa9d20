namespace Esm3Structure.Nn

open System
open System.Diagnostics
open System.Runtime.InteropServices
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Geometry

/// ESM3's geometric attention (`GeometricReasoningOriginalImpl`, evolutionaryscale/esm
/// `esm/layers/geom_attention.py`; ESM3-REFERENCE.md §4) as pure functions of the weights and the inputs:
/// ```
/// n = LN(s); p = n Wᵀ (+b)                                       (LayerNorm eps 1e-5)
/// q_rot, k_rot, v = first 9V channels as 3V vectors (channel = 3·vec + xyz), rotated by R_i
/// q_dist, k_dist  = last 6V channels as 2V vectors, moved by the whole frame (R_i x + t_i)
/// A[h,i,j] = softplus(ρ_h)·(Qr_i·Kr_j)/√3 − softplus(δ_h)·‖Qd_i − Kd_j‖/√3 + bias[i,j]
/// bias = 1 (same sequence id) / 0, then finfo.min where key j is unframed or chain_i ≠ chain_j
/// o_i = R_iᵀ Σ_j softmax_j(A)[h,i,j] (R_j v_j); flatten (channel = 3h + xyz); zero unframed rows (trunk); out_proj
/// ```
/// Everything runs in the dtype of `S` (ESM forces float32 frames; we do not).
module GeometricAttention =

    let private sqrt3 = Math.Sqrt 3.0

    let private checkInput
        (c: GeometricAttentionConfig)
        (w: GeometricAttentionWeights)
        (input: GeometricAttentionInput)
        =
        let s = input.S
        Shape.expect "s" [| -1L; -1L; c.DModel |] s

        if not (s.is_floating_point ()) then
            raise (ArgumentException(sprintf "s: expected a float tensor, got %O" s.dtype, "s"))

        let b, l = s.shape.[0], s.shape.[1]
        Shape.expect "frames.R" [| b; l; 3L; 3L |] input.Frames.R
        Shape.expect "frames.T" [| b; l; 3L |] input.Frames.T
        Shape.expectSameKind "s" s "frames.R" input.Frames.R
        Shape.expectSameKind "s" s "frames.T" input.Frames.T
        Shape.expect "framed" [| b; l |] input.Framed

        if input.Framed.dtype <> torch.ScalarType.Bool then
            raise (ArgumentException(sprintf "framed: expected a bool tensor, got %O" input.Framed.dtype, "framed"))

        input.SequenceId |> Option.iter (Shape.expect "sequenceId" [| b; l |])
        input.ChainId |> Option.iter (Shape.expect "chainId" [| b; l |])
        Shape.expect "proj.weight" [| GeometricAttentionConfig.projWidth c; c.DModel |] w.ProjWeight
        Shape.expect "out_proj.weight" [| c.DModel; GeometricAttentionConfig.valueWidth c |] w.OutWeight
        Shape.expect "distance_scale_per_head" [| c.VHeads |] w.DistanceScale
        Shape.expect "rotation_scale_per_head" [| c.VHeads |] w.RotationScale
        Shape.expectSameKind "s" s "proj.weight" w.ProjWeight

    let private orNull (t: torch.Tensor option) = Option.toObj t

    /// The additive attention bias of ESM's construction: 1.0 where the sequence ids are equal, else 0.0; then
    /// overwritten with finfo(dtype).min where the key is unframed and where the chain ids differ.
    /// Shapes: framed [B, L] bool, sequenceId [B, L] | None, chainId [B, L] | None -> [B, 1, L, L] in `dtype`
    let attentionBias
        (dtype: torch.ScalarType)
        (framed: torch.Tensor)
        (sequenceId: torch.Tensor option)
        (chainId: torch.Tensor option)
        =
        let lowest = torch.finfo(dtype).min

        let sameSequence_BLL =
            match sequenceId with
            | Some ids -> ids.unsqueeze(-1L).eq(ids.unsqueeze (-2L))
            | None ->
                torch.ones (
                    [| framed.shape.[0]; framed.shape.[1]; framed.shape.[1] |],
                    dtype = torch.ScalarType.Bool,
                    device = framed.device
                )

        let bias_BLL = sameSequence_BLL.to_type dtype

        let bias_BLL =
            bias_BLL.masked_fill (framed.logical_not().unsqueeze(-2L), lowest.ToScalar())

        let bias_BLL =
            match chainId with
            | Some ids -> bias_BLL.masked_fill (ids.unsqueeze(-1L).ne(ids.unsqueeze (-2L)), lowest.ToScalar())
            | None -> bias_BLL // one chain per row: nothing crosses chains

        bias_BLL.unsqueeze 1L

    /// The per-residue vectors of the projection, each placed by its residue's frame.
    type private Vectors =
        {
            QRot: torch.Tensor // [B, V, L, 3], rotated
            KRot: torch.Tensor // [B, V, L, 3], rotated
            Value: torch.Tensor // [B, V, L, 3], rotated
            QDist: torch.Tensor // [B, V, L, 3], rotated + translated
            KDist: torch.Tensor
        } // [B, V, L, 3], rotated + translated

    let private vectors (c: GeometricAttentionConfig) (w: GeometricAttentionWeights) (s: torch.Tensor) (frames: Frame) =
        let v = c.VHeads

        let n_BLC =
            torch.nn.functional.layer_norm (s, [| c.DModel |], w.NormWeight, orNull w.NormBias, 1e-5)

        let p_BLP = torch.nn.functional.linear (n_BLC, w.ProjWeight, orNull w.ProjBias) // [B, L, 15V]
        // The 15V channels are 5V vectors in order (q_rot, k_rot, v, then q_dist, k_dist; channel = 3·vec + xyz):
        // all rotated by one [5V, 3] × [3, 3] product per residue (not one 3 × 3 product per vector).
        let all = Rotation.applyEach frames.R (Shape.unflattenLast [| 5L * v; 3L |] p_BLP) // [B, L, 5V, 3]
        let rotated = all.narrow (-2L, 0L, 3L * v) // [B, L, 3V, 3]
        let placed = all.narrow (-2L, 3L * v, 2L * v) + frames.T.unsqueeze -2L // [B, L, 2V, 3]

        // Contiguous, so the batched [L, 3] × [3, L] products below take the fast path.
        let heads (x: torch.Tensor) k =
            x.narrow(-2L, k * v, v).permute(0L, 2L, 1L, 3L).contiguous() // [B, V, L, 3]

        {
            QRot = heads rotated 0L
            KRot = heads rotated 1L
            Value = heads rotated 2L
            QDist = heads placed 0L
            KDist = heads placed 1L
        }

    /// From the attended values [B, V, L, 3]: rotation back into each query's frame, flatten, zeroing, out_proj.
    /// `rotations` [B, L, 3, 3] and `framed` [B, L] are the query residues' (all of them, or the queried ones).
    let private finish
        (c: GeometricAttentionConfig)
        (w: GeometricAttentionWeights)
        (rotations: torch.Tensor)
        (framed: torch.Tensor)
        (o_BVL3: torch.Tensor)
        =
        let o_BLV3 = o_BVL3.permute (0L, 2L, 1L, 3L)
        let local_BLV3 = Rotation.invertApplyEach rotations o_BLV3
        let o_BLX = Shape.flattenLast 2 local_BLV3 // [B, L, 3V], channel = 3h + xyz

        let o_BLX =
            if c.MaskAndZeroFrameless then
                o_BLX.masked_fill (framed.logical_not().unsqueeze -1L, (0.0).ToScalar())
            else
                o_BLX

        torch.nn.functional.linear (o_BLX, w.OutWeight, orNull w.OutBias)

    let private headWeights (scale: torch.Tensor) =
        torch.nn.functional.softplus(scale, 1.0, 20.0).reshape(-1L, 1L, 1L) // [V, 1, 1]

    /// The per-head weights of the rotation and distance terms, [V, 1, 1] each; a term the config switches off gets
    /// weight 0 (multiplied, so its scale parameter stays in the graph with a zero gradient).
    let private termWeights (c: GeometricAttentionConfig) (w: GeometricAttentionWeights) =
        let rotation = headWeights w.RotationScale
        let distance = headWeights w.DistanceScale

        match c.Terms with
        | Both -> rotation, distance
        | RotationOnly -> rotation, distance * 0.0
        | DistanceOnly -> rotation * 0.0, distance

    /// ESM's dense form, step by step as ESM writes it; materialises [B, V, L, L, 3].
    /// Shapes: as `forward`.
    let forwardReference (c: GeometricAttentionConfig) (w: GeometricAttentionWeights) (input: GeometricAttentionInput) =
        checkInput c w input

        let bias_B1LL =
            attentionBias input.S.dtype input.Framed input.SequenceId input.ChainId

        let x = vectors c w input.S input.Frames
        let diff_BVLL3 = x.QDist.unsqueeze (-2L) - x.KDist.unsqueeze (-3L)
        let distance_BVLL = diff_BVLL3.norm (-1, false) / sqrt3
        let rotation_BVLL = x.QRot.matmul (x.KRot.transpose (-1L, -2L)) / sqrt3

        let rotationWeight_V11, distanceWeight_V11 = termWeights c w
        let scores = rotation_BVLL * rotationWeight_V11 - distance_BVLL * distanceWeight_V11

        let attn_BVLL = (scores + bias_B1LL).softmax(-1L)
        finish c w input.Frames.R input.Framed (attn_BVLL.matmul x.Value)

    /// Per residue, the centroid of the framed residues of its own chain (zero when the chain has none).
    /// Only same-chain distances are ever used (other pairs are masked), so subtracting it changes nothing
    /// mathematically, and it never reads another chain's or an unframed residue's frame.
    /// Shapes: t [B, L, 3], framed [B, L], chainId [B, L] | None -> [B, L, 3]
    let chainCentroids (t: torch.Tensor) (framed: torch.Tensor) (chainId: torch.Tensor option) =
        let framed_BL = framed.to_type t.dtype

        match chainId with
        | None ->
            let count = framed_BL.sum(-1L, true).clamp_min(1.0.ToScalar()) // [B, 1]
            let centre = (t * framed_BL.unsqueeze -1L).sum(-2L) / count // [B, 3]
            centre.unsqueeze(-2L).expand_as t
        | Some ids ->
            let same_BLL = ids.unsqueeze(-1L).eq(ids.unsqueeze (-2L)).to_type t.dtype
            let weights_BLL = same_BLL * framed_BL.unsqueeze -2L
            let count = weights_BLL.sum(-1L, true).clamp_min(1.0.ToScalar()) // [B, L, 1]
            weights_BLL.matmul t / count

    /// Whether autograd records this forward: gradients are enabled and the input, its frames or a weight requires
    /// them. The memory-light form then takes its autograd path (out-of-place, torch.cdist distances) instead of the
    /// in-place inference path.
    let tracksGradient (w: GeometricAttentionWeights) (input: GeometricAttentionInput) =
        torch.is_grad_enabled ()
        && ([
                input.S
                input.Frames.R
                input.Frames.T
                w.ProjWeight
                w.RotationScale
                w.DistanceScale
            ]
            |> List.exists _.requires_grad)

    /// The memory-light form for the queries at `queries` (start, count) of the L positions; every position is a
    /// key. Shapes: as `forward` -> [B, count, d]
    let private attendMemoryEfficient
        (c: GeometricAttentionConfig)
        (w: GeometricAttentionWeights)
        (input: GeometricAttentionInput)
        (queryStart: int64, queryCount: int64)
        =
        let queries (t: torch.Tensor) (dim: int64) =
            if queryStart = 0L && queryCount = t.shape.[int dim] then
                t
            else
                t.narrow (dim, queryStart, queryCount)

        let bias_B1LL =
            queries (attentionBias input.S.dtype input.Framed input.SequenceId input.ChainId) 2L

        let centre_BL3 = chainCentroids input.Frames.T input.Framed input.ChainId

        let frames =
            { input.Frames with
                T = input.Frames.T - centre_BL3
            }

        let x = vectors c w input.S frames
        let qDist = queries x.QDist 2L
        // Per-head weights folded into the small [B, V, L, 3] operands: wr/√3 into the queries.
        let rotationWeight_V11, distanceWeight_V11 = termWeights c w
        let qRot = queries x.QRot 2L * (rotationWeight_V11 / sqrt3)
        let distanceWeight_V11 = distanceWeight_V11 / sqrt3
        // The inference path clamps squared distances at the smallest normal number before the square root:
        // rounding can make a true 0 slightly negative.
        let tiny = torch.finfo(input.S.dtype).tiny.ToScalar()

        let needsGrad = tracksGradient w input

        let o_BVL3 =
            if needsGrad then
                // Out-of-place, so autograd keeps what the backward needs; the distances (torch.cdist's values with a
                // multi-threaded backward, `PairDistance`) keep only their output and inputs for the backward, where
                // the expanded form would also keep the squared distances: one [B, V, L, L] tensor less per layer.
                use rotation_BVLL = qRot.matmul (x.KRot.transpose (-1L, -2L))
                use distance_BVLL = PairDistance.euclidean qDist x.KDist

                use scores_BVLL =
                    torch.addcmul (rotation_BVLL, distance_BVLL, distanceWeight_V11, (-1.0).ToScalar())

                use biased_BVLL = scores_BVLL + bias_B1LL
                use attn_BVLL = biased_BVLL.softmax (-1L)
                attn_BVLL.matmul x.Value
            else
                // Inference: a few heads at a time with in-place updates, so every [B, h, L, L] block stays small
                // (≤ 4M elements) and is reused instead of allocating eight full [B, V, L, L] tensors.
                // ‖a − b‖² = [−2a, ‖a‖², 1] · [b, 1, ‖b‖²]: one matmul over an augmented width of 5.
                let qSq = (qDist * qDist).sum(-1L, true)
                let kSq = (x.KDist * x.KDist).sum(-1L, true)
                let qAug = torch.cat ([| qDist * -2.0; qSq; torch.ones_like qSq |], -1L) // [B, V, Lq, 5]

                let kAugT =
                    torch.cat([| x.KDist; torch.ones_like kSq; kSq |], -1L).transpose(-1L, -2L) // [B, V, 5, L]

                let b, v, l = qRot.shape.[0], qRot.shape.[1], x.KRot.shape.[2]
                let chunk = max 1L (min v ((4L <<< 20) / max 1L (b * queryCount * l)))

                let parts =
                    [|
                        for h0 in 0L .. chunk .. v - 1L do
                            let n = min chunk (v - h0)
                            let heads (t: torch.Tensor) = t.narrow (1L, h0, n)
                            use scores = (heads qRot).matmul((heads x.KRot).transpose(-1L, -2L)) // [B, h, L, L]
                            use distance = (heads qAug).matmul(heads kAugT)

                            distance.clamp_min_(tiny).sqrt_().mul_(distanceWeight_V11.narrow (0L, h0, n))
                            |> ignore

                            scores.sub_(distance).add_ bias_B1LL |> ignore
                            use attn = scores.softmax (-1L)
                            yield attn.matmul (heads x.Value)
                    |]

                let o = torch.cat (parts, 1L)

                for part in parts do
                    part.Dispose()

                o

        finish c w (queries input.Frames.R 1L) (queries input.Framed 1L) o_BVL3

    /// The memory-light form: the same function without [B, V, L, L, 3] (see `GeometricAttentionImpl`).
    /// Shapes: as `forward`.
    let forwardMemoryEfficient
        (c: GeometricAttentionConfig)
        (w: GeometricAttentionWeights)
        (input: GeometricAttentionInput)
        =
        checkInput c w input
        attendMemoryEfficient c w input (0L, input.S.shape.[1])

    /// Geometric attention, by the implementation the config names.
    /// Shapes: S [B, L, d], Frames [B, L], Framed [B, L], SequenceId/ChainId [B, L] -> [B, L, d]
    let forward (c: GeometricAttentionConfig) (w: GeometricAttentionWeights) (input: GeometricAttentionInput) =
        match c.Implementation with
        | Reference -> forwardReference c w input
        | MemoryEfficient -> forwardMemoryEfficient c w input

    /// The output at one query position only: `forward(input).select(1, position)`, with every position a key. The
    /// memory-light form computes the scores of that query alone (the structure encoder's last block reads slot 0
    /// only); the reference form computes everything and selects.
    /// Shapes: S [B, L, d], Frames [B, L], Framed [B, L], SequenceId/ChainId [B, L] -> [B, d]
    let forwardAt
        (c: GeometricAttentionConfig)
        (w: GeometricAttentionWeights)
        (input: GeometricAttentionInput)
        (position: int64)
        =
        checkInput c w input

        if position < 0L || position >= input.S.shape.[1] then
            raise (
                ArgumentOutOfRangeException(
                    "position",
                    sprintf "position %d is outside the sequence (length %d)" position input.S.shape.[1]
                )
            )

        match c.Implementation with
        | Reference -> (forwardReference c w input).select(1L, position)
        | MemoryEfficient -> (attendMemoryEfficient c w input (position, 1L)).select(1L, 0L)

/// ESM's `GeometricReasoningOriginalImpl` with its parameters. State-dict keys and shapes are ESM's
/// (ESM3-REFERENCE.md §4.4), in PyTorch's order (own parameters first, then submodules):
/// `distance_scale_per_head` [V], `rotation_scale_per_head` [V], `s_norm.weight` [d] (+ `s_norm.bias`),
/// `proj.weight` [15V, d] (+ `proj.bias` [15V]), `out_proj.weight` [d, 3V] (+ `out_proj.bias` [d]).
/// Both scales start at 0 (softplus → ln 2), as in ESM; the linear layers use PyTorch's default init.
type GeometricAttention(config: GeometricAttentionConfig) as this =
    inherit torch.nn.Module<GeometricAttentionInput, torch.Tensor>("GeometricAttention")

    do
        match GeometricAttentionConfig.validate config with
        | Ok _ -> ()
        | Error errors ->
            raise (ArgumentException("geometric attention config: " + String.Join("; ", errors), "config"))

    let distance_scale_per_head = torch.nn.Parameter(torch.zeros config.VHeads)
    let rotation_scale_per_head = torch.nn.Parameter(torch.zeros config.VHeads)
    let s_norm = torch.nn.LayerNorm([| config.DModel |], 1e-5, bias = config.Bias)

    let proj =
        torch.nn.Linear(config.DModel, GeometricAttentionConfig.projWidth config, hasBias = config.Bias)

    let out_proj =
        torch.nn.Linear(GeometricAttentionConfig.valueWidth config, config.DModel, hasBias = config.Bias)

    do this.RegisterComponents()

    /// The configuration this layer was built with.
    member _.Config = config

    /// ESM's: both per-head scales 0 (softplus → ln 2), `s_norm` weight 1 (bias 0), `proj` and `out_proj` PyTorch's
    /// linear default (uniform in ±1/sqrt(fan_in), biases 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.zeros distance_scale_per_head
            Init.zeros rotation_scale_per_head
            Init.layerNorm s_norm
            Init.linear generator proj
            Init.linear generator out_proj

    /// The current parameters (the live tensors, not copies).
    member _.Weights: GeometricAttentionWeights =
        {
            NormWeight = s_norm.weight
            NormBias = Option.ofObj s_norm.bias
            ProjWeight = proj.weight
            ProjBias = Option.ofObj proj.bias
            OutWeight = out_proj.weight
            OutBias = Option.ofObj out_proj.bias
            DistanceScale = distance_scale_per_head
            RotationScale = rotation_scale_per_head
        }

    /// Shapes: S [B, L, d], Frames [B, L], Framed [B, L], ids [B, L] -> [B, L, d]
    override this.forward(input: GeometricAttentionInput) =
        GeometricAttention.forward config this.Weights input

    /// The output at one query position (`GeometricAttention.forwardAt`).
    /// Shapes: S [B, L, d], Frames [B, L], Framed [B, L], ids [B, L] -> [B, d]
    member this.ForwardAt(input: GeometricAttentionInput, position: int64) =
        GeometricAttention.forwardAt config this.Weights input position

    /// ESM's `forward(s, affine, affine_mask, sequence_id, chain_id)`; null ids take ESM's defaults
    /// (sequence ids all 0, chain ids all 1). Shapes: s [B, L, d], frames [B, L], framed [B, L] bool,
    /// sequenceId [B, L] int64 | null, chainId [B, L] int64 | null -> [B, L, d]
    member this.Forward
        (
            s: torch.Tensor,
            frames: Frame,
            framed: torch.Tensor,
            [<Optional; DefaultParameterValue(null: torch.Tensor)>] sequenceId: torch.Tensor,
            [<Optional; DefaultParameterValue(null: torch.Tensor)>] chainId: torch.Tensor
        ) =
        this.forward (GeometricAttentionInput.Create(s, frames, framed, sequenceId, chainId))
