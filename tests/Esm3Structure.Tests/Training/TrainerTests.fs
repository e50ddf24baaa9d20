module Esm3Structure.Tests.Training.TrainerTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Native
open Esm3Structure.Training
open Esm3Structure.Tests

/// A linear regression with noisy targets: each step draws its batch from (seed, step), and its noise from a
/// generator whose state the trainer must carry over a resume. It fails (throws) at `crashAt` and returns a NaN
/// loss at `nanAt` (1-based steps; 0 = never). Each step sleeps `sleepMs` ms first (for the time budget). Its
/// `failExportAt`-th export (0 = never) writes half a file and then fails like a full disk.
type private Regression(seed: int, crashAt: int, nanAt: int, sleepMs: int, failExportAt: int) =
    inherit TrainingTask()
    let mutable exports = 0
    let model = torch.nn.Linear(5L, 1L, dtype = torch.float64)
    let generator = new torch.Generator(uint64 seed + 11UL)
    let truth = torch.tensor ([| 1.0; -2.0; 0.5; 3.0; -1.0 |], dtype = torch.float64)

    do
        truth.DetachFromDisposeScope() |> ignore
        use _ = torch.no_grad ()
        let g = new torch.Generator(uint64 seed)

        for p in model.parameters () do
            p.copy_ (torch.randn (p.shape, dtype = torch.float64, generator = g)) |> ignore

    member _.Linear = model

    override _.Model = model :> torch.nn.Module
    override _.Generators = [| generator |]

    override _.Step(step: int) =
        if step + 1 = crashAt then
            failwith "simulated crash"

        if sleepMs > 0 then
            Threading.Thread.Sleep sleepMs

        let clock = StageClock()
        let random = Random(seed * 7919 + step)

        let x =
            torch.tensor(Array.init 40 (fun _ -> random.NextDouble() * 2.0 - 1.0)).reshape(8L, 5L)

        let noise =
            torch.randn ([| 8L |], dtype = torch.float64, generator = generator) * 0.01

        let y = x.matmul truth + noise
        clock.Lap "data"
        let mse = (model.forward(x).squeeze(-1L) - y).square().mean()
        let loss = if step + 1 = nanAt then mse * Double.NaN else mse

        {
            Loss = loss
            Terms = [| "mse", mse |]
            Stages =
                (clock.Lap "forward"
                 clock.Laps)
        }

    override _.Evaluate() =
        [| "weight_error", (model.weight.squeeze (0L) - truth).abs().max().ToDouble() |]

    override _.Export(folder: string) =
        exports <- exports + 1
        Checkpoint.save (Path.Combine(folder, "linear.safetensors")) model null

        if exports = failExportAt then
            use file = File.Create(Path.Combine(folder, "extra.bin"))
            file.Write(Array.zeroCreate 4096, 0, 4096)
            raise (IOException "No space left on device (simulated)")

    new(seed, crashAt, nanAt, sleepMs) = Regression(seed, crashAt, nanAt, sleepMs, 0)
    new(seed, crashAt, nanAt) = Regression(seed, crashAt, nanAt, 0, 0)

/// `Regression`, recording at each step whether freed native memory is being kept for reuse (`NativeHeap`).
type private HeapProbe() =
    inherit Regression(1, 0, 0)
    member val Retaining = ResizeArray<bool>()

    override this.Step(step: int) =
        this.Retaining.Add(NativeHeap.isRetaining ())
        base.Step step

let private config =
    { TrainerConfig.small with
        Steps = 30
        BatchSize = 8
        LearningRate = 0.3
        WarmupSteps = 3
        EvalEvery = 10
        CheckpointEvery = 5
        LogEvery = 1
        Seed = 3
        Progress = ProgressMode.Silent
    }

let private run (c: TrainerConfig) (task: TrainingTask) (out: string) (resume: bool) =
    Trainer.run c task out resume "{}"

