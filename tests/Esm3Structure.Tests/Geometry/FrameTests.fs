module Esm3Structure.Tests.Geometry.FrameTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Tests

let private cpu = torch.CPU

let private closeFrames what tolR tolT (a: Frame) (b: Frame) =
    Tol.close (what + " R") tolR a.R b.R
    Tol.close (what + " T") tolT a.T b.T

/// Restricts a frame tensor to rows where `mask` is true (flattened).
let private framedRows (mask: torch.Tensor) (x: torch.Tensor) (trailing: int) =
    let flat =
        x.reshape (Array.append [| -1L |] (x.shape.[x.shape.Length - trailing ..]))

    flat.index (mask.reshape (-1L))

let private properties (dtype: torch.ScalarType) (name: string) =
    // Derived bounds: u is the unit roundoff; random rotations' entries lie within e of exact rotations
    // (GeoTol.quatMatrixEntry). Point errors grow with coordinate magnitude, so point bounds scale with max |x|.
    let u = Tol.unitRoundoff dtype
    let e = GeoTol.quatMatrixEntry dtype
    let maxAbs (x: torch.Tensor) = x.abs().max().ToDouble()

    /// Bound on Rᵀ(R p + T − T) − p and R(Rᵀ(p − T)) + T − p, entrywise, with M = max|p| + max|T|. Exactly,
    /// (RᵀR − I)p or (RRᵀ − I)(p − T), entries ≤ 3·defect·M (orthogonality defects measured in float64). Rounding:
    /// R p rounds γ₃·Σ|rᵢₖpₖ| ≤ 3√3u·M, each add or subtract of T u·2M (values ≤ √3M + M); that error (≤ 16u·M in
    /// 2-norm) passes through Rᵀ unchanged, and the second product rounds 3√3u·M: ≤ 25u·M in all.
    let pointRoundTrip (f: Frame) (p: torch.Tensor) =
        let defect =
            max (GeoTol.orthogonalityDefect f.R) (GeoTol.orthogonalityDefect (f.R.transpose (-1L, -2L)))

        (3.0 * defect + 25.0 * u) * (maxAbs p + maxAbs f.T)

    testList
        name
        [
            Props.property "composition is associative" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()

                let a, b, d =
                    Frame.random c.Batch 10.0 dtype cpu g,
                    Frame.random c.Batch 10.0 dtype cpu g,
                    Frame.random c.Batch 10.0 dtype cpu g

                let left = Frame.compose (Frame.compose a b) d
                let right = Frame.compose a (Frame.compose b d)
                // Both sides share the rounded inputs, so only the products' roundings count. R: each 3×3 product
                // rounds 3u per entry (3 products, 2 sums on Σ|aᵢₖbₖⱼ| ≤ 1); the inner product's error reaches an
                // entry of the outer one through a unit row or column (≤ √3·3u): 3u + 3√3u ≈ 8.2u per side.
                // T, with m = max |Tᵢ| of the inputs: a rigid step R t + t' rounds ≤ 3√3u·m + u·(√3m + m) ≈ 7u·m on
                // values ≤ 2.8m; the two sides chain two such steps and carry the first step's error (≤ √3·7u·m in
                // 2-norm) and the inner product's R error (√3·3u per entry on |t|₂ ≤ √3m): ≤ 30u·m per side.
                let m = [ a; b; d ] |> List.map (fun f -> maxAbs f.T) |> List.max

                closeFrames
                    "(a∘b)∘c"
                    (Tol.derived dtype (2.0 * (3.0 + 3.0 * sqrt 3.0)) 1.0)
                    (Tol.derived dtype 60.0 m)
                    left
                    right)

            Props.property "compose applies right first: (a∘b)(p) = a(b(p))" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()

                let a, b =
                    Frame.random c.Batch 10.0 dtype cpu g, Frame.random c.Batch 10.0 dtype cpu g

                let p = Draw.points g c.Batch 10.0 dtype
                let direct = Frame.apply a (Frame.apply b p)
                // As in associativity with m = max |p|, |Ta|, |Tb| (two rigid steps per side, and the composed
                // R's 3u rounding applied to |p|₂ ≤ √3m): ≤ 30u·m per side.
                let m = max (maxAbs p) (max (maxAbs a.T) (maxAbs b.T))
                Tol.close "(a∘b)(p)" (Tol.derived dtype 60.0 m) (Frame.apply (Frame.compose a b) p) direct)

            Props.property "T ∘ T⁻¹ = T⁻¹ ∘ T = identity" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let f = Frame.random c.Batch 10.0 dtype cpu (c.Generator())
                let id = Frame.identity c.Batch dtype cpu
                // R Rᵀ and Rᵀ R: products of two near-rotations e from rotations (GeoTol.productEntry).
                let tolR = GeoTol.productEntry dtype e e
                // T∘T⁻¹: R(−Rᵀt) + t = (I − RRᵀ)t + roundings: (RRᵀ − I) has entries ≤ 2√3e (GeoTol.properError),
                // so ≤ 6e·m on max |t| = m; Rᵀt rounds 3√3u·m, R carries that (≤ 9u·m in 2-norm) and rounds
                // 3√3u·m again, and + t rounds u·2m: ≤ (6e + 22u)·m.
                let m = maxAbs f.T
                closeFrames "T∘T⁻¹" tolR ((6.0 * e + 22.0 * u) * m) (Frame.compose f (Frame.invert f)) id
                // T⁻¹∘T: Rᵀt + (−Rᵀt), the same product computed twice (in orders the backend may choose): ≤ 2·3√3u·m.
                closeFrames "T⁻¹∘T" tolR (Tol.derived dtype (6.0 * sqrt 3.0) m) (Frame.compose (Frame.invert f) f) id)

            Props.property "invertApply (apply p) = p, and apply (invertApply p) = p" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let f = Frame.random c.Batch 10.0 dtype cpu g
                let p = Draw.points g c.Batch 30.0 dtype

                let tol = pointRoundTrip f p
                Tol.close "T⁻¹(T(p))" tol (Frame.invertApply f (Frame.apply f p)) p
                Tol.close "T(T⁻¹(p))" tol (Frame.apply f (Frame.invertApply f p)) p

                // Rᵀp + (−Rᵀt) against Rᵀ(p − t), the same linear map: roundings only. Left: two products 3√3u·M
                // each and the sum u·2M; right: p − t u·M, carried by Rᵀ, and one product 3√3u·M: ≤ 21u·M.
                Tol.close
                    "invert = invertApply"
                    (Tol.derived dtype 21.0 (maxAbs p + maxAbs f.T))
                    (Frame.apply (Frame.invert f) p)
                    (Frame.invertApply f p))

            Props.property "flat layouts round trip (12 floats, 7 floats, 4×4)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let f = Frame.random c.Batch 10.0 dtype cpu (c.Generator())
                closeFrames "12" 0.0 0.0 (Frame.ofTensor12 (Frame.toTensor12 f)) f
                closeFrames "4x4" 0.0 0.0 (Frame.ofMatrix4 (Frame.toMatrix4 f)) f
                // R → q → R: ofMatrix's components carry 2.5e + 13u (see QuaternionTests' quatTol), toMatrix moves by
                // ≤ 4|δq|₂ ≤ 8·max|δqᵢ| and adds its own e, and R itself is e from the rotation both approximate.
                let tol7 = 2.0 * e + 8.0 * (2.5 * e + Tol.derived dtype 13.0 1.0)
                closeFrames "7" tol7 0.0 (Frame.ofTensor7 (Frame.toTensor7 f)) f
                Expect.sequenceEqual (Frame.toTensor12 f).shape (Array.append c.Batch [| 12L |]) "12 shape")

            Props.property "one frame applied to several points via unsqueeze broadcasts" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let f = Frame.random c.Batch 10.0 dtype cpu g
                let p = Draw.points g (Array.append c.Batch [| 5L |]) 10.0 dtype // [*, 5, 3]
                let all = Frame.apply (Frame.unsqueeze -1L f) p
                let one = Frame.apply f (p.select (-2L, 2L))
                Tol.close "point 2" 0.0 (all.select (-2L, 2L)) one)

            Props.property "applyEach (one product per frame) = apply broadcast over N points" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let f = Frame.random c.Batch 10.0 dtype cpu g
                let p = Draw.points g (Array.append c.Batch [| 5L |]) 30.0 dtype // [*, 5, 3]
                let each = Frame.applyEach f p
                Expect.sequenceEqual each.shape p.shape "shape"
                // Both are R x + T with the three products summed in an order of the backend's choosing: a few
                // roundings of the largest term each (|R x| ≤ |x|, plus |T|).
                // Each side: γ₃·Σ|rᵢₖxₖ| ≤ 3√3u·max|x| and u·(√3 max|x| + max|T|) for + T: ≤ 7u·M, M = max|x| + max|T|.
                let tol = Tol.derived dtype 14.0 (maxAbs p + maxAbs f.T)
                Tol.close "each = broadcast" tol each (Frame.apply (Frame.unsqueeze -1L f) p)
                let back = Frame.invertApply (Frame.unsqueeze -1L f) each
                Tol.close "invertApply undoes it" (pointRoundTrip f p) back p
                // invertApplyEach computes the same Rᵀ (x − T), again in a product order of the backend's choosing:
                // each side rounds x − T (u·M) and the product (3√3u·(max|x| + max|T|)), with max|x| ≤ M·(1 + 3e).
                let backEach = Frame.invertApplyEach f each

                Tol.close
                    "invertApplyEach = invertApply broadcast"
                    (Tol.derived dtype 14.0 (maxAbs each + maxAbs f.T))
                    backEach
                    back

                Tol.close "invertApplyEach undoes applyEach" (pointRoundTrip f p) backEach p)

            Props.property
                "backbone frames put CA at 0, C on −x, N in the xy-plane with y > 0"
                (fun (c: BackboneCase) ->
                    use _ = torch.NewDisposeScope()
                    let bb = Draw.backbone (c.Generator()) c.Batch c.Length dtype
                    // ε = 0: the exact construction. ESM's ε = 1e-10 inside the square root shifts the axes by ~1e-10.
                    let frames =
                        Frame.ofBackboneWith
                            { BackboneFrameOptions.esm3 with
                                Eps = 0.0
                            }
                            bb

                    Expect.isTrue (frames.Mask.all().ToBoolean()) "all framed"
                    let local = Frame.invertApply (Frame.unsqueeze -1L frames.Frames) bb // [*, L, 3, 3]

                    let n, ca, cc =
                        local.select (-2L, 0L), local.select (-2L, 1L), local.select (-2L, 2L)

                    // The frame is built from the rounded bond vectors a = CA − C and b = N − CA, and invertApply
                    // forms the same differences (x − CA), so the coordinates' magnitude (~200 Å) never enters: the
                    // bounds scale with the bond length ℓ = max(|a|, |b|) ≈ 1.5 Å. CA − CA is exactly 0.
                    let d (x: torch.Tensor) = x.to_type torch.float64

                    let aVec, bVec =
                        d (bb.select (-2L, 1L) - bb.select (-2L, 2L)), d (bb.select (-2L, 0L) - bb.select (-2L, 1L))

                    let sinMin = (BackboneChecks.sinAngle aVec bVec).min().ToDouble()
                    let bondMax = max (maxAbs (aVec.norm (-1, false))) (maxAbs (bVec.norm (-1, false)))
                    Tol.close "CA" 0.0 ca (torch.zeros_like ca)
                    let bond = (bb.select (-2L, 2L) - bb.select (-2L, 1L)).norm(-1, false)
                    // C.x = −x̂·a with x̂ = a/|a| (4u relative) and a 3-term dot product (3u), against |a| (3u): 10u·ℓ.
                    Tol.close "C.x = −|C − CA|" (Tol.derived dtype 10.0 bondMax) (cc.select (-1L, 0L)) (-bond)
                    // C.y = ê₁·a, C.z = ê₂·a, N.z = ê₂·b: orthogonalities of the computed axes. b − (x̂·b)x̂ errs 16u|b|
                    // per entry (RotationTests' Gram–Schmidt count) and |x̂|² = 1 ± 8u, so x̂·ê₁ ≤ (8 + √3·16)u/sin;
                    // ê₂ = x̂ × ê₁ is orthogonal to both within ~4u; each dot product adds 3u: ≤ (40/sin + 10)u·ℓ.
                    let orthoTol = Tol.derived dtype (40.0 / sinMin + 10.0) bondMax

                    Tol.close
                        "C.y, C.z = 0"
                        orthoTol
                        (cc.narrow (-1L, 1L, 2L))
                        (torch.zeros_like (cc.narrow (-1L, 1L, 2L)))

                    Tol.close "N.z = 0" orthoTol (n.select (-1L, 2L)) (torch.zeros_like (n.select (-1L, 2L)))
                    Expect.isTrue (n.select(-1L, 1L).gt((0.0).ToScalar()).all().ToBoolean()) "N.y > 0"
                    // Gram–Schmidt of the rounded bond vectors: entries within 56u/sin + 18u of a rotation (RotationTests).
                    let gsEntry = Tol.derived dtype (56.0 / sinMin + 18.0) 1.0

                    Tol.atMost
                        "backbone frames: proper"
                        (GeoTol.properError dtype gsEntry)
                        (Rotation.properError frames.Frames.R)

                    // ESM's ε inside the square roots, to first order: x̂ shrinks by ε/(2|a|²); so (x̂·b)x̂ shrinks by ε/|a|²,
                    // which leaves a component |b| cos · ε/|a|² along x̂ in ũ = b − (x̂·b)x̂, i.e. |cot| ε/|a|² in ê₁; ê₁
                    // shrinks by ε/(2|ũ|²), |ũ| = |b| sin; ê₂ = x̂ × ê₁ moves by the sum. Entries move ≤
                    // ε·(1/(2|ũ|²) + (½ + |cot|)/|a|²), a deterministic shift (no rounding in it); plus each side's
                    // rounding, 2·gsEntry.
                    let perp =
                        (BackboneChecks.sinAngle aVec bVec * bVec.norm (-1, true)).min().ToDouble()

                    let aMin = aVec.norm(-1, false).min().ToDouble()

                    let cos =
                        (aVec * bVec).sum(-1L, true) / (aVec.norm (-1, true) * bVec.norm (-1, true))

                    let cotMax = (cos.abs () / BackboneChecks.sinAngle aVec bVec).max().ToDouble()

                    let epsShift =
                        Rotation.EsmFrameEps * (0.5 / (perp * perp) + (0.5 + cotMax) / (aMin * aMin))

                    let esm = Frame.ofBackbone bb
                    Tol.close "ESM ε changes R by ε/|ũ|²" (epsShift + 2.0 * gsEntry) esm.Frames.R frames.Frames.R)

            Props.property
                "backbone frames are equivariant: frames(Q x + s) = (Q, s) ∘ frames(x)"
                (fun (c: BackboneCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let bb = Draw.backbone g c.Batch c.Length dtype
                    let motion = Frame.random [||] 50.0 dtype cpu g
                    let moved = Frame.apply motion bb
                    let before = Frame.ofBackbone bb
                    let after = Frame.ofBackbone moved
                    let expected = Frame.compose motion before.Frames
                    // Here the coordinates' magnitude S = max |x|, max |Q x + s| (up to ~250 Å) does enter: the moved
                    // atoms are rounded independently (3√3u·S for Q x, u·S more for + s, ≤ 7u·S per entry) and then
                    // differenced into bonds, so a and b lie within √3·(2·7u·S + u·ℓ) ≈ 26u·S (2-norm) of Q a and Q b.
                    // That turns x̂ by ≤ 26u·S/|a|, ê₁ by ≤ (26u·S/|b| + 26u·S/|a|)/sin and ê₂ by their sum. Q's own
                    // non-orthogonality (3·defect per entry of Q a against a rotation) and each side's Gram–Schmidt
                    // rounding (gsEntry, RotationTests) and the composition's product (3u + √3·gsEntry) add on top.
                    let d (x: torch.Tensor) = x.to_type torch.float64

                    let aVec, bVec =
                        d (bb.select (-2L, 1L) - bb.select (-2L, 2L)), d (bb.select (-2L, 0L) - bb.select (-2L, 1L))

                    let sinMin = (BackboneChecks.sinAngle aVec bVec).min().ToDouble()

                    let aMin, bMin =
                        aVec.norm(-1, false).min().ToDouble(), bVec.norm(-1, false).min().ToDouble()

                    let sMax = max (maxAbs bb) (maxAbs moved)
                    let shift = 26.0 * u * sMax
                    let turn = shift / aMin + (shift / bMin + shift / aMin) / sinMin
                    let gsEntry = Tol.derived dtype (56.0 / sinMin + 18.0) 1.0
                    let defect = GeoTol.orthogonalityDefect motion.R

                    let tolR =
                        2.0 * turn
                        + 3.0 * defect / sinMin
                        + gsEntry
                        + GeoTol.productEntry dtype gsEntry e

                    Tol.close "equivariance R" tolR after.Frames.R expected.R
                    // T: the moved CA (Frame.apply) against Q·CA + s (Frame.compose): the same rigid step R x + s
                    // computed twice, possibly in different orders: ≤ 2·(3√3u·max|x| + u·S).
                    Tol.close
                        "equivariance T"
                        (2.0 * (3.0 * sqrt 3.0 * u * maxAbs bb + u * sMax))
                        after.Frames.T
                        expected.T)

            Props.property
                "missing or NaN atoms give a false mask and finite frames; other frames are unchanged"
                (fun (c: BackboneCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let bb = Draw.backbone g c.Batch c.Length dtype

                    let drop =
                        torch.rand(Array.append c.Batch [| c.Length |], generator = g).lt((0.3).ToScalar())

                    let bad = [| Double.NaN; Double.PositiveInfinity; 2e6 |]
                    let value = bad.[int (c.Seed % 3UL)]
                    let atom = int64 (c.Seed % 3UL)
                    let corrupted = bb.clone ()
                    let atomMask = torch.zeros ([| 3L |], dtype = torch.ScalarType.Bool)
                    atomMask.[atom] <- torch.tensor (true)

                    let where =
                        drop.unsqueeze(-1L).logical_and(atomMask).unsqueeze(-1L).expand_as(corrupted)

                    let corrupted = torch.where (where, torch.full_like (corrupted, value), corrupted)
                    let clean = Frame.ofBackbone bb
                    let dirty = Frame.ofBackbone corrupted
                    Expect.isTrue (dirty.Mask.eq(drop.logical_not ()).all().ToBoolean()) "mask = not dropped"

                    Expect.isTrue
                        (dirty.Frames.R.isfinite().all().ToBoolean()
                         && dirty.Frames.T.isfinite().all().ToBoolean())
                        "finite"

                    let keep = dirty.Mask

                    Expect.equal
                        (Tol.maxAbsDiff (framedRows keep dirty.Frames.R 2) (framedRows keep clean.Frames.R 2))
                        0.0
                        "framed R bitwise"

                    Expect.equal
                        (Tol.maxAbsDiff (framedRows keep dirty.Frames.T 1) (framedRows keep clean.Frames.T 1))
                        0.0
                        "framed T bitwise")

            Props.property "frames of a NaN-padded batch equal the frames of each chain alone" (fun (c: BackboneCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let bb = Draw.backbone g [||] c.Length dtype

                let padded =
                    torch.cat ([| bb; torch.full ([| 3L; 3L; 3L |], (Double.NaN).ToScalar(), dtype = dtype) |], 0L)

                let alone = Frame.ofBackbone bb
                let withPad = Frame.ofBackbone padded
                Tol.close "R" 0.0 (withPad.Frames.R.narrow (0L, 0L, c.Length)) alone.Frames.R
                Expect.isFalse (withPad.Mask.narrow(0L, c.Length, 3L).any().ToBoolean()) "padding unframed")

            Props.property "chain (a prefix scan) equals composing the steps one by one" (fun (c: BackboneCase) ->
                use _ = torch.NewDisposeScope()

                let steps =
                    Frame.random (Array.append c.Batch [| c.Length |]) 4.0 dtype cpu (c.Generator())

                let axisR, axisT = int64 c.Batch.Length, int64 c.Batch.Length

                let at (i: int64) =
                    {
                        R = steps.R.select (axisR, i)
                        T = steps.T.select (axisT, i)
                    }

                let mutable p = at 0L
                let sequential = ResizeArray [ p ]

                for i in 1L .. c.Length - 1L do
                    p <- Frame.compose p (at i)
                    sequential.Add p

                let expected =
                    {
                        R = torch.stack (sequential |> Seq.map (fun f -> f.R), axisR)
                        T = torch.stack (sequential |> Seq.map (fun f -> f.T), axisT)
                    }

                let scanned = Frame.chain steps
                // Both sides multiply the same L rounded steps, in different trees of L − 1 products. In the spectral
                // norm, which rotations preserve, each product adds its rounding F (entries ≤ 3u, ‖F‖₂ ≤ 9u) and
                // carries earlier errors unchanged (up to the steps' 1 + O(e) norms): R errs ≤ 9u·(L − 1) per side.
                // T: each step R t + t' carries the earlier R error times |t_step|₂ ≤ √3·m (m = max |step T|), i.e.
                // ≤ 9u·k·√3m at step k, summed ≤ 8u·m·L²; and rounds 3√3u·m + u·√3M (M = max |Tₖ| of the chain).
                let l = float c.Length
                let m = maxAbs steps.T
                let bigM = maxAbs expected.T
                let tolR = 2.0 * Tol.derived dtype (9.0 * (l - 1.0)) 1.0
                let tolT = 2.0 * u * (8.0 * m * l * l + l * (6.0 * m + 2.0 * bigM))
                closeFrames "chain" tolR tolT scanned expected)
        ]

[<Tests>]
let tests =
    testList
        "Geometry/Frame"
        [
            testList "properties" (Props.dtypes |> List.map (fun (d, n) -> properties d n))

            test "a row with no framed residue gets exactly the identity frame" {
                use _ = torch.NewDisposeScope()

                let bb =
                    torch.full ([| 2L; 4L; 3L; 3L |], (Double.NaN).ToScalar(), dtype = torch.float32)

                let f = Frame.ofBackbone bb
                Expect.isFalse (f.Mask.any().ToBoolean()) "no mask"
                Tol.close "R" 0.0 f.Frames.R (Rotation.identity [| 2L; 4L |] torch.float32 cpu)
                Tol.close "T" 0.0 f.Frames.T (torch.zeros (2L, 4L, 3L))
            }

            test "an unframed residue holds the black-hole frame built from the means of framed atoms" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(11UL)
                let bb = Draw.backbone g [||] 6L torch.float64
                let withHole = bb.clone ()

                withHole.[torch.TensorIndex.Single 2L, torch.TensorIndex.Single 1L, torch.TensorIndex.Single 0L] <-
                    torch.tensor (Double.NaN, dtype = torch.float64)

                let f = Frame.ofBackbone withHole
                let keep = torch.tensor ([| 0L; 1L; 3L; 4L; 5L |])
                let mean = bb.index_select(0L, keep).mean([| 0L |]) // [3 atoms, 3]

                let hole =
                    Frame.ofGramSchmidt 1e-10 (mean.select (0L, 2L)) (mean.select (0L, 1L)) (mean.select (0L, 0L))
                // ESM divides by (n + 1e-8), hence the 1e-7 Å tolerance on translations of ~20 Å.
                Tol.close "R" 1e-8 (f.Frames.R.select (0L, 2L)) hole.R
                Tol.close "T" 1e-7 (f.Frames.T.select (0L, 2L)) hole.T
            }

            test "collinear or coincident atoms stay finite; the strict options mask them" {
                use _ = torch.NewDisposeScope()

                let rows =
                    [|
                        [| [| 0.0; 0.0; 0.0 |]; [| 1.5; 0.0; 0.0 |]; [| 3.0; 0.0; 0.0 |] |] // collinear
                        [| [| 1.0; 1.0; 1.0 |]; [| 1.0; 1.0; 1.0 |]; [| 1.0; 1.0; 1.0 |] |] // coincident
                        [| [| 0.5256; 1.3612; 0.0 |]; [| 0.0; 0.0; 0.0 |]; [| -1.5251; 0.0; 0.0 |] |]
                    |] // ideal

                let bb =
                    torch.tensor(rows |> Array.collect (Array.collect id), dtype = torch.float32).reshape(3L, 3L, 3L)

                let esm = Frame.ofBackbone bb
                Expect.isTrue (esm.Frames.R.isfinite().all().ToBoolean()) "finite"
                Expect.sequenceEqual (esm.Mask.data<bool>().ToArray()) [| true; true; true |] "ESM keeps them framed"
                let strict = Frame.ofBackboneWith BackboneFrameOptions.strict bb
                Expect.sequenceEqual (strict.Mask.data<bool>().ToArray()) [| false; false; true |] "strict masks them"
                Expect.isTrue (strict.Frames.R.isfinite().all().ToBoolean()) "finite"
            }

            test "the ideal local backbone (ESM's BB_COORDINATES) has the identity frame" {
                use _ = torch.NewDisposeScope()

                let bb =
                    torch
                        .tensor([| 0.5256; 1.3612; 0.0; 0.0; 0.0; 0.0; -1.5251; 0.0; 0.0 |], dtype = torch.float64)
                        .reshape(1L, 3L, 3L)

                let f = Frame.ofBackbone bb
                // 1e-10: the effect of ESM's ε inside the square root.
                Tol.close "R" 1e-10 f.Frames.R (torch.eye(3L, dtype = torch.float64).unsqueeze(0L))
                Tol.close "T" 0.0 f.Frames.T (torch.zeros (1L, 3L, dtype = torch.float64))
            }

            test "mask, stack, cat, select and index keep frames intact" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(3UL)
                let a = Frame.random [| 4L |] 5.0 torch.float64 cpu g
                let b = Frame.random [| 4L |] 5.0 torch.float64 cpu g
                let valid = torch.tensor ([| true; false; true; false |])
                let m = Frame.mask valid a
                Tol.close "kept" 0.0 (Frame.select 0L 0L m).R (Frame.select 0L 0L a).R
                Tol.close "identity" 0.0 (Frame.select 0L 1L m).R (torch.eye (3L, dtype = torch.float64))

                Tol.close
                    "zero"
                    0.0
                    (Frame.select 0L 1L (Frame.maskZero valid a)).T
                    (torch.zeros (3L, dtype = torch.float64))

                let s = Frame.stack 0L [ a; b ]
                Expect.sequenceEqual s.Shape [| 2L; 4L |] "stack shape"
                Tol.close "stack" 0.0 (Frame.select 0L 1L s).T b.T
                let c = Frame.cat 0L [ a; b ]
                Expect.sequenceEqual c.Shape [| 8L |] "cat shape"
                Tol.close "cat" 0.0 (Frame.index [| torch.TensorIndex.Slice(4L, 8L) |] c).R b.R

                Expect.throwsC
                    (fun () -> Frame.create (torch.zeros (2L, 3L, 3L)) (torch.zeros (3L, 3L)) |> ignore)
                    (fun e -> Expect.stringContains e.Message "batch dims differ" "message")
            }
        ]
