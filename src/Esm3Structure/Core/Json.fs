namespace Esm3Structure

open System.Text.Json

/// Small helpers for the hand-written JSON readers (safetensors headers, token files).
module Json =

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
