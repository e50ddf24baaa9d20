module Esm3Structure.Tests.Nn.GeometricAttentionTests

open System
open System.Collections.Concurrent
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Nn
open Esm3Structure.Tests
open Esm3Structure.Checks

let private cpu = torch.CPU

// Small sizes, all different, so a swapped axis fails loudly: B = 2, d = 26, V = 4 (15V = 60, 3V = 12),
// L from 1 to 24.
let private batch = 2L
let private dModel = 26L
let private vHeads = 4L

/// One random case: the seed of every tensor drawn, the length, and which options are on.
type GaCase =
    {
        Seed: uint64
        Length: int64
        Bias: bool
        ZeroFrameless: bool
        /// Pass random sequence and chain ids (otherwise None: ESM's defaults).
        Ids: bool
        /// Probability that a residue is framed.
        FramedFraction: float
        /// Which score terms are on (ESM: both; the others are ablation switches).
        Terms: GeometricTerms
    }

let private gaCase =
    gen {
        let! seed = Gens.seed
        let! length = Gen.choose (1, 24)
        let! bias = Gen.elements [ true; false ]
        let! zero = Gen.elements [ true; false ]
        let! ids = Gen.frequency [ 3, Gen.constant true; 1, Gen.constant false ]
        let! fraction = Gen.elements [ 1.0; 0.8; 0.5; 0.0 ]

        let! terms =
            Gen.frequency
                [
                    2, Gen.constant Both
                    1, Gen.constant RotationOnly
                    1, Gen.constant DistanceOnly
                ]

        return
            {
                Seed = seed
                Length = int64 length
                Bias = bias
                ZeroFrameless = zero
                Ids = ids
                FramedFraction = fraction
                Terms = terms
            }
    }

let private property name (body: GaCase -> unit) =
    testPropertyWithConfig Props.config name (Prop.forAll (Arb.fromGen gaCase) body)

// The largest error each property saw, printed at exit when ESM3_REPORT_ERRORS is set (for reports).
let private observed = ConcurrentDictionary<string, float>()

do
    if not (String.IsNullOrEmpty(Environment.GetEnvironmentVariable "ESM3_REPORT_ERRORS")) then
        AppDomain.CurrentDomain.ProcessExit.Add(fun _ ->
            for KeyValue(k, v) in observed |> Seq.sortBy _.Key do
                eprintfn "max error  %-70s %s" k (Esm3Structure.NumberFormat.scientific 3 v))

let private note (what: string) (err: float) =
    observed.AddOrUpdate(what, err, fun _ old -> max old err) |> ignore

/// Asserts max |a − b| <= tol · max |reference| and records the relative error under `what`.
let private closeRel (what: string) (tol: float) (reference: torch.Tensor) (other: torch.Tensor) =
    Expect.sequenceEqual other.shape reference.shape (what + ": shapes")
    let scale = reference.abs().max().ToDouble()
    let diff = Tol.maxAbsDiff reference other
    note what (if scale > 0.0 then diff / scale else diff)

    if not (diff <= tol * scale) then
        failtestf "%s: max |difference| %g exceeds %g × scale %g" what diff tol scale

/// Asserts bitwise equality and records the largest difference.
let private identical (what: string) (a: torch.Tensor) (b: torch.Tensor) =
    Expect.sequenceEqual a.shape b.shape (what + ": shapes")
    let diff = Tol.maxAbsDiff a b
    note what diff

    if a.numel () > 0L && not (a.eq(b).all().item<bool>()) then
        failtestf "%s: not bitwise identical (max |difference| %g)" what diff

let private config (c: GaCase) impl =
    {
        DModel = dModel
        VHeads = vHeads
        Bias = c.Bias
        MaskAndZeroFrameless = c.ZeroFrameless
        Implementation = impl
        Terms = c.Terms
    }

/// Random weights of the layer's shapes; both per-head scales random and non-zero, so both terms matter.
let private drawWeights (g: torch.Generator) (cfg: GeometricAttentionConfig) (dtype: torch.ScalarType) =
    let randn (shape: int64[]) =
        torch.randn (shape, dtype = dtype, generator = g)

    let d, p, o =
        cfg.DModel, GeometricAttentionConfig.projWidth cfg, GeometricAttentionConfig.valueWidth cfg

    let optional (shape: int64[]) =
        if cfg.Bias then Some(0.2 * randn shape) else None

    {
        NormWeight = 1.0 + 0.2 * randn [| d |]
        NormBias = optional [| d |]
        ProjWeight = randn [| p; d |] / Math.Sqrt(float d)
        ProjBias = optional [| p |]
        OutWeight = randn [| d; o |] / Math.Sqrt(float o)
        OutBias = optional [| d |]
        DistanceScale = randn [| cfg.VHeads |]
        RotationScale = randn [| cfg.VHeads |]
    }

/// Random inputs: frames spread like a small protein (σ 5 Å) around a per-row offset of up to ~50 Å, random
/// masks, and (if asked) sequence ids in {0, 1} and chain ids in {0, 1, 2}.
let private drawInput (g: torch.Generator) (c: GaCase) (dtype: torch.ScalarType) =
    let l = c.Length
    let s = torch.randn ([| batch; l; dModel |], dtype = dtype, generator = g)
    let frames = Frame.random [| batch; l |] 5.0 dtype cpu g
    let offset = 30.0 * torch.randn ([| batch; 1L; 3L |], dtype = dtype, generator = g)

    let framed =
        torch.rand([| batch; l |], dtype = dtype, generator = g).lt(c.FramedFraction.ToScalar())

    let ids high =
        if c.Ids then
            Some(torch.randint (0L, high, [| batch; l |], dtype = torch.int64, generator = g))
        else
            None

    {
        S = s
        Frames = { frames with T = frames.T + offset }
        Framed = framed
        SequenceId = ids 2L
        ChainId = ids 3L
    }

let private draw (c: GaCase) impl dtype =
    let g = new torch.Generator(c.Seed)
    let cfg = config c impl
    let w = drawWeights g cfg dtype
    cfg, w, drawInput g c dtype, g

let private impls = [ Reference, "Reference"; MemoryEfficient, "MemoryEfficient" ]

