namespace Esm3Structure.Ablations

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Esm3Structure

/// The results folder's files: `runs/<key>.json` (one finished run) and the trainer's `metrics.jsonl`, written and
/// read back with every field checked.
module AblationResults =

    let private inv = CultureInfo.InvariantCulture

    /// JSON text compacted (for comparing configs regardless of layout); the text itself if it is not JSON.
    let normalizeJson (text: string) =
        try
            use doc = JsonDocument.Parse text
            JsonSerializer.Serialize doc.RootElement
        with :? JsonException ->
            text

    /// Fields of a config's `Trainer` object that never change a run's numbers (what it prints, what it keeps on
    /// disk): configs that differ only in these describe the same run.
    let bookkeepingFields = [ "Progress"; "KeepCheckpoints" ]

    /// True when two configs (JSON texts) describe the same run: equal once compacted, with `bookkeepingFields` left
    /// out of both `Trainer` objects, so a config stored before a bookkeeping field existed still matches. Texts that
    /// are not JSON are compared as they are.
    let sameRun (a: string) (b: string) =
        let runPart (text: string) =
            match
                (try
                    Some(JsonNode.Parse text)
                 with :? JsonException ->
                     None)
            with
            | Some(:? JsonObject as root) ->
                match root.["Trainer"] with
                | :? JsonObject as trainer ->
                    for field in bookkeepingFields do
                        trainer.Remove field |> ignore
                | _ -> ()

                root.ToJsonString()
            | Some node when not (isNull node) -> node.ToJsonString()
            | _ -> text

        runPart a = runPart b

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
