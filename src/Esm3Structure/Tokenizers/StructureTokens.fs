namespace Esm3Structure.Tokenizers

open System
open TorchSharp
open Esm3Structure

/// ESM3's structure-track vocabulary: 4096 VQ-VAE codes then five specials (ESM3-REFERENCE.md §8.2; ids from
/// evolutionaryscale/esm `esm/utils/constants/esm3.py`, `VQVAE_CODEBOOK_SIZE` and `VQVAE_SPECIAL_TOKENS`), and
/// the checks ESM's decoder asserts (`StructureTokenDecoder.decode`): BOS first, EOS last, no negative id.
/// Errors are `InputException`s naming the source and the position of the offending token.
module StructureTokens =

    /// Number of codebook entries (ids 0 … 4095).
    [<Literal>]
    let CodebookSize = 4096L

    /// Masked position (to be generated).
    [<Literal>]
    let Mask = 4096L

    /// End of sequence.
    [<Literal>]
    let Eos = 4097L

    /// Beginning of sequence.
    [<Literal>]
    let Bos = 4098L

    /// Padding after EOS in a batch.
    [<Literal>]
    let Pad = 4099L

    /// Chain break between chains of a complex.
    [<Literal>]
    let ChainBreak = 4100L

    /// Embedding rows of the structure track: 4096 codes + 5 specials.
    [<Literal>]
    let VocabularySize = 4101L

    /// True for a codebook entry (0 … 4095).
    let isCode (id: int64) = id >= 0L && id < CodebookSize

    /// True for one of the five special ids (4096 … 4100).
    let isSpecial (id: int64) = id >= Mask && id < VocabularySize

    /// True for any id of the vocabulary (0 … 4100).
    let isValid (id: int64) = id >= 0L && id < VocabularySize

    /// The name of an id: "MASK", "EOS", "BOS", "PAD", "CHAINBREAK", or the code number.
    let name (id: int64) =
        match id with
        | Mask -> "MASK"
        | Eos -> "EOS"
        | Bos -> "BOS"
        | Pad -> "PAD"
        | ChainBreak -> "CHAINBREAK"
        | _ -> string id

    let private at (i: int) =
        InputLocation.Field(sprintf "position %d" i)

    let private checkInterior (source: string) (offset: int) (ids: int64[]) =
        ids
        |> Array.iteri (fun i id ->
            if not (isValid id) then
                InputError.raise
                    source
                    (at (i + offset))
                    (sprintf "structure token id %d is outside 0…%d" id (VocabularySize - 1L))
            elif id = Bos || id = Eos then
                InputError.raise
                    source
                    (at (i + offset))
                    (sprintf "%s may only open (BOS) or close (EOS) a structure token sequence" (name id)))

    /// Wraps a sequence of structure tokens as ESM does: BOS, the tokens, EOS. Every token must be a valid id other
    /// than BOS and EOS (codes, MASK, PAD and CHAINBREAK are allowed); otherwise an `InputException` names `source`
    /// and the token's position in `tokens` (0-based).
    let wrap (source: string) (tokens: int64[]) : int64[] =
        checkInterior source 0 tokens
        Array.concat [ [| Bos |]; tokens; [| Eos |] ]

    /// `wrap` for a batch of unpadded rows, as a tensor (rows are not checked: `checkBatch` does that).
    /// Shapes: tokens [B, L] int64 -> [B, L + 2]
    let wrapRows (tokens: torch.Tensor) : torch.Tensor =
        let b = tokens.shape.[0]

        let column (id: int64) =
            torch.full ([| b; 1L |], id.ToScalar(), dtype = torch.int64, device = tokens.device)

        torch.cat ([| column Bos; tokens; column Eos |], 1L)

    /// Checks a wrapped sequence (BOS, tokens, EOS) as `wrap` produces it; an `InputException` names `source` and
    /// the 0-based position in `wrapped`.
    let checkWrapped (source: string) (wrapped: int64[]) : unit =
        if wrapped.Length < 2 then
            InputError.raise
                source
                InputLocation.Whole
                (sprintf "a structure token sequence needs at least BOS and EOS, got %d tokens" wrapped.Length)

        if wrapped.[0] <> Bos then
            InputError.raise source (at 0) (sprintf "expected BOS (%d), got %s" Bos (name wrapped.[0]))

        let last = wrapped.Length - 1

        if wrapped.[last] <> Eos then
            InputError.raise source (at last) (sprintf "expected EOS (%d), got %s" Eos (name wrapped.[last]))

        checkInterior source 1 wrapped.[1 .. last - 1]

    /// The tokens between BOS and EOS, after `checkWrapped`.
    let unwrap (source: string) (wrapped: int64[]) : int64[] =
        checkWrapped source wrapped
        wrapped.[1 .. wrapped.Length - 2]

    /// Checks a batch as ESM's decoder asserts it, allowing PAD after EOS: every row starts with BOS, its last
    /// non-PAD token is EOS, and every id is in 0 … 4100. An `InputException` names `source` and "row b, position i";
    /// a non-int64 or non-2-D tensor raises an `ArgumentException`.
    /// Shapes: tokens [B, L] int64
    let checkBatch (source: string) (tokens: torch.Tensor) : unit =
        if tokens.dtype <> torch.int64 then
            raise (ArgumentException(sprintf "%s: expected int64 token ids, got %O" source tokens.dtype, "tokens"))

        if tokens.dim () <> 2L then
            raise (
                ArgumentException(
                    sprintf "%s: expected tokens [B, L], got %s" source (Tensors.Shape.show tokens.shape),
                    "tokens"
                )
            )

        let b, l = int tokens.shape.[0], int tokens.shape.[1]
        use cpu = tokens.cpu().contiguous()
        let ids = cpu.data<int64>().ToArray()

        let fail row i message =
            InputError.raise source (InputLocation.Field(sprintf "row %d, position %d" row i)) message

        if l < 2 then
            InputError.raise
                source
                InputLocation.Whole
                (sprintf "a structure token sequence needs at least BOS and EOS, got length %d" l)

        for row in 0 .. b - 1 do
            let id i = ids.[row * l + i]

            for i in 0 .. l - 1 do
                if not (isValid (id i)) then
                    fail row i (sprintf "structure token id %d is outside 0…%d" (id i) (VocabularySize - 1L))

            if id 0 <> Bos then
                fail row 0 (sprintf "expected BOS (%d), got %s" Bos (name (id 0)))

            let mutable last = l - 1

            while last > 0 && id last = Pad do
                last <- last - 1

            if id last <> Eos then
                fail
                    row
                    last
                    (sprintf "expected EOS (%d) as the last token before padding, got %s" Eos (name (id last)))
