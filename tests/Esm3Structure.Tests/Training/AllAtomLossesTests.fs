module Esm3Structure.Tests.Training.AllAtomLossesTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests

let private f64 = torch.float64

let private ubiquitinChain = lazy (StructureFile.read (Data.small "1ubq_A") None)

/// Residues [start, start + l) of 1UBQ chain A: atom14 coordinates [1, l, 14, 3] (NaN where absent) and mask
/// [1, l, 14].
let private ubiquitin (dtype: torch.ScalarType) (start: int64) (l: int64) =
    let chain = ubiquitinChain.Value
    let x = (ProteinChain.atom14 dtype chain).narrow(0L, start, l).unsqueeze 0L
    let m = (ProteinChain.atom14Mask chain).narrow(0L, start, l).unsqueeze 0L
    x, m

/// `x` moved rigidly by a random rotation and translation drawn from `seed`. Shapes: [B, L, 14, 3]
let private moved (seed: uint64) (x: torch.Tensor) =
    use g = new torch.Generator(seed)
    let r = Rotation.random [||] f64 torch.CPU g
    let t = torch.randn ([| 3L |], dtype = f64, generator = g) * 20.0
    (x.to_type(f64).matmul(r.transpose (0L, 1L)) + t).to_type x.dtype

let private noisy (seed: uint64) (sigma: float) (x: torch.Tensor) =
    use g = new torch.Generator(seed)
    x + (torch.randn (x.shape, dtype = f64, generator = g) * sigma).to_type x.dtype

let private scalar (t: torch.Tensor) = t.ToDouble()

let private direction (seed: uint64) (p: torch.Tensor) (t: torch.Tensor) (m: torch.Tensor) =
    use g = new torch.Generator(seed)
    scalar (AllAtomLosses.allAtomDirection g p t m)

let private direction1 = direction 1UL

/// Atoms of a single one-residue protein from slot coordinates: [1, 1, 14, 3] and mask [1, 1, 14].
let private residue (atoms: (int * float[]) list) =
    let x = torch.zeros ([| 1L; 1L; 14L; 3L |], dtype = f64)
    let m = torch.zeros ([| 1L; 1L; 14L |], dtype = torch.ScalarType.Bool)

    for slot, p in atoms do
        x.select(2L, int64 slot).copy_(torch.tensor(p, dtype = f64).reshape(1L, 1L, 3L))
        |> ignore

        m.select(2L, int64 slot).fill_(true.ToScalar()) |> ignore

    x, m

/// A property case: a window of 1UBQ and the seeds of the prediction's noise and of the rigid motion.
type private WindowCase =
    {
        Start: int64
        Length: int64
        Seed: uint64
    }

let private windows =
    gen {
        let! start = Gen.choose (0, 60)
        let! l = Gen.choose (3, 14)
        let! seed = Gen.choose (0, Int32.MaxValue)

        return
            {
                Start = int64 start
                Length = int64 l
                Seed = uint64 seed
            }
    }
    |> Arb.fromGen

let private windowProperty name body =
    testPropertyWithConfig { Props.baseConfig with maxTest = 30 } name (Prop.forAll windows body)

let private invariance (dtype: torch.ScalarType) (tol: float) (c: WindowCase) =
    use _ = torch.NewDisposeScope()
    let t, m = ubiquitin dtype c.Start c.Length
    let p = noisy c.Seed 0.4 (t.nan_to_num (0.0, 0.0, 0.0))
    let q = moved (c.Seed + 1UL) p

    let close what (a: float) (b: float) =
        Expect.floatClose { absolute = tol; relative = tol } a b what

    close "distance" (scalar (AllAtomLosses.allAtomDistance q t m)) (scalar (AllAtomLosses.allAtomDistance p t m))

    close "direction" (direction1 q t m) (direction1 p t m)

