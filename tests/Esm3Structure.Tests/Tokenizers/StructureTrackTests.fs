module Esm3Structure.Tests.Tokenizers.StructureTrackTests

open Expecto
open Esm3Structure.Tests
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Tokenizers

let private config = { Props.baseConfig with maxTest = 100 }

/// Chains of codes with the odd MASK or PAD.
let private chains =
    Gen.frequency [ 8, Gen.choose (0, 4095); 1, Gen.constant 4096; 1, Gen.constant 4099 ]
    |> Gen.map int64
    |> Gen.arrayOf
    |> Gen.nonEmptyListOf
    |> Gen.map Array.ofList
    |> Arb.fromGen

[<Tests>]
let tests =
    testList
        "Tokenizers/StructureTrack"
        [
            test "ESM's ids (§8.7): BOS 4098, EOS 4097, PAD 4099, MASK 4096, chain break 4100" {
                Expect.equal
                    (StructureTrack.encode [| 7L; 4096L; 4099L; 4100L |])
                    [| 4098L; 7L; 4096L; 4099L; 4100L; 4097L |]
                    "wrap"

                Expect.equal (StructureTrack.defaultTokens 3) [| 4098L; 4096L; 4096L; 4096L; 4097L |] "default"

                Expect.equal
                    (StructureTrack.encodeChains [| [| 1L |]; [| 2L; 3L |] |])
                    [| 4098L; 1L; 4100L; 2L; 3L; 4097L |]
                    "chains"
            }

            testPropertyWithConfig config "chains → ids → chains round trip" (fun () ->
                Prop.forAll chains (fun cs ->
                    let ids = StructureTrack.encodeChains cs

                    StructureTrack.decodeChains ids = cs
                    && StructureTrack.decode (StructureTrack.encode cs.[0]) = cs.[0]))

            test "BOS or EOS inside, or a chain break inside a chain, is a named error" {
                match InputError.catch (fun () -> StructureTrack.encode [| 1L; 4098L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "position 1") "position"

                match
                    InputError.catch (fun () -> StructureTrack.encodeChains [| [| 1L |]; [| 2L; 4100L |] |] |> ignore)
                with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "chain 1, position 1") "position"

                match InputError.catch (fun () -> StructureTrack.decode [| 4098L; 5L |] |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "position 1") "missing EOS"
            }

            test "sequence overrides (§9.1): −1 → 4096; seq BOS/PAD/EOS/break → 4098/4099/4097/4100" {
                use _ = torch.NewDisposeScope()
                // sequence ids: 0 <cls>, 1 <pad>, 2 <eos>, 31 |, others residues
                let sequence = (torch.tensor [| 0L; 5L; 31L; 6L; 2L; 1L; 7L |]).reshape(1L, 7L)
                let structure = (torch.tensor [| 7L; -1L; 8L; 9L; 10L; 11L; -1L |]).reshape(1L, 7L)
                let out = StructureTrack.applySequenceOverrides sequence structure

                Expect.equal
                    (out.flatten().data<int64>().ToArray())
                    [| 4098L; 4096L; 4100L; 9L; 4097L; 4099L; 4096L |]
                    "overrides"
            }

            testPropertyWithConfig
                config
                "T7: special sequence positions force the special whatever the structure input"
            <| fun () ->
                let case =
                    Gen.zip
                        (Gen.arrayOfLength 9 (Gen.elements [ 0L; 1L; 2L; 31L; 4L; 5L; 20L ]))
                        (Gen.arrayOfLength 9 (Gen.choose (-1, 4100) |> Gen.map int64))
                    |> Arb.fromGen

                Prop.forAll case (fun (sq, st) ->
                    use _ = torch.NewDisposeScope()
                    let out = StructureTrack.applySequenceOverrides (torch.tensor sq) (torch.tensor st)
                    let o = out.data<int64>().ToArray()

                    Array.zip3 sq st o
                    |> Array.forall (fun (q, s, r) ->
                        match q with
                        | 0L -> r = 4098L
                        | 1L -> r = 4099L
                        | 2L -> r = 4097L
                        | 31L -> r = 4100L
                        | _ -> r = (if s = -1L then 4096L else s)))
        ]
