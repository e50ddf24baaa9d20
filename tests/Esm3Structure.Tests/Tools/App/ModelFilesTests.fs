module Esm3Structure.Tests.Tools.App.ModelFilesTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Tests

[<Tests>]
let tests =
    testList
        "App/ModelFiles"
        [
            test "the default weights: the shipped files under the root; missing, one clear error; a given path is kept" {
                let e =
                    raises<ArgumentException> "no model" (fun () ->
                        ModelFiles.resolveWeights "/nonexistent-root" ModelFiles.DefaultEncoderPath ""
                        |> ignore)

                Expect.stringContains
                    e.Message
                    "the shipped model models/structure-tokenizer/encoder.safetensors is missing"
                    "says so"

                Expect.stringContains e.Message "--weights" "says what to do"

                Expect.equal
                    (ModelFiles.resolveWeights "/r" ModelFiles.DefaultDecoderPath "my.safetensors")
                    "my.safetensors"
                    "given"
            }

            test "the scripts' loaders: device first, then the weights (given or shipped), loaded on the device" {
                use scratch = new TempDir()
                let dir = scratch.Path

                let enc = Path.Combine(dir, "e.safetensors")
                let dec = Path.Combine(dir, "d.safetensors")
                TokenizerFixtures.writeEncoder enc 3UL
                TokenizerFixtures.writeDecoder dec 4UL
                // The repository root is found above the script folder (tests run inside the checkout).
                let scriptDir = AppContext.BaseDirectory
                use e = ModelFiles.loadEncoderFor scriptDir enc "cpu"
                Expect.equal e.Config.DModel TokenizerFixtures.smallEncoderConfig.DModel "the given encoder"
                Expect.equal (e.parameters () |> Seq.head).device_type DeviceType.CPU "on the device"
                use d = ModelFiles.loadDecoderFor scriptDir dec 0 "CPU"
                Expect.isGreaterThan (d.parameters () |> Seq.length) 0 "the given decoder"

                let bad =
                    raises<exn> "bad device" (fun () ->
                        ModelFiles.loadEncoderFor scriptDir "/nonexistent.safetensors" "tpu" |> ignore)

                Expect.stringContains bad.Message "unknown device 'tpu'" "the device is checked before the file"

                let missing =
                    raises<exn> "missing file" (fun () ->
                        ModelFiles.loadEncoderFor scriptDir "/nonexistent.safetensors" "cpu" |> ignore)

                Expect.stringContains missing.Message "/nonexistent.safetensors" "names the file"

                let root = Cli.repositoryRoot scriptDir

                Expect.isTrue (File.Exists(Path.Combine(root, ModelFiles.DefaultDecoderPath))) "shipped"
                // no weights given: the shipped decoder (d 192, 3 heads of 64)
                use shipped = ModelFiles.loadDecoderFor scriptDir null 0 "cpu"
                Expect.equal shipped.Config.DModel 192L "the shipped decoder's width"
                Expect.equal shipped.Config.Heads 3L "its head count, from the metadata"

                Expect.stringContains
                    (ModelFiles.weightsUsage "encoder" ModelFiles.DefaultEncoderPath)
                    ModelFiles.DefaultEncoderPath
                    "usage names the default"
            }
        ]
