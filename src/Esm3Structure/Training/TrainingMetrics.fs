namespace Esm3Structure.Training

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure

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
    /// Tensors outside `Model`'s state_dict that a resume needs to continue exactly (e.g. a codebook's dead-code
    /// counters and recent rows), as (name, tensor) pairs; none by default. Saved in `state.safetensors`.
    abstract TrainingState: unit -> (string * torch.Tensor) list
    default _.TrainingState() = []
    /// Restores `TrainingState` from `lookup` (name -> tensor); names it does not find leave that part as it is.
    abstract RestoreTrainingState: lookup: (string -> torch.Tensor option) -> unit
    default _.RestoreTrainingState _ = ()

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
    /// and its log line (`TrainingMetrics.progressLine`) to the function it is given.
    abstract Show: totalSteps: int * startStep: int * body: ((MetricsRow -> string -> unit) -> unit) -> unit

/// The trainer's two renderings of a metrics row: a line of `metrics.jsonl` and the progress line it prints.
module TrainingMetrics =

    /// The JSON text `write` produces, as one line.
    let jsonLine (write: Utf8JsonWriter -> unit) =
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

    let private formatSpan (seconds: float) =
        if Double.IsFinite seconds && seconds >= 0.0 then
            TimeSpan.FromSeconds(Math.Round seconds).ToString()
        else
            "?"

    /// One progress line: step, running loss and terms, learning rate, speed and ETA.

    let progressLine (config: TrainerConfig) (row: MetricsRow) (secondsPerStep: float) =
        let joined (digits: int) (pairs: (string * float)[]) =
            pairs
            |> Array.map (fun (k, v) ->
                k
                + " "
                + v.ToString("F" + string digits, Globalization.CultureInfo.InvariantCulture))
            |> String.concat " "

        let terms =
            if row.Terms.Length = 0 then
                ""
            else
                " (" + joined 4 row.Terms + ")"

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
            "step %d/%d  loss %.4f%s  lr %s  %.2f s/step%s  ETA %s%s"
            row.Step
            config.Steps
            row.RunningLoss
            terms
            (NumberFormat.scientific 2 row.LearningRate)
            secondsPerStep
            stages
            (formatSpan (secondsPerStep * float (config.Steps - row.Step)))
            validation
