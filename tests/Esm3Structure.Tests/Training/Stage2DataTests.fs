module Esm3Structure.Tests.Training.Stage2DataTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

let private chains =
    lazy
        (Data.smallNames.Value
         |> Array.truncate 4
         |> Array.map (fun n -> StructureFile.read (Data.small n) None))

[<Tests>]
let tests =
    testList
        "Training/Stage2Data"
        [
            test "examples: backbone-only files keep slots 0–3 only; batches wrap tokens in BOS/EOS and pad" {
                use _ = torch.NewDisposeScope()
                let chain = chains.Value.[0]
                let full = Stage2Data.ofChain true chain
                let bbOnly = Stage2Data.ofChain false chain
                let l = full.Length
                Expect.isTrue (full.Atom14Mask |> Array.exists id) "atoms"

                for i in 0 .. l - 1 do
                    for k in 0..13 do
                        Expect.equal full.Atom14Mask.[i * 14 + k] chain.Atom14Mask.[i, k] "full: the file's atoms"
                        Expect.equal bbOnly.Atom14Mask.[i * 14 + k] (chain.Atom14Mask.[i, k] && k < 4) "backbone only"

                let a = Stage2Data.crop 3 5 full
                let b = Stage2Data.crop 10 3 full
                let ta = [| 1L; 2L; 3L; 4L; 5L |]
                let tb = [| 6L; 7L; 8L |]
                let batch = Stage2Data.batch [| a; b |] [| ta; tb |]

                Expect.sequenceEqual
                    (batch.Tokens.data<int64>().ToArray())
                    [|
                        StructureTokens.Bos
                        1L
                        2L
                        3L
                        4L
                        5L
                        StructureTokens.Eos
                        StructureTokens.Bos
                        6L
                        7L
                        8L
                        StructureTokens.Eos
                        StructureTokens.Pad
                        StructureTokens.Pad
                    |]
                    "token rows"

                let seqIn = batch.SequenceInput.data<int64>().ToArray()
                Expect.equal seqIn.[0] -1L "BOS has no residue"
                Expect.equal seqIn.[1] full.Restypes.[3] "residue 3"
                Expect.sequenceEqual seqIn.[11..13] [| -1L; -1L; -1L |] "EOS and PAD have no residue"
                Expect.sequenceEqual batch.Atom14.shape [| 2L; 5L; 14L; 3L |] "atom14"
                Expect.isFalse (batch.Atom14Mask.[1L, 4L].any().ToBoolean()) "no atoms in padding"

                Expect.throwsT<ArgumentException>
                    (fun () -> Stage2Data.batch [| a |] [| tb |] |> ignore)
                    "token count must match"
            }
        ]
