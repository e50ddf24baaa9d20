namespace Esm3Structure.Checks

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.App

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

/// The fuzzer's inputs: the formats, seed inputs, and mutators driven by a seeded `Random` that turn real inputs into
/// broken ones (truncation at bytes, lines and tokens; bit flips; shifted columns; huge, negative, NaN and infinite
/// numbers; values of the wrong kind; missing tokens and lines; lying safetensors header lengths; huge repeated
/// inputs).
module FuzzMutators =

    /// The formats, in a fixed order.
    let formats: FuzzFormat list =
        [ FuzzFormat.Pdb; FuzzFormat.Mmcif; FuzzFormat.Safetensors; FuzzFormat.Tokens ]

    /// The lower-case name of a format (pdb, mmcif, safetensors, tokens).
    let formatName (format: FuzzFormat) : string =
        match format with
        | FuzzFormat.Pdb -> "pdb"
        | FuzzFormat.Mmcif -> "mmcif"
        | FuzzFormat.Safetensors -> "safetensors"
        | FuzzFormat.Tokens -> "tokens"

    /// The format named `name` (as `formatName` writes it), or None.
    let tryParseFormat (name: string) : FuzzFormat option =
        formats |> List.tryFind (fun f -> formatName f = name.ToLowerInvariant())

    /// The file extension a format's scratch file gets.
    let extension (format: FuzzFormat) =
        match format with
        | FuzzFormat.Pdb -> ".pdb"
        | FuzzFormat.Mmcif -> ".cif"
        | FuzzFormat.Safetensors -> ".safetensors"
        | FuzzFormat.Tokens -> ".json"

    /// A small safetensors file (written by `Safetensors.write` to `scratchDir`): F32, I64, BOOL, F16 and a 0-d F64
    /// tensor, plus metadata.
    let safetensorsSeed (scratchDir: string) : FuzzSeed =
        use _ = torch.NewDisposeScope()
        let path = Path.Combine(scratchDir, "seed.safetensors")

        let tensors =
            [
                "coords", torch.arange(6L, dtype = torch.float32).reshape(2L, 3L)
                "ids", torch.tensor ([| 4L; 0L; 4095L; 4096L |])
                "mask", torch.tensor ([| true; false; true |])
                "half", torch.ones (2L, dtype = torch.float16)
                "scale", torch.tensor 0.5
            ]

        Safetensors.write path tensors (readOnlyDict [ "format", "pt"; "note", "fuzz seed" ])
        let bytes = File.ReadAllBytes path
        File.Delete path

        {
            Name = "seed.safetensors"
            Bytes = bytes
        }

    /// A tokenized chain of `n` random codes (no missing backbone), for seed and large token inputs.
    let tokenChain (random: Random) (file: string) (chain: string) (n: int) : TokenizedChain =
        let letters = "ACDEFGHIKLMNPQRSTVWY"
        let missing = if n > 3 then [| n / 3 |] else [||]

        {
            File = file
            Chain = chain
            Sequence = String(Array.init n (fun _ -> letters.[random.Next letters.Length]))
            ResidueIndex = Array.init n (fun i -> i + 1)
            Tokens =
                Array.init n (fun i ->
                    if Array.contains i missing then
                        StructureTokens.Mask
                    else
                        int64 (random.Next 4096))
            MissingBackbone = missing
        }

    /// A tokens JSON (`TokensJson.toJson`) of two short chains, made from a fixed random stream.
    let tokensSeed () : FuzzSeed =
        let random = Random 8

        let chains =
            [|
                tokenChain random "1ubq_A.pdb" "A" 12
                tokenChain random "1ctf_A.pdb.gz" "" 7
            |]

        {
            Name = "seed.json"
            Bytes = Encoding.UTF8.GetBytes(TokensJson.toJson chains)
        }

    let private nastyNumbers =
        [|
            "NaN"
            "nan"
            "-nan"
            "Infinity"
            "-Infinity"
            "inf"
            "1e309"
            "-1e309"
            "1e-400"
            "99999999999999999999"
            "-99999999999999999999"
            "2147483647"
            "2147483648"
            "-2147483649"
            "9223372036854775807"
            "9223372036854775808"
            "18446744073709551615"
            "18446744073709551616"
            "-1"
            "0"
            "-0"
            "1.5"
            "-0.0"
            "1e3"
            "0x1F"
            "+5"
            ""
            "."
            "?"
            "-"
            "1,5"
            "\u0661\u0662"
            "4096"
            "4097"
            "1000000"
        |]

    let private nastyValues =
        [|
            "null"
            "true"
            "false"
            "\"x\""
            "\"\""
            "[]"
            "{}"
            "[1,2]"
            "[[1]]"
            "{\"a\":1}"
            "\"F32\""
            "\"BOOL\""
            "\"U64\""
            "\"F8_E4M3\""
            "'"
            "\""
            ";"
            "loop_"
            "_atom_site.Cartn_x"
            "data_x"
            "ATOM  "
            "END"
            "ENDMDL"
        |]

    let private isDelimiter (b: byte) =
        b = ' 'B
        || b = '\t'B
        || b = '\n'B
        || b = '\r'B
        || b = ','B
        || b = ':'B
        || b = '['B
        || b = ']'B
        || b = '{'B
        || b = '}'B
        || b = '"'B
        || b = '\''B

    let private isNumberByte (b: byte) =
        (b >= '0'B && b <= '9'B)
        || b = '-'B
        || b = '.'B
        || b = '+'B
        || b = 'e'B
        || b = 'E'B

    let private splice (bytes: byte[]) (start: int) (length: int) (insert: byte[]) =
        Array.concat [ bytes.[.. start - 1]; insert; bytes.[start + length ..] ]

    /// The (start, length) of the run around `pos` of bytes satisfying `inside`.
    let private runAt (inside: byte -> bool) (bytes: byte[]) (pos: int) =
        let mutable s = pos
        let mutable e = pos

        while s > 0 && inside bytes.[s - 1] do
            s <- s - 1

        while e < bytes.Length && inside bytes.[e] do
            e <- e + 1

        s, e - s

    /// Line starts (offsets) of a text.
    let private lineStarts (bytes: byte[]) =
        [|
            yield 0
            for i in 0 .. bytes.Length - 2 do
                if bytes.[i] = '\n'B then
                    yield i + 1
        |]

    /// (start, length) of a random line, without its newline.
    let private randomLine (random: Random) (bytes: byte[]) =
        let starts = lineStarts bytes
        let s = starts.[random.Next starts.Length]
        let nl = Array.IndexOf(bytes, '\n'B, s)
        let e = if nl < 0 then bytes.Length else nl
        s, e - s

    /// A number run (digits with sign, point, exponent) at or after a random position; None when there is none.
    let private randomNumber (random: Random) (bytes: byte[]) =
        if bytes.Length = 0 then
            None
        else
            let start = random.Next bytes.Length
            let isDigit (b: byte) = b >= '0'B && b <= '9'B

            let found =
                match Array.FindIndex(bytes, start, Predicate isDigit) with
                | -1 -> Array.FindIndex(bytes, Predicate isDigit)
                | i -> i

            if found < 0 then
                None
            else
                Some(runAt isNumberByte bytes found)

    let private pad (width: int) (text: string) =
        if text.Length >= width then text else text.PadLeft width

    let private ascii (s: string) = Encoding.UTF8.GetBytes s

    /// Text mutations: (name, mutate). Each returns new bytes.
    let private textMutation (random: Random) (maxBytes: int) (bytes: byte[]) : string * byte[] =
        let n = bytes.Length
        let pick (a: 'a[]) = a.[random.Next a.Length]

        match random.Next 16 with
        | 0 -> "truncate-byte", bytes.[.. random.Next(n + 1) - 1]
        | 1 ->
            let starts = lineStarts bytes
            let s = pick starts
            // Cut at a line start, or just before that line's newline (a line without its end).
            let cut = if random.Next 2 = 0 || s = 0 then s else s - 1
            "truncate-line", bytes.[.. cut - 1]
        | 2 when n > 0 ->
            let p = random.Next n
            let d = Array.FindIndex(bytes, p, Predicate isDelimiter)
            let cut = if d < 0 then n else d + random.Next 2
            "truncate-token", bytes.[.. min n cut - 1]
        | 3 when n > 0 ->
            let c = Array.copy bytes

            for _ in 1 .. 1 + random.Next 4 do
                let i = random.Next n
                c.[i] <- c.[i] ^^^ (1uy <<< random.Next 8)

            "flip-bit", c
        | 4 when n > 0 ->
            let c = Array.copy bytes

            for _ in 1 .. 1 + random.Next 4 do
                c.[random.Next n] <- pick [| 0uy; 0xffuy; 0x80uy; 0xc3uy; '\r'B; '\t'B; '\n'B; byte (random.Next 256) |]

            "random-byte", c
        | 5 ->
            // Shift the columns of one line: insert or delete a space inside it.
            let s, len = randomLine random bytes

            if len > 0 && random.Next 2 = 0 then
                "shift-left", splice bytes (s + random.Next len) 1 [||]
            else
                "shift-right", splice bytes (s + random.Next(len + 1)) 0 [| ' 'B |]
        | 6
        | 7 ->
            match randomNumber random bytes with
            | Some(s, len) ->
                let v = pick nastyNumbers
                // Half the time keep the width (fixed-column formats), else replace the run as is.
                let v = if random.Next 2 = 0 then pad len v else v

                let v =
                    if random.Next 4 = 0 && v.Length > len then
                        v.Substring(0, len)
                    else
                        v

                "number", splice bytes s len (ascii v)
            | None -> "number(none)", bytes
        | 8 when n > 0 ->
            let s, len = runAt (isDelimiter >> not) bytes (random.Next n)
            "value", splice bytes s len (ascii (pick nastyValues))
        | 9 when n > 0 ->
            let s, len = runAt (isDelimiter >> not) bytes (random.Next n)
            // Drop the token and, half the time, the delimiter after it (a missing field).
            let extra = if s + len < n && random.Next 2 = 0 then 1 else 0
            "delete-token", splice bytes s (len + extra) [||]
        | 10 ->
            let s, len = randomLine random bytes
            "delete-line", splice bytes s (min n (len + 1)) [||]
        | 11 ->
            let s, len = randomLine random bytes
            let line = bytes.[s .. s + len - 1]
            "duplicate-line", splice bytes s 0 (Array.append line [| '\n'B |])
        | 12 ->
            // Grow: one line repeated until the input approaches maxBytes ("a million residues" when large).
            let s, len = randomLine random bytes
            let line = Array.append bytes.[s .. s + len - 1] [| '\n'B |]
            let room = max 0 (maxBytes - n)
            let times = max 1 (room / line.Length)
            let times = if random.Next 2 = 0 then times else 1 + random.Next times
            "repeat-line", splice bytes s 0 (Array.concat (Array.create times line))
        | 13 ->
            let p = random.Next(n + 1)

            let garbage =
                pick
                    [|
                        [| 0xefuy; 0xbbuy; 0xbfuy |]
                        [| 0uy |]
                        [| 0xffuy; 0xfeuy |]
                        ascii "\r\n"
                        ascii "\n\n\n"
                        ascii "#"
                        ascii ";\n"
                        ascii "\"unterminated"
                        Array.init (1 + random.Next 16) (fun _ -> byte (random.Next 256))
                    |]

            "insert-garbage", splice bytes p 0 garbage
        | 14 ->
            "empty",
            pick
                [|
                    [||]
                    ascii " "
                    ascii "\n"
                    [| 0uy |]
                    [| 0xefuy; 0xbbuy; 0xbfuy |]
                    ascii "{}"
                    ascii "[]"
                    ascii "null"
                |]
        | _ ->
            // Swap two lines (order-sensitive formats: loop headers, MODEL/ENDMDL, JSON structure).
            let s1, l1 = randomLine random bytes
            let s2, l2 = randomLine random bytes

            if s1 = s2 then
                "swap-lines", bytes
            else
                let (a, la), (b, lb) = if s1 < s2 then (s1, l1), (s2, l2) else (s2, l2), (s1, l1)

                if a + la >= b then
                    "swap-lines", bytes
                else
                    let first = bytes.[a .. a + la - 1]
                    let second = bytes.[b .. b + lb - 1]

                    "swap-lines",
                    Array.concat [ bytes.[.. a - 1]; second; bytes.[a + la .. b - 1]; first; bytes.[b + lb ..] ]

    let private gzip (bytes: byte[]) =
        use output = new MemoryStream()

        do
            use z = new GZipStream(output, CompressionLevel.Fastest, true)
            z.Write(bytes, 0, bytes.Length)

        output.ToArray()

    /// Structure text: text mutations, sometimes gzipped afterwards (and then sometimes truncated or flipped).
    let private structureMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        let name, m = textMutation random maxBytes bytes

        // (GZipStream writes nothing at all for an empty input.)
        if random.Next 6 = 0 && m.Length > 0 then
            let z = gzip m

            match random.Next 3 with
            | 0 -> name + "+gzip", z
            | 1 -> name + "+gzip-truncate", z.[.. random.Next z.Length - 1]
            | _ ->
                let c = Array.copy z
                let i = random.Next c.Length
                c.[i] <- c.[i] ^^^ (1uy <<< random.Next 8)
                name + "+gzip-flip", c
        else
            name, m

    let private headerLength (bytes: byte[]) =
        if bytes.Length >= 8 then
            let n = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8))
            if n <= uint64 (bytes.Length - 8) then int n else -1
        else
            -1

    let private withLength (length: uint64) (bytes: byte[]) =
        let c = Array.copy bytes
        BinaryPrimitives.WriteUInt64LittleEndian(Span(c, 0, 8), length)
        c

    /// safetensors: lying header lengths, truncation at the format's boundaries, header JSON mutations (with the
    /// length prefix kept consistent or not), data-region flips.
    let private safetensorsMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        let n = headerLength bytes

        if n < 0 || bytes.Length < 8 then
            textMutation random maxBytes bytes
        else
            let fileLength = bytes.Length

            match random.Next 6 with
            | 0 ->
                let lie =
                    [|
                        0UL
                        1UL
                        uint64 n - 1UL
                        uint64 n + 1UL
                        uint64 n + 8UL
                        uint64 (fileLength - 8)
                        uint64 (fileLength - 7)
                        uint64 fileLength
                        100_000_000UL
                        100_000_001UL
                        (1UL <<< 31)
                        (1UL <<< 32) + uint64 n
                        (1UL <<< 63)
                        UInt64.MaxValue
                        uint64 (random.NextInt64())
                    |]

                "header-length", withLength lie.[random.Next lie.Length] bytes
            | 1 ->
                let boundaries =
                    [|
                        0
                        1
                        7
                        8
                        9
                        8 + n / 2
                        8 + n - 1
                        8 + n
                        8 + n + 1
                        fileLength - 1
                        fileLength - 4
                    |]

                let cut = boundaries.[random.Next boundaries.Length] |> max 0 |> min fileLength
                "truncate-boundary", bytes.[.. cut - 1]
            | 2 when fileLength > 8 + n ->
                let c = Array.copy bytes

                for _ in 1 .. 1 + random.Next 3 do
                    let i = 8 + n + random.Next(fileLength - 8 - n)
                    c.[i] <- byte (random.Next 256)

                "data-bytes", c
            | 3 ->
                // Extra bytes after the data (a region that belongs to no tensor), or a data region cut short.
                if random.Next 2 = 0 then
                    "append", Array.append bytes (Array.create (1 + random.Next 16) 0uy)
                else
                    "truncate-data", bytes.[.. fileLength - 1 - random.Next(max 1 (fileLength - 8 - n))]
            | _ ->
                let header = bytes.[8 .. 8 + n - 1]
                let data = bytes.[8 + n ..]
                let name, mutated = textMutation random maxBytes header
                // Half the time the length prefix follows the new header; otherwise it now lies.
                let consistent = random.Next 2 = 0

                let length = if consistent then uint64 mutated.Length else uint64 n

                let prefix = Array.zeroCreate<byte> 8
                BinaryPrimitives.WriteUInt64LittleEndian(Span prefix, length)

                ("header-" + name + (if consistent then "" else "(stale-length)")),
                Array.concat [ prefix; mutated; data ]

    /// tokens JSON: text mutations, or a fresh valid JSON of a huge chain (as many residues as maxBytes allows).
    let private tokensMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        if random.Next 20 = 0 then
            // About 20 bytes of JSON per residue.
            let residues = max 1 (maxBytes / 20)
            let chain = tokenChain random "huge.pdb" "A" (1 + random.Next residues)
            "huge-chain", Encoding.UTF8.GetBytes(TokensJson.toJson [| chain |])
        else
            textMutation random maxBytes bytes

    /// One mutation (sometimes two in a row) of `bytes` for `format`, drawn from `random`: the mutation's name and
    /// the new bytes.
    let mutate (format: FuzzFormat) (random: Random) (maxInputBytes: int) (bytes: byte[]) : string * byte[] =
        let once (b: byte[]) =
            match format with
            | FuzzFormat.Pdb
            | FuzzFormat.Mmcif -> structureMutation random maxInputBytes b
            | FuzzFormat.Safetensors -> safetensorsMutation random maxInputBytes b
            | FuzzFormat.Tokens -> tokensMutation random maxInputBytes b

        let name, first = once bytes

        if random.Next 4 = 0 && first.Length < maxInputBytes then
            let name2, second = once first
            name + "+" + name2, second
        else
            name, first
