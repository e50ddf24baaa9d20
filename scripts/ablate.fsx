// Ablations of the structure tokenizer (issue 7): every variant × seed is trained separately at a tiny budget;
// each finished run is written atomically as <results>/runs/<key>.json (config, git commit, seed, metrics over
// time, wall time, peak memory), then <results>/summary.md and summary.csv give mean ± sample standard deviation
// over seeds per variant and metric, and <results>/charts/ holds the charts (training curves and final-metric
// bars, mean ± sd over seeds): index.html (Plotly.NET, self-contained: plotly.js inlined, no network needed) and
// one SVG per chart (viewable on GitHub). Run the same command again to continue an interrupted ablation: finished runs
// are kept, an interrupted run continues from its last checkpoint (<results>/work/<key>/).
//   dotnet fsi scripts/ablate.fsx -- --ablation NAME [--results DIR] [--seeds N] [--steps N] [--minutes M]
//                                    [--chains N] [--data DIR] [--device cpu|cuda] [--summary-only] [--list]
// A time budget (--minutes M) stops each run after the step that reaches M minutes of training (counted over
// resumes); --steps is then the learning-rate schedule's length and a cap. --summary-only rewrites the summary
// and charts from the finished runs without training.
// Built-in ablations (TokenizerAblations.all): geometric-terms, codebook-kind, codebook-size, knn, commitment, recipe.
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open System
open System.IO
open Argu
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Training
open Esm3Structure.Ablations

[<HelpFlags("--usage", "--help")>]
type Args =
    | Ablation of name: string
    | Results of dir: string
    | Seeds of int
    | Steps of int
    | Minutes of float
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
            | Seeds _ -> "seeds 0 … N−1 (default: the ablation's, 2)"
            | Steps _ -> sprintf "optimiser steps per run (default %d, the tiny budget)" TokenizerAblations.TinySteps
            | Minutes _ ->
                "time budget: minutes of training per run (counted over resumes); --steps is then the schedule's length and a cap"
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

        let steps =
            args.GetResult(
                Steps,
                defaultValue =
                    match builtIn.Budget with
                    | AblationBudget.Steps n -> n
                    | AblationBudget.Seconds _ -> builtIn.Base.Trainer.Steps
            )

        let ablation =
            { builtIn with
                Seeds =
                    match args.TryGetResult Seeds with
                    | Some n -> Array.init n id
                    | None -> builtIn.Seeds
                Budget =
                    match args.TryGetResult Minutes with
                    | Some m when not (m > 0.0) ->
                        invalidArg "minutes" (sprintf "--minutes must be positive (got %g)" m)
                    | Some m -> AblationBudget.Seconds(m * 60.0)
                    | None -> AblationBudget.Steps steps
                Base =
                    { builtIn.Base with
                        Trainer =
                            { builtIn.Base.Trainer with
                                Steps = steps
                            }
                    }
            }

        match Ablation.validate ablation with
        | Ok _ -> ()
        | Error errors -> invalidArg "ablation" ("--ablation: " + String.Join("; ", errors))

        let results =
            args.GetResult(Results, defaultValue = Path.Combine("runs", "ablation-" + ablation.Name))

        let report () =
            let charts = AblationCharts.write results ablation.Name
            printfn "%d charts in %s" charts.Length (Path.Combine(results, "charts"))
            printfn "%s" (File.ReadAllText(Path.Combine(results, "summary.md")))

        if args.Contains Summary_Only then
            let rows = AblationReport.writeSummary results ablation.Name

            if rows.Length = 0 then
                invalidArg "results" (sprintf "--results: no finished runs in %s" (Path.Combine(results, "runs")))

            report ()
            0
        else
            printfn "%s: %s per run" ablation.Name (Ablation.describeBudget ablation.Budget)
            let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
            let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))

            let train = Corpus.readSplit data "train" (args.GetResult(Chains, defaultValue = 0))

            let valid = Corpus.readSplit data "valid" ablation.Base.ValidChains
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
