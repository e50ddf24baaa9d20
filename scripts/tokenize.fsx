// Structure tokens of protein chains: reads PDB or mmCIF files (optionally gzipped; first model), encodes the chosen
// chain with a structure encoder and writes JSON (README, "Tokenize and decode"). Each residue gets its nearest
// code, as ESM's encoder gives it; with --search ROUNDS the tokens are chosen with a decoder in the loop instead
// (`TokenSearch`: the same codebook, decoded closer to the chain).
//   dotnet fsi scripts/tokenize.fsx --pdb FILE [--pdb FILE ...] [--chain ID] [--weights ENCODER.safetensors]
//       [--search ROUNDS [--decoder DECODER.safetensors] [--heads N]] [--out OUT.json] [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Structure

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Mandatory>] Pdb of file: string
    | [<Unique>] Chain of id: string
    | [<Unique>] Weights of encoder: string
    | [<Unique>] Search of rounds: int
    | [<Unique>] Decoder of file: string
    | [<Unique>] Heads of int
    | [<Unique>] Out of json: string
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Pdb _ -> "PDB or mmCIF file, optionally .gz (repeat for several: the output is then a JSON array)"
            | Chain _ -> "chain id (default: the first protein chain of each file)"
            | Weights _ -> ModelFiles.weightsUsage "encoder" ModelFiles.DefaultEncoderPath
            | Search _ ->
                sprintf
                    "choose the tokens with the decoder in the loop, for at most this many rounds (shipped model: %d; default 0, each residue's nearest code as ESM)"
                    TokenSearchConfig.Default.Rounds
            | Decoder _ ->
                "with --search: "
                + ModelFiles.weightsUsage "decoder" ModelFiles.DefaultDecoderPath
            | Heads _ ->
                "with --search: the decoder's attention head count (default: its file's metadata, else 64-wide)"
            | Out _ -> "output JSON file, written atomically (default: standard output)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "tokenize.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    use encoder =
        ModelFiles.loadEncoderFor
            __SOURCE_DIRECTORY__
            (args.GetResult(Weights, defaultValue = ""))
            (args.GetResult(Device, defaultValue = "cpu"))

    let rounds = args.GetResult(Search, defaultValue = 0)

    if rounds < 0 then
        raise (System.ArgumentException(sprintf "--search must be ≥ 0 rounds (got %d)" rounds))

    if rounds = 0 && (args.Contains Decoder || args.Contains Heads) then
        raise (System.ArgumentException "--decoder and --heads: only with --search")

    let decoder =
        if rounds = 0 then
            None
        else
            Some(
                ModelFiles.loadDecoderFor
                    __SOURCE_DIRECTORY__
                    (args.GetResult(Decoder, defaultValue = ""))
                    (args.GetResult(Heads, defaultValue = 0))
                    (args.GetResult(Device, defaultValue = "cpu"))
            )

    use _release =
        { new System.IDisposable with
            member _.Dispose() =
                decoder |> Option.iter (fun d -> d.Dispose())
        }

    let search =
        { TokenSearchConfig.Default with
            Rounds = rounds
        }

    let chain = args.GetResult(Chain, defaultValue = "")
    let files = args.GetResults Pdb |> Array.ofList
    let out = args.TryGetResult Out

    let chains =
        files
        |> Array.map (fun file ->
            let t =
                match decoder with
                | None -> StructureTokenizer.tokenizeFile encoder file chain
                | Some decoder ->
                    let c = StructureFile.read file (if chain = "" then None else Some chain)
                    let found = TokenSearch.search search encoder decoder c

                    if out.IsSome then
                        printfn
                            "%s: LDDT-CA of the decoding %.3f (nearest codes %.3f), %d tokens changed in %d rounds"
                            file
                            found.LddtCa
                            found.NearestLddtCa
                            found.Changed
                            found.Rounds

                    { found.Tokenized with File = file }

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
