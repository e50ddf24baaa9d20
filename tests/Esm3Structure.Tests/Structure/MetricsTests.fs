module Esm3Structure.Tests.Structure.MetricsTests

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tests.StructureTestKit

let private config = { Props.baseConfig with maxTest = 30 }

let private tmConfig = { Props.baseConfig with maxTest = 8 }

let private t64 (rows: float[][]) =
    torch.tensor(Array.concat rows, dtype = f64).reshape(-1L, 3L)

/// The standard TM-score d0, written out here independently of the library.
let private d0Formula (l: int) =
    1.24 * Math.Pow(float (l - 15), 1.0 / 3.0) - 1.8

let private scalar (x: torch.Tensor) = x.ToDouble()

let private expectAll1 (what: string) (tol: float) (x: torch.Tensor) =
    Tol.close what tol (x.to_type f64) (torch.ones_like (x.to_type f64))

/// The best score over the TMscore heuristic's seeds alone: the Kabsch fit on each contiguous fragment, scored with
/// the TM formula written out here. Shapes: model [n, 3], reference [n, 3] -> float
let private bestFragmentSeed (model: torch.Tensor) (reference: torch.Tensor) =
    let n = int model.shape.[0]

    let seeds =
        [|
            for len in Metrics.tmScoreFragmentLengths n do
                for start in 0 .. n - len -> start, len
        |]

    let s = int64 seeds.Length
    let pos = torch.arange(int64 n).unsqueeze 0L
    let starts = torch.tensor(seeds |> Array.map (fst >> int64)).unsqueeze -1L

    let ends =
        torch.tensor(seeds |> Array.map (fun (a, l) -> int64 (a + l))).unsqueeze -1L

    let masks = pos.ge(starts).logical_and(pos.lt ends)
    let pS = model.unsqueeze(0L).expand(s, int64 n, 3L)
    let qS = reference.unsqueeze(0L).expand(s, int64 n, 3L)
    let dist = (Superpose.superpose pS qS (Some masks) - qS).square().sum(-1L).sqrt()
    let d0 = d0Formula n
    let perSeed = (1.0 / (1.0 + (dist / d0).square())).sum(-1L) / float n
    scalar (perSeed.max ())

/// Three segments of the chain, each turned about its own centroid by a random rotation and shifted by up to 10 Å,
/// plus 0.5 Å noise. Shapes: reference [n, 3] -> [n, 3]
let private hinged (g: torch.Generator) (reference: torch.Tensor) =
    let n = int reference.shape.[0]

    let segment (a: int) (b: int) =
        let piece = reference.narrow (0L, int64 a, int64 (b - a))
        let c = piece.mean ([| 0L |], true)

        moveRigid (randomRotation g [||]) (randomTranslation g [||] * 0.1) (piece - c)
        + c

    torch.cat ([| segment 0 (n / 3); segment (n / 3) (2 * n / 3); segment (2 * n / 3) n |], 0L)
    + torch.randn ([| int64 n; 3L |], dtype = f64, generator = g) * 0.5

