// Issue 16's evaluation of a multi-track model on whole chains of a split (README, "Generate"): inverse folding
// (structure -> sequence), SS8 from sequence, and structure from sequence (structure tokens, then the tokenizer's
// decoder), argmax decoding by default, once per seed; each figure beside its baseline.
//   dotnet fsi scripts/evaluate-generation.fsx -- [--split valid] [--chains N] [--seeds 0,1,2] [--steps N]
//       [--tasks sequence,ss8,structure] [--strategy random|entropy] [--schedule cosine|linear] [--temperature X]
//       [--structure-tokens] [--weights MODEL]
//       [--encoder FILE] [--decoder FILE] [--data DIR] [--out FILE.json]
#load "_load.fsx"

open System
open System.IO
open System.Text.Json
open Argu
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Design

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Unique>] Split of name: string
    | [<Unique>] Chains of int
    | [<Unique>] Seeds of list: string
    | [<Unique>] Tasks of list: string
    | [<Unique>] Steps of int
    | [<Unique>] Strategy of name: string
    | [<Unique>] Schedule of name: string
    | [<Unique>] Temperature of float
    | Structure_Tokens
    | [<Unique>] Weights of model: string
    | [<Unique>] Encoder of file: string
    | [<Unique>] Decoder of file: string
    | [<Unique>] Data of dir: string
    | [<Unique>] Out of file: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Split _ -> "split of the shared data (default valid)"
            | Chains _ -> "the first N chains of the split (default: all)"
            | Seeds _ -> "generation seeds, comma-separated (default 0,1,2)"
            | Tasks _ ->
                "tasks by the track they generate, comma-separated: sequence (inverse folding), ss8, structure (default: all three)"
            | Steps _ -> "decoding steps per chain (default 20, ESM's; at most the chain's length)"
            | Strategy _ -> "random (default) or entropy"
            | Schedule _ -> "cosine (default) or linear"
            | Temperature _ -> "sampling temperature, annealed as ESM anneals it (default 0: argmax)"
            | Structure_Tokens -> "inverse folding also sees the structure tokens (default: coordinates only, as ESM)"
            | Weights _ -> "multi-track model (default: the shipped models/multitrack)"
            | Encoder _ -> ModelFiles.weightsUsage "structure encoder" ModelFiles.DefaultEncoderPath
            | Decoder _ -> ModelFiles.weightsUsage "structure decoder" ModelFiles.DefaultDecoderPath
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "also write the figures as JSON, atomically"

