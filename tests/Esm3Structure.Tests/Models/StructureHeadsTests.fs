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

let private headProperties (dtype: torch.ScalarType) (name: string) =
    let f64 = dtype = torch.float64
    let eps = Rotation.EsmFrameEps

    testList
        name
        [
            Props.property "D1: G∘T places every atom at G(p)" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let head = BackboneHead.ofProjection (projection g c.Batch dtype)
                let motion = Frame.random [||] 30.0 dtype cpu g
                let moved = BackboneHead.place (Frame.compose motion head.Frames)
                let expected = Frame.apply motion head.Backbone
                let scale = 1.0 + expected.abs().max().ToDouble()
                let tol = if f64 then 1e-12 * scale else 1e-5 * (1.0 + scale / 100.0)
                Tol.close "atoms" tol moved expected)

            Props.property "D2: every residue has ESM's ideal N-CA, CA-C and N-CA-C" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let p = projection (c.Generator()) c.Batch dtype
                BackboneChecks.checkIdealGeometry dtype p (BackboneHead.ofProjection p).Backbone)

            Props.property "D3: rotations are proper and the first column is −a/‖a‖" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let p = projection (c.Generator()) c.Batch dtype
                let r = (BackboneHead.ofProjection p).Frames.R
                let a, cc = p.narrow (-1L, 3L, 3L), p.narrow (-1L, 6L, 3L)
                // The Gram–Schmidt ε (1e-10) sits inside the square roots, so column k's squared norm is short of 1
                // by ε/‖vₖ‖²: ‖v₀‖ ≈ 1, ‖v₁‖ ≈ sin∠(a, c), and the third column is short by the sum of both. Rounding
                // in the second column grows as 1/sin∠(a, c).
                let s = BackboneChecks.sinAngle a cc // [*, 1]
                let baseTol = if f64 then 1e-12 else 2e-6
                let tolOrtho = baseTol / s + eps * (1.0 + 1.0 / (s * s)) // [*, 1]
                let eye = torch.eye(3L, dtype = dtype).expand_as(r)
                let rtr = r.transpose(-1L, -2L).matmul r
                Tol.within "RᵀR − I" (rtr - eye) (tolOrtho.unsqueeze (-1L))
                Tol.within "det R − 1" (torch.linalg.det r - 1.0) (tolOrtho.squeeze (-1L))
                // The axis is formed as t − (â + t): rounding at |t| ≈ 10–40 Å (float32: ~4e-6).
                let tolFirst = if f64 then 1e-12 + eps else 1e-5
                Tol.close "first column" tolFirst (r.select (-1L, 0L)) (-a / a.norm (-1, true)))

            Props.property "D4: scaling a or c by a positive factor leaves the frame unchanged" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let p = projection g c.Batch dtype
                let s = BackboneChecks.sinAngle (p.narrow (-1L, 3L, 3L)) (p.narrow (-1L, 6L, 3L))
                // Rescaling only moves roundings (of â + t, ĉ + t), amplified by 1/sin∠(a, c) in the second axis.
                let tol = (if f64 then 1e-9 else 1e-5) / s.unsqueeze (-1L) // [*, 1, 1]

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
                    Tol.within (sprintf "R (channels %d…)" start) (f1.R - f0.R) tol
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

                // A convex combination rounds a few ulps past the extreme centres when saturated.
                let slack = if f64 then 1e-15 else 5e-7
                let vp = Plddt.binCentresFor 50L (if f64 then dtype else torch.float32) cpu
                let plddt = Plddt.ofLogits plddtLogits
                Expect.isTrue (plddt.ge(vp.min () * (1.0 - slack)).all().item<bool>()) "pLDDT ≥ 0.01"
                Expect.isTrue (plddt.le(vp.max () * (1.0 + slack)).all().item<bool>()) "pLDDT ≤ 0.99"
                let centres = AlignedError.binCentres dtype cpu
                let pae = AlignedError.pae paeLogits real
                Expect.isTrue (pae.ge(centres.min () * (1.0 - slack)).all().item<bool>()) "pAE ≥ 0.25"
                Expect.isTrue (pae.le(centres.max () * (1.0 + slack)).all().item<bool>()) "pAE ≤ 31.75"
                let nonPair = AlignedError.pairMask(real).logical_not()
                let sixteen = torch.full_like (pae.masked_select nonPair, (16.0).ToScalar())
                Tol.close "non-pair pAE" (if f64 then 1e-12 else 1e-5) (pae.masked_select nonPair) sixteen
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

                // The row mean divides by (1e-10 + n), a relative 1e-10/n in float64.
                let tol = if f64 then 1e-12 + 1e-10 else 1e-6
                let ptm = AlignedError.ptm oneHot real
                Tol.close "pTM" tol ptm (torch.tensor(expected).to_type dtype)
                let logits = torch.randn ([| 2L; l; l; 64L |], dtype = dtype, generator = g)
                let perm = torch.randperm (l, generator = g)
                let permuted = logits.index_select(1L, perm).index_select(2L, perm)
                let ptmA = AlignedError.ptm logits real
                let ptmB = AlignedError.ptm permuted (real.index_select (1L, perm))
                Tol.close "permuted" (if f64 then 1e-12 else 1e-6) ptmB ptmA)
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
                let pl = Plddt.binCentresFor Plddt.Bins torch.float64 cpu
                Tol.close "pLDDT centres" 1e-15 pl (torch.arange (50L, dtype = torch.float64) * 0.02 + 0.01)
                let pl32 = Plddt.binCentresFor Plddt.Bins torch.float32 cpu
                Tol.close "pLDDT centres (float32)" 1e-7 (pl32.to_type torch.float64) pl
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
                Tol.close "d0" 1e-14 (AlignedError.d0 n) expected
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
