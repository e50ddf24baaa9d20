namespace Esm3Structure

open System
open System.IO
open System.Text
open System.Text.Json

/// Small helpers for the hand-written JSON readers (safetensors headers, token files).
module Json =

    /// Parses JSON text (comments skipped); text that is not JSON raises an `InputException` naming `file` and the
    /// line (`not JSON: …`). The caller disposes the document.
    let parseDocument (file: string) (text: string) : JsonDocument =
        try
            JsonDocument.Parse(text, JsonDocumentOptions(CommentHandling = JsonCommentHandling.Skip))
        with :? JsonException as e ->
            let line =
                if e.LineNumber.HasValue then
                    InputLocation.Line(int e.LineNumber.Value + 1)
                else
                    InputLocation.Whole

            InputError.raise file line ("not JSON: " + e.Message.Split('\n').[0].Trim())

    /// "an object", "an array", "a string", … for error messages about a JSON value.
    let kindName (e: JsonElement) =
        match e.ValueKind with
        | JsonValueKind.Object -> "an object"
        | JsonValueKind.Array -> "an array"
        | JsonValueKind.String -> "a string"
        | JsonValueKind.Number -> "a number"
        | JsonValueKind.True
        | JsonValueKind.False -> "a boolean"
        | JsonValueKind.Null -> "null"
        | _ -> "nothing"

    /// Indented JSON of `fields` (name, value) followed by the fields of the record `value`: records become
    /// objects, strings, booleans, ints and finite floats JSON values, enums their name, non-finite floats and
    /// anything else (unions, options) `text value` when that is Some, else their `%A` text. Used for every run's
    /// `config.json`.
    let ofRecordWith (text: obj -> string option) (fields: (string * obj) list) (value: obj) : string =
        let rec write (w: Utf8JsonWriter) (value: obj) =
            match value with
            | null -> w.WriteNullValue()
            | :? string as s -> w.WriteStringValue s
            | :? bool as b -> w.WriteBooleanValue b
            | :? int as i -> w.WriteNumberValue i
            | :? int64 as i -> w.WriteNumberValue i
            | :? float as f when Double.IsFinite f -> w.WriteNumberValue f
            | :? float as f -> w.WriteStringValue(string f)
            | v when v.GetType().IsEnum -> w.WriteStringValue(v.ToString())
            | v when Reflection.FSharpType.IsRecord(v.GetType()) ->
                w.WriteStartObject()

                for field in Reflection.FSharpType.GetRecordFields(v.GetType()) do
                    w.WritePropertyName field.Name
                    write w (field.GetValue v)

                w.WriteEndObject()
            | v ->
                match text v with
                | Some t -> w.WriteStringValue t
                | None -> w.WriteStringValue(sprintf "%A" v)

        use buffer = new MemoryStream()

        do
            use w = new Utf8JsonWriter(buffer, JsonWriterOptions(Indented = true))
            w.WriteStartObject()

            for name, v in fields do
                w.WritePropertyName name
                write w v

            if not (isNull value) && Reflection.FSharpType.IsRecord(value.GetType()) then
                for field in Reflection.FSharpType.GetRecordFields(value.GetType()) do
                    w.WritePropertyName field.Name
                    write w (field.GetValue value)

            w.WriteEndObject()

        Encoding.UTF8.GetString(buffer.ToArray())

    /// `ofRecordWith` with every union and option as its `%A` text.
    let ofRecord (fields: (string * obj) list) (value: obj) : string =
        ofRecordWith (fun _ -> None) fields value

    /// Writes the property `name`: a JSON number when `v` is finite, else its text ("NaN", "Infinity", "-Infinity"),
    /// which JSON numbers cannot hold.
    let writeNumber (w: Utf8JsonWriter) (name: string) (v: float) =
        if Double.IsFinite v then
            w.WriteNumber(name, v)
        else
            w.WriteString(name, v.ToString Globalization.CultureInfo.InvariantCulture)

    /// Writes the property `name` as an object of numbers (`writeNumber` for each pair, in order).
    let writeNumberObject (w: Utf8JsonWriter) (name: string) (pairs: (string * float)[]) =
        w.WriteStartObject name

        for k, v in pairs do
            writeNumber w k v

        w.WriteEndObject()
