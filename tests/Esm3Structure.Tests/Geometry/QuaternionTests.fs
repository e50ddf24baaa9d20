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
    // The matrix of a quaternion has entries within e of the exact rotation (21 roundings on values ≤ 1, derived in
    // GeoTol.quatMatrixEntry); the bounds below count what each property adds to that.
    let e = GeoTol.quatMatrixEntry dtype
    // quat(M(q)) against q: ofMatrix keeps the largest candidate (2|qᵢ| ≥ 1 divides it), so each component carries
    // 2.5e + 13u (two entries' errors halved, 1.5e + 7u from the square root of 1 ± r₀₀ ± r₁₁ ± r₂₂ ≥ 1, 4u from
    // normalising), and q/|q|, which M(q) rotates by, is 4u from q.
    let quatTol = 2.5 * e + Tol.derived dtype 17.0 1.0

    testList
        name
        [
            Props.property "the matrix of a unit quaternion is orthonormal with det +1" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let r = Quaternion.toMatrix (Quaternion.random c.Batch dtype cpu (c.Generator()))
                Tol.atMost "RᵀR = I, det R = 1" (GeoTol.properError dtype e) (Rotation.properError r))

            Props.property "double cover: M(-q) = M(q)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                // Exact: negation is exact, so −q normalises to −(q/|q|) and every product of two components is the
                // same number.
                Tol.close "M(-q)" 0.0 (Quaternion.toMatrix (-q)) (Quaternion.toMatrix q))

            Props.property "homomorphism: M(q1 ⊗ q2) = M(q1) M(q2)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let q1 = Quaternion.random c.Batch dtype cpu g
                let q2 = Quaternion.random c.Batch dtype cpu g

                // q1 ⊗ q2 rounds 4 products and 3 sums per component on Σ|aᵢbⱼ| ≤ 1: 4u each, ≤ 8u in 2-norm, which
                // moves M by ≤ 4·8u per entry (M's gradient on the unit sphere is ≤ 4|q|), plus toMatrix's e; the
                // right side is a product of two matrices e from rotations (GeoTol.productEntry).
                Tol.close
                    "M(q1 q2)"
                    (e + Tol.derived dtype 32.0 1.0 + GeoTol.productEntry dtype e e)
                    (Quaternion.toMatrix (Quaternion.multiply q1 q2))
                    (Quaternion.toMatrix q1 |> fun m -> m.matmul (Quaternion.toMatrix q2)))

            Props.property "conjugate is the transpose: M(q*) = M(q)ᵀ" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())

                // Exact: conjugation negates x, y, z, and 2(xy − zw) of q* is 2(xy + zw) of q with the same roundings.
                Tol.close
                    "M(q*)"
                    0.0
                    (Quaternion.toMatrix (Quaternion.conjugate q))
                    ((Quaternion.toMatrix q).transpose(-1L, -2L)))

            Props.property "round trip quat(M(q)) = q with w >= 0" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                let back = Quaternion.ofMatrix (Quaternion.toMatrix q)
                let err = upToSign back q
                Tol.atMost "q recovered up to sign" quatTol err
                Expect.isTrue ((back.select(-1L, 0L).ge((0.0).ToScalar())).all().ToBoolean()) "w >= 0")

            Props.property "round trip holds near 180° (w ≈ 0), where the naive formula fails" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let q = Quaternion.random c.Batch dtype cpu (c.Generator())
                let axis = q.narrow (-1L, 1L, 3L)

                let flat =
                    torch.cat ([| torch.zeros_like (q.narrow (-1L, 0L, 1L)); axis / axis.norm (-1, true) |], -1L)

                let back = Quaternion.ofMatrix (Quaternion.toMatrix flat)

                // Near 180° the largest candidate is one of x, y, z: the same bound.
                Tol.atMost "q recovered up to sign (180°)" quatTol (upToSign back flat))

            Props.property "rotate q v = M(q) v" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let q = Quaternion.random c.Batch dtype cpu g
                let v = Draw.points g c.Batch 10.0 dtype
                // q v q*: normalising q errs 4u per component (≤ 8u in 2-norm), which turns v by ≤ 2·8u·|v|₂; the two
                // Hamilton products round 4u·Σ|pᵢqⱼ| ≤ 4u·|v|₂ per component each (unit quaternions carry the first
                // error unchanged): 16√3u + 2·4·√3u·√3 max|v| ≈ 49u·max|v|. M(q) v: M's entries err e, so
                // ≤ √3e·|v|₂ = 3e·max|v|, and the product rounds 3u·√3 max|v|.
                let m = v.abs().max().ToDouble()
                let tol = (3.0 * e + Tol.derived dtype 55.0 1.0) * m
                Tol.close "q v q*" tol (Quaternion.rotate q v) (Rotation.apply (Quaternion.toMatrix q) v))
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
