namespace Esm3Structure

open System

/// Where in an input a problem was found.
[<RequireQualifiedAccess>]
type InputLocation =
    /// A 1-based line of a text file.
    | Line of line: int
    /// A named field, key, column or tensor.
    | Field of name: string
    /// A byte offset in a binary file.
    | Offset of offset: int64
    /// The input as a whole (empty, unreadable, ...).
    | Whole

    override this.ToString() =
        match this with
        | Line n -> sprintf "line %d" n
        | Field f -> sprintf "field '%s'" f
        | Offset o -> sprintf "byte %d" o
        | Whole -> ""

/// A problem with an input file or value: which file, where in it, and what is wrong.
type InputError =
    {
        /// The file (or the name of the in-memory input).
        File: string
        /// Where in the file.
        Location: InputLocation
        /// What is wrong, in one line.
        Message: string
    }

    override this.ToString() =
        match this.Location with
        | InputLocation.Whole -> sprintf "%s: %s" this.File this.Message
        | loc -> sprintf "%s, %O: %s" this.File loc this.Message

/// The exception every reader raises for bad input. `Error` carries the structured details.
type InputException(error: InputError, inner: exn) =
    inherit Exception(error.ToString(), inner)
    new(error: InputError) = InputException(error, null)
    /// The structured error.
    member _.Error = error

module InputError =
    /// Raises an `InputException`.
    let raise (file: string) (location: InputLocation) (message: string) : 'a =
        raise (
            InputException
                {
                    File = file
                    Location = location
                    Message = message
                }
        )

    /// Runs `f`, turning an `InputException` into `Error`.
    let catch (f: unit -> 'a) : Result<'a, InputError> =
        try
            Ok(f ())
        with :? InputException as e ->
            Error e.Error

/// The one convention of every config's check: `validate : config -> Result<config, string list>`, each error
/// naming its field; constructors and trainers refuse a bad config with `Validation.check`.
module Validation =

    /// `Ok config` when `errors` is empty, else `Error errors`.
    let ofErrors (config: 'Config) (errors: string list) : Result<'Config, string list> =
        if List.isEmpty errors then Ok config else Error errors

    /// The errors of a validation (empty when it passed).
    let errors (result: Result<'Config, string list>) : string list =
        match result with
        | Ok _ -> []
        | Error errors -> errors

    /// The errors of a part's validation, each led by the part's name (`"Decoder: Heads must …"`).
    let within (part: string) (result: Result<'Part, string list>) : string list =
        errors result |> List.map (fun e -> part + ": " + e)

    /// The config when valid; otherwise one `ArgumentException` "<what> config: error; error".
    let check (what: string) (result: Result<'Config, string list>) : 'Config =
        match result with
        | Ok config -> config
        | Error errors -> raise (ArgumentException(what + " config: " + String.Join("; ", errors)))
