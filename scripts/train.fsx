// Training of the structure tokenizer on the train split of the corpus, validating on the valid split.
// Stage 1 (default): encoder + codebook + small decoder (ESM3-TRAINING.md §1.3, §4.2).
// Stage 2 (--stage 2 --encoder PATH): the stage-1 encoder and codebook frozen, a new decoder with sequence input,
// all-atom, pLDDT and pAE losses (§1.4, §4.2's CPU note).
// Writes config.json (with the stage), metrics.jsonl and checkpoints/step-NNNNNN/{encoder,decoder}.safetensors
// (ESM key format) into --out.
//   dotnet fsi scripts/train.fsx -- [--stage 1|2] [--encoder PATH] [--data DIR] [--out DIR] [--preset small|smoke]
//                                   [--steps N] [--seed N] [--resume] [--device cpu|cuda] [--usage]
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Stage of int
    | Encoder of path: string
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
            | Stage _ -> "1 (default: encoder, codebook, small decoder) or 2 (frozen encoder, new all-atom decoder)"
            | Encoder _ -> "stage 2: the stage-1 encoder.safetensors (encoder and codebook, kept frozen)"
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "run folder (default: runs/tokenizer-<preset>, stage 2: runs/tokenizer-stage2-<preset>)"
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
    let resume = args.Contains Resume

    let trainer (t: TrainerConfig) =
        { t with
            Steps = args.GetResult(Steps, defaultValue = t.Steps)
            Seed = args.GetResult(Seed, defaultValue = t.Seed)
        }

    let report =
        match args.GetResult(Stage, defaultValue = 1) with
        | 1 ->
            if args.Contains Encoder then
                invalidArg "encoder" "--encoder is for stage 2 (stage 1 trains its own encoder)"

            let preset = TokenizerTrainConfig.preset presetName

            let config =
                { preset with
                    Trainer = trainer preset.Trainer
                }

            let out =
                args.GetResult(Out, defaultValue = System.IO.Path.Combine("runs", "tokenizer-" + presetName))

            TokenizerTraining.train config device data out resume
        | 2 ->
            let preset = Stage2TrainConfig.preset presetName

            let config =
                { preset with
                    Encoder =
                        match args.TryGetResult Encoder with
                        | Some path -> path
                        | None -> invalidArg "encoder" "stage 2 needs --encoder PATH (a stage-1 encoder.safetensors)"
                    Trainer = trainer preset.Trainer
                }

            let out =
                args.GetResult(Out, defaultValue = System.IO.Path.Combine("runs", "tokenizer-stage2-" + presetName))

            Stage2Training.train config device data out resume
        | n -> invalidArg "stage" (sprintf "--stage must be 1 or 2 (got %d)" n)

    printfn "done: %d steps, final loss %.4f, checkpoint %s" report.Steps report.FinalLoss report.Checkpoint
    0)
|> exit
