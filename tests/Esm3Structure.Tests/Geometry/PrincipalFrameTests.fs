module Esm3Structure.Tests.Geometry.PrincipalFrameTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Tests

let private cpu = torch.CPU

/// A skewed, anisotropic cloud: exponential draws (third moment 2σ³ along each axis) scaled by 6, 3 and 1.5 Å,
/// turned by a random rotation and moved by up to 20 Å. Shapes: -> [*, N, 3]
let private cloud (g: torch.Generator) (batch: int64[]) (n: int64) (dtype: torch.ScalarType) =
    let shape = Array.append batch [| n; 3L |]

    let uniform =
        torch.rand(shape, dtype = dtype, generator = g).clamp_min((1e-12).ToScalar())

    let scales = torch.tensor ([| 8.0; 3.0; 1.0 |], dtype = dtype)
    let axes = -(uniform.log ()) * scales
    let placement = Frame.random batch 20.0 dtype cpu g
    Frame.applyEach placement axes

/// A bound on |coordinates(points) − exact| entrywise, for coordinates computed in any dtype and `exact` the
/// principal coordinates of the same points in exact arithmetic (stood in for by float64), derived a posteriori
/// from the computed frame: with C the covariance (float64, from the points as given), each computed axis v̂ₖ has
/// residual rₖ = ‖C v̂ₖ − (v̂ₖᵀ C v̂ₖ) v̂ₖ‖ and lies within sin θₖ ≤ rₖ / gapₖ of the exact eigenvector (Davis–Kahan,
/// gapₖ the distance of its Rayleigh quotient to the other eigenvalues), so within √2 sin θₖ once its sign is right.
/// A coordinate ⟨p − ĉ, v̂ₖ⟩ then differs from the exact one by ≤ |p − c|·√2 sin θₖ + |ĉ − c| + the rounding of the
/// final product (≤ 4u·(|p| + |ĉ|)·√3). The sign is right when the exact third moment along the axis exceeds its
/// possible change (≤ 3 Σ|dᵢ|³ · √2 sin θₖ): `signs` says whether it does for the two signed axes.
let private posterior (points: torch.Tensor) (weights: torch.Tensor) =
    let frame = PrincipalFrame.ofPoints points weights
    let u = Tol.unitRoundoff points.dtype
    let p = points.to_type torch.float64
    let w = weights.to_type(torch.float64).unsqueeze -1L
    let total = w.sum (-2L)
    let c = (w * p).sum(-2L) / total // [*, 3]
    let d = p - c.unsqueeze -2L
    let covariance = (w * d).transpose(-1L, -2L).matmul(d) / total.unsqueeze -1L
    let eigen = torch.linalg.eigvalsh covariance // [*, 3] ascending
    let axes = frame.R.to_type torch.float64 // columns
    let cv = covariance.matmul axes // [*, 3, 3]: C v̂ₖ as columns
    let rayleigh = (axes * cv).sum(-2L) // [*, 3]
    let residual = (cv - axes * rayleigh.unsqueeze -2L).norm(-2, false) // [*, 3]
    // Axis k (descending) against the other eigenvalues: ascending index 2 − k.
    let gaps =
        [|
            for k in 0..2 do
                let others =
                    [|
                        for j in 0..2 do
                            if j <> 2 - k then
                                eigen.select (-1L, int64 j)
                    |]

                let q = rayleigh.select (-1L, int64 k)
                torch.minimum ((q - others.[0]).abs(), (q - others.[1]).abs())
        |]
        |> fun g -> torch.stack (g, -1L)

    let sinTheta = residual / gaps // [*, 3]
    let norms = (d.norm (-1, false)) * w.squeeze (-1L) // [*, N]
    let reach = norms.amax ([| -1L |]) // [*]
    let centroidError = (frame.T.to_type torch.float64 - c).norm(-1, false) // [*]
    let scale = p.abs().max().ToDouble() + frame.T.abs().max().ToDouble()

    let bound =
        (reach.unsqueeze -1L * sqrt 2.0 * sinTheta + centroidError.unsqueeze -1L).max().ToDouble()
        + 4.0 * sqrt 3.0 * u * scale

    let exact = Frame.invertApplyEach { R = axes; T = c } p
    let moments = (w * exact.pow ((3.0).ToScalar())).sum(-2L) // [*, 3]

    let change =
        3.0
        * (norms.pow ((3.0).ToScalar())).sum(-1L).unsqueeze -1L
        * sqrt 2.0
        * sinTheta

    let signs =
        (moments.narrow(-1L, 0L, 2L).abs() - change.narrow (-1L, 0L, 2L)).min().ToDouble() > 0.0

    bound, signs