/// The layer written out with explicit attention weights W [B, L, L] (rows sum to 1): the values rotated into
/// global space, averaged with W, rotated back by R_iᵀ, flattened, zeroed (trunk), projected. Independent of
/// the library's softmax, bias and rotation helpers.
let private withAttention
    (cfg: GeometricAttentionConfig)
    (w: GeometricAttentionWeights)
    (input: GeometricAttentionInput)
    (attn: torch.Tensor)
    =
    let v = cfg.VHeads

    let n =
        torch.nn.functional.layer_norm (input.S, [| cfg.DModel |], w.NormWeight, Option.toObj w.NormBias, 1e-5)

    let p = torch.nn.functional.linear (n, w.ProjWeight, Option.toObj w.ProjBias)
    let values = p.narrow(-1L, 6L * v, 3L * v).reshape(batch, input.S.shape.[1], v, 3L) // [B, L, V, 3]
    let r = input.Frames.R
    let globalV = torch.einsum ("blxy,blhy->blhx", r, values)
    let mixed = torch.einsum ("bij,bjhx->bihx", attn, globalV)

    let localV =
        torch.einsum("blyx,blhy->blhx", r, mixed).reshape(batch, input.S.shape.[1], 3L * v)

    let localV =
        if cfg.MaskAndZeroFrameless then
            localV * input.Framed.unsqueeze(-1L).to_type(localV.dtype)
        else
            localV

    torch.nn.functional.linear (localV, w.OutWeight, Option.toObj w.OutBias)

/// Which keys each query may attend to: framed keys of the query's chain. Shapes: -> [B, L, L] bool
let private allowedKeys (input: GeometricAttentionInput) =
    let framedKeys =
        input.Framed.unsqueeze(-2L).expand(batch, input.Framed.shape.[1], input.Framed.shape.[1])

    match input.ChainId with
    | Some ids -> framedKeys.logical_and (ids.unsqueeze(-1L).eq(ids.unsqueeze (-2L)))
    | None -> framedKeys

/// A [B, L] mask with singleton dims appended to broadcast against x [B, L, ...].
let private expandMask (mask: torch.Tensor) (x: torch.Tensor) =
    mask.reshape (Array.append mask.shape (Array.create (int (x.dim ()) - 2) 1L))

/// What the rounding bound of one forward call needs to know besides its inputs: how far the input frames may sit
/// from the exact input whose output we compare with (0 when the frames are the input itself; a composed motion's
/// rounding in GA1), per entry of R and of T.
type private InputError = { Rotation: float; Translation: float }

let private exactInput = { Rotation = 0.0; Translation = 0.0 }

