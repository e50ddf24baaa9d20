module Esm3Structure.Tests.Structure.MmcifTests

open System
open System.Globalization
open System.IO
open System.Text
open Expecto
open Esm3Structure
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tests.StructureFixtures

module RC = ResidueConstants

let private cifPath (name: string) = Data.path [ "mmcif"; name ]

/// Asserts two chains hold the same residues and atoms (exactly: both files hold the same decimal values).
let private expectSameChain (what: string) (a: ProteinChain) (b: ProteinChain) =
    Expect.equal a.ChainId b.ChainId (what + ": chain id")
    Expect.equal a.Sequence b.Sequence (what + ": sequence")
    Expect.equal a.ResidueNames b.ResidueNames (what + ": residue names")
    Expect.equal a.ResidueIndex b.ResidueIndex (what + ": residue index")
    Expect.equal a.InsertionCodes b.InsertionCodes (what + ": insertion codes")
    Expect.equal a.Atom37Mask b.Atom37Mask (what + ": atom37 mask")
    Expect.equal a.Atom14Mask b.Atom14Mask (what + ": atom14 mask")

    for i in 0 .. ProteinChain.length a - 1 do
        for k in 0..36 do
            if a.Atom37Mask.[i, k] then
                for c in 0..2 do
                    Expect.equal
                        a.Atom37.[i, k, c]
                        b.Atom37.[i, k, c]
                        (sprintf "%s: residue %d atom %s coordinate %d" what i RC.atomTypes.[k] c)

            Expect.equal
                a.BFactors.[i, k]
                b.BFactors.[i, k]
                (sprintf "%s: residue %d atom %s B-factor" what i RC.atomTypes.[k])

/// The model-1 `_atom_site` rows of 6yfy, read by splitting on whitespace (its rows hold no quoted values).
let private yfyRows =
    lazy
        (let lines =
            (Encoding.ASCII.GetString(gunzipFile (cifPath "6yfy.cif.gz"))).Split('\n')

         let start = lines |> Array.findIndex (fun l -> l.StartsWith "_atom_site.")

         let tags =
             lines.[start..]
             |> Array.takeWhile (fun l -> l.StartsWith "_atom_site.")
             |> Array.map (fun l -> l.Trim().Substring 11)

         let col name = Array.IndexOf(tags, name)

         lines.[start + tags.Length ..]
         |> Array.takeWhile (fun l -> not (l.StartsWith "#"))
         |> Array.map (fun l -> l.Split([| ' ' |], StringSplitOptions.RemoveEmptyEntries))
         |> Array.filter (fun f -> f.[col "pdbx_PDB_model_num"] = "1")
         |> Array.map (fun f ->
             {|
                 Group = f.[col "group_PDB"]
                 Atom = f.[col "auth_atom_id"]
                 Comp = f.[col "auth_comp_id"]
                 Chain = f.[col "auth_asym_id"]
                 Seq = int f.[col "auth_seq_id"]
                 X = Single.Parse(f.[col "Cartn_x"], CultureInfo.InvariantCulture)
             |}))

/// Expected chain of 6yfy from the independent rows: ATOM residues with CA, in order.
let private yfyExpected (chain: string) =
    yfyRows.Value
    |> Array.filter (fun r -> r.Group = "ATOM" && r.Chain = chain && r.Atom = "CA")

