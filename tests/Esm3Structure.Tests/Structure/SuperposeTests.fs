module Esm3Structure.Tests.Structure.SuperposeTests

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tests.StructureTestKit

let private config = { Props.baseConfig with maxTest = 40 }

let private t64 (rows: float[][]) =
    torch.tensor(Array.concat rows, dtype = f64).reshape(-1L, 3L)

let private eye3 () = torch.eye (3L, 3L, dtype = f64)

let private det (r: torch.Tensor) = torch.linalg.det r

/// Checks a proper rotation: Rᵀ R = I and det R = +1.
let private expectProper (tol: float) (r: torch.Tensor) =
    let rtr = r.transpose(-1L, -2L).matmul r
    Tol.close "RᵀR = I" tol rtr (eye3().to_type(r.dtype).expand_as rtr)
    Tol.close "det R = +1" tol (det r) (torch.ones_like (det r))

/// The float32 unit roundoff 2⁻²⁴: casting a float64 coordinate x to float32 moves it by at most u·|x|.
let private u32 = Tol.unitRoundoff f32

let private maxAbs (x: torch.Tensor) = x.abs().max().ToDouble()

/// Bound on each entry of the Kabsch rotation's change when every mobile coordinate moves by at most dp and every
/// target coordinate by at most dq (e.g. a cast to float32: dp = u·max|p|). Centring keeps each moved point within
/// 2√3·d (its own move and the centroid's) in 2-norm, so H = Σ p̃ q̃ᵀ moves by ‖δH‖_F ≤ 2√3·Σᵢ (dp|q̃ᵢ| + dq|p̃ᵢ|).
/// The rotation is H's orthogonal polar factor (det H > 0 here, so no sign flip), whose first-order condition number
/// in the Frobenius norm is 2/(σ₂ + σ₃), σ₁ ≥ σ₂ ≥ σ₃ the singular values of H (Higham, "Functions of Matrices",
/// Thm 8.9): it is ill-conditioned only for a nearly collinear cloud. Computed on the float64 points.
/// Shapes: p, q [N, 3] float64
let private kabschShift (p: torch.Tensor) (q: torch.Tensor) (dp: float) (dq: float) =
    let pc = p - p.mean ([| 0L |], true)
    let qc = q - q.mean ([| 0L |], true)
    let sv = torch.linalg.svdvals (pc.transpose(0L, 1L).matmul qc)

    let dH =
        2.0
        * sqrt 3.0
        * (dp * qc.norm(-1, false).sum().ToDouble()
           + dq * pc.norm(-1, false).sum().ToDouble())

    2.0 * dH / (sv.[1L].ToDouble() + sv.[2L].ToDouble())

/// Mirror image through the yz plane (x -> -x).
let private mirrorX (x: torch.Tensor) =
    x * torch.tensor ([| -1.0; 1.0; 1.0 |], dtype = x.dtype)

