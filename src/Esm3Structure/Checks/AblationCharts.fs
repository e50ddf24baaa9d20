namespace Esm3Structure.Checks

open System
open System.IO
open System.Text
open System.Text.Json
open Esm3Structure
open Esm3Structure.Training

/// Charts of an ablation's results as HTML pages that draw with plotly.js (loaded from its CDN by the browser; the
/// data are inline in the page): training curves per variant and a bar chart per final metric with error bars.
module AblationCharts =

    /// The plotly.js build the pages load.
    [<Literal>]
    let PlotlyJs = "https://cdn.plot.ly/plotly-2.35.2.min.js"

    let private page (title: string) (traces: obj[]) (layout: obj) =
        let json (o: obj) = JsonSerializer.Serialize o

        String.Join(
            "\n",
            [|
                "<!DOCTYPE html>"
                "<html><head><meta charset=\"utf-8\"><title>"
                + Net.WebUtility.HtmlEncode title
                + "</title>"
                "<script src=\"" + PlotlyJs + "\"></script></head>"
                "<body><div id=\"chart\" style=\"width:100%;height:90vh\"></div><script>"
                "Plotly.newPlot('chart', " + json traces + ", " + json layout + ");"
                "</script></body></html>"
            |]
        )

    let private finite (x: float) =
        if Double.IsFinite x then box x else null

    /// Per variant, the mean over its runs of `metric` at every logged step: (variant, steps, means).
    let curves (runs: AblationRun[]) (metric: string) =
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
                |> Array.map (fun (step, vs) -> step, vs |> Array.averageBy snd)

            variant, points |> Array.map fst, points |> Array.map snd)

    /// The training-curve page of one metric ("running_loss", "valid/rmsd", …): mean over seeds per variant.
    let curvesHtml (title: string) (runs: AblationRun[]) (metric: string) =
        let traces =
            curves runs metric
            |> Array.map (fun (variant, steps, means) ->
                box
                    {|
                        ``type`` = "scatter"
                        mode = "lines+markers"
                        name = variant
                        x = steps
                        y = means |> Array.map finite
                    |})

        page
            (title + ": " + metric)
            traces
            {|
                title = title + ": " + metric + " (mean over seeds)"
                xaxis = {| title = "step" |}
                yaxis = {| title = metric |}
            |}

    /// The bar chart of one final metric: mean per variant with sample-standard-deviation error bars.
    let barHtml (title: string) (rows: AblationSummaryRow[]) (metric: string) =
        let mine = rows |> Array.filter (fun r -> r.Metric = metric)

        let trace =
            {|
                ``type`` = "bar"
                x = mine |> Array.map (fun r -> r.Variant)
                y = mine |> Array.map (fun r -> finite r.Mean)
                error_y =
                    {|
                        ``type`` = "data"
                        visible = true
                        array = mine |> Array.map (fun r -> if Double.IsFinite r.StdDev then r.StdDev else 0.0)
                    |}
            |}

        page
            (title + ": " + metric)
            [| box trace |]
            {|
                title = title + ": final " + metric + " (mean ± sd over seeds)"
                yaxis = {| title = metric |}
            |}

    /// Writes `<results>/charts/curve-<metric>.html` for every metric logged in the histories and
    /// `<results>/charts/final-<metric>.html` for every summary metric ('/' in names becomes '_'); returns the files.
    let write (results: string) (title: string) : string[] =
        let runs = Ablation.readResults results
        let rows = Ablation.summarize runs
        let dir = Path.Combine(results, "charts")
        Directory.CreateDirectory dir |> ignore

        let save (name: string) (html: string) =
            let path = Path.Combine(dir, Ablation.safeName (name.Replace('/', '_')) + ".html")

            AtomicFile.write path (fun s ->
                let bytes = UTF8Encoding(false).GetBytes html
                s.Write(bytes, 0, bytes.Length))

            path

        let logged =
            runs
            |> Array.collect (fun r -> r.History |> Array.collect (fun p -> p.Values |> Array.map fst))
            |> Array.distinct
            |> Array.filter (fun k -> k <> "lr")

        [|
            for m in logged -> save ("curve-" + m) (curvesHtml title runs m)
            for m in rows |> Array.map (fun r -> r.Metric) |> Array.distinct ->
                save ("final-" + m) (barHtml title rows m)
        |]