let private goldenTests =
    testList
        "golden"
        [
            for name in [ "1ubq_A"; "1ctf_A"; "1a8o_A" ] do
                test (sprintf "%s.cif gives the same chain as small/%s.pdb" name name) {
                    let fromPdb = Pdb.read (Data.small name) None
                    let fromCif = Mmcif.read (cifPath (name + ".cif")) None
                    Expect.equal fromCif.Name name "name is the file stem"
                    expectSameChain name fromPdb fromCif
                    let viaDispatch = StructureFile.read (cifPath (name + ".cif")) None
                    expectSameChain (name + " via StructureFile") fromPdb viaDispatch
                }

            test "6yfy: the default chain is the first protein chain, model 1 only" {
                let chain = Mmcif.read (cifPath "6yfy.cif.gz") None
                let firstProtein = (yfyRows.Value |> Array.find (fun r -> r.Group = "ATOM")).Chain
                Expect.equal chain.ChainId firstProtein "first chain with an ATOM record"
                let expected = yfyExpected firstProtein

                Expect.equal
                    chain.Sequence
                    (expected |> Array.map (fun r -> oneLetter.[r.Comp]) |> String)
                    "sequence of the ATOM residues"

                Expect.equal
                    chain.ResidueIndex
                    (expected |> Array.map (fun r -> r.Seq))
                    "author numbers (HETATM residues skipped)"

                Expect.equal
                    (Array.init (ProteinChain.length chain) (fun i -> chain.Atom37.[i, RC.caIndex, 0]))
                    (expected |> Array.map (fun r -> r.X))
                    "model-1 CA x"
                // NMR entry: hydrogens are in the file but never in the chain.
                Expect.isTrue
                    (yfyRows.Value
                     |> Array.exists (fun r -> r.Atom.StartsWith "H" && r.Chain = firstProtein))
                    "the file has hydrogens"
            }

            test "6yfy: another chain can be chosen" {
                let chain = Mmcif.read (cifPath "6yfy.cif.gz") (Some "C")
                let expected = yfyExpected "C"
                Expect.equal chain.ChainId "C" "chain C"
                Expect.equal chain.Sequence (expected |> Array.map (fun r -> oneLetter.[r.Comp]) |> String) "sequence"
                Expect.equal chain.ResidueIndex (expected |> Array.map (fun r -> r.Seq)) "numbers"
            }

            test "6yfy: a missing chain id names the chains present; a ligand-only chain is an error" {
                let p = cifPath "6yfy.cif.gz"

                let e =
                    raises<InputException> "chain Z" (fun () -> Mmcif.read p (Some "Z") |> ignore)

                expectNames "chain Z" p (InputLocation.Field "chain") e
                Expect.stringContains e.Message "'Z' not found" "names the chain"

                for c in [ "A"; "C"; "I" ] do
                    Expect.stringContains e.Message (sprintf "'%s'" c) (sprintf "lists chain %s" c)

                let e2 =
                    raises<InputException> "chain I" (fun () -> Mmcif.read p (Some "I") |> ignore)

                expectNames "chain I" p (InputLocation.Field "chain") e2
            }
        ]

// ---------------------------------------------------------------------------------------------------------------
// Hand-written mmCIF texts.

let private standardColumns =
    [
        "group_PDB"
        "id"
        "type_symbol"
        "label_atom_id"
        "label_alt_id"
        "label_comp_id"
        "label_asym_id"
        "label_seq_id"
        "pdbx_PDB_ins_code"
        "Cartn_x"
        "Cartn_y"
        "Cartn_z"
        "occupancy"
        "B_iso_or_equiv"
        "auth_seq_id"
        "auth_asym_id"
        "pdbx_PDB_model_num"
    ]

/// One row for `standardColumns`.
let private row
    (group: string)
    (atom: string)
    (alt: string)
    (comp: string)
    (chain: string)
    (seq: int)
    (ins: string)
    (x: float)
    (y: float)
    (z: float)
    (occ: string)
    (model: int)
    =
    let element = if atom = "SE" then "SE" else atom.Substring(0, 1)

    String.Format(
        CultureInfo.InvariantCulture,
        "{0} 1 {1} {2} {3} {4} {5} {6} {7} {8:F3} {9:F3} {10:F3} {11} 20.00 {6} {5} {12}",
        group,
        element,
        atom,
        alt,
        comp,
        chain,
        seq,
        ins,
        x,
        y,
        z,
        occ,
        model
    )

