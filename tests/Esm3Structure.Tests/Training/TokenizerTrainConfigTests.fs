module Esm3Structure.Tests.Training.TokenizerTrainConfigTests

open System
open System.IO
open System.Text.Json
open Expecto
open Esm3Structure
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

[<Tests>]
let tests =
    testList
        "Training/TokenizerTrainConfig"
        [
            test "presets are valid and the config serialises to JSON" {
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate TokenizerTrainConfig.small)) "small"
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate TokenizerTrainConfig.smoke)) "smoke"

                Expect.isEmpty
                    (Validation.errors (TokenizerTrainConfig.validate TokenizerFixtures.tinyTrainConfig))
                    "TokenizerFixtures.tinyTrainConfig"

                let json =
                    JsonDocument.Parse(TokenizerTrainConfig.toJson TokenizerTrainConfig.smoke).RootElement

                Expect.equal (json.GetProperty("CropLength").GetInt32()) 64 "crop"
                Expect.equal (json.GetProperty("Trainer").GetProperty("Steps").GetInt32()) 300 "steps"

                Expect.equal
                    (json.GetProperty("Encoder").GetProperty("Quantizer").GetProperty("Codes").GetInt64())
                    128L
                    "codes"
            }

            test "crop curriculum: the length at each step, and stages that never start or go backwards are refused" {
                let curriculum = [ 100, 128; 300, 256 ]
                let at = Crops.lengthAt 64 curriculum

                Expect.sequenceEqual
                    ([ 0; 99; 100; 299; 300; 4999 ] |> List.map at)
                    [ 64; 64; 128; 128; 256; 256 ]
                    "lengths"

                let small = TokenizerTrainConfig.small

                Expect.isEmpty
                    (Validation.errors
                     <| TokenizerTrainConfig.validate
                         { small with
                             CropCurriculum = curriculum
                         })
                    "valid"

                let late =
                    Validation.errors
                    <| TokenizerTrainConfig.validate
                        { small with
                            CropCurriculum = [ 5000, 256 ]
                        }

                Expect.exists
                    late
                    (fun e -> e.Contains "CropCurriculum" && e.Contains "never starts")
                    "after the budget"

                let backwards =
                    Validation.errors
                    <| TokenizerTrainConfig.validate
                        { small with
                            CropCurriculum = [ 300, 256; 100, 128 ]
                        }

                Expect.exists backwards (fun e -> e.Contains "ascending") "not ascending"

                let one =
                    Validation.errors (TokenizerTrainConfig.validate { small with PairResidues = 1 })

                Expect.exists one (fun e -> e.Contains "PairResidues") "one residue has no pairs"
            }

            test "ReflectInit needs InitFrom and the affine head" {
                let small = TokenizerTrainConfig.small

                let errors c =
                    Validation.errors (TokenizerTrainConfig.validate c)

                Expect.isEmpty
                    (errors
                        { small with
                            ReflectInit = true
                            InitFrom = "models/structure-tokenizer"
                        })
                    "valid"

                Expect.exists
                    (errors { small with ReflectInit = true })
                    (fun e -> e.Contains "ReflectInit" && e.Contains "InitFrom")
                    "no InitFrom"

                let withModule =
                    { small with
                        ReflectInit = true
                        InitFrom = "x"
                        Decoder =
                            { small.Decoder with
                                StructureModule = Some(StructureModuleConfig.alphaFold2 small.Decoder.DModel)
                            }
                    }

                Expect.exists
                    (errors withModule)
                    (fun e -> e.Contains "ReflectInit" && e.Contains "structure module")
                    "structure module"
            }

            test "RefineOnly needs InitFrom and a structure module that starts at the affine head's frames" {
                let small = TokenizerTrainConfig.small

                let errors c =
                    Validation.errors (TokenizerTrainConfig.validate c)

                let refiner start =
                    { small.Decoder with
                        StructureModule =
                            Some
                                { StructureModuleConfig.alphaFold2 small.Decoder.DModel with
                                    Start = start
                                }
                    }

                let refine =
                    { small with
                        RefineOnly = true
                        InitFrom = "models/structure-tokenizer"
                        Decoder = refiner StructureModuleStart.AffineHead
                    }

                Expect.isEmpty (errors refine) "valid"

                Expect.exists
                    (errors { refine with InitFrom = "" })
                    (fun e -> e.Contains "RefineOnly" && e.Contains "InitFrom")
                    "no InitFrom"

                for decoder, what in
                    [
                        small.Decoder, "no structure module"
                        refiner StructureModuleStart.Identity, "a module that starts at identity frames"
                    ] do
                    Expect.exists
                        (errors { refine with Decoder = decoder })
                        (fun e -> e.Contains "RefineOnly" && e.Contains "AffineHead")
                        what

                Expect.exists
                    (errors { refine with BypassQuantizer = true })
                    (fun e -> e.Contains "RefineOnly" && e.Contains "BypassQuantizer")
                    "no tokens to refine the decoding of"

                Expect.exists
                    (errors { refine with ReflectInit = true })
                    (fun e -> e.Contains "RefineOnly" && e.Contains "ReflectInit")
                    "reflect first"
            }

            test "a warning when VideoGPT's restart would overwrite every code at every step (4,096 codes, 1,024 rows)" {
                let small = TokenizerTrainConfig.small

                let withCodes (k: int64) (restart: RestartPolicy) =
                    { small with
                        Encoder =
                            { small.Encoder with
                                Quantizer =
                                    { small.Encoder.Quantizer with
                                        Codes = k
                                        Restart = restart
                                    }
                            }
                    }

                // small: batch 8 × crop 128 = 1,024 rows per step.
                Expect.isEmpty (TokenizerTrainConfig.warnings small) "512 codes: mean count 2 per step"
                Expect.isEmpty (TokenizerTrainConfig.warnings (withCodes 1023L (BelowCount 1.0))) "1,023 codes"

                match TokenizerTrainConfig.warnings (withCodes 1024L (BelowCount 1.0)) with
                | [ w ] ->
                    Expect.stringContains w "--restart unused" "says what to use"
                    Expect.stringContains w "1024" "names the rows"
                | ws -> failtestf "one warning expected, got %A" ws

                Expect.hasLength (TokenizerTrainConfig.warnings (withCodes 4096L (BelowCount 1.0))) 1 "4,096 codes"

                Expect.isEmpty
                    (TokenizerTrainConfig.warnings (withCodes 4096L (UnusedFor(50, 8192))))
                    "unused:50 has no such threshold"

                // A curriculum's shortest crop is what bounds the rows.
                Expect.hasLength
                    (TokenizerTrainConfig.warnings
                        { small with
                            CropCurriculum = [ 100, 64 ]
                        })
                    1
                    "crops of 64: 512 rows against 512 codes"

                Expect.isEmpty
                    (TokenizerTrainConfig.warnings
                        { withCodes 4096L (BelowCount 1.0) with
                            FreezeEncoder = true
                            InitFrom = "models/structure-tokenizer"
                        })
                    "a frozen codebook does not restart"
            }

            test
                "loss recipes: esm leaves ESM's weights, the others change only their terms; an unknown name is refused" {
                let small = TokenizerTrainConfig.small

                let weights name =
                    (TokenizerTrainConfig.withLosses name small).Weights

                Expect.equal (weights "esm") small.Weights "esm"

                Expect.equal
                    (weights " Linear ")
                    { small.Weights with
                        LinearBeyondClamp = true
                    }
                    "linear"

                Expect.equal
                    (weights "fape-pair-heads")
                    { small.Weights with
                        Distance = 0.0
                        Direction = 0.0
                        Fape = 1.0
                    }
                    "fape-pair-heads"

                Expect.equal
                    (weights "fape-alone")
                    { small.Weights with
                        Distance = 0.0
                        Direction = 0.0
                        BinnedDirection = 0.0
                        Distogram = 0.0
                        Fape = 1.0
                    }
                    "fape-alone"

                let message =
                    try
                        TokenizerTrainConfig.withLosses "fape" small |> ignore
                        "no error"
                    with :? ArgumentException as e ->
                        e.Message

                Expect.stringContains message "unknown loss recipe 'fape' (expected esm or linear" "unknown recipe"
            }

        ]
