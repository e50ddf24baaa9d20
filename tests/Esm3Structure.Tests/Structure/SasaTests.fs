module Esm3Structure.Tests.Structure.SasaTests

open System
open System.Diagnostics
open System.Globalization
open System.IO
open Expecto
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Tests

module RC = ResidueConstants

/// One residue line of FreeSASA's `--format=seq` output: "SEQ <chain> <number+icode> <name> : <area>".
type private RefResidue =
    {
        Number: string
        Name: string
        Area: float
    }

/// The stored FreeSASA outputs (Reference/sasa, copied next to the test exe; README.md there has the commands).
let private referenceDir (group: string) =
    Path.Combine(AppContext.BaseDirectory, "Reference", "sasa", group)

let private readReference (file: string) =
    File.ReadAllLines file
    |> Array.filter (fun l -> l.StartsWith "SEQ ")
    |> Array.map (fun l ->
        let f = l.Split(' ', StringSplitOptions.RemoveEmptyEntries)

        {
            Number = f.[2]
            Name = f.[3]
            Area = Double.Parse(f.[5], CultureInfo.InvariantCulture)
        })

/// The reference entries of a group with the chain each was computed from.
let private cases (group: string) (pathOf: string -> string) =
    Directory.GetFiles(referenceDir group, "*.seq")
    |> Array.sort
    |> Array.map (fun f ->
        let name = Path.GetFileNameWithoutExtension f
        name, StructureFile.read (pathOf name) None, readReference f)

/// Checks residue order and names against the reference, then returns (relative error of the chain total,
/// per-residue |difference| array).
let private compare (name: string) (chain: ProteinChain) (reference: RefResidue[]) (ours: float[]) =
    Expect.equal ours.Length reference.Length (name + ": residue count")

    for i in 0 .. ours.Length - 1 do
        let number = string chain.ResidueIndex.[i] + chain.InsertionCodes.[i]
        Expect.equal number reference.[i].Number (sprintf "%s: residue %d number" name i)
        Expect.equal chain.ResidueNames.[i] reference.[i].Name (sprintf "%s: residue %d name" name i)

    let refTotal = reference |> Array.sumBy (fun r -> r.Area)
    let total = Sasa.total ours
    abs (total - refTotal) / refTotal, Array.init ours.Length (fun i -> abs (ours.[i] - reference.[i].Area))

/// Totals within 2 % of FreeSASA for every chain of a group; per-residue differences summarised and bounded.
let private agreement (group: string) (cases: (string * ProteinChain * RefResidue[])[]) =
    let results =
        cases
        |> Array.map (fun (name, chain, reference) -> name, compare name chain reference (Sasa.perResidue chain))

    let worstName, (worstRel, _) = results |> Array.maxBy (fun (_, (rel, _)) -> rel)
    let diffs = results |> Array.collect (fun (_, (_, d)) -> d)
    let sorted = Array.sort diffs
    let p99 = sorted.[min (sorted.Length - 1) (int (0.99 * float sorted.Length))]

    printfn
        "SASA vs FreeSASA (%s, %d chains, %d residues): worst total error %.3f%% (%s); per residue mean |diff| %.3f Å², 99th pct %.2f Å², max %.2f Å²"
        group
        cases.Length
        diffs.Length
        (100.0 * worstRel)
        worstName
        (Array.average diffs)
        p99
        (Array.max diffs)

    for name, (rel, _) in results do
        Expect.isLessThan rel 0.02 (sprintf "%s: total within 2 %% of FreeSASA" name)
        // Same points, radii and probe as FreeSASA: only float32 rounding and the reference's 2 decimals remain.
        Expect.isLessThan rel 5e-4 (sprintf "%s: total within 0.05 %% of FreeSASA" name)

    diffs

/// A chain holding single atoms at given positions (each its own GLY residue, atom CA: ProtOr radius 1.88 Å).
let private atomsChain (positions: (float * float * float)[]) =
    let n = positions.Length
    let atom37 = Array3D.create n 37 3 Single.NaN

    positions
    |> Array.iteri (fun i (x, y, z) ->
        atom37.[i, RC.caIndex, 0] <- float32 x
        atom37.[i, RC.caIndex, 1] <- float32 y
        atom37.[i, RC.caIndex, 2] <- float32 z)

    ProteinChain.ofAtom37 "atoms" "A" (String('G', n)) (Array.init n id) atom37

