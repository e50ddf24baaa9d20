namespace Esm3Structure.Tokenizers

/// The special ids at the start of ESM3's SS8, SASA, function and residue-annotation vocabularies: 0 `<pad>`,
/// 1 `<motif>`, 2 `<unk>`, and on the two annotation tracks 3 `<none>` (evolutionaryscale/esm
/// `esm/tokenization/ss_tokenizer.py`, `sasa_tokenizer.py`, `function_tokenizer.py`, `residue_tokenizer.py`). These
/// tracks have no BOS, EOS, mask or chain-break token of their own: ESM uses `<pad>` for all four. Each tokenizer
/// names these ids under its own module (`Ss8Tokenizer.Pad`, `SasaTokenizer.Unk`, …). The sequence and structure
/// tracks have vocabularies of their own (`SequenceTokenizer`, `StructureTokens`).
module SpecialIds =

    /// `<pad>`: padding.
    [<Literal>]
    let Pad = 0L

    /// BOS (the `<pad>` id).
    [<Literal>]
    let Bos = Pad

    /// EOS (the `<pad>` id).
    [<Literal>]
    let Eos = Pad

    /// Mask (the `<pad>` id).
    [<Literal>]
    let Mask = Pad

    /// Chain break (the `<pad>` id).
    [<Literal>]
    let ChainBreak = Pad

    /// `<motif>`.
    [<Literal>]
    let Motif = 1L

    /// `<unk>`.
    [<Literal>]
    let Unk = 2L

    /// `<none>` (function and residue-annotation tracks): a residue that no annotation covers.
    [<Literal>]
    let NoLabels = 3L
