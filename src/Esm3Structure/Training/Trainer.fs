namespace Esm3Structure.Training

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.Io

/// What the trainer does when a step's loss (or gradient norm) is not finite.
type NanPolicy =
    /// End the run with a `NonFiniteLossException`; the last checkpoint stays the last good one.
    | Stop = 0
    /// Skip the optimiser step, count it, and go on.
    | Skip = 1

/// How the trainer reports progress.
type ProgressMode =
    /// A live display when stdout is a terminal and one is installed (`Trainer.terminalDisplay`: the scripts'
    /// Spectre.Console bar), else one line every `LogEvery` steps.
    | Auto = 0
    /// One line every `LogEvery` steps.
    | Lines = 1
    /// Nothing on stdout (metrics.jsonl is still written).
    | Silent = 2

/// Settings of the optimisation loop, shared by every model the trainer drives.
type TrainerConfig =
    {
        /// Optimiser steps of the whole run (also the learning-rate schedule's length).
        Steps: int
        /// Wall-clock budget of the whole run in seconds, counted over resumes (0: none). The run stops after the
        /// step that reaches it, validating and writing a checkpoint as at its last step.
        MaxSeconds: float
        /// Examples per step (the task reads it to build its batches).
        BatchSize: int
        /// Peak learning rate.
        LearningRate: float
        Beta1: float
        Beta2: float
        WeightDecay: float
        /// Linear warm-up steps.
        WarmupSteps: int
        /// The cosine decay ends at LearningRate · FinalFraction.
        FinalFraction: float
        /// Gradient-norm clip (≤ 0: no clipping).
        ClipNorm: float
        /// Validate every this many steps (and at the end); ≤ 0: only at the end.
        EvalEvery: int
        /// Write a checkpoint every this many steps (and at the end); ≤ 0: only at the end.
        CheckpointEvery: int
        /// Log a metrics row every this many steps.
        LogEvery: int
        Seed: int
        OnNan: NanPolicy
        Progress: ProgressMode
    }

