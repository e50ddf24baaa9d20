module Esm3Structure.Tests.Tools.Ablations.AblationChartsTests

open System
open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open Plotly.NET
open Esm3Structure.Checks
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Ablations

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
        Budget = AblationBudget.Steps 2
        WallSeconds = 1.0
        PeakMemoryBytes = 1L
        Resumed = false
        StoppedOnTime = false
        Final = AblationResults.finalMetrics history
        History = history
    }

let private runs =
    [|
        run "b" 1 0 [| point 1 [ "loss", 4.0 ]; point 2 [ "loss", 2.0; "valid/rmsd", 3.0 ] |]
        run "a" 0 0 [| point 1 [ "loss", 1.0 ]; point 2 [ "loss", 0.5; "valid/rmsd", 1.0 ] |]
        run "a" 0 1 [| point 1 [ "loss", 3.0 ]; point 2 [ "loss", 1.5; "valid/rmsd", 2.0 ] |]
    |]

/// The `data` arrays of every chart script of a Plotly.NET page, in page order.
let private chartData (html: string) =
    [|
        for m in Regex.Matches(html, @"var data = (\[.*?\]);\r?\n") ->
            JsonDocument.Parse(m.Groups.[1].Value).RootElement
    |]

let private doubles (e: JsonElement) =
    [| for x in e.EnumerateArray() -> x.GetDouble() |]

let private strings (e: JsonElement) =
    [| for x in e.EnumerateArray() -> x.GetString() |]

let private attr (e: Xml.Linq.XElement) (name: string) =
    match e.Attribute(Xml.Linq.XName.Get name) with
    | null -> ""
    | a -> a.Value

let private svgElements (svg: string) (name: string) =
    let doc = Xml.Linq.XDocument.Parse svg

    doc.Descendants(Xml.Linq.XName.Get(name, "http://www.w3.org/2000/svg"))
    |> Array.ofSeq

