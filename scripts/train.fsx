// Training on the train split of the corpus, validating on the valid split; writes config.json, metrics.jsonl and
// checkpoints/step-NNNNNN/ into --out. Two models, one trainer:
//   --model tokenizer (default): stage-1 structure tokenizer (encoder + codebook + small decoder, ESM3-TRAINING.md
//     §1.3, §4.2); each checkpoint holds {encoder,decoder}.safetensors (ESM key format).
//   --model multitrack: the ESM3 multi-track masked LM (ESM3-TRAINING.md §3, §4.3); each checkpoint holds
//     multitrack.safetensors (ESM3's keys). Structure tokens come from --encoder (default: the shipped tokenizer
//     models/structure-tokenizer/encoder.safetensors; `random` = a freshly initialised small encoder, for smoke
//     runs only). SS8, SASA, function and residue-annotation tracks are absent (ESM's id 0) until their tokenizers
//     are plugged into `TrackProviders`.
//   dotnet fsi scripts/train.fsx -- [--model tokenizer|multitrack] [--encoder FILE|random] [--chains N]
//                                   [--data DIR] [--out DIR]
//                                   [--preset small|smoke] [--steps N] [--seed N] [--resume] [--device cpu|cuda]
//                                   [--usage]
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open System
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Model of name: string
    | Encoder of file: string
    | Chains of int
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
            | Model _ -> "tokenizer (default) or multitrack"
            | Encoder _ ->
                "multitrack: structure encoder for the structure tokens (default: the shipped one; random: a fresh small encoder)"
            | Chains _ -> "multitrack: train on the first N chains of the train split only (default: all)"
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "run folder (default: runs/<model>-<preset>)"
            | Preset _ -> "small (default) or smoke (ESM3-TRAINING.md §4.2, §4.3)"
            | Steps _ -> "optimiser steps (default: the preset's)"
            | Seed _ -> "random seed (default 0)"
            | Resume -> "continue from the last checkpoint in --out"
            | Device _ -> "cpu (default) or cuda"

let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")

Cli.run<Args> "train.fsx" argv (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
    let presetName = args.GetResult(Preset, defaultValue = "small")

    let model =
        args.GetResult(Model, defaultValue = "tokenizer").Trim().ToLowerInvariant()

    let steps (preset: TrainerConfig) =
        { preset with
            Steps = args.GetResult(Steps, defaultValue = preset.Steps)
            Seed = args.GetResult(Seed, defaultValue = preset.Seed)
        }

    let out =
        args.GetResult(Out, defaultValue = IO.Path.Combine("runs", model + "-" + presetName))

    let report =
        match model with
        | "tokenizer" ->
            let preset = TokenizerTrainConfig.preset presetName

            let config =
                { preset with
                    Trainer = steps preset.Trainer
                }

            TokenizerTraining.train config device data out (args.Contains Resume)
        | "multitrack" ->
            let preset = MultiTrackTrainConfig.preset presetName

            let config =
                { preset with
                    Trainer = steps preset.Trainer
                }

            use encoder =
                match args.GetResult(Encoder, defaultValue = "") with
                | "random" ->
                    use g = new torch.Generator(uint64 config.Trainer.Seed)
                    let e = new StructureEncoder(TokenizerTrainConfig.small.Encoder, g)
                    Esm3Structure.Nn.Init.reset g e
                    e
                | given ->
                    StructureTokenizer.resolveWeights
                        (Cli.repositoryRoot __SOURCE_DIRECTORY__)
                        StructureTokenizer.DefaultEncoderPath
                        given
                    |> StructureEncoder.load

            encoder.eval ()
            let providers = TrackProviders.withStructureEncoder encoder

            MultiTrackTraining.train
                config
                device
                data
                providers
                (args.GetResult(Chains, defaultValue = 0))
                out
                (args.Contains Resume)
        | other -> raise (ArgumentException(sprintf "unknown --model '%s' (expected tokenizer or multitrack)" other))

    printfn "done: %d steps, final loss %.4f, checkpoint %s" report.Steps report.FinalLoss report.Checkpoint
    0)
|> exit
