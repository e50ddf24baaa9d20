module Esm3Structure.Tests.Training.CausalLmTrainingTests

open Expecto
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Training
open Esm3Structure.Tests

[<Tests>]
let tests =
    testList
        "Training/CausalLm"
        [
            test "evaluation windows cover every target exactly once" {
                let encoded = CausalLmTraining.encodeAll [ "MKTAYIAK"; "GG" ]
                let windows = CausalLmTraining.evaluationWindows 3L encoded
                let targets = windows |> Array.collect snd |> Array.filter (fun t -> t <> -100L)
                Expect.equal targets (encoded |> Array.collect (fun ids -> ids.[1..])) "targets in order"
            }

            test "unigram perplexity of a one-token corpus is near 1, of uniform usage near the alphabet size" {
                let lp =
                    CausalLmTraining.unigramLogProbs (CausalLmTraining.encodeAll [ String.replicate 5000 "A" ])

                Expect.isLessThan
                    (CausalLmTraining.unigramPerplexity lp (CausalLmTraining.encodeAll [ String.replicate 1000 "A" ]))
                    1.05
                    "one token"

                let letters = "LAGVSERTIDPKQNFYMHWC"
                let uniform = CausalLmTraining.encodeAll [ String.replicate 500 letters ]

                let p =
                    CausalLmTraining.unigramPerplexity
                        (CausalLmTraining.unigramLogProbs uniform)
                        (CausalLmTraining.encodeAll [ String.replicate 50 letters ])

                Expect.isTrue (abs (p - 20.0) < 0.5) (sprintf "≈ 20, got %f" p)
            }

            test "a short run on real sequences ends below the unigram baseline" {
                let data = Data.root.Value
                let train = Corpus.sequences data "train" |> Array.map snd
                let valid = Corpus.sequences data "valid" |> Array.map snd |> Array.truncate 30

                let config =
                    { CausalLmTrainConfig.Default with
                        Model =
                            { CausalLmConfig.Small with
                                DModel = 64L
                                Layers = 2
                                Context = 64L
                            }
                        Steps = 150
                        EvalEvery = 150
                        LearningRate = 4e-3
                    }

                let report = CausalLmTraining.train config torch.CPU train valid ignore
                Expect.isLessThan report.ValidPerplexity report.UnigramPerplexity "model beats the unigram baseline"
            }
        ]
