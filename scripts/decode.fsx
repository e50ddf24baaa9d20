// Decodes structure tokens (the JSON of tokenize.fsx) into a PDB file: backbone N, CA, C from the decoder, O
// inferred, B-factor = 100 × pLDDT, and a line `REMARK 250 PTM: 0.8123` (README, "Tokenize and decode").
//   dotnet fsi scripts/decode.fsx --tokens TOKENS.json [--weights DECODER.safetensors|.pth] [--heads N] --out OUT.pdb
//       [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Models

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Mandatory; Unique>] Tokens of json: string
    | [<Unique>] Weights of decoder: string
    | [<Mandatory; Unique>] Out of pdb: string
    | [<Unique>] Heads of int
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Tokens _ -> "tokens JSON written by tokenize.fsx (one object; the sequence is optional)"
            | Weights _ -> ModelFiles.weightsUsage "decoder" ModelFiles.DefaultDecoderPath
            | Out _ -> "output PDB file, written atomically (.gz: gzipped)"
            | Heads _ ->
                "the decoder's attention head count, which no state dict records (default: our file's metadata, else ESM's 64-wide heads)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "decode.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    use decoder =
        ModelFiles.loadDecoderFor
            __SOURCE_DIRECTORY__
            (args.GetResult(Weights, defaultValue = ""))
            (args.GetResult(Heads, defaultValue = 0))
            (args.GetResult(Device, defaultValue = "cpu"))

    let tokensFile = args.GetResult Tokens
    let out = args.GetResult Out

    let tokenized =
        match TokensJson.readJson tokensFile with
        | [| one |] -> one
        | many ->
            raise (
                System.ArgumentException(
                    sprintf "%s holds %d chains; decode.fsx decodes one (split the array)" tokensFile many.Length
                )
            )

    let decoded = StructureTokenizer.decode decoder tokenized
    StructureTokenizer.writePdb out decoded

    if decoder.ConfidenceTrained && decoder.PtmInformative then
        printfn
            "%s: %d residues, pTM %.4f, mean pLDDT %.3f"
            out
            decoded.Plddt.Length
            decoded.Ptm
            (if decoded.Plddt.Length = 0 then
                 nanf
             else
                 Array.average decoded.Plddt)
    elif decoder.ConfidenceTrained then
        printfn
            "%s: %d residues, mean pLDDT %.3f (pTM not shown: its validation found no correlation with quality)"
            out
            decoded.Plddt.Length
            (if decoded.Plddt.Length = 0 then
                 nanf
             else
                 Array.average decoded.Plddt)
    else
        printfn
            "%s: %d residues (pTM and pLDDT not shown: this decoder's confidence heads were never trained)"
            out
            decoded.Plddt.Length

    0)
|> exit