[<Tests>]
let tests =
    testList
        "Training/AllAtomLosses"
        [
            test "both losses are 0 for the true atoms, also with NaN at absent atoms" {
                use _ = torch.NewDisposeScope()
                let x, m = ubiquitin f64 0L 12L
                Expect.isTrue (x.isnan().any().ToBoolean()) "the fixture has absent (NaN) slots"
                Expect.floatClose Accuracy.high (scalar (AllAtomLosses.allAtomDistance x x m)) 0.0 "distance"
                Expect.floatClose Accuracy.high (direction1 x x m) 0.0 "direction"
                Expect.floatClose Accuracy.high (scalar (AllAtomLosses.allAtomDistanceWith true x x m)) 0.0 "squared"
            }

            windowProperty "float64: both losses are invariant to a rigid motion of the prediction"
            <| invariance f64 1e-9

            windowProperty "float32: both losses are invariant to a rigid motion of the prediction (loosely)"
            <| invariance torch.float32 2e-3

            test "absent atoms do not contribute: moving them (or making them NaN) changes nothing" {
                use _ = torch.NewDisposeScope()
                let t, m = ubiquitin f64 10L 9L
                let t = t.nan_to_num (0.0, 0.0, 0.0)
                let p = noisy 7UL 0.3 t
                // drop a side chain atom and a backbone atom from the mask
                let m2 = m.clone ()

                let drop (i: int64) (slot: int64) =
                    Expect.isTrue (m2.[0L, i, slot].ToBoolean()) "the dropped atom is present"

                    m2.select(0L, 0L).select(0L, i).select(0L, slot).fill_(false.ToScalar())
                    |> ignore

                drop 3L 5L
                drop 6L 0L
                let absent = m2.logical_not().unsqueeze -1L
                let far = torch.full_like (t, 123.0)
                let t2 = torch.where (absent, torch.full_like (t, Double.NaN), t)
                let p2 = torch.where (absent, far, p)
                let d = scalar (AllAtomLosses.allAtomDistance p t m2)
                let r = direction1 p t m2
                Expect.floatClose Accuracy.veryHigh (scalar (AllAtomLosses.allAtomDistance p2 t2 m2)) d "distance"
                Expect.floatClose Accuracy.veryHigh (direction1 p2 t2 m2) r "direction"
                Expect.notEqual d (scalar (AllAtomLosses.allAtomDistance p t m)) "the dropped atoms did count before"

                // and the gradient stays finite with NaN at absent target atoms
                let leaf = p2.detach().requires_grad_ true

                use g = new torch.Generator(1UL)

                let loss =
                    AllAtomLosses.allAtomDistance leaf t2 m2
                    + AllAtomLosses.allAtomDirection g leaf t2 m2

                loss.backward ()
                Expect.isTrue (leaf.grad.isfinite().all().ToBoolean()) "finite gradient"
                let absentGrad = leaf.grad.masked_select (absent.expand_as leaf.grad)
                Expect.equal (absentGrad.abs().max().ToDouble()) 0.0 "no gradient at absent atoms"
            }

            test "distance loss: a hand-computed three-atom case, and the clamp at 25" {
                use _ = torch.NewDisposeScope()

                let t, m =
                    residue [ 0, [| 0.0; 0.0; 0.0 |]; 1, [| 3.0; 0.0; 0.0 |]; 5, [| 0.0; 4.0; 0.0 |] ]
                // move atom 5 to (0, 6, 0): pairs 0–5: 6 vs 4, 1–5: √45 vs 5; each pair twice among 9 entries
                let p, _ =
                    residue [ 0, [| 0.0; 0.0; 0.0 |]; 1, [| 3.0; 0.0; 0.0 |]; 5, [| 0.0; 6.0; 0.0 |] ]

                let expected = 2.0 * (4.0 + (sqrt 45.0 - 5.0) ** 2.0) / 9.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (AllAtomLosses.allAtomDistance p t m))
                    expected
                    "plain"

                // squared: 36 vs 16 and 45 vs 25 -> both errors 400, clamped at 25
                Expect.floatClose
                    { absolute = 1e-9; relative = 1e-9 }
                    (scalar (AllAtomLosses.allAtomDistanceWith true p t m))
                    (2.0 * (25.0 + 25.0) / 9.0)
                    "squared, clamped"
            }

            test "direction loss: a hand-computed case (bonds, partners, Gram matrices)" {
                use _ = torch.NewDisposeScope()
                // slot 1 is bonded to 0 and 2 (1.5 Å); 0–2 is 2.12 Å apart (no bond), so only slot 1 is kept:
                // v1 = x0 − x1 = (−1.5, 0, 0), v2 = x2 − x1 = (0, 1.5, 0), n = v1 × v2 = (0, 0, −2.25)
                let t, m =
                    residue [ 0, [| 0.0; 0.0; 0.0 |]; 1, [| 1.5; 0.0; 0.0 |]; 2, [| 1.5; 1.5; 0.0 |] ]

                let keep, first, second = AllAtomLosses.bondPartners t m

                Expect.sequenceEqual
                    (keep.flatten().data<bool>().ToArray().[0..3])
                    [| false; true; false; false |]
                    "kept"

                Expect.equal (first.flatten().[1].ToInt64()) 0L "first partner"
                Expect.equal (second.flatten().[1].ToInt64()) 2L "second partner"
                // prediction: x2 at (1.5, 1, 0): v2 = (0, 1, 0), n = (0, 0, −1.5); G = diag(2.25, 2.25, 5.0625),
                // Ĝ = diag(2.25, 1, 2.25): errors 0, 1.5625, 7.91015625 over 9 entries
                let p, _ =
                    residue [ 0, [| 0.0; 0.0; 0.0 |]; 1, [| 1.5; 0.0; 0.0 |]; 2, [| 1.5; 1.0; 0.0 |] ]

                Expect.floatClose
                    { absolute = 1e-12; relative = 1e-12 }
                    (direction1 p t m)
                    ((1.5625 + 2.8125 ** 2.0) / 9.0)
                    "loss"

                // bonds come from the truth: a prediction that stretches 1–2 to 3 Å still uses the same vectors
                // (v2 = (0, 3, 0), n = (0, 0, −4.5)): errors (9 − 2.25)², (20.25 − 5.0625)² clamped at 20
                let far, _ =
                    residue [ 0, [| 0.0; 0.0; 0.0 |]; 1, [| 1.5; 0.0; 0.0 |]; 2, [| 1.5; 3.0; 0.0 |] ]

                Expect.floatClose
                    { absolute = 1e-12; relative = 1e-12 }
                    (direction1 far t m)
                    ((20.0 + 20.0) / 9.0)
                    "clamped at 20"
            }

            test "bond partners of a real methionine: CA (N, C), C (CA, O), CB (CA, CG), CG (CB, SD), SD (CG, CE)" {
                use _ = torch.NewDisposeScope()
                let t, m = ubiquitin f64 0L 1L // MET 1
                Expect.equal ubiquitinChain.Value.Sequence.[0] 'M' "residue 1 is a methionine"
                let keep, first, second = AllAtomLosses.bondPartners t m
                let kept = keep.flatten().data<bool>().ToArray()
                let f = first.flatten().data<int64>().ToArray()
                let s = second.flatten().data<int64>().ToArray()
                // MET atom14: N CA C O CB CG SD CE
                Expect.sequenceEqual kept.[0..7] [| false; true; true; false; true; true; true; false |] "kept"

                Expect.sequenceEqual
                    [| for i in [ 1; 2; 4; 5; 6 ] -> f.[i], s.[i] |]
                    [| 0L, 2L; 1L, 3L; 1L, 5L; 4L, 6L; 5L, 7L |]
                    "partners"
            }

            test "subsampling keeps at most the cap, from the generator, with the same indices for both structures" {
                use _ = torch.NewDisposeScope()
                let t, m = ubiquitin f64 20L 10L
                let t = t.nan_to_num (0.0, 0.0, 0.0)
                let keep, _, _ = AllAtomLosses.bondPartners t m
                let vectors = keep.to_type(torch.int64).sum().ToInt64() * 3L
                Expect.isGreaterThan vectors 40L "enough vectors to subsample"
                let valid = keep.unsqueeze(-1L).expand(-1L, -1L, -1L, 3L).reshape(1L, -1L)

                let pickWith (cap: int) (seed: uint64) =
                    use g = new torch.Generator(seed)
                    AllAtomLosses.subsample g cap valid

                let pick = pickWith 25
                let a, b, c = pick 3UL, pick 3UL, pick 4UL
                Expect.equal (a.to_type(torch.int64).sum().ToInt64()) 25L "25 kept"
                Expect.isTrue (a.logical_and(valid.logical_not ()).any().ToBoolean() |> not) "only valid entries"
                Expect.isTrue (a.eq(b).all().ToBoolean()) "same seed, same choice"
                Expect.isFalse (a.eq(c).all().ToBoolean()) "another seed, another choice"
                Expect.isTrue ((pickWith 1000 5UL).eq(valid).all().ToBoolean()) "under the cap: all"
                // perfect prediction: 0 with any subsample; a noisy one: finite and positive
                let capped (seed: uint64) (p: torch.Tensor) =
                    use g = new torch.Generator(seed)
                    scalar (AllAtomLosses.allAtomDirectionWith 25 g p t m)

                Expect.floatClose Accuracy.high (capped 3UL t) 0.0 "perfect"
                let p = noisy 2UL 0.3 t
                Expect.isGreaterThan (capped 3UL p) 0.0 "noisy"
                // The same seed subsamples the same vectors; another seed others, so the loss moves (the first check
                // alone compared the function with itself).
                Expect.equal (capped 3UL p) (capped 3UL p) "deterministic in the seed"
                Expect.notEqual (capped 4UL p) (capped 3UL p) "another seed, another subsample"
            }

            test "both losses are > 0 when one side-chain atom moves" {
                use _ = torch.NewDisposeScope()
                let t, m = ubiquitin f64 0L 6L
                let p = t.nan_to_num (0.0, 0.0, 0.0)
                // residue 0 (MET), slot 5 (CG): move it by 0.5 Å
                let shifted = p.clone ()
                let atom = shifted.select(1L, 0L).select(1L, 5L)
                atom.add_ (torch.tensor ([| 0.5; 0.0; 0.0 |], dtype = f64)) |> ignore
                Expect.isGreaterThan (scalar (AllAtomLosses.allAtomDistance shifted t m)) 1e-4 "distance"
                Expect.isGreaterThan (direction1 shifted t m) 1e-4 "direction"
            }

            test "shape errors name the argument" {
                use _ = torch.NewDisposeScope()
                let t, m = ubiquitin f64 0L 4L

                Expect.throwsT<ArgumentException>
                    (fun () -> AllAtomLosses.allAtomDistance (t.narrow (2L, 0L, 13L)) t m |> ignore)
                    "predicted"

                Expect.throwsT<ArgumentException>
                    (fun () -> AllAtomLosses.allAtomDistance t t (m.narrow (1L, 0L, 3L)) |> ignore)
                    "mask"
            }
        ]
