module Esm3Structure.Tests.Models.StructureHeadsTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tests

let private cpu = torch.CPU

/// Random head projections [*, 23]: translation ~ N(0, 1) (10 Å after scaling), directions ~ N(0, 1).
let private projection (g: torch.Generator) (batch: int64[]) (dtype: torch.ScalarType) =
    torch.randn (Array.append batch [| 23L |], dtype = dtype, generator = g)

/// A seed and a length 2 … 30 for the pTM properties.
type PairCase = { Seed: uint64; Length: int64 }

let private pairCases =
    gen {
        let! s = Gen.choose (0, Int32.MaxValue)
        let! l = Gen.choose (2, 30)
        return { Seed = uint64 s; Length = int64 l }
    }
    |> Arb.fromGen

let private pairProperty name body =
    testPropertyWithConfig
        { Props.baseConfig with
            maxTest = Props.cases
        }
        name
        (Prop.forAll pairCases body)

/// Random real-residue masks [2, L] with at least one real residue per row (row 0 keeps residue 1).
let private realMask (g: torch.Generator) (l: int64) =
    let m = torch.rand([| 2L; l |], generator = g).gt(0.3.ToScalar())
    m.select(1L, 1L).fill_(true.ToScalar()) |> ignore
    m

let private d64 (x: torch.Tensor) = x.to_type torch.float64

/// Rounding bound of y = R x + t for 3-vectors, per entry: 3 products and 2 sums on Σ|R||x| (γ₃), one more sum
/// on |y|, plus the inputs' errors eX (per entry; null for none) through |R|. Shapes: r [*, 3, 3], x [*, 3], y [*, 3]
let private affineBound (u: float) (r: torch.Tensor) (x: torch.Tensor) (y: torch.Tensor) (eX: torch.Tensor) =
    let absR = (d64 r).abs()

    let through (v: torch.Tensor) =
        absR.matmul(v.unsqueeze -1L).squeeze(-1L)

    let carried =
        if isNull eX then
            torch.zeros (1L, dtype = torch.float64)
        else
            through eX

    3.0 * u * through ((d64 x).abs()) + u * (d64 y).abs() + carried

/// The relative error of `AlignedError.d0 n` (d₀ = 1.24·x^(1/3) − 1.8, x = max(n, 19) − 15, exact): pow rounds 2u,
/// and its exponent 1/3 rounded to the dtype (≤ u/3) moves x^(1/3) by ≤ ln(x)·u/3 relative; × 1.24 one more u;
/// the subtraction of 1.8 rounds u·d₀ and turns the absolute error of a = 1.24·x^(1/3) into a relative one over
/// d₀ (a/d₀ ≤ 11.7 at n ≤ 19). Shapes: n [*] float64 -> [*]
let private d0RelativeError (u: float) (n: torch.Tensor) =
    let x = n.clamp_min (19.0.ToScalar()) - 15.0
    let a = 1.24 * x.pow ((1.0 / 3.0).ToScalar())
    let d0 = a - 1.8
    a * (3.0 * u + u * x.log () / 3.0) / d0 + u

/// The Gram–Schmidt inputs `BackboneHead.frames` forms, computed as it does in the projection's dtype: with
/// t = 10·p[0:3], â = a/(‖a‖ + 1e-5), ĉ likewise, v_a = t − (â + t) and v_c = (ĉ + t) − t; and a bound on each one's
/// 2-norm distance from the exact direction vector −â, ĉ: both sums round ≤ u·(|t| + 2|â|) per entry, and the
/// division ≤ u·|â|, so ≤ u·(‖t‖ + 3‖â‖) in 2-norm. Shapes: p [*, 23] -> v_a, v_c [*, 3]; errors [*, 1] float64
let private gramSchmidtInputs (p: torch.Tensor) =
    let u = Tol.unitRoundoff p.dtype
    let t = p.narrow (-1L, 0L, 3L) * BackboneHead.TranslationScale

    let hat (x: torch.Tensor) =
        x / (x.norm (-1, true) + BackboneHead.DirectionEps)

    let aHat, cHat = hat (p.narrow (-1L, 3L, 3L)), hat (p.narrow (-1L, 6L, 3L))
    let va, vc = t - (aHat + t), (cHat + t) - t
    let tNorm = (d64 t).norm(-1, true)

    let err (x: torch.Tensor) =
        u * (tNorm + 3.0 * (d64 x).norm(-1, true))

    va, vc, err aHat, err cHat

