module Esm3Structure.Tests.Training.PairHeadProbeTests

open Expecto
open TorchSharp
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests

/// The first 40 residues of every small chain (9 chains, all at least 40 long) as one batch.
let private batch () =
    Data.smallNames.Value
    |> Array.map (fun n ->
        StructureFile.read (Data.small n) None
        |> TokenizerData.ofChain
        |> TokenizerData.crop 0 40)
    |> TokenizerData.batch

[<Tests>]
let tests =
    testList
        "Training/PairHeadProbe"
        [
            test "the decoder's pair head learns the binned-direction labels from the true frames" {
                use _ = torch.NewDisposeScope()

                let config =
                    { PairHeadProbeConfig.small with
                        DistogramWeight = 0.0
                        Steps = 400
                        LogEvery = 400
                    }

                let b = batch ()
                let curve = PairHeadProbe.run config torch.CPU b
                let first, last = curve.[0], curve.[curve.Length - 1]
                // The best any predictor blind to the pair can do: the entropy of the labels' marginal per channel.
                let labels = StructureLosses.directionLabels (b.Backbone.nan_to_num (0.0, 0.0, 0.0)) // [B, L, L, 6]
                let real = b.Mask.logical_and (b.Padding.logical_not ())
                let pairs = real.unsqueeze(-1L).logical_and(real.unsqueeze -2L) // [B, L, L]

                let marginal =
                    [ 0L .. 5L ]
                    |> List.averageBy (fun c ->
                        let counts: torch.Tensor =
                            labels.select(-1L, c).masked_select(pairs).bincount(null, 16L).to_type torch.float64

                        let p = counts / counts.sum ()
                        -(p * (p + 1e-300).log()).sum().ToDouble())

                // At initialisation the 16-way classification is at chance (ln 16 = 2.773, within the init's spread).
                Expect.floatClose
                    { absolute = 0.3; relative = 0.0 }
                    first.BinnedDirection
                    (log 16.0)
                    "step 1 near chance"
                // Labels that disagreed with the frames (wrong channel order, wrong vectors, wrong residue pairing)
                // leave nothing to learn beyond the marginal; the frames themselves let the head go well below it.
                Expect.isGreaterThan marginal 2.5 "the marginal is near chance"
                Expect.isLessThan last.BinnedDirection (marginal - 0.5) "step 400: learned from the frames"
            }
        ]
