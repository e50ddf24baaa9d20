namespace Esm3Structure.Ablations

open System
open System.Diagnostics
open System.IO
open Esm3Structure
open Esm3Structure.Training

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

    /// True when the run's result file exists, reads, and records this run's config (`AblationResults.sameRun`: a
    /// changed config is rerun; a changed bookkeeping field such as `KeepCheckpoints` is not).
    let isDone (results: string) (key: string) (configJson: string) =
        let path = resultPath results key

        File.Exists path
        && (try
                AblationResults.sameRun (AblationResults.readRun path).Config configJson
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
                    && AblationResults.sameRun (File.ReadAllText previous) configJson
                    && TrainerCheckpoint.lastCheckpoint work |> Option.isSome

                log.Invoke(sprintf "%s: %s" key (if resume then "resuming" else "training"))
                let peak = peakMemory ()
                let clock = Stopwatch.StartNew()
                let report = trainer.Train.Invoke(config, work, resume)
                let wall = clock.Elapsed.TotalSeconds
                let memory = peak ()
                let history = AblationResults.readMetrics (Path.Combine(work, "metrics.jsonl"))

                let final =
                    Array.concat
                        [
                            AblationResults.finalMetrics history
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
                AtomicFile.writeText path (AblationResults.toJson result)

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

        AblationReport.writeSummary results ablation.Name |> ignore
        AblationResults.readResults results