Cli.run<Args>
    "evaluate-generation.fsx"
    (fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--"))
    (fun args ->
        let seeds =
            args.GetResult(Seeds, defaultValue = "0,1,2").Split(',', StringSplitOptions.RemoveEmptyEntries)
            |> Array.map (fun s ->
                match Int32.TryParse(s.Trim()) with
                | true, n -> n
                | _ -> raise (ArgumentException(sprintf "--seeds: '%s' is not an integer" s)))

        if seeds.Length = 0 then
            raise (ArgumentException "--seeds: give at least one seed")

        let tasks =
            args
                .GetResult(Tasks, defaultValue = "sequence,ss8,structure")
                .Split(',', StringSplitOptions.RemoveEmptyEntries)
            |> Array.map (fun t ->
                match GenerationPrompt.parseTrack t with
                | GenerationTrack.Sasa ->
                    raise (
                        ArgumentException "--tasks: sasa is not one of the evaluated tasks (sequence, ss8, structure)"
                    )
                | track -> track)

        let steps = args.GetResult(Steps, defaultValue = 20)
        let temperature = args.GetResult(Temperature, defaultValue = 0.0)
        GenerationPrompt.checkSettings steps temperature 1.0 1

        let strategy =
            GenerationPrompt.parseStrategy (args.GetResult(Strategy, defaultValue = "random"))

        let schedule =
            GenerationPrompt.parseSchedule (args.GetResult(Schedule, defaultValue = "cosine"))

        let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
        let split = args.GetResult(Split, defaultValue = "valid")
        let chains = Corpus.readSplit data split (args.GetResult(Chains, defaultValue = 0))

        // The files actually used, resolved as the loaders resolve them, so the record can name them by hash.
        let resolved defaultRelative given =
            ModelFiles.resolveWeights (Cli.repositoryRoot __SOURCE_DIRECTORY__) defaultRelative given

        let weightsFile =
            resolved ModelFiles.DefaultMultiTrackPath (args.GetResult(Weights, defaultValue = ""))

        let encoderFile =
            resolved ModelFiles.DefaultEncoderPath (args.GetResult(Encoder, defaultValue = ""))

        let decoderFile =
            resolved ModelFiles.DefaultDecoderPath (args.GetResult(Decoder, defaultValue = ""))

        use model = ModelFiles.loadMultiTrackFor __SOURCE_DIRECTORY__ weightsFile "cpu"

        use encoder = ModelFiles.loadEncoderFor __SOURCE_DIRECTORY__ encoderFile "cpu"

        use decoder = ModelFiles.loadDecoderFor __SOURCE_DIRECTORY__ decoderFile 0 "cpu"

        encoder.eval ()
        decoder.eval ()

        let designer =
            {
                Model = model
                Encoder = Some encoder
                Decoder = Some decoder
                FunctionTokenizer = None
            }

        let config =
            { GenerationConfig.esm3 GenerationTrack.Sequence with
                Steps = steps
                Strategy = strategy
                Schedule = schedule
                Temperature = temperature
                TopP = 1.0
                ConditionOnCoordinatesOnly = not (args.Contains Structure_Tokens)
            }

        let residues = chains |> Array.sumBy (fun c -> c.Sequence.Length)

        printfn
            "%s split: %d chains, %d residues; %d steps, %A, %A, %s; seeds %s"
            split
            chains.Length
            residues
            steps
            schedule
            strategy
            (if temperature = 0.0 then
                 "argmax"
             else
                 sprintf "temperature %g" temperature)
            (String.Join(",", seeds))

        let clock = Diagnostics.Stopwatch.StartNew()
        let baselines = GenerationEvaluation.baselines encoder decoder tasks chains
        printfn "baselines: %.0f s" clock.Elapsed.TotalSeconds

        let evaluated (track: GenerationTrack) = tasks |> Array.contains track

        let scores =
            seeds
            |> Array.map (fun seed ->
                let s =
                    GenerationEvaluation.run
                        designer
                        config
                        tasks
                        seed
                        (Action<_, _, _>(fun task done_ total ->
                            if done_ = total then
                                printfn "seed %d: %s done (%.0f s)" seed task clock.Elapsed.TotalSeconds))
                        chains

                let figures =
                    [
                        if evaluated GenerationTrack.Sequence then
                            sprintf "recovery %.4f" s.Recovery
                        if evaluated GenerationTrack.Ss8 then
                            sprintf "SS8 accuracy %.4f" s.Ss8Accuracy
                        if evaluated GenerationTrack.Structure then
                            sprintf "structure median RMSD %.2f Å, median TM-score %.3f" s.MedianRmsd s.MedianTmScore
                    ]

                printfn "seed %d: %s" seed (String.Join(", ", figures))

                s)

        let meanSd (f: GenerationTaskScores -> float) =
            let xs = scores |> Array.map f
            let m = Array.average xs

            let sd =
                if xs.Length < 2 then
                    nan
                else
                    sqrt ((xs |> Array.sumBy (fun x -> (x - m) ** 2.0)) / float (xs.Length - 1))

            m, sd

        // Rows of the tasks evaluated only; one seed has no spread.
        let row
            (track: GenerationTrack)
            (task: string)
            (metric: string)
            (f: GenerationTaskScores -> float)
            (digits: int)
            (baseline: string)
            =
            if evaluated track then
                let m, sd = meanSd f

                let fmt (x: float) =
                    x.ToString("F" + string digits, Globalization.CultureInfo.InvariantCulture)

                let figure =
                    if seeds.Length < 2 then
                        fmt m
                    else
                        sprintf "%s ± %s" (fmt m) (fmt sd)

                printfn "| %s | %s | %s | %s |" task metric figure baseline

        printfn ""

        if seeds.Length < 2 then
            printfn "| task | figure | model, 1 seed | baseline |"
        else
            printfn "| task | figure | model, mean ± sd over %d seeds | baseline |" seeds.Length

        printfn "|---|---|---:|---|"

        row
            GenerationTrack.Sequence
            "inverse folding"
            "sequence recovery"
            (fun s -> s.Recovery)
            3
            (sprintf "%.3f (always '%c', the commonest residue)" baselines.UnigramRecovery baselines.UnigramLetter)

        row
            GenerationTrack.Ss8
            "SS8 from sequence"
            "accuracy"
            (fun s -> s.Ss8Accuracy)
            3
            (sprintf "%.3f (always '%c', the commonest class)" baselines.MajorityAccuracy baselines.MajorityClass)

        row
            GenerationTrack.Structure
            "structure from sequence"
            "median backbone RMSD (Å)"
            (fun s -> s.MedianRmsd)
            2
            (sprintf
                "%.2f true tokens decoded; %.2f true tokens shuffled"
                baselines.TrueTokensMedianRmsd
                baselines.ShuffledTokensMedianRmsd)

        row
            GenerationTrack.Structure
            "structure from sequence"
            "median TM-score"
            (fun s -> s.MedianTmScore)
            3
            (sprintf
                "%.3f true tokens decoded; %.3f true tokens shuffled"
                baselines.TrueTokensMedianTmScore
                baselines.ShuffledTokensMedianTmScore)

        printfn "(%.0f s)" clock.Elapsed.TotalSeconds

        match args.TryGetResult Out with
        | Some path ->
            let json =
                JsonSerializer.Serialize(
                    {|
                        split = split
                        chains = chains.Length
                        residues = residues
                        steps = steps
                        strategy = sprintf "%A" strategy
                        schedule = sprintf "%A" schedule
                        temperature = temperature
                        coordinates_only = config.ConditionOnCoordinatesOnly
                        weights_sha256 = ModelFiles.sha256 weightsFile
                        encoder_sha256 = ModelFiles.sha256 encoderFile
                        decoder_sha256 = ModelFiles.sha256 decoderFile
                        baselines = baselines
                        seeds = scores
                    |},
                    JsonSerializerOptions(
                        WriteIndented = true,
                        NumberHandling = Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals
                    )
                )

            Esm3Structure.Structure.TextFiles.writeAtomic path (json + "\n")
            printfn "wrote %s" path
        | None -> ()

        0)
|> exit
