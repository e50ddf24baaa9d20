module Esm3Structure.Tests.Structure.DsspTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open Esm3Structure.Structure
open Esm3Structure.Tests

/// The stored mkdssp outputs (see Reference/dssp/README.md), copied next to the test binary.
let private reference (file: string) =
    File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Reference", "dssp", file))
    |> Array.filter (fun l -> l.Trim() <> "")
    |> Array.map (fun l ->
        let parts = l.Split('\t')
        parts.[0], parts.[1])

/// mkdssp's letter as an SS8 letter, written out here: '.' (residue left out) and '-' (blank), 'P' (PP-II) → C.
let private ss8OfMkdssp (c: char) =
    if "GHITEBS".IndexOf c >= 0 then c else 'C'

/// Per-residue agreement of our SS8 with a stored mkdssp string, after checking that both left out the same residues.
let private agreement (name: string) (chain: ProteinChain) (mk: string) =
    let result = Dssp.compute chain
    Expect.equal result.Ss8.Length mk.Length (sprintf "%s: one letter per residue" name)

    for i in 0 .. mk.Length - 1 do
        Expect.equal result.Used.[i] (mk.[i] <> '.') (sprintf "%s residue %d: used by mkdssp and by us alike" name i)

    let same =
        Seq.zip result.Ss8 mk
        |> Seq.filter (fun (a, b) -> a = ss8OfMkdssp b)
        |> Seq.length

    same, mk.Length

let private corpusFile (name: string) =
    Data.path [ "structures"; name + ".pdb.gz" ]

/// A copy of the chain with atom37 transformed by x -> R x + t (computed in float64, stored as float32).
let private moved (r: float[,]) (t: float[]) (chain: ProteinChain) =
    let l = ProteinChain.length chain
    let a = chain.Atom37

    let xyz =
        Array3D.init l 37 3 (fun i k c ->
            float32 (
                r.[c, 0] * float a.[i, k, 0]
                + r.[c, 1] * float a.[i, k, 1]
                + r.[c, 2] * float a.[i, k, 2]
                + t.[c]
            ))

    ProteinChain.create
        chain.Name
        chain.ChainId
        chain.ResidueNames
        chain.Sequence
        chain.ResidueIndex
        chain.InsertionCodes
        xyz
        chain.BFactors

/// A uniformly random rotation matrix (normalised Gaussian quaternion) and a translation of up to ±100 Å.
let private randomMotion (seed: int) =
    let rng = Random seed

    let gauss () =
        Math.Sqrt(-2.0 * Math.Log(1.0 - rng.NextDouble()))
        * Math.Cos(2.0 * Math.PI * rng.NextDouble())

    let q = Array.init 4 (fun _ -> gauss ())
    let n = Math.Sqrt(Array.sumBy (fun x -> x * x) q)
    let w, x, y, z = q.[0] / n, q.[1] / n, q.[2] / n, q.[3] / n

    let r =
        array2D
            [
                [ 1.0 - 2.0 * (y * y + z * z); 2.0 * (x * y - w * z); 2.0 * (x * z + w * y) ]
                [ 2.0 * (x * y + w * z); 1.0 - 2.0 * (x * x + z * z); 2.0 * (y * z - w * x) ]
                [ 2.0 * (x * z - w * y); 2.0 * (y * z + w * x); 1.0 - 2.0 * (x * x + y * y) ]
            ]

    r, Array.init 3 (fun _ -> 200.0 * rng.NextDouble() - 100.0)

// Ideal backbones, built here by NeRF from (φ, ψ) with ω = 180° and Engh & Huber bond lengths and angles.

let private sub (a: float[]) (b: float[]) = Array.map2 (-) a b

let private norm (a: float[]) =
    let n = Math.Sqrt(Array.sumBy (fun x -> x * x) a)
    Array.map (fun x -> x / n) a

let private cross (a: float[]) (b: float[]) =
    [|
        a.[1] * b.[2] - a.[2] * b.[1]
        a.[2] * b.[0] - a.[0] * b.[2]
        a.[0] * b.[1] - a.[1] * b.[0]
    |]

/// The point d with |cd| = bond, angle bcd = angle and dihedral abcd = torsion (degrees).
let private place (a: float[]) (b: float[]) (c: float[]) (bond: float) (angle: float) (torsion: float) =
    let angle, torsion = angle * Math.PI / 180.0, torsion * Math.PI / 180.0
    let bc = norm (sub c b)
    let n = norm (cross (sub b a) bc)
    let m = cross n bc

    let d =
        [|
            -bond * Math.Cos angle
            bond * Math.Sin angle * Math.Cos torsion
            bond * Math.Sin angle * Math.Sin torsion
        |]

    Array.init 3 (fun k -> c.[k] + d.[0] * bc.[k] + d.[1] * m.[k] + d.[2] * n.[k])