/// A first-order bound on |computed − exact| for every entry of `GeometricAttention.forward` [B, L, d], the exact
/// result being the layer's function of the given inputs in real arithmetic, evaluated from the actual tensors'
/// magnitudes (all in float64; u is the unit roundoff of the input's dtype). Step by step, as the layer computes:
/// - LayerNorm over d: the mean carries δμ ≤ (d + 1)·u·max|s| (a d-term sum and the division), the variance
///   (d + 2)·u relative (squares, a d-term sum, the division), both doubled for Welford's running form, so the
///   inverse square root r carries θ = (d + 2)·u + 2u relative; δμ and θ are common to the row, so through proj
///   they move p by exactly r·δμ·|W γ| and θ·|W (γ n̂)|; per entry, PyTorch's s·r − μ·r rounds 2u·r·(|s| + |μ|)
///   (and s − μ, 3u·r·|s − μ|, bounds its other forms), γ and β 2u·|n|;
/// - a linear layer of fan-in k: |fl(x Wᵀ + b) − (x Wᵀ + b)| ≤ (k + 1)·u·(|x| |W|ᵀ + |b|) (Higham, "Accuracy and
///   Stability of Numerical Algorithms", §3.5), plus the input's error through |W|;
/// - a 3 × 3 rotation R x: 3u·|R| |x| and the input's error through |R|, plus the frame's own error e_R·Σ|x|;
///   placed vectors add T (u·(|R x| + |T|) and T's error e_T); the memory-light form first subtracts per-chain
///   centroids, means of ≤ L translations that carry (L + 1)·u·max|T| (and the subtraction ≤ 2u·max|T|);
/// - scores: the rotation term w_r/√3·(q·k) rounds 3u on Σ|q||k| (3 products) plus 4u relative (÷√3, · w_r, the
///   softplus of w_r), plus both vectors' errors through the other's magnitude; the distance term is 1-Lipschitz in
///   each point (its errors' 2-norms add) and rounds 5u·D directly (the reference: subtraction, squares, sum,
///   sqrt); the memory-light form's ‖a‖² + ‖b‖² − 2a·b rounds δ = 8u·(‖a‖ + ‖b‖)² before its square root, which
///   moves D by ≤ min(δ/D, √δ) (the square root is 1/2-Hölder), unless its autograd path runs torch.cdist directly
///   (≤ 25 points); then 3u·D (sqrt, ÷√3, · w_d);
/// - the scores' sum, the bias, the max subtracted in the softmax and exp add u·(|rot| + |dist|) + u·(|A| + 1) +
///   u·|A − max| + 2u; keys the bias masks get weight exactly 0 (and an all-masked row is exactly uniform), so their
///   score errors are set to 0;
/// - softmax-weighted means: with score errors |δA_ij| ≤ Δ_ij, P'_ij/P_ij = exp(δA_ij)/Σ_k P_ik exp(δA_ik), whose
///   denominator lies between exp(−Σ_k P_ik Δ_ik) (Jensen) and M_i = Σ_k P_ik exp(Δ_ik); so |P'_ij − P_ij| ≤
///   P_ij·(exp(Δ_ij + log M_i) − 1), and as Σ_j (P'_ij − P_ij) = 0 the mean moves by ≤
///   Σ_j P_ij·(exp(Δ_ij + log M_i) − 1)·|v_j − ō_i| (not first order); the normalisation ((L + 1)·u) and the
///   L-term product add (2L + 2)·u·Σ_j P_ij |v_j|, the values' errors Σ_j P_ij e_vj;
/// - back into the query's frame (3u, the frame's error), rows zeroed exactly, and out_proj of fan-in 3V.
/// Products of two error terms (second order) are left out; callers double the bound for them.
let private forwardBound
    (cfg: GeometricAttentionConfig)
    (w: GeometricAttentionWeights)
    (input: GeometricAttentionInput)
    (err: InputError)
    =
    let u = Tol.unitRoundoff input.S.dtype
    let f64 (t: torch.Tensor) = t.detach().to_type torch.float64
    let s = f64 input.S
    let d = float cfg.DModel
    let v = cfg.VHeads
    let b, l = s.shape.[0], s.shape.[1]
    let r = f64 input.Frames.R
    let absR = r.abs ()

    let linearAbs (x: torch.Tensor) (weight: torch.Tensor) =
        torch.nn.functional.linear (x, weight.abs ())

    let bias (o: torch.Tensor option) =
        match o with
        | Some t -> (f64 t).abs()
        | None -> torch.zeros (1L, dtype = torch.float64)

    // LayerNorm: the mean's error δμ and the inverse square root's relative error θ are common to a row, so they
    // reach p exactly as r·δμ·|W γ| and θ·|W (γ n̂)|; the rest rounds entry by entry.
    let mu = s.mean ([| -1L |], true)
    let centred = s - mu
    let variance = (centred * centred).mean([| -1L |], true)
    let rInv = 1.0 / (variance + 1e-5).sqrt()
    let gamma = f64 w.NormWeight
    let nHat = centred * rInv

    let beta =
        match w.NormBias with
        | Some t -> f64 t
        | None -> torch.zeros (1L, dtype = torch.float64)

    let n = nHat * gamma + beta
    let dMu = 2.0 * (d + 1.0) * u * s.abs().amax([| -1L |], true) // [B, L, 1]
    let theta = (d + 2.0) * u + 2.0 * u

    let eN =
        gamma.abs ()
        * rInv
        * (3.0 * u * centred.abs () + 2.0 * u * (s.abs () + mu.abs ()))
        + 2.0 * u * n.abs ()

    // proj, fan-in d.
    let wP = f64 w.ProjWeight

    let p =
        torch.nn.functional.linear (
            n,
            wP,
            (match w.ProjBias with
             | Some t -> f64 t
             | None -> null)
        )

    let eP =
        (d + 1.0) * u * (linearAbs n wP + bias w.ProjBias)
        + linearAbs eN wP
        + rInv * dMu * torch.nn.functional.linear(gamma, wP).abs()
        + theta * torch.nn.functional.linear(nHat * gamma, wP).abs()

    let x = p.reshape (b, l, 5L * v, 3L)
    let ex = eP.reshape (b, l, 5L * v, 3L)
    // Every vector rotated by its residue's R: x Rᵀ.
    let rotated = x.matmul (r.transpose (-1L, -2L))

    let eRot =
        3.0 * u * x.abs().matmul(absR.transpose (-1L, -2L))
        + ex.matmul (absR.transpose (-1L, -2L))
        + err.Rotation * x.abs().sum(-1L, true)

    let t = f64 input.Frames.T

    let t, eT =
        match cfg.Implementation with
        | Reference -> t, err.Translation
        | MemoryEfficient ->
            let centred = t - GeometricAttention.chainCentroids t input.Framed input.ChainId
            centred, err.Translation + (float l + 3.0) * u * t.abs().max().ToDouble()

    let placed = rotated.narrow (-2L, 3L * v, 2L * v) + t.unsqueeze -2L

    let ePlaced =
        eRot.narrow (-2L, 3L * v, 2L * v)
        + u * (rotated.narrow(-2L, 3L * v, 2L * v).abs() + t.abs().unsqueeze -2L)
        + eT

    let heads (y: torch.Tensor) k =
        y.narrow(-2L, k * v, v).permute(0L, 2L, 1L, 3L) // [B, V, L, 3]

    let qRot, kRot, value = heads rotated 0L, heads rotated 1L, heads rotated 2L
    let eQRot, eKRot, eValue = heads eRot 0L, heads eRot 1L, heads eRot 2L
    let qDist, kDist = heads placed 0L, heads placed 1L
    let eQDist, eKDist = heads ePlaced 0L, heads ePlaced 1L

    // Scores [B, V, L, L].
    let softplus (t: torch.Tensor) =
        torch.nn.functional.softplus(f64 t, 1.0, 20.0).reshape(-1L, 1L, 1L)

    let switch (term: bool) = if term then 1.0 else 0.0
    let wr = softplus w.RotationScale * switch (cfg.Terms <> DistanceOnly) / sqrt 3.0
    let wd = softplus w.DistanceScale * switch (cfg.Terms <> RotationOnly) / sqrt 3.0
    let tr (y: torch.Tensor) = y.transpose (-1L, -2L)
    let rot = wr * qRot.matmul (tr kRot)

    let eRotScore =
        wr
        * (7.0 * u * qRot.abs().matmul(tr (kRot.abs ()))
           + eQRot.matmul (tr (kRot.abs ()))
           + qRot.abs().matmul(tr eKRot))

    let distance = (qDist.unsqueeze -2L - kDist.unsqueeze -3L).norm(-1, false)
    let e2 (y: torch.Tensor) = y.norm (-1, false) // [B, V, L]
    let pointErrors = e2 eQDist |> fun q -> q.unsqueeze -1L + (e2 eKDist).unsqueeze -2L

    // The memory-light form's autograd path takes torch.cdist, which computes each distance directly unless a
    // side has more than 25 points (PyTorch's `use_mm_for_euclid_dist_if_necessary`).
    let autograd = GeometricAttention.tracksGradient w input

    let rounding =
        match cfg.Implementation with
        | Reference -> 5.0 * u * distance
        | MemoryEfficient when autograd && l <= 25L -> 5.0 * u * distance
        | MemoryEfficient ->
            let sq =
                8.0
                * u
                * (qDist.norm(-1, false).unsqueeze -1L + kDist.norm(-1, false).unsqueeze -2L).square()

            torch.fmin (sq / distance, sq.sqrt ()) + 3.0 * u * distance

    let dist = wd * distance
    let eDistScore = wd * (pointErrors + rounding + 3.0 * u * distance)

    let biasFull =
        GeometricAttention.attentionBias torch.float64 input.Framed input.SequenceId input.ChainId

    let allowed = biasFull.gt ((-1e300).ToScalar()) // [B, 1, L, L]
    let scores = rot - dist + biasFull.clamp_min ((0.0).ToScalar())

    let rowMax =
        torch.where(allowed, scores, torch.full_like (scores, Double.NegativeInfinity.ToScalar())).amax([| -1L |], true)

    let delta =
        eRotScore
        + eDistScore
        + u * (rot.abs () + dist.abs ())
        + u * (scores.abs () + 1.0)
        + u * (scores - rowMax).abs()
        + 2.0 * u

    let delta = torch.where (allowed, delta, torch.zeros_like delta)
    let attn = (rot - dist + biasFull).softmax(-1L)
    let mean = attn.matmul value // [B, V, L, 3]
    let spread = (value.unsqueeze -3L - mean.unsqueeze -2L).abs() // [B, V, L (i), L (j), 3]
    // log M = log Σ_k P_ik exp(Δ_ik) (0 for an all-masked row, whose Δ are 0).
    let logM = (attn * delta.exp ()).sum(-1L, true).log()
    let factor = (delta + logM).exp() - 1.0

    let eMean =
        torch.einsum ("bhij,bhijx->bhix", attn * factor, spread)
        + (2.0 * float l + 2.0) * u * attn.matmul (value.abs ())
        + attn.matmul eValue

    // Back into each query's frame: Rᵀ o, per residue o R. [B, L, V, 3]
    let o = mean.permute (0L, 2L, 1L, 3L)
    let eO = eMean.permute (0L, 2L, 1L, 3L)
    let local = o.matmul r

    let eLocal =
        3.0 * u * o.abs().matmul absR
        + eO.matmul absR
        + err.Rotation * o.abs().sum(-1L, true)

    let keep =
        if cfg.MaskAndZeroFrameless then
            input.Framed.to_type(torch.float64).reshape(b, l, 1L)
        else
            torch.ones (1L, dtype = torch.float64)

    let local = local.reshape (b, l, 3L * v) * keep
    let eLocal = eLocal.reshape (b, l, 3L * v) * keep
    let k = 3.0 * float v

    (k + 1.0) * u * (linearAbs local (f64 w.OutWeight) + bias w.OutBias)
    + linearAbs eLocal (f64 w.OutWeight)

