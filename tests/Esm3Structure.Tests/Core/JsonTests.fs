module Esm3Structure.Tests.Core.JsonTests

open System
open System.IO
open System.Text
open System.Text.Json
open Expecto
open Esm3Structure.Tests
open Esm3Structure

type Mode =
    | Fast = 0
    | Careful = 1

type Inner = { Depth: int; Label: string }

type Settings =
    {
        Name: string
        Steps: int
        Seed: int64
        Rate: float
        Missing: float
        Flag: bool
        Mode: Mode
        Inner: Inner
        Choice: string option
        Nothing: string
    }

let private settings =
    {
        Name = "run \"a\""
        Steps = 300
        Seed = 9_007_199_254_740_993L
        Rate = 0.1
        Missing = nan
        Flag = true
        Mode = Mode.Careful
        Inner = { Depth = 2; Label = "x" }
        Choice = Some "b"
        Nothing = null
    }

[<Tests>]
let tests =
    testList
        "Core/Json"
        [
            test "parseDocument reads JSON with comments; text that is not JSON names the file and the 1-based line" {
                use doc = Json.parseDocument "a.json" "// header\n{ \"k\": [1, 2] /* inline */ }"
                Expect.equal (doc.RootElement.GetProperty("k").GetArrayLength()) 2 "parsed, comments skipped"

                let e =
                    (raises<InputException> "input" (fun () ->
                        (Json.parseDocument "b.json" "{\n  \"k\": 1,\n  \"j\" 2\n}").Dispose() |> ignore))
                        .Error

                Expect.equal e.File "b.json" "file"
                Expect.equal e.Location (InputLocation.Line 3) "the line of the missing ':'"
                Expect.stringStarts e.Message "not JSON: " "message"
                Expect.isFalse (e.Message.Contains '\n') "one line"

                let empty =
                    (raises<InputException> "input" (fun () -> (Json.parseDocument "c.json" "").Dispose() |> ignore))
                        .Error

                Expect.stringStarts empty.Message "not JSON: " "empty text"
            }

            test "kindName names every kind of value" {
                use doc = Json.parseDocument "kinds" """[{}, [], "s", 1.5, true, false, null]"""

                let names = [ for e in doc.RootElement.EnumerateArray() -> Json.kindName e ]

                Expect.equal
                    names
                    [
                        "an object"
                        "an array"
                        "a string"
                        "a number"
                        "a boolean"
                        "a boolean"
                        "null"
                    ]
                    "names"

                Expect.equal (Json.kindName (JsonElement())) "nothing" "an undefined element"
            }

            test
                "ofRecord: leading fields, then the record's fields as JSON values, in order, read back by parseDocument" {
                let text = Json.ofRecord [ "Format", box "esm3"; "Version", box 2 ] settings
                use doc = Json.parseDocument "config.json" text
                let root = doc.RootElement

                Expect.equal
                    [ for p in root.EnumerateObject() -> p.Name ]
                    [
                        "Format"
                        "Version"
                        "Name"
                        "Steps"
                        "Seed"
                        "Rate"
                        "Missing"
                        "Flag"
                        "Mode"
                        "Inner"
                        "Choice"
                        "Nothing"
                    ]
                    "field order"

                Expect.equal (root.GetProperty("Format").GetString()) "esm3" "leading string"
                Expect.equal (root.GetProperty("Version").GetInt32()) 2 "leading int"
                Expect.equal (root.GetProperty("Name").GetString()) "run \"a\"" "escaped string"
                Expect.equal (root.GetProperty("Steps").GetInt32()) 300 "int"
                // 2^53 + 1 is not a double: written as an integer, it survives.
                Expect.equal (root.GetProperty("Seed").GetInt64()) 9_007_199_254_740_993L "int64, exactly"
                Expect.equal (root.GetProperty("Rate").GetDouble()) 0.1 "float round trip"
                Expect.equal (root.GetProperty("Missing").GetString()) "NaN" "NaN as text"
                Expect.isTrue (root.GetProperty("Flag").GetBoolean()) "bool"
                Expect.equal (root.GetProperty("Mode").GetString()) "Careful" "enum by name"
                let inner = root.GetProperty "Inner"
                Expect.equal (Json.kindName inner) "an object" "nested record"
                Expect.equal (inner.GetProperty("Depth").GetInt32()) 2 "nested field"
                Expect.equal (root.GetProperty("Choice").GetString()) "Some \"b\"" "option: its %A text"
                Expect.equal (root.GetProperty("Nothing").ValueKind) JsonValueKind.Null "null"
                Expect.stringContains text "\n  \"Steps\": 300" "indented"
            }

            test "ofRecordWith writes unions and options through the given text; a non-record value adds no field" {
                let text (v: obj) =
                    match v with
                    | :? option<string> as o -> Some(defaultArg o "none")
                    | _ -> None

                use doc = Json.parseDocument "x" (Json.ofRecordWith text [] settings)
                Expect.equal (doc.RootElement.GetProperty("Choice").GetString()) "b" "the caller's text"
                use only = Json.parseDocument "y" (Json.ofRecord [ "a", box 1 ] (box 5))
                Expect.equal [ for p in only.RootElement.EnumerateObject() -> p.Name ] [ "a" ] "fields only"
            }

            test "writeNumber and writeNumberObject: finite values as numbers, NaN and ±∞ as their text" {
                use buffer = new MemoryStream()

                do
                    use w = new Utf8JsonWriter(buffer)
                    w.WriteStartObject()
                    Json.writeNumber w "a" 1.25
                    Json.writeNumber w "b" nan
                    Json.writeNumberObject w "c" [| "x", infinity; "y", -infinity; "z", -0.5 |]
                    w.WriteEndObject()

                let text = Encoding.UTF8.GetString(buffer.ToArray())

                Expect.equal
                    text
                    """{"a":1.25,"b":"NaN","c":{"x":"Infinity","y":"-Infinity","z":-0.5}}"""
                    "the exact text"
            }
        ]
