// Stage-1 training of the structure tokenizer (encoder + codebook + small decoder, ESM3-TRAINING.md §1.3, §4.2)
// on the train split of the corpus, validating on the valid split. Writes config.json, metrics.jsonl and
// checkpoints/step-NNNNNN/{encoder,decoder}.safetensors (ESM key format) into --out.
//   dotnet fsi scripts/train.fsx -- [--data DIR] [--out DIR] [--preset small|smoke] [--steps N] [--seed N]
//                                   [--resume] [--device cpu|cuda] [--usage]
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Data of dir: string
    | Out of dir: string
    | Preset of name: string
    | Steps of int
    | Seed of int
    | Resume
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "run folder (default: runs/tokenizer-<preset>)"
            | Preset _ -> "small (default) or smoke (ESM3-TRAINING.md §4.2)"
            | Steps _ -> "optimiser steps (default: the preset's)"
            | Seed _ -> "random seed (default 0)"
            | Resume -> "continue from the last checkpoint in --out"
            | Device _ -> "cpu (default) or cuda"

let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")

Cli.run<Args> "train.fsx" argv (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
    let presetName = args.GetResult(Preset, defaultValue = "small")
    let preset = TokenizerTrainConfig.preset presetName

    let config =
        { preset with
            Trainer =
                { preset.Trainer with
                    Steps = args.GetResult(Steps, defaultValue = preset.Trainer.Steps)
                    Seed = args.GetResult(Seed, defaultValue = preset.Trainer.Seed)
                }
        }

    let out =
        args.GetResult(Out, defaultValue = System.IO.Path.Combine("runs", "tokenizer-" + presetName))

    let report = TokenizerTraining.train config device data out (args.Contains Resume)
    printfn "done: %d steps, final loss %.4f, checkpoint %s" report.Steps report.FinalLoss report.Checkpoint
    0)
|> exit
