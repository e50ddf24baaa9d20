module Esm3Structure.Tests.Structure.PdbTests

open System
open System.Diagnostics
open System.IO
open System.Text
open Expecto
open Esm3Structure
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tests.StructureFixtures

module RC = ResidueConstants

/// (name, length) rows of small/index.tsv.
let private smallIndex =
    lazy
        (File.ReadAllLines(Data.path [ "small"; "index.tsv" ])
         |> Array.skip 1
         |> Array.filter (fun l -> l.Trim() <> "")
         |> Array.map (fun l ->
             let f = l.Split('\t')
             f.[0].Replace(".pdb", ""), int f.[3]))

let private fasta = lazy (readFasta (Data.path [ "sequences.fasta" ]))

/// The residue position of (number, insertion code) in a chain.
let private positions (chain: ProteinChain) =
    Array.init (ProteinChain.length chain) (fun i -> (chain.ResidueIndex.[i], chain.InsertionCodes.[i]), i)
    |> dict

let private icode (c: char) = if c = ' ' then "" else string c

/// Checks every ATOM record of a clean single-chain file against the chain read from it: coordinates, B-factor,
/// and that each residue has exactly as many present atoms as the file lists.
let private checkAgainstFile (what: string) (text: string) (chain: ProteinChain) =
    let atoms = pdbAtoms text |> Array.filter (fun a -> a.Record = "ATOM")
    let pos = positions chain
    let counts = Array.zeroCreate (ProteinChain.length chain)

    for a in atoms do
        let i = pos.[(a.ResSeq, icode a.ICode)]
        let k = RC.atom37Index a.Name
        Expect.isGreaterThanOrEqual k 0 (sprintf "%s line %d: %s is an atom37 name" what a.Line a.Name)
        Expect.isTrue chain.Atom37Mask.[i, k] (sprintf "%s line %d: atom present" what a.Line)

        let got =
            [| chain.Atom37.[i, k, 0]; chain.Atom37.[i, k, 1]; chain.Atom37.[i, k, 2] |]

        let want = [| a.X; a.Y; a.Z |]

        for c in 0..2 do
            Expect.floatClose
                Accuracy.high
                (float got.[c])
                (float want.[c])
                (sprintf "%s line %d coordinate %d" what a.Line c)

        Expect.floatClose
            Accuracy.high
            (float chain.BFactors.[i, k])
            (float a.B)
            (sprintf "%s line %d B-factor" what a.Line)

        counts.[i] <- counts.[i] + 1

    for i in 0 .. counts.Length - 1 do
        let present =
            Seq.init 37 (fun k -> chain.Atom37Mask.[i, k]) |> Seq.filter id |> Seq.length

        Expect.equal present counts.[i] (sprintf "%s residue %d: atoms present = atoms in the file" what i)

/// The sequence of a clean file computed from its CA lines.
let private sequenceFromCa (text: string) =
    pdbAtoms text
    |> Array.filter (fun a -> a.Name = "CA")
    |> Array.map (fun a ->
        match oneLetter.TryGetValue a.ResName with
        | true, c -> c
        | _ -> 'X')
    |> String

let private pdbText (lines: string list) =
    String.Join("\n", lines @ [ "END"; "" ])

