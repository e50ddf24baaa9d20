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