/// The sum of the reference and memory-light forms' bounds on exact inputs: two computations of one function each
/// within its own bound differ by at most their sum.
let private implementationsBound cfg w input =
    forwardBound cfg w input exactInput
    + forwardBound
        { cfg with
            Implementation = MemoryEfficient
        }
        w
        input
        exactInput

/// Asserts |a − b| ≤ bound entrywise (float64 `bound` of their shape) and records the largest fraction of the bound
/// used under `what`.
let private withinBound (what: string) (bound: torch.Tensor) (a: torch.Tensor) (b: torch.Tensor) =
    Expect.sequenceEqual a.shape b.shape (what + ": shapes")
    let diff = (a.to_type torch.float64 - b.to_type torch.float64).abs()

    let fraction =
        if diff.numel () = 0L then
            0.0
        else
            (diff / bound.clamp_min ((Double.Epsilon).ToScalar())).max().ToDouble()

    note what fraction

    if not (diff.le(bound).all().item<bool>()) then
        failtestf
            "%s: |difference| reaches %g × its rounding bound (max |difference| %g)"
            what
            fraction
            (diff.max().ToDouble())

let private properties (dtype: torch.ScalarType) (dname: string) =
    testList
        dname
        [
            for impl, iname in impls do
                let tag what = sprintf "%s %s %s" what dname iname

                property (sprintf "GA1 invariant under a global rigid motion of all frames (%s)" iname) (fun c ->
                    use _ = torch.NewDisposeScope()
                    let cfg, w, input, g = draw c impl dtype
                    let rotation = Frame.random [| batch; 1L |] 1.0 dtype cpu g
                    let direction = torch.randn ([| batch; 1L; 3L |], dtype = dtype, generator = g)
                    let length = 100.0 * torch.rand ([| batch; 1L; 1L |], dtype = dtype, generator = g)

                    let motion =
                        { rotation with
                            T = direction / direction.norm (-1, true) * length
                        }

                    let moved =
                        { input with
                            Frames = Frame.compose motion input.Frames
                        }

                    let reference = GeometricAttention.forward cfg w input
                    // The moved frames are the exact motion Q of the input's (Q the rotation within
                    // GeoTol.quatMatrixEntry of the motion's matrix M) up to M's own error through |R|'s columns and
                    // |T|, plus the products' rounding (3 products and 2 sums on Σ|M||x|, and u·|T'| for + t).
                    let e = GeoTol.quatMatrixEntry dtype
                    let u = Tol.unitRoundoff dtype
                    let absM = motion.R.abs().to_type torch.float64
                    let absR = input.Frames.R.abs().to_type torch.float64
                    let absT = input.Frames.T.abs().to_type torch.float64

                    let movedError =
                        {
                            Rotation =
                                e * absR.sum(-2L).max().ToDouble()
                                + 3.0 * u * absM.matmul(absR).max().ToDouble()
                            Translation =
                                (e + 3.0 * u) * absT.sum(-1L).max().ToDouble()
                                + u * moved.Frames.T.abs().max().ToDouble()
                        }

                    // The exact layer is invariant, so each side's rounding bound adds up; doubled for second order.
                    withinBound
                        (tag "GA1")
                        (2.0
                         * (forwardBound cfg w input exactInput + forwardBound cfg w moved movedError))
                        reference
                        (GeometricAttention.forward cfg w moved))

                property
                    (sprintf "GA9 forwardAt = forward's row at that position, values and gradients (%s)" iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()
                        let cfg, w, input, g = draw c impl dtype
                        let position = int64 (c.Seed % uint64 c.Length)
                        // S requires a gradient, so the memory-light form takes its training path (PairDistance).
                        let s = input.S.detach().requires_grad_ true
                        let input = { input with S = s }
                        let full = (GeometricAttention.forward cfg w input).select(1L, position)
                        let at = GeometricAttention.forwardAt cfg w input position
                        let upstream = torch.randn (full.shape, dtype = dtype, generator = g)

                        let gradient (y: torch.Tensor) =
                            torch.autograd.grad([| (y * upstream).sum() |], [| s |]).[0]

                        match impl with
                        | Reference ->
                            // forwardAt selects the row of the same computation: the same values and graph.
                            identical (tag "GA9 value") full at
                            identical (tag "GA9 gradient") (gradient full) (gradient at)
                        | MemoryEfficient ->
                            // The same operations on a subset of the queries, in products of other shapes: each side
                            // within the forward's rounding bound at that row, doubled for second order.
                            let bound = (forwardBound cfg w input exactInput).select(1L, position)
                            withinBound (tag "GA9 value") (2.0 * 2.0 * bound) full at
                            // The backward runs the forward's products transposed (out_proj 3V, back-rotation 3,
                            // attention L, softmax L, scores 3 + 3, proj 15V, LayerNorm 2d terms) on the forward's
                            // values: its rounding relative to the largest gradient entry is ≤ that count · u plus
                            // the forward values' relative error (the bound above over max |y|); two sides, doubled.
                            let u = Tol.unitRoundoff dtype
                            let v, l, d = float vHeads, float c.Length, float dModel
                            let reductions = 3.0 * v + 3.0 + 2.0 * l + 6.0 + 15.0 * v + 2.0 * d
                            let a, b = gradient full, gradient at
                            let largest = full.abs().max().ToDouble()
                            // A row that is exactly out_proj's bias (or 0) has exactly zero gradients on both sides.
                            let forwardRel =
                                if largest > 0.0 then
                                    bound.max().ToDouble() / largest
                                else
                                    0.0

                            let scale = a.abs().max().ToDouble()
                            let tol = 2.0 * 2.0 * (reductions * u + forwardRel) * scale

                            note
                                (tag "GA9 gradient (fraction of bound)")
                                (if tol > 0.0 then Tol.maxAbsDiff a b / tol else 0.0)

                            Tol.close (tag "GA9 gradient") tol a b)

                property (sprintf "GA2 permuting residues permutes the output (%s)" iname) (fun c ->
                    use _ = torch.NewDisposeScope()
                    let cfg, w, input, g = draw c impl dtype
                    let perm = torch.randperm (c.Length, generator = g)
                    let take (x: torch.Tensor) = x.index_select (1L, perm)

                    let permuted =
                        {
                            S = take input.S
                            Frames =
                                {
                                    R = take input.Frames.R
                                    T = take input.Frames.T
                                }
                            Framed = take input.Framed
                            SequenceId = input.SequenceId |> Option.map take
                            ChainId = input.ChainId |> Option.map take
                        }

                    let expected = take (GeometricAttention.forward cfg w input)
                    // Exact equivariance: each side within its own rounding bound (permuted alike), doubled.
                    let bound = forwardBound cfg w permuted exactInput

                    withinBound
                        (tag "GA2")
                        (2.0 * (take (forwardBound cfg w input exactInput) + bound))
                        expected
                        (GeometricAttention.forward cfg w permuted))

                property
                    (sprintf "GA3 unframed and other-chain residues cannot change a framed residue's output (%s)" iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()
                        let cfg, w, input, g = draw c impl dtype
                        // Kept: framed residues of chain 0 (or of the whole row without chain ids); everything else changes.
                        let kept =
                            match input.ChainId with
                            | Some ids -> input.Framed.logical_and (ids.eq (0L.ToScalar()))
                            | None -> input.Framed

                        let changed = kept.logical_not ()
                        let other = drawInput g c dtype

                        let pick (x: torch.Tensor) (y: torch.Tensor) =
                            torch.where (expandMask changed x, y, x)

                        let modified =
                            { input with
                                S = pick input.S (10.0 * other.S)
                                Frames =
                                    {
                                        R = pick input.Frames.R other.Frames.R
                                        T = pick input.Frames.T (3.0 * other.Frames.T)
                                    }
                            }

                        let rows (x: torch.Tensor) = x.index kept
                        let a = GeometricAttention.forward cfg w input
                        let b = GeometricAttention.forward cfg w modified
                        identical (tag "GA3") (rows a) (rows b))

                property
                    (sprintf "GA4 trunk mode: unframed query rows are exactly out_proj's bias (%s)" iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()
                        let cfg, w, input, _ = draw { c with ZeroFrameless = true } impl dtype
                        let out = GeometricAttention.forward cfg w input
                        let unframed = out.index (input.Framed.logical_not ())

                        let expected =
                            match w.OutBias with
                            | Some b -> b.expand_as unframed
                            | None -> torch.zeros_like unframed

                        identical (tag "GA4") expected unframed)

                property
                    (sprintf "GA5 with every key masked the output is finite: a uniform average (%s)" iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()

                        let cfg, w, input, _ =
                            draw
                                { c with
                                    ZeroFrameless = false
                                    FramedFraction = 0.0
                                }
                                impl
                                dtype

                        let out = GeometricAttention.forward cfg w input
                        Expect.isTrue (out.isfinite().all().item<bool>()) "finite"
                        let l = c.Length

                        let uniform =
                            torch.full ([| batch; l; l |], (1.0 / float l).ToScalar(), dtype = dtype)

                        // Every score is finfo.min exactly, so the layer's weights are 1/L as given here; each side
                        // rounds the same LayerNorm, products and means, within the layer's bound (doubled).
                        withinBound
                            (tag "GA5")
                            (2.0 * 2.0 * forwardBound cfg w input exactInput)
                            (withAttention cfg w input uniform)
                            out)

                property
                    (sprintf
                        "GA7 scales → −∞: attention is the e^(sequence bias)-weighted mean over allowed keys (%s)"
                        iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()
                        let cfg, w, input, _ = draw c impl dtype

                        let w =
                            { w with
                                DistanceScale = torch.full_like (w.DistanceScale, -1000.0)
                                RotationScale = torch.full_like (w.RotationScale, -1000.0)
                            }

                        let out = GeometricAttention.forward cfg w input
                        let l = c.Length
                        // Allowed keys carry weight e^1 (same sequence) or e^0; a row with no allowed key is uniform.
                        let allowed = allowedKeys input

                        let sameSeq =
                            match input.SequenceId with
                            | Some ids -> ids.unsqueeze(-1L).eq(ids.unsqueeze (-2L))
                            | None -> torch.ones ([| batch; l; l |], dtype = torch.ScalarType.Bool)

                        let raw = (1.0 + (Math.E - 1.0) * sameSeq.to_type (dtype)) * allowed.to_type (dtype)
                        let empty = allowed.any(-1L, true).logical_not()
                        let raw = torch.where (empty, torch.ones_like raw, raw)
                        let attn = raw / raw.sum (-1L, true)
                        // softplus(−1000) is exactly 0, so both terms vanish exactly and the scores are the bias;
                        // the explicit weights round (L + 2)·u, within the normalisation term of the layer's bound.
                        withinBound
                            (tag "GA7")
                            (2.0 * 2.0 * forwardBound cfg w input exactInput)
                            (withAttention cfg w input attn)
                            out)

                property
                    (sprintf
                        "GA9 a switched-off term: its scale cannot change the output, which is Both's with that weight → 0 (%s)"
                        iname)
                    (fun c ->
                        use _ = torch.NewDisposeScope()
                        let cfg, w, input, g = draw c impl dtype

                        let terms =
                            if c.Terms = Both then
                                (if c.Seed % 2UL = 0UL then RotationOnly else DistanceOnly)
                            else
                                c.Terms

                        let cfg = { cfg with Terms = terms }
                        let out = GeometricAttention.forward cfg w input
                        let other = torch.randn (w.DistanceScale.shape, dtype = dtype, generator = g)
                        // softplus(−200): exp(−200) underflows to 0 in float32, and in float64 the weight 1.4e−87
                        // times a score term below 1e3 is under half an ulp of the other term (|·| ≫ 1e−70), so the
                        // scores, and everything after them, are the switched-off layer's bit for bit.
                        let off = torch.full_like (w.DistanceScale, -200.0)

                        let changed, vanished =
                            match terms with
                            | RotationOnly -> { w with DistanceScale = other }, { w with DistanceScale = off }
                            | _ -> { w with RotationScale = other }, { w with RotationScale = off }

                        identical (tag "GA9 scale ignored") out (GeometricAttention.forward cfg changed input)

                        identical
                            (tag "GA9 = Both at weight 0")
                            (GeometricAttention.forward { cfg with Terms = Both } vanished input)
                            out)

            property "GA6 both implementations agree (masks, sequence and chain ids)" (fun c ->
                use _ = torch.NewDisposeScope()
                let cfg, w, input, _ = draw c Reference dtype
                let reference = GeometricAttention.forwardReference cfg w input
                let efficient = GeometricAttention.forwardMemoryEfficient cfg w input
                // One function: each form within its own rounding bound (doubled for second order).
                let bound = implementationsBound cfg w input

                withinBound (sprintf "GA6 %s" dname) (2.0 * bound) reference efficient)

            property "GA6 both implementations agree on the autograd path too (weights that require grad)" (fun c ->
                use _ = torch.NewDisposeScope()
                let cfg, w, input, _ = draw c Reference dtype
                let reference = GeometricAttention.forwardReference cfg w input

                let tracked =
                    { w with
                        ProjWeight = w.ProjWeight.detach().requires_grad_ true
                    }

                let efficient = GeometricAttention.forwardMemoryEfficient cfg tracked input
                Expect.isTrue efficient.requires_grad "went through the autograd path"
                // cdist's direct distances round less than the expanded form the memory-light bound assumes.
                let bound = implementationsBound cfg w input

                withinBound (sprintf "GA6 autograd %s" dname) (2.0 * bound) reference (efficient.detach ()))
        ]

