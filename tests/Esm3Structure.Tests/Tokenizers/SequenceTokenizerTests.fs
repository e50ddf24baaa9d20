module Esm3Structure.Tests.Tokenizers.SequenceTokenizerTests

open Expecto
open Esm3Structure.Tests
open FsCheck
open FsCheck.FSharp
open Esm3Structure
open Esm3Structure.Tokenizers

[<Tests>]
let tests =
    testList
        "Tokenizers/SequenceTokenizer"
        [
            test "ESM's ids: specials, amino acids, chain break, mask" {
                Expect.equal SequenceTokenizer.vocabulary.Length 33 "33 tokens"
                Expect.equal (SequenceTokenizer.tokenId "<cls>") 0L "BOS"
                Expect.equal (SequenceTokenizer.tokenId "<eos>") 2L "EOS"
                Expect.equal (SequenceTokenizer.tokenId "L") 4L "L"
                Expect.equal (SequenceTokenizer.tokenId "C") 23L "C"
                Expect.equal (SequenceTokenizer.tokenId "X") 24L "X"
                Expect.equal (SequenceTokenizer.tokenId "O") 28L "O"
                Expect.equal (SequenceTokenizer.tokenId "|") 31L "chain break"
                Expect.equal (SequenceTokenizer.tokenId "<mask>") 32L "mask"
                Expect.equal (SequenceTokenizer.tokenId "J") SequenceTokenizer.Unk "unknown"
            }

            test "encode wraps in <cls> … <eos>, _ is <mask>, specials match whole" {
                Expect.equal (SequenceTokenizer.encode true "MK_<mask>|") [| 0L; 20L; 15L; 32L; 32L; 31L; 2L |] "ids"
                Expect.equal (SequenceTokenizer.decode [| 0L; 20L; 15L; 32L; 2L |]) "MK_" "decode"
            }

            testPropertyWithConfig
                Props.baseConfig
                "round trip for every one-letter code"
                (fun (chars: NonEmptyArray<int>) ->
                    let letters = "LAGVSERTIDPKQNFYMHWCXBUZO.-|_"

                    let s =
                        chars.Get
                        |> Array.map (fun i -> letters.[abs i % letters.Length])
                        |> System.String

                    SequenceTokenizer.decode (SequenceTokenizer.encode true s) = s)

            test "an id outside the vocabulary is a named error" {
                Expect.throwsC (fun () -> SequenceTokenizer.decode [| 5L; 40L |] |> ignore) (fun e ->
                    Expect.isTrue (e :? InputException) "typed"
                    Expect.stringContains e.Message "token 1" "names the position"
                    Expect.stringContains e.Message "id 40" "names the id")
            }
        ]
