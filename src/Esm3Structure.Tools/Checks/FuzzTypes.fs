namespace Esm3Structure.Checks

open System

/// The input formats the fuzzer feeds to the readers.
[<RequireQualifiedAccess>]
type FuzzFormat =
    /// PDB text (plain or gzip) through `StructureFile.read`.
    | Pdb
    /// mmCIF text (plain or gzip) through `StructureFile.read`.
    | Mmcif
    /// safetensors through `Safetensors.readHeader` then `Safetensors.read`.
    | Safetensors
    /// tokens JSON through `TokensJson.readJson`.
    | Tokens

/// How one fuzz case ended.
[<RequireQualifiedAccess>]
type FuzzOutcome =
    /// The reader returned a result.
    | Valid
    /// The reader raised an `InputException` naming the input file; `kind` is the location kind (Line, Field,
    /// Offset, Whole).
    | TypedError of kind: string
    /// Any other exception (or an `InputException` naming another file): a reader bug.
    | Unhandled of exceptionType: string * message: string
    /// The reader did not finish within the time limit.
    | Timeout
    /// The reader allocated more than the input justifies (managed bytes plus the bytes of returned tensors).
    | ExcessAllocation of allocated: int64 * limit: int64

/// One fuzz case: which mutation of which seed, and how the reader handled it.
type FuzzCase =
    {
        /// The format.
        Format: FuzzFormat
        /// 0-based case number within its format.
        Index: int
        /// The seed input the case was made from.
        Seed: string
        /// The mutations applied, e.g. "truncate-line+number".
        Mutation: string
        /// Length of the mutated input in bytes.
        InputBytes: int
        /// The outcome.
        Outcome: FuzzOutcome
        /// Wall time of the read, in milliseconds.
        Milliseconds: float
        /// Managed bytes allocated by the read, plus the bytes of the tensors it returned.
        AllocatedBytes: int64
    }

/// Settings of a fuzz run.
type FuzzConfig =
    {
        /// Cases per format.
        Cases: int
        /// Seed of the mutators' random numbers (each format derives its own stream from it).
        Seed: int
        /// A read taking longer than this is a `Timeout`.
        TimeLimitMs: int
        /// A read may allocate at most AllocationFactor × (justified input size) + AllocationSlack bytes.
        AllocationFactor: int64
        /// See AllocationFactor.
        AllocationSlack: int64
        /// Mutations that grow the input (repeated lines, huge chains) stop at this many bytes.
        MaxInputBytes: int
    }

/// Presets of `FuzzConfig`.
module FuzzConfig =

    /// 2000 ms per case, allocation ≤ 64 × input + 4 MiB, inputs grown to at most 256 KiB.
    let defaults: FuzzConfig =
        {
            Cases = 500
            Seed = 1
            TimeLimitMs = 2000
            AllocationFactor = 64L
            AllocationSlack = 4L <<< 20
            MaxInputBytes = 256 <<< 10
        }


/// A seed input: a real file's name (for messages) and bytes.
type FuzzSeed =
    {
        /// Name of the seed (its file name).
        Name: string
        /// The bytes.
        Bytes: byte[]
    }

/// A generated input of a million residues (a size every reader must handle) and the outcome it must have.
type FuzzLargeInput =
    {
        /// The format.
        Format: FuzzFormat
        /// What the input is, e.g. "1000000 CA atoms, hybrid-36 residue numbers".
        Description: string
        /// The bytes.
        Bytes: byte[]
        /// The outcome the reader must reach, as `Fuzz.outcomeKind` writes it ("Valid", "TypedError(Line)").
        Expected: string
    }
