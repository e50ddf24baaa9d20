module Esm3Structure.Tests.Tokenizers.PlddtTrackTests

open Expecto
open TorchSharp
open Esm3Structure.Tokenizers
open Esm3Structure.Tests

[<Tests>]
let tests =
    testList
        "Tokenizers/PlddtTrack"
        [
            test "defaults of §8.7: average 1.0, per residue 0.0" {
                use _ = torch.NewDisposeScope()
                Expect.equal PlddtTrack.DefaultAverage 1.0 "average"
                Expect.equal PlddtTrack.DefaultPerResidue 0.0 "per residue"
                Expect.equal (PlddtTrack.defaultAverage().ToDouble()) 1.0 "average tensor"
                let p = PlddtTrack.defaultPerResidue 5L
                Expect.equal p.shape [| 5L |] "shape"
                Expect.equal (p.sum().ToDouble()) 0.0 "zeros"
            }

            test "RBF at hand-computed points: centres k/15, width 1/16" {
                use _ = torch.NewDisposeScope()

                let v =
                    (torch.tensor ([| 0.0; 0.5; 1.0; 0.2 |], dtype = torch.float64)).reshape(2L, 2L)

                let r = PlddtTrack.rbf v
                Expect.equal r.shape [| 2L; 2L; 16L |] "shape"
                let at (i: int64) (j: int64) (k: int64) = r.[i, j, k].ToDouble()

                let close what (a: float) b =
                    Expect.floatClose { absolute = 1e-12; relative = 1e-12 } a b what

                close "v=0, k=0" (at 0L 0L 0L) 1.0
                // z = (0 − 1/15) / (1/16) = −16/15
                close "v=0, k=1" (at 0L 0L 1L) (exp (-((16.0 / 15.0) ** 2.0)))
                // z = (0.5 − 7/15) · 16 = 8/15
                close "v=0.5, k=7" (at 0L 1L 7L) (exp (-((8.0 / 15.0) ** 2.0)))
                close "v=0.5, k=8" (at 0L 1L 8L) (exp (-((8.0 / 15.0) ** 2.0)))
                close "v=1, k=15" (at 1L 0L 15L) 1.0
                // z = (1 − 0) · 16 = 16
                close "v=1, k=0" (at 1L 0L 0L) (exp -256.0)
                // v = 0.2 = 3/15: centre 3 exactly; k=4: z = (1/15)·16
                close "v=0.2, k=3" (at 1L 1L 3L) 1.0
                close "v=0.2, k=4" (at 1L 1L 4L) (exp (-((16.0 / 15.0) ** 2.0)))
            }

            test "RBF keeps dtype (float32)" {
                use _ = torch.NewDisposeScope()
                let r = PlddtTrack.rbf (torch.tensor ([| 0.3f; 0.9f; 0.0f |]))
                Expect.equal r.dtype torch.float32 "dtype"
                Expect.equal r.shape [| 3L; 16L |] "shape"
            }

            test "per-residue pLDDT from coordinates: 1 where an atom has three finite coordinates" {
                use _ = torch.NewDisposeScope()
                let x = torch.zeros ([| 3L; 2L; 3L |], dtype = torch.float64)
                x.[1L, 0L, 2L] <- torch.tensor nan // residue 1: atom 1 still finite → 1
                x.[2L, 0L, 0L] <- torch.tensor infinity
                x.[2L, 1L, 1L] <- torch.tensor nan // residue 2: no finite atom → 0
                let p = PlddtTrack.perResidueFromCoordinates x
                Expect.equal p.dtype torch.float32 "float32"
                Expect.equal (p.data<float32>().ToArray()) [| 1.0f; 1.0f; 0.0f |] "flags"
            }
        ]
