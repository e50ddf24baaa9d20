module Esm3Structure.Tests.Tools.App.TokensJsonTests

open System
open Expecto
open Esm3Structure
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Tokenizers

let private sample =
    {
        File = "data/ünïcode \"quoted\".pdb"
        Chain = "A"
        Sequence = "MKTX"
        ResidueIndex = [| -3; 1; 2; 100 |]
        Tokens = [| 0L; 4095L; StructureTokens.Mask; 17L |]
        MissingBackbone = [| 2 |]
    }

/// Parses `json` and expects an `InputException` at `field`.
let private expectField (what: string) (field: string) (json: string) =
    try
        TokensJson.ofJson "t.json" json |> ignore
        failtestf "%s: accepted" what
    with :? InputException as e ->
        Expect.equal e.Error.File "t.json" (what + ": names the file")
        Expect.equal e.Error.Location (InputLocation.Field field) (what + ": names the field: " + e.Message)

let private replace (field: string) (value: string) =
    let good = TokensJson.toJson [| sample |]
    let doc = Text.Json.Nodes.JsonNode.Parse good
    doc.[field] <- Text.Json.Nodes.JsonNode.Parse value
    doc.ToJsonString()

let private remove (field: string) =
    let doc = Text.Json.Nodes.JsonNode.Parse(TokensJson.toJson [| sample |]).AsObject()

    doc.Remove field |> ignore
    doc.ToJsonString()

[<Tests>]
let tests =
    testList
        "App/TokensJson"
        [
            test "JSON round trip: one object, an array of several, an empty chain" {
                let empty =
                    {
                        File = "e.cif"
                        Chain = ""
                        Sequence = ""
                        ResidueIndex = [||]
                        Tokens = [||]
                        MissingBackbone = [||]
                    }

                let one = TokensJson.toJson [| sample |]
                Expect.isTrue (one.TrimStart().StartsWith "{") "one chain: an object"
                Expect.equal (TokensJson.ofJson "x" one) [| sample |] "one"
                let many = [| sample; empty; { sample with Sequence = "" } |]
                let text = TokensJson.toJson many
                Expect.isTrue (text.TrimStart().StartsWith "[") "several: an array"
                Expect.equal (TokensJson.ofJson "x" text) many "several"
            }

            test "JSON without sequence and missing_backbone: the MASK positions are the missing backbone" {
                let json =
                    remove "sequence" |> fun j -> (Text.Json.Nodes.JsonNode.Parse j).AsObject()

                json.Remove "missing_backbone" |> ignore
                let read = TokensJson.ofJson "x" (json.ToJsonString())
                Expect.equal read.[0].Sequence "" "no sequence"
                Expect.equal read.[0].MissingBackbone [| 2 |] "from MASK"
            }

            test "bad JSON names the file and the field" {
                expectField "missing tokens" "structure_tokens" (remove "structure_tokens")
                expectField "missing residue_index" "residue_index" (remove "residue_index")
                expectField "missing chain" "chain" (remove "chain")
                expectField "token 5000" "structure_tokens[1]" (replace "structure_tokens" "[1, 5000, 4096, 3]")
                expectField "negative token" "structure_tokens[0]" (replace "structure_tokens" "[-1, 2, 4096, 3]")
                expectField "BOS inside" "structure_tokens[3]" (replace "structure_tokens" "[1, 2, 4096, 4098]")
                expectField "fractional token" "structure_tokens[0]" (replace "structure_tokens" "[1.5, 2, 4096, 3]")
                expectField "string token" "structure_tokens[3]" (replace "structure_tokens" "[1, 2, 4096, \"3\"]")
                expectField "sequence too short" "sequence" (replace "sequence" "\"MKT\"")
                expectField "sequence with digits" "sequence" (replace "sequence" "\"MK1X\"")
                expectField "residue_index too long" "residue_index" (replace "residue_index" "[1, 2, 3, 4, 5]")
                expectField "tokens too short" "residue_index" (replace "structure_tokens" "[1, 2, 4096]")
                expectField "missing_backbone disagrees" "missing_backbone" (replace "missing_backbone" "[1]")
                expectField "missing_backbone out of range" "missing_backbone[0]" (replace "missing_backbone" "[9]")
                expectField "file not a string" "file" (replace "file" "3")
                expectField "array element" "[1].chain" ("[" + remove "sequence" + "," + remove "chain" + "]")

                for text in [ "{\"file\": "; "not json"; "" ] do
                    try
                        TokensJson.ofJson "t.json" text |> ignore
                        failtestf "accepted %A" text
                    with :? InputException as e ->
                        Expect.equal e.Error.File "t.json" "names the file"
                        Expect.stringContains e.Message "not JSON" "says so"

                try
                    TokensJson.ofJson "t.json" "[1]" |> ignore
                    failtest "accepted [1]"
                with :? InputException as e ->
                    Expect.equal e.Error.Location (InputLocation.Field "[0]") "names the element"
            }
        ]