[<Tests>]
let tests =
    testList
        "Training/Trainer"
        [
            test
                "the progress line prints the learning rate with a two-digit exponent, and terms only when there are some" {
                let row =
                    {
                        Step = 7
                        LearningRate = 1.33e-5
                        Loss = 0.5
                        RunningLoss = 0.25
                        Terms = [| "mse", 0.125 |]
                        Validation = [||]
                        Skipped = 0
                        Seconds = 1.0
                        StageSeconds = [||]
                        LiveTensors = 0L
                        StoppedOnTime = false
                    }

                let line = TrainingMetrics.progressLine config row 0.5
                Expect.stringContains line "lr 1.33e-05 " "lr"
                Expect.isFalse (line.Contains "e-005") "no three-digit exponent"
                Expect.stringContains line "loss 0.2500 (mse 0.1250)  lr" "terms in parentheses"
                let bare = TrainingMetrics.progressLine config { row with Terms = [||] } 0.5
                Expect.stringContains bare "loss 0.2500  lr" "no empty parentheses without terms"
            }

            test "a short run lowers the loss, validates, logs every step and writes config.json and checkpoints" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let report = run config (Regression(3, 0, 0, 0)) dir.Path false
                Expect.equal report.Steps 30 "steps"
                Expect.equal report.History.Length 30 "one row per step"
                let first = report.History.[0].Loss
                Expect.isLessThan report.FinalLoss (first / 10.0) "loss falls by 10×"
                Expect.equal report.History.[9].Validation.Length 1 "validated at step 10"
                Expect.isEmpty report.History.[10].Validation "not at step 11"
                Expect.equal (File.ReadAllLines(dir.File "metrics.jsonl").Length) 30 "metrics.jsonl rows"
                Expect.equal (File.ReadAllText(dir.File "config.json")) "{}" "config.json"

                for row in report.History do
                    Expect.sequenceEqual
                        (row.StageSeconds |> Array.map fst)
                        [| "data"; "forward"; "backward"; "optimizer" |]
                        "the task's stages, then the trainer's"

                    Expect.all (row.StageSeconds |> Array.map snd) (fun t -> t >= 0.0 && t < 60.0) "seconds"

                Expect.stringContains
                    (File.ReadAllLines(dir.File "metrics.jsonl").[0])
                    "\"stage_seconds\":{\"data\":"
                    "metrics.jsonl has the stage timings"

                Expect.equal
                    (TrainerCheckpoint.lastCheckpoint dir.Path)
                    (Some(Path.Combine(dir.Path, "checkpoints", "step-000030")))
                    "last"

                let kept =
                    Directory.GetDirectories(Path.Combine(dir.Path, "checkpoints"))
                    |> Array.map Path.GetFileName
                    |> Array.sort

                Expect.sequenceEqual kept [| "step-000025"; "step-000030" |] "two checkpoints kept"

                for f in
                    [
                        "model.safetensors"
                        "optimizer.bin"
                        "rng.safetensors"
                        "trainer.json"
                        "linear.safetensors"
                    ] do
                    Expect.isTrue (File.Exists(Path.Combine(report.Checkpoint, f))) f
            }

            // On the process's first thread every step retains (Scripts/NativeHeap, in a child script).
            test "on a worker thread the trainer leaves glibc's heap as it is" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let task = HeapProbe()
                run { config with Steps = 6 } task dir.Path false |> ignore
                let first = NativeHeap.isMainThread ()

                Expect.sequenceEqual
                    task.Retaining
                    (Array.create 6 first)
                    "each of the 6 steps: retaining only on the first thread"

                Expect.isFalse (NativeHeap.isRetaining ()) "nothing left open after the run"
            }

            test "KeepCheckpoints keeps the newest N checkpoints, 0 keeps every one, and a negative count is refused" {
                use _ = torch.NewDisposeScope()

                let kept (keep: int) =
                    use dir = new TempDir()

                    run
                        { config with
                            Steps = 20
                            KeepCheckpoints = keep
                        }
                        (Regression(3, 0, 0, 0))
                        dir.Path
                        false
                    |> ignore

                    Directory.GetDirectories(Path.Combine(dir.Path, "checkpoints"))
                    |> Array.map Path.GetFileName
                    |> Array.sort

                Expect.sequenceEqual (kept 0) [| "step-000005"; "step-000010"; "step-000015"; "step-000020" |] "all"
                Expect.sequenceEqual (kept 3) [| "step-000010"; "step-000015"; "step-000020" |] "newest three"
                Expect.sequenceEqual (kept 1) [| "step-000020" |] "newest one"

                Expect.equal
                    (Validation.errors (TrainerConfig.validate { config with KeepCheckpoints = -1 }))
                    [ "KeepCheckpoints must be ≥ 0 (0: keep every checkpoint) (got -1)" ]
                    "negative"
            }

            test "a crashed run resumed from its last checkpoint ends with exactly the uninterrupted run's metrics" {
                use _ = torch.NewDisposeScope()
                use a = new TempDir()
                use b = new TempDir()
                let whole = run config (Regression(3, 0, 0, 0)) a.Path false
                Expect.throws (fun () -> run config (Regression(3, 13, 0, 0)) b.Path false |> ignore) "crash at 13"

                Expect.equal
                    (TrainerCheckpoint.lastCheckpoint b.Path)
                    (Some(Path.Combine(b.Path, "checkpoints", "step-000010")))
                    "last good"

                let resumed = run config (Regression(3, 0, 0, 0)) b.Path true
                Expect.equal resumed.History.[0].Step 11 "resumed after step 10"
                // Loaded tensors may sit at other memory alignments, and BLAS kernels then round differently in
                // the last bit; the run must agree to far more digits than the progress line prints.
                let agree = { absolute = 1e-12; relative = 1e-9 }

                for row in resumed.History do
                    let same = whole.History.[row.Step - 1]
                    Expect.floatClose agree row.Loss same.Loss (sprintf "loss at step %d" row.Step)

                    for (k, v), (_, w) in Array.zip row.Validation same.Validation do
                        Expect.floatClose agree v w (sprintf "%s at step %d" k row.Step)

                Expect.equal (sprintf "%.6f" resumed.FinalLoss) (sprintf "%.6f" whole.FinalLoss) "final loss as printed"
                Expect.floatClose agree resumed.RunningLoss whole.RunningLoss "running loss"

                Expect.equal
                    (File.ReadAllLines(b.File "metrics.jsonl").Length)
                    30
                    "metrics.jsonl has no duplicated rows"
            }

            test "a NaN loss stops the run with a clear message and keeps the last good checkpoint; Skip goes on" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let e =
                    Expect.throwsT<NonFiniteLossException>
                        (fun () -> run config (Regression(3, 0, 8, 0)) dir.Path false |> ignore)
                        "stops"

                ignore e

                let message =
                    try
                        run config (Regression(3, 0, 8, 0)) dir.Path false |> ignore
                        ""
                    with :? NonFiniteLossException as e ->
                        e.Message

                Expect.stringContains message "step 8" "names the step"
                Expect.stringContains message "step-000005" "names the last good checkpoint"
                let last = TrainerCheckpoint.lastCheckpoint dir.Path
                Expect.equal last (Some(Path.Combine(dir.Path, "checkpoints", "step-000005"))) "checkpoint 5 kept"
                use fresh = torch.nn.Linear(5L, 1L, dtype = torch.float64)
                Checkpoint.load (Path.Combine(last.Value, "model.safetensors")) fresh
                Expect.isTrue (torch.isfinite(fresh.weight).all().ToBoolean()) "finite weights"
                use skip = new TempDir()

                let report =
                    run { config with OnNan = NanPolicy.Skip } (Regression(3, 0, 8, 0)) skip.Path false

                Expect.equal report.Skipped 1 "one step skipped"
                Expect.equal report.Steps 30 "completed"
                Expect.isTrue (Double.IsFinite report.FinalLoss) "finite final loss"
            }

            test "a time budget stops the run after the step that reaches it, validating and checkpointing it" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                // Every step sleeps 60 ms, so the first step alone uses up a 50 ms budget.
                let timed = { config with MaxSeconds = 0.05 }
                let report = run timed (Regression(3, 0, 0, 60)) dir.Path false
                Expect.isTrue report.StoppedOnTime "stopped on time"
                Expect.equal report.Steps 1 "after the first step"
                Expect.isGreaterThanOrEqual report.ElapsedSeconds 0.05 "the budget is used up"
                let last = report.History.[report.History.Length - 1]
                Expect.isTrue last.StoppedOnTime "the last row says so"
                Expect.equal last.Validation.Length 1 "validated at the stop"

                Expect.equal
                    (TrainerCheckpoint.lastCheckpoint dir.Path)
                    (Some(Path.Combine(dir.Path, "checkpoints", "step-000001")))
                    "a final checkpoint"

                let row = File.ReadAllLines(dir.File "metrics.jsonl") |> Array.last
                Expect.stringContains row "\"stopped_on_time\":true" "metrics.jsonl says so"
                // without a budget the same task runs every step
                use whole = new TempDir()
                let full = run { config with Steps = 3 } (Regression(3, 0, 0, 60)) whole.Path false
                Expect.isFalse full.StoppedOnTime "no budget"
                Expect.equal full.Steps 3 "all steps"
            }

            test "a resumed run counts the time spent before its checkpoint" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                // 3 steps of ≥ 50 ms each are checkpointed, then step 4 crashes: the checkpoint holds ≥ 0.15 s.
                let first = { config with CheckpointEvery = 1 }

                Expect.throws (fun () -> run first (Regression(3, 4, 0, 50)) dir.Path false |> ignore) "crash at step 4"

                let stored =
                    Text.Json.JsonDocument
                        .Parse(File.ReadAllText(Path.Combine(dir.Path, "checkpoints", "step-000003", "trainer.json")))
                        .RootElement.GetProperty("elapsed_seconds")
                        .GetDouble()

                Expect.isGreaterThanOrEqual stored 0.15 "the checkpoint stores the time so far"
                // With a 0.12 s budget, a resume that counted from zero would train on; this one is already over.
                let resumed =
                    run { first with MaxSeconds = 0.12 } (Regression(3, 0, 0, 50)) dir.Path true

                Expect.isTrue resumed.StoppedOnTime "stopped on time"
                Expect.equal resumed.Steps 3 "no step after the resume"
                Expect.isGreaterThanOrEqual resumed.ElapsedSeconds stored "the clock went on"
                // a budget not yet used up: the resumed run goes on from the stored time
                use other = new TempDir()

                Expect.throws
                    (fun () -> run first (Regression(3, 2, 0, 50)) other.Path false |> ignore)
                    "crash at step 2"

                let goesOn =
                    run
                        { first with
                            Steps = 4
                            MaxSeconds = 1000.0
                        }
                        (Regression(3, 0, 0, 50))
                        other.Path
                        true

                Expect.isFalse goesOn.StoppedOnTime "within the budget"
                Expect.equal goesOn.History.[0].Step 2 "resumed after step 1"
                Expect.isGreaterThanOrEqual goesOn.ElapsedSeconds 0.2 "4 steps of ≥ 50 ms"
            }

            test "config validation rejects a negative or non-finite time budget by name" {
                Expect.isEmpty
                    (Validation.errors (TrainerConfig.validate { config with MaxSeconds = 0.0 }))
                    "0: no limit"

                Expect.isEmpty (Validation.errors (TrainerConfig.validate { config with MaxSeconds = 30.0 })) "30 s"

                for bad in [ -1.0; nan; infinity ] do
                    match Validation.errors (TrainerConfig.validate { config with MaxSeconds = bad }) with
                    | [ e ] -> Expect.stringContains e "MaxSeconds" (sprintf "names the field (%g)" bad)
                    | errors -> failtestf "expected one error for %g, got %A" bad errors

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        use dir = new TempDir()

                        run { config with MaxSeconds = -5.0 } (Regression(3, 0, 0, 0)) dir.Path false
                        |> ignore)
                    "the trainer refuses it"
                |> ignore
            }

            test "a checkpoint that fails half way leaves the previous one as the last, and no half-written folder" {
                use _ = torch.NewDisposeScope()
                use whole = new TempDir()
                use dir = new TempDir()
                let reference = run config (Regression(3, 0, 0)) whole.Path false

                Expect.throwsT<IOException>
                    (fun () -> run config (Regression(3, 0, 0, 0, 2)) dir.Path false |> ignore)
                    "the second checkpoint (step 10) fails while its files are written"

                let checkpoints = Path.Combine(dir.Path, "checkpoints")

                Expect.equal
                    (TrainerCheckpoint.lastCheckpoint dir.Path)
                    (Some(Path.Combine(checkpoints, "step-000005")))
                    "the last checkpoint is still step 5"

                Expect.sequenceEqual
                    (Directory.GetFileSystemEntries checkpoints
                     |> Array.map Path.GetFileName
                     |> Array.sort)
                    [| "last"; "step-000005" |]
                    "no step-000010 folder, no temporary folder or file"

                let resumed = run config (Regression(3, 0, 0)) dir.Path true
                Expect.equal resumed.History.[0].Step 6 "resumed after step 5"

                Expect.floatClose
                    { absolute = 1e-12; relative = 1e-9 }
                    resumed.FinalLoss
                    reference.FinalLoss
                    "the final loss of the uninterrupted run"
            }

            test "the half-written folder of a killed checkpoint write is never taken as the last, and is removed" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                run { config with Steps = 10 } (Regression(3, 0, 0)) dir.Path false |> ignore

                let checkpoints = Path.Combine(dir.Path, "checkpoints")
                let ten = Path.Combine(checkpoints, "step-000010")
                // What a process killed while writing checkpoint 15 leaves: its folder under the temporary name
                // (some files complete, one cut short) and the temporary file of the `last` pointer.
                let killed = Path.Combine(checkpoints, "step-000015.tmp-424242")
                Directory.CreateDirectory killed |> ignore
                File.Copy(Path.Combine(ten, "model.safetensors"), Path.Combine(killed, "model.safetensors"))
                File.WriteAllBytes(Path.Combine(killed, "optimizer.bin"), Array.zeroCreate 17)
                File.WriteAllText(Path.Combine(checkpoints, "last.tmp-424242"), "step-000015.tmp-424242")
                Expect.equal (TrainerCheckpoint.lastCheckpoint dir.Path) (Some ten) "the killed write is not taken"

                // A pointer that names an incomplete folder (no trainer.json) is not taken either.
                let incomplete = Path.Combine(checkpoints, "step-000099")
                Directory.CreateDirectory incomplete |> ignore
                File.WriteAllText(Path.Combine(checkpoints, "last"), "step-000099")
                Expect.equal (TrainerCheckpoint.lastCheckpoint dir.Path) None "an incomplete folder is not a checkpoint"
                Directory.Delete incomplete
                File.WriteAllText(Path.Combine(checkpoints, "last"), "step-000010")

                let resumed = run config (Regression(3, 0, 0)) dir.Path true
                Expect.equal resumed.History.[0].Step 11 "resumed after step 10"

                Expect.isEmpty
                    (Directory.GetFileSystemEntries(checkpoints, "*.tmp-*"))
                    "the next checkpoint removed the leftovers"
            }

            test "presets by name, the smoke trainer and the shared data checks" {
                let presets = [ "small", 1; "smoke", 2 ]
                Expect.equal (TrainerConfig.pickPreset presets " Smoke ") 2 "case and spaces ignored"

                let message =
                    try
                        TrainerConfig.pickPreset presets "big" |> ignore
                        ""
                    with :? ArgumentException as e ->
                        e.Message

                Expect.equal message "unknown preset 'big' (expected small or smoke)" "names the choices"

                let smoke = TrainerConfig.smokeOf TrainerConfig.small
                Expect.equal (smoke.Steps, smoke.BatchSize, smoke.WarmupSteps) (300, 4, 30) "smoke run"

                Expect.equal
                    { smoke with
                        Steps = 5000
                        BatchSize = 8
                        WarmupSteps = 300
                        EvalEvery = 500
                        CheckpointEvery = 500
                    }
                    TrainerConfig.small
                    "nothing else changes"

                Expect.equal (TokenizerTrainConfig.preset "smoke").Trainer smoke "tokenizer smoke preset"

                Expect.equal
                    (Stage2TrainConfig.preset "smoke").Trainer
                    (TrainerConfig.smokeOf Stage2TrainConfig.small.Trainer)
                    "stage-2 smoke preset"

                // --preset esm3-open: ESM's released sizes (parameter counts of ESM's files), valid configs.
                let tokenizer = TokenizerTrainConfig.preset "esm3-open"
                Expect.equal tokenizer.Encoder StructureEncoderConfig.esm3 "tokenizer: ESM's released encoder"
                Expect.equal (StructureDecoderCheckpoint.parameterCount tokenizer.Decoder) 618_552_905L "and decoder"
                Expect.isEmpty (Validation.errors (TokenizerTrainConfig.validate tokenizer)) "tokenizer esm3-open valid"
                let stage2 = Stage2TrainConfig.preset "esm3-open"
                Expect.equal stage2.Decoder StructureDecoderConfig.esm3 "stage 2: ESM's released decoder"
                Expect.isFalse stage2.SequenceInput "with ESM's keys only"
                let multiTrack = MultiTrackTrainConfig.preset "esm3-open"

                Expect.equal
                    (MultiTrackCheckpoint.parameterCount multiTrack.Model)
                    1_401_735_748L
                    "multi-track: ESM3-open"

                Expect.isEmpty
                    (Validation.errors (MultiTrackTrainConfig.validate multiTrack))
                    "multi-track esm3-open valid"

                Expect.isEmpty (TrainerConfig.validateData 2 64 0 2) "valid"

                Expect.equal
                    (TrainerConfig.validateData 2 1 -1 1)
                    [
                        "CropLength must be at least 2 (got 1)"
                        "ValidChains must be ≥ 0 (got -1)"
                        "ValidLength must be at least 2 (got 1)"
                    ]
                    "each field named"
            }

            test "live native tensors stay flat over steps" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let report =
                    run { config with CheckpointEvery = 0 } (Regression(4, 0, 0, 0)) dir.Path false

                let live = report.History |> Array.map (fun r -> r.LiveTensors)
                Expect.equal live.[29] live.[4] "no growth from step 5 to step 30"
            }
        ]
