namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open Esm3Structure
open Esm3Structure.Structure

/// ESM3's secondary-structure (SS8) track: three specials then the eight DSSP classes in ESM's order `GHITEBSC`
/// (evolutionaryscale/esm `esm/tokenization/ss_tokenizer.py`, `SSE_8CLASS_VOCAB` and `SSE_8CLASS_TO_3CLASS_MAP` in
/// `esm/utils/constants/esm3.py`; ESM3-REFERENCE.md §8.3). Id 0 (`<pad>`) is BOS, EOS, PAD, MASK and chain break
/// at once; `_` in a string is the mask.
module Ss8Tokenizer =

    /// The 11 tokens in id order.
    let vocabulary =
        [| "<pad>"; "<motif>"; "<unk>"; "G"; "H"; "I"; "T"; "E"; "B"; "S"; "C" |]

    /// The eight classes in id order (ids 3 … 10).
    [<Literal>]
    let Classes = "GHITEBSC"

    /// `<pad>`: padding.
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

    /// `<unk>`: a letter that is not one of the eight classes.
    [<Literal>]
    let Unk = SpecialIds.Unk

    /// Embedding and logit width of the track (ESM3's `ss8_embed`, `ss8_head`).
    [<Literal>]
    let VocabularySize = 11L

    /// The three-class alphabet of ESM's `ss3` tokenizer (`SSE_3CLASS_VOCAB`).
    [<Literal>]
    let ThreeClasses = "HEC"

    let private idOf: IReadOnlyDictionary<string, int64> =
        vocabulary |> Array.mapi (fun i t -> KeyValuePair(t, int64 i)) |> Dictionary :> _

    let private specials = [ "<pad>"; "<motif>"; "<unk>" ]

    /// The id of a token string (a class letter or a special); `<unk>` for anything else (ESM raises instead).
    let tokenId (token: string) =
        match idOf.TryGetValue token with
        | true, id -> id
        | _ -> Unk

    /// The token string of an id. An id outside 0 … 10 raises an `InputException` naming "token id".
    let tokenString (id: int64) =
        if id < 0L || id >= VocabularySize then
            InputError.raise
                "SS8 tokens"
                (InputLocation.Field "token id")
                (sprintf "id %d is outside the SS8 vocabulary (0–10)" id)

        vocabulary.[int id]

    /// Splits an SS8 string into tokens: the specials `<pad> <motif> <unk>` whole, `_` as `<pad>` (the mask), every
    /// other character alone.
    let tokens (ss8: string) =
        [|
            let mutable i = 0

            while i < ss8.Length do
                match
                    specials
                    |> List.tryFind (fun s -> String.CompareOrdinal(ss8, i, s, 0, s.Length) = 0)
                with
                | Some s ->
                    yield s
                    i <- i + s.Length
                | None ->
                    yield (if ss8.[i] = '_' then "<pad>" else string ss8.[i])
                    i <- i + 1
        |]

    /// Ids of an SS8 string (`GHITEBSC`, `_` for the mask, unknown letters → `<unk>`), optionally wrapped as ESM does:
    /// `<pad>` (BOS) … `<pad>` (EOS).
    let encode (addSpecialTokens: bool) (ss8: string) : int64[] =
        let body = tokens ss8 |> Array.map tokenId

        if addSpecialTokens then
            Array.concat [ [| Bos |]; body; [| Eos |] ]
        else
            body

    /// Ids back to a string: `<pad>` (mask) as `_`, `<motif>` and `<unk>` whole, classes as their letters. With
    /// `hasSpecialTokens` the first and last ids must be BOS/EOS (0) and are dropped. A bad id or a missing BOS/EOS
    /// raises an `InputException` naming the position.
    let decode (hasSpecialTokens: bool) (ids: int64[]) : string =
        let source = "SS8 tokens"

        let at i =
            InputLocation.Field(sprintf "token %d" i)

        ids
        |> Array.iteri (fun i id ->
            if id < 0L || id >= VocabularySize then
                InputError.raise source (at i) (sprintf "id %d is outside the SS8 vocabulary (0–10)" id))

        let body =
            if hasSpecialTokens then
                if ids.Length < 2 then
                    InputError.raise
                        source
                        InputLocation.Whole
                        (sprintf "a wrapped SS8 track needs BOS and EOS, got %d ids" ids.Length)

                if ids.[0] <> Bos then
                    InputError.raise source (at 0) (sprintf "expected BOS (0), got %d" ids.[0])

                if ids.[ids.Length - 1] <> Eos then
                    InputError.raise
                        source
                        (at (ids.Length - 1))
                        (sprintf "expected EOS (0), got %d" ids.[ids.Length - 1])

                ids.[1 .. ids.Length - 2]
            else
                ids

        body
        |> Array.map (fun id -> if id = Mask then "_" else vocabulary.[int id])
        |> String.concat ""

    /// ESM's 8 → 3 class map: G, H, I → H; E, B → E; T, S, C → C. Any other character (mask `_`, unknown) is
    /// returned unchanged.
    let toThreeClass (c: char) : char =
        if Classes.Contains c then Dssp.ss3Of c else c

    /// Maps every character of an SS8 string with `toThreeClass`.
    let threeClassString (ss8: string) : string = String.map toThreeClass ss8

    /// Maps SS8 ids to the ids of ESM's `ss3` tokenizer (`<pad> <motif> <unk> H E C`): specials unchanged, classes
    /// by `toThreeClass`. An id outside 0 … 10 raises an `InputException` naming the position.
    let toThreeClassIds (ids: int64[]) : int64[] =
        ids
        |> Array.mapi (fun i id ->
            if id < 0L || id >= VocabularySize then
                InputError.raise
                    "SS8 tokens"
                    (InputLocation.Field(sprintf "token %d" i))
                    (sprintf "id %d is outside the SS8 vocabulary (0–10)" id)

            if id < 3L then
                id
            else
                3L + int64 (ThreeClasses.IndexOf(toThreeClass Classes.[int id - 3])))
