namespace Esm3Structure.App

open System
open System.IO
open Argu
open TorchSharp
open Esm3Structure
open Esm3Structure.Training

/// What every script shares: argument parsing with Argu (`--usage` and `--help`), device choice, and the rule
/// that a failure ends the script with a non-zero exit code and one line naming the problem (the stack trace
/// only with `--verbose`). A script run through `run` shows training progress as a live bar on a terminal
/// (`Progress.training`).
module Cli =

    /// Parses `cpu`, `cuda` or `cuda:N` into a device; CUDA must be available in this build.
    let device (name: string) : torch.Device =
        match name.Trim().ToLowerInvariant() with
        | "cpu" -> torch.CPU
        | d when d = "cuda" || d.StartsWith "cuda:" ->
            if not (torch.cuda.is_available ()) then
                failwithf
                    "device '%s' requested, but this build has no CUDA backend (build with -p:TorchDevice=cuda on a machine that can restore TorchSharp-cuda-linux)"
                    name

            torch.Device d
        | _ -> failwithf "unknown device '%s' (expected cpu, cuda or cuda:N)" name

    /// The repository root (the folder holding Research.sln), searched upward from `start`.
    let rec repositoryRoot (start: string) =
        if isNull start then
            failwith "Research.sln not found above the script"
        elif File.Exists(Path.Combine(start, "Research.sln")) then
            start
        else
            repositoryRoot (Path.GetDirectoryName start)

    /// The shared data folder beside the checkout (`../shared/data`), or ESM3_SHARED_DATA.
    let sharedData (scriptDir: string) =
        match Environment.GetEnvironmentVariable "ESM3_SHARED_DATA" with
        | null
        | "" -> Path.GetFullPath(Path.Combine(repositoryRoot scriptDir, "..", "shared", "data"))
        | d -> d

    /// The value of `parse value`, an ArgumentException from it re-raised with `flag` in front of its message, so that
    /// the one-line error names the flag. Without the flag's value: `otherwise`.
    let optionOf (flag: string) (parse: 'T -> 'R) (otherwise: 'R) (value: 'T option) : 'R =
        match value with
        | None -> otherwise
        | Some v ->
            try
                parse v
            with :? ArgumentException as e ->
                raise (ArgumentException(sprintf "%s: %s" flag e.Message))

    /// `Validation.check what result`, except that an error about a field a flag sets names the flag: `flags` pairs a
    /// field as `validate` words it (its path of parts, e.g. "Model: GeometricLayers" or "CropLength") with its flag
    /// (e.g. "--geometric-layers"); the first error about such a field is raised as "--flag: Field …" (the parts
    /// dropped), the others as `Validation.check` raises them.
    let checkConfig (what: string) (flags: (string * string) list) (result: Result<'Config, string list>) : 'Config =
        let named =
            Validation.errors result
            |> List.tryPick (fun error ->
                flags
                |> List.tryPick (fun (field, flag) ->
                    if error.StartsWith(field + " ", StringComparison.Ordinal) then
                        let bare =
                            field.Substring(field.LastIndexOf(": ", StringComparison.Ordinal) + 1).TrimStart()

                        Some(flag, bare + error.Substring field.Length)
                    else
                        None))

        match named with
        | Some(flag, error) -> raise (ArgumentException(sprintf "%s: %s" flag error))
        | None -> Validation.check what result

    let private oneLine (e: exn) =
        match e with
        | :? InputException as e -> e.Message
        | :? FileNotFoundException as e -> sprintf "file not found: %s" (defaultArg (Option.ofObj e.FileName) e.Message)
        | :? DirectoryNotFoundException
        | :? UnauthorizedAccessException
        | :? IOException -> e.Message
        // `invalidArg "flag" message` appends " (Parameter 'flag')": dropped where the message names it already.
        | :? ArgumentException as a when not (String.IsNullOrEmpty a.ParamName) ->
            let bare = a.Message.Replace(sprintf " (Parameter '%s')" a.ParamName, "")
            if bare.Contains a.ParamName then bare else a.Message
        | :? ArgumentException -> e.Message
        | e -> sprintf "%s: %s" (e.GetType().Name) e.Message

    /// Runs a script: parses `argv` (as given after the script name), calls `main`, and turns every failure into
    /// one line on stderr and a non-zero exit code (2 for bad arguments, 1 otherwise). `--usage` and `--help`
    /// print usage and exit 0. The returned value is the exit code; the script passes it to `exit`.
    let run<'Args when 'Args :> IArgParserTemplate>
        (programName: string)
        (argv: string[])
        (main: ParseResults<'Args> -> int)
        : int =
        let verbose = argv |> Array.contains "--verbose"
        let argv = argv |> Array.filter (fun a -> a <> "--verbose")
        let parser = ArgumentParser.Create<'Args>(programName = programName)
        Trainer.terminalDisplay <- Some Progress.training

        try
            let results = parser.ParseCommandLine(argv, raiseOnUsage = true)
            main results
        with
        | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText ->
            Console.Out.WriteLine(parser.PrintUsage())
            0
        | :? ArguParseException as e ->
            let first =
                e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.tryHead
                |> Option.defaultValue e.Message

            eprintfn "%s: %s (see --usage)" programName (first.Trim())
            2
        | e ->
            let e =
                match e with
                | :? AggregateException as a when a.InnerExceptions.Count = 1 -> a.InnerException
                | e -> e

            eprintfn "%s: %s" programName (oneLine e)

            if verbose then
                eprintfn "%O" e

            1
