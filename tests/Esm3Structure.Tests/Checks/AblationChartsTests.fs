module Esm3Structure.Tests.Checks.AblationChartsTests

open System.IO
open System.Text.Json
open Expecto
open Esm3Structure.Checks
open Esm3Structure.Training
open Esm3Structure.Tests

let private point (step: int) (values: (string * float) list) =
    {
        Step = step
        Values = Array.ofList values
    }

let private run (variant: string) (index: int) (seed: int) (history: AblationPoint[]) =
    {
        Ablation = "charts"
        Variant = variant
        VariantIndex = index
        Seed = seed
        Key = Ablation.runKey variant seed
        Commit = "abc"
        Config = "{}"
        Steps = 2
        WallSeconds = 1.0
        PeakMemoryBytes = 1L
        Resumed = false
        Final = Ablation.finalMetrics history
        History = history
    }

[<Tests>]
let tests =
    testList
        "Checks/AblationCharts"
        [
            test "curves average the seeds per step; the pages carry the data, bars with sd error bars" {
                use dir = new TempDir()

                let runs =
                    [|
                        run "b" 1 0 [| point 1 [ "loss", 4.0 ]; point 2 [ "loss", 2.0; "valid/rmsd", 3.0 ] |]
                        run "a" 0 0 [| point 1 [ "loss", 1.0 ]; point 2 [ "loss", 0.5; "valid/rmsd", 1.0 ] |]
                        run "a" 0 1 [| point 1 [ "loss", 3.0 ]; point 2 [ "loss", 1.5; "valid/rmsd", 2.0 ] |]
                    |]

                let a, steps, means = (AblationCharts.curves runs "loss").[0]
                Expect.equal a "a" "variant order"
                Expect.equal steps [| 1; 2 |] "steps"
                Expect.equal means [| 2.0; 1.0 |] "mean over seeds"

                Directory.CreateDirectory(Path.Combine(dir.Path, "runs")) |> ignore

                for r in runs do
                    File.WriteAllText(Ablation.resultPath dir.Path r.Key, Ablation.toJson r)

                let files = AblationCharts.write dir.Path "charts"
                let names = files |> Array.map Path.GetFileName |> Array.sort

                Expect.equal
                    names
                    [|
                        "curve-loss.html"
                        "curve-valid_rmsd.html"
                        "final-loss.html"
                        "final-valid_rmsd.html"
                    |]
                    "one page per metric"

                let bar =
                    File.ReadAllText(Path.Combine(dir.Path, "charts", "final-valid_rmsd.html"))

                let start =
                    bar.IndexOf "Plotly.newPlot('chart', " + "Plotly.newPlot('chart', ".Length

                let traces =
                    JsonDocument.Parse(bar.Substring(start, bar.IndexOf(", {", start) - start)).RootElement

                let trace = traces.[0]
                Expect.equal (trace.GetProperty("x").[0].GetString()) "a" "first bar"
                Expect.equal (trace.GetProperty("y").[0].GetDouble()) 1.5 "mean of 1 and 2"

                Expect.floatClose
                    Accuracy.veryHigh
                    (trace.GetProperty("error_y").GetProperty("array").[0].GetDouble())
                    (sqrt 0.5)
                    "sd"

                Expect.equal (trace.GetProperty("error_y").GetProperty("array").[1].GetDouble()) 0.0 "one run: no bar"
                Expect.stringContains bar AblationCharts.PlotlyJs "loads plotly.js"
            }
        ]