[<Tests>]
let tests =
    testList
        "Ablations/AblationCharts"
        [
            test "curves give mean and sample sd over seeds per step, variants in ablation order" {
                let curves = AblationCharts.curves runs "loss"
                Expect.equal (curves |> Array.map (fun c -> c.Variant)) [| "a"; "b" |] "variant order"
                let a = curves.[0]
                Expect.equal a.Steps [| 1; 2 |] "steps"
                Expect.equal a.Mean [| 2.0; 1.0 |] "mean over seeds"
                Expect.floatClose Accuracy.veryHigh a.StdDev.[0] (sqrt 2.0) "sd of 1 and 3"
                Expect.equal a.Runs [| 2; 2 |] "runs per step"
                Expect.isTrue (Double.IsNaN curves.[1].StdDev.[0]) "one seed: no sd"
                Expect.equal (AblationCharts.curves runs "valid/rmsd").[0].Steps [| 2 |] "only logged steps"
            }

            test "the Plotly.NET charts carry the data: bars with sd error bars, curves with a band" {
                let rows = AblationStatistics.summarize runs
                let bar = AblationCharts.barChart "t" rows "valid/rmsd"

                let data =
                    JsonDocument.Parse(GenericChart.toJson bar).RootElement.GetProperty "data"

                let trace = data.[0]
                Expect.equal (trace.GetProperty("type").GetString()) "bar" "a bar trace"
                Expect.equal (strings (trace.GetProperty "x")) [| "a"; "b" |] "bars per variant"
                Expect.equal (doubles (trace.GetProperty "y")) [| 1.5; 3.0 |] "means"
                let errors = doubles (trace.GetProperty("error_y").GetProperty "array")
                Expect.floatClose Accuracy.veryHigh errors.[0] (sqrt 0.5) "sd of 1 and 2"
                Expect.equal errors.[1] 0.0 "one run: no error bar"

                let curve = AblationCharts.curveChart "t" runs "loss"

                let traces =
                    JsonDocument.Parse(GenericChart.toJson curve).RootElement.GetProperty "data"
                // a: band + line (two seeds), b: line only (one seed)
                Expect.equal (traces.GetArrayLength()) 3 "band for a, lines for a and b"
                let band, lineA, lineB = traces.[0], traces.[1], traces.[2]
                Expect.equal (band.GetProperty("fill").GetString()) "toself" "a filled band"
                // upper edge forwards (mean + sd), lower edge backwards (mean − sd); sd of (1, 3) and (0.5, 1.5)
                let s1, s2 = sqrt 2.0, sqrt 0.5
                let expected = [| 2.0 + s1; 1.0 + s2; 1.0 - s2; 2.0 - s1 |]
                let got = doubles (band.GetProperty "y")

                for e, g in Array.zip expected got do
                    Expect.floatClose Accuracy.veryHigh g e "band edge"

                Expect.equal (lineA.GetProperty("name").GetString()) "a" "line a"
                Expect.equal (doubles (lineA.GetProperty "y")) [| 2.0; 1.0 |] "means of a"
                Expect.equal (doubles (lineB.GetProperty "y")) [| 4.0; 2.0 |] "b"
            }

            test "write makes one self-contained page with every chart and an SVG per chart" {
                use dir = new TempDir()
                Directory.CreateDirectory(Path.Combine(dir.Path, "runs")) |> ignore

                for r in runs do
                    File.WriteAllText(Ablation.resultPath dir.Path r.Key, AblationResults.toJson r)

                let files = AblationCharts.write dir.Path "charts"

                Expect.equal
                    (files |> Array.map Path.GetFileName)
                    [|
                        "index.html"
                        "final-loss.svg"
                        "final-valid_rmsd.svg"
                        "curve-loss.svg"
                        "curve-valid_rmsd.svg"
                    |]
                    "the page, then one SVG per chart"

                for f in files do
                    Expect.isTrue (File.Exists f) f

                let html = File.ReadAllText files.[0]
                Expect.isFalse (Regex.IsMatch(html, "<script[^>]*\\bsrc\\s*=")) "no script is loaded from elsewhere"
                Expect.stringContains html "plotly.js v" "plotly.js is inlined"
                let charts = chartData html
                Expect.equal charts.Length 4 "two bar charts and two curve charts"
                // the second bar chart is valid/rmsd (summary metric order: loss, valid/rmsd)
                let rmsd = charts.[1].[0]
                Expect.equal (strings (rmsd.GetProperty "x")) [| "a"; "b" |] "variants"
                Expect.equal (doubles (rmsd.GetProperty "y")) [| 1.5; 3.0 |] "means"

                for svg in files.[1..] do
                    Xml.Linq.XDocument.Parse(File.ReadAllText svg) |> ignore
            }

            test "the SVG bar chart draws bars proportional to the means and error bars of ± sd" {
                let svg =
                    AblationSvg.bars
                        "title <&>"
                        "rmsd"
                        [|
                            {
                                Label = "a"
                                Value = 1.5
                                Error = 0.5
                            }
                            {
                                Label = "b & c"
                                Value = 3.0
                                Error = nan
                            }
                        |]

                let bars = svgElements svg "rect" |> Array.filter (fun r -> attr r "class" = "bar")
                Expect.equal (bars |> Array.map (fun r -> attr r "data-label")) [| "a"; "b & c" |] "labels"
                let height (r: Xml.Linq.XElement) = float (attr r "height")
                let bottom (r: Xml.Linq.XElement) = float (attr r "y") + height r
                Expect.floatClose Accuracy.low (height bars.[1] / height bars.[0]) 2.0 "3 / 1.5"
                Expect.floatClose Accuracy.low (bottom bars.[0]) (bottom bars.[1]) "common baseline"

                let errors =
                    svgElements svg "path" |> Array.filter (fun p -> attr p "class" = "errorbar")

                Expect.equal errors.Length 1 "no error bar without an error"
                // "M x,top V bottom …": its length is 2 · sd in the bars' scale (1.5 ↔ height of bar a)
                let m = Regex.Match(attr errors.[0] "d", @"^M[\d.]+,([\d.]+) V([\d.]+)")
                let length = float m.Groups.[2].Value - float m.Groups.[1].Value
                Expect.floatClose Accuracy.low length (height bars.[0] * (2.0 * 0.5 / 1.5)) "± sd"
                Expect.stringContains svg "title &lt;&amp;&gt;" "escaped title"
            }

            test "the SVG line chart draws one polyline per series and a band where sd is known" {
                let svg = AblationCharts.curveSvg "t" runs "loss"
                let lines = svgElements svg "polyline"
                Expect.equal (lines |> Array.map (fun l -> attr l "data-series")) [| "a"; "b" |] "series"

                let ys (l: Xml.Linq.XElement) =
                    (attr l "points").Split ' ' |> Array.map (fun p -> float (p.Split(',').[1]))

                // SVG y grows downwards: a's mean falls from 2 to 1, b's from 4 to 2 (twice as far)
                let a, b = ys lines.[0], ys lines.[1]
                Expect.isLessThan a.[0] a.[1] "a falls"
                Expect.floatClose Accuracy.low (b.[1] - b.[0]) (2.0 * (a.[1] - a.[0])) "b falls twice as far"
                let bands = svgElements svg "polygon"
                Expect.equal (bands |> Array.map (fun p -> attr p "data-series")) [| "a" |] "band only for two seeds"

                let legend =
                    svgElements svg "text" |> Array.filter (fun t -> attr t "class" = "legend")

                Expect.equal (legend |> Array.map (fun t -> t.Value)) [| "a"; "b" |] "legend"
            }

            test "nice ticks cover the range with round steps" {
                Expect.equal (AblationSvg.niceTicks 0.0 1.0 5) [| 0.0; 0.2; 0.4; 0.6; 0.8; 1.0 |] "0..1"
                Expect.equal (AblationSvg.niceTicks 3.0 97.0 5) [| 0.0; 20.0; 40.0; 60.0; 80.0; 100.0 |] "3..97"
                Expect.equal (AblationSvg.niceTicks -0.3 0.25 6) [| -0.3; -0.2; -0.1; 0.0; 0.1; 0.2; 0.3 |] "signs"
                let flat = AblationSvg.niceTicks 2.0 2.0 5
                Expect.isLessThan flat.[0] 2.0 "a flat range is widened"
                Expect.isGreaterThan flat.[flat.Length - 1] 2.0 "both ways"
            }
        ]
