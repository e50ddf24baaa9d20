namespace Esm3Structure.Checks

open System
open System.Buffers.Binary
open System.Diagnostics
open System.IO
open System.Text
open System.Threading.Tasks
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.App

/// A deterministic fuzz harness for the readers: a runner reads each case (`FuzzMutators`, `FuzzLarge`) from a scratch
/// file with a time limit and a bound on allocation, classifying the outcome. Every `Unhandled`, `Timeout` or
/// `ExcessAllocation` is a reader bug.
module Fuzz =

    /// Reads a case with the format's reader(s); returns the bytes of the native tensors it produced (which the
    /// managed allocation counter does not see).
    let private readWith (format: FuzzFormat) (path: string) : int64 =
        use _ = torch.NewDisposeScope()

        match format with
        | FuzzFormat.Pdb
        | FuzzFormat.Mmcif ->
            // The chain's arrays are managed, so the allocation counter already includes them.
            StructureFile.read path None |> ignore
            0L
        | FuzzFormat.Safetensors ->
            Safetensors.readHeader path |> ignore
            let file = Safetensors.read path

            file.Tensors
            |> List.sumBy (fun (_, t) -> t.NumberOfElements * int64 t.ElementSize)
        | FuzzFormat.Tokens ->
            TokensJson.readJson path |> ignore
            0L

    /// The input size a read may use: the file length, or for a gzip file the size its last trailer declares,
    /// clamped to deflate's maximum ratio (1032:1).
    let private justifiedSize (bytes: byte[]) =
        let n = int64 bytes.Length

        if TextFiles.isGzip bytes && bytes.Length >= 18 then
            let declared =
                int64 (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(bytes, bytes.Length - 4, 4)))

            max n (min declared (1032L * n))
        else
            n

    let private firstLine (s: string) =
        let s = if isNull s then "" else s

        match s.IndexOf '\n' with
        | -1 -> s
        | i -> s.Substring(0, i)

    /// Runs one case: writes `bytes` to `path`, reads it on its own thread with the time limit, and classifies the
    /// outcome (allocation measured with `GC.GetAllocatedBytesForCurrentThread` on that thread).
    let runCase
        (config: FuzzConfig)
        (format: FuzzFormat)
        (path: string)
        (index: int)
        (seed: string)
        (mutation: string)
        (bytes: byte[])
        : FuzzCase =
        File.WriteAllBytes(path, bytes)

        let work () =
            let before = GC.GetAllocatedBytesForCurrentThread()
            let watch = Stopwatch.StartNew()

            let outcome, produced =
                try
                    let produced = readWith format path
                    FuzzOutcome.Valid, produced
                with
                | :? InputException as e when e.Error.File = path ->
                    let kind =
                        match e.Error.Location with
                        | InputLocation.Line _ -> "Line"
                        | InputLocation.Field _ -> "Field"
                        | InputLocation.Offset _ -> "Offset"
                        | InputLocation.Whole -> "Whole"

                    FuzzOutcome.TypedError kind, 0L
                | :? InputException as e ->
                    FuzzOutcome.Unhandled(
                        "InputException",
                        sprintf "names '%s', not the file: %s" e.Error.File e.Message
                    ),
                    0L
                | e -> FuzzOutcome.Unhandled(e.GetType().FullName, firstLine e.Message), 0L

            watch.Stop()
            outcome, watch.Elapsed.TotalMilliseconds, GC.GetAllocatedBytesForCurrentThread() - before + produced

        let task = Task.Factory.StartNew(work, TaskCreationOptions.LongRunning)

        let outcome, ms, allocated =
            if task.Wait config.TimeLimitMs then
                task.Result
            else
                FuzzOutcome.Timeout, float config.TimeLimitMs, 0L

        let limit = config.AllocationFactor * justifiedSize bytes + config.AllocationSlack

        let outcome =
            match outcome with
            | FuzzOutcome.Valid
            | FuzzOutcome.TypedError _ when allocated > limit -> FuzzOutcome.ExcessAllocation(allocated, limit)
            | o -> o

        {
            Format = format
            Index = index
            Seed = seed
            Mutation = mutation
            InputBytes = bytes.Length
            Outcome = outcome
            Milliseconds = ms
            AllocatedBytes = allocated
        }

    /// Runs `config.Cases` cases of `format`: case i mutates seed i mod |seeds| with a `Random` seeded from
    /// `config.Seed` and the format, reading each from a scratch file in `scratchDir`.
    let run (config: FuzzConfig) (format: FuzzFormat) (seeds: FuzzSeed[]) (scratchDir: string) : FuzzCase[] =
        if seeds.Length = 0 then
            invalidArg "seeds" "no seed inputs"

        let random =
            Random(config.Seed * 31 + List.findIndex ((=) format) FuzzMutators.formats)

        let path = Path.Combine(scratchDir, "case" + FuzzMutators.extension format)

        [|
            for i in 0 .. config.Cases - 1 do
                let seed = seeds.[i % seeds.Length]

                let mutation, bytes =
                    FuzzMutators.mutate format random config.MaxInputBytes seed.Bytes

                runCase config format path i seed.Name mutation bytes
        |]

    /// True for the outcomes the harness accepts: Valid and TypedError.
    let isAcceptable (outcome: FuzzOutcome) : bool =
        match outcome with
        | FuzzOutcome.Valid
        | FuzzOutcome.TypedError _ -> true
        | _ -> false

    /// The outcome's kind for tables: Valid, TypedError(Line), Unhandled(type), Timeout, ExcessAllocation.
    let outcomeKind (outcome: FuzzOutcome) : string =
        match outcome with
        | FuzzOutcome.Valid -> "Valid"
        | FuzzOutcome.TypedError k -> sprintf "TypedError(%s)" k
        | FuzzOutcome.Unhandled(t, _) -> sprintf "Unhandled(%s)" t
        | FuzzOutcome.Timeout -> "Timeout"
        | FuzzOutcome.ExcessAllocation _ -> "ExcessAllocation"

    /// A plain-text report: cases run per format, outcomes by kind, the slowest case, and every unacceptable case.
    let summary (cases: FuzzCase[]) : string =
        let sb = StringBuilder()
        let line (s: string) = sb.AppendLine s |> ignore

        for format, group in cases |> Array.groupBy (fun c -> c.Format) do
            line (sprintf "%s: %d cases" (FuzzMutators.formatName format) group.Length)

            for kind, n in group |> Array.countBy (fun c -> outcomeKind c.Outcome) |> Array.sortBy fst do
                line (sprintf "  %-28s %6d" kind n)

        if cases.Length > 0 then
            let slow = cases |> Array.maxBy (fun c -> c.Milliseconds)

            line (
                sprintf
                    "slowest: %s case %d (%s of %s, %d bytes): %.1f ms, %s"
                    (FuzzMutators.formatName slow.Format)
                    slow.Index
                    slow.Mutation
                    slow.Seed
                    slow.InputBytes
                    slow.Milliseconds
                    (outcomeKind slow.Outcome)
            )

        for c in cases do
            if not (isAcceptable c.Outcome) then
                let detail =
                    match c.Outcome with
                    | FuzzOutcome.Unhandled(_, m) -> m
                    | FuzzOutcome.ExcessAllocation(a, l) -> sprintf "allocated %d bytes, limit %d" a l
                    | _ -> ""

                line (
                    sprintf
                        "FAIL %s case %d (%s of %s, %d bytes): %s %s"
                        (FuzzMutators.formatName c.Format)
                        c.Index
                        c.Mutation
                        c.Seed
                        c.InputBytes
                        (outcomeKind c.Outcome)
                        detail
                )

        sb.ToString()

    /// The time limit of a large case: `config.TimeLimitMs` plus 1 ms per kB of input (a floor of 1 MB/s: linear
    /// readers stay far below it even on a loaded machine, anything quadratic in the input far above).
    let largeTimeLimitMs (config: FuzzConfig) (inputBytes: int) : int = config.TimeLimitMs + inputBytes / 1000

    /// Runs a large input like any case (the allocation bound of `config`), with `largeTimeLimitMs`.
    let runLarge (config: FuzzConfig) (scratchDir: string) (index: int) (input: FuzzLargeInput) : FuzzCase =
        let path = Path.Combine(scratchDir, "large" + FuzzMutators.extension input.Format)

        let config =
            { config with
                TimeLimitMs = largeTimeLimitMs config input.Bytes.Length
            }

        try
            runCase config input.Format path index input.Description "large" input.Bytes
        finally
            File.Delete path

    /// True when a large case reached its expected outcome within its bounds.
    let largeOk (input: FuzzLargeInput) (case: FuzzCase) : bool =
        outcomeKind case.Outcome = input.Expected

    /// One report line of a large case: format, input, outcome (and the expected one when it differs), time,
    /// allocation and its ratio to the input, and the bounds.
    let largeLine (config: FuzzConfig) (input: FuzzLargeInput) (case: FuzzCase) : string =
        let mb (b: int64) = float b / 1e6
        let limit = config.AllocationFactor * int64 case.InputBytes + config.AllocationSlack

        sprintf
            "%s%s %s (%.1f MB): %s%s in %.0f ms (limit %d), allocated %.0f MB = %.1f × input (limit %.0f MB)"
            (if largeOk input case then "" else "FAIL ")
            (FuzzMutators.formatName case.Format)
            input.Description
            (mb (int64 case.InputBytes))
            (outcomeKind case.Outcome)
            (match case.Outcome with
             | _ when largeOk input case -> ""
             | FuzzOutcome.Unhandled(_, m) -> sprintf " (expected %s: %s)" input.Expected m
             | _ -> sprintf " (expected %s)" input.Expected)
            case.Milliseconds
            (largeTimeLimitMs config case.InputBytes)
            (mb case.AllocatedBytes)
            (float case.AllocatedBytes / float case.InputBytes)
            (mb limit)
