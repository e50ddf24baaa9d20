module Esm3Structure.Tests.Training.Stage2TrainConfigTests

open System.Text.Json
open Expecto
open Esm3Structure
open Esm3Structure.Training

[<Tests>]
let tests =
    testList
        "Training/Stage2TrainConfig"
        [
            test "presets are valid once an encoder is named; the config serialises with its stage" {
                Expect.isEmpty
                    (Validation.errors
                     <| Stage2TrainConfig.validate
                         { Stage2TrainConfig.small with
                             Encoder = "e"
                         })
                    "small"

                Expect.isEmpty
                    (Validation.errors
                     <| Stage2TrainConfig.validate
                         { Stage2TrainConfig.smoke with
                             Encoder = "e"
                         })
                    "smoke"

                let errors = Validation.errors (Stage2TrainConfig.validate Stage2TrainConfig.small)
                Expect.exists errors (fun e -> e.StartsWith "Encoder") "no encoder named"
                Expect.equal Stage2TrainConfig.small.Decoder.Layers 6 "6 blocks"
                Expect.equal Stage2TrainConfig.small.Decoder.DModel 128L "width 128"
                Expect.equal Stage2TrainConfig.small.Trainer.Steps 2000 "2k steps"

                let json =
                    JsonDocument
                        .Parse(
                            Stage2TrainConfig.toJson
                                { Stage2TrainConfig.small with
                                    Encoder = "enc"
                                }
                        )
                        .RootElement

                Expect.equal (json.GetProperty("Stage").GetInt32()) 2 "stage"
                Expect.equal (json.GetProperty("Encoder").GetString()) "enc" "encoder path"
                Expect.equal (json.GetProperty("Decoder").GetProperty("Layers").GetInt32()) 6 "layers"

                let stage1 =
                    JsonDocument.Parse(TokenizerTrainConfig.toJson TokenizerTrainConfig.smoke).RootElement

                Expect.equal (stage1.GetProperty("Stage").GetInt32()) 1 "stage 1 records its stage"
            }
        ]
