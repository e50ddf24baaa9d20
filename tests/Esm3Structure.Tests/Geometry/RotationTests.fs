module Esm3Structure.Tests.Geometry.RotationTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Tests

let private cpu = torch.CPU

let private properties (dtype: torch.ScalarType) (name: string) =
    let tol = if dtype = torch.float64 then 1e-12 else 2e-6

    testList
        name
        [
            Props.property "random rotations are proper" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()

                Expect.isLessThanOrEqual
                    (Rotation.properError (Rotation.random c.Batch dtype cpu (c.Generator())))
                    (10.0 * tol)
                    "proper")

            Props.property "axis-angle round trip: ofAxisAngle (toAxisAngle R) = R" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Rotation.random c.Batch dtype cpu (c.Generator())
                let v = Rotation.toAxisAngle r
                Tol.close "R" (100.0 * tol) (Rotation.ofAxisAngle v) r
                Expect.isTrue (v.norm(-1, false).le((Math.PI + 1e-6).ToScalar()).all().ToBoolean()) "θ ≤ π")

            Props.property "axis-angle agrees with the quaternion (cos θ/2, sin θ/2 · axis)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let v = Draw.points (c.Generator()) c.Batch 1.5 dtype
                let theta = v.norm (-1, true)
                let q = torch.cat ([| (theta / 2.0).cos(); (theta / 2.0).sin() * v / theta |], -1L)
                Tol.close "R" (100.0 * tol) (Rotation.ofAxisAngle v) (Quaternion.toMatrix q))

            Props.property "Gram–Schmidt gives a proper rotation whose first column ∝ a" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let a = Draw.points g c.Batch 2.0 dtype
                let b = Draw.points g c.Batch 2.0 dtype
                let r = Rotation.gramSchmidt 0.0 a b
                Expect.isLessThanOrEqual (Rotation.properError r) (1e4 * tol) "proper"
                Tol.close "x̂" (1e3 * tol) (r.select (-1L, 0L)) (a / a.norm (-1, true)))

            Props.property "Gram–Schmidt invariance: GS(αa, βb + γa) = GS(a, b) for α, β > 0" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let a = Draw.points g c.Batch 2.0 dtype
                let b = Draw.points g c.Batch 2.0 dtype

                let alpha, beta, gamma =
                    0.5 + torch.rand(1L, generator = g).ToDouble(),
                    0.5 + torch.rand(1L, generator = g).ToDouble(),
                    torch.randn(1L, generator = g).ToDouble()

                Tol.close
                    "GS"
                    (1e4 * tol)
                    (Rotation.gramSchmidt 0.0 (alpha * a) (beta * b + gamma * a))
                    (Rotation.gramSchmidt 0.0 a b))

            Props.property "6D round trip: ofSixD (toSixD R) = R" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Rotation.random c.Batch dtype cpu (c.Generator())
                Tol.close "R" (10.0 * tol) (Rotation.ofSixD 0.0 (Rotation.toSixD r)) r)

            Props.property "compose and invert: R Rᵀ = I, invertApply (apply v) = v" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let r = Rotation.random c.Batch dtype cpu g
                let v = Draw.points g c.Batch 10.0 dtype

                Tol.close
                    "R R⁻¹"
                    (10.0 * tol)
                    (Rotation.compose r (Rotation.invert r))
                    (Rotation.identity c.Batch dtype cpu)

                Tol.close "v" (100.0 * tol) (Rotation.invertApply r (Rotation.apply r v)) v)

            Props.property
                "applyEach / invertApplyEach = apply / invertApply broadcast over N vectors"
                (fun (c: GeoCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let r = Rotation.random c.Batch dtype cpu g
                    let v = Draw.points g (Array.append c.Batch [| 5L |]) 10.0 dtype // [*, 5, 3]
                    let each = Rotation.applyEach r v
                    Tol.close "R v" (10.0 * tol) each (Rotation.apply (r.unsqueeze -3L) v)

                    Tol.close
                        "Rᵀ v"
                        (10.0 * tol)
                        (Rotation.invertApplyEach r v)
                        (Rotation.invertApply (r.unsqueeze -3L) v)

                    Tol.close "round trip" (100.0 * tol) (Rotation.invertApplyEach r each) v)
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
