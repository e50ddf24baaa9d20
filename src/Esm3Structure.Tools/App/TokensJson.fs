namespace Esm3Structure.App

open System
open System.IO
open System.Text
open System.Text.Json
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// The JSON of `scripts/tokenize.fsx` and `scripts/decode.fsx` (README, "Tokenize and decode"): tokenized chains
/// (`StructureTokenizer.TokenizedChain`) to text and back, every field validated on the way in.
module TokensJson =

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
