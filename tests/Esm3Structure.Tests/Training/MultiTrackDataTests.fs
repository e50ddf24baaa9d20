module Esm3Structure.Tests.Training.MultiTrackDataTests

open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Training
open Esm3Structure.Tests

let private tiny = MultiTrackFixtures.tinyTraining
let private chains = MultiTrackFixtures.chains
let private examples = MultiTrackFixtures.examples

[<Tests>]
let tests =
    testList
        "Training/MultiTrackData"
        [
            test "examples come from chains and providers; a wrong track is an InputException naming it" {
                let e = examples.Value.[0]
                let c = chains.Value.[0]
                let l = ProteinChain.length c
                Expect.equal e.Length l "length"
                Expect.equal e.Sequence (SequenceTokenizer.encode false c.Sequence) "sequence ids"
                Expect.isTrue (e.Structure |> Array.forall (fun t -> t < 32L || t = StructureTokens.Mask)) "codes"
                Expect.equal e.Function.Length (8 * l) "function [L, 8]"

                Expect.equal
                    e.Coordinates.[3..5]
                    [| c.Atom37.[0, 1, 0]; c.Atom37.[0, 1, 1]; c.Atom37.[0, 1, 2] |]
                    "CA of residue 0"

                let fails (bad: MultiTrackExample) (field: string) =
                    let ex =
                        raises<InputException> "input" (fun () -> MultiTrackData.check bad |> ignore)

                    Expect.equal ex.Error.File e.Name "names the example"
                    Expect.equal ex.Error.Location (InputLocation.Field field) "names the track"

                fails { e with Ss8 = Array.create (l - 1) 0L } "ss8"
                fails { e with Sasa = Array.create l 19L } "sasa"

                fails
                    { e with
                        Structure = Array.create l 4101L
                    }
                    "structure"

                fails
                    { e with
                        Function = Array.create (8 * l) -1L
                    }
                    "function"

                fails
                    { e with
                        ResidueAnnotations = Array.create l 0L
                    }
                    "residue_annotations"

                fails { e with Plddt = Array.create l 1.5f } "plddt"
                fails { e with Coordinates = [||] } "coordinates"
            }

            test "batches wrap every track with ESM's BOS/EOS/PAD ids and separate the padding" {
                use _ = torch.NewDisposeScope()
                let a = MultiTrackData.crop 0 5 examples.Value.[0]
                let b = MultiTrackData.crop 2 3 examples.Value.[1]
                let batch = MultiTrackData.batch [| a; b |]
                let t = batch.Tracks
                Expect.equal t.Sequence.shape [| 2L; 7L |] "L = 5 + 2"

                Expect.equal
                    (t.Sequence.[1L].data<int64>().ToArray())
                    (Array.concat [ [| 0L |]; b.Sequence; [| 2L; 1L; 1L |] ])
                    "sequence row"

                Expect.equal
                    (t.Structure.[1L].data<int64>().ToArray())
                    (Array.concat [ [| 4098L |]; b.Structure; [| 4097L; 4099L; 4099L |] ])
                    "structure row"

                Expect.equal (t.SequenceId.[1L].data<int64>().ToArray()) [| 0L; 0L; 0L; 0L; 0L; 1L; 1L |] "sequence id"

                Expect.equal
                    (batch.Residues.[1L].data<bool>().ToArray())
                    [| false; true; true; true; false; false; false |]
                    "residues"

                Expect.isTrue (t.Coordinates.[1L, 0L].isinf().all().ToBoolean()) "BOS: +∞ coordinates"
                Expect.equal t.Function.shape [| 2L; 7L; 8L |] "function"
                Expect.equal t.ResidueAnnotations.shape [| 2L; 7L; 16L |] "residue"
                Expect.equal t.AveragePlddt.shape [| 2L; 1L |] "average pLDDT"
                MultiTrackInput.checkShapes t
            }

            test "batches and masks of a step are pure functions of (seed, step)" {
                use _ = torch.NewDisposeScope()
                use task = new MultiTrackTraining.Task(tiny, torch.CPU, examples.Value, [||])
                let a = task.Batch 7
                let b = task.Batch 7
                let c = task.Batch 8

                let same (x: torch.Tensor) (y: torch.Tensor) =
                    x.shape = y.shape && x.eq(y).all().ToBoolean()

                Expect.isTrue (same a.Inputs.Sequence b.Inputs.Sequence) "same step"

                Expect.isTrue
                    (same (a.Inputs.Coordinates.nan_to_num ()) (b.Inputs.Coordinates.nan_to_num ()))
                    "same noise"

                Expect.isFalse (same a.Inputs.Sequence c.Inputs.Sequence) "next step differs"
            }

            test
                "sample draws crops of at most the crop length, each a window of one example, as a function of (seed, step)" {
                let all = examples.Value
                let draw step = MultiTrackData.sample 3 step 6 20 all
                let a, b, c = draw 4, draw 4, draw 5
                Expect.equal a.Length 6 "batch size"
                Expect.equal (a |> Array.map _.Sequence) (b |> Array.map _.Sequence) "same (seed, step), same crops"
                Expect.notEqual (a |> Array.map _.Sequence) (c |> Array.map _.Sequence) "the next step draws others"

                for crop in Array.append a c do
                    Expect.isLessThanOrEqual crop.Length 20 "crop length"
                    let source = all |> Array.find (fun e -> e.Name = crop.Name)

                    let windows =
                        [ 0 .. source.Length - crop.Length ]
                        |> List.filter (fun start ->
                            (MultiTrackData.crop start crop.Length source).Sequence = crop.Sequence)

                    Expect.isNonEmpty windows (sprintf "%s: a window of its example" crop.Name)
            }
        ]
