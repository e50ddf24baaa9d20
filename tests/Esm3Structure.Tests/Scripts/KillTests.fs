module Esm3Structure.Tests.Scripts.KillTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.App

/// The repository root (holding Research.sln), above the test binary.
let private root = Esm3Structure.App.Cli.repositoryRoot AppContext.BaseDirectory

/// A child `dotnet fsi script args` whose stdout and stderr are collected as it runs.
type private Child(script: string, args: string list) =
    let psi =
        ProcessStartInfo(
            "dotnet",
            [ "fsi"; script ] @ args,
            WorkingDirectory = root,
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    let proc = Process.Start psi
    let out = proc.StandardOutput.ReadToEndAsync()
    let err = proc.StandardError.ReadToEndAsync()

    member _.HasExited = proc.HasExited

    /// Polls `condition` every 50 ms until it holds (true) or the child exits first (false); fails after `seconds`.
    member _.WaitUntil (seconds: int) (what: string) (condition: unit -> bool) =
        let clock = Stopwatch.StartNew()
        let mutable met = condition ()

        while not met && not proc.HasExited do
            if clock.Elapsed.TotalSeconds > float seconds then
                proc.Kill true
                failtestf "%s: not within %d s" what seconds

            Thread.Sleep 50
            met <- condition ()

        met || condition ()

    /// SIGKILL to the child and its descendants (Process.Kill on Linux), then waits for it.
    member _.KillNow() =
        proc.Kill true
        proc.WaitForExit()

    /// Waits for the exit (at most `seconds`): exit code, stdout, stderr.
    member _.Finish(seconds: int) =
        if not (proc.WaitForExit(seconds * 1000)) then
            proc.Kill true
            failtestf "%s did not finish within %d s" script seconds

        proc.WaitForExit()
        proc.ExitCode, out.Result, err.Result

    interface IDisposable with
        member _.Dispose() =
            if not proc.HasExited then
                proc.Kill true

            proc.Dispose()

/// The regression task of the kill test, compiled into the test and, as text, into the child script: batches from a
/// generator the checkpoints carry; each export also replaces `<out>/export.bin` atomically (two 64 KiB chunks of
/// the export's number). With `blockAt`, that export stops after its first chunk, announces itself in
/// `<out>/writing` and waits to be killed.
let private taskSource =
    """
type KillTask(out: string, blockAt: int) =
    inherit TrainingTask()
    let model = torch.nn.Linear(4L, 1L, dtype = torch.float64)
    let generator = new torch.Generator(7UL)
    let mutable exports = 0

    do
        use _ = torch.no_grad ()
        model.weight.copy_ (torch.tensor([| 0.5; -0.25; 1.0; 2.0 |], dtype = torch.float64).reshape (1L, 4L)) |> ignore
        model.bias.copy_ (torch.tensor ([| 0.1 |], dtype = torch.float64)) |> ignore

    override _.Model = model :> torch.nn.Module
    override _.Generators = [| generator |]

    override _.Step(_: int) =
        let x = torch.randn ([| 8L; 4L |], dtype = torch.float64, generator = generator)
        let y = x.sum (1L, true) * 0.5
        { Loss = (model.forward x - y).square().mean(); Terms = [||]; Stages = [||] }

    override _.Evaluate() = [| "bias", model.bias.ToDouble() |]

    override _.Export(folder: string) =
        exports <- exports + 1
        Checkpoint.save (Path.Combine(folder, "linear.safetensors")) model null

        AtomicFile.write (Path.Combine(out, "export.bin")) (fun s ->
            let chunk = Array.create 65536 (byte exports)
            s.Write(chunk, 0, chunk.Length)

            if exports = blockAt then
                s.Flush()
                File.WriteAllText(Path.Combine(out, "writing"), string Environment.ProcessId)
                Thread.Sleep Timeout.Infinite

            s.Write(chunk, 0, chunk.Length))

let killConfig =
    { TrainerConfig.small with
        Steps = 6
        CheckpointEvery = 2
        EvalEvery = 0
        LogEvery = 1
        WarmupSteps = 0
        LearningRate = 0.05
        Progress = ProgressMode.Silent }
"""

type private KillTask(out: string, blockAt: int) =
    inherit TrainingTask()
    let model = torch.nn.Linear(4L, 1L, dtype = torch.float64)
    let generator = new torch.Generator(7UL)
    let mutable exports = 0

    do
        use _ = torch.no_grad ()

        model.weight.copy_ (torch.tensor([| 0.5; -0.25; 1.0; 2.0 |], dtype = torch.float64).reshape(1L, 4L))
        |> ignore

        model.bias.copy_ (torch.tensor ([| 0.1 |], dtype = torch.float64)) |> ignore

    override _.Model = model :> torch.nn.Module
    override _.Generators = [| generator |]

    override _.Step(_: int) =
        let x = torch.randn ([| 8L; 4L |], dtype = torch.float64, generator = generator)

        let y = x.sum (1L, true) * 0.5

        {
            Loss = (model.forward x - y).square().mean()
            Terms = [||]
            Stages = [||]
        }

    override _.Evaluate() = [| "bias", model.bias.ToDouble() |]

    override _.Export(folder: string) =
        exports <- exports + 1
        Checkpoint.save (Path.Combine(folder, "linear.safetensors")) model null

        AtomicFile.write (Path.Combine(out, "export.bin")) (fun s ->
            let chunk = Array.create 65536 (byte exports)
            s.Write(chunk, 0, chunk.Length)

            if exports = blockAt then
                s.Flush()
                File.WriteAllText(Path.Combine(out, "writing"), string Environment.ProcessId)
                Thread.Sleep Timeout.Infinite

            s.Write(chunk, 0, chunk.Length))

let private killConfig =
    { TrainerConfig.small with
        Steps = 6
        CheckpointEvery = 2
        EvalEvery = 0
        LogEvery = 1
        WarmupSteps = 0
        LearningRate = 0.05
        Progress = ProgressMode.Silent
    }

/// The numbers of a metrics.jsonl row that must agree between runs: loss values, terms and validation.
let private rowNumbers (line: string) =
    use doc = JsonDocument.Parse line
    let r = doc.RootElement

    [
        "step", r.GetProperty("step").GetDouble()
        for group in [ "values"; "terms"; "validation" ] do
            for p in r.GetProperty(group).EnumerateObject() do
                group + "." + p.Name, p.Value.GetDouble()
    ]

/// The train.fsx arguments of the kill-and-resume test: a multi-track smoke run of 12 steps on 2 chains, with a
/// checkpoint every 4 steps.
let private trainArgs (out: string) =
    [
        "--"
        "--model"
        "multitrack"
        "--encoder"
        "random"
        "--preset"
        "smoke"
        "--steps"
        "12"
        "--chains"
        "2"
        "--checkpoint-every"
        "4"
        "--data"
        Data.root.Value
        "--out"
        out
    ]

/// Writes a child script at `path`: the scripts' preamble, the opens the tasks need, `taskSource`, then `body`.
let private writeTaskScript (path: string) (body: string list) =
    File.WriteAllText(
        path,
        String.concat
            "\n"
            [
                sprintf "#load %s" (JsonSerializer.Serialize(Path.Combine(root, "scripts", "_load.fsx")))
                "open System"
                "open System.IO"
                "open System.Threading"
                "open TorchSharp"
                "open Esm3Structure"
                "open Esm3Structure.Io"
                "open Esm3Structure.Native"
                "open Esm3Structure.Training"
                taskSource
                yield! body
            ]
    )

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Scripts/Kill"
        [
            test "a process killed (SIGKILL) while writing a checkpoint leaves the previous one as the last, whole" {
                use dir = new TempDir()
                let out = dir.File "run"
                Directory.CreateDirectory out |> ignore
                let script = dir.File "killme.fsx"

                writeTaskScript
                    script
                    [
                        "let out = fsi.CommandLineArgs.[1]"
                        "Trainer.run killConfig (new KillTask(out, 2)) out false \"{}\" |> ignore"
                    ]

                use child = new Child(script, [ out ])
                let writing = Path.Combine(out, "writing")

                let blocked =
                    child.WaitUntil 600 "the second checkpoint's export" (fun () -> File.Exists writing)

                if not blocked then
                    let code, _, err = child.Finish 10
                    failtestf "the child ended (exit code %d) before its second checkpoint:\n%s" code err

                let pid = File.ReadAllText(writing).Trim()
                child.KillNow()

                // The checkpoint of step 2 is the last and whole; step 4's folder never got its final name.
                let checkpoints = Path.Combine(out, "checkpoints")
                let two = Path.Combine(checkpoints, "step-000002")
                Expect.equal (TrainerCheckpoint.lastCheckpoint out) (Some two) "the last checkpoint is step 2"

                Expect.sequenceEqual
                    (Directory.GetFileSystemEntries checkpoints
                     |> Array.map Path.GetFileName
                     |> Array.sort)
                    [| "last"; "step-000002"; "step-000004.tmp-" + pid |]
                    "step 4 exists only under its temporary name"

                Expect.isFalse
                    (File.Exists(Path.Combine(checkpoints, "step-000004.tmp-" + pid, "trainer.json")))
                    "the killed folder is incomplete"

                for f in
                    [
                        "model.safetensors"
                        "optimizer.bin"
                        "rng.safetensors"
                        "linear.safetensors"
                        "trainer.json"
                    ] do
                    Expect.isTrue (File.Exists(Path.Combine(two, f))) ("step 2 holds " + f)

                // The file being replaced when the kill came is the old one, whole; the cut write stayed in its
                // temporary file.
                let export = File.ReadAllBytes(Path.Combine(out, "export.bin"))
                Expect.equal export.Length 131072 "export.bin: the complete old file"
                Expect.isTrue (export |> Array.forall ((=) 1uy)) "export.bin: the first export's bytes"

                Expect.equal
                    (FileInfo(Path.Combine(out, "export.bin.tmp-" + pid)).Length)
                    65536L
                    "the cut write is in the temporary file"

                // Resumed here, the run ends where an uninterrupted run ends.
                use _ = torch.NewDisposeScope()
                use whole = new TempDir()

                let reference =
                    Trainer.run killConfig (new KillTask(whole.Path, 0)) whole.Path false "{}"

                let resumed = Trainer.run killConfig (new KillTask(out, 0)) out true "{}"
                Expect.equal resumed.History.[0].Step 3 "resumed after step 2"
                Expect.equal resumed.Steps 6 "all steps"
                let agree = { absolute = 1e-12; relative = 1e-9 }
                Expect.floatClose agree resumed.FinalLoss reference.FinalLoss "final loss"
                Expect.floatClose agree resumed.RunningLoss reference.RunningLoss "running loss"

                Expect.floatClose
                    agree
                    (snd resumed.History.[resumed.History.Length - 1].Validation.[0])
                    (snd reference.History.[reference.History.Length - 1].Validation.[0])
                    "validation"

                Expect.isEmpty (Directory.GetFileSystemEntries(checkpoints, "*.tmp-*")) "leftovers removed"
            }

            test
                "train.fsx killed between checkpoints and rerun with --resume ends with the uninterrupted run's metrics" {
                use dir = new TempDir()
                let outA = dir.File "whole"
                let outB = dir.File "killed"
                let train = Path.Combine(root, "scripts", "train.fsx")
                // The uninterrupted run and the run to kill, side by side.
                use whole = new Child(train, trainArgs outA)
                use killed = new Child(train, trainArgs outB)

                let checkpointed =
                    killed.WaitUntil 600 "the first checkpoint" (fun () ->
                        (TrainerCheckpoint.lastCheckpoint outB).IsSome)

                Expect.isTrue checkpointed "the run wrote a checkpoint before it ended"
                Expect.isFalse killed.HasExited "the run had not finished when it was killed"
                killed.KillNow()
                let atKill = (TrainerCheckpoint.lastCheckpoint outB).Value
                let step = int (Path.GetFileName(atKill).Substring 5)
                Expect.isTrue (step >= 4 && step < 12) (sprintf "killed between checkpoints (last: step %d)" step)

                use resumed = new Child(train, trainArgs outB @ [ "--resume" ])
                let code, out, err = resumed.Finish 600
                Expect.equal code 0 ("resumed run: exit code; stderr: " + err)
                Expect.stringContains out ("resuming from " + atKill) "resumed from the checkpoint at the kill"
                let codeA, outWhole, errA = whole.Finish 600
                Expect.equal codeA 0 ("uninterrupted run: exit code; stderr: " + errA)

                let doneLine (text: string) =
                    text.Split('\n') |> Array.find (fun l -> l.StartsWith "done: ")

                Expect.equal
                    ((doneLine out).Replace(outB, "OUT"))
                    ((doneLine outWhole).Replace(outA, "OUT"))
                    "the same final line (steps, final loss to the printed digits)"

                let rows (folder: string) =
                    File.ReadAllLines(Path.Combine(folder, "metrics.jsonl"))
                    |> Array.filter (fun l -> l.Trim() <> "")

                let a, b = rows outA, rows outB

                Expect.sequenceEqual
                    (b |> Array.map (fun l -> fst (rowNumbers l).Head, snd (rowNumbers l).Head))
                    (a |> Array.map (fun l -> fst (rowNumbers l).Head, snd (rowNumbers l).Head))
                    "the same metrics rows (no duplicated or missing step)"

                let last (r: string[]) = rowNumbers r.[r.Length - 1]

                for (name, x), (name2, y) in List.zip (last b) (last a) do
                    Expect.equal name name2 "same fields"
                    Expect.equal (sprintf "%.4f" x) (sprintf "%.4f" y) (sprintf "%s to the printed digits" name)
                    Expect.floatClose { absolute = 1e-9; relative = 1e-6 } x y name
            }
        ]

/// `NativeHeap` acts only on the process's first thread, which the suite's tests never run on: a child script (whose
/// code runs on its first thread) checks what the in-process tests cannot.
[<Tests>]
let heapTests =
    testList
        "Scripts/NativeHeap"
        [
            test
                "on a script's first thread scopes nest and the trainer keeps freed memory; other threads are left alone" {
                use dir = new TempDir()
                let script = dir.File "heap.fsx"

                writeTaskScript
                    script
                    [
                        "type ProbeTask(out: string) ="
                        "    inherit KillTask(out, 0)"
                        "    member val Seen = ResizeArray<bool>()"
                        "    override this.Step(step: int) ="
                        "        this.Seen.Add(NativeHeap.isRetaining ())"
                        "        base.Step step"
                        "let out = fsi.CommandLineArgs.[1]"
                        "let before = NativeHeap.isRetaining ()"
                        "let outer = NativeHeap.retainFreedMemory ()"
                        "let inner = NativeHeap.retainFreedMemory ()"
                        "inner.Dispose()"
                        "inner.Dispose()"
                        "let nested = NativeHeap.isRetaining ()"
                        "outer.Dispose()"
                        "let closed = NativeHeap.isRetaining ()"
                        "let task = new ProbeTask(out)"
                        "Trainer.run killConfig task out false \"{}\" |> ignore"
                        "let worker ="
                        "    Tasks.Task"
                        "        .Run(fun () ->"
                        "            use _ = NativeHeap.retainFreedMemory ()"
                        "            NativeHeap.isMainThread (), NativeHeap.isRetaining ())"
                        "        .Result"
                        "printfn \"first %b before %b nested %b closed %b steps %s after %b worker %b %b\" (NativeHeap.isMainThread ()) before nested closed (String.Join(\",\", task.Seen)) (NativeHeap.isRetaining ()) (fst worker) (snd worker)"
                    ]

                use child = new Child(script, [ dir.File "run" ])
                let code, out, err = child.Finish 300
                Expect.equal code 0 (sprintf "the child script ran:\n%s" err)

                Expect.stringContains
                    out
                    "first true before false nested true closed false steps True,True,True,True,True,True after false worker false false"
                    "on the first thread: nested scopes, each of the 6 steps retaining, nothing left open; a worker thread: no effect"
            }
        ]