/// Defaults and checks of `TrainerConfig`.
module TrainerConfig =

    /// AdamW 4e-4, betas (0.9, 0.95), wd 0.01, clip 1, warm-up 300, cosine to 10 %, 5k steps (ESM3-TRAINING.md §4.2
    /// "small").
    let small =
        {
            Steps = 5000
            MaxSeconds = 0.0
            BatchSize = 8
            LearningRate = 4e-4
            Beta1 = 0.9
            Beta2 = 0.95
            WeightDecay = 0.01
            WarmupSteps = 300
            FinalFraction = 0.1
            ClipNorm = 1.0
            EvalEvery = 500
            CheckpointEvery = 500
            LogEvery = 10
            Seed = 0
            OnNan = NanPolicy.Stop
            Progress = ProgressMode.Auto
        }

    /// `t` cut down for a "smoke" preset (minutes here): 300 steps of batch 4 (warm-up 30), validating and
    /// checkpointing every 100. Every training config's smoke preset uses it.
    let smokeOf (t: TrainerConfig) =
        { t with
            Steps = 300
            BatchSize = 4
            WarmupSteps = 30
            EvalEvery = 100
            CheckpointEvery = 100
        }

    /// The preset called `name` (case and surrounding spaces ignored) among `presets`; an `ArgumentException` naming
    /// the choices otherwise. The one lookup behind every training config's `preset`.
    let pickPreset (presets: (string * 'Config) list) (name: string) : 'Config =
        match presets |> List.tryFind (fun (n, _) -> n = name.Trim().ToLowerInvariant()) with
        | Some(_, c) -> c
        | None ->
            raise (
                ArgumentException(
                    sprintf "unknown preset '%s' (expected %s)" name (String.Join(" or ", presets |> List.map fst))
                )
            )

    /// Errors of the data fields every training config has: crops of at least `minLength` residues, a number of
    /// validation chains ≥ 0 and a validation length of at least `minLength`.
    let validateData (minLength: int) (cropLength: int) (validChains: int) (validLength: int) =
        [
            if cropLength < minLength then
                sprintf "CropLength must be at least %d (got %d)" minLength cropLength
            if validChains < 0 then
                sprintf "ValidChains must be ≥ 0 (got %d)" validChains
            if validLength < minLength then
                sprintf "ValidLength must be at least %d (got %d)" minLength validLength
        ]

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: TrainerConfig) =
        [
            if c.Steps < 1 then
                sprintf "Steps must be at least 1 (got %d)" c.Steps
            if not (c.MaxSeconds >= 0.0 && c.MaxSeconds < infinity) then
                sprintf "MaxSeconds must be ≥ 0 and finite (0: no time limit) (got %g)" c.MaxSeconds
            if c.BatchSize < 1 then
                sprintf "BatchSize must be at least 1 (got %d)" c.BatchSize
            if not (c.LearningRate > 0.0) then
                sprintf "LearningRate must be positive (got %g)" c.LearningRate
            if not (c.Beta1 >= 0.0 && c.Beta1 < 1.0 && c.Beta2 >= 0.0 && c.Beta2 < 1.0) then
                sprintf "Beta1 and Beta2 must lie in [0, 1) (got %g, %g)" c.Beta1 c.Beta2
            if not (c.WeightDecay >= 0.0) then
                sprintf "WeightDecay must be ≥ 0 (got %g)" c.WeightDecay
            if c.WarmupSteps < 0 then
                sprintf "WarmupSteps must be ≥ 0 (got %d)" c.WarmupSteps
            if not (c.FinalFraction >= 0.0 && c.FinalFraction <= 1.0) then
                sprintf "FinalFraction must lie in [0, 1] (got %g)" c.FinalFraction
            if c.LogEvery < 1 then
                sprintf "LogEvery must be at least 1 (got %d)" c.LogEvery
        ]
        |> Validation.ofErrors c

/// Wall-clock laps of one training step's stages (data, encoder, …), in the order they ran. On the CPU every
/// TorchSharp call has finished when it returns, so a lap is the stage's own time.
type StageClock() =
    let watch = Stopwatch.StartNew()
    let laps = ResizeArray<string * float>()

    /// Ends the current stage, naming it, and starts the next.
    member _.Lap(stage: string) =
        laps.Add((stage, watch.Elapsed.TotalSeconds))
        watch.Restart()

    /// The stages so far, seconds each.
    member _.Laps = laps.ToArray()

/// The loss of one training step and its named parts (for logging; the parts need not sum to the loss).
type TrainingStep =
    {
        /// The scalar to minimise.
        Loss: torch.Tensor
        /// Named scalar terms.
        Terms: (string * torch.Tensor)[]
        /// Seconds of the task's stages of this step (`StageClock.Laps`; may be empty). The trainer adds its own
        /// "backward" (with gradient clipping) and "optimizer".
        Stages: (string * float)[]
    }

/// A model the trainer can drive. `Step` must be deterministic in the step index and the state the trainer
/// saves (the module's state_dict and the generators' states), so that a resumed run repeats the uninterrupted one.
[<AbstractClass>]
type TrainingTask() =
    /// Every parameter and buffer that training changes; saved whole in `model.safetensors` for resume. Parameters
    /// with `requires_grad` false are saved but not optimised (frozen).
    abstract Model: torch.nn.Module
    /// Random generators whose state must survive a resume (e.g. a codebook's restart draws).
    abstract Generators: torch.Generator[]
    /// The loss of step `step` (0-based), on the batch that step draws. Called in training mode, in a dispose
    /// scope the trainer owns.
    abstract Step: step: int -> TrainingStep
    /// Metrics on the validation set (called in eval mode, without gradient, in a dispose scope).
    abstract Evaluate: unit -> (string * float)[]
    /// Writes the release files (e.g. ESM-format safetensors) into `folder`.
    abstract Export: folder: string -> unit

/// A run's loss became NaN or infinite under `NanPolicy.Stop`.
type NonFiniteLossException(message: string) =
    inherit Exception(message)

/// One row of `metrics.jsonl`.
type MetricsRow =
    {
        Step: int
        LearningRate: float
        /// The loss of this step.
        Loss: float
        /// Exponential moving average (0.9) of the loss.
        RunningLoss: float
        /// Running averages of the named terms.
        Terms: (string * float)[]
        /// Validation metrics (empty unless validated at this step).
        Validation: (string * float)[]
        /// Steps skipped so far for a non-finite loss.
        Skipped: int
        Seconds: float
        /// Mean seconds per step of each stage over the steps since the previous row (`TrainingStep.Stages`, then
        /// "backward" and "optimizer").
        StageSeconds: (string * float)[]
        /// Native tensors alive on this thread after the step (flat when nothing leaks).
        LiveTensors: int64
        /// True on the last row of a run that stopped on its time budget (`MaxSeconds`) before `Steps`.
        StoppedOnTime: bool
    }

/// The outcome of `Trainer.run`.
type TrainReport =
    {
        /// Steps completed (including any done before a resume).
        Steps: int
        /// True when the run stopped on its time budget (`MaxSeconds`) before `Steps`.
        StoppedOnTime: bool
        /// Training time of the whole run in seconds, including the time of earlier attempts up to the checkpoint
        /// this call resumed from.
        ElapsedSeconds: float
        /// The last step's loss.
        FinalLoss: float
        RunningLoss: float
        Skipped: int
        /// The rows logged by this call.
        History: MetricsRow[]
        /// The last checkpoint folder.
        Checkpoint: string
    }


/// A live view of a run, used for `ProgressMode.Auto` when stdout is a terminal. The library has none (it prints
/// lines, as `Lines` does); the scripts install a Spectre.Console bar (`App.Progress`) in `Trainer.terminalDisplay`.
type ITrainingDisplay =
    /// Runs `body` while the view is live, over `totalSteps` steps from `startStep`; `body` passes each logged row
    /// and its log line (`Trainer.progressLine`) to the function it is given.
    abstract Show: totalSteps: int * startStep: int * body: ((MetricsRow -> string -> unit) -> unit) -> unit

/// The training loop: AdamW with warm-up and cosine decay, gradient clipping, running metrics, progress with ETA,
/// `config.json` and `metrics.jsonl` in the run folder, atomic checkpoints and exact resume.
/// Checkpoint folder `<out>/checkpoints/step-NNNNNN/`: `model.safetensors` (the task's whole state_dict),
/// `optimizer.bin` (TorchSharp's AdamW state: moments and step counts), `rng.safetensors` (generator states),
/// `trainer.json` (step, running metrics, skipped count) and the task's export files; `<out>/checkpoints/last`
/// names the newest complete one.
module Trainer =

    /// Running averages decay (EMA weight of the past).
    [<Literal>]
    let RunningDecay = 0.9

    /// Checkpoints kept (older ones are deleted).
    [<Literal>]
    let KeepCheckpoints = 2

    /// `<out>/checkpoints`
    let checkpointsFolder (out: string) = Path.Combine(out, "checkpoints")

    /// The file a checkpoint folder gets last, just before the folder is renamed into place.
    [<Literal>]
    let private StateFile = "trainer.json"

    /// The newest complete checkpoint of a run folder, if any: the folder `<out>/checkpoints/last` names, when it
    /// holds `trainer.json`. A checkpoint is written into `step-NNNNNN.tmp-<pid>` and renamed to `step-NNNNNN` only
    /// when complete, then `last` is replaced atomically; a process killed at any moment leaves `last` naming the
    /// previous complete checkpoint (the half-written `.tmp-` folder is never taken, and the next checkpoint
    /// removes it).
    let lastCheckpoint (out: string) : string option =
        let pointer = Path.Combine(checkpointsFolder out, "last")

        if File.Exists pointer then
            let name = File.ReadAllText(pointer).Trim()
            let dir = Path.Combine(checkpointsFolder out, name)

            if
                name <> ""
                && not (name.Contains ".tmp-")
                && File.Exists(Path.Combine(dir, StateFile))
            then
                Some dir
            else
                None
        else
            None

    let private jsonLine (write: Utf8JsonWriter -> unit) =
        use buffer = new MemoryStream()

        do
            use w = new Utf8JsonWriter(buffer)
            write w

        Encoding.UTF8.GetString(buffer.ToArray())

    /// A metrics row as one JSON line.
    let rowJson (row: MetricsRow) =
        jsonLine (fun w ->
            w.WriteStartObject()
            w.WriteNumber("step", row.Step)
            w.WriteNumber("lr", row.LearningRate)
            Json.writeNumberObject w "values" [| "loss", row.Loss; "running_loss", row.RunningLoss |]
            Json.writeNumberObject w "terms" row.Terms
            Json.writeNumberObject w "validation" row.Validation
            w.WriteNumber("skipped", row.Skipped)
            w.WriteNumber("seconds", row.Seconds)
            Json.writeNumberObject w "stage_seconds" row.StageSeconds
            w.WriteNumber("live_tensors", row.LiveTensors)
            w.WriteBoolean("stopped_on_time", row.StoppedOnTime)
            w.WriteEndObject())

    type private State =
        {
            mutable Completed: int
            mutable Running: Dictionary<string, float>
            mutable LastLoss: float
            mutable Skipped: int
            /// Training seconds of the run so far, over resumes.
            mutable Elapsed: float
        }

    let private stateJson (s: State) =
        jsonLine (fun w ->
            w.WriteStartObject()
            w.WriteNumber("step", s.Completed)
            w.WriteNumber("last_loss", s.LastLoss)
            w.WriteNumber("skipped", s.Skipped)
            w.WriteNumber("elapsed_seconds", s.Elapsed)
            Json.writeNumberObject w "running" [| for kv in s.Running -> kv.Key, kv.Value |]
            w.WriteEndObject())

    let private readState (file: string) : State =
        let fail field message =
            InputError.raise file (InputLocation.Field field) message

        let root =
            try
                JsonDocument.Parse(File.ReadAllText file).RootElement
            with :? JsonException as e ->
                InputError.raise file InputLocation.Whole ("not valid JSON: " + e.Message)

        let number (e: JsonElement) field =
            match e.ValueKind with
            | JsonValueKind.Number -> e.GetDouble()
            | JsonValueKind.String ->
                match
                    Double.TryParse(
                        e.GetString(),
                        Globalization.NumberStyles.Float,
                        Globalization.CultureInfo.InvariantCulture
                    )
                with
                | true, v -> v
                | _ -> fail field "expected a number"
            | _ -> fail field "expected a number"

        let get field =
            match root.TryGetProperty(field: string) with
            | true, v -> v
            | _ -> fail field "missing"

        let running = Dictionary<string, float>()

        for p in (get "running").EnumerateObject() do
            running.[p.Name] <- number p.Value ("running." + p.Name)

        {
            Completed = int (number (get "step") "step")
            Running = running
            LastLoss = number (get "last_loss") "last_loss"
            Skipped = int (number (get "skipped") "skipped")
            // absent in checkpoints written before the time budget existed: no time counted
            Elapsed =
                match root.TryGetProperty "elapsed_seconds" with
                | true, v -> number v "elapsed_seconds"
                | _ -> 0.0
        }

    let private saveCheckpoint (out: string) (task: TrainingTask) (optimizer: Modules.AdamW) (state: State) : string =
        let root = checkpointsFolder out
        Directory.CreateDirectory root |> ignore
        let name = sprintf "step-%06d" state.Completed
        let final = Path.Combine(root, name)
        let temp = final + ".tmp-" + string Environment.ProcessId

        // Leftovers of checkpoint writes that were killed or failed (`*.tmp-<pid>` folders and files).
        for leftover in Directory.GetDirectories(root, "*.tmp-*") do
            Directory.Delete(leftover, true)

        for leftover in Directory.GetFiles(root, "*.tmp-*") do
            File.Delete leftover

        Directory.CreateDirectory temp |> ignore

        try
            Checkpoint.save (Path.Combine(temp, "model.safetensors")) task.Model null

            do
                use file = File.Create(Path.Combine(temp, "optimizer.bin"))
                use writer = new BinaryWriter(file)
                optimizer.save_state_dict writer
                writer.Flush()
                file.Flush true

            do
                use _ = torch.NewDisposeScope()

                let states =
                    task.Generators
                    |> Array.mapi (fun i g -> sprintf "generator.%d" i, g.get_state ())
                    |> List.ofArray

                Safetensors.write (Path.Combine(temp, "rng.safetensors")) states null

            task.Export temp
            // Written last: `lastCheckpoint` takes a folder only when it holds this file.
            AtomicFile.writeText (Path.Combine(temp, StateFile)) (stateJson state)
        with _ ->
            (try
                Directory.Delete(temp, true)
             with _ ->
                 ())

            reraise ()

        // The switch: every file above is complete and flushed to disk (fsync); one rename makes the folder visible
        // under its final name, then `last` is replaced atomically. Killed before the rename, `last` still names the
        // previous checkpoint; killed between the two, `last` does too and the next save replaces `final`.
        if Directory.Exists final then
            Directory.Delete(final, true)

        Directory.Move(temp, final)
        AtomicFile.writeText (Path.Combine(root, "last")) name

        // Prune older complete checkpoints.
        let older =
            Directory.GetDirectories(root, "step-*")
            |> Array.filter (fun d -> not (Path.GetFileName(d).Contains ".tmp-"))
            |> Array.sort

        for d in older.[.. older.Length - 1 - KeepCheckpoints] do
            Directory.Delete(d, true)

        final

    let private loadCheckpoint (dir: string) (task: TrainingTask) (optimizer: Modules.AdamW) : State =
        Checkpoint.load (Path.Combine(dir, "model.safetensors")) task.Model

        do
            let path = Path.Combine(dir, "optimizer.bin")
            use file = File.OpenRead path
            use reader = new BinaryReader(file)

            try
                optimizer.load_state_dict reader
            with e when not (e :? InputException) ->
                InputError.raise path InputLocation.Whole ("not this model's AdamW state: " + e.Message)

        do
            use _ = torch.NewDisposeScope()
            let path = Path.Combine(dir, "rng.safetensors")
            let file = Safetensors.read path
            let table = dict file.Tensors

            task.Generators
            |> Array.iteri (fun i g ->
                let key = sprintf "generator.%d" i

                match table.TryGetValue key with
                | true, t -> g.set_state t
                | _ -> InputError.raise path (InputLocation.Field key) "missing generator state")

        readState (Path.Combine(dir, StateFile))

    /// Metrics rows of `metrics.jsonl` up to step `upTo` (the rest belongs to an interrupted tail).
    let private truncateMetrics (path: string) (upTo: int) =
        if File.Exists path then
            let keep =
                File.ReadAllLines path
                |> Array.filter (fun line ->
                    line.Trim() <> ""
                    && (try
                            JsonDocument.Parse(line).RootElement.GetProperty("step").GetInt32() <= upTo
                        with _ ->
                            false))

            AtomicFile.writeText path (String.Join("", keep |> Array.map (fun l -> l + "\n")))

    let private formatSpan (seconds: float) =
        if Double.IsFinite seconds && seconds >= 0.0 then
            TimeSpan.FromSeconds(Math.Round seconds).ToString()
        else
            "?"

    /// The live display `ProgressMode.Auto` uses on a terminal; None (the default): lines.
    let mutable terminalDisplay: ITrainingDisplay option = None

    /// One progress line: step, running loss and terms, learning rate, speed and ETA.

    let progressLine (config: TrainerConfig) (row: MetricsRow) (secondsPerStep: float) =
        let joined (digits: int) (pairs: (string * float)[]) =
            pairs
            |> Array.map (fun (k, v) ->
                k
                + " "
                + v.ToString("F" + string digits, Globalization.CultureInfo.InvariantCulture))
            |> String.concat " "

        let terms = joined 4 row.Terms

        let validation =
            if row.Validation.Length = 0 then
                ""
            else
                "  valid: " + joined 4 row.Validation

        let stages =
            if row.StageSeconds.Length = 0 then
                ""
            else
                "  [" + joined 3 row.StageSeconds + " s]"

        sprintf
            "step %d/%d  loss %.4f (%s)  lr %s  %.2f s/step%s  ETA %s%s"
            row.Step
            config.Steps
            row.RunningLoss
            terms
            (NumberFormat.scientific 2 row.LearningRate)
            secondsPerStep
            stages
            (formatSpan (secondsPerStep * float (config.Steps - row.Step)))
            validation

    /// Trains `task` for `config.Steps` steps, or until the step that uses up `config.MaxSeconds` (counted over
    /// resumes: the checkpoint stores the training time so far; time after the last checkpoint of an interrupted
    /// attempt is not counted), writing into the run folder `out`: `config.json` (the text given),
    /// `metrics.jsonl` and checkpoints. With `resume`, continues from the last checkpoint of `out` (starting fresh
    /// when there is none); under a step budget the result then equals the uninterrupted run's for the same seed.
    /// Raises `NonFiniteLossException` under `NanPolicy.Stop`.
    let run (config: TrainerConfig) (task: TrainingTask) (out: string) (resume: bool) (configJson: string) =
        Validation.check "trainer" (TrainerConfig.validate config) |> ignore

        Directory.CreateDirectory out |> ignore
        AtomicFile.writeText (Path.Combine(out, "config.json")) configJson
        let metricsPath = Path.Combine(out, "metrics.jsonl")
        let model = task.Model
        // Frozen parameters (requires_grad false, e.g. the trunk under a confidence-head run) are not optimised.
        let trained =
            model.parameters () |> Seq.filter (fun p -> p.requires_grad) |> Array.ofSeq

        use optimizer =
            torch.optim.AdamW(
                trained,
                lr = config.LearningRate,
                beta1 = config.Beta1,
                beta2 = config.Beta2,
                weight_decay = config.WeightDecay
            )

        let previous = if resume then lastCheckpoint out else None

        let state =
            match previous with
            | Some dir -> loadCheckpoint dir task optimizer
            | None ->
                {
                    Completed = 0
                    Running = Dictionary()
                    LastLoss = nan
                    Skipped = 0
                    Elapsed = 0.0
                }

        match previous with
        | Some _ -> truncateMetrics metricsPath state.Completed
        | None ->
            if File.Exists metricsPath then
                File.Delete metricsPath

        let history = ResizeArray<MetricsRow>()
        // Stage seconds summed since the last logged row, in first-seen order (not saved: timings do not resume).
        let stageSums = ResizeArray<string * float>()
        let mutable stageSteps = 0

        let addStages (laps: (string * float)[]) =
            for name, seconds in laps do
                match Seq.tryFindIndex (fun (n, _) -> n = name) stageSums with
                | Some i -> stageSums.[i] <- (name, snd stageSums.[i] + seconds)
                | None -> stageSums.Add((name, seconds))

            stageSteps <- stageSteps + 1

        let mutable checkpoint = defaultArg previous ""
        let clock = Stopwatch.StartNew()
        let startStep = state.Completed
        // The time budget counts the training time of earlier attempts (stored in the checkpoint) too.
        let before = state.Elapsed

        let timeUp () =
            config.MaxSeconds > 0.0 && state.Elapsed >= config.MaxSeconds

        // True from the step that used up the time budget on; already true when resuming from the checkpoint that
        // such a step wrote (non-final checkpoints store the time after their step, always under the budget).
        let mutable stoppedOnTime = startStep < config.Steps && timeUp ()

        let running (name: string) (value: float) =
            let v =
                match state.Running.TryGetValue name with
                | true, r when Double.IsFinite r -> RunningDecay * r + (1.0 - RunningDecay) * value
                | _ -> value

            state.Running.[name] <- v
            v

        let evaluate () =
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            model.eval ()

            try
                task.Evaluate()
            finally
                model.train ()

        let loop (report: MetricsRow -> float -> unit) =
            model.train ()

            let mutable next = startStep

            while next < config.Steps && not stoppedOnTime do
                let step = next
                next <- step + 1

                let lr =
                    Schedule.warmupCosine config.LearningRate config.WarmupSteps config.Steps config.FinalFraction step

                for group in optimizer.ParamGroups do
                    group.LearningRate <- lr

                let loss, terms =
                    use _ = torch.NewDisposeScope()
                    optimizer.zero_grad ()
                    let out = task.Step step
                    let loss = out.Loss.ToDouble()
                    let terms = out.Terms |> Array.map (fun (k, t) -> k, t.ToDouble())
                    let stageClock = StageClock()

                    let finite =
                        if Double.IsFinite loss then
                            out.Loss.backward ()

                            let norm =
                                if config.ClipNorm > 0.0 then
                                    torch.nn.utils.clip_grad_norm_ (trained, config.ClipNorm)
                                else
                                    0.0

                            stageClock.Lap "backward"
                            Double.IsFinite norm
                        else
                            false

                    if finite then
                        optimizer.step () |> ignore
                        stageClock.Lap "optimizer"
                        addStages (Array.append out.Stages stageClock.Laps)
                    else
                        optimizer.zero_grad ()

                        match config.OnNan with
                        | NanPolicy.Skip -> state.Skipped <- state.Skipped + 1
                        | _ ->
                            let where =
                                if checkpoint = "" then
                                    "no checkpoint was written yet"
                                else
                                    "the last good checkpoint is " + checkpoint

                            raise (
                                NonFiniteLossException(
                                    sprintf
                                        "step %d: the loss (%g) or its gradient is not finite (terms: %s); training stopped, %s"
                                        (step + 1)
                                        loss
                                        (terms |> Array.map (fun (k, v) -> sprintf "%s %g" k v) |> String.concat ", ")
                                        where
                                )
                            )

                    loss, terms

                state.Completed <- step + 1

                if Double.IsFinite loss then
                    state.LastLoss <- loss
                    running "loss" loss |> ignore

                    for k, v in terms do
                        running k v |> ignore

                state.Elapsed <- before + clock.Elapsed.TotalSeconds
                stoppedOnTime <- state.Completed < config.Steps && timeUp ()
                let last = state.Completed = config.Steps || stoppedOnTime

                let validation =
                    if last || (config.EvalEvery > 0 && state.Completed % config.EvalEvery = 0) then
                        evaluate ()
                    else
                        [||]

                if last || validation.Length > 0 || state.Completed % config.LogEvery = 0 then
                    let row =
                        {
                            Step = state.Completed
                            LearningRate = lr
                            Loss = loss
                            RunningLoss = state.Running.GetValueOrDefault("loss", nan)
                            Terms = terms |> Array.map (fun (k, _) -> k, state.Running.GetValueOrDefault(k, nan))
                            Validation = validation
                            Skipped = state.Skipped
                            Seconds = clock.Elapsed.TotalSeconds
                            StageSeconds = [| for name, sum in stageSums -> name, sum / float (max 1 stageSteps) |]
                            LiveTensors = DisposeScopeManager.Statistics.ThreadTotalLiveCount
                            StoppedOnTime = stoppedOnTime
                        }

                    history.Add row
                    stageSums.Clear()
                    stageSteps <- 0
                    File.AppendAllText(metricsPath, rowJson row + "\n")
                    let done_ = state.Completed - startStep
                    report row (clock.Elapsed.TotalSeconds / float (max 1 done_))

                if
                    last
                    || (config.CheckpointEvery > 0 && state.Completed % config.CheckpointEvery = 0)
                then
                    checkpoint <- saveCheckpoint out task optimizer state

        let terminal = not Console.IsOutputRedirected

        match config.Progress, terminalDisplay with
        | ProgressMode.Silent, _ -> loop (fun _ _ -> ())
        | ProgressMode.Auto, Some display when terminal ->
            display.Show(
                config.Steps,
                startStep,
                fun show -> loop (fun row secondsPerStep -> show row (progressLine config row secondsPerStep))
            )
        | _ -> loop (fun row secondsPerStep -> printfn "%s" (progressLine config row secondsPerStep))

        if stoppedOnTime && config.Progress <> ProgressMode.Silent then
            printfn
                "stopped on the time budget (%g s) after step %d of %d (%.1f s of training)"
                config.MaxSeconds
                state.Completed
                config.Steps
                state.Elapsed

        if startStep >= config.Steps && checkpoint = "" then
            checkpoint <- saveCheckpoint out task optimizer state

        {
            Steps = state.Completed
            StoppedOnTime = stoppedOnTime
            ElapsedSeconds = state.Elapsed
            FinalLoss = state.LastLoss
            RunningLoss = state.Running.GetValueOrDefault("loss", nan)
            Skipped = state.Skipped
            History = history.ToArray()
            Checkpoint = checkpoint
        }