let private properties (dtype: torch.ScalarType) (name: string) =
    let u = Tol.unitRoundoff dtype
    let maxAbs (x: torch.Tensor) = x.abs().max().ToDouble()

    testList
        name
        [
            Props.property
                "coordinates in the principal frame are invariant under proper rigid motions"
                (fun (c: GeoCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let n = 32L
                    let points = cloud g c.Batch n dtype
                    let weights = torch.ones (Array.append c.Batch [| n |], dtype = dtype)
                    let motion = Frame.random c.Batch 30.0 dtype cpu g
                    let moved = Frame.applyEach motion points
                    let a = PrincipalFrame.coordinates points weights
                    let b = PrincipalFrame.coordinates moved weights
                    // Each side within its a-posteriori bound of the exact coordinates of its own input; the inputs
                    // differ from an exact motion by the rounding of R p + T (≤ 8u·m per entry, FrameTests), which moves
                    // exact coordinates by ≤ dp (through the centroid) + √3ρ·√2·sin θ with sin θ ≤ ‖δC‖/gap,
                    // ‖δC‖ ≤ 3·2ρ·2dp (Frobenius over 9 entries of d dᵀ's change): here folded in via the moved side's
                    // gap, which is the exact cloud's up to rounding.
                    let boundA, signsA = posterior points weights
                    let boundB, signsB = posterior moved weights
                    let m = maxAbs points + maxAbs motion.T
                    let dp = 8.0 * u * m
                    let p64 = points.to_type torch.float64
                    let w64 = weights.to_type torch.float64
                    let exact = PrincipalFrame.coordinates p64 w64
                    let rho = maxAbs exact
                    let variances = (exact * exact).mean([| -2L |])

                    let gap =
                        (variances.narrow (-1L, 0L, 2L) - variances.narrow (-1L, 1L, 2L)).min().ToDouble()

                    let motionError =
                        2.0 * dp + sqrt 3.0 * rho * sqrt 2.0 * (12.0 * rho * 2.0 * dp / gap)
                    // Where rounding could flip a sign (a third moment within its own error), the frame is not
                    // determined and the claim does not apply.
                    if signsA && signsB then
                        Tol.close "principal coordinates" (boundA + boundB + motionError) b a)

            Props.property "points of weight 0 do not move the frame and get zeros" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let points = cloud g c.Batch 24L dtype

                let extra =
                    100.0
                    * torch.randn (Array.append c.Batch [| 5L; 3L |], dtype = dtype, generator = g)

                let weights = torch.ones (Array.append c.Batch [| 24L |], dtype = dtype)
                let all = torch.cat ([| points; extra |], -2L)

                let allWeights =
                    torch.cat ([| weights; torch.zeros (Array.append c.Batch [| 5L |], dtype = dtype) |], -1L)

                let alone = PrincipalFrame.coordinates points weights
                let padded = PrincipalFrame.coordinates all allWeights
                // Both within their a-posteriori bounds of the same exact coordinates (zero weights add nothing).
                let boundA, signsA = posterior points weights
                let boundB, signsB = posterior all allWeights

                if signsA && signsB then
                    Tol.close "weighted points" (boundA + boundB) (padded.narrow (-2L, 0L, 24L)) alone

                Tol.close "weight-0 points" 0.0 (padded.narrow (-2L, 24L, 5L)) (torch.zeros_like extra))
        ]

[<Tests>]
let tests =
    testList
        "Geometry/PrincipalFrame"
        [
            for dtype, name in Props.dtypes do
                properties dtype name

            test
                "real chains: centred, uncorrelated axes in descending variance, positive third moments, a proper motion" {
                use _ = torch.NewDisposeScope()

                for name in [ "1ubq_A"; "1ctf_A"; "3mqi_A"; "1a8o_A"; "2erl_A" ] do
                    let chain = StructureFile.read (Data.small name) None
                    let ca = (ProteinChain.backbone torch.float64 chain).select(1L, 1L)
                    let present = ca.isfinite().all(-1L)
                    let ca = ca.nan_to_num ()
                    let w = present.to_type torch.float64
                    let frame = PrincipalFrame.ofPoints ca w
                    let x = PrincipalFrame.coordinates ca w
                    let real = x.index present
                    let n = real.shape.[0]
                    let scale = ca.abs().max().ToDouble()
                    // Sums of n coordinates of size ≤ scale: a few n·u·scale.
                    let tol = Tol.derived torch.float64 (4.0 * float n) (scale * scale)

                    Tol.close
                        (name + ": centroid")
                        tol
                        (real.mean [| 0L |])
                        (torch.zeros 3L |> fun t -> t.to_type torch.float64)

                    let covariance = real.t().matmul(real) / float n
                    let off = covariance - torch.diag (torch.diag covariance)
                    Tol.close (name + ": covariance off the diagonal") tol off (torch.zeros_like off)
                    let v = torch.diag(covariance).data<float>().ToArray()
                    Expect.isTrue (v.[0] > v.[1] && v.[1] > v.[2]) (sprintf "%s: variances descend %A" name v)
                    let third = real.pow((3.0).ToScalar()).sum([| 0L |]).data<float>().ToArray()
                    Expect.isTrue (third.[0] > 0.0 && third.[1] > 0.0) (sprintf "%s: third moments %A" name third)
                    let det = torch.linalg.det(frame.R).ToDouble()
                    // Orthonormal eigenvectors to a few u, and one cross product: |det − 1| ≤ 32u (generous).
                    Tol.atMost (name + ": |det R − 1|") (Tol.derived torch.float64 32.0 1.0) (abs (det - 1.0))
                    // The coordinates are the chain moved rigidly: the frame maps them back onto it.
                    Tol.close (name + ": frame ∘ coordinates") tol (Frame.applyEach frame real) (ca.index present)
            }

            test "a cloud of weight 0 gets the identity at the origin" {
                use _ = torch.NewDisposeScope()
                let points = torch.randn ([| 2L; 6L; 3L |], dtype = torch.float64)
                let weights = torch.cat ([| torch.ones (1L, 6L); torch.zeros (1L, 6L) |], 0L)
                let frame = PrincipalFrame.ofPoints points (weights.to_type torch.float64)
                Tol.close "identity" 0.0 (frame.R.select (0L, 1L)) (torch.eye (3L, dtype = torch.float64))
                Tol.close "origin" 0.0 (frame.T.select (0L, 1L)) (torch.zeros (3L, dtype = torch.float64))
            }
        ]
