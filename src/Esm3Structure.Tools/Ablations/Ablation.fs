namespace Esm3Structure.Ablations

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open Esm3Structure
open Esm3Structure.Training

/// One named change of an ablation's base config.
type AblationVariant<'Config> =
    {
        /// Unique within the ablation; letters, digits, '-', '_' and '.' are kept in file names, others become '-'.
        Name: string
        /// The change applied to the base config (`Func` so that C# can build variants).
        Change: Func<'Config, 'Config>
    }

/// The budget of every run of an ablation.
[<RequireQualifiedAccess>]
type AblationBudget =
    /// Optimiser steps (also the length of the learning-rate schedule).
    | Steps of steps: int
    /// Wall-clock seconds of training per run, counted over resumes (`TrainerConfig.MaxSeconds`); the config's own
    /// step count stays the schedule's length and a cap.
    | Seconds of seconds: float

/// An ablation: a base config plus named variants, each trained once per seed for a fixed budget.
type Ablation<'Config> =
    {
        Name: string
        Base: 'Config
        Variants: AblationVariant<'Config>[]
        Seeds: int[]
        /// The budget of every run: steps or seconds.
        Budget: AblationBudget
    }

/// How the ablation runner trains one kind of model (records of `Func`s, callable from C#).
type AblationTrainer<'Config> =
    {
        /// The config with this seed and budget: (config, seed, budget) -> config (see
        /// `Ablation.configureTrainer`).
        Configure: Func<'Config, int, AblationBudget, 'Config>
        /// The config as the JSON text the run folder's `config.json` holds.
        ToJson: Func<'Config, string>
        /// Trains (config, run folder, resume) and returns the trainer's report; must write `metrics.jsonl` and
        /// `config.json` (= `ToJson config`) into the run folder, as `Trainer.run` does.
        Train: Func<'Config, string, bool, TrainReport>
    }

/// One logged step of a run: "loss", "running_loss", "lr", "train/<term>" and "valid/<metric>" values.
type AblationPoint =
    {
        Step: int
        Values: (string * float)[]
    }

/// The record of one finished run, as stored in `<results>/runs/<key>.json`.
type AblationRun =
    {
        Ablation: string
        Variant: string
        /// Position of the variant in its ablation (orders tables and charts).
        VariantIndex: int
        Seed: int
        Key: string
        /// The git commit of the code that trained it ("unknown" outside a checkout).
        Commit: string
        /// The resolved config (JSON text).
        Config: string
        /// Steps trained (for a time budget: the step count reached).
        Steps: int
        /// The ablation's budget (a result written before budgets existed reads as `Steps Steps`).
        Budget: AblationBudget
        /// True when the run stopped on its time budget before its config's step count.
        StoppedOnTime: bool
        /// Wall time of the call that finished the run (a resumed run counts only its last part).
        WallSeconds: float
        /// Peak resident memory of the process during that call (bytes; see `Ablation.peakMemory`).
        PeakMemoryBytes: int64
        /// True when the run continued from a checkpoint of an interrupted attempt.
        Resumed: bool
        /// The final metrics: the last logged row's values (validation included), "wall_seconds" and
        /// "peak_memory_mb" (and "steps" under a time budget).
        Final: (string * float)[]
        History: AblationPoint[]
    }

/// Mean and sample standard deviation (n − 1) of one metric over the seeds of one variant.
type AblationSummaryRow =
    {
        Variant: string
        Metric: string
        /// Runs with a finite value.
        Runs: int
        Mean: float
        /// NaN when fewer than two runs.
        StdDev: float
    }

/// One variant against the ablation's first variant (the baseline) on one metric: Welch's two-sample t-test over
/// the seeds, two-sided at 5 %.
type AblationContrast =
    {
        Variant: string
        Baseline: string
        Metric: string
        /// mean(variant) − mean(baseline).
        Difference: float
        /// sqrt(s²_v / n_v + s²_b / n_b); NaN when either side has fewer than two runs.
        StandardError: float
        /// Welch–Satterthwaite degrees of freedom (n_v + n_b − 2 when both spreads are 0).
        DegreesOfFreedom: float
        /// The 97.5 % quantile of Student's t at the degrees of freedom rounded down (conservative).
        Critical: float
        /// |Difference| > Critical × StandardError: the difference exceeds the seed-to-seed spread.
        Exceeds: bool
    }