let private goldenTests =
    testList
        "golden small"
        [
            for name, length in
                [
                    "1ubq_A", 76
                    "2erl_A", 40
                    "1guu_A", 50
                    "1lcd_A", 51
                    "1ctf_A", 68
                    "1a8o_A", 70
                    "1ptf_A", 87
                    "3mqi_A", 90
                    "1mvo_A", 121
                ] do
                test (sprintf "%s: length, sequence, coordinates and B-factors" name) {
                    let path = Data.small name
                    let text = File.ReadAllText path
                    let indexLength = smallIndex.Value |> Array.find (fun (n, _) -> n = name) |> snd
                    Expect.equal indexLength length "index.tsv agrees with this list"
                    let chain = Pdb.read path None
                    Expect.equal (ProteinChain.length chain) indexLength "residue count = index length"
                    Expect.equal chain.Name name "name is the file stem"
                    Expect.equal chain.ChainId "A" "chain id"

                    let expected =
                        match fasta.Value.TryGetValue name with
                        | true, s -> s
                        | _ -> sequenceFromCa text

                    Expect.equal chain.Sequence expected "sequence"
                    checkAgainstFile name text chain
                }

            test "every small file is listed and read" {
                Expect.equal smallIndex.Value.Length 9 "9 small chains"

                for name, length in smallIndex.Value do
                    Expect.equal (ProteinChain.length (Pdb.read (Data.small name) None)) length name
            }

            test "1a8o_A: the former MSE residues are MET with their SD atom" {
                let chain = Pdb.read (Data.small "1a8o_A") None

                let mets =
                    [
                        for i in 0 .. ProteinChain.length chain - 1 do
                            if chain.ResidueNames.[i] = "MET" then
                                i
                    ]

                Expect.isGreaterThanOrEqual mets.Length 4 "at least the 4 converted residues"

                for i in mets do
                    Expect.equal chain.Sequence.[i] 'M' "one-letter M"

                    Expect.isTrue
                        chain.Atom37Mask.[i, RC.atom37Index "SD"]
                        (sprintf "residue %d has SD" chain.ResidueIndex.[i])

                    Expect.isTrue chain.Atom14Mask.[i, 6] "SD in atom14 slot 6"
            }
        ]

let private corpusTests =
    testList
        "corpus"
        [
            test "all 1500 corpus files parse with the indexed length and the FASTA sequence" {
                let rows =
                    File.ReadAllLines(Data.path [ "index.tsv" ])
                    |> Array.skip 1
                    |> Array.filter (fun l -> l.Trim() <> "")
                    |> Array.map (fun l -> l.Split('\t'))

                Expect.equal rows.Length 1500 "1500 rows"
                let failures = ResizeArray<string>()

                for f in rows do
                    let file = f.[0]
                    let name = file.Replace(".pdb.gz", "")
                    let chain = Pdb.read (Data.path [ "structures"; file ]) None

                    if ProteinChain.length chain <> int f.[3] then
                        failures.Add(sprintf "%s: length %d, index %s" file (ProteinChain.length chain) f.[3])

                    if chain.Sequence <> fasta.Value.[name] then
                        failures.Add(sprintf "%s: sequence differs from sequences.fasta" file)

                    if chain.ChainId <> f.[2] then
                        failures.Add(sprintf "%s: chain %s, index %s" file chain.ChainId f.[2])

                Expect.isEmpty failures (String.Join("; ", failures |> Seq.truncate 10))
            }
        ]

