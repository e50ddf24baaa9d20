namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Nn
open Esm3Structure.Tensors

/// What the backbone head produces from its 23 projected channels.
type BackboneHeadOutput =
    {
        /// Residue frames [*] (origin = CA, Å).
        Frames: Frame
        /// N, CA, C placed by the frames from the ideal local backbone. [*, 3 (N, CA, C), 3]
        Backbone: torch.Tensor
        /// The 14 unused channels as 7 torsions × (sin, cos) logits, unnormalised: channel 9 + 2k + j is
        /// [.., k, j]. ESM computes and discards them. [*, 7, 2]
        TorsionLogits: torch.Tensor
    }

/// The numerics of ESM's `Dim6RotStructureHead` (evolutionaryscale/esm `esm/layers/structure_proj.py`;
/// ESM3-REFERENCE.md §7.3) as pure functions, in the input's dtype.
module BackboneHead =

    /// Width of the head's projection: translation 3, x-direction 3, xy-plane direction 3, 7 torsions × 2.
    [<Literal>]
    let ProjectionWidth = 23L

    /// Å per unit of the projected translation (ESM's `trans_scale_factor`).
    [<Literal>]
    let TranslationScale = 10.0

    /// Added to ‖a‖ and ‖c‖ before the pre-normalisation (outside the norm, as ESM).
    [<Literal>]
    let DirectionEps = 1e-5

    /// ESM's ideal local backbone `BB_COORDINATES` (evolutionaryscale/esm `esm/utils/constants/physics.py`):
    /// N (0.5256, 1.3612, 0), CA (0, 0, 0), C (−1.5251, 0, 0) in Å, in the frame convention of
    /// `Frame.ofGramSchmidt` (C on the negative x-axis, N in the xy-plane).
    let private idealCoordinates: float[,] =
        array2D [ [ 0.5256; 1.3612; 0.0 ]; [ 0.0; 0.0; 0.0 ]; [ -1.5251; 0.0; 0.0 ] ]

    /// `idealCoordinates` as a tensor (rows N, CA, C). Shapes: -> [3, 3]
    let idealBackbone (dtype: torch.ScalarType) (device: torch.Device) =
        let flat = Array.init 9 (fun i -> idealCoordinates.[i / 3, i % 3])
        torch.tensor(flat, ReadOnlySpan<int64> [| 3L; 3L |], dtype = torch.float64).``to``(dtype, device)

    /// Frames from a translation (Å) and two unnormalised directions, as ESM builds them:
    /// â = a/(‖a‖ + 1e-5), ĉ = c/(‖c‖ + 1e-5), then `Frame.ofGramSchmidt 1e-10 (â + t) t (ĉ + t)`, so the axes are
    /// formed as t − (â + t) (first column ∝ −a) and (ĉ + t) − t, exactly ESM's operations.
    /// Shapes: t, a, c [*, 3] -> Frame [*]
    let frames (t: torch.Tensor) (a: torch.Tensor) (c: torch.Tensor) : Frame =
        Shape.expectTrailing "t" [| 3L |] t
        Shape.expectTrailing "a" [| 3L |] a
        Shape.expectTrailing "c" [| 3L |] c
        let aHat = a / (a.norm (-1, true) + DirectionEps)
        let cHat = c / (c.norm (-1, true) + DirectionEps)
        Frame.ofGramSchmidt Rotation.EsmFrameEps (aHat + t) t (cHat + t)

    /// Places N, CA, C by the frames: X[.., a] = R · BB[a] + t, computed as ESM does (`BB @ Rᵀ + t`).
    /// Shapes: Frame [*] -> [*, 3 (N, CA, C), 3]
    let place (f: Frame) =
        let local_33 = idealBackbone f.Dtype f.T.device
        local_33.matmul (f.R.transpose (-1L, -2L)) + f.T.unsqueeze (-2L)

    /// The 14 torsion channels p[9:23] as 7 torsions × (sin, cos) logits. Shapes: projection [*, 23] -> [*, 7, 2]
    let torsionLogits (projection: torch.Tensor) =
        Shape.unflattenLast [| 7L; 2L |] (projection.narrow (-1L, 9L, 14L))

    /// The head's outputs from its projection: t = 10·p[0:3], a = p[3:6], c = p[6:9], torsions p[9:23].
    /// Shapes: projection [*, 23] -> Frames [*], Backbone [*, 3, 3], TorsionLogits [*, 7, 2]
    let ofProjection (projection: torch.Tensor) : BackboneHeadOutput =
        Shape.expectTrailing "projection" [| ProjectionWidth |] projection
        let t = projection.narrow (-1L, 0L, 3L) * TranslationScale
        let a = projection.narrow (-1L, 3L, 3L)
        let c = projection.narrow (-1L, 6L, 3L)
        let f = frames t a c

        {
            Frames = f
            Backbone = place f
            TorsionLogits = torsionLogits projection
        }