/// A poly-alanine backbone (N, CA, C, O) with the given (φ, ψ) per residue; O on the outer bisector of C's bonds.
let private idealChain (name: string) (phiPsi: (float * float)[]) =
    let l = phiPsi.Length
    let n, ca, c = Array.zeroCreate l, Array.zeroCreate l, Array.zeroCreate l
    n.[0] <- [| -0.5272; 1.3593; 0.0 |]
    ca.[0] <- [| 0.0; 0.0; 0.0 |]
    c.[0] <- [| 1.525; 0.0; 0.0 |]

    for k in 1 .. l - 1 do
        n.[k] <- place n.[k - 1] ca.[k - 1] c.[k - 1] 1.329 116.2 (snd phiPsi.[k - 1])
        ca.[k] <- place ca.[k - 1] c.[k - 1] n.[k] 1.458 121.7 180.0
        c.[k] <- place c.[k - 1] n.[k] ca.[k] 1.525 111.2 (fst phiPsi.[k])

    let o =
        Array.init l (fun k ->
            if k + 1 < l then
                let bis =
                    norm (Array.map2 (+) (norm (sub ca.[k] c.[k])) (norm (sub n.[k + 1] c.[k])))

                Array.map2 (fun x y -> x - 1.231 * y) c.[k] bis
            else
                place n.[k] ca.[k] c.[k] 1.231 120.5 (snd phiPsi.[k] + 180.0))

    let atom37 = Array3D.create l 37 3 Single.NaN

    for k in 0 .. l - 1 do
        for (slot, p: float[]) in
            [
                ResidueConstants.nIndex, n.[k]
                ResidueConstants.caIndex, ca.[k]
                ResidueConstants.cIndex, c.[k]
                ResidueConstants.oIndex, o.[k]
            ] do
            for x in 0..2 do
                atom37.[k, slot, x] <- float32 p.[x]

    ProteinChain.ofAtom37 name "A" (String('A', l)) (Array.init l (fun i -> i + 1)) atom37

/// E = 0.42 · 0.20 · 332 · (1/r(ON) + 1/r(CH) − 1/r(OH) − 1/r(CN)) kcal/mol (Kabsch & Sander 1983), written out here.
let private kabschSander (n: float[]) (h: float[]) (c: float[]) (o: float[]) =
    let r (a: float[]) (b: float[]) =
        Math.Sqrt(Array.sumBy (fun x -> x * x) (sub a b))

    0.42 * 0.20 * 332.0 * (1.0 / r o n + 1.0 / r c h - 1.0 / r o h - 1.0 / r c n)