/// The worked example: B = 1, L = 2, d = 2, V = 1, identity rotations, no biases, no zeroing.
/// s₁ = (−1, 1), s₂ = (1, −1): LayerNorm gives n₁ = (−c, c), n₂ = (c, −c) with c = 1/sqrt(1 + 1e-5).
/// proj reads only input channel 1 (column 0 is zero), with weight 1 into channels 0 (q_rot x), 3 (k_rot x),
/// 7 (v y), 11 (q_dist z), 14 (k_dist z). So residue 1 has q_rot = k_rot = (c, 0, 0), v = (0, c, 0),
/// q_dist = k_dist = (0, 0, c); residue 2 the negatives. Translations t₁ = 0, t₂ = (3, 0, 0).
/// rot: Qr₁·Kr₁ = c², Qr₁·Kr₂ = −c² (and symmetrically for residue 2).
/// dist: Qd₁ − Kd₁ = 0; Qd₁ − Kd₂ = (0, 0, c) − (3, 0, −c) = (−3, 0, 2c), norm sqrt(9 + 4c²) (same for 2 → 1).
/// With ρ = 0 (wr = ln 2), δ = 1 (wd = ln(1 + e)) and sequence ids (0, 1) (bias +1 on the diagonal only):
/// A_ii − A_ij = Δ = 2·wr·c²/√3 + wd·sqrt(9 + 4c²)/√3 + 1, so P_ii = σ(Δ), P_ij = σ(−Δ), and
/// o₁ = (P_ii − P_ij)·(0, c, 0) = (0, m, 0) with m = c·tanh(Δ/2); o₂ = (0, −m, 0).
/// out_proj = [[0, 1, 0], [0, 2, 0]]: out₁ = (m, 2m), out₂ = (−m, −2m).
/// With only one term on, Δ keeps that term and the bias.
let private handCaseWithTerms terms impl (dtype: torch.ScalarType) (withGrad: bool) =
    let cfg =
        {
            DModel = 2L
            VHeads = 1L
            Bias = false
            MaskAndZeroFrameless = false
            Implementation = impl
            Terms = terms
        }

    let proj = Array2D.zeroCreate 15 2

    for ch in [ 0; 3; 7; 11; 14 ] do
        proj.[ch, 1] <- 1.0

    let t2 (a: float[,]) = torch.tensor (a, dtype = dtype)

    let w =
        {
            NormWeight = torch.ones (2L, dtype = dtype)
            NormBias = None
            ProjWeight = (t2 proj).requires_grad_ withGrad
            ProjBias = None
            OutWeight = t2 (array2D [ [ 0.0; 1.0; 0.0 ]; [ 0.0; 2.0; 0.0 ] ])
            OutBias = None
            DistanceScale = torch.tensor([| 1.0 |], dtype = dtype).requires_grad_ withGrad
            RotationScale = torch.tensor ([| 0.0 |], dtype = dtype)
        }

    let input =
        {
            S = torch.tensor([| -1.0; 1.0; 1.0; -1.0 |], dtype = dtype).reshape(1L, 2L, 2L)
            Frames =
                {
                    R = Rotation.identity [| 1L; 2L |] dtype cpu
                    T = torch.tensor([| 0.0; 0.0; 0.0; 3.0; 0.0; 0.0 |], dtype = dtype).reshape(1L, 2L, 3L)
                }
            Framed = torch.ones ([| 1L; 2L |], dtype = torch.ScalarType.Bool)
            SequenceId = Some(torch.tensor([| 0L; 1L |]).reshape(1L, 2L))
            ChainId = None
        }

    let c = 1.0 / Math.Sqrt(1.0 + 1e-5)
    let wr = Math.Log 2.0
    let wd = Math.Log(1.0 + Math.E)

    let rotationPart = 2.0 * wr * c * c / Math.Sqrt 3.0
    let distancePart = wd * Math.Sqrt(9.0 + 4.0 * c * c) / Math.Sqrt 3.0

    let delta =
        match terms with
        | Both -> rotationPart + distancePart + 1.0
        | RotationOnly -> rotationPart + 1.0
        | DistanceOnly -> distancePart + 1.0

    let m = c * Math.Tanh(delta / 2.0)

    let expected =
        torch.tensor([| m; 2.0 * m; -m; -2.0 * m |], dtype = dtype).reshape(1L, 2L, 2L)

    // The layer's rounding bound, doubled for second order, plus the float64 formula's cast to the dtype (u·|m|).
    let bound =
        2.0 * forwardBound cfg w input exactInput
        + Tol.unitRoundoff dtype * expected.abs().to_type torch.float64

    expected, GeometricAttention.forward cfg w input, w, bound

