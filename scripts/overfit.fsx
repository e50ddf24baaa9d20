// Can the tokenizer memorise a few chains? Trains the `small` model on named chains of the corpus (the `overfit`
// preset: crops of 64, batch 4, constant Adam 4e-4, 1,000 steps) and validates on the same chains every 100 steps:
// the diagnosis of issue 13 that the losses, labels, heads and frame composition can learn a structure at all.
// With --bypass-quantizer, the ceiling without the codebook. --model smoke trains the smoke model with Adam 1e-3 for
// 2,000 steps instead (`overfitSmoke`, the suite's overfit test).
//   dotnet fsi scripts/overfit.fsx [--chains 1smx_B,1ii7_A,1hyk_A,1j34_C] [--model small|smoke] [--steps N]
//       [--fape W] [--losses esm|linear|fape-pair-heads|fape-alone] [--bypass-quantizer] [--global-layers N] [--principal-position] [--learning-rate LR] [--data DIR] [--out DIR] [--device cpu|cuda]
#load "_load.fsx"

open System
open System.IO
open Argu
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Structure
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Chains of names: string
    | Model of name: string
    | Steps of int
    | Fape of weight: float
    | Losses of recipe: string
    | Bypass_Quantizer
    | Global_Layers of int
    | Principal_Position
    | Learning_Rate of float
    | Data of dir: string
    | Out of dir: string
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Chains _ ->
                "comma-separated corpus chains, name_chain as in index.tsv (default: 1smx_B,1ii7_A,1hyk_A,1j34_C, 42–46 residues)"
            | Model _ -> "small (default: Adam 4e-4, 1,000 steps) or smoke (Adam 1e-3, 2,000 steps: the suite's test)"
            | Steps _ -> "training steps (default: the model's)"
            | Fape _ -> "weight of backbone FAPE (default 0, ESM's losses only)"
            | Losses _ ->
                "the loss recipe: esm (default), linear (distance and direction linear beyond ESM's clamps), fape-pair-heads (FAPE in their place), fape-alone; --fape W then sets FAPE's weight"
            | Bypass_Quantizer -> "decode the encoder's continuous vectors (no codebook)"
            | Principal_Position ->
                "the encoder also sees each residue's CA position in its chain's principal-axes frame"
            | Global_Layers _ ->
                "residue-level encoder blocks after the neighbourhood stack (default 0: ESM's local tokens)"
            | Learning_Rate _ -> "Adam's learning rate (default: the model's)"
            | Data _ -> "corpus folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "run folder (default: runs/overfit); an earlier run there is replaced"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "overfit.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let out = args.GetResult(Out, defaultValue = "runs/overfit")
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))

    let chains =
        Corpus.readNamed data (args.GetResult(Chains, defaultValue = "1smx_B,1ii7_A,1hyk_A,1j34_C").Split(','))

    let preset =
        match args.GetResult(Model, defaultValue = "small") with
        | "small" -> TokenizerTrainConfig.overfit
        | "smoke" -> TokenizerTrainConfig.overfitSmoke
        | other -> raise (ArgumentException(sprintf "--model: expected small or smoke, got '%s'" other))

    match args.TryGetResult Steps with
    | Some steps when steps < 1 -> raise (ArgumentException(sprintf "--steps must be ≥ 1 (got %d)" steps))
    | _ -> ()

    let preset =
        args.TryGetResult Losses
        |> Cli.optionOf "--losses" (fun recipe -> TokenizerTrainConfig.withLosses recipe preset) preset

    let config =
        { preset with
            Weights =
                { preset.Weights with
                    Fape = args.GetResult(Fape, defaultValue = preset.Weights.Fape)
                }
            BypassQuantizer = args.Contains Bypass_Quantizer
            Encoder =
                { preset.Encoder with
                    GlobalLayers = args.GetResult(Global_Layers, defaultValue = preset.Encoder.GlobalLayers)
                    PrincipalPosition = args.Contains Principal_Position
                }
            ValidChains = chains.Length
            Trainer =
                { preset.Trainer with
                    Steps = args.GetResult(Steps, defaultValue = preset.Trainer.Steps)
                    LearningRate = args.GetResult(Learning_Rate, defaultValue = preset.Trainer.LearningRate)
                }
        }

    // Only an earlier run (a folder with config.json) is replaced; any other non-empty folder is refused.
    if
        Directory.Exists out
        && Directory.EnumerateFileSystemEntries out |> Seq.isEmpty |> not
    then
        if File.Exists(Path.Combine(out, "config.json")) then
            Directory.Delete(out, true)
        else
            raise (ArgumentException(sprintf "--out: %s is not empty and holds no earlier run (no config.json)" out))

    let report = TokenizerTraining.trainOn config device chains chains out false

    printfn ""

    printfn
        "%d chains (%s), %d residues; validation on the same chains:"
        chains.Length
        (String.Join(", ", chains |> Array.map (fun c -> c.Name)))
        (chains |> Array.sumBy ProteinChain.length)

    printfn "%6s %10s %9s %16s" "step" "RMSD (Å)" "LDDT-CA" "binned direction"

    for row in report.History do
        let get name =
            row.Validation |> Array.tryFind (fun (n, _) -> n = name) |> Option.map snd

        match get "rmsd", get "lddt_ca" with
        | Some rmsd, Some lddt ->
            let binned =
                row.Terms
                |> Array.tryFind (fun (n, _) -> n = "binned_direction")
                |> Option.map snd
                |> Option.defaultValue nan

            printfn "%6d %10.2f %9.3f %16.3f" row.Step rmsd lddt binned
        | _ -> ()

    printfn "%.0f s of training" report.ElapsedSeconds
    0)
|> exit
