namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open Esm3Structure

/// ESM3's sequence vocabulary and tokenizer (character level; the five special strings are matched whole).
/// Ids from evolutionaryscale/esm `esm/utils/constants/esm3.py` (SEQUENCE_VOCAB), ESM3-REFERENCE.md §8.1.
module SequenceTokenizer =

    /// The 33 tokens in id order.
    let vocabulary =
        [|
            "<cls>"
            "<pad>"
            "<eos>"
            "<unk>"
            "L"
            "A"
            "G"
            "V"
            "S"
            "E"
            "R"
            "T"
            "I"
            "D"
            "P"
            "K"
            "Q"
            "N"
            "F"
            "Y"
            "M"
            "H"
            "W"
            "C"
            "X"
            "B"
            "U"
            "Z"
            "O"
            "."
            "-"
            "|"
            "<mask>"
        |]

    [<Literal>]
    let Bos = 0L

    [<Literal>]
    let Pad = 1L

    [<Literal>]
    let Eos = 2L

    [<Literal>]
    let Unk = 3L

    [<Literal>]
    let ChainBreak = 31L

    [<Literal>]
    let Mask = 32L

    /// ESM3's embedding and logit width (ids 33–63 unused).
    [<Literal>]
    let EmbeddingWidth = 64L

    let private idOf: IReadOnlyDictionary<string, int64> =
        vocabulary |> Array.mapi (fun i t -> KeyValuePair(t, int64 i)) |> Dictionary :> _

    /// The id of a token string (a single character or a special like `<mask>`); `<unk>` for anything else.
    let tokenId (token: string) =
        match idOf.TryGetValue token with
        | true, id -> id
        | _ -> Unk

    /// Splits a sequence string into tokens: the specials `<cls> <pad> <eos> <unk> <mask>` whole, `_` as
    /// `<mask>`, every other character alone.
    let tokens (sequence: string) =
        let specials = [ "<cls>"; "<pad>"; "<eos>"; "<unk>"; "<mask>" ]

        [|
            let mutable i = 0

            while i < sequence.Length do
                match
                    specials
                    |> List.tryFind (fun s -> String.CompareOrdinal(sequence, i, s, 0, s.Length) = 0)
                with
                | Some s ->
                    yield s
                    i <- i + s.Length
                | None ->
                    yield (if sequence.[i] = '_' then "<mask>" else string sequence.[i])
                    i <- i + 1
        |]

    /// Ids of a sequence, optionally wrapped as ESM does: `<cls> … <eos>`.
    let encode (addSpecialTokens: bool) (sequence: string) : int64[] =
        let body = tokens sequence |> Array.map tokenId

        if addSpecialTokens then
            Array.concat [ [| Bos |]; body; [| Eos |] ]
        else
            body

    /// Ids back to a string: `<mask>` as `_`; BOS, EOS and PAD dropped; other specials written whole.
    /// Raises an InputException naming the position for an id outside the vocabulary.
    let decode (ids: int64 seq) =
        let sb = Text.StringBuilder()

        ids
        |> Seq.iteri (fun i id ->
            if id < 0L || id >= int64 vocabulary.Length then
                InputError.raise
                    "sequence tokens"
                    (InputLocation.Field(sprintf "token %d" i))
                    (sprintf "id %d is outside the sequence vocabulary (0–%d)" id (vocabulary.Length - 1))

            match id with
            | Bos
            | Eos
            | Pad -> ()
            | Mask -> sb.Append '_' |> ignore
            | _ -> sb.Append vocabulary.[int id] |> ignore)

        sb.ToString()
