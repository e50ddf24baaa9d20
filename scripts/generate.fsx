// ESM3's generation workflow (README, "Generate"): a prompt (a chain's structure and sequence, a sequence with `_`
// for masked positions, an SS8 string), one track filled by iterative decoding with the multi-track model, the
// samples written as FASTA, PDB/mmCIF (decoded structure, B = 100 x pLDDT) or JSON.
//   dotnet fsi scripts/generate.fsx -- [--pdb FILE [--chain ID]] [--sequence S] [--ss8 S] --track T --out FILE
//       [--steps N] [--temperature X] [--top-p P] [--strategy random|entropy] [--schedule cosine|linear] [--num N]
//       [--seed N] [--structure-tokens] [--weights MODEL] [--encoder FILE] [--decoder FILE] [--device cpu|cuda]
#load "_load.fsx"

open System
open Argu
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Design
open Esm3Structure.Tokenizers

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Unique>] Pdb of file: string
    | [<Unique>] Chain of id: string
    | [<Unique>] Sequence of string
    | [<Unique>] Ss8 of string
    | [<Unique; Mandatory>] Track of name: string
    | [<Unique; Mandatory>] Out of file: string
    | [<Unique>] Steps of int
    | [<Unique>] Temperature of float
    | [<Unique; CustomCommandLine("--top-p")>] Top_P of float
    | [<Unique>] Strategy of name: string
    | [<Unique>] Schedule of name: string
    | [<Unique>] Num of int
    | [<Unique>] Seed of int
    | Structure_Tokens
    | [<Unique>] Weights of model: string
    | [<Unique>] Encoder of file: string
    | [<Unique>] Decoder of file: string
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Pdb _ -> "PDB or mmCIF file (optionally .gz): its chain's sequence and structure are the prompt"
            | Chain _ -> "chain id of --pdb (default: the first protein chain)"
            | Sequence _ -> "sequence prompt, _ at the positions to fill (replaces --pdb's sequence)"
            | Ss8 _ -> "SS8 prompt (GHITEBSC), _ at the positions to fill"
            | Track _ -> "the track to generate: sequence, structure, ss8 or sasa"
            | Out _ -> "output by extension: .fasta, .pdb, .cif or .json (several samples: records, MODELs, array)"
            | Steps _ -> "decoding steps (default 20, ESM's; at most the positions to fill)"
            | Temperature _ -> "sampling temperature, annealed as ESM does (default 1; 0 = argmax)"
            | Top_P _ -> "nucleus sampling mass in (0, 1] (default 1)"
            | Strategy _ -> "which masked positions a step fills: random (default) or entropy"
            | Schedule _ -> "how many positions stay masked after each step: cosine (default) or linear"
            | Num _ -> "samples (default 1)"
            | Seed _ -> "random seed (default 0); sample i uses ProteinGeneration.sampleSeed seed i"
            | Structure_Tokens ->
                "also condition on --pdb's structure tokens (ESM's condition_on_coordinates_only = false; default: coordinates only, as ESM)"
            | Weights _ -> "multi-track model, safetensors or .pth (default: the shipped models/multitrack)"
            | Encoder _ -> ModelFiles.weightsUsage "structure encoder" ModelFiles.DefaultEncoderPath
            | Decoder _ -> ModelFiles.weightsUsage "structure decoder" ModelFiles.DefaultDecoderPath
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "generate.fsx" (fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")) (fun args ->
    // Settings first: every flag error comes before any model is read.
    let track = GenerationPrompt.parseTrack (args.GetResult Track)
    let steps = args.GetResult(Steps, defaultValue = 20)
    let temperature = args.GetResult(Temperature, defaultValue = 1.0)
    let topP = args.GetResult(Top_P, defaultValue = 1.0)
    let num = args.GetResult(Num, defaultValue = 1)
    GenerationPrompt.checkSettings steps temperature topP num

    let strategy =
        GenerationPrompt.parseStrategy (args.GetResult(Strategy, defaultValue = "random"))

    let schedule =
        GenerationPrompt.parseSchedule (args.GetResult(Schedule, defaultValue = "cosine"))

    let out = args.GetResult Out

    if args.Contains Chain && not (args.Contains Pdb) then
        raise (ArgumentException "--chain needs --pdb")

    let pdbPath = args.TryGetResult Pdb

    let pdb =
        pdbPath
        |> Option.map (fun path -> Protein.read path (args.GetResult(Chain, defaultValue = "")))

    let prompt =
        GenerationPrompt.build
            track
            pdb
            (defaultArg pdbPath "")
            (args.GetResult(Sequence, defaultValue = ""))
            (args.GetResult(Ss8, defaultValue = ""))

    GenerationPrompt.checkOutput out track (not (isNull prompt.Coordinates))
    let device = args.GetResult(Device, defaultValue = "cpu")

    use model =
        ModelFiles.loadMultiTrackFor __SOURCE_DIRECTORY__ (args.GetResult(Weights, defaultValue = "")) device

    use encoder =
        ModelFiles.loadEncoderFor __SOURCE_DIRECTORY__ (args.GetResult(Encoder, defaultValue = "")) device

    use decoder =
        ModelFiles.loadDecoderFor __SOURCE_DIRECTORY__ (args.GetResult(Decoder, defaultValue = "")) 0 device

    let designer =
        {
            Model = model
            Encoder = Some encoder
            Decoder = Some decoder
            FunctionTokenizer = None
        }

    let masked = ProteinGeneration.maskedPositions designer track prompt
    // ESM's default of 20 steps shrinks to the positions to fill; an explicit --steps must fit them.
    let steps =
        if args.Contains Steps then
            steps
        else
            max 1 (min steps masked)

    GenerationPrompt.checkSteps track steps masked

    let config =
        { GenerationConfig.esm3 track with
            Steps = steps
            Temperature = temperature
            TopP = topP
            Strategy = strategy
            Schedule = schedule
            ConditionOnCoordinatesOnly = not (args.Contains Structure_Tokens)
        }

    let seed = args.GetResult(Seed, defaultValue = 0)
    let prompts = Array.create num prompt

    let samples =
        if Console.IsOutputRedirected then
            ProteinGeneration.generate
                designer
                config
                seed
                (Action<_, _, _>(fun i done_ total ->
                    if done_ = total then
                        printfn "sample %d/%d: %d steps" (i + 1) num total))
                prompts
        else
            let stepsEach = min steps masked

            Progress.run
                (sprintf "%A: %d samples x %d steps" track num stepsEach)
                (float (num * stepsEach))
                0.0
                (fun update ->
                    ProteinGeneration.generate
                        designer
                        config
                        seed
                        (Action<_, _, _>(fun i done_ _ -> update (float (i * stepsEach + done_)) null))
                        prompts)

    let samples =
        samples
        |> Array.mapi (fun i p ->
            { p with
                Name = sprintf "%s_sample%d" prompt.Name (i + 1)
            })

    Protein.write out samples

    for s in samples do
        let plddt =
            if isNull s.Plddt then
                ""
            else
                sprintf ", mean pLDDT %.3f" (Array.average s.Plddt)

        let shown =
            match track with
            | GenerationTrack.Sequence -> s.Sequence
            | GenerationTrack.Ss8 -> s.SecondaryStructure
            | GenerationTrack.Structure -> sprintf "%d structure tokens%s" s.StructureTokens.Length plddt
            | GenerationTrack.Sasa ->
                s.Sasa
                |> Array.map (fun v -> if Double.IsNaN v then "_" else sprintf "%.0f" v)
                |> String.concat " "

        printfn "%s: %s" s.Name shown

    printfn "wrote %s" out
    0)
|> exit
