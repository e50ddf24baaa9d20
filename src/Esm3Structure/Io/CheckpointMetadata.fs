namespace Esm3Structure.Io

open System
open System.Globalization
open Esm3Structure

/// The one reader of a checkpoint's `__metadata__` (safetensors' string map; a `.pth` has none, so it reads as
/// empty): an absent key gives the loader's fallback, a value that does not parse raises an `InputException` naming
/// the file and the field `__metadata__.<key>`.
module CheckpointMetadata =

    /// The field an error names.
    let field (key: string) =
        InputLocation.Field("__metadata__." + key)

    /// The value of `key` parsed by `parse` (None: unreadable; `expected` describes what it wants, e.g. "a positive
    /// integer"), or `fallback` when the key is absent.
    let read
        (file: string)
        (metadata: Map<string, string>)
        (key: string)
        (expected: string)
        (parse: string -> 'T option)
        (fallback: 'T)
        : 'T =
        match metadata.TryFind key with
        | None -> fallback
        | Some text ->
            match parse text with
            | Some v -> v
            | None -> InputError.raise file (field key) (sprintf "expected %s, got '%s'" expected text)

    /// A positive 64-bit integer.
    let positiveInt64 (text: string) =
        match Int64.TryParse text with
        | true, v when v > 0L -> Some v
        | _ -> None

    /// A positive 32-bit integer.
    let positiveInt (text: string) =
        match Int32.TryParse text with
        | true, v when v > 0 -> Some v
        | _ -> None

    /// "true" or "false" (as our exports write them; .NET's case-insensitive parse).
    let boolean (text: string) =
        match Boolean.TryParse text with
        | true, v -> Some v
        | _ -> None

    /// A finite invariant-culture number.
    let finite (text: string) =
        match Double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, v when Double.IsFinite v -> Some v
        | _ -> None