[<Tests>]
let tests =
    testList
        "Structure/Dssp"
        [
            test "agrees with mkdssp 4.2.2 on each small chain (>= 97 %)" {
                let rows = reference "small.tsv" |> dict
                Expect.equal rows.Count Data.smallNames.Value.Length "a stored reference for every small chain"

                for name in Data.smallNames.Value do
                    let same, n = agreement name (StructureFile.read (Data.small name) None) rows.[name]

                    let pct = 100.0 * float same / float n
                    printfn "DSSP vs mkdssp 4.2.2, %s: %d / %d = %.2f %%" name same n pct
                    Expect.isGreaterThanOrEqual pct 97.0 (sprintf "%s: SS8 agreement with mkdssp" name)
            }

            test "agrees with mkdssp 4.2.2 on 30 corpus chains (with breaks, gaps and left-out residues)" {
                let rows = reference "corpus30.tsv"
                Expect.equal rows.Length 30 "30 stored chains"
                let mutable same, total = 0, 0

                for name, mk in rows do
                    let s, n = agreement name (StructureFile.read (corpusFile name) None) mk
                    same <- same + s
                    total <- total + n

                    Expect.isGreaterThanOrEqual (float s / float n) 0.95 (sprintf "%s: SS8 agreement with mkdssp" name)

                let pct = 100.0 * float same / float total
                printfn "DSSP vs mkdssp 4.2.2, 30 corpus chains: %d / %d = %.3f %%" same total pct
                Expect.isGreaterThanOrEqual pct 97.0 "overall SS8 agreement with mkdssp"
            }

            test "a residue without O is left out as mkdssp does: coil, no bonds, a break after it" {
                let chain = StructureFile.read (Data.small "1ubq_A") None
                let k = Array.findIndex ((=) 30) chain.ResidueIndex
                let xyz = chain.Atom37.Clone() :?> float32[,,]

                for x in 0..2 do
                    xyz.[k, ResidueConstants.oIndex, x] <- Single.NaN

                let noO =
                    ProteinChain.create
                        chain.Name
                        chain.ChainId
                        chain.ResidueNames
                        chain.Sequence
                        chain.ResidueIndex
                        chain.InsertionCodes
                        xyz
                        chain.BFactors

                let result = Dssp.compute noO
                Expect.equal result.Ss8.[k] 'C' "the residue is coil"
                Expect.isFalse result.Used.[k] "the residue is not used"
                Expect.isTrue result.BreakBefore.[k + 1] "its neighbours are split by a break"
                Expect.isTrue (Single.IsNaN result.Hydrogens.[k, 0]) "no hydrogen placed"

                Expect.isFalse
                    (result.HBonds |> Array.exists (fun hb -> hb.Donor = k || hb.Acceptor = k))
                    "no H-bond involves it"

                let mk = reference "1ubq_A_without_O30.tsv" |> Array.exactlyOne |> snd
                let same, n = agreement "1ubq_A without O of 30" noO mk
                Expect.equal same n "identical to mkdssp on the same chain without that O"
                Expect.notEqual (Dssp.ss8String noO) (Dssp.ss8String chain) "the missing O changes the helix"
            }

            testPropertyWithConfig { Props.baseConfig with maxTest = 20 } "invariant under random rigid motions"
            <| fun (seed: int) ->
                let names = Data.smallNames.Value
                let chain = StructureFile.read (Data.small names.[abs (seed % names.Length)]) None
                let r, t = randomMotion seed
                let before = Dssp.compute chain
                let after = Dssp.compute (moved r t chain)
                // float32 rounding of the moved coordinates could flip an energy that lies within ~1e-5 kcal/mol of
                // DSSP's 0.001 rounding step (mkdssp has the same sensitivity), so allow two residues plus one in a
                // hundred. In a trial of 2000 motions of the small chains, none changed a letter or a counted bond.
                let differ =
                    Seq.zip before.Ss8 after.Ss8 |> Seq.filter (fun (a, b) -> a <> b) |> Seq.length

                Expect.isLessThanOrEqual differ (2 + before.Ss8.Length / 100) "SS8 unchanged by the motion"

                let counted (res: DsspResult) =
                    res.HBonds |> Array.map (fun hb -> (hb.Donor, hb.Acceptor), hb.Energy) |> Map

                let cb, ca = counted before, counted after

                for KeyValue(key, e) in cb do
                    match Map.tryFind key ca with
                    | Some e2 -> Expect.isLessThanOrEqual (abs (e - e2)) 0.0021 "H-bond energy unchanged"
                    | None -> ()

                let changed =
                    Set.count (
                        Set.union
                            (Set.difference (Set(cb.Keys)) (Set(ca.Keys)))
                            (Set.difference (Set(ca.Keys)) (Set(cb.Keys)))
                    )

                Expect.isLessThanOrEqual changed (1 + cb.Count / 100) "the same H-bonds count"

            test "an ideal α-helix is H from its second to its last-but-one residue" {
                let l = 17
                let helix = idealChain "helix" (Array.create l (-57.8, -47.0))
                let ss = Dssp.assign helix
                let expected = String('H', l - 2)
                Expect.equal (String(ss, 1, l - 2)) expected "H inside"
                Expect.equal (ss.[0], ss.[l - 1]) ('C', 'C') "the end residues have no i→i+4 pair on both sides"
                let result = Dssp.compute helix

                for i in 0 .. l - 5 do
                    Expect.isTrue result.Turns.[i, 1] (sprintf "4-turn at %d" i)

                    Expect.isTrue
                        (result.HBonds |> Array.exists (fun hb -> hb.Donor = i + 4 && hb.Acceptor = i))
                        (sprintf "O(%d) ← N-H(%d)" i (i + 4))
            }

            test "an ideal β-hairpin (type II' turn) is two E strands joined by a turn" {
                let strand = Array.create 6 (-130.0, 130.0)
                let turn = [| (60.0, -120.0); (-80.0, 0.0) |]
                let hairpin = idealChain "hairpin" (Array.concat [ strand; turn; strand ])
                let ss = String(Dssp.assign hairpin)
                // mkdssp 4.2.2 gives the same string on these coordinates (Reference/dssp/README.md).
                Expect.equal ss "CEEEEETTEEEEEC" "strands E, turn T, ends coil"
                let result = Dssp.compute hairpin
                // The ideal strands also give one extra bridge (2, 12), as in mkdssp's output (its ladder B).
                let ladder = result.Ladders |> Array.maxBy (fun ld -> ld.I.Length)
                Expect.equal ladder.Kind BridgeKind.Antiparallel "antiparallel"
                Expect.equal ladder.I [| 1..5 |] "first strand 1-5"

                for a, b in Array.zip ladder.I (Array.rev ladder.J) do
                    Expect.equal (a + b) 13 (sprintf "residue %d pairs with its mirror %d" a b)
            }

            test "the tables agree with each other and with the letters" {
                for chain in
                    [
                        StructureFile.read (Data.small "1ubq_A") None
                        StructureFile.read (corpusFile "1a0q_H") None
                    ] do
                    let r = Dssp.compute chain
                    let bonds = r.HBonds |> Array.map (fun hb -> hb.Donor, hb.Acceptor) |> Set

                    for hb in r.HBonds do
                        Expect.isLessThan hb.Energy DsspHBonds.MaxHBondEnergy "counted bonds are below -0.5"

                        Expect.contains
                            (r.AsDonor.[hb.Donor] |> Array.map (fun x -> x.Acceptor))
                            hb.Acceptor
                            "a counted bond is one of its donor's two best"

                    for i in 0 .. r.Ss8.Length - 1 do
                        for t in 0..2 do
                            let n = t + 3

                            let noBreak =
                                i + n < r.Ss8.Length && not (Array.exists id r.BreakBefore.[i + 1 .. i + n])

                            Expect.equal
                                r.Turns.[i, t]
                                (noBreak && r.Used.[i] && Set.contains (i + n, i) bonds)
                                (sprintf "%s: %d-turn at %d iff O(i) ← N-H(i+%d)" chain.Name n i n)

                    for ld in r.Ladders do
                        for side in [ ld.I; ld.J ] do
                            for i in side.[0] .. side.[side.Length - 1] do
                                Expect.contains
                                    [ 'E'; 'B'; 'H'; 'G'; 'I' ]
                                    r.Ss8.[i]
                                    "ladder residues are strand or bridge (unless a helix took them)"

                        let pairs =
                            match ld.Kind with
                            | BridgeKind.Parallel -> Array.zip ld.I ld.J
                            | BridgeKind.Antiparallel -> Array.zip ld.I (Array.rev ld.J)

                        for a, b in pairs do
                            Expect.isTrue
                                (r.Bridges |> Array.exists (fun br -> br.Kind = ld.Kind && br.I = a && br.J = b))
                                "every ladder pair is a bridge"

                    for i in 0 .. r.Ss8.Length - 1 do
                        if r.Ss8.[i] = 'S' then
                            Expect.isTrue r.Bend.[i] "S only on bends"
            }

            testPropertyWithConfig
                { Props.baseConfig with maxTest = 100 }
                "the H-bond energy is Kabsch & Sander's formula, rounded to 0.001 and clamped at -9.9"
            <| fun (seed: int) ->
                let rng = Random seed

                let point () =
                    Array.init 3 (fun _ -> 8.0 * rng.NextDouble() - 4.0)

                let n, h, c, o = point (), point (), point (), point ()
                let f32 (p: float[]) = Array.map float32 p

                let back (p: float[]) =
                    Array.map (fun x -> float (float32 x)) p

                let e = DsspHBonds.hbondEnergy (f32 n) (f32 h) (f32 c) (f32 o)

                let r (a: float[]) (b: float[]) =
                    Math.Sqrt(Array.sumBy (fun x -> x * x) (sub a b))

                let n, h, c, o = back n, back h, back c, back o

                if r h o < 0.5 || r h c < 0.5 || r n c < 0.5 || r n o < 0.5 then
                    Expect.floatClose Accuracy.high e -9.9 "clamped when atoms overlap"
                else
                    let expected = max (kabschSander n h c o) -9.9
                    Expect.isLessThanOrEqual (abs (e - expected)) 0.0006 "formula, rounded to 0.001"

            test "SS8 and SS3 letters" {
                Expect.equal
                    (String("GHITEBS-P .C".ToCharArray() |> Array.map Dssp.toSs8Letter))
                    "GHITEBSCCCCC"
                    "mkdssp letters as SS8"

                Expect.equal (String(Dssp.toSs3 ("GHITEBSC".ToCharArray()))) "HHHCEECC" "ESM's 3-class map"
            }

            test "a linear N-H···O=C at 2.9 Å N···O has the textbook energy" {
                let e =
                    DsspHBonds.hbondEnergy
                        [| 0.0f; 0.0f; 0.0f |]
                        [| 1.0f; 0.0f; 0.0f |]
                        [| 4.13f; 0.0f; 0.0f |]
                        [| 2.9f; 0.0f; 0.0f |]

                let expected =
                    kabschSander [| 0.0; 0.0; 0.0 |] [| 1.0; 0.0; 0.0 |] [| 4.13; 0.0; 0.0 |] [| 2.9; 0.0; 0.0 |]

                Expect.isLessThan expected -2.8 "a strong bond"
                Expect.isLessThanOrEqual (abs (e - expected)) 0.0006 "the formula"
                Expect.isLessThan e DsspHBonds.MaxHBondEnergy "counts"
            }
        ]