let private writerTests =
    testList
        "writer"
        [
            test "atom37 chains round-trip through a PDB file within 0.001 Å" {
                use dir = new TempDir()

                for name in [ "1ubq_A"; "1a8o_A"; "3mqi_A" ] do
                    let chain = Pdb.read (Data.small name) None
                    let path = dir.File(name + ".pdb")
                    Pdb.write path AtomLayout.Atom37 None chain
                    let back = Pdb.read path None
                    Expect.equal back.Sequence chain.Sequence "sequence"
                    Expect.equal back.ResidueIndex chain.ResidueIndex "numbers"
                    Expect.equal back.InsertionCodes chain.InsertionCodes "insertion codes"
                    Expect.equal back.ResidueNames chain.ResidueNames "names"
                    Expect.equal back.Atom37Mask chain.Atom37Mask "masks"

                    for i in 0 .. ProteinChain.length chain - 1 do
                        for k in 0..36 do
                            if chain.Atom37Mask.[i, k] then
                                for c in 0..2 do
                                    Expect.isLessThanOrEqual
                                        (abs (back.Atom37.[i, k, c] - chain.Atom37.[i, k, c]))
                                        0.001f
                                        "coordinate"

                                Expect.isLessThanOrEqual
                                    (abs (back.BFactors.[i, k] - chain.BFactors.[i, k]))
                                    0.01f
                                    "B-factor"

                Expect.isEmpty (Directory.GetFiles(dir.Path, "*.tmp")) "no temporary files left"
            }

            test "atom14 output holds the atom14 atoms only (no OXT) and round-trips" {
                use dir = new TempDir()
                let chain = Pdb.read (Data.small "1ubq_A") None
                let path = dir.File "ubq14.pdb"
                Pdb.write path AtomLayout.Atom14 None chain
                let back = Pdb.read path None
                Expect.equal back.Atom14Mask chain.Atom14Mask "atom14 masks"

                for i in 0 .. ProteinChain.length chain - 1 do
                    for k in 0..13 do
                        if chain.Atom14Mask.[i, k] then
                            for c in 0..2 do
                                Expect.isLessThanOrEqual
                                    (abs (back.Atom14.[i, k, c] - chain.Atom14.[i, k, c]))
                                    0.001f
                                    "coordinate"

                    Expect.isFalse back.Atom37Mask.[i, RC.oxtIndex] "no OXT in atom14 output"

                Expect.isTrue chain.Atom37Mask.[ProteinChain.length chain - 1, RC.oxtIndex] "the source has an OXT"
            }

            test "a per-residue B-factor array overrides the chain's B-factors" {
                use dir = new TempDir()
                let chain = Pdb.read (Data.small "2erl_A") None
                let n = ProteinChain.length chain
                let plddt = Array.init n (fun i -> float32 i * 1.25f + 0.5f)
                let path = dir.File "b.pdb.gz"
                Pdb.write path AtomLayout.Atom37 (Some plddt) chain
                Expect.isTrue (TextFiles.isGzip (File.ReadAllBytes path)) ".gz path written gzip-compressed"
                let back = Pdb.read path None

                for i in 0 .. n - 1 do
                    for k in 0..36 do
                        if back.Atom37Mask.[i, k] then
                            Expect.floatClose Accuracy.medium (float back.BFactors.[i, k]) (float plddt.[i]) "override"

                let text = Pdb.toText AtomLayout.Atom37 (Some plddt) chain
                let first = pdbAtoms text |> Array.head
                Expect.equal first.B plddt.[0] "columns 61-66 of the first record"

                Expect.throwsT<ArgumentException>
                    (fun () -> Pdb.toText AtomLayout.Atom37 (Some [| 1.0f |]) chain |> ignore)
                    "wrong length"
            }

            test "written records use standard columns, element, TER and END" {
                let chain = Pdb.read (Data.small "1lcd_A") None
                let lines = (Pdb.toText AtomLayout.Atom37 None chain).TrimEnd('\n').Split('\n')
                let atomLines = lines |> Array.filter (fun l -> l.StartsWith "ATOM  ")

                let count =
                    Seq.init (ProteinChain.length chain) id
                    |> Seq.sumBy (fun i ->
                        Seq.init 37 (fun k -> chain.Atom37Mask.[i, k]) |> Seq.filter id |> Seq.length)

                Expect.equal atomLines.Length count "one record per present atom"

                for l in atomLines do
                    Expect.equal l.Length 78 "78 columns"

                    Expect.equal
                        (l.Substring(76, 2).Trim())
                        (l.Substring(12, 4).Trim().Substring(0, 1))
                        "element column"

                    Expect.equal l.[13] (l.Substring(12, 4).Trim().[0]) "names start in column 14"

                Expect.isTrue (lines.[lines.Length - 2].StartsWith "TER") "TER"
                Expect.equal lines.[lines.Length - 1] "END" "END"
                Expect.equal (pdbAtoms (String.Join("\n", lines)) |> Array.head).Name "N" "N first"
            }

            test "an insertion code and an unknown residue survive a round trip" {
                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 52 0.0
                        @ [ for l in backboneLines 5 "ALA" 'A' 52 3.8 -> l.Remove(26, 1).Insert(26, "A") ]
                        @ backboneLines 9 "ABA" 'A' 53 7.6
                    )

                let chain = Pdb.parse "ins" text None
                let back = Pdb.parse "back" (Pdb.toText AtomLayout.Atom37 None chain) None
                Expect.equal back.ResidueIndex [| 52; 52; 53 |] "numbers"
                Expect.equal back.InsertionCodes [| ""; "A"; "" |] "insertion codes"
                Expect.equal back.Sequence "GAX" "sequence"
                Expect.equal back.ResidueNames.[2] "ABA" "unknown name kept"
                Expect.isTrue back.Atom37Mask.[2, RC.oIndex] "O of the unknown residue kept"
            }
        ]