/// The pair features of ESM's `PairwisePredictionHead` (evolutionaryscale/esm `esm/models/vqvae.py`).
module PairwiseHead =

    /// Splits the down-projection y into q (first half) and k (second half) and builds
    /// f[.., i, j] = concat(q_j ⊙ k_i, q_j − k_i): the row index i comes from k, the column index j from q.
    /// Shapes: y [*, L, P] -> [*, L, L, P]
    let pairFeatures (y: torch.Tensor) =
        let p = y.shape.[y.shape.Length - 1]

        if y.dim () < 2L || p % 2L <> 0L then
            Shape.mismatch "y" "[*, L, P] with P even" y

        let halves = y.chunk (2L, -1L)
        let q_1LD = halves.[0].unsqueeze(-3L) // [*, 1, L, P/2]: column j
        let k_L1D = halves.[1].unsqueeze(-2L) // [*, L, 1, P/2]: row i
        torch.cat ([| q_1LD * k_L1D; q_1LD - k_L1D |], -1L)

/// Predicted aligned error and pTM from pAE logits (evolutionaryscale/esm
/// `esm/utils/structure/predicted_aligned_error.py`; ESM3-REFERENCE.md §7.4), in the logits' dtype.
module AlignedError =

    /// pAE bins of the decoder (`VQVAE_PAE_BINS`).
    [<Literal>]
    let Bins = 64L

    /// The largest bin edge in Å (`VQVAE_MAX_PAE_BIN`).
    [<Literal>]
    let MaxBin = 31.0

    /// Bin centres as ESM builds them: linspace(0, maxBin, bins − 1) + step/2, then one more centre at last + step,
    /// with step = maxBin/(bins − 2). For 64 bins and 31 Å: 0.25 + 0.5k, k = 0 … 63. Shapes: -> [bins]
    let binCentresFor (bins: int64) (maxBin: float) (dtype: torch.ScalarType) (device: torch.Device) =
        let step = maxBin / float (bins - 2L)

        let centres =
            torch.linspace (0.0, maxBin, bins - 1L, dtype = dtype, device = device)
            + step / 2.0

        torch.cat ([| centres; centres.narrow (0L, bins - 2L, 1L) + step |], 0L)

    /// The decoder's 64 centres 0.25 … 31.75 Å. Shapes: -> [64]
    let binCentres (dtype: torch.ScalarType) (device: torch.Device) = binCentresFor Bins MaxBin dtype device

    /// Pairs of real residues: pair[.., i, j] = real_i ∧ real_j. Shapes: real [*, L] bool -> [*, L, L] bool
    let pairMask (real: torch.Tensor) =
        real.unsqueeze(-1L).logical_and(real.unsqueeze (-2L))

    /// Bin probabilities: the logits of non-pair entries are overwritten with the dtype's most negative finite
    /// value (so those entries become uniform), then softmax over bins.
    /// Shapes: logits [*, L, L, K], real [*, L] bool -> [*, L, L, K]
    let probabilities (logits: torch.Tensor) (real: torch.Tensor) =
        let finfoMin = Attention.finfoMin logits.dtype
        logits.masked_fill(pairMask(real).logical_not().unsqueeze(-1L), finfoMin.ToScalar()).softmax(-1L)

    /// Expected aligned error Σ_k P_k c_k in Å; non-pair entries hold the uniform average (16 Å for ESM's bins).
    /// Shapes: logits [*, L, L, K], real [*, L] bool -> [*, L, L]
    let pae (logits: torch.Tensor) (real: torch.Tensor) =
        let k = logits.shape.[logits.shape.Length - 1]
        let centres = binCentresFor k MaxBin logits.dtype logits.device
        (probabilities logits real * centres).sum(-1L)

    /// TM-score's d₀ for n residues: 1.24·(max(n, 19) − 15)^(1/3) − 1.8. Shapes: n [*] -> [*]
    let d0 (n: torch.Tensor) : torch.Tensor =
        1.24 * (n.clamp_min (19.0.ToScalar()) - 15.0).pow((1.0 / 3.0).ToScalar()) - 1.8

    /// ESM's `compute_tm`: with N = Σ real, f_k = 1/(1 + (c_k/d₀(N))²), ptm_ij = Σ_k P_ijk f_k,
    /// row_i = Σ_j pair_ij ptm_ij / (1e-10 + Σ_j pair_ij), pTM = max_i row_i (rows of non-real residues are 0).
    /// Shapes: logits [*, L, L, K], real [*, L] bool -> [*]
    let ptm (logits: torch.Tensor) (real: torch.Tensor) =
        let k = logits.shape.[logits.shape.Length - 1]
        let centres = binCentresFor k MaxBin logits.dtype logits.device
        let pair = pairMask(real).to_type logits.dtype // [*, L, L]
        let n = real.to_type(logits.dtype).sum(-1L, true) // [*, 1]
        let scaled = centres / (d0 n).unsqueeze(-1L) // [*, 1, K]
        let f = 1.0 / (1.0 + scaled * scaled)
        let perPair = (probabilities logits real * f.unsqueeze (-2L)).sum(-1L) // [*, L, L]
        let rows = (pair * perPair).sum(-1L) / (1e-10 + pair.sum (-1L)) // [*, L]
        let struct (best, _) = rows.max (-1L)
        best

