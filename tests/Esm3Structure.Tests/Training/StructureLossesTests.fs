module Esm3Structure.Tests.Training.StructureLossesTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests

let private f64 = torch.float64

/// The first `l` residues of 1UBQ chain A as [1, l, 3, 3] float64.
let private ubiquitin (l: int64) =
    let chain = StructureFile.read (Data.small "1ubq_A") None
    (ProteinChain.backbone f64 chain).narrow(0L, 0L, l).unsqueeze 0L

let private allReal (x: torch.Tensor) =
    torch.ones ([| x.shape.[0]; x.shape.[1] |], dtype = torch.ScalarType.Bool)

/// `x` moved rigidly: a random rotation and translation drawn from `seed`. Shapes: [B, L, 3, 3]
let private moved (seed: uint64) (x: torch.Tensor) =
    let g = new torch.Generator(seed)
    let r = Rotation.random [||] f64 torch.CPU g
    let t = torch.randn ([| 3L |], dtype = f64, generator = g) * 10.0
    x.matmul (r.transpose (0L, 1L)) + t

let private noisy (seed: uint64) (sigma: float) (x: torch.Tensor) =
    let g = new torch.Generator(seed)
    x + torch.randn (x.shape, dtype = f64, generator = g) * sigma

/// One residue from three points. Shapes: -> [1, 1, 3, 3]
let private residue (n: float[]) (ca: float[]) (c: float[]) =
    torch.tensor(Array.concat [ n; ca; c ], dtype = f64).reshape(1L, 1L, 3L, 3L)

let private scalar (t: torch.Tensor) = t.ToDouble()

/// Logits that put a large margin on each label. Shapes: labels [*] int64 -> [*, k]
let private confident (k: int64) (labels: torch.Tensor) =
    torch.nn.functional.one_hot(labels, k).to_type f64 * 50.0

/// A loss of (predicted, target, mask) checked for invariance under rigid motions of either structure on the first
/// `l` residues of 1UBQ against a copy with noise σ from `noiseSeed`: five motions each, float64 to `Accuracy.high`,
/// and both moved in float32 to 1e-4 relative (coordinates up to ~50 Å carry ~3e-6 Å of rounding, and the losses
/// checked here average errors of at least their ε floor, 0.01 Å, so 1e-4 holds with a wide margin).
let private invariantUnderMotions
    (loss: torch.Tensor -> torch.Tensor -> torch.Tensor -> torch.Tensor)
    (l: int64)
    (noiseSeed: uint64)
    (sigma: float)
    =
    let x = ubiquitin l
    let m = allReal x
    let y = noisy noiseSeed sigma x

    for seed in 1UL .. 5UL do
        let reference = scalar (loss y x m)
        Expect.floatClose Accuracy.high (scalar (loss (moved seed y) x m)) reference "prediction moved"
        Expect.floatClose Accuracy.high (scalar (loss y (moved (seed + 100UL) x) m)) reference "target moved"
        let f32 (t: torch.Tensor) = t.to_type torch.float32
        let c = scalar (loss (f32 (moved seed y)) (f32 (moved (seed + 7UL) x)) m)
        Expect.floatClose { absolute = 0.0; relative = 1e-4 } c reference "float32, both moved"