let private handCaseWith impl dtype withGrad =
    let expected, actual, w, _ = handCaseWithTerms Both impl dtype withGrad
    expected, actual, w

let private handCase terms impl dtype =
    let expected, actual, _, bound = handCaseWithTerms terms impl dtype false
    expected, actual, bound

/// A forward whose finite differences we can take: B = 1, L = 3, d = 5, V = 2, float64, random everything.
let private gradientCase impl (seed: uint64) =
    let g = new torch.Generator(seed)

    let cfg =
        {
            DModel = 5L
            VHeads = 2L
            Bias = true
            MaskAndZeroFrameless = false
            Implementation = impl
            Terms = Both
        }

    let w = drawWeights g cfg torch.float64
    let frames = Frame.random [| 1L; 3L |] 5.0 torch.float64 cpu g
    let s = torch.randn ([| 1L; 3L; 5L |], dtype = torch.float64, generator = g)
    let probe = torch.randn ([| 1L; 3L; 5L |], dtype = torch.float64, generator = g)

    let loss (s: torch.Tensor) (w: GeometricAttentionWeights) =
        let input =
            {
                S = s
                Frames = frames
                Framed = torch.tensor([| true; true; true |]).reshape(1L, 3L)
                SequenceId = Some(torch.tensor([| 0L; 0L; 1L |]).reshape(1L, 3L))
                ChainId = None
            }

        (GeometricAttention.forward cfg w input * probe).sum()

    s, w, loss