[<Tests>]
let tests =
    testList
        "Structure/Superpose"
        [
            testPropertyWithConfig config "kabsch recovers a random rigid motion exactly (float64)"
            <| Prop.forAll (seedAndSize 3 40) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let p = randomCloud g [||] n
                let r = randomRotation g [||]
                let t = randomTranslation g [||]
                let q = moveRigid r t p
                let { R = rFit; T = tFit } = Superpose.kabsch p q None
                Tol.close "R" 1e-10 rFit r
                Tol.close "t" 1e-10 tFit t
                Expect.equal rFit.dtype f64 "float64 in, float64 out"
                Tol.close "superpose reproduces the target" 1e-10 (Superpose.superpose p q None) q
                Tol.close "rmsd of a rigid copy" 1e-10 (Superpose.rmsd p q None) (torch.tensor 0.0))

            testPropertyWithConfig config "kabsch recovers a random rigid motion (float32 in, float32 out)"
            <| Prop.forAll (seedAndSize 3 40) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let p = randomCloud g [||] n
                let r = randomRotation g [||]
                let t = randomTranslation g [||]
                let q = moveRigid r t p
                let { R = rFit; T = tFit } = Superpose.kabsch (p.to_type f32) (q.to_type f32) None
                Expect.equal rFit.dtype f32 "float32 in, float32 out"
                // The fit runs in float64 (its own rounding is 2⁻²⁹ times smaller than what follows); the float32
                // error is the inputs' cast (u·max|p|, u·max|q| per coordinate) through the polar factor's
                // conditioning (kabschShift), then the output's cast (u per entry).
                let sp, sq = maxAbs p, maxAbs q
                let dR = kabschShift p q (u32 * sp) (u32 * sq)
                Tol.close "R float32" (dR + u32) (rFit.to_type f64) r
                // t = c_q − R c_p: the centroids move by ≤ u·S, the rotation's move reaches t through |c_p|₂, and the
                // output cast adds u·|t|.
                let cp = p.mean([| 0L |]).norm().ToDouble()
                Tol.close "t float32" (u32 * (sp + sq) + dR * cp + u32 * maxAbs t) (tFit.to_type f64) t
                let rmsd = Superpose.rmsd (p.to_type f32) (q.to_type f32) None
                Expect.equal rmsd.dtype f32 "rmsd dtype"
                // The optimal fit does no worse than the true motion, which leaves residuals R δpᵢ − δqᵢ of 2-norm
                // ≤ √3·u·(max|p| + max|q|).
                Tol.close
                    "rmsd of a rigid copy float32"
                    (sqrt 3.0 * u32 * (sp + sq))
                    (rmsd.to_type f64)
                    (torch.tensor 0.0))

            testPropertyWithConfig config "a mirrored target still gives a proper rotation (det +1), and it is optimal"
            <| Prop.forAll (seedAndSize 4 40) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let p = randomCloud g [||] n
                let q = moveRigid (randomRotation g [||]) (randomTranslation g [||]) (mirrorX p)
                let rFit = (Superpose.kabsch p q None).R
                expectProper 1e-10 rFit
                // a random cloud is chiral, so no rotation maps it onto its mirror image
                let best = (Superpose.rmsd p q None).ToDouble()
                Expect.isGreaterThan best 1e-3 "mirror image of a chiral cloud"
                // no proper rotation (about the centroids) does better than the fitted one
                for _ in 1..20 do
                    let trial = moveRigid (randomRotation g [||]) (torch.zeros (3L, dtype = f64)) p
                    let centred = trial - trial.mean ([| -2L |], true) + q.mean ([| -2L |], true)

                    Expect.isGreaterThanOrEqual
                        ((Superpose.rmsdNoSuperpose centred q None).ToDouble())
                        (best - 1e-9)
                        "optimal")

            testPropertyWithConfig
                config
                "rmsd is at most the unsuperposed rmsd and is invariant under rigid motion of either set"
            <| Prop.forAll (seedAndSize 3 30) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let p = randomCloud g [||] n
                let q = randomCloud g [||] n
                let mask = randomMask g [||] n 3
                let rmsd = Superpose.rmsd p q (Some mask)

                Expect.isLessThanOrEqual
                    (rmsd.ToDouble())
                    ((Superpose.rmsdNoSuperpose p q (Some mask)).ToDouble() + 1e-12)
                    "≤"

                let p' = moveRigid (randomRotation g [||]) (randomTranslation g [||]) p
                let q' = moveRigid (randomRotation g [||]) (randomTranslation g [||]) q
                Tol.close "mobile moved" 1e-10 (Superpose.rmsd p' q (Some mask)) rmsd
                Tol.close "target moved" 1e-10 (Superpose.rmsd p q' (Some mask)) rmsd
                // the fitted motion is the one whose application gives that rmsd
                Tol.close
                    "rmsd = rmsdNoSuperpose after superpose"
                    1e-10
                    (Superpose.rmsdNoSuperpose (Superpose.superpose p q (Some mask)) q (Some mask))
                    rmsd)

            testPropertyWithConfig config "masked-out points holding NaN do not change the result"
            <| Prop.forAll (seedAndSize 3 30) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let p = randomCloud g [||] n

                let q =
                    moveRigid (randomRotation g [||]) (randomTranslation g [||]) (p + randomCloud g [||] n * 0.1)

                let pJ, qJ, mask = withJunkRows g (1 + seed % 5) p q
                let { R = r0; T = t0 } = Superpose.kabsch p q None
                let { R = r1; T = t1 } = Superpose.kabsch pJ qJ (Some mask)
                Tol.close "R" 1e-10 r1 r0
                Tol.close "t" 1e-10 t1 t0
                Tol.close "rmsd" 1e-10 (Superpose.rmsd pJ qJ (Some mask)) (Superpose.rmsd p q None)

                Tol.close
                    "rmsdNoSuperpose"
                    1e-10
                    (Superpose.rmsdNoSuperpose pJ qJ (Some mask))
                    (Superpose.rmsdNoSuperpose p q None)

                let moved = Superpose.superpose pJ qJ (Some mask)
                let present = mask.nonzero().squeeze -1L

                Tol.close
                    "present points moved alike"
                    1e-10
                    (moved.index_select (0L, present))
                    (Superpose.superpose p q None)
                // float32 with NaN junk behaves too
                let r32 = (Superpose.kabsch (pJ.to_type f32) (qJ.to_type f32) (Some mask)).R
                // The float32 cast of the present points through the polar factor's conditioning (kabschShift),
                // plus the output cast; the float64 fit's own rounding is 2⁻²⁹ times smaller.
                Tol.close
                    "R float32 (NaN junk)"
                    (kabschShift p q (u32 * maxAbs p) (u32 * maxAbs q) + u32)
                    (r32.to_type f64)
                    r0)

            testPropertyWithConfig config "a [2, 3, N, 3] batch equals the per-item results"
            <| Prop.forAll (seedAndSize 3 25) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let batch = [| 2L; 3L |]
                let p = randomCloud g batch n

                let q =
                    moveRigid (randomRotation g batch) (randomTranslation g batch) p
                    + randomCloud g batch n * 0.2

                let mask = randomMask g batch n 3
                let { R = r; T = t } = Superpose.kabsch p q (Some mask)
                let rmsd = Superpose.rmsd p q (Some mask)
                let plain = Superpose.rmsdNoSuperpose p q (Some mask)
                Expect.sequenceEqual r.shape [| 2L; 3L; 3L; 3L |] "R shape"
                Expect.sequenceEqual t.shape [| 2L; 3L; 3L |] "t shape"
                Expect.sequenceEqual rmsd.shape [| 2L; 3L |] "rmsd shape"

                for i in 0L .. 1L do
                    for j in 0L .. 2L do
                        let item (x: torch.Tensor) = x.select(0L, i).select(0L, j)
                        let { R = ri; T = ti } = Superpose.kabsch (item p) (item q) (Some(item mask))
                        Tol.close "R item" 1e-10 (item r) ri
                        Tol.close "t item" 1e-10 (item t) ti
                        Tol.close "rmsd item" 1e-10 (item rmsd) (Superpose.rmsd (item p) (item q) (Some(item mask)))

                        Tol.close
                            "plain item"
                            1e-10
                            (item plain)
                            (Superpose.rmsdNoSuperpose (item p) (item q) (Some(item mask))))

            test "fewer than 3 present points: identity rotation, centroid translation, never NaN" {
                use _ = torch.NewDisposeScope()
                let g = generator 7
                let p = randomCloud g [||] 5
                let q = randomCloud g [||] 5
                let two = torch.tensor [| true; false; true; false; false |]
                let { R = r; T = t } = Superpose.kabsch p q (Some two)
                Tol.close "R = I" 0.0 r (eye3 ())
                let idx = two.nonzero().squeeze -1L
                let centroid (x: torch.Tensor) = x.index_select(0L, idx).mean [| 0L |]
                Tol.close "t = centroid difference" 1e-12 t (centroid q - centroid p)
                let none = torch.zeros (5L, dtype = torch.ScalarType.Bool)
                let pNaN = filled [| 5L; 3L |] Double.NaN
                let { R = r0; T = t0 } = Superpose.kabsch pNaN pNaN (Some none)
                Tol.close "R = I (no point)" 0.0 r0 (eye3 ())
                Tol.close "t = 0 (no point)" 0.0 t0 (torch.zeros (3L, dtype = f64))
                Tol.close "rmsd = 0 (no point)" 0.0 (Superpose.rmsd pNaN pNaN (Some none)) (torch.tensor 0.0)

                Tol.close
                    "rmsdNoSuperpose = 0 (no point)"
                    0.0
                    (Superpose.rmsdNoSuperpose pNaN pNaN (Some none))
                    (torch.tensor 0.0)
                // one point: RMSD after centroid matching is 0
                let one = torch.tensor [| false; false; false; true; false |]
                Tol.close "rmsd (one point)" 1e-12 (Superpose.rmsd p q (Some one)) (torch.tensor 0.0)
            }

            test "hand case: a square against the same square scaled by 2 has RMSD √2, wherever it is placed" {
                use _ = torch.NewDisposeScope()
                // corners (±1, ±1, 0): the best fit is the identity about the common centroid, and every corner is left
                // |2v − v| = |v| = √2 away, so RMSD = √2.
                let square =
                    t64
                        [|
                            [| 1.0; 1.0; 0.0 |]
                            [| -1.0; 1.0; 0.0 |]
                            [| -1.0; -1.0; 0.0 |]
                            [| 1.0; -1.0; 0.0 |]
                        |]

                let big = square * 2.0
                Tol.close "rmsd" 1e-12 (Superpose.rmsd square big None) (torch.tensor (sqrt 2.0))
                let r = (Superpose.kabsch square big None).R
                Tol.close "R = I" 1e-12 r (eye3 ())
                let g = generator 11
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) big

                Tol.close
                    "rmsd after moving the big square"
                    1e-10
                    (Superpose.rmsd square moved None)
                    (torch.tensor (sqrt 2.0))
                // unsuperposed: the same numbers by hand, √2
                Tol.close "rmsdNoSuperpose" 1e-12 (Superpose.rmsdNoSuperpose square big None) (torch.tensor (sqrt 2.0))
            }

            test "hand case: a 90° turn about z and a shift are recovered exactly" {
                use _ = torch.NewDisposeScope()

                let p =
                    t64
                        [|
                            [| 1.0; 0.0; 0.0 |]
                            [| 0.0; 1.0; 0.0 |]
                            [| 0.0; 0.0; 1.0 |]
                            [| 0.0; 0.0; 0.0 |]
                        |]
                // (x, y, z) -> (−y, x, z) + (5, −2, 3)
                let q =
                    t64
                        [|
                            [| 5.0; -1.0; 3.0 |]
                            [| 4.0; -2.0; 3.0 |]
                            [| 5.0; -2.0; 4.0 |]
                            [| 5.0; -2.0; 3.0 |]
                        |]

                let { R = r; T = t } = Superpose.kabsch p q None
                Tol.close "R" 1e-12 r (t64 [| [| 0.0; -1.0; 0.0 |]; [| 1.0; 0.0; 0.0 |]; [| 0.0; 0.0; 1.0 |] |])
                Tol.close "t" 1e-12 t (torch.tensor [| 5.0; -2.0; 3.0 |])
            }

            test "hand case: a planar set and its mirror image differ by a proper 180° turn (RMSD 0)" {
                use _ = torch.NewDisposeScope()
                // Points in the z = 0 plane. Mirroring x -> −x equals the 180° turn about y, diag(−1, 1, −1), on this set,
                // so the fit must find that rotation (det +1), not the reflection, with RMSD 0.
                let p =
                    t64
                        [|
                            [| 1.0; 2.0; 0.0 |]
                            [| -3.0; 0.5; 0.0 |]
                            [| 2.0; -1.0; 0.0 |]
                            [| 0.5; 4.0; 0.0 |]
                        |]

                let q = mirrorX p
                let r = (Superpose.kabsch p q None).R
                Tol.close "R" 1e-12 r (t64 [| [| -1.0; 0.0; 0.0 |]; [| 0.0; 1.0; 0.0 |]; [| 0.0; 0.0; -1.0 |] |])
                Tol.close "rmsd" 1e-7 (Superpose.rmsd p q None) (torch.tensor 0.0)
            }

            test "the real 1ubq CA trace: a rigid copy has RMSD 0 and the motion is recovered" {
                use _ = torch.NewDisposeScope()
                let ca = ubiquitinCa ()
                Expect.equal ca.shape.[0] 76L "76 CA atoms"
                let g = generator 3
                let r = randomRotation g [||]
                let t = randomTranslation g [||]
                let moved = moveRigid r t ca
                let { R = rFit; T = tFit } = Superpose.kabsch ca moved None
                Tol.close "R" 1e-10 rFit r
                Tol.close "t" 1e-10 tFit t
                Tol.close "rmsd" 1e-10 (Superpose.rmsd ca moved None) (torch.tensor 0.0)

                // The float32 cast leaves residuals of 2-norm ≤ √3·u·(max|ca| + max|moved|) under the true motion,
                // which the optimal fit can only improve on.
                Tol.close
                    "rmsd float32"
                    (sqrt 3.0 * u32 * (maxAbs ca + maxAbs moved))
                    ((Superpose.rmsd (ca.to_type f32) (moved.to_type f32) None).to_type f64)
                    (torch.tensor 0.0)
            }

            test "shape errors name the argument" {
                use _ = torch.NewDisposeScope()
                let a = torch.zeros (4L, 3L, dtype = f64)
                let ex = Expect.throwsT<ArgumentException>
                ex (fun () -> Superpose.kabsch a (torch.zeros (5L, 3L, dtype = f64)) None |> ignore) "target shape"

                ex
                    (fun () ->
                        Superpose.kabsch (torch.zeros (4L, 2L, dtype = f64)) (torch.zeros (4L, 2L, dtype = f64)) None
                        |> ignore)
                    "trailing 3"

                ex
                    (fun () ->
                        Superpose.rmsd a a (Some(torch.ones (3L, dtype = torch.ScalarType.Bool)))
                        |> ignore)
                    "mask shape"
            }
        ]