/// The exposed area of sphere 1 (radius a) overlapping sphere 2 (radius b) at centre distance d: 4πa² minus the
/// cap of height h = a − (d² + a² − b²)/(2d) inside sphere 2 (cap area 2πah).
let private twoSphereArea (a: float) (b: float) (d: float) =
    let h = a - (d * d + a * a - b * b) / (2.0 * d)
    4.0 * Math.PI * a * a - 2.0 * Math.PI * a * h

/// The chain's atom37 coordinates moved by x -> R x + t (float32 storage, as read from files).
let private moved (r: float[,]) (t: float[]) (chain: ProteinChain) =
    let n = ProteinChain.length chain

    let atom37 =
        Array3D.init n 37 3 (fun i a c ->
            let p = chain.Atom37

            float32 (
                r.[c, 0] * float p.[i, a, 0]
                + r.[c, 1] * float p.[i, a, 1]
                + r.[c, 2] * float p.[i, a, 2]
                + t.[c]
            ))

    ProteinChain.create
        chain.Name
        chain.ChainId
        chain.ResidueNames
        chain.Sequence
        chain.ResidueIndex
        chain.InsertionCodes
        atom37
        chain.BFactors

let private invarianceConfig = { Props.baseConfig with maxTest = 6 }

[<Tests>]
let tests =
    testList
        "Structure/Sasa"
        [
            test "ESM's configuration is biotite's sasa defaults" {
                Expect.equal SasaConfig.esm.ProbeRadius 1.4 "probe"
                Expect.equal SasaConfig.esm.PointsPerAtom 1000 "points"
                Expect.equal SasaConfig.esm.Radii SasaRadii.ProtOr "radii"
                Expect.isOk (SasaConfig.validate SasaConfig.esm) "valid"

                for bad in
                    [
                        { SasaConfig.esm with
                            ProbeRadius = -0.1
                        }
                        { SasaConfig.esm with
                            ProbeRadius = nan
                        }
                        { SasaConfig.esm with
                            PointsPerAtom = 0
                        }
                    ] do
                    Expect.isError (SasaConfig.validate bad) (sprintf "%A is invalid" bad)

                    Expect.throwsT<ArgumentException>
                        (fun () -> Sasa.ofAtoms bad (Array2D.zeroCreate 1 3) [| 1.5 |] |> ignore)
                        "ofAtoms rejects it"
            }

            test "ofAtoms rejects mismatched or bad radii" {
                let coords = Array2D.zeroCreate 2 3

                for radii in [ [| 1.5 |]; [| 1.5; nan |]; [| 1.5; -1.0 |] ] do
                    Expect.throwsT<ArgumentException>
                        (fun () -> Sasa.ofAtoms SasaConfig.esm coords radii |> ignore)
                        (sprintf "radii %A" radii)

                Expect.throwsT<ArgumentException>
                    (fun () -> Sasa.ofAtoms SasaConfig.esm (Array2D.zeroCreate 2 2) [| 1.5; 1.5 |] |> ignore)
                    "coords must be [A, 3]"
            }

            test "every heavy atom of the 20 amino acids has a ProtOr class; radii by class and fallback" {
                for r in 0..19 do
                    let res = RC.resnames.[r]

                    for atom in Array.append RC.residueAtoms.[r] [| "OXT" |] do
                        Expect.isSome (Sasa.protOrClass res atom) (sprintf "%s %s has a class" res atom)

                // Tsai et al. 1999 radii, written out here: aromatic CH, carbonyl C, aliphatic C, N, carbonyl O,
                // hydroxyl O, S.
                let expected =
                    [
                        "PHE", "CZ", 1.76
                        "TRP", "CD2", 1.61
                        "ALA", "C", 1.61
                        "GLY", "CA", 1.88
                        "LEU", "CD1", 1.88
                        "LYS", "NZ", 1.64
                        "PRO", "N", 1.64
                        "ASN", "OD1", 1.42
                        "ASP", "OD2", 1.46
                        "SER", "OG", 1.46
                        "ALA", "OXT", 1.46
                        "MET", "SD", 1.77
                        "CYS", "SG", 1.77
                        "HIS", "CE1", 1.76
                        "UNK", "CB", 1.88
                    ]

                for res, atom, r in expected do
                    Expect.equal (Sasa.radius SasaRadii.ProtOr res atom) r (sprintf "ProtOr %s %s" res atom)

                Expect.equal (Sasa.radius SasaRadii.ProtOr "UNK" "CG") Sasa.fallbackRadius "unknown atom: fallback"
                Expect.equal (Sasa.radius SasaRadii.ProtOr "GLY" "CB") Sasa.fallbackRadius "atom not in GLY: fallback"
                Expect.equal Sasa.fallbackRadius 1.8 "biotite's fallback"
                Expect.equal (Sasa.radius SasaRadii.Element "SER" "OG") 1.52 "element O"
                Expect.equal (Sasa.radius SasaRadii.Element "MET" "SD") 1.8 "element S"
                Expect.equal (Sasa.radius SasaRadii.Element "XXX" "ZN") Sasa.fallbackRadius "unknown element"
            }

            test "sphere points: unit vectors, centred, golden-section z spacing" {
                for n in [ 1; 2; 17; 1000 ] do
                    let p = Sasa.spherePoints n
                    Expect.equal (Array2D.length1 p) n "count"

                    for k in 0 .. n - 1 do
                        let norm = sqrt (p.[k, 0] ** 2.0 + p.[k, 1] ** 2.0 + p.[k, 2] ** 2.0)
                        Expect.floatClose Accuracy.high norm 1.0 "unit length"
                        Expect.floatClose Accuracy.high p.[k, 2] (1.0 - (2.0 * float k + 1.0) / float n) "z"

                    if n >= 17 then
                        for c in 0..2 do
                            let mean = Seq.average (seq { for k in 0 .. n - 1 -> p.[k, c] })
                            Expect.isLessThan (abs mean) (3.0 / float n) (sprintf "n=%d axis %d centred" n c)
            }

            test "an isolated atom has 4π(r + probe)²; far-apart atoms add" {
                for points in [ 1; 100; 1000 ] do
                    for probe in [ 0.0; 1.4 ] do
                        let config =
                            { SasaConfig.esm with
                                PointsPerAtom = points
                                ProbeRadius = probe
                            }

                        let one = Sasa.ofAtoms config (array2D [ [ 3.0; -2.0; 7.5 ] ]) [| 1.7 |]
                        let expected = 4.0 * Math.PI * (1.7 + probe) ** 2.0
                        Expect.floatClose Accuracy.veryHigh one.[0] expected "isolated atom"

                let single = Sasa.perResidue (atomsChain [| 0.0, 0.0, 0.0 |])
                let sphere = 4.0 * Math.PI * (1.88 + 1.4) ** 2.0
                Expect.floatClose Accuracy.veryHigh single.[0] sphere "GLY CA alone (ProtOr 1.88 Å)"

                let apart =
                    Sasa.perResidue (atomsChain [| 0.0, 0.0, 0.0; 50.0, -20.0, 10.0; -30.0, 0.0, 0.0 |])

                Expect.floatClose Accuracy.veryHigh (Sasa.total apart) (3.0 * sphere) "three far-apart atoms add"
            }

            test "two overlapping atoms lose the analytic spherical cap (within the sampling error)" {
                for d in [ 1.5; 3.0; 4.5; 6.0 ] do
                    let a, b = 1.7 + 1.4, 1.52 + 1.4

                    let areas =
                        Sasa.ofAtoms SasaConfig.esm (array2D [ [ 0.0; 0.0; 0.0 ]; [ 0.3; d; -0.2 ] ]) [| 1.7; 1.52 |]

                    let dist = sqrt (0.09 + d * d + 0.04)
                    let tol = 4.0 * Math.PI * a * a * 0.01
                    Expect.isLessThan (abs (areas.[0] - twoSphereArea a b dist)) tol (sprintf "d=%g first" d)
                    Expect.isLessThan (abs (areas.[1] - twoSphereArea b a dist)) tol (sprintf "d=%g second" d)
            }

            test "absent atoms: NaN per atom, bury nothing; a residue with no atom is NaN" {
                let coords = array2D [ [ 0.0; 0.0; 0.0 ]; [ nan; 0.0; 0.0 ]; [ 2.0; 0.0; 0.0 ] ]
                let areas = Sasa.ofAtoms SasaConfig.esm coords [| 1.7; 1.7; 1.7 |]
                Expect.isTrue (Double.IsNaN areas.[1]) "absent atom is NaN"

                let pair =
                    Sasa.ofAtoms SasaConfig.esm (array2D [ [ 0.0; 0.0; 0.0 ]; [ 2.0; 0.0; 0.0 ] ]) [| 1.7; 1.7 |]

                Expect.floatClose Accuracy.veryHigh areas.[0] pair.[0] "the absent atom buries nothing"

                let chain = StructureFile.read (Data.small "2erl_A") None
                let n = ProteinChain.length chain
                let atom37: float32[,,] = Array3D.map id chain.Atom37

                for a in 0..36 do
                    for c in 0..2 do
                        atom37.[5, a, c] <- Single.NaN

                let holed =
                    ProteinChain.ofAtom37 "holed" "A" chain.Sequence chain.ResidueIndex atom37

                let values = Sasa.perResidue holed

                for i in 0 .. n - 1 do
                    Expect.equal (Double.IsNaN values.[i]) (i = 5) (sprintf "residue %d NaN iff it has no atom" i)

                let perAtom = Sasa.perAtom chain

                for i in 0 .. n - 1 do
                    for a in 0..36 do
                        Expect.equal
                            (Double.IsNaN perAtom.[i, a])
                            (not chain.Atom37Mask.[i, a])
                            (sprintf "per-atom NaN iff absent (%d, %d)" i a)
            }

            testPropertyWithConfig invarianceConfig "per-residue SASA is invariant under rigid motions (sampling error)"
            <| Prop.forAll (Arb.fromGen (Gen.choose (0, Int32.MaxValue))) (fun seed ->
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(uint64 seed)
                let r = Rotation.random [||] torch.float64 torch.CPU g
                let t = torch.randn ([| 3L |], dtype = torch.float64, generator = g) * 30.0
                let rm = Array2D.init 3 3 (fun i j -> r.[int64 i, int64 j].ToDouble())
                let tv = Array.init 3 (fun i -> t.[int64 i].ToDouble())
                let chain = StructureFile.read (Data.small "2erl_A") None
                let before = Sasa.perResidue chain
                let after = Sasa.perResidue (moved rm tv chain)
                let worst = Array.map2 (fun a b -> abs (a - b)) before after |> Array.max
                let totalRel = abs (Sasa.total before - Sasa.total after) / Sasa.total before
                // The test points stay fixed in the lab frame, so values move by the sampling error: over 30 seeds
                // the worst residue moved 2.4 Å² and the worst total 0.22 %.
                worst < 4.0 && totalRel < 0.005)

            test "per-chain totals within 2 % of FreeSASA (ProtOr, probe 1.4, 1000 points): 9 small chains" {
                let diffs = agreement "small" (cases "small" Data.small)
                Expect.isLessThan (Array.average diffs) 0.02 "per-residue mean |diff| (Å²)"
                Expect.isLessThan (Array.max diffs) 0.5 "per-residue max |diff| (Å²)"
            }

            test "per-chain totals within 2 % of FreeSASA: 22 full-atom corpus chains" {
                let data = cases "corpus" (fun name -> Data.path [ "structures"; name + ".pdb.gz" ])
                let diffs = agreement "corpus" data
                Expect.isLessThan (Array.average diffs) 0.02 "per-residue mean |diff| (Å²)"
                Expect.isLessThan (Array.max diffs) 0.5 "per-residue max |diff| (Å²)"
            }
        ]