let private gradientCheck impl =
    use _ = torch.NewDisposeScope()
    let s0, w0, loss = gradientCase impl 17UL
    let s = s0.clone().requires_grad_(true)
    let dist = w0.DistanceScale.clone().requires_grad_(true)
    let rot = w0.RotationScale.clone().requires_grad_(true)
    let projW = w0.ProjWeight.clone().requires_grad_(true)

    let w =
        { w0 with
            DistanceScale = dist
            RotationScale = rot
            ProjWeight = projW
        }

    let grads = torch.autograd.grad ([| loss s w |], [| s; dist; rot; projW |])
    let h = 1e-6

    // Central differences, one entry at a time, with the other leaves at their base values.
    let numeric (x0: torch.Tensor) (evalWith: torch.Tensor -> float) =
        let flat = x0.detach().clone().reshape(-1L)
        let out = torch.zeros_like flat

        for k in 0L .. flat.shape.[0] - 1L do
            let at (delta: float) =
                let x = flat.clone ()
                x.[k] <- x.[k] + delta
                evalWith (x.reshape (x0.shape))

            out.[k] <- torch.tensor ((at h - at (-h)) / (2.0 * h), dtype = torch.float64)

        out.reshape (x0.shape)

    use _ = torch.no_grad ()
    let value (t: torch.Tensor) = t.ToDouble()

    let name =
        match impl with
        | Reference -> "Reference"
        | MemoryEfficient -> "MemoryEfficient"

    closeRel ("GA8 ∂/∂s " + name) 1e-6 grads.[0] (numeric s0 (fun x -> value (loss x w0)))

    closeRel
        ("GA8 ∂/∂distance_scale " + name)
        1e-6
        grads.[1]
        (numeric w0.DistanceScale (fun x -> value (loss s0 { w0 with DistanceScale = x })))

    closeRel
        ("GA8 ∂/∂rotation_scale " + name)
        1e-6
        grads.[2]
        (numeric w0.RotationScale (fun x -> value (loss s0 { w0 with RotationScale = x })))

    closeRel
        ("GA8 ∂/∂proj.weight " + name)
        1e-6
        grads.[3]
        (numeric w0.ProjWeight (fun x -> value (loss s0 { w0 with ProjWeight = x })))

let private keysAndShapes (m: GeometricAttention) =
    [ for KeyValue(k, v) in m.state_dict () -> k, List.ofArray v.shape ]

