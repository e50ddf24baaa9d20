namespace Esm3Structure.Models

open System
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Structure

/// One chain as structure tokens: the record behind the JSON of `scripts/tokenize.fsx` (README, "Tokenize and
/// decode"). One token per residue in file order, no BOS/EOS.
type TokenizedChain =
    {
        /// The structure file the chain was read from (as given).
        File: string
        /// The chain id as read ("" when blank).
        Chain: string
        /// One-letter sequence, one letter per token; "" when unknown (decoding then uses alanine, as ESM).
        Sequence: string
        /// Author residue numbers, one per token.
        ResidueIndex: int[]
        /// Codebook ids 0 … 4095; `StructureTokens.Mask` (4096) exactly at the residues of `MissingBackbone`.
        Tokens: int64[]
        /// 0-based positions (into the arrays above) of residues without all of N, CA and C: no frame, so no token.
        MissingBackbone: int[]
    }

/// Structure files → tokens → JSON, and JSON → tokens → decoded PDB: the facade behind `scripts/tokenize.fsx` and
/// `scripts/decode.fsx`.
module StructureTokenizer =

    /// The shipped encoder, relative to the repository root (README, "The shipped tokenizer").
    [<Literal>]
    let DefaultEncoderPath = "models/structure-tokenizer/encoder.safetensors"

    /// The shipped decoder, relative to the repository root.
    [<Literal>]
    let DefaultDecoderPath = "models/structure-tokenizer/decoder.safetensors"

    /// The weights file to use: `given` when not null or empty, else `DefaultEncoderPath`/`DefaultDecoderPath`
    /// (`defaultRelative`) under `repositoryRoot`. A missing default file (an incomplete checkout) raises an
    /// `ArgumentException` naming it and saying to pass --weights. A given path is returned as is (its reader names it).
    let resolveWeights (repositoryRoot: string) (defaultRelative: string) (given: string) : string =
        if not (String.IsNullOrEmpty given) then
            given
        else
            let path = Path.Combine(repositoryRoot, defaultRelative)

            if File.Exists path then
                path
            else
                raise (
                    ArgumentException(
                        sprintf
                            "the shipped model %s is missing (incomplete checkout?): pass --weights FILE"
                            defaultRelative
                    )
                )

    /// Usage text of a script's `--weights` flag for a model kind ("encoder", "decoder") whose shipped file is
    /// `defaultRelative`.
    let weightsUsage (kind: string) (defaultRelative: string) =
        sprintf "%s file, safetensors or a PyTorch .pth such as ESM's (default: the shipped %s)" kind defaultRelative

    let private loadFor
        (load: string -> 'M)
        (defaultRelative: string)
        (scriptDir: string)
        (weights: string)
        (device: string)
        : 'M :> torch.nn.Module =
        let device = Cli.device device
        let m = load (resolveWeights (Cli.repositoryRoot scriptDir) defaultRelative weights)

        try
            m.``to`` device |> ignore
            m
        with _ ->
            m.Dispose()
            reraise ()

    /// What `scripts/tokenize.fsx` does with its `--weights` and `--device`: the device parsed first (`Cli.device`:
    /// "cpu", "cuda", "cuda:N"), then `weights` resolved (null or "": the shipped `DefaultEncoderPath` of the
    /// repository above `scriptDir`, see `resolveWeights`), loaded (`StructureEncoder.load`) and moved there.
    let loadEncoderFor (scriptDir: string) (weights: string) (device: string) : StructureEncoder =
        loadFor StructureEncoder.load DefaultEncoderPath scriptDir weights device

    /// `loadEncoderFor` for the decoder (`DefaultDecoderPath`, `StructureDecoder.loadWith heads`, `heads` 0: not
    /// given): `scripts/decode.fsx`.
    let loadDecoderFor (scriptDir: string) (weights: string) (heads: int) (device: string) : StructureDecoder =
        let heads = if heads = 0 then None else Some(int64 heads)
        loadFor (StructureDecoder.loadWith heads) DefaultDecoderPath scriptDir weights device

    /// Tokenizes a chain with `encoder` (in eval mode, no gradients): backbone N, CA, C in float32, the author
    /// residue numbers as positions (as ESM's `ProteinChain.to_structure_encoder_inputs`), one chain. Residues
    /// without a complete backbone get `StructureTokens.Mask` and are listed in `MissingBackbone` (ESM would give
    /// them the code nearest the projection of a zero vector; we do not guess). `File` is the chain's name.
    let tokenize (encoder: StructureEncoder) (chain: ProteinChain) : TokenizedChain =
        let l = ProteinChain.length chain

        let tokens, framed =
            if l = 0 then
                [||], [||]
            else
                use _scope = torch.NewDisposeScope()
                use _noGrad = torch.no_grad ()
                let device = Checkpoint.deviceOf encoder

                let backbone =
                    (ProteinChain.backbone torch.float32 chain).unsqueeze(0L).``to`` device

                let residueIndex = (ProteinChain.residueIndex chain).unsqueeze(0L).``to`` device
                let out = encoder.Encode(backbone, residueIndex, null, null)

                let ids =
                    out.Tokens.select(0L, 0L).cpu().to_type(torch.int64).contiguous().data<int64>().ToArray()

                let framed = out.Framed.select(0L, 0L).cpu().contiguous().data<bool>().ToArray()
                ids, framed

        {
            File = chain.Name
            Chain = chain.ChainId
            Sequence = chain.Sequence
            ResidueIndex = Array.copy chain.ResidueIndex
            Tokens = Array.init l (fun i -> if framed.[i] then tokens.[i] else StructureTokens.Mask)
            MissingBackbone =
                [|
                    for i in 0 .. l - 1 do
                        if not framed.[i] then
                            i
                |]
        }

    /// Reads the chain `chain` (null or "": the first protein chain) of a PDB or mmCIF file (optionally gzipped,
    /// first model) and tokenizes it; `File` is `path` as given. Bad input raises an `InputException` naming it.
    let tokenizeFile (encoder: StructureEncoder) (path: string) (chain: string) : TokenizedChain =
        let c =
            StructureFile.read path (if String.IsNullOrEmpty chain then None else Some chain)

        { tokenize encoder c with File = path }

    let private writeChain (w: Utf8JsonWriter) (t: TokenizedChain) =
        w.WriteStartObject()
        w.WriteString("file", t.File)
        w.WriteString("chain", t.Chain)
        w.WriteString("sequence", t.Sequence)
        w.WriteStartArray "residue_index"

        for i in t.ResidueIndex do
            w.WriteNumberValue i

        w.WriteEndArray()
        w.WriteStartArray "structure_tokens"

        for id in t.Tokens do
            w.WriteNumberValue id

        w.WriteEndArray()
        w.WriteStartArray "missing_backbone"

        for i in t.MissingBackbone do
            w.WriteNumberValue i

        w.WriteEndArray()
        w.WriteEndObject()

    /// The JSON text: one object for one chain, an array of objects otherwise (an empty array for none). Fields:
    /// file, chain, sequence, residue_index, structure_tokens, missing_backbone (README, "Tokenize and decode").
    let toJson (chains: TokenizedChain[]) : string =
        use buffer = new MemoryStream()

        do
            use w =
                new Utf8JsonWriter(
                    buffer,
                    JsonWriterOptions(Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping)
                )

            if chains.Length = 1 then
                writeChain w chains.[0]
            else
                w.WriteStartArray()

                for c in chains do
                    writeChain w c

                w.WriteEndArray()

        Encoding.UTF8.GetString(buffer.ToArray()) + "\n"

    /// Writes `toJson chains` to `path` atomically (temporary file, then rename).
    let writeJson (path: string) (chains: TokenizedChain[]) : unit =
        let bytes = Encoding.UTF8.GetBytes(toJson chains)
        AtomicFile.write path (fun s -> s.Write(bytes, 0, bytes.Length))

    let private parseChain (file: string) (prefix: string) (e: JsonElement) : TokenizedChain =
        let fail (field: string) message =
            InputError.raise file (InputLocation.Field(prefix + field)) message

        if e.ValueKind <> JsonValueKind.Object then
            InputError.raise
                file
                (if prefix = "" then
                     InputLocation.Whole
                 else
                     InputLocation.Field(prefix.TrimEnd '.'))
                (sprintf "expected a JSON object, got %s" (Json.kindName e))

        let tryField (name: string) =
            match e.TryGetProperty name with
            | true, v when v.ValueKind <> JsonValueKind.Null -> Some v
            | _ -> None

        let field (name: string) =
            match tryField name with
            | Some v -> v
            | None -> fail name "missing"

        let text (name: string) (v: JsonElement) =
            if v.ValueKind <> JsonValueKind.String then
                fail name (sprintf "expected a string, got %s" (Json.kindName v))

            v.GetString()

        let integers (name: string) (v: JsonElement) =
            if v.ValueKind <> JsonValueKind.Array then
                fail name (sprintf "expected an array of integers, got %s" (Json.kindName v))

            v.EnumerateArray()
            |> Seq.mapi (fun i x ->
                match x.ValueKind with
                | JsonValueKind.Number ->
                    match x.TryGetInt64() with
                    | true, n -> n
                    | _ -> fail (sprintf "%s[%d]" name i) (sprintf "expected an integer, got %s" (x.GetRawText()))
                | _ -> fail (sprintf "%s[%d]" name i) (sprintf "expected an integer, got %s" (Json.kindName x)))
            |> Array.ofSeq

        let path = text "file" (field "file")
        let chain = text "chain" (field "chain")
        let tokens = integers "structure_tokens" (field "structure_tokens")
        let l = tokens.Length

        tokens
        |> Array.iteri (fun i id ->
            if not (StructureTokens.isCode id || id = StructureTokens.Mask) then
                fail
                    (sprintf "structure_tokens[%d]" i)
                    (sprintf
                        "%d is not a structure token (expected a code 0 … %d, or %d for a residue without backbone)"
                        id
                        (StructureTokens.CodebookSize - 1L)
                        StructureTokens.Mask))

        let residueIndex =
            integers "residue_index" (field "residue_index")
            |> Array.mapi (fun i n ->
                if n < int64 Int32.MinValue || n > int64 Int32.MaxValue then
                    fail (sprintf "residue_index[%d]" i) (sprintf "%d does not fit a residue number" n)

                int n)

        if residueIndex.Length <> l then
            fail "residue_index" (sprintf "has %d entries but structure_tokens has %d" residueIndex.Length l)

        let sequence =
            match tryField "sequence" with
            | None -> ""
            | Some v ->
                let s = text "sequence" v

                if s <> "" && s.Length <> l then
                    fail "sequence" (sprintf "has %d letters but structure_tokens has %d" s.Length l)

                match s |> Seq.tryFindIndex (fun c -> not (Char.IsAsciiLetterUpper c)) with
                | Some i -> fail "sequence" (sprintf "character %d ('%c') is not an upper-case letter" i s.[i])
                | None -> s

        let masked =
            [|
                for i in 0 .. l - 1 do
                    if tokens.[i] = StructureTokens.Mask then
                        i
            |]

        let missing =
            match tryField "missing_backbone" with
            | None -> masked
            | Some v ->
                let given = integers "missing_backbone" v

                given
                |> Array.iteri (fun i p ->
                    if p < 0L || p >= int64 l then
                        fail (sprintf "missing_backbone[%d]" i) (sprintf "position %d is outside 0 … %d" p (l - 1))

                    if i > 0 && p <= given.[i - 1] then
                        fail (sprintf "missing_backbone[%d]" i) "positions must be strictly increasing")

                let given = given |> Array.map int

                if given <> masked then
                    fail
                        "missing_backbone"
                        (sprintf
                            "lists positions [%s] but structure_tokens holds %d (MASK) at [%s]"
                            (String.Join(", ", given))
                            StructureTokens.Mask
                            (String.Join(", ", masked)))

                given

        {
            File = path
            Chain = chain
            Sequence = sequence
            ResidueIndex = residueIndex
            Tokens = tokens
            MissingBackbone = missing
        }

    /// Parses the JSON of `toJson` (an object, or an array of objects), validating every field: file, chain,
    /// residue_index and structure_tokens are required; sequence (same length, upper-case letters) and
    /// missing_backbone (must list exactly the MASK positions) are optional; unknown fields are ignored. Problems
    /// raise an `InputException` naming `file` and the field (e.g. `structure_tokens[3]`, `[1].chain`), or the line
    /// for text that is not JSON.
    let ofJson (file: string) (json: string) : TokenizedChain[] =
        use doc = Json.parseDocument file json
        let root = doc.RootElement

        match root.ValueKind with
        | JsonValueKind.Object -> [| parseChain file "" root |]
        | JsonValueKind.Array ->
            root.EnumerateArray()
            |> Seq.mapi (fun i e -> parseChain file (sprintf "[%d]." i) e)
            |> Array.ofSeq
        | _ ->
            InputError.raise
                file
                InputLocation.Whole
                (sprintf "expected a JSON object or an array of objects, got %s" (Json.kindName root))

    /// Reads a tokens JSON file (see `ofJson`). A missing file raises `FileNotFoundException`.
    let readJson (path: string) : TokenizedChain[] =
        if not (File.Exists path) then
            raise (FileNotFoundException(sprintf "file not found: %s" path, path))

        ofJson path (File.ReadAllText path)

    /// Decodes a tokenized chain (BOS and EOS added; `StructureDecoder.decodeWithSequence`), with the chain's
    /// sequence (alanine when unknown), chain id and residue numbers. A MASK (a residue without backbone) raises an
    /// `InputException` naming `File` and the position: the decoder needs every token.
    let decode (decoder: StructureDecoder) (tokenized: TokenizedChain) : DecodedStructure =
        tokenized.Tokens
        |> Array.iteri (fun i id ->
            if id = StructureTokens.Mask then
                InputError.raise
                    tokenized.File
                    (InputLocation.Field(sprintf "structure_tokens[%d]" i))
                    "MASK (a residue without backbone): only chains with every structure token can be decoded")

        let l = tokenized.Tokens.Length

        let sequence =
            if String.IsNullOrEmpty tokenized.Sequence then
                String('A', l)
            else
                tokenized.Sequence

        let wrapped = StructureTokens.wrap tokenized.File tokenized.Tokens
        let d = StructureDecoder.decodeWithSequence decoder sequence wrapped

        { d with
            Chain =
                { d.Chain with
                    Name = Path.GetFileName tokenized.File
                    ChainId = tokenized.Chain
                    ResidueIndex = Array.copy tokenized.ResidueIndex
                }
        }

    /// The PDB text of a decoded chain: `REMARK 250 PTM: 0.8123` (four decimals), then the atoms (atom37 order;
    /// B-factor = 100 · pLDDT). A chain id longer than one character (mmCIF) is written as its first character.
    let toPdb (decoded: DecodedStructure) : string =
        let chain =
            if decoded.Chain.ChainId.Length > 1 then
                { decoded.Chain with
                    ChainId = decoded.Chain.ChainId.Substring(0, 1)
                }
            else
                decoded.Chain

        String.Format(Globalization.CultureInfo.InvariantCulture, "REMARK 250 PTM: {0:F4}\n", decoded.Ptm)
        + Pdb.toText AtomLayout.Atom37 None chain

    /// Writes `toPdb decoded` to `path` atomically (gzip when it ends in .gz).
    let writePdb (path: string) (decoded: DecodedStructure) : unit =
        TextFiles.writeAtomic path (toPdb decoded)
