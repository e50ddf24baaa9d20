module Esm3Structure.Tests.Io.CorpusTests

open System.IO
open Expecto
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tests

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