let private backboneRows (comp: string) (chain: string) (seq: int) (ins: string) (offset: float) (model: int) =
    [
        row "ATOM" "N" "." comp chain seq ins (offset + 0.0) 1.0 0.0 "1.00" model
        row "ATOM" "CA" "." comp chain seq ins (offset + 1.2) 1.5 0.1 "1.00" model
        row "ATOM" "C" "." comp chain seq ins (offset + 2.4) 0.8 0.2 "1.00" model
        row "ATOM" "O" "." comp chain seq ins (offset + 2.6) -0.4 0.3 "1.00" model
    ]

let private cif (before: string list) (columns: string list) (rows: string list) (after: string list) =
    String.Join(
        "\n",
        [ "data_test"; "#" ]
        @ before
        @ [ "loop_" ]
        @ (columns |> List.map (fun c -> "_atom_site." + c))
        @ rows
        @ [ "#" ]
        @ after
        @ [ "" ]
    )

let private ruleTests =
    testList
        "rules"
        [
            test "altloc, insertion codes, MSE, waters, ligands, hydrogens, second model and unknown residues" {
                let text =
                    cif
                        []
                        standardColumns
                        (backboneRows "SER" "A" 51 "?" 0.0 1
                         @ [
                             row "ATOM" "CB" "A" "SER" "A" 51 "?" 1.0 0.0 0.0 "0.30" 1
                             row "ATOM" "OG" "A" "SER" "A" 51 "?" 2.0 0.0 0.0 "0.30" 1
                             row "ATOM" "CB" "B" "SER" "A" 51 "?" 3.0 0.0 0.0 "0.70" 1
                             row "ATOM" "H" "." "SER" "A" 51 "?" 3.0 0.0 0.0 "1.00" 1
                         ]
                         @ backboneRows "GLY" "A" 52 "?" 3.8 1
                         @ backboneRows "ALA" "A" 52 "A" 7.6 1
                         @ [
                             row "HETATM" "N" "." "MSE" "A" 53 "?" 11.4 0.0 0.0 "1.00" 1
                             row "HETATM" "CA" "." "MSE" "A" 53 "?" 12.6 0.0 0.0 "1.00" 1
                             row "HETATM" "C" "." "MSE" "A" 53 "?" 13.8 0.0 0.0 "1.00" 1
                             row "HETATM" "SE" "." "MSE" "A" 53 "?" 14.0 5.0 5.0 "1.00" 1
                         ]
                         @ backboneRows "ABA" "A" 54 "?" 15.2 1
                         @ [
                             row "ATOM" "H1" "." "GLY" "A" 55 "?" 0.0 0.0 0.0 "1.00" 1
                             row "HETATM" "O" "." "HOH" "A" 201 "?" 9.0 9.0 9.0 "1.00" 1
                             row "HETATM" "C1" "." "NAG" "A" 301 "?" 9.0 9.0 9.0 "1.00" 1
                         ]
                         @ backboneRows "GLY" "A" 51 "?" 50.0 2
                         @ backboneRows "TRP" "A" 99 "?" 60.0 2)
                        []

                let chain = Mmcif.parse "rules" text None

                Expect.equal
                    chain.Sequence
                    "SGAMX"
                    "sequence (second model, water, ligand, hydrogen-only residue skipped)"

                Expect.equal chain.ResidueIndex [| 51; 52; 52; 53; 54 |] "numbers"
                Expect.equal chain.InsertionCodes [| ""; ""; "A"; ""; "" |] "insertion codes ('?' is blank)"
                Expect.equal chain.ResidueNames [| "SER"; "GLY"; "ALA"; "MET"; "ABA" |] "names"
                let cb, og, sd = RC.atom37Index "CB", RC.atom37Index "OG", RC.atom37Index "SD"
                Expect.equal chain.Atom37.[0, cb, 0] 3.0f "altloc B (0.70 > 0.60)"
                Expect.isFalse chain.Atom37Mask.[0, og] "no OG mixed in from A"
                Expect.equal chain.Atom37.[0, 0, 0] 0.0f "model 1 coordinates"
                Expect.equal chain.Atom37.[3, sd, 1] 5.0f "MSE SE -> SD"
                Expect.equal chain.BFactors.[1, 1] 20.0f "B-factor"

                // The same structure written as PDB reads the same.
                let pdb = Pdb.parse "rules" (Pdb.toText AtomLayout.Atom37 None chain) None
                Expect.equal pdb.Sequence chain.Sequence "PDB round trip"
            }

            test "tokenizer: quotes, text fields, comments, nulls, any column order" {
                let columns =
                    [
                        "Cartn_z"
                        "note"
                        "auth_atom_id"
                        "label_comp_id"
                        "Cartn_x"
                        "auth_asym_id"
                        "Cartn_y"
                        "auth_seq_id"
                        "type_symbol"
                        "occupancy"
                        "B_iso_or_equiv"
                        "label_alt_id"
                        "pdbx_PDB_ins_code"
                    ]

                let r (note: string) (atom: string) (comp: string) (x: float) =
                    String.Format(
                        CultureInfo.InvariantCulture,
                        "0.5 {0} {1} {2} {3:F3} A 1.5 7 {4} ? . . ?",
                        note,
                        atom,
                        comp,
                        x,
                        atom.Trim('\'', '"').Substring(0, 1)
                    )

                let textField =
                    [
                        ";a text field with loop_"
                        "_atom_site.Cartn_x 'quoted' \"double\" # not a comment"
                        ";"
                    ]

                let text =
                    cif
                        [
                            "_struct.title 'it''s a \"title\"'"
                            "_struct.pdbx_descriptor"
                            ";"
                            "loop_"
                            "_atom_site.Cartn_x 99"
                            " ; not the end (this ';' is not in column 1)"
                            ";"
                            "_struct.other 'a'b' # comment after a value"
                        ]
                        columns
                        [
                            r "'x y'" "N" "GLY" 1.0
                            r "\"it's\"" "\"CA\"" "'GLY'" 2.0
                            r "'a'b'" "'C'" "GLY" 3.0
                            // A text-field value mid-row (it must start a line).
                            "0.5\n"
                            + String.Join("\n", textField)
                            + "\n"
                            + (r "z" "O" "GLY" 4.0).Substring(6)
                            r "." "O5'" "GLY" 5.0
                        ]
                        [ "loop_"; "_other.a"; "_other.b"; "1 ';'"; "2 '#'" ]

                let chain = Mmcif.parse "tokens" text None
                Expect.equal chain.Sequence "G" "one residue"
                Expect.equal chain.ResidueIndex [| 7 |] "auth_seq_id"
                Expect.equal chain.ChainId "A" "chain"

                Expect.equal
                    [
                        for k in 0..36 do
                            if chain.Atom37Mask.[0, k] then
                                RC.atomTypes.[k]
                    ]
                    [ "N"; "CA"; "C"; "O" ]
                    "atoms"

                Expect.equal
                    [|
                        chain.Atom37.[0, 0, 0]
                        chain.Atom37.[0, 1, 0]
                        chain.Atom37.[0, 2, 0]
                        chain.Atom37.[0, 4, 0]
                    |]
                    [| 1.0f; 2.0f; 3.0f; 4.0f |]
                    "x per atom"

                Expect.equal
                    (chain.Atom37.[0, 1, 1], chain.Atom37.[0, 1, 2])
                    (1.5f, 0.5f)
                    "y and z columns found by name"

                Expect.equal chain.BFactors.[0, 1] 0.0f "B '.' is 0"
            }

            test "label columns only; no group_PDB: non-amino-acid residues are HETATM" {
                let columns =
                    [
                        "label_atom_id"
                        "label_comp_id"
                        "label_asym_id"
                        "label_seq_id"
                        "Cartn_x"
                        "Cartn_y"
                        "Cartn_z"
                    ]

                let r atom comp seq x =
                    sprintf "%s %s B %d %.1f 0.0 0.0" atom comp seq x

                let text =
                    cif
                        []
                        columns
                        [
                            r "O" "HOH" 1 0.0
                            r "C1" "NAG" 2 0.0
                            r "N" "MSE" 3 1.0
                            r "CA" "MSE" 3 2.0
                            r "C" "MSE" 3 3.0
                            r "SE" "MSE" 3 4.0
                            r "N" "VAL" 4 5.0
                            r "CA" "VAL" 4 6.0
                            r "C" "VAL" 4 7.0
                        ]
                        []

                let chain = Mmcif.parse "labels" text None
                Expect.equal chain.ChainId "B" "label_asym_id"
                Expect.equal chain.Sequence "MV" "HOH and NAG skipped by name"
                Expect.equal chain.ResidueIndex [| 3; 4 |] "label_seq_id"
                Expect.isTrue chain.Atom37Mask.[0, RC.atom37Index "SD"] "SD"
            }

            test "a single-row _atom_site (no loop) is read" {
                let text =
                    "data_x\n_atom_site.label_atom_id CA\n_atom_site.label_comp_id GLY\n_atom_site.label_asym_id A\n_atom_site.label_seq_id 1\n_atom_site.Cartn_x 1\n_atom_site.Cartn_y 2\n_atom_site.Cartn_z 3\n"
                // One CA atom: read, then rejected for lack of a complete backbone (not for lack of a loop).
                let e =
                    raises<InputException> "single row" (fun () -> Mmcif.parse "single" text None |> ignore)

                expectNames "single row" "single" (InputLocation.Field "chain 'A'") e
            }

            test "StructureFile detects mmCIF by content and PDB otherwise" {
                let cifText = File.ReadAllText(cifPath "1ubq_A.cif")
                Expect.equal (StructureFile.detect "x.pdb" cifText) StructureFormat.Mmcif "data_ first"
                Expect.equal (StructureFile.detect "x.cif.gz" "ATOM") StructureFormat.Mmcif "by extension"

                Expect.equal
                    (StructureFile.detect "x.txt" (File.ReadAllText(Data.small "1ubq_A")))
                    StructureFormat.Pdb
                    "PDB"

                Expect.equal
                    (StructureFile.parse "u" cifText None).Sequence
                    (Pdb.read (Data.small "1ubq_A") None).Sequence
                    "parse"

                Expect.equal
                    (StructureFile.read (Data.path [ "structures"; "1a8l_A.pdb.gz" ]) None).Name
                    "1a8l_A"
                    "gzip PDB"
            }
        ]

