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
    let f64 = dtype = torch.float64
    // Tolerances of ESM3-REFERENCE.md §12.1. Point errors grow with coordinate magnitude (float32 has a 7.6e-6
    // spacing at 100 Å), so point tolerances are relative to 1 + max |coordinate|.
    let rotTol = if f64 then 1e-12 else 2e-6
    let pointTol = if f64 then 1e-13 else 1e-6
    let scale (x: torch.Tensor) = 1.0 + x.abs().max().ToDouble()
    /// The dtype's machine epsilon (spacing at 1), the unit of the derived tolerances.
    let eps = if f64 then Math.Pow(2.0, -52.0) else Math.Pow(2.0, -23.0)

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
                closeFrames "(a∘b)∘c" (10.0 * rotTol) (pointTol * scale left.T) left right)

            Props.property "compose applies right first: (a∘b)(p) = a(b(p))" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()

                let a, b =
                    Frame.random c.Batch 10.0 dtype cpu g, Frame.random c.Batch 10.0 dtype cpu g

                let p = Draw.points g c.Batch 10.0 dtype
                let direct = Frame.apply a (Frame.apply b p)
                Tol.close "p" (pointTol * scale direct) (Frame.apply (Frame.compose a b) p) direct)

            Props.property "T ∘ T⁻¹ = T⁻¹ ∘ T = identity" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let f = Frame.random c.Batch 10.0 dtype cpu (c.Generator())
                let id = Frame.identity c.Batch dtype cpu
                let tolT = rotTol * (1.0 + f.T.abs().max().ToDouble()) * 10.0
                closeFrames "T∘T⁻¹" (10.0 * rotTol) tolT (Frame.compose f (Frame.invert f)) id
                closeFrames "T⁻¹∘T" (10.0 * rotTol) tolT (Frame.compose (Frame.invert f) f) id)

            Props.property "invertApply (apply p) = p, and apply (invertApply p) = p" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let f = Frame.random c.Batch 10.0 dtype cpu g
                let p = Draw.points g c.Batch 30.0 dtype

                let scale _ =
                    1.0 + p.abs().max().ToDouble() + f.T.abs().max().ToDouble()

                Tol.close "T⁻¹(T(p))" (pointTol * scale p) (Frame.invertApply f (Frame.apply f p)) p
                Tol.close "T(T⁻¹(p))" (pointTol * scale p) (Frame.apply f (Frame.invertApply f p)) p

                Tol.close
                    "invert = invertApply"
                    (pointTol * scale p)
                    (Frame.apply (Frame.invert f) p)
                    (Frame.invertApply f p))

            Props.property "flat layouts round trip (12 floats, 7 floats, 4×4)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let f = Frame.random c.Batch 10.0 dtype cpu (c.Generator())
                closeFrames "12" 0.0 0.0 (Frame.ofTensor12 (Frame.toTensor12 f)) f
                closeFrames "4x4" 0.0 0.0 (Frame.ofMatrix4 (Frame.toMatrix4 f)) f
                closeFrames "7" (10.0 * rotTol) 0.0 (Frame.ofTensor7 (Frame.toTensor7 f)) f
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
                let tol = 8.0 * eps * (scale p + f.T.abs().max().ToDouble())
                Tol.close "each = broadcast" tol each (Frame.apply (Frame.unsqueeze -1L f) p)
                let back = Frame.invertApply (Frame.unsqueeze -1L f) each
                Tol.close "invertApply undoes it" (pointTol * (scale p + f.T.abs().max().ToDouble())) back p
                // invertApplyEach computes the same Rᵀ (x − T), again in a product order of the backend's choosing.
                let backEach = Frame.invertApplyEach f each
                Tol.close "invertApplyEach = invertApply broadcast" tol backEach back

                Tol.close
                    "invertApplyEach undoes applyEach"
                    (pointTol * (scale p + f.T.abs().max().ToDouble()))
                    backEach
                    p)

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

                    let tol = if f64 then 1e-12 * scale bb else 5e-7 * scale bb
                    Tol.close "CA" tol ca (torch.zeros_like ca)
                    let bond = (bb.select (-2L, 2L) - bb.select (-2L, 1L)).norm(-1, false)
                    Tol.close "C.x = −|C − CA|" tol (cc.select (-1L, 0L)) (-bond)
                    Tol.close "C.y, C.z = 0" tol (cc.narrow (-1L, 1L, 2L)) (torch.zeros_like (cc.narrow (-1L, 1L, 2L)))
                    Tol.close "N.z = 0" tol (n.select (-1L, 2L)) (torch.zeros_like (n.select (-1L, 2L)))
                    Expect.isTrue (n.select(-1L, 1L).gt((0.0).ToScalar()).all().ToBoolean()) "N.y > 0"
                    // float32: bond vectors are differences of coordinates up to ~200 Å, so their directions carry ~1e-5 error.
                    Expect.isLessThanOrEqual
                        (Rotation.properError frames.Frames.R)
                        (if f64 then 1e-12 else 2e-5)
                        "proper"

                    let esm = Frame.ofBackbone bb
                    Tol.close "ESM ε changes R by < 1e-9" (if f64 then 1e-9 else 2e-5) esm.Frames.R frames.Frames.R)

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
                    // float32: coordinates up to ~200 Å after the motion (σ = 50 Å), see §12.1 G7 with that scale.
                    Tol.close "R" (if f64 then 1e-12 else 5e-5) after.Frames.R expected.R
                    Tol.close "T" (if f64 then 1e-10 else 5e-4) after.Frames.T expected.T)

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
                // Both orders are at most L − 1 compositions deep: each adds about one rotation tolerance to the
                // rotations, and that rotation error times the largest position to the translations.
                let depth = float c.Length
                closeFrames "chain" (10.0 * rotTol * depth) (10.0 * rotTol * depth * scale expected.T) scanned expected)
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
