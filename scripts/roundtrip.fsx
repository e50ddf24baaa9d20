// Structure → tokens → structure with the shipped tokenizer (or given weights): prints the tokens of a real chain
// and the round trip's backbone RMSD, LDDT-CA and TM-score; with --split, the summary over a split of the corpus.
// The tokens are chosen with the decoder in the loop (`TokenSearch`, --search ROUNDS); --search 0 gives each
// residue its nearest code, as ESM's encoder does.
//   dotnet fsi scripts/roundtrip.fsx [--pdb FILE] [--chain ID] [--encoder FILE] [--decoder FILE] [--heads N]
//       [--search ROUNDS] [--device cpu|cuda]
//   dotnet fsi scripts/roundtrip.fsx --split valid|train|test [--chains N] [--data DIR] [--search ROUNDS]
//       [--out SUMMARY.json]
#load "_load.fsx"

open System.IO
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Unique>] Pdb of file: string
    | [<Unique>] Chain of id: string
    | [<Unique>] Split of name: string
    | [<Unique>] Chains of int
    | [<Unique>] Data of dir: string
    | [<Unique>] Encoder of file: string
    | [<Unique>] Decoder of file: string
    | [<Unique>] Heads of int
    | [<Unique>] Search of rounds: int
    | [<Unique>] Out of json: string
    | [<Unique>] Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Pdb _ -> "PDB or mmCIF file, optionally .gz (default: ../shared/data/small/1ubq_A.pdb)"
            | Chain _ -> "chain id (default: the first protein chain)"
            | Split _ -> "evaluate every chain of this split of the corpus (train, valid or test) instead of one file"
            | Chains _ -> "with --split: only its first N chains in the index (default: all)"
            | Data _ -> "corpus folder with index.tsv and structures/ (default: ../shared/data)"
            | Encoder _ ->
                sprintf
                    "encoder file, safetensors or a PyTorch .pth such as ESM's (default: %s)"
                    ModelFiles.DefaultEncoderPath
            | Decoder _ ->
                sprintf
                    "decoder file, safetensors or a PyTorch .pth such as ESM's (default: %s)"
                    ModelFiles.DefaultDecoderPath
            | Heads _ ->
                "the decoder's attention head count, which no state dict records (default: our file's metadata, else ESM's 64-wide heads)"
            | Search _ ->
                sprintf
                    "rounds of the token search with the decoder in the loop (default %d; 0: each residue's nearest code, as ESM)"
                    TokenSearchConfig.Default.Rounds
            | Out _ -> "write the summary and per-chain figures as JSON, atomically"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "roundtrip.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let root = Cli.repositoryRoot __SOURCE_DIRECTORY__
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)

    let resolve defaultPath given =
        ModelFiles.resolveWeights root defaultPath given

    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))

    use encoder =
        StructureEncoderCheckpoint.load (
            resolve ModelFiles.DefaultEncoderPath (args.GetResult(Encoder, defaultValue = ""))
        )

    use decoder =
        StructureDecoderCheckpoint.loadWith
            (args.TryGetResult Heads |> Option.map int64)
            (resolve ModelFiles.DefaultDecoderPath (args.GetResult(Decoder, defaultValue = "")))

    encoder.``to`` device |> ignore
    decoder.``to`` device |> ignore

    let chains =
        match args.TryGetResult Split with
        | Some split ->
            // Each entry's own chain (the index's chain column), as training and validation read them.
            let limit =
                match args.TryGetResult Chains with
                | Some n when n < 1 -> raise (System.ArgumentException(sprintf "--chains must be ≥ 1 (got %d)" n))
                | Some n -> n
                | None -> 0

            let entries = Corpus.entriesOf data split limit

            if entries.Length = 0 then
                raise (System.ArgumentException(sprintf "no chain of split '%s' in %s" split data))

            entries |> Array.map (Corpus.readEntry data)
        | None ->
            if args.Contains Chains then
                raise (System.ArgumentException "--chains: only with --split")

            let file =
                args.GetResult(Pdb, defaultValue = Path.Combine(data, "small", "1ubq_A.pdb"))

            let chain = args.GetResult(Chain, defaultValue = "")
            [| StructureFile.read file (if chain = "" then None else Some chain) |]

    let search =
        match args.GetResult(Search, defaultValue = TokenSearchConfig.Default.Rounds) with
        | n when n < 0 -> raise (System.ArgumentException(sprintf "--search must be ≥ 0 rounds (got %d)" n))
        | n ->
            { TokenSearchConfig.Default with
                Rounds = n
            }

    let trips =
        chains
        |> Array.map (fun c ->
            let t, searched =
                if search.Rounds = 0 then
                    RoundTrip.ofChain encoder decoder c, ""
                else
                    let found = TokenSearch.search search encoder decoder c

                    RoundTrip.ofTokens decoder c found.Tokenized,
                    sprintf "  (nearest codes: LDDT-CA %.3f; %d changed)" found.NearestLddtCa found.Changed

            let confidence =
                if decoder.ConfidenceTrained && decoder.PtmInformative then
                    sprintf "  pTM %.3f  mean pLDDT %.3f" t.Decoded.Ptm (Array.average t.Decoded.Plddt)
                elif decoder.ConfidenceTrained then
                    sprintf "  mean pLDDT %.3f" (Array.average t.Decoded.Plddt)
                else
                    ""

            printfn
                "%-12s %4d residues  backbone RMSD %6.3f Å  LDDT-CA %.3f  TM-score %.3f%s%s"
                c.Name
                t.Residues
                t.BackboneRmsd
                t.LddtCa
                t.TmScore
                confidence
                searched

            t)

    if not decoder.ConfidenceTrained then
        printfn "(pTM and pLDDT not shown: this decoder's confidence heads were never trained)"
    elif not decoder.PtmInformative then
        printfn "(pTM not shown: its validation found no correlation with the reconstructions' quality)"

    if trips.Length = 1 then
        let t = trips.[0]
        printfn "structure tokens: %s" (t.Tokenized.Tokens |> Array.map string |> String.concat " ")

        if t.Tokenized.MissingBackbone.Length > 0 then
            printfn "residues without N, CA and C (not decoded): %d" t.Tokenized.MissingBackbone.Length

        if t.MirrorRmsd < t.BackboneRmsd then
            printfn
                "the decoding lies closer to the chain's mirror image (backbone RMSD %.3f Å): the decoder drew the mirrored fold"
                t.MirrorRmsd

    let summary = RoundTrip.summarize encoder.Config.Quantizer.Codes trips

    if trips.Length > 1 then
        printfn
            "%d chains, %d residues: median backbone RMSD %.3f Å (mean %.3f), median LDDT-CA %.3f (mean %.3f), live codes %d / %d (%.1f %%), perplexity %.1f"
            summary.Chains
            summary.Residues
            summary.MedianBackboneRmsd
            summary.MeanBackboneRmsd
            summary.MedianLddtCa
            summary.MeanLddtCa
            summary.Usage.LiveCodes
            summary.Usage.Codes
            (100.0 * summary.Usage.LiveFraction)
            summary.Usage.Perplexity

        printfn
            "codebook: %d distinct vectors among its %d codes (codes closer than 1 %% of the median code norm counted as one)"
            (Esm3Structure.Nn.CodebookUsage.distinctCodes 0.01 encoder.Codebook.Codes)
            encoder.Config.Quantizer.Codes

        printfn
            "CA(i)–CA(i+1) distances of the decodings minus the chains': %+.3f Å on average (negative: shrunk locally)"
            summary.MeanCaStepError

        printfn "median TM-score of the decodings (CA): %.3f" summary.MedianTmScore

        printfn
            "decodings closer to their chain's mirror image than to the chain: %d of %d"
            summary.CloserToMirror
            summary.Chains

        if decoder.ConfidenceTrained then
            printfn
                "pLDDT against LDDT-CA per residue: Pearson r %.3f (%d residues)"
                summary.PlddtPearson
                summary.Residues

            printfn
                "pTM against the decodings' TM-score per chain: Pearson r %.3f (%d chains)"
                summary.PtmPearson
                summary.Chains

    args.TryGetResult Out
    |> Option.iter (fun path ->
        Esm3Structure.AtomicFile.write path (fun s ->
            let bytes =
                System.Text.Encoding.UTF8.GetBytes(
                    RoundTrip.toJson decoder.ConfidenceTrained decoder.PtmInformative search.Rounds summary trips
                )

            s.Write(bytes, 0, bytes.Length))

        printfn "wrote %s" path)

    0)
|> exit
