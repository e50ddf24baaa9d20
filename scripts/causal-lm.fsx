// Trains the small causal language model on the corpus's train split and reports held-out perplexity on the
// valid split next to the unigram baseline.
//   dotnet fsi scripts/causal-lm.fsx [--data DIR] [--steps N] [--seed N] [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Data of dir: string
    | Steps of int
    | Batch_Size of int
    | Seed of int
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "shared data folder with index.tsv and sequences.fasta (default: ../shared/data)"
            | Steps _ -> "optimiser steps (default 300)"
            | Batch_Size _ -> "sequences per step (default 16)"
            | Seed _ -> "random seed (default 0)"
            | Device _ -> "cpu (default) or cuda"

let argv = fsi.CommandLineArgs |> Array.skip 1

Cli.run<Args> "causal-lm.fsx" argv (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
    let defaults = CausalLmTrainConfig.Default

    let config =
        { defaults with
            Steps = args.GetResult(Steps, defaultValue = defaults.Steps)
            BatchSize = args.GetResult(Batch_Size, defaultValue = defaults.BatchSize)
            Seed = args.GetResult(Seed, defaultValue = defaults.Seed)
        }

    let train = Corpus.sequences data "train" |> Array.map snd
    let valid = Corpus.sequences data "valid" |> Array.map snd

    printfn
        "causal LM: d %d, %d layers, %d heads, context %d; %d train / %d valid sequences"
        config.Model.DModel
        config.Model.Layers
        config.Model.Heads
        config.Model.Context
        train.Length
        valid.Length

    printfn "%6s  %10s  %16s" "step" "train loss" "valid perplexity"

    let report =
        CausalLmTraining.train config device train valid (fun p ->
            printfn "%6d  %10.4f  %16.3f" p.Step p.TrainLoss p.ValidPerplexity)

    printfn ""

    printfn
        "held-out perplexity %.3f vs unigram baseline %.3f on %d valid tokens (%.0f s)"
        report.ValidPerplexity
        report.UnigramPerplexity
        report.ValidTokens
        report.Seconds

    if report.ValidPerplexity < report.UnigramPerplexity then
        0
    else
        1)
|> exit
