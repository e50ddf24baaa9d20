namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open System.Text.RegularExpressions
open TorchSharp
open Esm3Structure

/// ESM3's function-keyword track (evolutionaryscale/esm `esm/tokenization/function_tokenizer.py`,
/// `esm/utils/function/tfidf.py`, `esm/utils/function/lsh.py`; ESM3-REFERENCE.md §8.5). Per residue, the labels
/// covering it (keywords and/or InterPro ids) become one TF-IDF vector (element-wise max of the keywords' vector and
/// each InterPro id's vector), which 8 LSH tables of 8 hyperplanes hash into 8 values of 8 bits; id = 4 + value.
///
/// Files (ESM's own — a 58,641-term vocabulary, an IDF .npy, an .npz of hyperplanes — are not available here, so
/// this library defines a simple equivalent):
/// - keywords file: UTF-8 text, one term per line, line n → term id n − 1 (ESM's vocabulary .txt is the same);
/// - tensors file: safetensors with `idf` [V] and `hyperplanes` [8, 8, V] (F32 or F64; read as float64);
/// - InterPro file (optional): UTF-8 text, one `IPRxxxxxx<TAB>term,term,…` line per entry (ESM: a CSV with
///   `interpro_id` and comma-joined `keywords`).
///
/// Decoding: ESM decodes function tokens to keywords with a separately trained network; the only exact inverse is
/// token → LSH bit pattern (`decodeTokens`, `bitsOfValue`), which is what this module offers.
module FunctionTokenizer =

    /// `<pad>`.
    [<Literal>]
    let Pad = SpecialIds.Pad

    /// BOS (the `<pad>` id).
    [<Literal>]
    let Bos = SpecialIds.Bos

    /// EOS (the `<pad>` id).
    [<Literal>]
    let Eos = SpecialIds.Eos

    /// Mask (the `<pad>` id).
    [<Literal>]
    let Mask = SpecialIds.Mask

    /// Chain break (the `<pad>` id).
    [<Literal>]
    let ChainBreak = SpecialIds.ChainBreak

    /// `<motif>`.
    [<Literal>]
    let Motif = SpecialIds.Motif

    /// `<unk>`.
    [<Literal>]
    let Unk = SpecialIds.Unk

    /// `<none>`.
    [<Literal>]
    let NoLabels = SpecialIds.NoLabels

    /// Id of LSH value 0, the first after the special ids; value u has id `LshOffset + u`.
    [<Literal>]
    let LshOffset = SpecialIds.NoLabels + 1L

    /// Tokens per residue (LSH tables).
    [<Literal>]
    let Depth = 8

    /// Bits per token (hyperplanes per table).
    [<Literal>]
    let BitsPerToken = 8

    /// Ids per slot: 4 specials + 256 LSH values (ESM3's `function_embed.t` rows).
    [<Literal>]
    let VocabularySize = 260L

    /// The 260 token strings in id order: `<pad> <motif> <unk> <none> <lsh:0> … <lsh:255>`.
    let vocabulary =
        Array.append [| "<pad>"; "<motif>"; "<unk>"; "<none>" |] (Array.init 256 (sprintf "<lsh:%d>"))

    // ---- vocabulary ----

    /// A keyword vocabulary from terms, their IDF weights and InterPro → keywords (null for none). A length mismatch,
    /// an empty/repeated term or a non-positive IDF raises an `InputException` naming `source` and "term i"; an
    /// InterPro key that is not `IPR` + digits raises one naming the key.
    let createVocabulary
        (source: string)
        (terms: string[])
        (idf: float[])
        (interProKeywords: IReadOnlyDictionary<string, string[]>)
        : KeywordVocabulary =
        if terms.Length <> idf.Length then
            InputError.raise
                source
                (InputLocation.Field "idf")
                (sprintf "%d IDF values for %d terms" idf.Length terms.Length)

        match KeywordVocabulary.problem terms idf with
        | Some(i, message) -> InputError.raise source (InputLocation.Field(sprintf "term %d" i)) message
        | None -> ()

        let interPro = Dictionary<string, string[]>(StringComparer.Ordinal)

        if not (isNull interProKeywords) then
            for kv in interProKeywords do
                if isNull kv.Key || not (Regex.IsMatch(kv.Key, @"^IPR\d+$")) then
                    InputError.raise
                        source
                        (InputLocation.Field(sprintf "InterPro '%s'" kv.Key))
                        "an InterPro id is IPR followed by digits"

                interPro.[kv.Key] <- (if isNull kv.Value then [||] else Array.copy kv.Value)

        KeywordVocabulary(Array.copy terms, Array.copy idf, interPro)

    // ---- TF-IDF ----

    /// ESM's `TFIDFModel.encode`: for the in-vocabulary terms of `terms` (others are ignored), value
    /// `(1 + ln tf) · idf`, then L2-normalised; the zero vector when no term is in the vocabulary.
    /// Shapes: -> [V] float64
    let tfidf (vocabulary: KeywordVocabulary) (terms: string seq) : torch.Tensor =
        let counts = Dictionary<int, int>()

        for t in terms do
            let i = vocabulary.IndexOf t

            if i >= 0 then
                counts.[i] <-
                    (match counts.TryGetValue i with
                     | true, c -> c
                     | _ -> 0)
                    + 1

        let values = Array.zeroCreate<float> vocabulary.Size

        for kv in counts do
            values.[kv.Key] <- (1.0 + log (float kv.Value)) * vocabulary.Idf.[kv.Key]

        let norm = sqrt (Array.sumBy (fun v -> v * v) values)

        if norm > 0.0 then
            for i in 0 .. values.Length - 1 do
                values.[i] <- values.[i] / norm

        torch.tensor (values, dtype = torch.float64)

    let private interProPattern = Regex(@"IPR\d+", RegexOptions.Compiled)

    /// The TF-IDF vector of one residue's labels, as ESM's `_function_text_hash` before hashing: the keyword labels'
    /// vector (one count each), element-wise max with the vector of each InterPro label's keywords. A label is an
    /// InterPro entry when it contains `IPR<digits>` that the vocabulary knows, else a keyword when it is a term;
    /// anything else raises an `InputException` naming the label (ESM raises `ValueError("Unsupported")`).
    /// Shapes: -> [V] float64
    let labelVector (vocabulary: KeywordVocabulary) (labels: string seq) : torch.Tensor =
        let interProIds = ResizeArray<string>()
        let keywords = ResizeArray<string>()

        for label in labels do
            let m = interProPattern.Match label

            if m.Success && vocabulary.InterProKeywords.ContainsKey m.Value then
                interProIds.Add m.Value
            elif vocabulary.IndexOf label >= 0 then
                keywords.Add label
            else
                InputError.raise
                    "function annotations"
                    (InputLocation.Field(sprintf "label '%s'" label))
                    "neither a known InterPro entry nor a keyword of the vocabulary"

        let mutable v = tfidf vocabulary keywords

        for id in interProIds do
            use w = tfidf vocabulary vocabulary.InterProKeywords.[id]
            let pooled = torch.maximum (v, w)
            v.Dispose()
            v <- pooled

        v

    // ---- LSH ----

    let private checkTables (tables: LshTables) (v: torch.Tensor) =
        let h = tables.Hyperplanes

        if
            h.dim () <> 3L
            || h.shape.[0] <> int64 Depth
            || h.shape.[1] <> int64 BitsPerToken
        then
            Tensors.Shape.mismatch "hyperplanes" "[8, 8, V]" h

        Tensors.Shape.expectTrailing "v" [| h.shape.[2] |] v

    /// The LSH bits: `bit[t, b] = (hyperplane[t, b] · v ≥ 0)`, computed in float64.
    /// Shapes: v [*, V] -> [*, 8, 8] bool
    let lshBits (tables: LshTables) (v: torch.Tensor) : torch.Tensor =
        checkTables tables v
        let h = tables.Hyperplanes
        use h64 = h.to_type torch.float64
        use flat = h64.reshape (int64 (Depth * BitsPerToken), h.shape.[2])
        use v64 = v.to_type torch.float64
        use flatT = flat.t ()
        use dots = v64.matmul flatT // [*, 64]

        let shape =
            Array.append v.shape.[.. v.shape.Length - 2] [| int64 Depth; int64 BitsPerToken |]

        use dots3 = dots.reshape shape
        use zero = 0.0.ToScalar()
        dots3.ge zero

    /// The LSH value of each table: `Σ_b bit[t, b] · 2^b` (hyperplane b is bit b, least significant first), 0 … 255.
    /// Shapes: v [*, V] -> [*, 8] int64
    let lshValues (tables: LshTables) (v: torch.Tensor) : torch.Tensor =
        use bits = lshBits tables v
        use bitsI = bits.to_type torch.int64
        use weights = torch.tensor (Array.init BitsPerToken (fun b -> 1L <<< b))
        use weighted = bitsI * weights
        weighted.sum (-1L)

    /// The 8 bits of an LSH value, least significant (hyperplane 0) first. A value outside 0 … 255 raises an
    /// `ArgumentException`.
    let bitsOfValue (value: int) : bool[] =
        if value < 0 || value > 255 then
            raise (ArgumentException(sprintf "LSH value %d is outside 0…255" value, "value"))

        Array.init BitsPerToken (fun b -> (value >>> b) &&& 1 = 1)

    // ---- tokens ----

    /// Per-residue function tokens, as ESM's `tokenize`: no annotations → `Pad` everywhere; a residue nothing covers →
    /// `NoLabels`; labels with an all-zero TF-IDF vector → `Unk`; otherwise the 8 LSH values of `labelVector`. Ranges
    /// (1-based, inclusive) outside 1 … `length` and unsupported labels raise an `InputException`.
    let tokenize (data: FunctionTokenizerData) (annotations: FunctionAnnotation[]) (length: int) : FunctionToken[] =
        let source = "function annotations"

        if length < 0 then
            InputError.raise source InputLocation.Whole (sprintf "negative sequence length %d" length)

        if annotations.Length = 0 then
            Array.create length FunctionToken.Pad
        else
            let perResidue = FunctionAnnotation.perResidue source length annotations

            let key (labels: string[]) =
                String.Join("\u0000", Array.sort labels)

            let cache = Dictionary<string, FunctionToken>(StringComparer.Ordinal)

            for labels in perResidue do
                let k = key labels

                if labels.Length > 0 && not (cache.ContainsKey k) then
                    use _ = torch.NewDisposeScope()
                    use v = labelVector data.Vocabulary labels

                    let token =
                        if v.count_nonzero().item<int64>() = 0L then
                            FunctionToken.Unk
                        else
                            use values = lshValues data.Tables v
                            FunctionToken.Hash(values.data<int64>().ToArray() |> Array.map int)

                    cache.[k] <- token

            perResidue
            |> Array.map (fun labels ->
                if labels.Length = 0 then
                    FunctionToken.NoLabels
                else
                    cache.[key labels])

    /// The 8 ids of one token: a special repeated 8 times, or `4 + value` per table. A `Hash` without exactly 8 values
    /// in 0 … 255 raises an `ArgumentException`.
    let tokenIds (token: FunctionToken) : int64[] =
        match token with
        | FunctionToken.Pad -> Array.create Depth Pad
        | FunctionToken.Motif -> Array.create Depth Motif
        | FunctionToken.Unk -> Array.create Depth Unk
        | FunctionToken.NoLabels -> Array.create Depth NoLabels
        | FunctionToken.Hash values ->
            if
                isNull values
                || values.Length <> Depth
                || values |> Array.exists (fun u -> u < 0 || u > 255)
            then
                raise (ArgumentException("an LSH token has 8 values in 0…255", "token"))

            values |> Array.map (fun u -> LshOffset + int64 u)

    /// ESM's string form of a token: `<pad>`, `<motif>`, `<unk>`, `<none>` or `<lsh:u0,u1,…,u7>`.
    let tokenText (token: FunctionToken) : string =
        match token with
        | FunctionToken.Pad -> "<pad>"
        | FunctionToken.Motif -> "<motif>"
        | FunctionToken.Unk -> "<unk>"
        | FunctionToken.NoLabels -> "<none>"
        | FunctionToken.Hash values -> "<lsh:" + String.Join(",", values) + ">"

    /// Tokens to ids, as ESM's `encode`: one row of 8 ids per residue; with `addSpecialTokens` an all-zero BOS row
    /// before and EOS row after.
    /// Shapes: tokens L -> [L (+2), 8]
    let encodeTokens (addSpecialTokens: bool) (tokens: FunctionToken[]) : int64[,] =
        let offset = if addSpecialTokens then 1 else 0
        let rows = Array2D.zeroCreate (tokens.Length + 2 * offset) Depth

        tokens
        |> Array.iteri (fun r token -> tokenIds token |> Array.iteri (fun k id -> rows.[r + offset, k] <- id))

        rows

    /// Annotations straight to ids with BOS/EOS rows: `encodeTokens true (tokenize data annotations length)`.
    /// Shapes: -> [L + 2, 8]
    let encode (data: FunctionTokenizerData) (annotations: FunctionAnnotation[]) (length: int) : int64[,] =
        encodeTokens true (tokenize data annotations length)

    /// Ids back to tokens (the exact inverse of `encodeTokens`): a row of 8 equal specials is that special; a row of 8
    /// LSH ids is `Hash (id − 4)`. With `hasSpecialTokens` the first and last rows must be all 0 and are dropped. A row
    /// not 8 wide, an id outside 0 … 259, or a row mixing specials with LSH ids or with each other raises an
    /// `InputException` naming the row.
    /// Shapes: ids [L (+2), 8] -> tokens L
    let decodeTokens (hasSpecialTokens: bool) (ids: int64[,]) : FunctionToken[] =
        let source = "function tokens"
        let n, w = Array2D.length1 ids, Array2D.length2 ids

        if w <> Depth then
            InputError.raise source InputLocation.Whole (sprintf "expected %d ids per row, got %d" Depth w)

        let row r = Array.init w (fun k -> ids.[r, k])
        let at r = InputLocation.Field(sprintf "row %d" r)

        let decodeRow r =
            let ids = row r

            match ids |> Array.tryFind (fun id -> id < 0L || id >= VocabularySize) with
            | Some id -> InputError.raise source (at r) (sprintf "id %d is outside 0…%d" id (VocabularySize - 1L))
            | None -> ()

            if ids |> Array.forall (fun id -> id >= LshOffset) then
                FunctionToken.Hash(ids |> Array.map (fun id -> int (id - LshOffset)))
            elif ids |> Array.forall ((=) ids.[0]) then
                match ids.[0] with
                | Pad -> FunctionToken.Pad
                | Motif -> FunctionToken.Motif
                | Unk -> FunctionToken.Unk
                | _ -> FunctionToken.NoLabels
            else
                InputError.raise
                    source
                    (at r)
                    (sprintf
                        "a row is either one special repeated 8 times or 8 LSH ids, got [%s]"
                        (String.Join(", ", ids)))

        if hasSpecialTokens then
            if n < 2 then
                InputError.raise
                    source
                    InputLocation.Whole
                    (sprintf "a wrapped track needs BOS and EOS rows, got %d rows" n)

            for r in [ 0; n - 1 ] do
                if row r |> Array.exists (fun id -> id <> Pad) then
                    InputError.raise source (at r) "BOS/EOS rows must be all 0"

            Array.init (n - 2) (fun r -> decodeRow (r + 1))
        else
            Array.init n decodeRow

    /// A small deterministic tokenizer for tests and demos: terms `kw0`, `kw1`, … with IDF in [1, 5); `interProCount`
    /// entries `IPR000001`, … each mapped to 1–4 terms (plus, for every third entry, a term outside the vocabulary);
    /// hyperplanes drawn from N(0, 1) with `torch.Generator(seed)` and normalised to unit length, as ESM's
    /// `LSHTable` creates them. The hyperplanes are detached from any dispose scope: dispose the data when done.
    let synthetic (seed: int) (termCount: int) (interProCount: int) : FunctionTokenizerData =
        if termCount < 1 then
            raise (ArgumentException("at least one term", "termCount"))

        let rng = Random(seed)
        let terms = Array.init termCount (sprintf "kw%d")
        let idf = Array.init termCount (fun _ -> 1.0 + 4.0 * rng.NextDouble())

        let interPro = Dictionary<string, string[]>(StringComparer.Ordinal)

        for e in 1..interProCount do
            let n = rng.Next(1, 5)
            let picked = Array.init n (fun _ -> terms.[rng.Next termCount])

            interPro.[sprintf "IPR%06d" e] <-
                (if e % 3 = 0 then
                     Array.append picked [| "not in vocabulary" |]
                 else
                     picked)

        use g = new torch.Generator(uint64 seed)

        use raw =
            torch.randn ([| int64 Depth; int64 BitsPerToken; int64 termCount |], dtype = torch.float64, generator = g)

        use norm = raw.norm (-1, true)

        {
            Vocabulary = createVocabulary "synthetic" terms idf interPro
            Tables =
                {
                    Hyperplanes = (raw / norm).DetachFromDisposeScope()
                }
        }
