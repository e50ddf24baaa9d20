namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open System.IO
open System.Text
open Esm3Structure

/// The label vocabulary of the residue-annotation (InterPro site) track: `Labels.[i]` has id `4 + i`.
type ResidueAnnotationVocabulary =
    {
        /// The labels in id order (ESM: by total count, descending, ties by label).
        Labels: string[]
    }

/// ESM3's residue-annotation track (evolutionaryscale/esm `esm/tokenization/residue_tokenizer.py`;
/// ESM3-REFERENCE.md §8.6): per residue a multi-hot set of at most 16 label ids, stored as a row of 16 ids padded
/// with 0. Vocabulary: 0 `<pad>`, 1 `<motif>`, 2 `<unk>`, 3 `<none>`, then the labels. A protein without
/// annotations is `<pad>` everywhere; a residue no annotation covers is `<none>`; a label outside the vocabulary is
/// `<unk>`. BOS/EOS rows (and the mask and chain break) are all 0.
///
/// Over 16 ids on one residue: the 16 smallest ids are kept (the first 16 in vocabulary order, i.e. the most frequent
/// labels). ESM truncates a Python `set` of ids, whose iteration order for small integers is ascending in practice,
/// so the rule agrees with ESM's behaviour without depending on set order.
module ResidueAnnotationTokenizer =

    /// `<pad>`: padding; also BOS, EOS, mask and chain break.
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

    /// `<unk>`: a label outside the vocabulary.
    [<Literal>]
    let Unk = SpecialIds.Unk

    /// `<none>`: a residue no annotation covers, in an annotated protein.
    [<Literal>]
    let NoLabels = SpecialIds.NoLabels

    /// Id of the first label, the first after the special ids.
    [<Literal>]
    let LabelOffset = SpecialIds.NoLabels + 1L

    /// Ids per residue (ESM's `MAX_RESIDUE_ANNOTATIONS`).
    [<Literal>]
    let MaxAnnotations = 16

    /// ESM3's embedding and head width for this track (`residue_embed`, `residue_head`): 1474 labels + 4 specials.
    [<Literal>]
    let Esm3VocabularySize = 1478L

    let private specials = [| "<pad>"; "<motif>"; "<unk>"; "<none>" |]

    /// The first problem with a label list, if any: (index, message) for a null, empty, multi-line or repeated label.
    let private firstProblem (labels: string[]) : (int * string) option =
        let seen = HashSet<string>(StringComparer.Ordinal)

        labels
        |> Array.indexed
        |> Array.tryPick (fun (i, l) ->
            if String.IsNullOrEmpty l then
                Some(i, "empty label")
            elif l.Contains '\n' || l.Contains '\r' then
                Some(i, "a label may not contain a line break")
            elif not (seen.Add l) then
                Some(i, sprintf "label '%s' appears twice" l)
            else
                None)

    /// A vocabulary from labels in id order. A null, empty, multi-line or repeated label raises an `InputException`
    /// naming `source` and "label i" (0-based).
    let create (source: string) (labels: string[]) : ResidueAnnotationVocabulary =
        match firstProblem labels with
        | Some(i, message) -> InputError.raise source (InputLocation.Field(sprintf "label %d" i)) message
        | None -> { Labels = Array.copy labels }

    /// A vocabulary ordered as ESM orders it: counts summed per label, then by total count descending, ties by label
    /// (ordinal), which is pandas' `groupby(...).sum().sort_values(ascending=False, kind="stable")` over sorted keys.
    let ofCounts (source: string) (counts: (string * int64)[]) : ResidueAnnotationVocabulary =
        let totals = Dictionary<string, int64>(StringComparer.Ordinal)

        counts
        |> Array.iteri (fun i (l, c) ->
            if String.IsNullOrEmpty l then
                InputError.raise source (InputLocation.Field(sprintf "count %d" i)) "empty label"

            totals.[l] <-
                (match totals.TryGetValue l with
                 | true, t -> t
                 | _ -> 0L)
                + c)

        totals
        |> Seq.map (fun kv -> kv.Key, kv.Value)
        |> Seq.sortWith (fun (la, ca) (lb, cb) ->
            if ca <> cb then
                compare cb ca
            else
                String.CompareOrdinal(la, lb))
        |> Seq.map fst
        |> Array.ofSeq
        |> create source

    /// Number of ids: 4 specials + the labels.
    let size (vocabulary: ResidueAnnotationVocabulary) =
        LabelOffset + int64 vocabulary.Labels.Length

    /// The token strings in id order: `<pad> <motif> <unk> <none>` then the labels.
    let tokenStrings (vocabulary: ResidueAnnotationVocabulary) : string[] = Array.append specials vocabulary.Labels

    /// Reads a vocabulary file: UTF-8 text, one label per line in id order (line n → id 3 + n); a final newline is
    /// allowed. An empty or repeated label raises an `InputException` naming the file and line.
    let load (path: string) : ResidueAnnotationVocabulary =
        let lines =
            try
                File.ReadAllLines(path, Encoding.UTF8)
            with
            | :? IOException
            | :? UnauthorizedAccessException as e ->
                InputError.raise path InputLocation.Whole (sprintf "cannot read the file: %s" e.Message)

        match firstProblem lines with
        | Some(i, message) -> InputError.raise path (InputLocation.Line(i + 1)) message
        | None -> { Labels = lines }

    /// Writes a vocabulary as `load` reads it (atomically).
    let save (path: string) (vocabulary: ResidueAnnotationVocabulary) : unit =
        AtomicFile.write path (fun stream ->
            use w = new StreamWriter(stream, UTF8Encoding(false), leaveOpen = true)

            for l in vocabulary.Labels do
                w.Write(l)
                w.Write('\n'))

    let private indexOf (vocabulary: ResidueAnnotationVocabulary) =
        let d = Dictionary<string, int64>(StringComparer.Ordinal)
        vocabulary.Labels |> Array.iteri (fun i l -> d.[l] <- LabelOffset + int64 i)
        d

    /// Per-residue id sets, as ESM's `tokenize`: no annotations → `[| 0 |]` (`<pad>`) everywhere; otherwise each
    /// residue gets the distinct ids of the labels covering it in ascending order (unknown labels → `<unk>`), or
    /// `[| 3 |]` (`<none>`) when nothing covers it. An annotation whose range is not within 1 … `length` raises an
    /// `InputException` naming "annotation i" (ESM skips it with a printed warning).
    let tokenize
        (vocabulary: ResidueAnnotationVocabulary)
        (annotations: FunctionAnnotation[])
        (length: int)
        : int64[][] =
        let source = "residue annotations"

        if annotations.Length = 0 then
            if length < 0 then
                InputError.raise source InputLocation.Whole (sprintf "negative sequence length %d" length)

            Array.init length (fun _ -> [| Pad |])
        else
            let index = indexOf vocabulary

            FunctionAnnotation.perResidue source length annotations
            |> Array.map (fun labels ->
                if labels.Length = 0 then
                    [| NoLabels |]
                else
                    labels
                    |> Array.map (fun l ->
                        match index.TryGetValue l with
                        | true, id -> id
                        | _ -> Unk)
                    |> Array.distinct
                    |> Array.sort)

    /// Id sets to rows of 16 ids: each set's distinct non-zero ids ascending, the 16 smallest kept, padded with 0;
    /// with `addSpecialTokens` an all-zero BOS row before and EOS row after, as ESM's `encode`. A negative id raises an
    /// `InputException` naming the residue.
    /// Shapes: tokens L sets -> [L (+2), 16]
    let encode (addSpecialTokens: bool) (tokens: int64[][]) : int64[,] =
        let offset = if addSpecialTokens then 1 else 0
        let rows = Array2D.zeroCreate (tokens.Length + 2 * offset) MaxAnnotations

        tokens
        |> Array.iteri (fun r ids ->
            ids
            |> Array.iter (fun id ->
                if id < 0L then
                    InputError.raise
                        "residue annotation tokens"
                        (InputLocation.Field(sprintf "residue %d" r))
                        (sprintf "negative id %d" id))

            ids
            |> Array.filter (fun id -> id <> Pad)
            |> Array.distinct
            |> Array.sort
            |> Array.truncate MaxAnnotations
            |> Array.iteri (fun k id -> rows.[r + offset, k] <- id))

        rows

    /// Annotations straight to rows with BOS/EOS: `encode true (tokenize vocabulary annotations length)`.
    /// Shapes: -> [L + 2, 16]
    let encodeAnnotations
        (vocabulary: ResidueAnnotationVocabulary)
        (annotations: FunctionAnnotation[])
        (length: int)
        : int64[,] =
        encode true (tokenize vocabulary annotations length)

    /// Rows back to id sets (the inverse of `encode`): a row's non-zero ids in order, or `[| 0 |]` for an all-zero
    /// row. With `hasSpecialTokens` the first and last rows must be all zero and are dropped. A row that is not 16
    /// wide, has a negative id, an id after a 0, or ids out of ascending order raises an `InputException` naming the
    /// row and slot.
    /// Shapes: ids [L (+2), 16] -> L sets
    let decode (hasSpecialTokens: bool) (ids: int64[,]) : int64[][] =
        let source = "residue annotation tokens"
        let n, w = Array2D.length1 ids, Array2D.length2 ids

        if w <> MaxAnnotations then
            InputError.raise source InputLocation.Whole (sprintf "expected %d ids per row, got %d" MaxAnnotations w)

        let at r k =
            InputLocation.Field(sprintf "row %d, slot %d" r k)

        for r in 0 .. n - 1 do
            for k in 0 .. w - 1 do
                let id = ids.[r, k]

                if id < 0L then
                    InputError.raise source (at r k) (sprintf "negative id %d" id)

                if k > 0 && id <> Pad && ids.[r, k - 1] = Pad then
                    InputError.raise source (at r k) (sprintf "id %d follows padding" id)

                if k > 0 && id <> Pad && id <= ids.[r, k - 1] then
                    InputError.raise
                        source
                        (at r k)
                        (sprintf "ids must be distinct and ascending, got %d after %d" id ids.[r, k - 1])

        let first, last =
            if hasSpecialTokens then
                if n < 2 then
                    InputError.raise
                        source
                        InputLocation.Whole
                        (sprintf "a wrapped track needs BOS and EOS rows, got %d rows" n)

                for r in [ 0; n - 1 ] do
                    for k in 0 .. w - 1 do
                        if ids.[r, k] <> Pad then
                            InputError.raise source (at r k) "BOS/EOS rows must be all 0"

                1, n - 2
            else
                0, n - 1

        [|
            for r in first..last do
                let row =
                    [|
                        for k in 0 .. w - 1 do
                            if ids.[r, k] <> Pad then
                                yield ids.[r, k]
                    |]

                yield (if row.Length = 0 then [| Pad |] else row)
        |]

    /// The label strings of one residue's ids: labels by name, `<motif>` and `<unk>` as those strings, `<pad>` and
    /// `<none>` dropped (no label). An id outside the vocabulary raises an `InputException` naming it.
    let labels (vocabulary: ResidueAnnotationVocabulary) (ids: int64[]) : string[] =
        let strings = tokenStrings vocabulary
        let n = int64 strings.Length

        ids
        |> Array.choose (fun id ->
            if id < 0L || id >= n then
                InputError.raise
                    "residue annotation tokens"
                    (InputLocation.Field "token id")
                    (sprintf "id %d is outside the vocabulary (0–%d)" id (n - 1L))
            elif id = Pad || id = NoLabels then
                None
            else
                Some strings.[int id])

    /// Rows back to per-residue label sets: `decode`, then `labels` for each residue.
    /// Shapes: ids [L (+2), 16] -> L label sets
    let decodeLabels (vocabulary: ResidueAnnotationVocabulary) (hasSpecialTokens: bool) (ids: int64[,]) : string[][] =
        decode hasSpecialTokens ids |> Array.map (labels vocabulary)