let private ruleTests =
    testList
        "rules"
        [
            test "altloc: the label with the highest summed occupancy, never mixed; ties keep the first" {
                let alt (serial: int) (name: string) (label: char) (resSeq: int) (x: float) (occ: float) =
                    pdbLine "ATOM" serial name label "SER" 'A' resSeq ' ' x 0.0 0.0 occ 20.0 (name.Substring(0, 1))

                let text =
                    pdbText (
                        backboneLines 1 "SER" 'A' 1 0.0
                        @ [
                            alt 5 "CB" 'A' 1 1.0 0.3
                            alt 6 "OG" 'A' 1 2.0 0.3
                            alt 7 "CB" 'B' 1 3.0 0.55
                        ]
                        @ backboneLines 8 "SER" 'A' 2 3.8
                        @ [
                            alt 12 "CB" 'B' 2 4.0 0.5
                            alt 13 "CB" 'A' 2 5.0 0.5
                            alt 14 "OG" 'B' 2 6.0 0.5
                            alt 15 "OG" 'A' 2 7.0 0.5
                        ]
                    )

                let chain = Pdb.parse "alt" text None
                let cb, og = RC.atom37Index "CB", RC.atom37Index "OG"
                // Residue 1: A sums 0.6, B sums 0.55 -> A (CB and OG from A).
                Expect.equal chain.Atom37.[0, cb, 0] 1.0f "residue 1 CB from A"
                Expect.equal chain.Atom37.[0, og, 0] 2.0f "residue 1 OG from A"
                // Residue 2: tie 1.0 vs 1.0 -> the first label seen, B.
                Expect.equal chain.Atom37.[1, cb, 0] 4.0f "residue 2 CB from B"
                Expect.equal chain.Atom37.[1, og, 0] 6.0f "residue 2 OG from B"

                let text2 =
                    pdbText (
                        backboneLines 1 "SER" 'A' 1 0.0
                        @ [ alt 5 "CB" 'A' 1 1.0 0.3; alt 6 "OG" 'A' 1 2.0 0.3; alt 7 "CB" 'B' 1 3.0 0.7 ]
                    )

                let chain2 = Pdb.parse "alt2" text2 None
                Expect.equal chain2.Atom37.[0, cb, 0] 3.0f "B wins on its sum"
                Expect.isFalse chain2.Atom37Mask.[0, og] "OG of A is not mixed in"
            }

            test "insertion codes make separate residues" {
                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 51 0.0
                        @ backboneLines 5 "ALA" 'A' 52 3.8
                        @ [ for l in backboneLines 9 "SER" 'A' 52 7.6 -> l.Remove(26, 1).Insert(26, "A") ]
                    )

                let chain = Pdb.parse "ins" text None
                Expect.equal chain.ResidueIndex [| 51; 52; 52 |] "numbers"
                Expect.equal chain.InsertionCodes [| ""; ""; "A" |] "codes"
                Expect.equal chain.Sequence "GAS" "sequence"
                Expect.equal chain.Atom37.[2, 0, 0] 7.6f "52A's own atoms"
            }

            test "HETATM MSE reads as MET with SE as SD; waters and ligands are skipped" {
                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 1 0.0
                        @ [
                            pdbLine "HETATM" 5 "N" ' ' "MSE" 'A' 2 ' ' 3.8 1.0 0.0 1.0 5.0 "N"
                            pdbLine "HETATM" 6 "CA" ' ' "MSE" 'A' 2 ' ' 5.0 1.5 0.0 1.0 5.0 "C"
                            pdbLine "HETATM" 7 "C" ' ' "MSE" 'A' 2 ' ' 6.2 0.8 0.0 1.0 5.0 "C"
                            pdbLine "HETATM" 8 "SE" ' ' "MSE" 'A' 2 ' ' 7.0 7.0 7.0 1.0 5.0 "SE"
                            "TER"
                            pdbLine "HETATM" 9 "C1" ' ' "NAG" 'A' 101 ' ' 9.0 9.0 9.0 1.0 5.0 "C"
                            pdbLine "HETATM" 10 "O" ' ' "HOH" 'A' 201 ' ' 9.0 9.0 9.0 1.0 5.0 "O"
                        ]
                    )

                let chain = Pdb.parse "mse" text None
                Expect.equal chain.Sequence "GM" "sequence"
                Expect.equal chain.ResidueNames [| "GLY"; "MET" |] "MSE read as MET"
                let sd = RC.atom37Index "SD"
                Expect.isTrue chain.Atom37Mask.[1, sd] "SD present"
                Expect.equal chain.Atom37.[1, sd, 2] 7.0f "SD has the SE coordinates"
            }

            test "only the first MODEL is read" {
                let text =
                    pdbText (
                        [ "MODEL        1" ]
                        @ backboneLines 1 "GLY" 'A' 1 0.0
                        @ [ "ENDMDL"; "MODEL        2" ]
                        @ backboneLines 1 "GLY" 'A' 1 50.0
                        @ backboneLines 5 "ALA" 'A' 2 53.8
                        @ [ "ENDMDL" ]
                    )

                let chain = Pdb.parse "models" text None
                Expect.equal (ProteinChain.length chain) 1 "one residue"
                Expect.equal chain.Atom37.[0, 0, 0] 0.0f "model 1 coordinates"
            }

            test "hydrogens are skipped (by element, or by name without an element)" {
                let noElement (l: string) = l.Substring(0, 76)

                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 1 0.0
                        @ [
                            pdbLine "ATOM" 5 "H" ' ' "GLY" 'A' 1 ' ' 0.0 0.0 0.0 1.0 0.0 "H"
                            pdbLine "ATOM" 6 "H1" ' ' "ALA" 'A' 2 ' ' 1.0 1.0 1.0 1.0 0.0 "H"
                            noElement (pdbLine "ATOM" 7 "HB2" ' ' "ALA" 'A' 3 ' ' 1.0 1.0 1.0 1.0 0.0 "")
                            pdbLine "ATOM" 8 "D" ' ' "ALA" 'A' 4 ' ' 1.0 1.0 1.0 1.0 0.0 "D"
                        ]
                    )

                let chain = Pdb.parse "h" text None
                Expect.equal (ProteinChain.length chain) 1 "residues made only of hydrogens do not exist"
            }

            test "unknown residues read as X with their atom37-named atoms; other names are ignored" {
                let text =
                    pdbText (
                        backboneLines 1 "ABA" 'A' 1 0.0
                        @ [
                            atom 5 "CB" "ABA" 'A' 1 1.0 2.0 3.0
                            atom 6 "CG" "ABA" 'A' 1 1.5 2.5 3.5
                            atom 7 "XYZ" "ABA" 'A' 1 1.5 2.5 3.5
                        ]
                        @ backboneLines 8 "GLY" 'A' 2 3.8
                        @ [ atom 12 "CB" "GLY" 'A' 2 4.0 4.0 4.0; atom 13 "OXT" "GLY" 'A' 2 5.0 5.0 5.0 ]
                    )

                let chain = Pdb.parse "unk" text None
                Expect.equal chain.Sequence "XG" "sequence"
                Expect.equal chain.ResidueNames.[0] "ABA" "name as read"

                let present i =
                    [
                        for k in 0..36 do
                            if chain.Atom37Mask.[i, k] then
                                RC.atomTypes.[k]
                    ]

                Expect.equal (present 0) [ "N"; "CA"; "C"; "CB"; "O"; "CG" ] "X keeps atom37-named atoms"
                Expect.equal (present 1) [ "N"; "CA"; "C"; "O"; "OXT" ] "GLY drops CB, keeps OXT"

                Expect.equal
                    [
                        for k in 0..13 do
                            if chain.Atom14Mask.[0, k] then
                                k
                    ]
                    [ 0; 1; 2 ]
                    "X in atom14: N, CA, C"
            }

            test "tool aliases: HSD reads as HIS, ILE CD as CD1, OT1/OT2 as O/OXT" {
                let text =
                    pdbText (
                        backboneLines 1 "HSD" 'A' 1 0.0
                        @ [
                            atom 5 "N" "ILE" 'A' 2 3.8 1.0 0.0
                            atom 6 "CA" "ILE" 'A' 2 5.0 1.5 0.1
                            atom 7 "C" "ILE" 'A' 2 6.2 0.8 0.2
                            atom 8 "OT1" "ILE" 'A' 2 6.4 -0.4 0.3
                            atom 9 "OT2" "ILE" 'A' 2 7.0 1.2 0.3
                            atom 10 "CD" "ILE" 'A' 2 9.0 9.0 9.0
                        ]
                    )

                let chain = Pdb.parse "aliases" text None
                Expect.equal chain.Sequence "HI" "sequence"
                Expect.equal chain.ResidueNames [| "HIS"; "ILE" |] "canonical names"
                Expect.equal chain.Atom37.[1, RC.atom37Index "CD1", 0] 9.0f "CD -> CD1"
                Expect.equal chain.Atom37.[1, RC.oIndex, 0] 6.4f "OT1 -> O"
                Expect.equal chain.Atom37.[1, RC.oxtIndex, 0] 7.0f "OT2 -> OXT"
            }

            test "residues missing backbone atoms are kept with mask false" {
                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 1 0.0
                        @ [ atom 5 "CA" "ALA" 'A' 2 3.8 0.0 0.0; atom 6 "CB" "ALA" 'A' 2 4.8 0.0 0.0 ]
                    )

                let chain = Pdb.parse "partial" text None
                Expect.equal (ProteinChain.length chain) 2 "kept"
                Expect.equal (chain.Atom37Mask.[1, 0], chain.Atom37Mask.[1, 1]) (false, true) "N missing, CA present"
                Expect.isTrue (Single.IsNaN chain.Atom37.[1, 0, 0]) "NaN where missing"
            }

            test "the default chain is the first with an amino acid; another can be chosen" {
                let text =
                    pdbText (
                        [ pdbLine "HETATM" 1 "O" ' ' "HOH" 'W' 1 ' ' 0.0 0.0 0.0 1.0 0.0 "O" ]
                        @ backboneLines 2 "GLY" 'B' 1 0.0
                        @ backboneLines 6 "ALA" 'C' 1 10.0
                        @ backboneLines 10 "SER" 'C' 2 13.8
                    )

                Expect.equal (Pdb.parse "chains" text None).ChainId "B" "default skips the water chain"
                let c = Pdb.parse "chains" text (Some "C")
                Expect.equal (c.ChainId, c.Sequence) ("C", "AS") "chain C"
            }
        ]