[<Tests>]
let tests =
    testList
        "Training/StructureLosses"
        [
            test "distance and direction losses are 0 for the true backbone and > 0 for a perturbed one" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 20L
                let m = allReal x
                Expect.floatClose Accuracy.high (scalar (StructureLosses.backboneDistance x x m)) 0.0 "distance"
                Expect.floatClose Accuracy.high (scalar (StructureLosses.backboneDirection x x m)) 0.0 "direction"
                let y = noisy 3UL 0.5 x
                Expect.isGreaterThan (scalar (StructureLosses.backboneDistance y x m)) 0.01 "distance, noisy"
                Expect.isGreaterThan (scalar (StructureLosses.backboneDirection y x m)) 0.01 "direction, noisy"
            }

            test "distance and direction losses are invariant to a rigid motion of the prediction" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 17L
                let m = allReal x
                let y = noisy 5UL 0.7 x

                for seed in 1UL .. 4UL do
                    let z = moved seed y

                    Expect.floatClose
                        { absolute = 1e-9; relative = 1e-9 }
                        (scalar (StructureLosses.backboneDistance z x m))
                        (scalar (StructureLosses.backboneDistance y x m))
                        "distance"

                    Expect.floatClose
                        { absolute = 1e-9; relative = 1e-9 }
                        (scalar (StructureLosses.backboneDirection z x m))
                        (scalar (StructureLosses.backboneDirection y x m))
                        "direction"
            }

            test "distance loss: a hand-computed residue, and the clamp at 25" {
                use _ = torch.NewDisposeScope()
                let target = residue [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |] [| 1.0; 1.0; 0.0 |]
                let m = allReal target
                let pred = residue [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |] [| 1.0; 2.0; 0.0 |]
                // pairs N–C: √5 vs √2, CA–C: 2 vs 1, N–CA equal; each pair twice among 9 entries
                let expected = 2.0 * ((sqrt 5.0 - sqrt 2.0) ** 2.0 + 1.0) / 9.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (StructureLosses.backboneDistance pred target m))
                    expected
                    "plain"

                // squared distances: N–C 5 vs 2, CA–C 4 vs 1 → errors 9 and 9
                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (StructureLosses.backboneDistanceWith true false pred target m))
                    (2.0 * (9.0 + 9.0) / 9.0)
                    "squared"

                let far = residue [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |] [| 1.0; 50.0; 0.0 |]
                // N–C and CA–C errors are both far above 5 Å: each clamps at 25
                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (StructureLosses.backboneDistance far target m))
                    (2.0 * (25.0 + 25.0) / 9.0)
                    "clamped"

                // linear beyond the clamp: error e = 50 − √2 (N–C) and 49 (CA–C) give 2·5·e − 25 each
                let linear (e: float) = 10.0 * e - 25.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (StructureLosses.backboneDistanceWith false true far target m))
                    (2.0 * (linear (sqrt (1.0 + 2500.0) - sqrt 2.0) + linear 49.0) / 9.0)
                    "linear beyond the clamp"
            }

            test
                "limitError: min(e², c) when clamping; Huber beyond c when linear, with value and slope continuous at c" {
                use _ = torch.NewDisposeScope()
                let c = 25.0
                // errors e around and far beyond √c = 5, as e² with autograd on e
                let e =
                    torch.tensor ([| 0.0; 1.0; 4.999; 5.0; 5.001; 7.0; 40.0 |], dtype = f64, requires_grad = true)

                let clamped = StructureLosses.limitError false c (e.square ())
                let linear = StructureLosses.limitError true c (e.square ())
                linear.sum().backward()
                let slopes = e.grad.data<float>().ToArray()

                e.data<float>().ToArray()
                |> Array.iteri (fun i x ->
                    let within = x * x <= c
                    Expect.floatClose Accuracy.veryHigh (clamped.[int64 i].ToDouble()) (min (x * x) c) "clamped"

                    Expect.floatClose
                        Accuracy.veryHigh
                        (linear.[int64 i].ToDouble())
                        (if within then x * x else 2.0 * sqrt c * x - c)
                        "linear: value"

                    // d/de: 2e within the clamp, 2√c = 10 beyond; never 0 for e > 0
                    Expect.floatClose Accuracy.veryHigh slopes.[i] (if within then 2.0 * x else 2.0 * sqrt c) "slope")
            }

            test "direction loss of one residue: v1, v2, v4 only (no neighbours), hand-computed Gram matrices" {
                use _ = torch.NewDisposeScope()
                let target = residue [| 0.0; 1.0; 0.0 |] [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |]
                let m = allReal target
                // v1 = CA − N = (0, −1, 0), v2 = C − CA = (1, 0, 0), v4 = −(v1 × v2) = (0, 0, −1)
                let _, valid =
                    StructureLosses.directionVectors target m (StructureLosses.bonded target m)

                Expect.sequenceEqual
                    (valid.flatten().data<bool>().ToArray())
                    [| true; true; false; true; false; false |]
                    "valid vectors"

                // scaling by 1.5 scales v1, v2 by 1.5 and v4 by 2.25: the Gram diagonal becomes 2.25, 2.25, 5.0625
                // (errors 1.5625, 1.5625, 16.50390625); off-diagonals stay 0
                let pred = target * 1.5
                let expected = (1.5625 + 1.5625 + (5.0625 - 1.0) ** 2.0) / 9.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (StructureLosses.backboneDirection pred target m))
                    expected
                    "loss"
            }

            test "direction vectors need a peptide bond: a chain break drops v3, v5, v6 across it" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 6L
                let m = allReal x
                let broken = x.clone ()
                // move residues 3.. 10 Å away: the link 2 → 3 breaks
                broken.narrow(1L, 3L, 3L).add_(torch.tensor ([| 10.0; 0.0; 0.0 |], dtype = f64))
                |> ignore

                let links = StructureLosses.bonded broken m

                Expect.sequenceEqual
                    (links.flatten().data<bool>().ToArray())
                    [| true; true; false; true; true; false |]
                    "links"

                let _, valid = StructureLosses.directionVectors broken m links
                let v = valid.reshape(6L, 6L).data<bool>().ToArray()
                // residue 2: v3 and v6 dropped; residue 3: v5 dropped
                Expect.sequenceEqual v.[12..17] [| true; true; false; true; true; false |] "residue 2"
                Expect.sequenceEqual v.[18..23] [| true; true; true; true; false; true |] "residue 3"
            }

            test "masked residues do not count: garbage there changes nothing, and the loss equals the cropped one" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 12L
                let y = noisy 9UL 0.6 x
                let m = allReal x
                m.narrow(1L, 8L, 4L).fill_(false) |> ignore
                let garbageY = y.clone ()
                garbageY.narrow(1L, 8L, 4L).fill_(1e4) |> ignore
                let garbageX = x.clone ()
                garbageX.narrow(1L, 8L, 4L).fill_(Double.NaN) |> ignore

                for name, loss in
                    [
                        "distance", StructureLosses.backboneDistance
                        "direction", StructureLosses.backboneDirection
                    ] do
                    let reference = scalar (loss y x m)

                    let cropped =
                        scalar (loss (y.narrow (1L, 0L, 8L)) (x.narrow (1L, 0L, 8L)) (m.narrow (1L, 0L, 8L)))

                    let garbage = scalar (loss garbageY garbageX m)
                    Expect.floatClose { absolute = 1e-9; relative = 1e-9 } garbage reference (name + ": garbage")
                    Expect.floatClose { absolute = 1e-9; relative = 1e-9 } cropped reference (name + ": cropped")
            }

            test "losses keep finite gradients with NaN in masked target residues" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 9L
                let m = allReal x
                m.narrow(1L, 4L, 1L).fill_(false) |> ignore
                let target = x.clone ()
                target.narrow(1L, 4L, 1L).fill_(Double.NaN) |> ignore
                let y = (noisy 2UL 0.3 x).requires_grad_(true)

                let total =
                    StructureLosses.backboneDistance y target m
                    + StructureLosses.backboneDirection y target m

                total.backward ()
                Expect.isTrue (torch.isfinite(y.grad).all().ToBoolean()) "finite gradient"
            }

            test "FAPE of the true backbone is sqrt(ε)/Z; shifting one residue by 3 Å gives the hand-computed value" {
                use _ = torch.NewDisposeScope()
                let l = 12L
                let x = ubiquitin l
                let m = allReal x
                let floor = sqrt StructureLosses.FapeEps
                Expect.floatClose Accuracy.high (scalar (StructureLosses.backboneFape x x m)) (floor / 10.0) "self"

                // Residue 4 moved by d (‖d‖ = 3 Å) without rotation: its 3 atoms are 3 Å off in every other frame,
                // and in its own frame every other residue's 3 atoms are 3 Å off; everything else is exact.
                let shifted = x.clone ()

                shifted.narrow(1L, 4L, 1L).add_(torch.tensor ([| 1.0; 2.0; 2.0 |], dtype = f64))
                |> ignore

                let off = 6.0 * float (l - 1L)
                let all = 3.0 * float (l * l)
                let err = sqrt (9.0 + StructureLosses.FapeEps)
                let expected = (off * err + (all - off) * floor) / all / 10.0

                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.backboneFape shifted x m))
                    expected
                    "one residue shifted"

                // masking the shifted residue removes every error
                let keep = m.clone ()
                keep.[0L, 4L] <- torch.tensor false

                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.backboneFape shifted x keep))
                    (floor / 10.0)
                    "masked"
            }

            test "FAPE is invariant to rigid motions of either structure (float64 tight, float32 at 1e-4 relative)" {
                use _ = torch.NewDisposeScope()
                invariantUnderMotions StructureLosses.backboneFape 30L 5UL 2.0
            }

            test "FAPE keeps a gradient for errors beyond the clamp only through its unclamped part" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 20L
                let m = allReal x
                // every residue 40 Å further out: every inter-residue error is far beyond 10 Å
                let centre = (x.select(2L, 1L).mean([| 1L |], true)).unsqueeze(2L)
                let far = centre + (x - centre) * 4.0

                let gradNorm (fraction: float) =
                    let p = (far.clone ()).requires_grad_(true)
                    let loss = StructureLosses.backboneFapeWith 0.5 fraction p x m
                    loss.backward ()
                    p.grad.norm().ToDouble()

                // clamp 0.5 Å: only a residue's own atoms (error ≤ sqrt(ε) after the frame fit) stay below it
                Expect.isLessThan (gradNorm 0.0) 1e-12 "fully clamped: no gradient"
                Expect.isGreaterThan (gradNorm StructureLosses.FapeUnclampedFraction) 1e-3 "10 % unclamped: a gradient"
            }

            test
                "local CA distance: a straight chain shrunk by 10 % gives the hand-computed mean over pairs within 15 Å" {
                use _ = torch.NewDisposeScope()
                // Six residues with CA on a line 3.8 Å apart (N and C beside it): pairs 1–3 apart lie within 15 Å
                // (3.8, 7.6, 11.4 Å); 4 apart is 15.2 Å, outside LDDT's radius.
                let chain (spacing: float) =
                    torch
                        .tensor(
                            [|
                                for i in 0..5 do
                                    let x = spacing * float i
                                    yield! [| x; 1.0; 0.0; x; 0.0; 0.0; x; -1.0; 0.5 |]
                            |],
                            dtype = f64
                        )
                        .reshape(1L, 6L, 3L, 3L)

                let target = chain 3.8
                let predicted = chain (3.8 * 0.9)
                let m = allReal target

                let err (d: float) =
                    sqrt ((0.1 * d) ** 2.0 + StructureLosses.FapeEps)
                // ordered pairs: 2 × (5 one apart, 4 two apart, 3 three apart)
                let expected = (5.0 * err 3.8 + 4.0 * err 7.6 + 3.0 * err 11.4) / 12.0
                let loss = StructureLosses.localCaDistance 15.0 predicted target m
                Expect.floatClose Accuracy.high (scalar loss) expected "shrunk by 10 %"

                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.localCaDistance 15.0 target target m))
                    (sqrt StructureLosses.FapeEps)
                    "the target itself: the ε floor"

                // Residue 0 masked: its pairs (one each at 1, 2 and 3 apart) leave the mean.
                let keep = m.clone ()
                keep.[0L, 0L] <- torch.tensor false
                let fewer = (4.0 * err 3.8 + 3.0 * err 7.6 + 2.0 * err 11.4) / 9.0

                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.localCaDistance 15.0 predicted target keep))
                    fewer
                    "masked residue"

                // The radius is judged on the target: a prediction stretched past 15 Å keeps the pair.
                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.localCaDistance 15.0 (chain 10.0) target m))
                    ((5.0 * sqrt (6.2 ** 2.0 + StructureLosses.FapeEps)
                      + 4.0 * sqrt (12.4 ** 2.0 + StructureLosses.FapeEps)
                      + 3.0 * sqrt (18.6 ** 2.0 + StructureLosses.FapeEps))
                     / 12.0)
                    "stretched"
            }

            test "local CA distance is invariant to rigid motions of either structure (float64 tight, float32 at 1e-4)" {
                use _ = torch.NewDisposeScope()
                // In float32 the pair set must be float64's: no target CA pair of these 40 residues lies within
                // 1e-3 Å of the 15 Å radius, far beyond float32's ~4e-6 Å of rounding at 30 Å.
                let ca = (ubiquitin 40L).select(2L, 1L).squeeze 0L
                let d = torch.cdist (ca.unsqueeze 0L, ca.unsqueeze 0L)
                Expect.isGreaterThan ((d - 15.0).abs().min().ToDouble()) 1e-3 "no target pair on the radius"
                invariantUnderMotions (StructureLosses.localCaDistance 15.0) 40L 9UL 1.5
            }

            test "binned direction labels: an orthonormal residue pairs with itself in the middle bin" {
                use _ = torch.NewDisposeScope()
                // u1 = CA→C = x, u2 = CA→N = y, u3 = z: every cross dot product is 0 → bin floor(1/0.125) = 8
                let target = residue [| 0.0; 1.0; 0.0 |] [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |]
                let labels = StructureLosses.directionLabels target
                Expect.sequenceEqual (labels.flatten().data<int64>().ToArray()) (Array.create 6 8L) "labels"
                // a second residue rotated 90° about z: u1' = y, u2' = −x, u3' = z
                let two =
                    torch.cat (
                        [|
                            target
                            residue [| -1.0; 0.0; 5.0 |] [| 0.0; 0.0; 5.0 |] [| 0.0; 1.0; 5.0 |]
                        |],
                        1L
                    )

                let l01 = (StructureLosses.directionLabels two).select(1L, 0L).select(1L, 1L)
                // pairs (u1,u2') = x·−x = −1 → 0; (u1,u3') = 0 → 8; (u2,u1') = y·y = 1 → 15;
                // (u2,u3') = 0 → 8; (u3,u1') = 0 → 8; (u3,u2') = 0 → 8
                Expect.sequenceEqual (l01.flatten().data<int64>().ToArray()) [| 0L; 8L; 15L; 8L; 8L; 8L |] "pair 0,1"
            }

            test "binned direction labels and the logits' channel order agree with a hand computation on 1UBQ" {
                use _ = torch.NewDisposeScope()
                let l = 24
                let x = ubiquitin (int64 l)
                let atoms = x.squeeze(0L).data<float>().ToArray() // [l, 3 atoms (N, CA, C), 3]

                let atom i a =
                    Array.init 3 (fun m -> atoms.[(i * 3 + a) * 3 + m])

                let sub (p: float[]) (q: float[]) = Array.map2 (-) p q

                let dot (p: float[]) (q: float[]) =
                    Array.fold2 (fun s a b -> s + a * b) 0.0 p q

                let unit (p: float[]) =
                    p |> Array.map (fun v -> v / sqrt (dot p p))

                let cross (p: float[]) (q: float[]) =
                    [|
                        p.[1] * q.[2] - p.[2] * q.[1]
                        p.[2] * q.[0] - p.[0] * q.[2]
                        p.[0] * q.[1] - p.[1] * q.[0]
                    |]

                // ESM3-TRAINING.md §1.3 #3: u1 = CA→C, u2 = CA→N, u3 = u1 × u2 normalised; the six ordered cross
                // pairs (a ≠ b) in the order (1,2) (1,3) (2,1) (2,3) (3,1) (3,2); 16 bins of width 0.125 on [−1, 1]
                let frames =
                    Array.init l (fun i ->
                        let u1 = unit (sub (atom i 2) (atom i 1))
                        let u2 = unit (sub (atom i 0) (atom i 1))
                        [| u1; u2; unit (cross u1 u2) |])

                let order = [| 0, 1; 0, 2; 1, 0; 1, 2; 2, 0; 2, 1 |]

                // (d + 1) / 0.125 for every entry; its floor is the label
                let scaled =
                    Array.init (l * l * 6) (fun e ->
                        let i, j, c = e / (l * 6), e / 6 % l, e % 6
                        let a, b = order.[c]
                        (dot frames.[i].[a] frames.[j].[b] + 1.0) / 0.125)

                let hand = scaled |> Array.map (fun v -> int64 (max 0.0 (min 15.0 (floor v))))

                let labels = (StructureLosses.directionLabels x).flatten().data<int64>().ToArray() // [1, l, l, 6]
                // A dot product on a bin edge (u3 ⊥ u1, u2 of the same residue: exactly 0) may round to either side.
                let onEdge = scaled |> Array.map (fun v -> abs (v - round v) < 1e-9)

                let agree =
                    Array.map3 (fun h g edge -> h = g || (edge && abs (h - g) = 1L)) hand labels onEdge

                Expect.allEqual agree true "every label, by hand"

                Expect.isLessThanOrEqual
                    (onEdge |> Array.filter id |> Array.length)
                    (4 * l)
                    "only the same-residue edges"

                // Logits laid out as the decoder's 96 direction channels are read: channel c's 16 bins contiguous
                // (index 16c + k). The labels in that layout give a near-zero loss; read bin-major
                // (index 6k + c) the same numbers are wrong for almost every entry.
                let logits (index: int -> int -> int) =
                    let v = Array.zeroCreate (l * l * 96)

                    // the labels just checked against the hand computation (they differ from it only on edges)
                    labels
                    |> Array.iteri (fun e k -> v.[e / 6 * 96 + index (e % 6) (int k)] <- 50.0)

                    torch.tensor(v, dtype = f64).reshape(1L, int64 l, int64 l, 96L)

                let m = allReal x

                let channelMajor =
                    scalar (StructureLosses.binnedDirection (logits (fun c k -> 16 * c + k)) x m)

                let binMajor =
                    scalar (StructureLosses.binnedDirection (logits (fun c k -> 6 * k + c)) x m)

                Expect.isLessThan channelMajor 1e-12 "channel-major layout: labels found"
                Expect.isGreaterThan binMajor 10.0 "bin-major layout: labels missed (margin 50)"
            }

            test "distogram labels count squared edges: 3 Å → class 3, 30 Å → 63, self → 0" {
                use _ = torch.NewDisposeScope()
                let one = ubiquitin 1L

                let at (dx: float) =
                    one + torch.tensor ([| dx; 0.0; 0.0 |], dtype = f64)

                let x = torch.cat ([| one; at 3.0; at 30.0 |], 1L)
                let labels = StructureLosses.distogramLabels x
                let get i j = labels.[0L, int64 i, int64 j].ToInt64()
                Expect.equal (get 0 0) 0L "self"
                Expect.equal (get 0 1) 3L "3 Å: edges 2.3125, 2.625, 2.9375 lie below"
                Expect.equal (get 1 0) 3L "symmetric"
                Expect.equal (get 0 2) 63L "30 Å: past the last edge"
                Expect.equal (get 1 2) 63L "27 Å"
            }

            test "virtual Cβ lies close to the real Cβ of 1UBQ's non-glycine residues" {
                use _ = torch.NewDisposeScope()
                let chain = StructureFile.read (Data.small "1ubq_A") None
                let x = ProteinChain.backbone f64 chain
                let cb = (ProteinChain.atom37 f64 chain).select(1L, 3L)
                let present = (ProteinChain.atom37Mask chain).select(1L, 3L)
                let d = (StructureLosses.virtualCb x - cb).norm(-1, false).masked_select present
                Expect.isGreaterThan (d.shape.[0]) 60L "most residues have a Cβ"
                Expect.isLessThan (d.mean().ToDouble()) 0.2 "mean deviation (Å; a wrong sign or constant gives > 1 Å)"
                Expect.isLessThan (d.max().ToDouble()) 0.5 "largest deviation (Å)"
            }

            test "classification losses: near 0 for confident correct logits, log K for uniform logits, masks respected" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 7L
                let b, l = 1L, 7L
                let m = allReal x
                m.narrow(1L, 5L, 2L).fill_(false) |> ignore
                let dirLabels = StructureLosses.directionLabels x
                let dirLogits = (confident 16L dirLabels).reshape(b, l, l, 96L)
                let dgLabels = StructureLosses.distogramLabels x
                let dgLogits = confident 64L dgLabels
                Expect.isLessThan (scalar (StructureLosses.binnedDirection dirLogits x m)) 1e-6 "direction"
                Expect.isLessThan (scalar (StructureLosses.distogram dgLogits x m)) 1e-6 "distogram"
                let zeros = torch.zeros ([| b; l; l; 64L |], dtype = f64)

                Expect.floatClose
                    Accuracy.high
                    (scalar (StructureLosses.distogram zeros x m))
                    (log 64.0)
                    "uniform distogram"

                // wrong logits on masked pairs change nothing
                let spoiled = dgLogits.clone ()
                spoiled.narrow(1L, 5L, 2L).fill_(100.0) |> ignore
                Expect.isLessThan (scalar (StructureLosses.distogram spoiled x m)) 1e-6 "masked rows ignored"

                let lddt =
                    torch.tensor([| 0.0; 0.01; 0.5; 0.999; 1.0; 0.3; 0.7 |], dtype = f64).reshape(b, l)

                Expect.sequenceEqual
                    ((StructureLosses.plddtLabels lddt).flatten().data<int64>().ToArray())
                    [| 0L; 0L; 25L; 49L; 49L; 15L; 35L |]
                    "pLDDT labels"

                let plddtLogits = confident 50L (StructureLosses.plddtLabels lddt)
                Expect.isLessThan (scalar (StructureLosses.plddt plddtLogits lddt m)) 1e-6 "pLDDT"
                let moved = x.clone ()
                // residue 0 moves 1.2 Å along x: its CA distances change by at most 1.2 Å
                moved.narrow(1L, 0L, 1L).add_(torch.tensor ([| 1.2; 0.0; 0.0 |], dtype = f64))
                |> ignore

                let paeLabels = StructureLosses.paeLabels moved x
                Expect.equal (paeLabels.[0L, 0L, 0L].ToInt64()) 0L "self"
                Expect.equal (paeLabels.[0L, 2L, 3L].ToInt64()) 0L "unmoved pair"
                Expect.isLessThanOrEqual (paeLabels.max().ToInt64()) 2L "at most 1.2 Å → bin 2"
                Expect.isLessThan (scalar (StructureLosses.pae (confident 64L paeLabels) moved x m)) 1e-6 "pAE"
            }
            test
                "local shape labels: 1UBQ's CA angles and torsions, binned, from plain doubles; chain ends and breaks left out; invariant under rigid motion" {
                use _ = torch.NewDisposeScope()
                let x = ubiquitin 76L
                let m = allReal x
                let angle, torsion, allowed = StructureLosses.localShapeLabels x m
                let ca = x.[0L].select(1L, 1L).data<float>().ToArray() |> Array.chunkBySize 3
                let sub (a: float[]) (b: float[]) = Array.map2 (-) a b

                let dot (a: float[]) (b: float[]) =
                    Array.fold2 (fun s u v -> s + u * v) 0.0 a b

                let cross (a: float[]) (b: float[]) =
                    [|
                        a.[1] * b.[2] - a.[2] * b.[1]
                        a.[2] * b.[0] - a.[0] * b.[2]
                        a.[0] * b.[1] - a.[1] * b.[0]
                    |]

                let ok = allowed.[0L].data<bool>().ToArray()

                Expect.isFalse
                    (ok.[0] || ok.[74] || ok.[75])
                    "no angle at the first residue, no torsion at the last two"

                Expect.isTrue (ok.[1..73] |> Array.forall id) "every inner residue of an unbroken chain"
                let angles = angle.[0L].data<int64>().ToArray()
                let torsions = torsion.[0L].data<int64>().ToArray()
                let mutable nearEdge = 0

                for i in 1..73 do
                    let u, v = sub ca.[i - 1] ca.[i], sub ca.[i + 1] ca.[i]
                    let a = acos (dot u v / sqrt (dot u u * dot v v)) * 180.0 / Math.PI

                    let b1, b2, b3 =
                        sub ca.[i] ca.[i - 1], sub ca.[i + 1] ca.[i], sub ca.[i + 2] ca.[i + 1]

                    let n1, n2 = cross b1 b2, cross b2 b3
                    // The dihedral as IUPAC defines it, by its own formula: sign from b1 · n2.
                    let t = atan2 (sqrt (dot b2 b2) * dot b1 n2) (dot n1 n2) * 180.0 / Math.PI
                    let expectedAngle = int64 (Math.Clamp(floor ((a - 70.0) / 10.0), 0.0, 8.0))
                    let expectedTorsion = int64 (Math.Clamp(floor ((t + 180.0) / 15.0), 0.0, 23.0))
                    // A value within 1e-9° of a bin edge may round either way (float64 through two paths).
                    let edge (value: float) (width: float) =
                        abs (value / width - round (value / width)) < 1e-10

                    if edge (a - 70.0) 10.0 || edge (t + 180.0) 15.0 then
                        nearEdge <- nearEdge + 1
                    else
                        Expect.equal angles.[i] expectedAngle (sprintf "angle class of residue %d (%.2f°)" i a)
                        Expect.equal torsions.[i] expectedTorsion (sprintf "torsion class of residue %d (%.2f°)" i t)

                Expect.equal nearEdge 0 "no value on a bin edge in 1UBQ"
                // Its α-helix (residues 23–34): CA angles of 80–100° and torsions of +30° to +75° (right-handed: the
                // sign convention); residues 24–30, whose four-residue windows lie inside the helix.
                for i in 24..30 do
                    Expect.isTrue
                        (angles.[i] >= 1L
                         && angles.[i] <= 2L
                         && torsions.[i] >= 14L
                         && torsions.[i] <= 16L)
                        (sprintf "helix residue %d: classes %d, %d" i angles.[i] torsions.[i])

                let angle', torsion', allowed' = StructureLosses.localShapeLabels (moved 3UL x) m
                Expect.equal (angle'.data<int64>().ToArray()) angles "angles after a rigid motion"
                Expect.equal (torsion'.data<int64>().ToArray()) torsions "torsions after a rigid motion"
                Expect.equal (allowed'.data<bool>().ToArray()) ok "allowed after a rigid motion"
                // A masked residue breaks the chain: the four residues whose windows hold it lose their classes.
                let keep = m.clone ()
                keep.[0L, 40L] <- torch.tensor false
                let _, _, broken = StructureLosses.localShapeLabels x keep

                let lost =
                    [
                        for i in 0..75 do
                            if ok.[i] && not (broken.[0L, int64 i].ToBoolean()) then
                                i
                    ]

                Expect.equal lost [ 38; 39; 40; 41 ] "windows through residue 40"
                // Confident logits on the labels: the loss is near 0; on shifted labels it is large.
                let k = StructureLosses.LocalShapeAngleBins + StructureLosses.LocalShapeTorsionBins
                let logits = torch.cat ([| confident 9L angle; confident 24L torsion |], -1L)
                Expect.equal logits.shape [| 1L; 76L; k |] "logits"
                Expect.isLessThan (scalar (StructureLosses.localShape logits x m)) 1e-6 "right classes"

                let wrong =
                    torch.cat (
                        [|
                            confident 9L ((angle + 1L).remainder((9L).ToScalar()))
                            confident 24L torsion
                        |],
                        -1L
                    )

                Expect.isGreaterThan (scalar (StructureLosses.localShape wrong x m)) 40.0 "wrong angle classes"
            }
        ]
