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
open Esm3Structure.Native

/// The training loop: AdamW with warm-up and cosine decay, gradient clipping, running metrics, progress with ETA,
/// `config.json` and `metrics.jsonl` in the run folder, atomic checkpoints and exact resume.
/// Checkpoints: `TrainerCheckpoint`.
module Trainer =

    /// Running averages decay (EMA weight of the past).
    [<Literal>]
    let RunningDecay = 0.9

    /// The live display `ProgressMode.Auto` uses on a terminal; None (the default): lines.
    let mutable terminalDisplay: ITrainingDisplay option = None

    /// Trains `task` for `config.Steps` steps, or until the step that uses up `config.MaxSeconds` (counted over
    /// resumes: the checkpoint stores the training time so far; time after the last checkpoint of an interrupted
    /// attempt is not counted), writing into the run folder `out`: `config.json` (the text given),
    /// `metrics.jsonl` and checkpoints. With `resume`, continues from the last checkpoint of `out` (starting fresh
    /// when there is none); under a step budget the result then equals the uninterrupted run's for the same seed.
    /// Raises `NonFiniteLossException` under `NanPolicy.Stop`.
    let run (config: TrainerConfig) (task: TrainingTask) (out: string) (resume: bool) (configJson: string) =
        Validation.check "trainer" (TrainerConfig.validate config) |> ignore
        // Every step allocates the same large tensors: reuse their pages rather than map fresh ones (NativeHeap).
        use _heap = NativeHeap.retainFreedMemory ()

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

        let previous =
            if resume then
                TrainerCheckpoint.lastCheckpoint out
            else
                None

        let state =
            match previous with
            | Some dir -> TrainerCheckpoint.load dir task optimizer
            | None ->
                {
                    TrainerCheckpoint.Completed = 0
                    Running = Dictionary()
                    LastLoss = nan
                    Skipped = 0
                    Elapsed = 0.0
                }

        match previous with
        | Some _ -> TrainerCheckpoint.truncateMetrics metricsPath state.Completed
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
                        let v = evaluate ()
                        // Validation's longer crops leave free blocks a step does not need: return them.
                        NativeHeap.releaseFree ()
                        v
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
                    File.AppendAllText(metricsPath, TrainingMetrics.rowJson row + "\n")
                    let done_ = state.Completed - startStep
                    report row (clock.Elapsed.TotalSeconds / float (max 1 done_))

                if
                    last
                    || (config.CheckpointEvery > 0 && state.Completed % config.CheckpointEvery = 0)
                then
                    checkpoint <- TrainerCheckpoint.save out config.KeepCheckpoints task optimizer state

        let terminal = not Console.IsOutputRedirected

        match config.Progress, terminalDisplay with
        | ProgressMode.Silent, _ -> loop (fun _ _ -> ())
        | ProgressMode.Auto, Some display when terminal ->
            display.Show(
                config.Steps,
                startStep,
                fun show ->
                    loop (fun row secondsPerStep -> show row (TrainingMetrics.progressLine config row secondsPerStep))
            )
        | _ -> loop (fun row secondsPerStep -> printfn "%s" (TrainingMetrics.progressLine config row secondsPerStep))

        if stoppedOnTime && config.Progress <> ProgressMode.Silent then
            printfn
                "stopped on the time budget (%g s) after step %d of %d (%.1f s of training)"
                config.MaxSeconds
                state.Completed
                config.Steps
                state.Elapsed

        if startStep >= config.Steps && checkpoint = "" then
            checkpoint <- TrainerCheckpoint.save out config.KeepCheckpoints task optimizer state

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