let private badInputTests =
    let ubq = lazy (File.ReadAllText(Data.small "1ubq_A"))

    /// 1-based line number and text of the first line starting with `prefix` after `skip` such lines.
    let nthLine (text: string) (prefix: string) (skip: int) =
        text.Split('\n')
        |> Array.indexed
        |> Array.filter (fun (_, l) -> l.StartsWith prefix)
        |> Array.item skip
        |> fun (i, l) -> i + 1, l

    let writeBytes (dir: TempDir) (name: string) (bytes: byte[]) =
        let p = dir.File name
        File.WriteAllBytes(p, bytes)
        p

    testList
        "bad input"
        [
            test "empty and blank files" {
                use dir = new TempDir()

                for name, bytes in [ "empty.pdb", [||]; "blank.pdb", Encoding.ASCII.GetBytes "  \n\n  \n" ] do
                    let p = writeBytes dir name bytes
                    let e = raises<InputException> name (fun () -> Pdb.read p None |> ignore)
                    expectNames name p InputLocation.Whole e
                    Expect.stringContains e.Message "empty" "says empty"

                let e =
                    raises<InputException> "empty gzip" (fun () ->
                        Pdb.read (writeBytes dir "e.pdb.gz" (gzip [||])) None |> ignore)

                Expect.stringContains e.Message "empty" "empty after decompression"
            }

            test "a line cut mid-coordinate names its line" {
                use dir = new TempDir()
                let lineNo, line = nthLine ubq.Value "ATOM" 100
                let lines = ubq.Value.Split('\n')

                let cut =
                    String.Join("\n", Array.append lines.[.. lineNo - 2] [| line.Substring(0, 42) |])

                let p = writeBytes dir "cut.pdb" (Encoding.ASCII.GetBytes cut)
                let e = raises<InputException> "cut" (fun () -> Pdb.read p None |> ignore)
                expectNames "cut" p (InputLocation.Line lineNo) e
                Expect.stringContains e.Message "truncated" "says truncated"
            }

            test "a gzip stream cut short is an error, not a shorter chain" {
                use dir = new TempDir()
                let gz = gzip (Encoding.ASCII.GetBytes ubq.Value)

                for keep in [ gz.Length - 1; gz.Length - 4; gz.Length - 8; gz.Length / 2; 12; 3 ] do
                    let p = writeBytes dir (sprintf "cut%d.pdb.gz" keep) gz.[.. keep - 1]

                    let e =
                        raises<InputException> (sprintf "gzip cut to %d bytes" keep) (fun () ->
                            Pdb.read p None |> ignore)

                    Expect.equal e.Error.File p "names the file"
                    Expect.stringContains e.Message p "message names the file"

                    match e.Error.Location with
                    | InputLocation.Offset _ -> ()
                    | l -> failtestf "gzip error at %O, expected a byte offset" l

                // The intact stream reads, and two concatenated members read as one text.
                let whole = writeBytes dir "whole.pdb.gz" gz
                Expect.equal (ProteinChain.length (Pdb.read whole None)) 76 "intact gzip"
                let half = ubq.Value.Length / 2
                let cutAt = ubq.Value.LastIndexOf('\n', half) + 1

                let two =
                    Array.append
                        (gzip (Encoding.ASCII.GetBytes(ubq.Value.Substring(0, cutAt))))
                        (gzip (Encoding.ASCII.GetBytes(ubq.Value.Substring cutAt)))

                Expect.equal
                    (ProteinChain.length (Pdb.read (writeBytes dir "two.pdb.gz" two) None))
                    76
                    "multi-member gzip"
            }

            test "binary garbage names the file and a line" {
                use dir = new TempDir()
                let rng = Random(7)
                let bytes = Array.zeroCreate 4096
                rng.NextBytes bytes
                bytes.[0] <- 0x41uy
                bytes.[1] <- 0x0Auy
                bytes.[2] <- 0x00uy
                let p = writeBytes dir "garbage.pdb" bytes
                let e = raises<InputException> "garbage" (fun () -> Pdb.read p None |> ignore)
                expectNames "garbage" p (InputLocation.Line 2) e
                // Text without any atom record.
                let t = writeBytes dir "text.pdb" (Encoding.ASCII.GetBytes "hello\nworld\n")
                let e2 = raises<InputException> "text" (fun () -> Pdb.read t None |> ignore)
                expectNames "text" t InputLocation.Whole e2
            }

            test "nan, inf and unparsable coordinates name the line and the column" {
                use dir = new TempDir()
                let lineNo, line = nthLine ubq.Value "ATOM" 10

                for start, bad, what in
                    [
                        30, "     nan", "x coordinate"
                        38, "     inf", "y coordinate"
                        46, "  1.2.3 ", "z coordinate"
                        30, "        ", "x coordinate"
                    ] do
                    let broken = line.Remove(start, 8).Insert(start, bad)
                    let lines = ubq.Value.Split('\n')
                    lines.[lineNo - 1] <- broken
                    let p = writeBytes dir "nan.pdb" (Encoding.ASCII.GetBytes(String.Join("\n", lines)))
                    let e = raises<InputException> bad (fun () -> Pdb.read p None |> ignore)
                    expectNames bad p (InputLocation.Line lineNo) e
                    Expect.stringContains e.Message what "names the column"
            }

            test "a bad residue number names the line" {
                let lineNo, line = nthLine ubq.Value "ATOM" 3
                let lines = ubq.Value.Split('\n')
                lines.[lineNo - 1] <- line.Remove(22, 4).Insert(22, "  x1")

                let e =
                    raises<InputException> "resSeq" (fun () ->
                        Pdb.parse "resseq" (String.Join("\n", lines)) None |> ignore)

                expectNames "resSeq" "resseq" (InputLocation.Line lineNo) e
            }

            test "a missing chain lists the chains present" {
                let e =
                    raises<InputException> "chain Z" (fun () -> Pdb.read (Data.small "1ubq_A") (Some "Z") |> ignore)

                expectNames "chain Z" (Data.small "1ubq_A") (InputLocation.Field "chain") e
                Expect.stringContains e.Message "'Z' not found" "names the chain"
                Expect.stringContains e.Message "'A'" "lists chain A"
            }

            test "a chain without any complete backbone is an error" {
                let text =
                    pdbText
                        [
                            atom 1 "CA" "GLY" 'A' 1 0.0 0.0 0.0
                            atom 2 "CA" "GLY" 'A' 2 3.8 0.0 0.0
                            atom 3 "N" "GLY" 'A' 3 7.0 0.0 0.0
                        ]

                let e =
                    raises<InputException> "ca only" (fun () -> Pdb.parse "caonly" text None |> ignore)

                expectNames "ca only" "caonly" (InputLocation.Field "chain 'A'") e
                Expect.stringContains e.Message "no complete backbone" "says why"
            }

            test "an unknown residue name is not an error" {
                let chain = Pdb.parse "unk" (pdbText (backboneLines 1 "XYZ" 'A' 1 0.0)) None
                Expect.equal chain.Sequence "X" "X"
            }

            test "hybrid-36 residue numbers read past 9999" {
                for field, expected in
                    [
                        "A000", Some 10000
                        "A001", Some 10001
                        "A00Z", Some 10035
                        "ZZZZ", Some 1223055
                        "a000", Some 1223056
                        "zzzz", Some 2436111
                        "A0a0", None
                        "a0A0", None
                        "9999", None
                        "A00", None
                        "A0-0", None
                    ] do
                    Expect.equal (Pdb.hybrid36 field) expected field

                let text = Encoding.ASCII.GetString(Checks.FuzzLarge.largePdb 10050 true)
                Expect.stringContains text "ALA AA000" "the generator writes hybrid-36 numbers"
                let chain = Pdb.parse "h36" text None
                Expect.equal (ProteinChain.length chain) 10050 "every residue"
                Expect.equal chain.ResidueIndex.[9998] 9999 "residue 9999"
                Expect.equal chain.ResidueIndex.[9999] 10000 "then A000 = 10000"
                Expect.equal chain.ResidueIndex.[10049] 10050 "the last"
            }

            test "residue numbers that wrap after 9999 are an error naming the line where a number comes back" {
                // Line 1 HEADER, lines 2-4 residue 1 (N, CA, C), residues 2…9999 and 0 on lines 5…10003.
                let text = Encoding.ASCII.GetString(Checks.FuzzLarge.largePdb 10050 false)

                let e =
                    raises<InputException> "wrapped" (fun () -> Pdb.parse "wrapped" text None |> ignore)

                expectNames "wrapped" "wrapped" (InputLocation.Line 10004) e
                Expect.stringContains e.Message "residue 1 of chain 'A' appears again" "names the residue"
                Expect.stringContains e.Message "first on line 2" "names its first line"
                Expect.stringContains e.Message "wrap after 9999" "explains the wrap"
            }

            test "a residue that appears again after other residues is an error, not a merge" {
                let text =
                    pdbText (
                        backboneLines 1 "GLY" 'A' 1 0.0
                        @ backboneLines 5 "GLY" 'A' 2 3.8
                        @ [ atom 9 "CB" "ALA" 'A' 1 0.5 0.5 0.5 ]
                    )

                let e =
                    raises<InputException> "split residue" (fun () -> Pdb.parse "split" text None |> ignore)

                expectNames "split residue" "split" (InputLocation.Line 9) e
                Expect.isFalse (e.Message.Contains "wrap") "no wrap hint below 9999"
                // The same residue number in another chain is another residue.
                let other =
                    pdbText (backboneLines 1 "GLY" 'A' 1 0.0 @ backboneLines 5 "GLY" 'B' 1 3.8)

                Expect.equal (ProteinChain.length (Pdb.parse "two" other (Some "B"))) 1 "chain B"
            }

            test "a missing file is an InputException" {
                let p =
                    Path.Combine(Path.GetTempPath(), "esm3-no-such-file-" + Guid.NewGuid().ToString("N") + ".pdb")

                let e = raises<InputException> "missing" (fun () -> Pdb.read p None |> ignore)
                expectNames "missing" p InputLocation.Whole e
            }
        ]

[<Tests>]
let tests =
    testList "Structure/Pdb" [ goldenTests; corpusTests; writerTests; ruleTests; badInputTests ]
