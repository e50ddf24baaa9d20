module Esm3Structure.Tests.Geometry.QuaternionTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Tests

let private cpu = torch.CPU

/// min over the sign of |a - b| (q and -q are the same rotation).
let private upToSign (a: torch.Tensor) (b: torch.Tensor) =
    torch.minimum((a - b).abs().amax([| -1L |]), (a + b).abs().amax([| -1L |])).max().ToDouble()

let private properties (dtype: torch.ScalarType) (name: string) =
    let tol = if dtype = torch.float64 then 1e-12 else 2e-6

    testList
        name
        [
            Props.property "the matrix of a unit quaternion is orthonormal with det +1" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Quaternion.toMatrix (Quaternion.random c.Batch dtype cpu (c.Generator()))
                let err = Rotation.properError r
                Expect.isLessThanOrEqual err (10.0 * tol) "RᵀR = I, det R = 1")

            Props.property "double cover: M(-q) = M(q)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                Tol.close "M(-q)" tol (Quaternion.toMatrix (-q)) (Quaternion.toMatrix q))

            Props.property "homomorphism: M(q1 ⊗ q2) = M(q1) M(q2)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let q1 = Quaternion.random c.Batch dtype cpu g
                let q2 = Quaternion.random c.Batch dtype cpu g

                Tol.close
                    "M(q1 q2)"
                    (10.0 * tol)
                    (Quaternion.toMatrix (Quaternion.multiply q1 q2))
                    (Quaternion.toMatrix q1 |> fun m -> m.matmul (Quaternion.toMatrix q2)))

            Props.property "conjugate is the transpose: M(q*) = M(q)ᵀ" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())

                Tol.close
                    "M(q*)"
                    tol
                    (Quaternion.toMatrix (Quaternion.conjugate q))
                    ((Quaternion.toMatrix q).transpose(-1L, -2L)))

            Props.property "round trip quat(M(q)) = q with w >= 0" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                let back = Quaternion.ofMatrix (Quaternion.toMatrix q)
                let err = upToSign back q
                Expect.isLessThanOrEqual err (if dtype = torch.float64 then 1e-10 else 1e-5) "q recovered up to sign"
                Expect.isTrue ((back.select(-1L, 0L).ge((0.0).ToScalar())).all().ToBoolean()) "w >= 0")

            Props.property "round trip holds near 180° (w ≈ 0), where the naive formula fails" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                let axis = q.narrow (-1L, 1L, 3L)

                let flat =
                    torch.cat ([| torch.zeros_like (q.narrow (-1L, 0L, 1L)); axis / axis.norm (-1, true) |], -1L)

                let back = Quaternion.ofMatrix (Quaternion.toMatrix flat)

                Expect.isLessThanOrEqual
                    (upToSign back flat)
                    (if dtype = torch.float64 then 1e-10 else 1e-5)
                    "q recovered up to sign")

            Props.property "rotate q v = M(q) v" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let q = Quaternion.random c.Batch dtype cpu g
                let v = Draw.points g c.Batch 10.0 dtype
                Tol.close "q v q*" (100.0 * tol) (Quaternion.rotate q v) (Rotation.apply (Quaternion.toMatrix q) v))
        ]

[<Tests>]
let tests =
    testList
        "Geometry/Quaternion"
        [
            testList "properties" (Props.dtypes |> List.map (fun (d, n) -> properties d n))

            test "90° about z maps x to y (hand-computed)" {
                use _ = torch.NewDisposeScope()
                let h = Math.Sqrt 0.5
                let q = torch.tensor ([| h; 0.0; 0.0; h |], dtype = torch.float64)
                let x = torch.tensor ([| 1.0; 0.0; 0.0 |], dtype = torch.float64)

                Tol.close
                    "R x"
                    1e-15
                    (Rotation.apply (Quaternion.toMatrix q) x)
                    (torch.tensor ([| 0.0; 1.0; 0.0 |], dtype = torch.float64))
            }

            test "a non-unit quaternion gives the same rotation as its normalisation" {
                use _ = torch.NewDisposeScope()
                let q = torch.tensor ([| 2.0; -1.0; 0.5; 3.0 |], dtype = torch.float64)
                Tol.close "M(3q)" 1e-14 (Quaternion.toMatrix (3.0 * q)) (Quaternion.toMatrix q)

                Tol.close
                    "normalize"
                    1e-15
                    ((Quaternion.normalize q).norm())
                    (torch.tensor (1.0, dtype = torch.float64))
            }

            test "random rotations are Haar-uniform: mean matrix 0, trace mean 0 and variance 1" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(7UL)
                let r = Quaternion.toMatrix (Quaternion.random [| 20000L |] torch.float64 cpu g)
                // The Haar mean of a rotation matrix is the zero matrix; the trace averages 0 with variance 1.
                let mean = r.mean([| 0L |]).abs().max().ToDouble()
                Expect.isLessThan mean 0.03 "mean rotation ≈ 0"
                let trace = r.diagonal(0L, -2L, -1L).sum(-1L)
                Expect.isLessThan (abs (trace.mean().ToDouble())) 0.03 "mean trace ≈ 0"
                Expect.isLessThan (abs (trace.var().ToDouble() - 1.0)) 0.05 "trace variance ≈ 1"
            }
        ]
