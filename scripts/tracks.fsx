// Every ESM3 track of a chain, computed by our own code: sequence, structure tokens (shipped tokenizer), SS8 (our
// DSSP), SASA (our Shrake–Rupley), function and residue-annotation tracks (empty: no annotations) and the pLDDT
// inputs; prints one JSON object (README, "Tracks").
//   dotnet fsi scripts/tracks.fsx --pdb FILE [--chain ID] [--weights ENCODER.safetensors] [--out OUT.json]
#load "_load.fsx"

open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Structure

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Mandatory; Unique>] Pdb of file: string
    | [<Unique>] Chain of id: string
    | [<Unique>] Weights of encoder: string
    | [<Unique>] Out of json: string
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Pdb _ -> "PDB or mmCIF file, optionally .gz"
            | Chain _ -> "chain id (default: the first protein chain)"
            | Weights _ -> sprintf "structure encoder safetensors (default: %s)" ModelFiles.DefaultEncoderPath
            | Out _ -> "write the JSON to this file, atomically (default: standard output)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "tracks.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let weights =
        ModelFiles.resolveWeights
            (Cli.repositoryRoot __SOURCE_DIRECTORY__)
            ModelFiles.DefaultEncoderPath
            (args.GetResult(Weights, defaultValue = ""))

    use encoder = StructureEncoderCheckpoint.load weights

    encoder.``to`` (Cli.device (args.GetResult(Device, defaultValue = "cpu")))
    |> ignore

    let chain = args.GetResult(Chain, defaultValue = "")
    let file = args.GetResult Pdb

    let tracks =
        ChainTracks.ofChain encoder (StructureFile.read file (if chain = "" then None else Some chain))

    let json = ChainTracks.toJson { tracks with File = file }

    match args.TryGetResult Out with
    | Some path ->
        Esm3Structure.AtomicFile.write path (fun s ->
            let bytes = System.Text.Encoding.UTF8.GetBytes(json + "\n")
            s.Write(bytes, 0, bytes.Length))

        printfn "wrote %s" path
    | None -> printfn "%s" json

    0)
|> exit
