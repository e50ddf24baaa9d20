// Ablations of the structure tokenizer (issue 7): every variant × seed is trained separately at a tiny budget;
// each finished run is written atomically as <results>/runs/<key>.json (config, git commit, seed, metrics over
// time, wall time, peak memory), then <results>/summary.md and summary.csv give mean ± sample standard deviation
// over seeds per variant and metric, and <results>/charts/*.html draw training curves and final-metric bars
// (plotly.js from its CDN). Run the same command again to continue an interrupted ablation: finished runs
// are kept, an interrupted run continues from its last checkpoint (<results>/work/<key>/).
//   dotnet fsi scripts/ablate.fsx -- --ablation NAME [--results DIR] [--seeds N] [--steps N] [--chains N]
//                                    [--data DIR] [--device cpu|cuda] [--summary-only] [--list] [--usage]
// Built-in ablations (TokenizerAblations.all): geometric-terms, codebook-kind, codebook-size, knn, commitment.
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open System
open System.IO
open Argu
open Esm3Structure.App
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Ablation of name: string
    | Results of dir: string
    | Seeds of int
    | Steps of int
    | Chains of int
    | Data of dir: string
    | Device of string
    | List
    | Summary_Only

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Ablation _ ->
                "the ablation: "
                + String.Join(", ", TokenizerAblations.all |> Array.map (fun a -> a.Name))
            | Results _ -> "results folder (default: runs/ablation-<name>); reuse it to continue"
            | Seeds _ -> "seeds 0 … N−1 (default: the ablation's, 3)"
            | Steps _ -> sprintf "optimiser steps per run (default %d, the tiny budget)" TokenizerAblations.TinySteps
            | Chains _ -> "train on the first N chains of the train split only (default: all)"
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Device _ -> "cpu (default) or cuda"
            | List -> "print the built-in ablations and their variants, then exit"
            | Summary_Only -> "rewrite summary.md, summary.csv and the charts from the finished runs, train nothing"

let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")

Cli.run<Args> "ablate.fsx" argv (fun args ->
    if args.Contains List then
        for a in TokenizerAblations.all do
            printfn "%s: %s" a.Name (String.Join(", ", a.Variants |> Array.map (fun v -> v.Name)))

        0
    else
        let name =
            match args.TryGetResult Ablation with
            | Some n -> n
            | None -> invalidArg "ablation" "--ablation NAME is required (see --list)"

        let builtIn = TokenizerAblations.byName name

        let ablation =
            { builtIn with
                Seeds =
                    match args.TryGetResult Seeds with
                    | Some n -> Array.init n id
                    | None -> builtIn.Seeds
                Steps = args.GetResult(Steps, defaultValue = builtIn.Steps)
            }

        let results =
            args.GetResult(Results, defaultValue = Path.Combine("runs", "ablation-" + ablation.Name))

        let report () =
            let charts = Esm3Structure.Checks.AblationCharts.write results ablation.Name
            printfn "%d charts in %s" charts.Length (Path.Combine(results, "charts"))
            printfn "%s" (File.ReadAllText(Path.Combine(results, "summary.md")))

        if args.Contains Summary_Only then
            let rows = Ablation.writeSummary results ablation.Name

            if rows.Length = 0 then
                invalidArg "results" (sprintf "no finished runs in %s" (Path.Combine(results, "runs")))

            report ()
            0
        else

            let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
            let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))

            let train =
                TokenizerData.readSplit data "train" (args.GetResult(Chains, defaultValue = 0))

            let valid = TokenizerData.readSplit data "valid" ablation.Base.ValidChains
            let commit = Ablation.gitCommit __SOURCE_DIRECTORY__

            let runs =
                Ablation.run
                    (TokenizerAblations.trainer device train valid)
                    results
                    commit
                    (Action<string>(printfn "%s"))
                    ablation

            printfn "%d runs in %s" runs.Length results
            report ()
            0)
|> exit
