module Esm3Structure.Tests.Training.MultiTrackTrainConfigTests

open System.Text.Json
open Expecto
open Esm3Structure
open Esm3Structure.Training

[<Tests>]
let tests =
    testList
        "Training/MultiTrackTrainConfig"
        [
            test "presets are valid and the config serialises to JSON" {
                for c in [ MultiTrackTrainConfig.small; MultiTrackTrainConfig.smoke ] do
                    Expect.isEmpty (Validation.errors (MultiTrackTrainConfig.validate c)) "valid"

                let json =
                    JsonDocument.Parse(MultiTrackTrainConfig.toJson MultiTrackTrainConfig.small).RootElement

                Expect.equal (json.GetProperty("Model").GetProperty("DModel").GetInt64()) 192L "d"
                Expect.equal (json.GetProperty("CropLength").GetInt32()) 128 "crop"
                Expect.equal (json.GetProperty("Trainer").GetProperty("BatchSize").GetInt32()) 16 "batch"
                let seq = json.GetProperty("Masking").GetProperty("Sequence")
                Expect.equal (seq.GetProperty("Schedule").GetString()) "betalinear30" "schedule"

                Expect.equal
                    (json.GetProperty("Masking").GetProperty("Ss8").GetProperty("Dropout").GetDouble())
                    0.9
                    "dropout"

                Expect.isNonEmpty
                    (Validation.errors (
                        MultiTrackTrainConfig.validate
                            { MultiTrackTrainConfig.smoke with
                                CropLength = 0
                            }
                    ))
                    "bad crop"
            }
        ]