[<Tests>]
let tests =
    testList
        "Nn/GeometricAttention"
        [
            for dtype, name in Props.dtypes do
                properties dtype name

            testCase
                "hand-computed L = 2, V = 1 case (both implementations, each terms switch, float64 and float32)"
                (fun () ->
                    use _ = torch.NewDisposeScope()

                    for terms in [ Both; RotationOnly; DistanceOnly ] do
                        for impl, iname in impls do
                            for dtype, dname in Props.dtypes do
                                let expected, actual, bound = handCase terms impl dtype
                                withinBound (sprintf "hand case %A %s %s" terms dname iname) bound expected actual)

            testCase "gradients stay finite where a query and a key distance point coincide (hand case)" (fun () ->
                use _ = torch.NewDisposeScope()

                // In the hand case Qd_i = Kd_i exactly, so the distance term is 0 on the diagonal: PyTorch's norm
                // (Reference) gives gradient 0 there; the expanded form must not give inf or NaN.
                for impl, iname in impls do
                    let _, actual, w = handCaseWith impl torch.float64 true

                    let grads =
                        torch.autograd.grad ([| actual.sum () |], [| w.ProjWeight; w.DistanceScale |])

                    for gr in grads do
                        Expect.isTrue (gr.isfinite().all().item<bool>()) (iname + ": finite gradient"))

            testCase "GA8 gradients match central finite differences (float64, both implementations)" (fun () ->
                gradientCheck Reference
                gradientCheck MemoryEfficient)

            testCase "state_dict keys, shapes and order are ESM's for the ESM3 trunk preset" (fun () ->
                use m = new GeometricAttention(GeometricAttentionConfig.esm3Trunk)

                Expect.sequenceEqual
                    (keysAndShapes m)
                    [
                        "distance_scale_per_head", [ 256L ]
                        "rotation_scale_per_head", [ 256L ]
                        "s_norm.weight", [ 1536L ]
                        "proj.weight", [ 3840L; 1536L ]
                        "out_proj.weight", [ 1536L; 768L ]
                    ]
                    "keys")

            testCase "state_dict keys, shapes and order are ESM's for the encoder preset" (fun () ->
                use m = new GeometricAttention(GeometricAttentionConfig.esm3Encoder)

                Expect.sequenceEqual
                    (keysAndShapes m)
                    [
                        "distance_scale_per_head", [ 128L ]
                        "rotation_scale_per_head", [ 128L ]
                        "s_norm.weight", [ 1024L ]
                        "s_norm.bias", [ 1024L ]
                        "proj.weight", [ 1920L; 1024L ]
                        "proj.bias", [ 1920L ]
                        "out_proj.weight", [ 1024L; 384L ]
                        "out_proj.bias", [ 1024L ]
                    ]
                    "keys"

                let nParams = m.parameters () |> Seq.sumBy (fun p -> p.numel ())
                Expect.equal nParams (2L * 128L + 2L * 1024L + 1920L * 1025L + 1024L * 385L) "parameter count")

            testCase "the per-head scales start at zero (softplus = ln 2), as in ESM" (fun () ->
                use m =
                    new GeometricAttention(
                        { GeometricAttentionConfig.esm3Encoder with
                            DModel = 8L
                            VHeads = 3L
                        }
                    )

                Expect.equal (m.Weights.DistanceScale.abs().sum().ToDouble()) 0.0 "distance scale"
                Expect.equal (m.Weights.RotationScale.abs().sum().ToDouble()) 0.0 "rotation scale")

            testCase
                "the module's Forward takes ESM's defaults for missing ids and dispatches on the implementation"
                (fun () ->
                    use _ = torch.NewDisposeScope()

                    let c =
                        {
                            Seed = 5UL
                            Length = 9L
                            Bias = true
                            ZeroFrameless = true
                            Ids = false
                            FramedFraction = 0.7
                            Terms = Both
                        }

                    let cfg = config c Reference
                    use reference = new GeometricAttention(cfg)

                    use efficient =
                        new GeometricAttention(
                            { cfg with
                                Implementation = MemoryEfficient
                            }
                        )

                    use g = new torch.Generator(5UL)

                    // Random, non-zero scales (the init is zero), copied into both modules.
                    use _ = torch.no_grad ()

                    for m in [ reference; efficient ] do
                        m.Weights.DistanceScale.copy_ (torch.linspace (-1.0, 1.0, vHeads)) |> ignore
                        m.Weights.RotationScale.copy_ (torch.linspace (0.5, -0.5, vHeads)) |> ignore

                    efficient.load_state_dict (reference.state_dict ()) |> ignore
                    let input = drawInput g c torch.float32
                    let out = reference.Forward(input.S, input.Frames, input.Framed)

                    let explicitIds =
                        { input with
                            SequenceId = Some(torch.zeros ([| batch; c.Length |], dtype = torch.int64))
                            ChainId = Some(torch.ones ([| batch; c.Length |], dtype = torch.int64))
                        }

                    identical
                        "module defaults"
                        (GeometricAttention.forwardReference cfg reference.Weights explicitIds)
                        out

                    // One function, two forms: each within its rounding bound (doubled for second order).
                    let bound =
                        forwardBound cfg reference.Weights explicitIds exactInput
                        + forwardBound efficient.Config efficient.Weights explicitIds exactInput

                    withinBound
                        "module dispatch"
                        (2.0 * bound)
                        out
                        (efficient.Forward(input.S, input.Frames, input.Framed)))

            testCase "a float64 copy of the module runs in float64" (fun () ->
                use _ = torch.NewDisposeScope()

                let c =
                    {
                        Seed = 6UL
                        Length = 4L
                        Bias = false
                        ZeroFrameless = true
                        Ids = true
                        FramedFraction = 0.8
                        Terms = Both
                    }

                use m = new GeometricAttention(config c Reference)
                m.``to`` torch.float64 |> ignore
                use g = new torch.Generator(6UL)
                let input = drawInput g c torch.float64
                let out = m.forward input
                Expect.equal out.dtype torch.float64 "dtype"
                Expect.sequenceEqual out.shape [| batch; 4L; dModel |] "shape")

            testCase "config validation names the bad fields; bad inputs raise ArgumentException" (fun () ->
                use _ = torch.NewDisposeScope()

                let bad =
                    { GeometricAttentionConfig.esm3Trunk with
                        DModel = 0L
                        VHeads = -1L
                    }

                match GeometricAttentionConfig.validate bad with
                | Ok _ -> failtest "expected errors"
                | Error errors ->
                    Expect.equal errors.Length 2 "two errors"
                    Expect.stringContains errors.[0] "DModel" "names DModel"
                    Expect.stringContains errors.[1] "VHeads" "names VHeads"

                Expect.throwsT<ArgumentException> (fun () -> new GeometricAttention(bad) |> ignore) "constructor"

                let c =
                    {
                        Seed = 7UL
                        Length = 5L
                        Bias = false
                        ZeroFrameless = true
                        Ids = true
                        FramedFraction = 0.8
                        Terms = Both
                    }

                let cfg, w, input, _ = draw c Reference torch.float32

                let run i =
                    GeometricAttention.forward cfg w i |> ignore

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        run
                            { input with
                                Frames = Frame.toType torch.float64 input.Frames
                            })
                    "frame dtype"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        run
                            { input with
                                Framed = input.Framed.to_type torch.int64
                            })
                    "framed dtype"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        run
                            { input with
                                S = input.S.narrow (-1L, 0L, 10L)
                            })
                    "d"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        run
                            { input with
                                ChainId = Some(torch.zeros ([| 1L; 5L |], dtype = torch.int64))
                            })
                    "chain ids")

            testCase "MemoryEfficient keeps less alive than Reference (B = 1, L = 256, V = 8)" (fun () ->
                let cfg =
                    {
                        DModel = 32L
                        VHeads = 8L
                        Bias = false
                        MaskAndZeroFrameless = true
                        Implementation = Reference
                        Terms = Both
                    }

                let reference = GeometricAttentionBenchmark.run cfg 1L 256L 1 3UL

                let efficient =
                    GeometricAttentionBenchmark.run
                        { cfg with
                            Implementation = MemoryEfficient
                        }
                        1L
                        256L
                        1
                        3UL

                note
                    "memory Reference scope bytes / pair tensor"
                    (float reference.ScopeBytes / float reference.PairTensorBytes)

                note
                    "memory MemoryEfficient scope bytes / pair tensor"
                    (float efficient.ScopeBytes / float efficient.PairTensorBytes)
                // Reference holds the [B, V, L, L, 3] differences (3 pair tensors) and more; MemoryEfficient holds less
                // than one pair tensor once it returns.
                Expect.isGreaterThanOrEqual
                    reference.ScopeBytes
                    (3L * reference.PairTensorBytes)
                    "Reference holds the differences"

                Expect.isLessThan efficient.ScopeBytes efficient.PairTensorBytes "MemoryEfficient holds no pair tensor"
                Expect.isLessThan efficient.ScopeBytes reference.ScopeBytes "less than Reference")
        ]