/// Per residue, a bound on every entry of the Gram–Schmidt rotation's distance from GS(−a, c) computed exactly with
/// ε = 0 (a proper rotation): its own rounding (56/sin + 18)·u (Geometry/RotationTests' count, sin of its actual
/// inputs), its inputs' errors (x̂ turns by p_a = δv_a/|v_a|, which turns ê₁ by ≤ 2p_a/sin; v_c's error turns ê₁ by
/// δv_c/(|v_c| sin); ê₂ = x̂ × ê₁ by the sum), and ESM's ε inside the square roots, which shortens x̂ by ε/(2|v_a|²)
/// and ê₁ by ε/(2|v_c|² sin²) (ê₂ by both). Shapes: p [*, 23] -> [*, 1] float64
let private frameEntryBound (p: torch.Tensor) =
    let u = Tol.unitRoundoff p.dtype
    let eps = Rotation.EsmFrameEps
    let va, vc, ea, ec = gramSchmidtInputs p
    let na, nc = (d64 va).norm(-1, true), (d64 vc).norm(-1, true)
    let sin = BackboneChecks.sinAngle (d64 va) (d64 vc)
    let pa = ea / na
    let pc = ec / nc

    (56.0 / sin + 18.0) * u
    + pa
    + (pc + 2.0 * pa) / sin
    + eps * (1.0 / (na * na) + 1.0 / (nc * nc * sin * sin))

