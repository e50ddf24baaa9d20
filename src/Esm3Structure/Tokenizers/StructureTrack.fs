namespace Esm3Structure.Tokenizers

open System
open TorchSharp
open Esm3Structure

/// The structure track seen as a tokenizer (ESM3-REFERENCE.md §8.2, §9.1): VQ-VAE codes 0 … 4095 wrapped in
/// BOS 4098 … EOS 4097, chain breaks 4100 between chains, the mask 4096 and padding 4099. The ids are
/// `StructureTokens`' constants (not repeated here); this module adds the track-level views ESM's
/// `esm/utils/encoding.py` and `ESM3.forward` use: default (all-mask) tokens, multi-chain wrapping, and the overrides
/// from the sequence track's special positions.
module StructureTrack =

    /// Wraps one chain's tokens: BOS, tokens, EOS (`StructureTokens.wrap`); codes, MASK, PAD and CHAINBREAK are
    /// allowed inside, anything else raises an `InputException` naming the position.
    let encode (tokens: int64[]) : int64[] =
        StructureTokens.wrap "structure tokens" tokens

    /// The tokens between BOS and EOS; a wrapped track missing either, or with an id outside 0 … 4100 or a BOS/EOS
    /// inside, raises an `InputException` naming the position.
    let decode (wrapped: int64[]) : int64[] =
        StructureTokens.unwrap "structure tokens" wrapped

    /// The track of a complex: BOS, chain 1, CHAINBREAK, chain 2, …, EOS, as ESM lays out multi-chain inputs (the
    /// chain-break slot matches the `|` of the sequence track). Each chain may hold codes, MASK and PAD only.
    let encodeChains (chains: int64[][]) : int64[] =
        chains
        |> Array.iteri (fun c chain ->
            chain
            |> Array.iteri (fun i id ->
                if
                    not (
                        StructureTokens.isCode id
                        || id = StructureTokens.Mask
                        || id = StructureTokens.Pad
                    )
                then
                    InputError.raise
                        "structure tokens"
                        (InputLocation.Field(sprintf "chain %d, position %d" c i))
                        (sprintf "%s cannot appear inside a chain" (StructureTokens.name id))))

        let joined =
            chains
            |> Array.mapi (fun c chain ->
                if c = 0 then
                    chain
                else
                    Array.append [| StructureTokens.ChainBreak |] chain)
            |> Array.concat

        encode joined

    /// The chains of a wrapped track: `decode`, then split at every CHAINBREAK (the inverse of `encodeChains`).
    let decodeChains (wrapped: int64[]) : int64[][] =
        let body = decode wrapped
        let chains = ResizeArray<int64[]>()
        let current = ResizeArray<int64>()

        for id in body do
            if id = StructureTokens.ChainBreak then
                chains.Add(current.ToArray())
                current.Clear()
            else
                current.Add id

        chains.Add(current.ToArray())
        chains.ToArray()

    /// The track when no structure is given, as ESM's `get_default_structure_tokens`: BOS, `length` × MASK, EOS.
    let defaultTokens (length: int) : int64[] =
        if length < 0 then
            raise (ArgumentException(sprintf "negative length %d" length, "length"))

        Array.concat
            [
                [| StructureTokens.Bos |]
                Array.create length StructureTokens.Mask
                [| StructureTokens.Eos |]
            ]

    /// ESM3's structure-token overrides (`ESM3.forward`, ESM3-REFERENCE.md §9.1 step 2), in ESM's order: −1 → MASK;
    /// then where the sequence track holds BOS (0) → 4098, PAD (1) → 4099, EOS (2) → 4097, chain break (31) → 4100,
    /// whatever the structure input says there.
    /// Shapes: sequence [*, L] int64, structure [*, L] int64 -> [*, L] int64
    let applySequenceOverrides (sequence: torch.Tensor) (structure: torch.Tensor) : torch.Tensor =
        if sequence.shape <> structure.shape then
            Tensors.Shape.mismatch "structure" (Tensors.Shape.show sequence.shape) structure

        let equals (t: torch.Tensor) (id: int64) =
            use s = id.ToScalar()
            t.eq s

        let set (target: torch.Tensor) (where: torch.Tensor) (id: int64) =
            use s = id.ToScalar()
            use value = torch.full_like (target, s)
            torch.where (where, value, target)

        use isMinusOne = equals structure -1L
        use isBos = equals sequence SequenceTokenizer.Bos
        use isPad = equals sequence SequenceTokenizer.Pad
        use isEos = equals sequence SequenceTokenizer.Eos
        use isBreak = equals sequence SequenceTokenizer.ChainBreak
        use s0 = set structure isMinusOne StructureTokens.Mask
        use s1 = set s0 isBos StructureTokens.Bos
        use s2 = set s1 isPad StructureTokens.Pad
        use s3 = set s2 isEos StructureTokens.Eos
        set s3 isBreak StructureTokens.ChainBreak
