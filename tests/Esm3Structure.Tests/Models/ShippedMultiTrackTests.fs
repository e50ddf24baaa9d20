module Esm3Structure.Tests.Models.ShippedMultiTrackTests

open System
open System.IO
open System.Text.Json
open Expecto
open Esm3Structure.App
open Esm3Structure.Models

/// The repository root (holding Research.sln), above the test binary.
let private root = Cli.repositoryRoot AppContext.BaseDirectory

let private path = Path.Combine(root, ModelFiles.DefaultMultiTrackPath)

[<Tests>]
let tests =
    testList
        "Models/ShippedMultiTrack"
        [
            test
                "the shipped multi-track model: ≤ 50 MB, the small preset's sizes, with config, log and an evaluation of every valid chain over 3 seeds" {
                Expect.isLessThanOrEqual (FileInfo(path).Length) (50L * 1024L * 1024L) "≤ 50 MB"
                let dir = Path.GetDirectoryName path

                for f in [ "config.json"; "metrics.jsonl"; "train.log"; "evaluation.json" ] do
                    Expect.isTrue (File.Exists(Path.Combine(dir, f))) (sprintf "%s beside the model" f)

                use model = MultiTrackCheckpoint.load path
                Expect.equal model.Config.DModel MultiTrackConfig.small.DModel "d"
                Expect.equal model.Config.Layers MultiTrackConfig.small.Layers "layers"
                Expect.equal model.Config.Heads MultiTrackConfig.small.Heads "heads (from the file's metadata)"

                use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "evaluation.json")))
                let e = doc.RootElement
                Expect.equal (e.GetProperty("split").GetString()) "valid" "the valid split"
                Expect.equal (e.GetProperty("chains").GetInt32()) 67 "every valid chain"
                Expect.equal (e.GetProperty("seeds").GetArrayLength()) 3 "3 seeds"
            }

            test
                "the shipped evaluations were measured with the shipped files: the model, and the structure tokenizer its tokens come from (SHA-256)" {
                let dir = Path.GetDirectoryName path

                let shipped (relative: string) =
                    ModelFiles.sha256 (Path.Combine(root, relative))

                for file in
                    [
                        "evaluation.json"
                        "evaluation-with-structure-tokens.json"
                        "evaluation-structure-temperature-1.json"
                    ] do
                    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, file)))

                    let recorded (key: string) =
                        doc.RootElement.GetProperty(key).GetString()

                    Expect.equal
                        (recorded "weights_sha256")
                        (shipped ModelFiles.DefaultMultiTrackPath)
                        (file + ": model")

                    Expect.equal
                        (recorded "encoder_sha256")
                        (shipped ModelFiles.DefaultEncoderPath)
                        (file + ": the shipped structure encoder")

                    Expect.equal
                        (recorded "decoder_sha256")
                        (shipped ModelFiles.DefaultDecoderPath)
                        (file + ": the shipped structure decoder")
            }
        ]
