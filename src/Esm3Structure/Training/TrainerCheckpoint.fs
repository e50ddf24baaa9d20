namespace Esm3Structure.Training

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.Io

/// What a run's checkpoint folder holds and how it is written and read back.
/// Folder `<out>/checkpoints/step-NNNNNN/`: `model.safetensors` (the task's whole state_dict), `optimizer.bin`
/// (TorchSharp's AdamW state: moments and step counts), `rng.safetensors` (generator states), `state.safetensors`
/// (the task's `TrainingState`, when it has one), `trainer.json` (step,
/// running metrics, skipped count) and the task's export files; `<out>/checkpoints/last` names the newest complete
/// one.
module TrainerCheckpoint =

    /// The release file `stem` (.safetensors, .pth or .pt) of a model folder a run starts from (`--init`), or an
    /// `InputException` naming the file and the option; `holds` says what such a folder holds.
    let initFile (folder: string) (stem: string) (holds: string) =
        match TensorFile.inFolder folder stem with
        | Some file -> file
        | None ->
            InputError.raise
                (Path.Combine(folder, stem + ".safetensors"))
                InputLocation.Whole
                (sprintf "--init: no such file (%s)" holds)

    /// Copies the weights in `file` into `m` strictly (every key and shape must fit); a mismatch raises an
    /// `InputException` naming the file and the `--init` option.
    let initialise (file: string) (m: torch.nn.Module) =
        try
            Checkpoint.load file m
        with :? InputException as e ->
            InputError.raise
                e.Error.File
                e.Error.Location
                ("--init: the model does not fit this run's config (a different preset or option?): "
                 + e.Error.Message)

    /// `<out>/checkpoints`
    let checkpointsFolder (out: string) = Path.Combine(out, "checkpoints")

    /// The file a checkpoint folder gets last, just before the folder is renamed into place.
    [<Literal>]
    let private StateFile = "trainer.json"

    /// The file of `TrainingTask.TrainingState` (written only when the task has some).
    [<Literal>]
    let TrainingStateFile = "state.safetensors"

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

    /// The loop's state a checkpoint saves.
    type State =
        {
            mutable Completed: int
            mutable Running: Dictionary<string, float>
            mutable LastLoss: float
            mutable Skipped: int
            /// Training seconds of the run so far, over resumes.
            mutable Elapsed: float
        }

    let private stateJson (s: State) =
        TrainingMetrics.jsonLine (fun w ->
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

    /// Writes the checkpoint of `state` (folder `step-NNNNNN`, atomically), points `last` at it and deletes all but
    /// the newest `keep` complete checkpoints (0: none deleted). Returns the folder.
    let save (out: string) (keep: int) (task: TrainingTask) (optimizer: Modules.AdamW) (state: State) : string =
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

            match task.TrainingState() with
            | [] -> ()
            | state -> Safetensors.write (Path.Combine(temp, TrainingStateFile)) state null

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
        if keep > 0 then
            let older =
                Directory.GetDirectories(root, "step-*")
                |> Array.filter (fun d -> not (Path.GetFileName(d).Contains ".tmp-"))
                |> Array.sort

            for d in older.[.. older.Length - 1 - keep] do
                Directory.Delete(d, true)

        final

    let load (dir: string) (task: TrainingTask) (optimizer: Modules.AdamW) : State =
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

        // Checkpoints written before `TrainingState` existed, and tasks without one, have no such file: the state then
        // stays as constructed (as every resume did before).
        do
            let path = Path.Combine(dir, TrainingStateFile)

            if File.Exists path then
                use _ = torch.NewDisposeScope()
                let table = dict (Safetensors.read path).Tensors

                try
                    task.RestoreTrainingState(fun key ->
                        match table.TryGetValue key with
                        | true, t -> Some t
                        | _ -> None)
                with :? ArgumentException as e ->
                    InputError.raise path InputLocation.Whole e.Message

        readState (Path.Combine(dir, StateFile))

    /// Metrics rows of `metrics.jsonl` up to step `upTo` (the rest belongs to an interrupted tail).
    let truncateMetrics (path: string) (upTo: int) =
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
