module Esm3Structure.Tests.Tokenizers.Ss8TokenizerTests

open Expecto
open Esm3Structure.Tests
open FsCheck
open FsCheck.FSharp
open Esm3Structure
open Esm3Structure.Tokenizers

let private config = { Props.baseConfig with maxTest = 100 }

/// Strings over the eight classes and the mask `_`.
let private ss8Strings =
    Gen.elements ("GHITEBSC_" |> Seq.toList)
    |> Gen.arrayOf
    |> Gen.map System.String
    |> Arb.fromGen

let private idArrays =
    Gen.choose (0, 10) |> Gen.map int64 |> Gen.arrayOf |> Arb.fromGen

[<Tests>]
let tests =
    testList
        "Tokenizers/Ss8Tokenizer"
        [
            test "ESM's ids (ESM3-REFERENCE §8.3, §8.7): specials 0–2, G H I T E B S C = 3…10, BOS/EOS/PAD/MASK/break 0" {
                Expect.equal
                    Ss8Tokenizer.vocabulary
                    [| "<pad>"; "<motif>"; "<unk>"; "G"; "H"; "I"; "T"; "E"; "B"; "S"; "C" |]
                    "vocabulary"

                Expect.equal
                    [
                        Ss8Tokenizer.Bos
                        Ss8Tokenizer.Eos
                        Ss8Tokenizer.Pad
                        Ss8Tokenizer.Mask
                        Ss8Tokenizer.ChainBreak
                    ]
                    [ 0L; 0L; 0L; 0L; 0L ]
                    "specials"

                Expect.equal Ss8Tokenizer.Unk 2L "unk"
                Expect.equal Ss8Tokenizer.VocabularySize 11L "width"
            }

            test "encode wraps in 0 … 0, `_` is the mask, unknown letters are <unk>" {
                Expect.equal
                    (Ss8Tokenizer.encode true "GHITEBSC_")
                    [| 0L; 3L; 4L; 5L; 6L; 7L; 8L; 9L; 10L; 0L; 0L |]
                    "ids"

                Expect.equal (Ss8Tokenizer.encode false "Hx-<motif>h") [| 4L; 2L; 2L; 1L; 2L |] "unknowns"
                Expect.equal (Ss8Tokenizer.encode true "") [| 0L; 0L |] "empty"
            }

            testPropertyWithConfig config "string → ids → string round trip" (fun () ->
                Prop.forAll ss8Strings (fun s -> Ss8Tokenizer.decode true (Ss8Tokenizer.encode true s) = s))

            testPropertyWithConfig config "ids → string → ids round trip (all 11 ids)" (fun () ->
                Prop.forAll idArrays (fun ids -> Ss8Tokenizer.encode false (Ss8Tokenizer.decode false ids) = ids))

            test "3-class map: G H I → H, E B → E, T S C → C" {
                Expect.equal (Ss8Tokenizer.threeClassString "GHITEBSC_") "HHHCEECC_" "string"
                // ss3 ids: <pad> <motif> <unk> H E C
                Expect.equal
                    (Ss8Tokenizer.toThreeClassIds [| 0L; 1L; 2L; 3L; 4L; 5L; 6L; 7L; 8L; 9L; 10L |])
                    [| 0L; 1L; 2L; 3L; 3L; 3L; 5L; 4L; 4L; 5L; 5L |]
                    "ids"
            }

            test "bad ids and missing BOS/EOS are named errors" {
                match InputError.catch (fun () -> Ss8Tokenizer.decode false [| 3L; 11L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "token 1") "position"

                match InputError.catch (fun () -> Ss8Tokenizer.decode true [| 4L; 4L; 0L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "token 0") "BOS position"
            }
        ]