let private headProperties (dtype: torch.ScalarType) (name: string) =
    let eps = Rotation.EsmFrameEps
    let u = Tol.unitRoundoff dtype

    testList
        name
        [
            Props.property "D1: G∘T places every atom at G(p)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let head = BackboneHead.ofProjection (projection g c.Batch dtype)
                let motion = Frame.random [||] 30.0 dtype cpu g
                let composed = Frame.compose motion head.Frames
                let moved = BackboneHead.place composed
                let expected = Frame.apply motion head.Backbone
                // Exact for any matrices (associativity), so only rounding: each side is two affine maps, each within
                // affineBound of its exact value; the bound is doubled for second-order terms.
                let bb = BackboneHead.idealBackbone dtype cpu // [3 (atom), 3]
                let zero: torch.Tensor = null
                let m = motion.R
                // Left: R' = M R (column by column), T' = M T + t_m, then X = R' BB + T'.
                let eR' =
                    affineBound u m (head.Frames.R.transpose (-1L, -2L)) (composed.R.transpose (-1L, -2L)) zero // [*, k, i]

                let eT' = affineBound u m head.Frames.T composed.T zero

                let left =
                    affineBound u (composed.R.unsqueeze -3L) bb moved zero
                    + (d64 bb).abs().matmul(eR')
                    + eT'.unsqueeze -2L
                // Right: X = R BB + T, then M X + t_m.
                let eX = affineBound u (head.Frames.R.unsqueeze -3L) bb head.Backbone zero
                let right = affineBound u m head.Backbone expected eX
                Tol.within "atoms" (d64 moved - d64 expected) (2.0 * (left + right)))

            Props.property "D2: every residue has ESM's ideal N-CA, CA-C and N-CA-C" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let p = projection (c.Generator()) c.Batch dtype
                BackboneChecks.checkIdealGeometry dtype p (BackboneHead.ofProjection p).Backbone)

            Props.property "D3: rotations are proper and the first column is −a/‖a‖" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let p = projection (c.Generator()) c.Batch dtype
                let r = (BackboneHead.ofProjection p).Frames.R
                let a = p.narrow (-1L, 3L, 3L)
                // Orthogonality depends only on Gram–Schmidt's own rounding g = (56/sin + 18)·u (sin of its actual
                // inputs) and on ε: RᵀR − I within 2√3·g + 4u and det R − 1 within 3√3·(g + 36u) + 2u
                // (GeoTol.properError's terms), and ε shortens column k's squared norm by ε/‖vₖ‖² (‖v₁‖ = |v_c| sin),
                // the third column's by both, so the determinant too.
                let va, vc, ea, _ = gramSchmidtInputs p
                let na, nc = (d64 va).norm(-1, true), (d64 vc).norm(-1, true)
                let sin = BackboneChecks.sinAngle (d64 va) (d64 vc) // [*, 1]
                let g = (56.0 / sin + 18.0) * u
                let epsShort = eps * (1.0 / (na * na) + 1.0 / (nc * nc * sin * sin)) // [*, 1]
                let eye = torch.eye(3L, dtype = dtype).expand_as(r)
                let rtr = r.transpose(-1L, -2L).matmul r

                Tol.within "RᵀR − I" (d64 (rtr - eye)) ((2.0 * sqrt 3.0 * g + 4.0 * u + epsShort).unsqueeze(-1L))

                Tol.within
                    "det R − 1"
                    (d64 (torch.linalg.det r - 1.0))
                    ((3.0 * sqrt 3.0 * (g + 36.0 * u) + 2.0 * u + epsShort).squeeze(-1L))
                // The first column is v_a/|v_a| (ε shortens it by ε/(2|v_a|²)), v_a within δv_a of −â ∝ −a (turning
                // it by δv_a/|v_a|); normalising here and there rounds 4u each.
                let tolFirst = ea / na + 8.0 * u + eps / (2.0 * na * na) // [*, 1]
                Tol.within "first column" (d64 (r.select (-1L, 0L) + a / a.norm (-1, true))) tolFirst)

            Props.property "D4: scaling a or c by a positive factor leaves the frame unchanged" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let p = projection g c.Batch dtype
                // Both frames are GS(−a, c) in exact arithmetic with ε = 0 (directions do not change with a
                // positive factor): each within frameEntryBound of it, the pair within the sum, doubled for second
                // order.
                let bound0 = frameEntryBound p

                let alpha () =
                    (torch.rand([| 1L |], dtype = torch.float64, generator = g).item<float>() * 4.6
                     - 2.3)
                    |> Math.Exp

                let f0 = (BackboneHead.ofProjection p).Frames

                for start in [ 3L; 6L ] do
                    let scaled = p.clone ()
                    let part = scaled.narrow (-1L, start, 3L)
                    part.mul_ ((alpha ()).ToScalar()) |> ignore
                    let f1 = (BackboneHead.ofProjection scaled).Frames
                    let tol = 2.0 * (bound0 + frameEntryBound scaled).unsqueeze(-1L) // [*, 1, 1]
                    Tol.within (sprintf "R (channels %d…)" start) (d64 (f1.R - f0.R)) tol
                    Tol.close (sprintf "T (channels %d…)" start) 0.0 f1.T f0.T)

            test "torsion logits are channels 9…22 as 7 × (sin, cos)" {
                use _ = torch.NewDisposeScope()
                let p = projection (new torch.Generator(3UL)) [| 2L; 5L |] dtype
                let tors = (BackboneHead.ofProjection p).TorsionLogits
                Expect.sequenceEqual tors.shape [| 2L; 5L; 7L; 2L |] "shape"

                Tol.close
                    "torsion 4, cos"
                    0.0
                    (tors.select(-2L, 4L).select(-1L, 1L))
                    (p.select (-1L, 9L + 2L * 4L + 1L))
            }

            pairProperty "D5: pLDDT, pAE and pTM stay in their ranges; non-pair pAE is the uniform 16 Å" (fun c ->
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(c.Seed)
                let l = c.Length
                let real = realMask g l
                // Logit scales from mild to saturating (one-hot after softmax).
                let spread = torch.tensor([| 1.0; 30.0 |], dtype = dtype).reshape(2L, 1L, 1L, 1L)

                let paeLogits =
                    torch.randn ([| 2L; l; l; 64L |], dtype = dtype, generator = g) * spread

                let plddtLogits =
                    torch.randn ([| 2L; l; 50L |], dtype = dtype, generator = g)
                    * spread.squeeze (-1L)

                // A computed convex combination of K centres: the softmax's weights sum to 1 within (K + 1)·u (the
                // K-term normalising sum and the division), and the K-term sum of positive products rounds (K + 1)·u
                // relative, so the mean stays within (2K + 2)·u relative of the centres' range (K = 50 for pLDDT,
                // computed in float32 or float64, and 64 for pAE, in the logits' dtype).
                let slackFor (k: float) = (2.0 * k + 2.0) * u
                let slack = slackFor 50.0
                let vp = Plddt.binCentresFor 50L dtype cpu
                let plddt = Plddt.ofLogits plddtLogits
                Expect.isTrue (plddt.ge(vp.min () * (1.0 - slack)).all().item<bool>()) "pLDDT ≥ 0.01"
                Expect.isTrue (plddt.le(vp.max () * (1.0 + slack)).all().item<bool>()) "pLDDT ≤ 0.99"
                let centres = AlignedError.binCentres dtype cpu
                let slack = slackFor 64.0
                let pae = AlignedError.pae paeLogits real
                Expect.isTrue (pae.ge(centres.min () * (1.0 - slack)).all().item<bool>()) "pAE ≥ 0.25"
                Expect.isTrue (pae.le(centres.max () * (1.0 + slack)).all().item<bool>()) "pAE ≤ 31.75"
                let nonPair = AlignedError.pairMask(real).logical_not()
                let sixteen = torch.full_like (pae.masked_select nonPair, (16.0).ToScalar())
                // Exact: every non-pair logit is finfo.min, so each exp is exp(0) = 1, the weights are 1/64 and the
                // centres 0.25 + 0.5k are exact binary fractions whose weighted sum 16 no partial sum rounds.
                Tol.close "non-pair pAE" 0.0 (pae.masked_select nonPair) sixteen
                let ptm = AlignedError.ptm paeLogits real
                Expect.isTrue (ptm.gt(0.0.ToScalar()).all().item<bool>()) "pTM > 0"
                Expect.isTrue (ptm.le(1.0.ToScalar()).all().item<bool>()) "pTM ≤ 1")

            pairProperty "D5: logits of special-token rows and columns do not change pTM or real pAE" (fun c ->
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(c.Seed)
                let l = c.Length
                let real = realMask g l
                let logits = torch.randn ([| 2L; l; l; 64L |], dtype = dtype, generator = g)
                let pair = AlignedError.pairMask real
                let noise = 50.0 * torch.randn ([| 2L; l; l; 64L |], dtype = dtype, generator = g)
                let changed = torch.where (pair.unsqueeze (-1L), logits, noise)
                Tol.close "pTM" 0.0 (AlignedError.ptm changed real) (AlignedError.ptm logits real)
                Tol.close "pAE" 0.0 (AlignedError.pae changed real) (AlignedError.pae logits real))

            pairProperty "D6: one-hot bin 0 gives pTM = 1/(1 + (0.25/d₀)²); permuting residues keeps pTM" (fun c ->
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(c.Seed)
                let l = c.Length
                let real = realMask g l
                let oneHot = torch.zeros ([| 2L; l; l; 64L |], dtype = dtype)
                oneHot.select(-1L, 0L).fill_(1e4.ToScalar()) |> ignore
                let counts = real.sum(-1L).to_type(torch.float64).data<float>().ToArray()

                let expected =
                    counts
                    |> Array.map (fun n ->
                        let d0 = 1.24 * Math.Pow(max n 19.0 - 15.0, 1.0 / 3.0) - 1.8
                        1.0 / (1.0 + (0.25 / d0) ** 2.0))

                // The one-hot weights are exact (exp(−1e4) = 0), so pTM = f₀·n/(n + 1e-10) with f₀ = 1/(1 + q),
                // q = (0.25/d₀)²: f₀ errs q/(1 + q)·(2·δd₀/d₀ + 3u) + 2u relative (d0RelativeError; the division,
                // square, sum and reciprocal), the row's L-term sum and division (L + 1)·u, the 1e-10 a relative
                // 1e-10/n; the float64 expectation's cast to the dtype adds u.
                let n64 = torch.tensor counts

                let q =
                    (0.25
                     / (1.24 * (n64.clamp_min (19.0.ToScalar()) - 15.0).pow((1.0 / 3.0).ToScalar())
                        - 1.8))
                        .square()

                let relF = q / (1.0 + q) * (2.0 * d0RelativeError u n64 + 3.0 * u) + 2.0 * u
                let want = torch.tensor expected
                let tol = want * (relF + (float l + 1.0) * u + 1e-10 / n64 + u)
                let ptm = AlignedError.ptm oneHot real
                Tol.within "pTM" (d64 ptm - want) tol
                let logits = torch.randn ([| 2L; l; l; 64L |], dtype = dtype, generator = g)
                let perm = torch.randperm (l, generator = g)
                let permuted = logits.index_select(1L, perm).index_select(2L, perm)
                let ptmA = AlignedError.ptm logits real
                let ptmB = AlignedError.ptm permuted (real.index_select (1L, perm))
                // Equal in exact arithmetic. Each side: every f_k errs ≤ 2·δd₀/d₀ + 5u relative (as above, with
                // q/(1 + q) ≤ 1), each pair's Σ_k P_k f_k (2K + 3)·u relative (the softmax's normalisation, the
                // products, the K-term sum of positive terms, K = 64), each row's L-term sum and division (L + 1)·u;
                // the maximum is exact. Two sides.
                let relF = 2.0 * d0RelativeError u n64 + 5.0 * u
                let tolPerm = 2.0 * d64 ptmA * (relF + (2.0 * 64.0 + 3.0) * u + (float l + 1.0) * u)
                Tol.within "permuted" (d64 (ptmB - ptmA)) tolPerm)
        ]

