module Esm3Structure.Tests.Geometry.RotationTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Tests

let private cpu = torch.CPU

let private properties (dtype: torch.ScalarType) (name: string) =
    // Every random rotation's entries lie within e of an exact rotation (21 roundings on values ≤ 1, derived in
    // GeoTol.quatMatrixEntry); the bounds below count what each property adds to that.
    let e = GeoTol.quatMatrixEntry dtype
    let maxAbs (x: torch.Tensor) = x.abs().max().ToDouble()

    /// Bound on Rᵀ(R v) − v, entrywise, for a computed rotation r. Exactly, (RᵀR − I)v has entries
    /// ≤ 3·defect·max|v| (the orthogonality defect measured in float64, GeoTol.orthogonalityDefect). Rounding: R v
    /// errs per entry ≤ γ₃·Σ|rᵢₖvₖ| ≤ 3u·√3 max|v|, 9u·max|v| in 2-norm, which Rᵀ carries to each entry; the
    /// second product rounds 3u·|R v|₂ ≤ 3√3u·max|v|: 15u·max|v| in all.
    let roundTrip (r: torch.Tensor) (v: torch.Tensor) =
        (3.0 * GeoTol.orthogonalityDefect r + Tol.derived dtype 15.0 1.0) * maxAbs v

    testList
        name
        [
            Props.property "random rotations are proper" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()

                Tol.atMost
                    "random: proper"
                    (GeoTol.properError dtype e)
                    (Rotation.properError (Rotation.random c.Batch dtype cpu (c.Generator()))))

            Props.property "axis-angle round trip: ofAxisAngle (toAxisAngle R) = R" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Rotation.random c.Batch dtype cpu (c.Generator())
                let v = Rotation.toAxisAngle r
                // ofMatrix keeps the largest candidate (2|qᵢ| ≥ 1 divides it), so each quaternion component carries
                // 2.5e + 13u (two entries' errors halved, 1.5e + 7u from the square root of 1 ± r₀₀ ± r₁₁ ± r₂₂ ≥ 1,
                // 4u from normalising); q ↦ θ·axis has Lipschitz constant ≤ π + 2 on |δq|₂ ≤ 2·max|δqᵢ| and rounds 7
                // times on |v| ≤ π; Rodrigues' formula moves entries by ≤ |δv|₂ and rounds ~26u on its three terms
                // (≤ 1, ≤ 1, ≤ 2: θ², sin θ/θ, (1 − cos θ)/θ², [v]×², two sums); r itself is e from its rotation.
                let dq = 2.5 * e + Tol.derived dtype 13.0 1.0
                let dv = (Math.PI + 2.0) * 2.0 * dq + Tol.derived dtype 7.0 Math.PI
                Tol.close "axis-angle round trip R" (e + dv + Tol.derived dtype 26.0 1.0) (Rotation.ofAxisAngle v) r
                Expect.isTrue (v.norm(-1, false).le((Math.PI + 1e-6).ToScalar()).all().ToBoolean()) "θ ≤ π")

            Props.property "axis-angle agrees with the quaternion (cos θ/2, sin θ/2 · axis)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let v = Draw.points (c.Generator()) c.Batch 1.5 dtype
                let theta = v.norm (-1, true)
                let q = torch.cat ([| (theta / 2.0).cos(); (theta / 2.0).sin() * v / theta |], -1L)
                // θ = |v| reaches ~8 here, and a rounded argument errs by u·θ, so sin and cos err by (θ + 1)u-ish.
                // Rodrigues: sin θ/θ · [v]× ≤ 1 carries (2θ + 4)u, (1 − cos θ)/θ² · [v]×² ≤ 2 carries (2θ + 10)u (its
                // 3-term product included), two sums 8u: (4θ + 22)u. The quaternion's components carry (θ + 3)u (half
                // angle, sin, cos, the product with v/θ); toMatrix moves by ≤ 4|δq|₂ ≤ 8·(θ + 3)u plus its own e.
                let th = maxAbs theta

                Tol.close
                    "axis-angle = quaternion R"
                    (Tol.derived dtype (4.0 * th + 22.0 + 8.0 * (th + 3.0)) 1.0 + e)
                    (Rotation.ofAxisAngle v)
                    (Quaternion.toMatrix q))

            Props.property "Gram–Schmidt gives a proper rotation whose first column ∝ a" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let a = Draw.points g c.Batch 2.0 dtype
                let b = Draw.points g c.Batch 2.0 dtype
                let r = Rotation.gramSchmidt 0.0 a b
                // Ill-conditioned as a ∥ b: ê₁ is b's part orthogonal to x̂, of length |b| sin∠(a, b). x̂ = a/|a| errs
                // 4u per entry; x̂·b errs 3u|b| (3 products, 2 sums) + √3·4u|b| (x̂'s error), and (x̂·b)x̂ and the
                // difference add 6u|b|: 16u|b| per entry of b − (x̂·b)x̂, so ê₁'s entries err ≤ √3·16u/sin + 4u
                // (normalising); ê₂ = x̂ × ê₁ (2 products, 1 sum) errs ≤ 2(|δx̂| + |δê₁|) + 2u. Per entry ≤ 56u/sin + 18u,
                // with sin the batch's smallest, computed in float64.
                let sinMin =
                    (BackboneChecks.sinAngle (a.to_type torch.float64) (b.to_type torch.float64)).min().ToDouble()

                let entry = Tol.derived dtype (56.0 / sinMin + 18.0) 1.0
                Tol.atMost "Gram–Schmidt: proper" (GeoTol.properError dtype entry) (Rotation.properError r)
                // x̂ and a/|a|: each a 3-term norm (3u), its square root and one division: 4u each.
                Tol.close "x̂" (Tol.derived dtype 8.0 1.0) (r.select (-1L, 0L)) (a / a.norm (-1, true)))

            Props.property "Gram–Schmidt invariance: GS(αa, βb + γa) = GS(a, b) for α, β > 0" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let a = Draw.points g c.Batch 2.0 dtype
                let b = Draw.points g c.Batch 2.0 dtype

                let alpha, beta, gamma =
                    0.5 + torch.rand(1L, generator = g).ToDouble(),
                    0.5 + torch.rand(1L, generator = g).ToDouble(),
                    torch.randn(1L, generator = g).ToDouble()

                let a2, b2 = alpha * a, beta * b + gamma * a
                // Per rotation, each side's error bound of the property above (56u/sin + 18u); b' = βb + γa is itself
                // rounded (βb, γa, their sum: ≤ 2√3u(β|b| + |γ||a|) in 2-norm), which moves ê₁ by that over b''s
                // orthogonal part β|b| sin∠(a, b) (doubled for ê₂); rounding αa turns x̂ by ≤ 2u, moving ê₁ by 2u/sin.
                let d (x: torch.Tensor) = x.to_type torch.float64
                let sin0 = BackboneChecks.sinAngle (d a) (d b)
                let sin1 = BackboneChecks.sinAngle (d a2) (d b2)
                let bPart = beta * (d b).norm(-1, true)
                let spread = (bPart + abs gamma * (d a).norm(-1, true)) / (bPart * sin0)

                let tolEach =
                    (56.0 / sin0 + 58.0 / sin1 + 7.0 * spread + 36.0) * Tol.unitRoundoff dtype

                Tol.within
                    "GS invariance"
                    ((Rotation.gramSchmidt 0.0 a2 b2 - Rotation.gramSchmidt 0.0 a b).to_type torch.float64)
                    (tolEach.unsqueeze -1L))

            Props.property "6D round trip: ofSixD (toSixD R) = R" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Rotation.random c.Batch dtype cpu (c.Generator())
                // Gram–Schmidt of r's columns (sin ≈ 1): its own rounding is ≤ 56u + 18u per entry; the columns sit
                // within e of an exact rotation's, which Gram–Schmidt returns unchanged, and a perturbation of
                // √3·e in 2-norm moves x̂ by ≤ √3e, ê₁ by ≤ 2√3e and ê₂ by ≤ 3√3e; r is e from that rotation.
                Tol.close
                    "6D round trip R"
                    (3.0 * sqrt 3.0 * e + e + Tol.derived dtype 74.0 1.0)
                    (Rotation.ofSixD 0.0 (Rotation.toSixD r))
                    r)

            Props.property "compose and invert: R Rᵀ = I, invertApply (apply v) = v" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let r = Rotation.random c.Batch dtype cpu g
                let v = Draw.points g c.Batch 10.0 dtype

                // R Rᵀ: a 3×3 product of two near-rotations, each e from a rotation (GeoTol.productEntry).
                Tol.close
                    "R R⁻¹"
                    (GeoTol.productEntry dtype e e)
                    (Rotation.compose r (Rotation.invert r))
                    (Rotation.identity c.Batch dtype cpu)

                Tol.close "v" (roundTrip r v) (Rotation.invertApply r (Rotation.apply r v)) v)

            Props.property
                "applyEach / invertApplyEach = apply / invertApply broadcast over N vectors"
                (fun (c: GeoCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let r = Rotation.random c.Batch dtype cpu g
                    let v = Draw.points g (Array.append c.Batch [| 5L |]) 10.0 dtype // [*, 5, 3]
                    let each = Rotation.applyEach r v
                    // The same 3-term dot products, summed in orders of the backend's choosing: each side within
                    // γ₃·Σ|rᵢₖvₖ| ≤ 3u·√3·max|v| of the exact value.
                    let reorder = 2.0 * Tol.derived dtype (3.0 * sqrt 3.0) (maxAbs v)
                    Tol.close "R v" reorder each (Rotation.apply (r.unsqueeze -3L) v)

                    Tol.close "Rᵀ v" reorder (Rotation.invertApplyEach r v) (Rotation.invertApply (r.unsqueeze -3L) v)

                    Tol.close "round trip" (roundTrip r v) (Rotation.invertApplyEach r each) v)
        ]