/// Runs an ablation into a results folder and summarises it. Layout: `runs/<key>.json` (one per finished run,
/// written atomically: its presence means done), `work/<key>/` (the trainer's run folder: config.json,
/// metrics.jsonl, checkpoints; an interrupted run resumes from there), `summary.md`, `summary.csv`.
module Ablation =

    /// A variant from an F# function.
    let variant (name: string) (change: 'Config -> 'Config) : AblationVariant<'Config> =
        {
            Name = name
            Change = Func<'Config, 'Config>(change)
        }

    /// The variant's name made safe for a file name.
    let safeName (name: string) =
        name
        |> String.map (fun ch ->
            if Char.IsAsciiLetterOrDigit ch || ch = '-' || ch = '_' || ch = '.' then
                ch
            else
                '-')

    /// The run key of (variant, seed): "<safe variant name>.seed<seed>".
    let runKey (variantName: string) (seed: int) =
        sprintf "%s.seed%d" (safeName variantName) seed

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (a: Ablation<'Config>) =
        [
            if String.IsNullOrWhiteSpace a.Name then
                "Name must not be empty"
            if a.Variants.Length = 0 then
                "at least one variant is needed"
            if a.Seeds.Length = 0 then
                "at least one seed is needed"
            match a.Budget with
            | AblationBudget.Steps n when n < 1 -> sprintf "Budget: Steps must be at least 1 (got %d)" n
            | AblationBudget.Seconds s when not (s > 0.0 && s < infinity) ->
                sprintf "Budget: Seconds must be positive and finite (got %g)" s
            | _ -> ()
            if (a.Seeds |> Array.distinct).Length <> a.Seeds.Length then
                "Seeds must be distinct"
            for name, n in a.Variants |> Array.countBy (fun v -> safeName v.Name) do
                if n > 1 then
                    sprintf "variant names must be distinct as file names ('%s' is used %d times)" name n
            for v in a.Variants do
                if String.IsNullOrWhiteSpace v.Name then
                    "a variant has an empty name"
        ]
        |> Validation.ofErrors a

    /// A trainer config with this seed and budget: a step budget sets `Steps` (warm-up at most a tenth of it) and
    /// no time limit; a time budget sets `MaxSeconds` and keeps `Steps` (the schedule's length and a cap).
    let configureTrainer (trainer: TrainerConfig) (seed: int) (budget: AblationBudget) : TrainerConfig =
        match budget with
        | AblationBudget.Steps steps ->
            { trainer with
                Seed = seed
                Steps = steps
                MaxSeconds = 0.0
                WarmupSteps = min trainer.WarmupSteps (steps / 10)
            }
        | AblationBudget.Seconds seconds ->
            { trainer with
                Seed = seed
                MaxSeconds = seconds
            }

    /// The budget as text: "300 steps" or "600 s".
    let describeBudget (budget: AblationBudget) =
        match budget with
        | AblationBudget.Steps n -> sprintf "%d steps" n
        | AblationBudget.Seconds s -> sprintf "%g s" s

    /// Every (variant index, variant, seed, key) of the ablation, variant-major, in the order the runner trains.
    let plan (a: Ablation<'Config>) =
        [|
            for i, v in Array.indexed a.Variants do
                for seed in a.Seeds do
                    i, v, seed, runKey v.Name seed
        |]

    /// `<results>/runs/<key>.json`
    let resultPath (results: string) (key: string) =
        Path.Combine(results, "runs", key + ".json")

    /// `<results>/work/<key>`
    let workFolder (results: string) (key: string) = Path.Combine(results, "work", key)

    // ---- numbers and JSON -----------------------------------------------------------------------------------

    let private inv = CultureInfo.InvariantCulture

    /// JSON text compacted (for comparing configs regardless of layout); the text itself if it is not JSON.
    let normalizeJson (text: string) =
        try
            use doc = JsonDocument.Parse text
            JsonSerializer.Serialize doc.RootElement
        with :? JsonException ->
            text

    /// The run as JSON (the format of `runs/<key>.json`).
    let toJson (r: AblationRun) =
        use buffer = new MemoryStream()

        do
            use w = new Utf8JsonWriter(buffer, JsonWriterOptions(Indented = true))
            w.WriteStartObject()
            w.WriteString("ablation", r.Ablation)
            w.WriteString("variant", r.Variant)
            w.WriteNumber("variant_index", r.VariantIndex)
            w.WriteNumber("seed", r.Seed)
            w.WriteString("key", r.Key)
            w.WriteString("commit", r.Commit)
            w.WriteNumber("steps", r.Steps)
            w.WriteStartObject "budget"

            match r.Budget with
            | AblationBudget.Steps n -> w.WriteNumber("steps", n)
            | AblationBudget.Seconds s -> Json.writeNumber w "seconds" s

            w.WriteEndObject()
            w.WriteBoolean("stopped_on_time", r.StoppedOnTime)
            Json.writeNumber w "wall_seconds" r.WallSeconds
            w.WriteNumber("peak_memory_bytes", r.PeakMemoryBytes)
            w.WriteBoolean("resumed", r.Resumed)
            Json.writeNumberObject w "final" r.Final
            w.WritePropertyName "config"
            w.WriteRawValue(normalizeJson r.Config)
            w.WriteStartArray "history"

            for p in r.History do
                w.WriteStartObject()
                w.WriteNumber("step", p.Step)
                Json.writeNumberObject w "values" p.Values
                w.WriteEndObject()

            w.WriteEndArray()
            w.WriteEndObject()

        Encoding.UTF8.GetString(buffer.ToArray())

    let private parseRoot (file: string) (text: string) =
        try
            JsonDocument.Parse(text: string).RootElement
        with :? JsonException as e ->
            InputError.raise file InputLocation.Whole ("not valid JSON: " + e.Message)

    let private number (file: string) (field: string) (e: JsonElement) =
        match e.ValueKind with
        | JsonValueKind.Number -> e.GetDouble()
        | JsonValueKind.String ->
            match Double.TryParse(e.GetString(), NumberStyles.Float, inv) with
            | true, v -> v
            | _ -> InputError.raise file (InputLocation.Field field) "expected a number"
        | _ -> InputError.raise file (InputLocation.Field field) ("expected a number, got " + Json.kindName e)

    let private property (file: string) (field: string) (e: JsonElement) =
        if e.ValueKind <> JsonValueKind.Object then
            InputError.raise file (InputLocation.Field field) ("expected an object, got " + Json.kindName e)

        match e.TryGetProperty(field.Substring(field.LastIndexOf '.' + 1)) with
        | true, v -> v
        | _ -> InputError.raise file (InputLocation.Field field) "missing"

    let private pairs (file: string) (field: string) (e: JsonElement) =
        if e.ValueKind <> JsonValueKind.Object then
            InputError.raise file (InputLocation.Field field) ("expected an object, got " + Json.kindName e)

        [|
            for p in e.EnumerateObject() -> p.Name, number file (field + "." + p.Name) p.Value
        |]

    let private text (file: string) (field: string) (e: JsonElement) =
        if e.ValueKind <> JsonValueKind.String then
            InputError.raise file (InputLocation.Field field) ("expected a string, got " + Json.kindName e)

        e.GetString()

    let private integer (file: string) (field: string) (e: JsonElement) =
        let v = number file field e

        if v <> Math.Round v || abs v > 9e15 then
            InputError.raise file (InputLocation.Field field) (sprintf "expected an integer, got %g" v)

        v

    /// Reads a `runs/<key>.json` file; every problem is an `InputException` naming the file and the field.
    let readRun (file: string) : AblationRun =
        let content =
            try
                File.ReadAllText file
            with e ->
                InputError.raise file InputLocation.Whole ("cannot read the file (" + e.Message + ")")

        let root = parseRoot file content
        let get field = property file field root

        let history = get "history"
        let steps = int (integer file "steps" (get "steps"))

        let optional field =
            match root.TryGetProperty(field: string) with
            | true, v -> Some v
            | _ -> None

        if history.ValueKind <> JsonValueKind.Array then
            InputError.raise file (InputLocation.Field "history") ("expected an array, got " + Json.kindName history)

        {
            Ablation = text file "ablation" (get "ablation")
            Variant = text file "variant" (get "variant")
            VariantIndex = int (integer file "variant_index" (get "variant_index"))
            Seed = int (integer file "seed" (get "seed"))
            Key = text file "key" (get "key")
            Commit = text file "commit" (get "commit")
            Config = (get "config").GetRawText() |> normalizeJson
            Steps = steps
            Budget =
                match optional "budget" with
                | None -> AblationBudget.Steps steps
                | Some b when b.ValueKind <> JsonValueKind.Object ->
                    InputError.raise file (InputLocation.Field "budget") ("expected an object, got " + Json.kindName b)
                | Some b ->
                    match b.TryGetProperty "steps", b.TryGetProperty "seconds" with
                    | (true, n), (false, _) -> AblationBudget.Steps(int (integer file "budget.steps" n))
                    | (false, _), (true, s) -> AblationBudget.Seconds(number file "budget.seconds" s)
                    | _ -> InputError.raise file (InputLocation.Field "budget") "expected one of steps or seconds"
            StoppedOnTime =
                match optional "stopped_on_time" with
                | None -> false
                | Some v when v.ValueKind = JsonValueKind.True -> true
                | Some v when v.ValueKind = JsonValueKind.False -> false
                | Some _ -> InputError.raise file (InputLocation.Field "stopped_on_time") "expected true or false"
            WallSeconds = number file "wall_seconds" (get "wall_seconds")
            PeakMemoryBytes = int64 (integer file "peak_memory_bytes" (get "peak_memory_bytes"))
            Resumed =
                match (get "resumed").ValueKind with
                | JsonValueKind.True -> true
                | JsonValueKind.False -> false
                | _ -> InputError.raise file (InputLocation.Field "resumed") "expected true or false"
            Final = pairs file "final" (get "final")
            History =
                [|
                    for i, p in Seq.indexed (history.EnumerateArray()) ->
                        let field = sprintf "history[%d]" i

                        {
                            Step = int (integer file (field + ".step") (property file (field + ".step") p))
                            Values = pairs file (field + ".values") (property file (field + ".values") p)
                        }
                |]
        }

    /// Every finished run of a results folder (`runs/*.json`), ordered by variant index, variant and seed.
    let readResults (results: string) : AblationRun[] =
        let dir = Path.Combine(results, "runs")

        if Directory.Exists dir then
            Directory.GetFiles(dir, "*.json")
            |> Array.map readRun
            |> Array.sortBy (fun r -> r.VariantIndex, r.Variant, r.Seed)
        else
            [||]

    /// The points of a trainer's `metrics.jsonl`: "lr", "loss", "running_loss", "train/<term>", "valid/<metric>".
    let readMetrics (file: string) : AblationPoint[] =
        if not (File.Exists file) then
            [||]
        else
            File.ReadAllLines file
            |> Array.indexed
            |> Array.filter (fun (_, line) -> line.Trim() <> "")
            |> Array.map (fun (i, line) ->
                let at = sprintf "%s:%d" file (i + 1)
                let root = parseRoot at line
                let get field = property at field root

                let prefixed prefix field =
                    pairs at field (get field) |> Array.map (fun (k, v) -> prefix + k, v)

                {
                    Step = int (integer at "step" (get "step"))
                    Values =
                        Array.concat
                            [
                                [| "lr", number at "lr" (get "lr") |]
                                pairs at "values" (get "values")
                                prefixed "train/" "terms"
                                prefixed "valid/" "validation"
                            ]
                })

    /// The final metrics of a history: the last point's values, with each "valid/…" metric taken from the last
    /// point that has it.
    let finalMetrics (history: AblationPoint[]) : (string * float)[] =
        match Array.tryLast history with
        | None -> [||]
        | Some last ->
            let validation =
                history
                |> Array.collect (fun p -> p.Values |> Array.filter (fun (k, _) -> k.StartsWith "valid/"))
                |> Array.fold (fun (acc: (string * float) list) (k, v) -> (k, v) :: List.filter (fst >> (<>) k) acc) []
                |> List.rev
                |> Array.ofList

            let training =
                last.Values
                |> Array.filter (fun (k, _) -> not (k.StartsWith "valid/") && k <> "lr")

            Array.append training validation

    // ---- summary ---------------------------------------------------------------------------------------------

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
        let rows = summarize (readResults results)
        Directory.CreateDirectory results |> ignore

        AtomicFile.writeText
            (Path.Combine(results, "summary.md"))
            (markdown title rows + contrastMarkdown (contrasts rows))

        AtomicFile.writeText (Path.Combine(results, "summary.csv")) (csv rows)
        rows

    // ---- running ---------------------------------------------------------------------------------------------

    /// The HEAD commit of the git checkout holding `folder`, or "unknown".
    let gitCommit (folder: string) =
        try
            let info =
                ProcessStartInfo(
                    "git",
                    "rev-parse HEAD",
                    WorkingDirectory = folder,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false
                )

            use p = Process.Start info
            let out = p.StandardOutput.ReadToEnd().Trim()
            p.WaitForExit()
            if p.ExitCode = 0 && out <> "" then out else "unknown"
        with _ ->
            "unknown"

    /// Peak-memory probe: `reset ()` starts a new measurement and returns a function that reads the peak resident
    /// memory (bytes) since then. On Linux it resets the kernel's high-water mark (`/proc/self/clear_refs`, "5")
    /// and reads VmHWM; where that fails the process's lifetime peak working set is reported instead.
    let peakMemory () : unit -> int64 =
        let reset =
            try
                File.WriteAllText("/proc/self/clear_refs", "5")
                true
            with _ ->
                false

        fun () ->
            let hwm =
                if reset then
                    try
                        File.ReadAllLines "/proc/self/status"
                        |> Array.tryFind (fun l -> l.StartsWith "VmHWM:")
                        |> Option.map (fun l ->
                            int64 (l.Substring(6).Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries).[0])
                            * 1024L)
                    with _ ->
                        None
                else
                    None

            match hwm with
            | Some v -> v
            | None ->
                use p = Process.GetCurrentProcess()
                p.PeakWorkingSet64

    /// True when the run's result file exists, reads, and records this config (a changed config is rerun).
    let isDone (results: string) (key: string) (configJson: string) =
        let path = resultPath results key

        File.Exists path
        && (try
                (readRun path).Config = normalizeJson configJson
            with :? InputException ->
                false)

    /// Runs every (variant, seed) that has no result yet, in `plan` order, each in its own work folder, writing
    /// `runs/<key>.json` atomically when it finishes; a run interrupted earlier continues from its last checkpoint
    /// (when its work folder holds the same config). Then writes the summary. `log` receives one line per run.
    /// Returns every result of the folder.
    let run
        (trainer: AblationTrainer<'Config>)
        (results: string)
        (commit: string)
        (log: Action<string>)
        (ablation: Ablation<'Config>)
        : AblationRun[] =
        match validate ablation with
        | Ok _ -> ()
        | Error errors -> raise (ArgumentException("ablation: " + String.Join("; ", errors)))

        Directory.CreateDirectory(Path.Combine(results, "runs")) |> ignore
        let cells = plan ablation

        for i, v, seed, key in cells do
            let config =
                trainer.Configure.Invoke(v.Change.Invoke ablation.Base, seed, ablation.Budget)

            let configJson = trainer.ToJson.Invoke config

            if isDone results key configJson then
                log.Invoke(sprintf "%s: done already" key)
            else
                let work = workFolder results key
                let previous = Path.Combine(work, "config.json")

                let resume =
                    File.Exists previous
                    && normalizeJson (File.ReadAllText previous) = normalizeJson configJson
                    && Trainer.lastCheckpoint work |> Option.isSome

                log.Invoke(sprintf "%s: %s" key (if resume then "resuming" else "training"))
                let peak = peakMemory ()
                let clock = Stopwatch.StartNew()
                let report = trainer.Train.Invoke(config, work, resume)
                let wall = clock.Elapsed.TotalSeconds
                let memory = peak ()
                let history = readMetrics (Path.Combine(work, "metrics.jsonl"))

                let final =
                    Array.concat
                        [
                            finalMetrics history
                            [| "wall_seconds", wall; "peak_memory_mb", float memory / (1024.0 * 1024.0) |]
                            match ablation.Budget with
                            | AblationBudget.Seconds _ -> [| "steps", float report.Steps |]
                            | AblationBudget.Steps _ -> [||]
                        ]

                let result =
                    {
                        Ablation = ablation.Name
                        Variant = v.Name
                        VariantIndex = i
                        Seed = seed
                        Key = key
                        Commit = commit
                        Config = configJson
                        Steps = report.Steps
                        Budget = ablation.Budget
                        StoppedOnTime = report.StoppedOnTime
                        WallSeconds = wall
                        PeakMemoryBytes = memory
                        Resumed = resume
                        Final = final
                        History = history
                    }

                let path = resultPath results key
                Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
                AtomicFile.writeText path (toJson result)

                log.Invoke(
                    sprintf
                        "%s: finished in %.1f s%s"
                        key
                        wall
                        (if report.StoppedOnTime then
                             sprintf " (time budget used up at step %d)" report.Steps
                         else
                             "")
                )

        writeSummary results ablation.Name |> ignore
        readResults results
