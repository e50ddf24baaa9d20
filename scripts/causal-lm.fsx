// Trains the small causal language model on the corpus's train split and reports held-out perplexity on the
// valid split next to the unigram baseline; writes config.json, metrics.jsonl and checkpoints/step-NNNNNN/ (with
// causal-lm.safetensors) into --out. Exits 1 when the model does not beat the baseline.
//   dotnet fsi scripts/causal-lm.fsx [--data DIR] [--preset small|smoke] [--steps N] [--batch-size N] [--seed N]
//                                    [--minutes M] [--out DIR] [--resume] [--device cpu|cuda]
// (the same run as `train.fsx --model causal-lm`; --resume continues from the last complete checkpoint in --out)
#load "_load.fsx"

open System
open Argu
open Esm3Structure.App
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Data of dir: string
    | Preset of name: string
    | Steps of int
    | Batch_Size of int
    | Seed of int
    | Minutes of float
    | Out of dir: string
    | Resume
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "shared data folder with index.tsv and sequences.fasta (default: ../shared/data)"
            | Preset _ -> "small (default: d 128, 2 layers, context 256, 400 steps) or smoke"
            | Steps _ -> "optimiser steps (default: the preset's)"
            | Batch_Size _ -> "windows per step (default: the preset's, 16)"
            | Seed _ -> "random seed (default 0)"
            | Minutes _ ->
                "wall-clock budget: stop after the step that reaches it, validate and checkpoint (counted over resumes)"
            | Out _ -> "run folder (default: runs/causal-lm-<preset>)"
            | Resume -> "continue from the last checkpoint in --out"
            | Device _ -> "cpu (default) or cuda"

let argv = fsi.CommandLineArgs |> Array.skip 1

Cli.run<Args> "causal-lm.fsx" argv (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
    let presetName = args.GetResult(Preset, defaultValue = "small")
    let preset = CausalLmTrainConfig.preset presetName

    let out =
        args.GetResult(Out, defaultValue = IO.Path.Combine("runs", "causal-lm-" + presetName))

    let resume = args.Contains Resume

    if resume then
        match TrainerCheckpoint.lastCheckpoint out with
        | Some checkpoint -> printfn "resuming from %s" checkpoint
        | None -> printfn "--resume: no complete checkpoint in %s, starting at step 0" out

    let config =
        { preset with
            Trainer =
                { preset.Trainer with
                    Steps = args.GetResult(Steps, defaultValue = preset.Trainer.Steps)
                    BatchSize = args.GetResult(Batch_Size, defaultValue = preset.Trainer.BatchSize)
                    Seed = args.GetResult(Seed, defaultValue = preset.Trainer.Seed)
                    MaxSeconds =
                        match args.TryGetResult Minutes with
                        | Some m when m > 0.0 && m < infinity -> m * 60.0
                        | Some m -> invalidArg "minutes" (sprintf "--minutes must be positive (got %g)" m)
                        | None -> preset.Trainer.MaxSeconds
                }
        }

    printfn
        "causal LM: d %d, %d layers, %d heads, context %d; run folder %s"
        config.Model.DModel
        config.Model.Layers
        config.Model.Heads
        config.Model.Context
        out

    let report = CausalLmTraining.train config device data out resume

    printfn "%s" (CausalLmTraining.summary report)

    if report.ValidPerplexity < report.UnigramPerplexity then
        0
    else
        1)
|> exit