[<Tests>]
let tests =
    testList
        "Geometry/Rotation"
        [
            testList "properties" (Props.dtypes |> List.map (fun (d, n) -> properties d n))

            test "ofAxisAngle: π/2 about x maps y to z (hand-computed)" {
                use _ = torch.NewDisposeScope()

                let r =
                    Rotation.ofAxisAngle (torch.tensor ([| Math.PI / 2.0; 0.0; 0.0 |], dtype = torch.float64))

                Tol.close
                    "R y"
                    1e-15
                    (Rotation.apply r (torch.tensor ([| 0.0; 1.0; 0.0 |], dtype = torch.float64)))
                    (torch.tensor ([| 0.0; 0.0; 1.0 |], dtype = torch.float64))
            }

            test "ofAxisAngle is exact at 0 and first-order near it" {
                use _ = torch.NewDisposeScope()
                let zero = torch.zeros (3L, dtype = torch.float64)
                Tol.close "R(0)" 0.0 (Rotation.ofAxisAngle zero) (torch.eye (3L, dtype = torch.float64))
                let v = torch.tensor ([| 1e-9; -2e-9; 3e-9 |], dtype = torch.float64)

                Tol.close
                    "R(v) ≈ I + [v]x"
                    1e-17
                    (Rotation.ofAxisAngle v)
                    (torch.eye (3L, dtype = torch.float64) + Rotation.skew v)

                Tol.close "toAxisAngle" 1e-17 (Rotation.toAxisAngle (Rotation.ofAxisAngle v)) v
            }

            test "skew v u = v × u" {
                use _ = torch.NewDisposeScope()
                let v = torch.tensor ([| 1.0; 2.0; 3.0 |], dtype = torch.float64)
                let u = torch.tensor ([| -4.0; 0.5; 2.0 |], dtype = torch.float64)
                Tol.close "cross" 1e-15 (Rotation.skew(v).matmul(u)) (torch.linalg.cross (v, u))
            }

            test "Gram–Schmidt on degenerate input is finite (zero columns), never NaN" {
                use _ = torch.NewDisposeScope()
                // rows: b ∥ a; a = 0; both 0
                let a =
                    torch
                        .tensor([| 1.0; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0 |], dtype = torch.float32)
                        .reshape(3L, 3L)

                let b =
                    torch
                        .tensor([| 2.0; 0.0; 0.0; 0.0; 1.0; 0.0; 0.0; 0.0; 0.0 |], dtype = torch.float32)
                        .reshape(3L, 3L)

                let r = Rotation.gramSchmidt Rotation.EsmFrameEps a b
                Expect.isTrue (r.isfinite().all().ToBoolean()) "finite"
                Expect.isLessThan (torch.linalg.det(r).abs().max().ToDouble()) 1e-3 "det ≈ 0: callers must mask"
            }

            test "shape errors name the argument" {
                use _ = torch.NewDisposeScope()

                let ex =
                    Expect.throwsC (fun () -> Rotation.apply (torch.zeros (2L, 3L)) (torch.zeros (2L, 3L)) |> ignore) id

                Expect.stringContains ex.Message "r: expected shape [*, 3, 3], got [2, 3]" "message"
            }
        ]
