module Esm3Structure.Tests.Io.CorpusTests

open System
open System.IO
open Expecto
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tests

/// A file `name` with `text` in `dir`; its path.
let private write (dir: TempDir) (name: string) (text: string) =
    let path = dir.File name
    File.WriteAllText(path, text)
    path

[<Tests>]
let tests =
    testList
        "Io/Corpus"
        [
            test
                "readSplit reads each valid entry's own chain (the index's chain column), in index order; a limit keeps the first" {
                let index = Corpus.readIndex (Data.path [ "index.tsv" ])
                let valid = index |> Array.filter (fun e -> e.Split = "valid")
                let chains = Corpus.readSplit Data.root.Value "valid" 0
                Expect.equal chains.Length valid.Length "every valid entry"

                for e, c in Array.zip valid chains do
                    Expect.equal c.ChainId e.Chain (e.Name + ": the index's chain")

                let three = Corpus.entriesOf Data.root.Value "valid" 3

                Expect.sequenceEqual
                    (three |> Array.map _.Name)
                    (valid |> Array.truncate 3 |> Array.map _.Name)
                    "limit 3"
            }

            test
                "readIndex finds columns by header name, ignores extra columns, blank lines and CRs; names are file stems" {
                use dir = new TempDir()

                let path =
                    write
                        dir
                        "index.tsv"
                        ("atoms\tsplit\tlength\tnote\tchain\tpdb_id\tfile\tchain_breaks\r\n"
                         + "full\ttrain\t80\tx\tA\t1a04\t1a04_A_02.pdb.gz\t1\r\n"
                         + "\r\n"
                         + "backbone\tvalid\t211\t\tL\t1a0q\t1a0q_L.cif\t0\n")

                let entries = Corpus.readIndex path

                Expect.equal
                    entries
                    [|
                        {
                            File = "1a04_A_02.pdb.gz"
                            Name = "1a04_A_02"
                            PdbId = "1a04"
                            Chain = "A"
                            Length = 80
                            Split = "train"
                            ChainBreaks = 1
                            Atoms = "full"
                        }
                        {
                            File = "1a0q_L.cif"
                            Name = "1a0q_L"
                            PdbId = "1a0q"
                            Chain = "L"
                            Length = 211
                            Split = "valid"
                            ChainBreaks = 0
                            Atoms = "backbone"
                        }
                    |]
                    "entries"
            }

            test
                "readIndex errors name the file and the line: a missing column, a short row, a length that is no integer" {
                use dir = new TempDir()
                let header = "file\tpdb_id\tchain\tlength\tsplit\tchain_breaks\tatoms\n"
                let row = "a_A.pdb.gz\ta\tA\t50\ttrain\t0\tfull\n"

                let missing =
                    write dir "missing.tsv" ("file\tpdb_id\tchain\tlength\tsplit\tatoms\n" + row)

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.readIndex missing |> ignore)).Error

                Expect.equal (e.File, e.Location) (missing, InputLocation.Line 1) "missing column: the header"
                Expect.equal e.Message "missing column 'chain_breaks'" "names the column"
                let short = write dir "short.tsv" (header + row + "b_B.pdb.gz\tb\tB\t60\n")

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.readIndex short |> ignore)).Error

                Expect.equal e.Location (InputLocation.Line 3) "the short row"
                Expect.equal e.Message "4 columns, expected 7" "counts"
                let bad = write dir "bad.tsv" (header + row + row.Replace("\t50\t", "\t5O\t"))

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.readIndex bad |> ignore)).Error

                Expect.equal e.Location (InputLocation.Line 3) "the bad row"
                Expect.equal e.Message "column 'length' is not an integer: '5O'" "names the column and the text"
                let empty = write dir "empty.tsv" ""

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.readIndex empty |> ignore)).Error

                Expect.equal (e.File, e.Location) (empty, InputLocation.Line 1) "an empty file: no header"
            }

            test
                "readFasta joins wrapped lines, cuts headers at the first space, skips blank lines and CRs, in file order" {
                use dir = new TempDir()

                let path =
                    write dir "s.fasta" ">b_X some description\r\nMKV\r\nLA\n\n>a_Y\nGG\n  \n>empty\n>c\nW"

                Expect.equal (Corpus.readFasta path) [| "b_X", "MKVLA"; "a_Y", "GG"; "empty", ""; "c", "W" |] "records"

                let orphan = write dir "orphan.fasta" "\nMKV\n>a\nG\n"

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.readFasta orphan |> ignore)).Error

                Expect.equal (e.File, e.Location) (orphan, InputLocation.Line 2) "sequence before any header"
            }

            test "sequences pairs a split's index entries with their FASTA records; a missing record names the entry" {
                use dir = new TempDir()

                write
                    dir
                    "index.tsv"
                    ("file\tpdb_id\tchain\tlength\tsplit\tchain_breaks\tatoms\n"
                     + "b_B.pdb.gz\tb\tB\t3\tvalid\t0\tfull\n"
                     + "a_A.pdb.gz\ta\tA\t2\ttrain\t0\tfull\n"
                     + "c_C.pdb.gz\tc\tC\t1\tvalid\t0\tfull\n")
                |> ignore

                let fasta = write dir "sequences.fasta" ">a_A\nGG\n>c_C\nW\n>b_B\nMKV\n"
                Expect.equal (Corpus.sequences dir.Path "valid") [| "b_B", "MKV"; "c_C", "W" |] "index order"
                Expect.equal (Corpus.sequences dir.Path "test") [||] "an empty split"
                File.WriteAllText(fasta, ">a_A\nGG\n>b_B\nMKV\n")

                let e =
                    (raises<InputException> "input" (fun () -> Corpus.sequences dir.Path "valid" |> ignore)).Error

                Expect.equal (e.File, e.Location) (fasta, InputLocation.Field "c_C") "names the entry"
            }

            test "the shared corpus: 1500 entries (1363 train, 67 valid, 70 test), unique names, a sequence for each" {
                // Counts from shared/data/README.md; `length` counts residues with N, CA and C, the FASTA every
                // residue written, so no sequence is shorter than its entry's length.
                let index = Corpus.readIndex (Data.path [ "index.tsv" ])
                Expect.equal index.Length 1500 "entries"

                Expect.equal
                    (index |> Array.countBy _.Split |> Array.sort)
                    [| "test", 70; "train", 1363; "valid", 67 |]
                    "splits"

                Expect.equal (index |> Array.distinctBy _.Name).Length index.Length "unique names"
                Expect.isTrue (index |> Array.forall (fun e -> e.Atoms = "full" || e.Atoms = "backbone")) "atoms"

                for split in [ "train"; "valid"; "test" ] do
                    let entries = Corpus.entriesOf Data.root.Value split 0
                    let sequences = Corpus.sequences Data.root.Value split
                    Expect.equal (sequences |> Array.map fst) (entries |> Array.map _.Name) (split + ": names")

                    for e, (_, s) in Array.zip entries sequences do
                        if s.Length < e.Length then
                            failtestf "%s: sequence of %d residues, index length %d" e.Name s.Length e.Length
            }

            test "readNamed reads named entries; an unknown name is an InputException naming index.tsv and the name" {
                let chains = Corpus.readNamed Data.root.Value [| "1smx_B"; " 1ii7_A" |]
                Expect.sequenceEqual (chains |> Array.map _.ChainId) [| "B"; "A" |] "the index's chains"

                try
                    Corpus.readNamed Data.root.Value [| "1smx_B"; "no_such_X" |] |> ignore
                    failtest "accepted an unknown name"
                with :? InputException as e ->
                    Expect.equal e.Error.File (Path.Combine(Data.root.Value, "index.tsv")) "names index.tsv"
                    Expect.equal e.Error.Location (InputLocation.Field "no_such_X") "names the entry"
            }
        ]
