module Esm3Structure.Tests.Training.TokenizerOverfitTests

open System.IO
open Expecto
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.App

/// Four corpus chains of 42–46 residues (scripts/overfit.fsx's default).
let private chains = [| "1smx_B"; "1ii7_A"; "1hyk_A"; "1j34_C" |]

/// Torch threads of the run. The trajectory of a small model memorising chains is chaotic: rounding decides whether a
/// chain settles in its fold or in a wrong one (at 1 thread the same run leaves one chain near 5–7 Å), so the test
/// fixes the thread count, and with it every bit of the run.
let private threads = 2

[<Tests>]
let tests =
    testList
        "Training/TokenizerOverfit"
        [
            test "the smoke tokenizer memorises 4 chains: two below 1 Å through its exported files" {
                use dir = new TempDir()
                let train = Corpus.readNamed Data.root.Value chains
                let preset = TokenizerTrainConfig.overfitSmoke

                let config =
                    { preset with
                        ValidChains = train.Length
                        Trainer =
                            { preset.Trainer with
                                EvalEvery = preset.Trainer.Steps
                                LogEvery = preset.Trainer.Steps
                                Progress = ProgressMode.Silent
                            }
                    }

                let before = torch.get_num_threads ()
                torch.set_num_threads threads

                try
                    TokenizerTraining.trainOn config torch.CPU train train dir.Path false |> ignore
                finally
                    torch.set_num_threads before

                // The exported ESM-format files, as a user would read them: tokenize, decode, compare.
                let step =
                    Path.Combine(dir.Path, "checkpoints", sprintf "step-%06d" preset.Trainer.Steps)

                use encoder =
                    StructureEncoderCheckpoint.load (Path.Combine(step, "encoder.safetensors"))

                use decoder =
                    StructureDecoderCheckpoint.load (Path.Combine(step, "decoder.safetensors"))

                let trips = train |> Array.map (RoundTrip.ofChain encoder decoder)
                let summary = RoundTrip.summarize preset.Encoder.Quantizer.Codes trips

                printfn
                    "overfit (smoke model, 4 chains, %d steps, %d threads): backbone RMSD %s Å (median %.2f), LDDT-CA median %.3f"
                    preset.Trainer.Steps
                    threads
                    (trips
                     |> Array.map (fun t -> sprintf "%.2f" t.BackboneRmsd)
                     |> String.concat ", ")
                    summary.MedianBackboneRmsd
                    summary.MedianLddtCa

                // Untrained, the decoding is 8–15 Å off; wrong labels, heads or frame composition stop the descent
                // well above 1 Å for every chain. Which chains settle in a wrong fold is chaotic, and the fixed thread
                // count does not pin it across machines: the same commit gave 0.45, 0.74, 0.38, 0.78 Å on one day
                // and 7.30, 0.91, 0.50, 6.09 Å on another. So the test asks what a working pipeline always shows:
                // two of the four chains memorised below 1 Å.
                let best = trips |> Array.sortBy (fun t -> t.BackboneRmsd) |> Array.truncate 2

                for t in best do
                    Expect.isLessThan t.BackboneRmsd 1.0 "backbone RMSD of the two best-memorised chains"
                    Expect.isGreaterThan t.LddtCa 0.85 "LDDT-CA of the two best-memorised chains"
            }
        ]