/// pLDDT from the decoder's 50 bin logits (ESM's `CategoricalMixture(bins = 50).mean()`, evolutionaryscale/esm
/// `esm/models/vqvae.py`; ESM3-REFERENCE.md §7.5).
module Plddt =

    /// pLDDT bins of the decoder (`VQVAE_PLDDT_BINS`).
    [<Literal>]
    let Bins = 50L

    /// Bin centres as ESM builds them: midpoints of linspace(0, 1, bins + 1), i.e. 0.01 + 0.02k for 50 bins.
    /// Shapes: -> [bins]
    let binCentresFor (bins: int64) (dtype: torch.ScalarType) (device: torch.Device) =
        let edges = torch.linspace (0.0, 1.0, bins + 1L, dtype = dtype, device = device)
        (edges.narrow (0L, 0L, bins) + edges.narrow (0L, 1L, bins)) / 2.0

    /// The expected value Σ_k softmax(logits)_k v_k, computed in float32 as ESM does (float64 stays float64).
    /// Shapes: logits [*, K] -> [*]
    let ofLogits (logits: torch.Tensor) =
        let dtype =
            if logits.dtype = torch.float64 then
                torch.float64
            else
                torch.float32

        let k = logits.shape.[logits.shape.Length - 1]
        let v = binCentresFor k dtype logits.device
        logits.to_type(dtype).softmax(-1L).matmul(v.unsqueeze 1L).squeeze(-1L)

/// ESM's `Dim6RotStructureHead` parameters: `ffn1` [d, d] (+bias), `norm` (LayerNorm with bias), `proj` [23, d]
/// (+bias). The forward returns the projection; `BackboneHead.ofProjection` turns it into frames and atoms.
type Dim6RotStructureHead(dModel: int64) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("Dim6RotStructureHead")

    let ffn1 = torch.nn.Linear(dModel, dModel)
    let norm = torch.nn.LayerNorm([| dModel |], 1e-5)
    let proj = torch.nn.Linear(dModel, BackboneHead.ProjectionWidth)

    do this.RegisterComponents()

    /// PyTorch's defaults: `ffn1`, `proj` uniform in ±1/sqrt(d) (biases 0), `norm` weight 1 (bias 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.linear generator ffn1
            Init.layerNorm norm
            Init.linear generator proj

    /// proj(LN(GELU(ffn1 x))), GELU exact (erf). Shapes: x [*, d] -> [*, 23]
    override _.forward(x: torch.Tensor) =
        proj.forward (norm.forward (torch.nn.functional.gelu (ffn1.forward x)))

    /// Reflects every structure the head builds through the plane z = 0, in place: negates the z rows of `proj`
    /// for t, a and c (rows 2, 5, 8, weight and bias). Gram–Schmidt commutes with M = diag(1, 1, −1), so each frame
    /// becomes (M R M, M t), and because the ideal backbone lies in the plane z = 0 (`BackboneHead.idealBackbone`)
    /// each placed N, CA, C becomes M x: the mirror image, exactly. The torsion channels are left as they are.
    member _.Reflect() =
        use _ = torch.no_grad ()
        use _scope = torch.NewDisposeScope()

        for row in [ 2L; 5L; 8L ] do
            proj.weight.narrow(0L, row, 1L).neg_() |> ignore
            proj.bias.narrow(0L, row, 1L).neg_() |> ignore

