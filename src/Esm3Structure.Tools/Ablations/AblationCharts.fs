namespace Esm3Structure.Ablations

open System
open System.IO
open System.Text
open Giraffe.ViewEngine
open Plotly.NET
open Plotly.NET.TraceObjects
open Esm3Structure
open Esm3Structure.Training

/// One variant's training curve of one metric: at every logged step, the mean and sample standard deviation over
/// the seeds that logged a finite value there.
type AblationCurve =
    {
        Variant: string
        Steps: int[]
        Mean: float[]
        /// NaN where fewer than two seeds logged the step.
        StdDev: float[]
        /// Seeds that logged each step.
        Runs: int[]
    }

/// Charts of an ablation's results, made with Plotly.NET: training curves per variant (mean over seeds with a
/// ± sd band) and a bar chart per final metric (mean with ± sd error bars). They are written as one self-contained
/// HTML page (plotly.js inlined, no network needed to view it) and, for places where no script runs (GitHub), as
/// static SVG files drawn by `AblationSvg` with the same colours. (Plotly.NET's image export needs
/// Plotly.NET.ImageExport and a headless Chromium: the package is not in this project's registry.)
module AblationCharts =

    /// The page of `write`: `<results>/charts/index.html`.
    [<Literal>]
    let PageName = "index.html"

    /// Per variant (in ablation order), the mean and sd over its runs of `metric` at every logged step.
    let curves (runs: AblationRun[]) (metric: string) : AblationCurve[] =
        runs
        |> Array.sortBy (fun r -> r.VariantIndex)
        |> Array.groupBy (fun r -> r.Variant)
        |> Array.map (fun (variant, mine) ->
            let points =
                mine
                |> Array.collect (fun r ->
                    r.History
                    |> Array.choose (fun p ->
                        p.Values
                        |> Array.tryFind (fun (k, v) -> k = metric && Double.IsFinite v)
                        |> Option.map (fun (_, v) -> p.Step, v)))
                |> Array.groupBy fst
                |> Array.sortBy fst
                |> Array.map (fun (step, vs) -> step, AblationStatistics.meanStd (vs |> Array.map snd))

            {
                Variant = variant
                Steps = points |> Array.map fst
                Mean = points |> Array.map (fun (_, (_, m, _)) -> m)
                StdDev = points |> Array.map (fun (_, (_, _, s)) -> s)
                Runs = points |> Array.map (fun (_, (n, _, _)) -> n)
            })
        |> Array.filter (fun c -> c.Steps.Length > 0)

    let private rgba (hex: string) (alpha: float) =
        let v i =
            Convert.ToInt32(hex.Substring(i, 2), 16)

        Color.fromString (sprintf "rgba(%d,%d,%d,%g)" (v 1) (v 3) (v 5) alpha)

    let private sized (chart: GenericChart) = chart |> Chart.withSize (900, 460)

    /// The training-curve chart of one metric ("running_loss", "valid/rmsd", …): per variant the mean over seeds
    /// (line with markers) and a translucent band of ± one sample sd where two or more seeds logged the step.
    let curveChart (title: string) (runs: AblationRun[]) (metric: string) : GenericChart =
        let traces =
            [
                for i, curve in Array.indexed (curves runs metric) do
                    let col = AblationSvg.color i

                    let banded =
                        Array.zip3 curve.Steps curve.Mean curve.StdDev
                        |> Array.filter (fun (_, _, s) -> Double.IsFinite s)

                    if banded.Length > 0 then
                        let xs = banded |> Array.map (fun (x, _, _) -> x)
                        let upper = banded |> Array.map (fun (_, m, s) -> m + s)
                        let lower = banded |> Array.map (fun (_, m, s) -> m - s) |> Array.rev

                        Chart.Line(
                            x = Array.append xs (Array.rev xs),
                            y = Array.append upper lower,
                            Name = curve.Variant + " ± sd",
                            ShowLegend = false,
                            LineWidth = 0.0
                        )
                        |> GenericChart.mapTrace (
                            Trace2DStyle.Scatter(
                                Fill = StyleParam.Fill.ToSelf,
                                FillColor = rgba col 0.2,
                                LegendGroup = curve.Variant,
                                HoverInfo = StyleParam.HoverInfo.Skip
                            )
                        )

                    Chart.Line(
                        x = curve.Steps,
                        y = curve.Mean,
                        Name = curve.Variant,
                        ShowMarkers = (curve.Steps.Length <= 60),
                        LineColor = Color.fromString col,
                        MarkerColor = Color.fromString col
                    )
                    |> GenericChart.mapTrace (Trace2DStyle.Scatter(LegendGroup = curve.Variant))
            ]

        Chart.combine traces
        |> Chart.withTitle (sprintf "%s: %s (mean ± sd over seeds)" title metric)
        |> Chart.withXAxisStyle "step"
        |> Chart.withYAxisStyle metric
        |> sized

    /// The summary rows of one metric whose mean is finite, in their order.
    let private barsOf (rows: AblationSummaryRow[]) (metric: string) =
        rows |> Array.filter (fun r -> r.Metric = metric && Double.IsFinite r.Mean)

    let private sdOrZero (r: AblationSummaryRow) =
        if Double.IsFinite r.StdDev then r.StdDev else 0.0

    /// The bar chart of one final metric: mean per variant with ± sample-sd error bars (none for one run).
    let barChart (title: string) (rows: AblationSummaryRow[]) (metric: string) : GenericChart =
        let mine = barsOf rows metric

        Chart.Column(
            values = (mine |> Array.map (fun r -> r.Mean)),
            Keys = (mine |> Array.map (fun r -> r.Variant)),
            MarkerColor = Color.fromColors (mine |> Array.mapi (fun i _ -> Color.fromString (AblationSvg.color i)))
        )
        |> Chart.withYErrorStyle (Array = (mine |> Array.map sdOrZero))
        |> Chart.withTitle (sprintf "%s: final %s (mean ± sd over seeds)" title metric)
        |> Chart.withYAxisStyle metric
        |> sized

    /// The curve chart as a static SVG (`AblationSvg.lines`).
    let curveSvg (title: string) (runs: AblationRun[]) (metric: string) : string =
        curves runs metric
        |> Array.map (fun c ->
            {
                Name = c.Variant
                X = c.Steps |> Array.map float
                Y = c.Mean
                Spread = c.StdDev
            })
        |> AblationSvg.lines (sprintf "%s: %s (mean ± sd over seeds)" title metric) "step" metric

    /// The bar chart as a static SVG (`AblationSvg.bars`).
    let barSvg (title: string) (rows: AblationSummaryRow[]) (metric: string) : string =
        barsOf rows metric
        |> Array.map (fun r ->
            {
                Label = r.Variant
                Value = r.Mean
                Error = sdOrZero r
            })
        |> AblationSvg.bars (sprintf "%s: final %s (mean ± sd over seeds)" title metric) metric

    /// One self-contained HTML page (plotly.js inlined once) holding the charts in order under a heading.
    let page (title: string) (charts: GenericChart seq) : string =
        let nodes =
            [
                yield h1 [ _style "font-family:sans-serif" ] [ str title ]
                for chart in charts -> GenericChart.toChartHTMLNodes chart
            ]

        HTML.Doc(
            nodes,
            title,
            "ablation charts: final metrics and training curves, mean ± sd over seeds",
            "utf-8",
            rawText "",
            PlotlyJSReference.Full
        )
        |> RenderView.AsString.htmlDocument

    /// The metrics the charts draw: (curve metrics logged in the histories, except "lr"; final metrics of the
    /// summary), each in first-seen order.
    let metrics (runs: AblationRun[]) (rows: AblationSummaryRow[]) =
        let logged =
            runs
            |> Array.collect (fun r -> r.History |> Array.collect (fun p -> p.Values |> Array.map fst))
            |> Array.distinct
            |> Array.filter (fun k -> k <> "lr")

        logged, rows |> Array.map (fun r -> r.Metric) |> Array.distinct

    /// Reads the results folder and writes into `<results>/charts/`: `index.html` (every bar chart, then every
    /// curve chart, self-contained), and `final-<metric>.svg` and `curve-<metric>.svg` per metric ('/' in names
    /// becomes '_'). Returns the files, the page first.
    let write (results: string) (title: string) : string[] =
        let runs = AblationResults.readResults results
        let rows = AblationStatistics.summarize runs
        let dir = Path.Combine(results, "charts")
        Directory.CreateDirectory dir |> ignore

        let save (name: string) (text: string) =
            let path = Path.Combine(dir, name)

            AtomicFile.write path (fun s ->
                let bytes = UTF8Encoding(false).GetBytes text
                s.Write(bytes, 0, bytes.Length))

            path

        let fileName (prefix: string) (metric: string) =
            prefix + Ablation.safeName (metric.Replace('/', '_')) + ".svg"

        let logged, finals = metrics runs rows

        let html =
            page
                title
                [
                    for m in finals -> barChart title rows m
                    for m in logged -> curveChart title runs m
                ]

        [|
            yield save PageName html
            for m in finals -> save (fileName "final-" m) (barSvg title rows m)
            for m in logged -> save (fileName "curve-" m) (curveSvg title runs m)
        |]
