// Structure tokens of protein chains: reads PDB or mmCIF files (optionally gzipped; first model), encodes the chosen
// chain with a structure encoder and writes JSON (README, "Tokenize and decode").
//   dotnet fsi scripts/tokenize.fsx --pdb FILE [--pdb FILE ...] [--chain ID] [--weights ENCODER.safetensors]
//       [--out OUT.json] [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Models

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Mandatory>] Pdb of file: string
    | [<Unique>] Chain of id: string
    | [<Unique>] Weights of encoder: string
    | [<Unique>] Out of json: string
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Pdb _ -> "PDB or mmCIF file, optionally .gz (repeat for several: the output is then a JSON array)"
            | Chain _ -> "chain id (default: the first protein chain of each file)"
            | Weights _ -> ModelFiles.weightsUsage "encoder" ModelFiles.DefaultEncoderPath
            | Out _ -> "output JSON file, written atomically (default: standard output)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "tokenize.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    use encoder =
        ModelFiles.loadEncoderFor
            __SOURCE_DIRECTORY__
            (args.GetResult(Weights, defaultValue = ""))
            (args.GetResult(Device, defaultValue = "cpu"))

    let chain = args.GetResult(Chain, defaultValue = "")
    let files = args.GetResults Pdb |> Array.ofList
    let out = args.TryGetResult Out

    let chains =
        files
        |> Array.map (fun file ->
            let t = StructureTokenizer.tokenizeFile encoder file chain

            if out.IsSome then
                printfn
                    "%s chain '%s': %d residues, %d without backbone"
                    file
                    t.Chain
                    t.Tokens.Length
                    t.MissingBackbone.Length

            t)

    match out with
    | Some path ->
        TokensJson.writeJson path chains
        printfn "wrote %s" path
    | None -> stdout.Write(TokensJson.toJson chains)

    0)
|> exit
