module Esm3Structure.Tests.Tokenizers.SasaTokenizerTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Tests

let private config = { Props.baseConfig with maxTest = 100 }

// ESM3-REFERENCE.md §8.4, written out here (not read from the code).
let private boundaries =
    [|
        0.8
        4.0
        9.6
        16.4
        24.5
        32.9
        42.0
        51.5
        61.2
        70.9
        81.6
        93.3
        107.2
        125.4
        151.4
    |]

let private midpoints =
    [|
        0.4
        2.4
        6.8
        13.0
        20.45
        28.7
        37.45
        46.75
        56.35
        66.05
        76.25
        87.45
        100.25
        116.3
        138.4
        227.1
    |]

/// Values from −10 to 400 Å², with boundaries and their neighbours mixed in.
let private value =
    Gen.oneof
        [
            Gen.choose (-1000, 40000) |> Gen.map (fun i -> float i / 100.0)
            Gen.elements (List.ofArray boundaries)
            Gen.elements (List.ofArray boundaries) |> Gen.map (fun b -> Math.BitIncrement b)
            Gen.elements [ nan; infinity; -infinity; 0.0 ]
        ]

[<Tests>]
let tests =
    testList
        "Tokenizers/SasaTokenizer"
        [
            test "ESM's ids (§8.4, §8.7): 0 <pad> (BOS/EOS/PAD/MASK/break), 1 <motif>, 2 <unk>, bins 3…18" {
                Expect.equal
                    [
                        SasaTokenizer.Bos
                        SasaTokenizer.Eos
                        SasaTokenizer.Pad
                        SasaTokenizer.Mask
                        SasaTokenizer.ChainBreak
                    ]
                    [ 0L; 0L; 0L; 0L; 0L ]
                    "specials"

                Expect.equal (SasaTokenizer.Motif, SasaTokenizer.Unk) (1L, 2L) "motif, unk"
                Expect.equal SasaTokenizer.VocabularySize 19L "width"
                Expect.equal SasaTokenizer.boundaries boundaries "boundaries"
                Expect.equal SasaTokenizer.vocabulary.Length 19 "19 strings"

                Expect.equal
                    SasaTokenizer.vocabulary.[0..4]
                    [| "<pad>"; "<motif>"; "<unk>"; "<0-0.8>"; "<0.8-4.0>" |]
                    "first"

                Expect.equal SasaTokenizer.vocabulary.[8] "<24.5-32.9>" "middle"
                Expect.equal SasaTokenizer.vocabulary.[18] "<151.4-inf>" "last"
            }

            test "T2: a boundary value goes to the lower bin; just above goes up; ends and NaN" {
                boundaries
                |> Array.iteri (fun b v ->
                    Expect.equal (SasaTokenizer.tokenId v) (3L + int64 b) (sprintf "boundary %g" v)
                    Expect.equal (SasaTokenizer.tokenId (Math.BitIncrement v)) (4L + int64 b) (sprintf "above %g" v))

                Expect.equal (SasaTokenizer.tokenId 0.8) 3L "0.8 → bin 0"
                Expect.equal (SasaTokenizer.tokenId 0.80001) 4L "0.80001 → bin 1"
                Expect.equal (SasaTokenizer.tokenId -5.0) 3L "negative → bin 0"
                Expect.equal (SasaTokenizer.tokenId 1000.0) 18L "large → bin 15"
                Expect.equal (SasaTokenizer.tokenId infinity) 18L "+inf → bin 15"
                Expect.equal (SasaTokenizer.tokenId nan) 0L "NaN → mask"
                Expect.equal (SasaTokenizer.encode true [| 10.0; nan |]) [| 0L; 6L; 0L; 0L |] "wrapped"
            }

            testPropertyWithConfig config "T2: the bin is non-decreasing in the value" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.zip value value)) (fun (a, b) ->
                    (Double.IsNaN a || Double.IsNaN b)
                    || (let lo, hi = min a b, max a b in SasaTokenizer.bin lo <= SasaTokenizer.bin hi)))

            test "T2: midpoints of §8.4, specials decode to NaN" {
                Expect.equal SasaTokenizer.midpoints.Length 16 "16"

                Array.iter2
                    (fun (a: float) b -> Expect.floatClose Accuracy.veryHigh a b "midpoint")
                    SasaTokenizer.midpoints
                    midpoints

                let decoded = SasaTokenizer.decode false [| 0L; 1L; 2L; 3L; 18L |]
                Expect.isTrue (decoded.[0..2] |> Array.forall Double.IsNaN) "specials → NaN"
                Expect.floatClose Accuracy.veryHigh decoded.[3] 0.4 "bin 0"
                Expect.floatClose Accuracy.veryHigh decoded.[4] 227.1 "bin 15"
            }

            testPropertyWithConfig config "values → ids → midpoints → the same ids" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.arrayOf value)) (fun values ->
                    let ids = SasaTokenizer.encode true values
                    let back = SasaTokenizer.decode true ids
                    SasaTokenizer.encode true back = ids))

            testPropertyWithConfig config "ids → values → ids round trip for bins and the mask" (fun () ->
                let ids =
                    Gen.oneof [ Gen.constant 0L; Gen.choose (3, 18) |> Gen.map int64 ]
                    |> Gen.arrayOf
                    |> Arb.fromGen

                Prop.forAll ids (fun ids -> SasaTokenizer.encode false (SasaTokenizer.decode false ids) = ids))

            testPropertyWithConfig config "encodeTensor matches tokenId (float64)" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.arrayOf value)) (fun values ->
                    use _ = torch.NewDisposeScope()
                    let t = torch.tensor (values, dtype = torch.float64)
                    let ids = SasaTokenizer.encodeTensor t

                    ids.dtype = torch.int64
                    && ids.data<int64>().ToArray() = Array.map SasaTokenizer.tokenId values))

            test "encodeTensor keeps shape; a float32 boundary goes to the lower bin" {
                use _ = torch.NewDisposeScope()

                let t =
                    torch.tensor ([| 0.8f; 151.4f; Single.NaN; 5.0f; 200.0f; -1.0f |], dtype = torch.float32)

                let ids = SasaTokenizer.encodeTensor (t.reshape (2L, 3L))
                Expect.equal ids.shape [| 2L; 3L |] "shape"
                Expect.equal (ids.flatten().data<int64>().ToArray()) [| 3L; 17L; 0L; 5L; 18L; 3L |] "ids"

                Expect.throwsT<ArgumentException>
                    (fun () -> SasaTokenizer.encodeTensor (torch.tensor [| 1L; 2L |]) |> ignore)
                    "integer values are rejected"
            }

            test "decodeStrings and errors" {
                Expect.equal
                    (SasaTokenizer.decodeStrings true [| 0L; 3L; 18L; 0L |])
                    [| "<0-0.8>"; "<151.4-inf>" |]
                    "strings"

                match InputError.catch (fun () -> SasaTokenizer.decode false [| 3L; 19L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "token 1") "position"

                match InputError.catch (fun () -> SasaTokenizer.decode true [| 0L; 5L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "token 1") "EOS position"
            }
        ]
