namespace Esm3Structure.Ablations

open System

/// Per-variant means and spreads over seeds, and Welch's t-test of each variant against the baseline.
module AblationStatistics =

    /// Mean and sample standard deviation (n − 1) of the finite values; (n, mean, sd) with NaN mean for n = 0 and
    /// NaN sd for n < 2.
    let meanStd (values: float[]) =
        let xs = values |> Array.filter Double.IsFinite
        let n = xs.Length

        if n = 0 then
            0, nan, nan
        else
            let mean = Array.average xs

            let sd =
                if n < 2 then
                    nan
                else
                    sqrt ((xs |> Array.sumBy (fun x -> (x - mean) * (x - mean))) / float (n - 1))

            n, mean, sd

    /// One row per (variant, metric) over the runs' final metrics, variants in their ablation order, metrics in
    /// first-seen order.
    let summarize (runs: AblationRun[]) : AblationSummaryRow[] =
        let variants =
            runs
            |> Array.sortBy (fun r -> r.VariantIndex)
            |> Array.map (fun r -> r.Variant)
            |> Array.distinct

        let metrics =
            runs |> Array.collect (fun r -> r.Final |> Array.map fst) |> Array.distinct

        [|
            for v in variants do
                let mine = runs |> Array.filter (fun r -> r.Variant = v)

                for m in metrics do
                    let values =
                        mine
                        |> Array.choose (fun r -> r.Final |> Array.tryFind (fun (k, _) -> k = m) |> Option.map snd)

                    if values.Length > 0 then
                        let n, mean, sd = meanStd values

                        {
                            Variant = v
                            Metric = m
                            Runs = n
                            Mean = mean
                            StdDev = sd
                        }
        |]

    /// Student's t, 97.5 % quantiles for 1 … 30 degrees of freedom (any statistics table, e.g. NIST/SEMATECH
    /// e-Handbook §1.3.6.7.2); 1.96 (the normal quantile) beyond.
    let private tQuantiles975 =
        [|
            12.706
            4.303
            3.182
            2.776
            2.571
            2.447
            2.365
            2.306
            2.262
            2.228
            2.201
            2.179
            2.160
            2.145
            2.131
            2.120
            2.110
            2.101
            2.093
            2.086
            2.080
            2.074
            2.069
            2.064
            2.060
            2.056
            2.052
            2.048
            2.045
            2.042
        |]

    /// The two-sided 5 % critical value of Student's t at `df` degrees of freedom, rounded down (NaN below 1).
    let tCritical (df: float) =
        if Double.IsNaN df || df < 1.0 then nan
        elif df > 30.0 then 1.96
        else tQuantiles975.[int (floor df) - 1]

    /// Every variant but the first against the first (the baseline), per metric: Welch's t-test over seeds.
    let contrasts (rows: AblationSummaryRow[]) : AblationContrast[] =
        let variants = rows |> Array.map (fun r -> r.Variant) |> Array.distinct

        if variants.Length < 2 then
            [||]
        else
            let baseline = variants.[0]

            [|
                for v in variants.[1..] do
                    for r in rows |> Array.filter (fun r -> r.Variant = v) do
                        match rows |> Array.tryFind (fun b -> b.Variant = baseline && b.Metric = r.Metric) with
                        | None -> ()
                        | Some b ->
                            let a = r.StdDev * r.StdDev / float r.Runs
                            let c = b.StdDev * b.StdDev / float b.Runs
                            let se = sqrt (a + c)

                            let df =
                                if a + c = 0.0 then
                                    float (r.Runs + b.Runs - 2)
                                else
                                    (a + c) * (a + c) / (a * a / float (r.Runs - 1) + c * c / float (b.Runs - 1))

                            let critical = tCritical df
                            let difference = r.Mean - b.Mean

                            {
                                Variant = v
                                Baseline = baseline
                                Metric = r.Metric
                                Difference = difference
                                StandardError = se
                                DegreesOfFreedom = df
                                Critical = critical
                                Exceeds = not (Double.IsNaN se) && abs difference > critical * se
                            }
            |]
