namespace Esm3Structure.Ablations

open System
open System.Globalization
open System.IO
open System.Text
open Esm3Structure

/// The summary tables of a results folder: Markdown (`summary.md`) and CSV (`summary.csv`).
module AblationReport =

    let private inv = CultureInfo.InvariantCulture

    /// A number as the tables print it: 5 significant digits, invariant culture; "–" for NaN.
    let formatNumber (x: float) =
        if Double.IsNaN x then "–" else x.ToString("G5", inv)

    /// The summary as a Markdown table: one row per variant, one column per metric ("mean ± sd"; the mean alone
    /// when one run), and the number of runs.
    let markdown (title: string) (rows: AblationSummaryRow[]) =
        let variants = rows |> Array.map (fun r -> r.Variant) |> Array.distinct
        let metrics = rows |> Array.map (fun r -> r.Metric) |> Array.distinct
        let sb = StringBuilder()
        sb.AppendLine("## " + title).AppendLine() |> ignore

        sb.Append("| variant | runs |").AppendJoin("", metrics |> Array.map (fun m -> " " + m + " |")).AppendLine()
        |> ignore

        sb.Append("|---|---:|").AppendJoin("", metrics |> Array.map (fun _ -> "---:|")).AppendLine()
        |> ignore

        for v in variants do
            let mine = rows |> Array.filter (fun r -> r.Variant = v)
            let runs = mine |> Array.map (fun r -> r.Runs) |> Array.max

            let cell m =
                match mine |> Array.tryFind (fun r -> r.Metric = m) with
                | None -> " |"
                | Some r when Double.IsNaN r.StdDev -> sprintf " %s |" (formatNumber r.Mean)
                | Some r -> sprintf " %s ± %s |" (formatNumber r.Mean) (formatNumber r.StdDev)

            sb.Append(sprintf "| %s | %d |" v runs).AppendJoin("", metrics |> Array.map cell).AppendLine()
            |> ignore

        sb.ToString()

    /// The contrasts as a Markdown table (appended to `summary.md`): one row per variant and metric.
    let contrastMarkdown (contrasts: AblationContrast[]) =
        let sb = StringBuilder()

        if contrasts.Length > 0 then
            sb
                .AppendLine()
                .AppendLine(
                    sprintf "### Differences from %s (Welch's t-test over seeds, two-sided 5 %%)" contrasts.[0].Baseline
                )
                .AppendLine()
                .AppendLine("| variant | metric | difference | standard error | df | t critical | exceeds spread |")
                .AppendLine("|---|---|---:|---:|---:|---:|:---:|")
            |> ignore

            for c in contrasts do
                sb.AppendLine(
                    sprintf
                        "| %s | %s | %s | %s | %s | %s | %s |"
                        c.Variant
                        c.Metric
                        (formatNumber c.Difference)
                        (formatNumber c.StandardError)
                        (c.DegreesOfFreedom.ToString("0.#", inv))
                        (formatNumber c.Critical)
                        (if c.Exceeds then "yes" else "no")
                )
                |> ignore

        sb.ToString()

    let private csvField (s: string) =
        if s.IndexOfAny([| ','; '"'; '\n'; '\r' |]) >= 0 then
            "\"" + s.Replace("\"", "\"\"") + "\""
        else
            s

    /// The summary as CSV (`variant,metric,runs,mean,std`), full round-trip precision, NaN as empty.
    let csv (rows: AblationSummaryRow[]) =
        let num (x: float) =
            if Double.IsNaN x then "" else x.ToString("R", inv)

        let sb = StringBuilder()
        sb.Append("variant,metric,runs,mean,std\n") |> ignore

        for r in rows do
            sb.Append(
                sprintf "%s,%s,%d,%s,%s\n" (csvField r.Variant) (csvField r.Metric) r.Runs (num r.Mean) (num r.StdDev)
            )
            |> ignore

        sb.ToString()

    /// Reads the results folder and writes `summary.md` and `summary.csv` into it; returns the rows.
    let writeSummary (results: string) (title: string) =
        let rows = AblationStatistics.summarize (AblationResults.readResults results)
        Directory.CreateDirectory results |> ignore

        AtomicFile.writeText
            (Path.Combine(results, "summary.md"))
            (markdown title rows + contrastMarkdown (AblationStatistics.contrasts rows))

        AtomicFile.writeText (Path.Combine(results, "summary.csv")) (csv rows)
        rows