/// ESM's `PairwisePredictionHead`: `downproject` [P, d], `linear1` [H, P], `norm` (LayerNorm(H) with bias),
/// `linear2` [bins, H]; linear biases only when `bias` (the decoder: none).
type PairwisePredictionHead(inputDim: int64, downprojectDim: int64, hiddenDim: int64, bins: int64, bias: bool) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("PairwisePredictionHead")

    let downproject = torch.nn.Linear(inputDim, downprojectDim, hasBias = bias)
    let linear1 = torch.nn.Linear(downprojectDim, hiddenDim, hasBias = bias)
    let norm = torch.nn.LayerNorm([| hiddenDim |], 1e-5)
    let linear2 = torch.nn.Linear(hiddenDim, bins, hasBias = bias)

    do this.RegisterComponents()

    /// PyTorch's defaults: the linear layers uniform in ±1/sqrt(fan_in) (biases 0), `norm` weight 1 (bias 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.linear generator downproject
            Init.linear generator linear1
            Init.layerNorm norm
            Init.linear generator linear2

    /// The hidden pair states LN(GELU(linear1(pairFeatures(downproject x)))), with linear1 applied to the two
    /// halves of the features separately: W₁ = [Wₐ | W_b] gives W₁ f_ij = Wₐ (q_j ⊙ k_i) + W_b q_j − W_b k_i, so
    /// the difference half costs one product per residue instead of one per pair and the [*, L, L, P] features are
    /// never built (the same function, rounded differently). Shapes: x [*, L, d] -> [*, L, L, hidden]
    member _.Hidden(x: torch.Tensor) =
        let y = downproject.forward x
        let half = downprojectDim / 2L
        let q = y.narrow (-1L, 0L, half) // column j
        let k = y.narrow (-1L, half, half) // row i
        let wProduct = linear1.weight.narrow (1L, 0L, half)
        let wDifference = linear1.weight.narrow (1L, half, half)
        let product = q.unsqueeze -3L * k.unsqueeze -2L // [*, L, L, P/2]
        let columns = torch.nn.functional.linear (q, wDifference) // [*, L, H]
        let rows = torch.nn.functional.linear (k, wDifference) // [*, L, H]
        let h = torch.nn.functional.linear (product, wProduct, linear1.bias)
        let h = h + (columns.unsqueeze -3L - rows.unsqueeze -2L)
        norm.forward (torch.nn.functional.gelu h)

    /// linear2(LN(GELU(linear1(pairFeatures(downproject x))))). Shapes: x [*, L, d] -> [*, L, L, bins]
    override this.forward(x: torch.Tensor) = linear2.forward (this.Hidden x)

    /// The output channels in consecutive groups of the given widths, each its own contiguous tensor (the same
    /// values as narrowing `forward`): linear2 runs on those rows of its weight only, so channels past the groups
    /// cost nothing (stage-1 training reads the distogram and direction groups, not pAE's), and no loss's backward
    /// fills a full-width zero gradient for its slice. Shapes: x [*, L, d] -> [*, L, L, width] per group
    member this.ForwardGroups(x: torch.Tensor, widths: int64[]) =
        if
            widths.Length = 0
            || Array.exists (fun w -> w <= 0L) widths
            || Array.sum widths > bins
        then
            raise (
                ArgumentOutOfRangeException(
                    "widths",
                    sprintf "widths must be positive and add up to at most %d, got %A" bins widths
                )
            )

        let h = this.Hidden x
        let starts = Array.scan (+) 0L widths

        widths
        |> Array.mapi (fun g width ->
            let bias =
                if isNull linear2.bias then
                    null
                else
                    linear2.bias.narrow (0L, starts.[g], width)

            torch.nn.functional.linear (h, linear2.weight.narrow (0L, starts.[g], width), bias))

/// ESM's named regression head (`RegressionHead` in `esm/models/vqvae.py`): `dense` [d, d] (+bias), `norm`
/// (LayerNorm with bias), `output` [out, d] (+bias).
type RegressionHead(embedDim: int64, outputDim: int64) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("RegressionHead")

    let dense = torch.nn.Linear(embedDim, embedDim)
    let norm = torch.nn.LayerNorm([| embedDim |], 1e-5)
    let output = torch.nn.Linear(embedDim, outputDim)

    do this.RegisterComponents()

    /// PyTorch's defaults: `dense`, `output` uniform in ±1/sqrt(d) (biases 0), `norm` weight 1 (bias 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.linear generator dense
            Init.layerNorm norm
            Init.linear generator output

    /// output(LN(GELU(dense x))). Shapes: x [*, d] -> [*, out]
    override _.forward(x: torch.Tensor) =
        output.forward (norm.forward (torch.nn.functional.gelu (dense.forward x)))
