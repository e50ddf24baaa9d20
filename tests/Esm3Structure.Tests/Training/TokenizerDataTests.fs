module Esm3Structure.Tests.Training.TokenizerDataTests

open System
open System.IO
open System.Text.Json
open Expecto
open Esm3Structure
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

[<Tests>]
let tests =
    testList
        "Training/TokenizerData"
        [
            test "the sampler is a pure function of (seed, step); crops are contiguous and at most the crop length" {
                use _ = torch.NewDisposeScope()
                let train, _ = TokenizerFixtures.trainingExamples ()
                let a = TokenizerData.sample 5 3 4 30 train
                let b = TokenizerData.sample 5 3 4 30 train
                let c = TokenizerData.sample 5 4 4 30 train
                Expect.equal a b "same step, same crops"
                Expect.notEqual a c "next step, other crops"

                for e in a do
                    Expect.isLessThanOrEqual e.Length 30 "crop length"
                    let source = train |> Array.find (fun t -> t.Name = e.Name)
                    let i0 = Array.IndexOf(source.ResidueIndex, e.ResidueIndex.[0])
                    Expect.sequenceEqual e.ResidueIndex source.ResidueIndex.[i0 .. i0 + e.Length - 1] "contiguous"

                let batch = TokenizerData.batch a
                let l = a |> Array.map (fun e -> e.Length) |> Array.max
                Expect.equal batch.Backbone.shape [| 4L; int64 l; 3L; 3L |] "backbone shape"

                Expect.equal
                    (batch.Padding.logical_not().sum().ToInt64())
                    (a |> Array.sumBy (fun e -> int64 e.Length))
                    "real rows"
            }

            test "pair subsampling: distinct ascending positions from (seed, step); all positions give the full losses" {
                let a = TokenizerData.pairPositions 0 7 16 100
                Expect.equal a.Length 16 "count"
                Expect.equal (Array.distinct a).Length 16 "distinct"
                Expect.sequenceEqual a (Array.sort a) "ascending"
                Expect.isTrue (a |> Array.forall (fun i -> i >= 0L && i < 100L)) "in range"
                Expect.sequenceEqual (TokenizerData.pairPositions 0 7 16 100) a "same (seed, step), same draw"
                Expect.notEqual (TokenizerData.pairPositions 0 8 16 100) a "another step, another draw"
                Expect.sequenceEqual (TokenizerData.pairPositions 0 7 0 5) [| 0L .. 4L |] "0 = all"

                use _ = torch.NewDisposeScope()
                let train, _ = TokenizerFixtures.trainingExamples ()

                use model =
                    new TokenizerModel(TokenizerFixtures.tinyTrainConfig, new torch.Generator(1UL))

                let b = TokenizerData.batch (Array.truncate 2 train)
                let encoding, out = model.Run b
                let l = b.Mask.shape.[1]

                let _, full =
                    TokenizerTraining.losses TokenizerFixtures.tinyTrainConfig.Weights encoding out b

                let _, all =
                    TokenizerTraining.lossesOn
                        TokenizerFixtures.tinyTrainConfig.Weights
                        encoding
                        out
                        b
                        (torch.arange (l))

                for (name, x), (_, y) in Array.zip full all do
                    Tol.close name 0.0 y x

                let some = torch.tensor (TokenizerData.pairPositions 0 0 10 (int l))

                let _, part =
                    TokenizerTraining.lossesOn TokenizerFixtures.tinyTrainConfig.Weights encoding out b some

                let term name (terms: (string * torch.Tensor)[]) =
                    terms |> Array.find (fst >> (=) name) |> snd

                Expect.notEqual ((term "distogram" part).ToDouble()) ((term "distogram" full).ToDouble()) "a subset"
                Tol.close "commitment unchanged" 0.0 (term "commitment" part) (term "commitment" full)
            }
        ]