[<Tests>]
let tests =
    testList
        "Structure/Metrics"
        [
            // ---------------------------------------------------------------- LDDT
            test "LDDT hand case: four residues on a line, the last moved 1.5 Å, a far residue and an absent one" {
                use _ = torch.NewDisposeScope()
                // Reference CA at x = 0, 3.8, 7.6, 11.4 (all pairwise < 15 Å), plus residue 5 at x = 30 (every distance to
                // it ≥ 18.6 Å: no scored pair) and residue 6 absent (NaN coordinates, mask false).
                // Model: the same, but residue 4 moved to x = 12.9, so each pair (i, 4) has δ = 1.5 Å:
                //   thresholds 0.5 ✗, 1 ✗, 2 ✓, 4 ✓ → 0.5; every other scored pair has δ = 0 → 1.
                // Per residue: 1, 2, 3: (1 + 1 + 0.5) / 3 = 5/6; 4: (0.5 · 3) / 3 = 0.5; 5, 6: no pair → NaN.
                // Pooled over the 12 ordered pairs: (6 · 1 + 6 · 0.5) / 12 = 0.75 (the mean of per-residue values would be
                // (3 · 5/6 + 0.5) / 4 = 0.75 too here, so a second case below separates the two poolings).
                let nan = Double.NaN

                let reference =
                    t64
                        [|
                            [| 0.0; 0.0; 0.0 |]
                            [| 3.8; 0.0; 0.0 |]
                            [| 7.6; 0.0; 0.0 |]
                            [| 11.4; 0.0; 0.0 |]
                            [| 30.0; 0.0; 0.0 |]
                            [| nan; nan; nan |]
                        |]

                let model =
                    t64
                        [|
                            [| 0.0; 0.0; 0.0 |]
                            [| 3.8; 0.0; 0.0 |]
                            [| 7.6; 0.0; 0.0 |]
                            [| 12.9; 0.0; 0.0 |]
                            [| 30.0; 0.0; 0.0 |]
                            [| nan; 1.0; nan |]
                        |]

                let mask = torch.tensor [| true; true; true; true; true; false |]
                let res = Metrics.lddtCa model reference (Some mask)
                let per = res.PerResidue

                Tol.close
                    "per residue 1-4"
                    1e-12
                    (per.narrow (0L, 0L, 4L))
                    (torch.tensor [| 5.0 / 6.0; 5.0 / 6.0; 5.0 / 6.0; 0.5 |])

                Expect.isTrue (Double.IsNaN(scalar per.[4L])) "residue 5 has no pair within 15 Å: NaN"
                Expect.isTrue (Double.IsNaN(scalar per.[5L])) "residue 6 is absent: NaN"

                Expect.sequenceEqual
                    (res.Scored.data<bool>().ToArray())
                    [| true; true; true; true; false; false |]
                    "scored"

                Tol.close "pooled" 1e-12 res.Protein (torch.tensor 0.75)
            }

            test "LDDT hand case: pooled over pairs, not averaged over residues" {
                use _ = torch.NewDisposeScope()
                // Reference x = 0, 3.8, 20: pairs (1,2) scored; residue 3 is 16.2 / 20 Å away: no pair.
                // Add residue 4 at x = 10: pairs (1,4) 10, (2,4) 6.2, (3,4) 10 are within 15 Å.
                // Model: residue 3 moved to x = 21 (δ(3,4) = 1 → thresholds 2, 4 → 0.5); others unchanged.
                // Per residue: 1: pairs (1,2) 1, (1,4) 1 → 1; 2: → 1; 3: only (3,4) → 0.5; 4: (4,1) 1, (4,2) 1, (4,3) 0.5 → 2.5/3.
                // Pooled: ordered pairs 2·[(1,2), (1,4), (2,4), (3,4)] = 8, scores sum 2·(1 + 1 + 1 + 0.5) = 7 → 7/8 = 0.875,
                // while the mean of per-residue values is (1 + 1 + 0.5 + 5/6) / 4 = 0.8333.
                let reference =
                    t64
                        [|
                            [| 0.0; 0.0; 0.0 |]
                            [| 3.8; 0.0; 0.0 |]
                            [| 20.0; 0.0; 0.0 |]
                            [| 10.0; 0.0; 0.0 |]
                        |]

                let model =
                    t64
                        [|
                            [| 0.0; 0.0; 0.0 |]
                            [| 3.8; 0.0; 0.0 |]
                            [| 21.0; 0.0; 0.0 |]
                            [| 10.0; 0.0; 0.0 |]
                        |]

                let res = Metrics.lddtCa model reference None
                Tol.close "per residue" 1e-12 res.PerResidue (torch.tensor [| 1.0; 1.0; 0.5; 2.5 / 3.0 |])
                Tol.close "pooled" 1e-12 res.Protein (torch.tensor 0.875)
                // one threshold of 1.5 Å, cutoff 12 Å: the same four pairs are scored and δ(3,4) = 1 < 1.5 → all 1
                let custom =
                    Metrics.lddtCaWith
                        {
                            Cutoff = 12.0
                            Thresholds = [| 1.5 |]
                        }
                        model
                        reference
                        None

                Tol.close "custom per residue" 1e-12 custom.PerResidue (torch.tensor [| 1.0; 1.0; 1.0; 1.0 |])

                let tight =
                    Metrics.lddtCaWith { Cutoff = 8.0; Thresholds = [| 0.5 |] } model reference None
                // cutoff 8: only (1,2) and (2,4) remain; δ = 0 → 1; residue 3 has no pair
                Expect.sequenceEqual
                    (tight.Scored.data<bool>().ToArray())
                    [| true; true; false; true |]
                    "scored with cutoff 8"
            }

            test "LddtConfig.validate names the bad fields" {
                Expect.isOk (LddtConfig.validate LddtConfig.esm) "defaults are valid"
                Expect.equal LddtConfig.esm.Cutoff 15.0 "cutoff 15"
                Expect.sequenceEqual LddtConfig.esm.Thresholds [| 0.5; 1.0; 2.0; 4.0 |] "thresholds"

                match LddtConfig.validate { Cutoff = -1.0; Thresholds = [||] } with
                | Error es -> Expect.equal es.Length 2 "two errors"
                | Ok _ -> failtest "invalid config accepted"

                use _ = torch.NewDisposeScope()
                let x = torch.zeros (3L, 3L, dtype = f64)

                Expect.throwsT<ArgumentException>
                    (fun () -> Metrics.lddtCaWith { Cutoff = 0.0; Thresholds = [| 1.0 |] } x x None |> ignore)
                    "rejected"
            }

            testPropertyWithConfig config "LDDT of identical chains is 1 (float64 and float32)"
            <| Prop.forAll (seedAndSize 2 60) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let x = randomChain g [||] n
                let res = Metrics.lddtCa x x None
                expectAll1 "protein" 1e-12 res.Protein
                Expect.isTrue (res.Scored.all().ToBoolean()) "consecutive residues are 3.8 Å apart: all scored"
                expectAll1 "per residue" 1e-12 res.PerResidue
                let res32 = Metrics.lddtCa (x.to_type f32) (x.to_type f32) None
                Expect.equal res32.Protein.dtype f32 "float32 out"
                expectAll1 "protein float32" 1e-6 res32.Protein)

            testPropertyWithConfig
                config
                "LDDT is invariant under rigid motion of the model and ignores NaN at absent residues"
            <| Prop.forAll (seedAndSize 3 60) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let reference = randomChain g [||] n

                let model =
                    reference + torch.randn ([| int64 n; 3L |], dtype = f64, generator = g) * 1.5

                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) model
                let a = Metrics.lddtCa model reference None
                let b = Metrics.lddtCa moved reference None
                Tol.close "protein" 1e-12 b.Protein a.Protein
                Tol.close "per residue" 1e-12 b.PerResidue a.PerResidue
                let score = scalar a.Protein
                Expect.isTrue (score >= 0.0 && score <= 1.0) "in [0, 1]"
                let mJ, rJ, mask = withJunkRows g 3 model reference
                let c = Metrics.lddtCa mJ rJ (Some mask)
                Tol.close "protein with junk rows" 1e-12 c.Protein a.Protein

                Tol.close
                    "per residue with junk rows"
                    1e-12
                    (c.PerResidue.index_select (0L, mask.nonzero().squeeze -1L))
                    a.PerResidue)

            testPropertyWithConfig config "LDDT over a [2, 3, L, 3] batch equals the per-item results"
            <| Prop.forAll (seedAndSize 3 30) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let batch = [| 2L; 3L |]
                let reference = randomChain g batch n

                let model =
                    reference
                    + torch.randn (Array.append batch [| int64 n; 3L |], dtype = f64, generator = g)

                let mask = randomMask g batch n 2
                let res = Metrics.lddtCa model reference (Some mask)
                Expect.sequenceEqual res.PerResidue.shape (Array.append batch [| int64 n |]) "per-residue shape"
                Expect.sequenceEqual res.Protein.shape batch "protein shape"

                for i in 0L .. 1L do
                    for j in 0L .. 2L do
                        let item (x: torch.Tensor) = x.select(0L, i).select(0L, j)
                        let one = Metrics.lddtCa (item model) (item reference) (Some(item mask))
                        Tol.close "protein item" 1e-12 (item res.Protein) one.Protein

                        let same =
                            torch.where (
                                one.Scored,
                                (item res.PerResidue - one.PerResidue).abs(),
                                torch.zeros_like one.PerResidue
                            )

                        Expect.isLessThanOrEqual (scalar (same.max ())) 1e-12 "per-residue item"
                        Expect.isTrue (item(res.Scored).eq(one.Scored).all().ToBoolean()) "scored item")

            // ---------------------------------------------------------------- TM-score
            test "TM-score d0 and fragment lengths follow the TMscore program" {
                Expect.floatClose Accuracy.veryHigh (Metrics.tmScoreD0 76) (d0Formula 76) "d0(76) from the formula"

                Expect.floatClose
                    { absolute = 1e-5; relative = 0.0 }
                    (Metrics.tmScoreD0 76)
                    3.08126
                    "d0(76) ≈ 3.08 (hand: 1.24 · 61^(1/3) − 1.8)"

                Expect.floatClose
                    Accuracy.veryHigh
                    (Metrics.tmScoreD0 22)
                    (d0Formula 22)
                    "d0(22) = 0.572 (formula above 0.5)"

                Expect.equal (Metrics.tmScoreD0 21) 0.5 "d0(21): formula gives 0.453, clamped to 0.5"
                Expect.equal (Metrics.tmScoreD0 10) 0.5 "d0(10): L ≤ 15 → 0.5"
                Expect.equal (Metrics.tmScoreFragmentLengths 76) [ 76; 38; 19; 9; 4 ] "n = 76"

                Expect.equal
                    (Metrics.tmScoreFragmentLengths 120)
                    [ 120; 60; 30; 15; 7; 4 ]
                    "n = 120 (5 halvings, then the minimum)"

                Expect.equal (Metrics.tmScoreFragmentLengths 8) [ 8; 4 ] "n = 8"
                Expect.equal (Metrics.tmScoreFragmentLengths 4) [ 4 ] "n = 4"
                Expect.equal (Metrics.tmScoreFragmentLengths 3) [ 3 ] "n = 3"
            }

            testPropertyWithConfig tmConfig "TM-score of identical chains and of a rigidly moved copy is 1"
            <| Prop.forAll (seedAndSize 5 120) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let x = randomChain g [||] n
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } (Metrics.tmScore x x None) 1.0 "identical"
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) x
                Expect.floatClose { absolute = 1e-6; relative = 0.0 } (Metrics.tmScore moved x None) 1.0 "rigid copy"

                Expect.floatClose
                    { absolute = 1e-4; relative = 0.0 }
                    (Metrics.tmScore (moved.to_type f32) (x.to_type f32) None)
                    1.0
                    "rigid copy float32")

            testPropertyWithConfig
                tmConfig
                "TM-score is in (0, 1], beats the global Kabsch fit, and ignores NaN at absent residues"
            <| Prop.forAll (seedAndSize 5 100) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let reference = randomChain g [||] n
                let model = randomChain g [||] n // unrelated
                let tm = Metrics.tmScore model reference None
                Expect.isTrue (tm > 0.0 && tm <= 1.0) (sprintf "TM-score %g in (0, 1]" tm)

                let globalFit =
                    Metrics.tmScoreNoSuperpose (Superpose.superpose model reference None) reference None

                Expect.isGreaterThanOrEqual
                    tm
                    (globalFit - 1e-12)
                    "the full-length seed is among the searched superpositions"

                let noisy =
                    reference + torch.randn ([| int64 n; 3L |], dtype = f64, generator = g) * 2.0

                let tmNoisy = Metrics.tmScore noisy reference None
                let mJ, rJ, mask = withJunkRows g 4 noisy reference

                Expect.floatClose
                    { absolute = 1e-10; relative = 0.0 }
                    (Metrics.tmScore mJ rJ (Some mask))
                    tmNoisy
                    "junk rows masked out")

            testPropertyWithConfig
                tmConfig
                "TM-score is at least the score of every fragment seed of the TMscore heuristic"
            <| Prop.forAll (seedAndSize 30 110) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let reference = randomChain g [||] n
                let model = hinged g reference
                let bestSeed = bestFragmentSeed model reference
                let tm = Metrics.tmScore model reference None

                Expect.isGreaterThanOrEqual
                    tm
                    (bestSeed - 1e-12)
                    (sprintf "TM %g vs best fragment seed %g" tm bestSeed))

            test "TM-score over several seed batches (L = 300): the half-displaced hand case" {
                use _ = torch.NewDisposeScope()
                // 300 residues give about 1,800 seeds, processed in several batches. First half in place, second half
                // 1000 Å away: TM = (150 + 150 / (1 + (1000/d0)²)) / 300, as in the 1ubq hand case below.
                let g = generator 300
                let reference = randomChain g [||] 300

                let shift =
                    torch.cat (
                        [|
                            torch.zeros (150L, 3L, dtype = f64)
                            torch.tensor([| 0.0; 1000.0; 0.0 |]).expand(150L, 3L)
                        |],
                        0L
                    )

                let d0 = d0Formula 300
                let expected = (150.0 + 150.0 / (1.0 + (1000.0 / d0) ** 2.0)) / 300.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 0.0 }
                    (Metrics.tmScore (reference + shift) reference None)
                    expected
                    "TM"

                // and no fragment seed of any batch beats the search
                let model = hinged g reference
                let tm = Metrics.tmScore model reference None
                let bestSeed = bestFragmentSeed model reference
                Expect.isGreaterThanOrEqual tm (bestSeed - 1e-12) (sprintf "TM %g vs best fragment seed %g" tm bestSeed)
            }

            test "TM-score hand case: one half in place, the other half 1000 Å away" {
                use _ = torch.NewDisposeScope()
                // The 1ubq CA trace (L = 76); the model's second half (38 residues) is shifted by D = 1000 Å. The best
                // superposition fits the first half exactly: 38 residues at distance 0 and 38 at distance D, so
                // TM = (38 · 1 + 38 / (1 + (D/d0)²)) / 76 with d0 = 1.24 · (76 − 15)^(1/3) − 1.8.
                let reference = ubiquitinCa ()

                let shift =
                    torch.cat (
                        [|
                            torch.zeros (38L, 3L, dtype = f64)
                            torch.tensor([| 600.0; 0.0; 800.0 |]).expand(38L, 3L)
                        |],
                        0L
                    )

                let model = reference + shift
                let d0 = d0Formula 76
                let expected = (38.0 + 38.0 / (1.0 + (1000.0 / d0) ** 2.0)) / 76.0

                Expect.floatClose
                    { absolute = 1e-9; relative = 0.0 }
                    (Metrics.tmScore model reference None)
                    expected
                    "TM"
                // rigidly moving the whole model changes nothing
                let g = generator 5
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) model

                Expect.floatClose
                    { absolute = 1e-9; relative = 0.0 }
                    (Metrics.tmScore moved reference None)
                    expected
                    "TM, moved"
            }

            test "TM-score hand case: every 4th residue 30 Å off, so only the refinement finds the best superposition" {
                use _ = torch.NewDisposeScope()
                // 1ubq CA (L = 76); residues 3, 7, 11, ... (19 of them) are moved 30 Å in random directions. No contiguous
                // fragment of ≥ 4 residues is clean, so no seed alone fits the 57 unmoved residues; the iterations must.
                // At that fit the unmoved residues are at 0 and the moved ones at 30 Å:
                // TM = (57 + 19 / (1 + (30/d0)²)) / 76 (other superpositions are worse by far more than the tolerance).
                let reference = ubiquitinCa ()
                let g = generator 41
                let dir = torch.randn ([| 76L; 3L |], dtype = f64, generator = g)
                let dir = dir / dir.square().sum(-1L, true).sqrt()

                let moved =
                    torch.tensor([| for i in 0..75 -> if i % 4 = 3 then 1.0 else 0.0 |], dtype = f64).unsqueeze -1L

                let model = reference + dir * 30.0 * moved
                let d0 = d0Formula 76
                let expected = (57.0 + 19.0 / (1.0 + (30.0 / d0) ** 2.0)) / 76.0

                Expect.floatClose
                    { absolute = 1e-6; relative = 0.0 }
                    (Metrics.tmScore model reference None)
                    expected
                    "TM"
            }

            test "TM-score of the real 1ubq trace: identical 1, rigid copy 1, decreasing with noise" {
                use _ = torch.NewDisposeScope()
                let ca = ubiquitinCa ()
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } (Metrics.tmScore ca ca None) 1.0 "identical"
                let g = generator 2024
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) ca
                Expect.floatClose { absolute = 1e-6; relative = 0.0 } (Metrics.tmScore moved ca None) 1.0 "rigid copy"

                let meanTm (sigma: float) =
                    [
                        for _ in 1..3 ->
                            let noisy = moved + torch.randn ([| 76L; 3L |], dtype = f64, generator = g) * sigma
                            Metrics.tmScore noisy ca None
                    ]
                    |> List.average

                let curve = [ 0.25; 1.0; 2.0; 4.0; 8.0 ] |> List.map meanTm

                for a, b in List.pairwise curve do
                    Expect.isLessThan b a (sprintf "TM-score decreases with noise: %A" curve)

                Expect.isGreaterThan curve.Head 0.9 "σ = 0.25 Å is nearly perfect"
                Expect.isTrue (List.forall (fun t -> t > 0.0 && t <= 1.0) curve) "in (0, 1]"

                Expect.isTrue
                    (Double.IsNaN(Metrics.tmScore ca ca (Some(torch.zeros (76L, dtype = torch.ScalarType.Bool)))))
                    "no residue: NaN"
            }

            test "TM-score agrees with the TMscore program on perturbed 1ubq traces" {
                use _ = torch.NewDisposeScope()
                // Golden values: the TMscore program (Zhang & Skolnick; Debian package tm-align 20190822+dfsg-2, the
                // Fortran TMscore.f), run as `TMscore model.pdb reference.pdb` on these exact coordinates (rounded to
                // 0.001 Å and written as CA-only PDB files); it prints 4 decimals. Even cases: Gaussian noise of
                // σ = k + 1 Å; odd cases: three segments each turned about its centroid and shifted, plus 0.5 Å noise.
                let golden = [| 0.7882; 0.3388; 0.3847; 0.3808; 0.2401; 0.3655 |]
                let ca = ubiquitinCa ()
                let g = generator 1234
                let n = 76

                for k in 0..5 do
                    let segment (a: int) (b: int) =
                        let piece = ca.narrow (0L, int64 a, int64 (b - a))
                        let c = piece.mean ([| 0L |], true)

                        moveRigid (randomRotation g [||]) (randomTranslation g [||] * 0.1) (piece - c)
                        + c

                    let model =
                        if k % 2 = 0 then
                            ca
                            + torch.randn ([| int64 n; 3L |], dtype = f64, generator = g) * (float k + 1.0)
                        else
                            torch.cat ([| segment 0 (n / 3); segment (n / 3) (2 * n / 3); segment (2 * n / 3) n |], 0L)
                            + torch.randn ([| int64 n; 3L |], dtype = f64, generator = g) * 0.5

                    let round (x: torch.Tensor) = (x * 1000.0).round() / 1000.0
                    let tm = Metrics.tmScore (round model) (round ca) None
                    Expect.floatClose { absolute = 6e-5; relative = 0.0 } tm golden.[k] (sprintf "case %d" k)
            }

            // ---------------------------------------------------------------- GDT_TS, backbone RMSD
            test "GDT_TS hand cases: squares scaled by 2 and 3, and a rigid copy" {
                use _ = torch.NewDisposeScope()
                // Corners (±1, ±1, 0) against the same square scaled by s: the fit is the identity about the centroid and
                // every corner is (s − 1)√2 away. s = 2: 1.41 Å → below 2, 4, 8 but not 1 → GDT = 3/4.
                // s = 3: 2.83 Å → below 4 and 8 → GDT = 2/4.
                let square =
                    t64
                        [|
                            [| 1.0; 1.0; 0.0 |]
                            [| -1.0; 1.0; 0.0 |]
                            [| -1.0; -1.0; 0.0 |]
                            [| 1.0; -1.0; 0.0 |]
                        |]

                Tol.close "s = 2" 1e-12 (Metrics.gdtTs square (square * 2.0) None) (torch.tensor 0.75)
                Tol.close "s = 3" 1e-12 (Metrics.gdtTs square (square * 3.0) None) (torch.tensor 0.5)
                let ca = ubiquitinCa ()
                let g = generator 9
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) ca
                Tol.close "rigid copy of 1ubq" 1e-12 (Metrics.gdtTs moved ca None) (torch.tensor 1.0)

                Tol.close
                    "float32"
                    1e-6
                    ((Metrics.gdtTs (moved.to_type f32) (ca.to_type f32) None).to_type f64)
                    (torch.tensor 1.0)
            }

            testPropertyWithConfig
                config
                "backbone RMSD: 0 for a rigid copy, and equal to the RMSD of the present N, CA, C atoms"
            <| Prop.forAll (seedAndSize 2 30) (fun (seed, n) ->
                use _ = torch.NewDisposeScope()
                let g = generator seed
                let batch = [| 2L |]
                let reference = randomCloud g (Array.append batch [| int64 n |]) 3 // [2, L, 3, 3]
                let r = randomRotation g batch
                let t = randomTranslation g batch
                let flat (x: torch.Tensor) = x.reshape (2L, int64 (3 * n), 3L)

                let copy =
                    moveRigid r t (flat reference) |> fun x -> x.reshape (2L, int64 n, 3L, 3L)

                let mask = randomMask g batch n 1
                let rm = Metrics.backboneRmsd copy reference mask
                Expect.sequenceEqual rm.shape batch "shape [B]"
                Tol.close "rigid copy" 1e-10 rm (torch.zeros (2L, dtype = f64))
                let model = reference + torch.randn (reference.shape, dtype = f64, generator = g)

                let absentNaN =
                    torch.where (mask.unsqueeze(-1L).unsqueeze -1L, model, torch.full_like (model, Double.NaN))

                let rmsd = Metrics.backboneRmsd absentNaN reference mask

                for i in 0L .. 1L do
                    let present = mask.[i].nonzero().squeeze -1L

                    let atoms (x: torch.Tensor) =
                        x.[i].index_select(0L, present).reshape(-1L, 3L)

                    Tol.close "item" 1e-10 rmsd.[i] (Superpose.rmsd (atoms model) (atoms reference) None))

            test "the real 1ubq trace: LDDT 1 for itself and for a rigid copy, below 1 with noise" {
                use _ = torch.NewDisposeScope()
                let ca = ubiquitinCa ()
                let g = generator 77
                let moved = moveRigid (randomRotation g [||]) (randomTranslation g [||]) ca
                expectAll1 "identical" 1e-12 (Metrics.lddtCa ca ca None).Protein
                expectAll1 "rigid copy" 1e-12 (Metrics.lddtCa moved ca None).Protein
                let noisy = moved + torch.randn ([| 76L; 3L |], dtype = f64, generator = g) * 1.0
                let a = scalar (Metrics.lddtCa noisy ca None).Protein
                Expect.isTrue (a > 0.3 && a < 1.0) (sprintf "noisy LDDT %g in (0.3, 1)" a)

                Tol.close
                    "noisy and moved back"
                    1e-12
                    (Metrics.lddtCa (Superpose.superpose noisy ca None) ca None).Protein
                    (torch.tensor a)
            }

            test "Pearson's r: a hand case, NaN pairs left out, too few pairs or no spread give NaN, lengths checked" {
                // x̄ = ȳ = 2.5; Σ dx·dy = 2.25 − 0.25 − 0.25 + 2.25 = 4, Σ dx² = Σ dy² = 5: r = 0.8
                Expect.floatClose Accuracy.veryHigh (Metrics.pearson [| 1.; 2.; 3.; 4. |] [| 1.; 3.; 2.; 4. |]) 0.8 "r"

                Expect.floatClose
                    Accuracy.veryHigh
                    (Metrics.pearson [| 1.; 2.; nan; 3.; 4.; 9. |] [| 1.; 3.; 7.; 2.; 4.; infinity |])
                    0.8
                    "pairs with a NaN or infinity left out"

                Expect.isTrue (Double.IsNaN(Metrics.pearson [| 1.; 2. |] [| 3.; nan |])) "one pair"
                Expect.isTrue (Double.IsNaN(Metrics.pearson [| 1.; 2.; 3. |] [| 5.; 5.; 5. |])) "no spread"
                Expect.throwsT<ArgumentException> (fun () -> Metrics.pearson [| 1. |] [||] |> ignore) "lengths"
            }

            testPropertyWithConfig config "Pearson's r: ±1 on a line, symmetric, unchanged by positive affine maps"
            <| Prop.forAll (seedAndSize 3 60) (fun (seed, n) ->
                let random = Random seed
                let xs = Array.init n (fun _ -> random.NextDouble() * 4.0 - 2.0)
                let ys = Array.init n (fun _ -> random.NextDouble() * 4.0 - 2.0)
                let a = 0.5 + random.NextDouble()
                let b = random.NextDouble() - 0.5
                // values of order 1 summed over at most 60 terms: rounding ~ 60 · 2e-16 relative
                let close what (x: float) (y: float) =
                    Expect.floatClose Accuracy.high x y what

                close "r(x, a x + b) = 1" (Metrics.pearson xs (xs |> Array.map (fun x -> a * x + b))) 1.0
                close "r(x, −a x + b) = −1" (Metrics.pearson xs (xs |> Array.map (fun x -> -a * x + b))) -1.0
                let r = Metrics.pearson xs ys
                close "symmetric" (Metrics.pearson ys xs) r
                close "affine invariance" (Metrics.pearson (xs |> Array.map (fun x -> a * x + b)) ys) r
                Expect.isTrue (abs r <= 1.0 + 1e-12) "|r| ≤ 1")
        ]
