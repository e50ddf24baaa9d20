module Esm3Structure.Tests.Tokenizers.StructureTokensTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

/// Runs `f`, expecting an `InputException` whose location is `location`.
let private expectAt (location: InputLocation) (f: unit -> unit) =
    match InputError.catch f with
    | Ok() -> failtestf "expected an InputException at %O" location
    | Error e -> Expect.equal e.Location location (sprintf "location of: %s" e.Message)

let private codes =
    Gen.choose (0, 4095) |> Gen.map int64 |> Gen.arrayOf |> Arb.fromGen

[<Tests>]
let tests =
    testList
        "Tokenizers/StructureTokens"
        [
            test "ids are ESM's: codes 0…4095, MASK 4096, EOS 4097, BOS 4098, PAD 4099, CHAINBREAK 4100" {
                Expect.equal
                    [
                        StructureTokens.Mask
                        StructureTokens.Eos
                        StructureTokens.Bos
                        StructureTokens.Pad
                        StructureTokens.ChainBreak
                    ]
                    [ 4096L; 4097L; 4098L; 4099L; 4100L ]
                    "specials"

                Expect.equal StructureTokens.VocabularySize 4101L "vocabulary"
                Expect.isTrue (StructureTokens.isCode 0L && StructureTokens.isCode 4095L) "codes"
                Expect.isFalse (StructureTokens.isCode 4096L || StructureTokens.isCode -1L) "not codes"
                Expect.isTrue (StructureTokens.isSpecial 4100L && not (StructureTokens.isSpecial 4101L)) "specials"
                Expect.equal (StructureTokens.name 4098L) "BOS" "name"
            }

            test "wrapRows is wrap for every row of a tensor" {
                use _ = torch.NewDisposeScope()
                let rows = [| [| 5L; 4096L; 17L |]; [| 0L; 1L; 4095L |] |]

                let wrapped =
                    StructureTokens.wrapRows (torch.tensor(Array.concat rows).reshape(2L, 3L))

                Expect.sequenceEqual wrapped.shape [| 2L; 5L |] "shape [B, L + 2]"

                for r in 0..1 do
                    Expect.sequenceEqual
                        (wrapped.[int64 r].data<int64>().ToArray())
                        (StructureTokens.wrap "test" rows.[r])
                        (sprintf "row %d" r)
            }

            testPropertyWithConfig
                { Props.baseConfig with maxTest = 100 }
                "wrap puts BOS first and EOS last; unwrap inverts it"
            <| Prop.forAll codes (fun tokens ->
                let wrapped = StructureTokens.wrap "test" tokens
                Expect.equal wrapped.Length (tokens.Length + 2) "length"
                Expect.equal wrapped.[0] StructureTokens.Bos "BOS"
                Expect.equal wrapped.[wrapped.Length - 1] StructureTokens.Eos "EOS"
                Expect.equal (StructureTokens.unwrap "test" wrapped) tokens "round trip")

            test "wrap names the position of an out-of-range, negative or misplaced id" {
                expectAt (InputLocation.Field "position 2") (fun () ->
                    StructureTokens.wrap "t" [| 1L; 2L; 4101L; 3L |] |> ignore)

                expectAt (InputLocation.Field "position 0") (fun () -> StructureTokens.wrap "t" [| -1L; 2L |] |> ignore)

                expectAt (InputLocation.Field "position 1") (fun () ->
                    StructureTokens.wrap "t" [| 7L; StructureTokens.Bos |] |> ignore)

                // MASK, PAD and CHAINBREAK may appear inside.
                StructureTokens.wrap "t" [| StructureTokens.Mask; StructureTokens.ChainBreak; StructureTokens.Pad |]
                |> ignore
            }

            test "checkWrapped names a missing BOS, a missing EOS and a bad interior id" {
                expectAt (InputLocation.Field "position 0") (fun () ->
                    StructureTokens.checkWrapped "t" [| 5L; 6L; StructureTokens.Eos |])

                expectAt (InputLocation.Field "position 2") (fun () ->
                    StructureTokens.checkWrapped "t" [| StructureTokens.Bos; 6L; 7L |])

                expectAt (InputLocation.Field "position 1") (fun () ->
                    StructureTokens.checkWrapped "t" [| StructureTokens.Bos; 9000L; StructureTokens.Eos |])

                expectAt InputLocation.Whole (fun () -> StructureTokens.checkWrapped "t" [| StructureTokens.Bos |])
            }

            test "checkBatch accepts PAD after EOS and names the row and position of a problem" {
                use _ = torch.NewDisposeScope()
                let b, e, p = StructureTokens.Bos, StructureTokens.Eos, StructureTokens.Pad

                let batch (rows: int64[][]) =
                    torch.tensor (
                        Array.concat rows,
                        System.ReadOnlySpan<int64> [| int64 rows.Length; int64 rows.[0].Length |]
                    )

                StructureTokens.checkBatch "t" (batch [| [| b; 1L; 2L; e |]; [| b; 3L; e; p |] |])

                expectAt (InputLocation.Field "row 1, position 2") (fun () ->
                    StructureTokens.checkBatch "t" (batch [| [| b; 1L; 2L; e |]; [| b; 3L; 4L; p |] |]))

                expectAt (InputLocation.Field "row 0, position 1") (fun () ->
                    StructureTokens.checkBatch "t" (batch [| [| b; -5L; 2L; e |] |]))

                expectAt (InputLocation.Field "row 0, position 0") (fun () ->
                    StructureTokens.checkBatch "t" (batch [| [| 0L; 1L; 2L; e |] |]))
            }
        ]
