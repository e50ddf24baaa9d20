namespace Esm3Structure.Tokenizers

/// ESM3's per-track vocabulary sizes and the ids that stand for "absent / masked" (ESM3-REFERENCE.md §8.3–§8.7;
/// evolutionaryscale/esm `esm/utils/constants/esm3.py` and `esm/models/esm3.py`). Sequence and structure ids live
/// in `SequenceTokenizer` and `StructureTokens`.
module Tracks =

    /// Sequence embedding and logit width (ids 33–63 unused).
    [<Literal>]
    let SequenceWidth = SequenceTokenizer.EmbeddingWidth

    /// SS8 ids: 0 `<pad>`, 1 `<motif>`, 2 `<unk>`, 3…10 G H I T E B S C.
    [<Literal>]
    let Ss8Vocabulary = Ss8Tokenizer.VocabularySize

    /// SASA ids: 0 `<pad>`, 1 `<motif>`, 2 `<unk>`, 3…18 the 16 bins.
    [<Literal>]
    let SasaVocabulary = SasaTokenizer.VocabularySize

    /// Function ids per slot: 0 `<pad>`, 1 `<motif>`, 2 `<unk>`, 3 `<none>`, 4…259 the LSH values.
    [<Literal>]
    let FunctionVocabulary = FunctionTokenizer.VocabularySize

    /// Function tokens per residue.
    [<Literal>]
    let FunctionSlots = 8L

    /// Residue (InterPro) annotation ids: 0 `<pad>`, 1 `<motif>`, 2 `<unk>`, 3 `<none>`, then labels.
    [<Literal>]
    let ResidueVocabulary = ResidueAnnotationTokenizer.Esm3VocabularySize

    /// Residue annotation slots per residue (padded with 0).
    [<Literal>]
    let ResidueSlots = 16L

    /// The one id that plays BOS, EOS, PAD, MASK and chain break on the SS8, SASA, function and residue tracks.
    [<Literal>]
    let Absent = SpecialIds.Pad

    /// Radial basis functions of the pLDDT conditioning.
    [<Literal>]
    let PlddtBins = 16L

    /// The first id of the SS8 and SASA tracks that is a real label (after `<pad>`, `<motif>`, `<unk>`).
    [<Literal>]
    let FirstLabel = SasaTokenizer.BinOffset