[<Tests>]
let tests =
    testList
        "Models/StructureHeads"
        [
            for dtype, name in Props.dtypes do
                headProperties dtype name

            test "bin centres: pAE 0.25 + 0.5k (k < 64), pLDDT 0.01 + 0.02k (k < 50)" {
                use _ = torch.NewDisposeScope()
                let pae = AlignedError.binCentres torch.float32 cpu
                let expected = torch.arange (64L, dtype = torch.float32) * 0.5 + 0.25
                Tol.close "pAE centres (exact)" 0.0 pae expected
                // linspace(0, 1, 51) forms its edges as k·step or 1 − (50 − k)·step (step = 1/50 rounded): ≤ 2u each
                // (k·|δstep| ≤ 0.5u, the product and the sum u each on values ≤ 1); the midpoint's sum rounds ≤ 2u more
                // and halving is exact: ≤ 3u per centre (u of the dtype). k·0.02 + 0.01 in float64 rounds ≤ 3u₆₄.
                let pl = Plddt.binCentresFor Plddt.Bins torch.float64 cpu
                let tol64 = Tol.derived torch.float64 6.0 1.0
                Tol.close "pLDDT centres" tol64 pl (torch.arange (50L, dtype = torch.float64) * 0.02 + 0.01)
                let pl32 = Plddt.binCentresFor Plddt.Bins torch.float32 cpu
                Tol.close "pLDDT centres (float32)" (Tol.derived torch.float32 3.0 1.0 + tol64) (d64 pl32) pl
            }

            test "ideal backbone: ESM's BB_COORDINATES, so ‖N−CA‖ = 1.459151 Å, ‖CA−C‖ = 1.5251 Å, ∠N-CA-C = 111.113°" {
                // evolutionaryscale/esm `esm/utils/constants/physics.py` BB_COORDINATES: N (0.5256, 1.3612, 0),
                // CA (0, 0, 0), C (−1.5251, 0, 0). By hand: ‖N−CA‖ = √(0.5256² + 1.3612²) = √2.1291208 = 1.4591507 Å,
                // ∠N-CA-C = acos(−0.5256 / 1.4591507) = 111.11306°.
                use _ = torch.NewDisposeScope()
                let bb = BackboneHead.idealBackbone torch.float64 cpu

                let esm =
                    torch.tensor (
                        [| 0.5256; 1.3612; 0.0; 0.0; 0.0; 0.0; -1.5251; 0.0; 0.0 |],
                        ReadOnlySpan<int64> [| 3L; 3L |],
                        dtype = torch.float64
                    )

                Tol.close "coordinates (rows N, CA, C)" 0.0 bb esm
                let nCa, caC, angle = BackboneChecks.idealGeometry.Value
                Expect.floatClose { absolute = 5e-8; relative = 0.0 } nCa 1.4591507 "‖N−CA‖ (Å)"
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } caC 1.5251 "‖CA−C‖ (Å)"
                Expect.floatClose { absolute = 5e-6; relative = 0.0 } angle 111.11306 "∠N-CA-C (°)"
                // float32 holds the same constants to one rounding each.
                let bb32 = BackboneHead.idealBackbone torch.float32 cpu
                Tol.close "float32" (Tol.derived torch.float32 1.0 1.5251) (bb32.to_type torch.float64) esm
            }

            test "d₀ = 1.24·(max(N, 19) − 15)^(1/3) − 1.8" {
                use _ = torch.NewDisposeScope()
                let n = torch.tensor ([| 1.0; 19.0; 100.0 |])
                let d19 = 1.24 * Math.Cbrt 4.0 - 1.8
                let expected = torch.tensor ([| d19; d19; 1.24 * Math.Cbrt 85.0 - 1.8 |])
                // Both sides within d0RelativeError (the expectation's Math.Cbrt without the exponent's rounding).
                let tol = 2.0 * expected.abs () * d0RelativeError (Tol.unitRoundoff torch.float64) n
                Tol.within "d0" (AlignedError.d0 n - expected) tol
            }

            test "pair features: entry [i, j] is (q_j ⊙ k_i, q_j − k_i)" {
                use _ = torch.NewDisposeScope()

                let y =
                    torch.randn ([| 2L; 4L; 6L |], dtype = torch.float64, generator = new torch.Generator(5UL))

                let f = PairwiseHead.pairFeatures y
                Expect.sequenceEqual f.shape [| 2L; 4L; 4L; 6L |] "shape"

                for i in 0L .. 3L do
                    for j in 0L .. 3L do
                        let q = y.select(1L, j).narrow(-1L, 0L, 3L)
                        let k = y.select(1L, i).narrow(-1L, 3L, 3L)
                        let entry = f.select(1L, i).select(1L, j)
                        Tol.close (sprintf "[%d, %d]" i j) 0.0 entry (torch.cat ([| q * k; q - k |], -1L))
            }

            test
                "the pair head is linear2(LN(GELU(linear1(pairFeatures(downproject x))))); groups are its channel slices" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(23UL)

                for bias in [ false; true ] do
                    let head = new PairwisePredictionHead(12L, 10L, 14L, 9L, bias)
                    head.``to`` torch.float64 |> ignore
                    Init.initialise g head
                    let sd = head.state_dict ()

                    let p (name: string) =
                        if sd.ContainsKey name then sd.[name] else null

                    let x = torch.randn ([| 2L; 5L; 12L |], dtype = torch.float64, generator = g)
                    let y = torch.nn.functional.linear (x, p "downproject.weight", p "downproject.bias")

                    let h =
                        torch.nn.functional.linear (PairwiseHead.pairFeatures y, p "linear1.weight", p "linear1.bias")

                    let h =
                        torch.nn.functional.layer_norm (
                            torch.nn.functional.gelu h,
                            [| 14L |],
                            p "norm.weight",
                            p "norm.bias",
                            1e-5
                        )

                    let expected = torch.nn.functional.linear (h, p "linear2.weight", p "linear2.bias")
                    let full = head.forward x
                    Tol.close (sprintf "forward (bias %b)" bias) 1e-12 full expected
                    let groups = head.ForwardGroups(x, [| 4L; 3L |])
                    Tol.close "group 0" 1e-12 groups.[0] (expected.narrow (-1L, 0L, 4L))
                    Tol.close "group 1" 1e-12 groups.[1] (expected.narrow (-1L, 4L, 3L))
                    Expect.isTrue (groups.[1].is_contiguous()) "each group is its own contiguous tensor"

                    Expect.throwsT<ArgumentOutOfRangeException>
                        (fun () -> head.ForwardGroups(x, [| 5L; 5L |]) |> ignore)
                        "widths past the head's channels"
            }

            test "D7: swapping the q and k roles transposes the pair logits (random weights)" {
                use _ = torch.NewDisposeScope()

                let make () =
                    new PairwisePredictionHead(12L, 10L, 14L, 6L, false)

                let head = make ()
                head.``to`` torch.float64 |> ignore
                Init.initialise (new torch.Generator(11UL)) head
                let swapped = make ()
                swapped.``to`` torch.float64 |> ignore
                let sd = head.state_dict ()
                let down = sd.["downproject.weight"]
                let w1 = sd.["linear1.weight"]

                let replacement =
                    [
                        "downproject.weight", torch.cat ([| down.narrow (0L, 5L, 5L); down.narrow (0L, 0L, 5L) |], 0L)
                        // The difference half flips sign when q and k swap roles; negate its weights.
                        "linear1.weight", torch.cat ([| w1.narrow (1L, 0L, 5L); -(w1.narrow (1L, 5L, 5L)) |], 1L)
                    ]
                    |> dict

                Esm3Structure.Io.Checkpoint.loadInto
                    "swapped"
                    [
                        for kv in sd ->
                            kv.Key,
                            (match replacement.TryGetValue kv.Key with
                             | true, t -> t
                             | _ -> kv.Value)
                    ]
                    swapped

                let x =
                    torch.randn ([| 2L; 5L; 12L |], dtype = torch.float64, generator = new torch.Generator(12UL))

                let a = head.forward x
                let b = swapped.forward x
                Expect.sequenceEqual a.shape [| 2L; 5L; 5L; 6L |] "shape"
                // Exact in exact arithmetic; BLAS may order the sums differently for different rows.
                Tol.close "swapped = transposed" 1e-12 b (a.transpose (1L, 2L))
                Expect.isGreaterThan (Tol.maxAbsDiff a (a.transpose (1L, 2L))) 1e-3 "the map is not symmetric"
            }
        ]