let private badInputTests =
    let ubq = lazy (File.ReadAllText(cifPath "1ubq_A.cif"))

    let writeText (dir: TempDir) (name: string) (text: string) =
        let p = dir.File name
        File.WriteAllText(p, text)
        p

    /// 1-based number of the line that contains `needle`.
    let lineOf (text: string) (needle: string) =
        (text.Split('\n') |> Array.findIndex (fun l -> l.Contains needle)) + 1

    testList
        "bad input"
        [
            test "empty file" {
                use dir = new TempDir()
                let p = writeText dir "empty.cif" ""

                raises<InputException> "empty" (fun () -> Mmcif.read p None |> ignore)
                |> expectNames "empty" p InputLocation.Whole
            }

            test "no _atom_site loop" {
                use dir = new TempDir()
                let text = ubq.Value.Substring(0, ubq.Value.IndexOf "loop_\n_atom_site.")
                let p = writeText dir "noatoms.cif" text

                raises<InputException> "no loop" (fun () -> Mmcif.read p None |> ignore)
                |> expectNames "no loop" p (InputLocation.Field "_atom_site")
            }

            test "missing coordinate column" {
                use dir = new TempDir()

                let text =
                    cif
                        []
                        [
                            "label_atom_id"
                            "label_comp_id"
                            "auth_asym_id"
                            "auth_seq_id"
                            "Cartn_x"
                            "Cartn_z"
                        ]
                        [ "N GLY A 1 0 0" ]
                        []

                let p = writeText dir "noy.cif" text

                raises<InputException> "no Cartn_y" (fun () -> Mmcif.read p None |> ignore)
                |> expectNames "no Cartn_y" p (InputLocation.Field "_atom_site.Cartn_y")
            }

            test "a file cut mid-row names the line" {
                use dir = new TempDir()
                let at = ubq.Value.IndexOf "27.886 26.463"
                let text = ubq.Value.Substring(0, at + 4)
                let p = writeText dir "cut.cif" text
                let e = raises<InputException> "cut" (fun () -> Mmcif.read p None |> ignore)
                expectNames "cut" p (InputLocation.Line(text.Split('\n').Length)) e
                Expect.stringContains e.Message "mid-row" "says why"
            }

            test "nan and unparsable coordinates name the line and the column" {
                use dir = new TempDir()

                for bad, col in [ "nan", "Cartn_x"; "1.2.3", "Cartn_x"; "?", "Cartn_x" ] do
                    let text =
                        ubq.Value.Replace("2 C CA . MET Apoly A . ? 26.266", "2 C CA . MET Apoly A . ? " + bad)

                    Expect.notEqual text ubq.Value "the row was changed"
                    let p = writeText dir "nan.cif" text
                    let e = raises<InputException> bad (fun () -> Mmcif.read p None |> ignore)
                    expectNames bad p (InputLocation.Line(lineOf text ("2 C CA . MET Apoly A . ? " + bad))) e
                    Expect.stringContains e.Message col "names the column"
            }

            test "unterminated quotes and text fields name the line" {
                use dir = new TempDir()
                let quote = ubq.Value.Replace("_cell.entry_id 1UBQ", "_cell.entry_id '1UBQ")
                let p = writeText dir "quote.cif" quote

                raises<InputException> "quote" (fun () -> Mmcif.read p None |> ignore)
                |> expectNames "quote" p (InputLocation.Line(lineOf quote "'1UBQ"))

                let field =
                    ubq.Value.Replace("_cell.entry_id 1UBQ", "_cell.entry_id\n;never closed")

                let p2 = writeText dir "field.cif" field

                raises<InputException> "text field" (fun () -> Mmcif.read p2 None |> ignore)
                |> expectNames "text field" p2 (InputLocation.Line(lineOf field ";never"))
            }

            test "garbage: PDB text, binary data and a cut gzip stream" {
                use dir = new TempDir()
                let pdb = writeText dir "pdb.cif" (File.ReadAllText(Data.small "1ubq_A"))

                raises<InputException> "pdb as cif" (fun () -> Mmcif.read pdb None |> ignore)
                |> expectNames "pdb as cif" pdb (InputLocation.Line 1)

                let bin = dir.File "bin.cif"
                File.WriteAllBytes(bin, Array.append (Encoding.ASCII.GetBytes "data_x\n#\n") [| 0uy; 1uy; 2uy; 200uy |])

                raises<InputException> "binary" (fun () -> Mmcif.read bin None |> ignore)
                |> expectNames "binary" bin (InputLocation.Line 3)

                let gz = File.ReadAllBytes(cifPath "6yfy.cif.gz")
                let cut = dir.File "cut.cif.gz"
                File.WriteAllBytes(cut, gz.[.. gz.Length * 2 / 3])
                let e = raises<InputException> "cut gzip" (fun () -> Mmcif.read cut None |> ignore)
                Expect.equal e.Error.File cut "names the file"
            }

            test "an unknown residue is not an error" {
                let text = cif [] standardColumns (backboneRows "ZZZ" "A" 1 "?" 0.0 1) []
                Expect.equal (Mmcif.parse "unk" text None).Sequence "X" "X"
            }
        ]

[<Tests>]
let tests = testList "Structure/Mmcif" [ goldenTests; ruleTests; badInputTests ]
