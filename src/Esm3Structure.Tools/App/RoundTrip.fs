namespace Esm3Structure.App

open System
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// One chain tokenized and decoded again, with the reconstruction's quality (ESM3-TRAINING §2.2).
type RoundTrip =
    {
        /// The tokens of every residue (MASK where the backbone is incomplete).
        Tokenized: TokenizedChain
        /// The decoding of the residues that have a token (those with N, CA and C), in file order.
        Decoded: DecodedStructure
        /// Residues decoded (the chain's length less `Tokenized.MissingBackbone`).
        Residues: int
        /// Backbone (N, CA, C) RMSD in Å after the Kabsch fit, over the decoded residues.
        BackboneRmsd: float
        /// The same RMSD against the chain's mirror image (z → −z): below `BackboneRmsd` when the decoder drew the
        /// mirror of the fold, which LDDT-CA and every distance cannot see.
        MirrorRmsd: float
        /// LDDT-CA of the decoding against the chain (ESM's cut-off 15 Å and thresholds), over the decoded residues.
        LddtCa: float
        /// Each decoded residue's LDDT-CA (NaN for a residue with no scored pair), in the order of `Decoded`.
        LddtCaPerResidue: float[]
        /// The decoding's CA(i)–CA(i+1) distance minus the chain's, over its links (`Metrics.caStepErrors`), Å.
        CaStepErrors: float[]
        /// TM-score of the decoding's CAs against the chain's (`Metrics.tmScore`, normalised by the decoded residues):
        /// what pTM predicts.
        TmScore: float
    }

/// Quality of a tokenizer over many chains: the figures the README quotes for the shipped model.
type RoundTripSummary =
    {
        Chains: int
        Residues: int
        MedianBackboneRmsd: float
        MeanBackboneRmsd: float
        MedianLddtCa: float
        MeanLddtCa: float
        /// Codebook usage of all the chains' tokens together (live codes, perplexity).
        Usage: QuantizerMetrics
        /// Pearson's correlation of per-residue pLDDT with per-residue LDDT-CA over all decoded residues of all chains
        /// (`Metrics.pearson`). Meaningful only for a decoder whose confidence heads were trained.
        PlddtPearson: float
        /// Mean signed error of the decodings' CA(i)–CA(i+1) distances over every link of every chain (Å; negative:
        /// the decoder shrinks the chain locally); NaN with no link.
        MeanCaStepError: float
        MedianTmScore: float
        /// Chains whose decoding lies closer to the chain's mirror image than to the chain (`MirrorRmsd`).
        CloserToMirror: int
        /// Pearson's correlation of each chain's pTM with its decoding's TM-score (`Metrics.pearson`). Meaningful only
        /// for a decoder whose confidence heads were trained.
        PtmPearson: float
    }

/// Structure → tokens → structure, and its summary over a set of chains.
module RoundTrip =

    /// Decodes the residues of `tokenized` (tokens of `chain`) that have a token with `decoder` (their sequence,
    /// numbering and order kept), and measures the decoding against the chain. A chain without any complete backbone
    /// raises an `ArgumentException` naming it.
    let ofTokens (decoder: StructureDecoder) (chain: ProteinChain) (tokenized: TokenizedChain) : RoundTrip =
        let keep = StructureTokenizer.decodable chain.Name tokenized

        let sub =
            { tokenized with
                Sequence =
                    if String.IsNullOrEmpty tokenized.Sequence then
                        ""
                    else
                        String(keep |> Array.map (fun i -> tokenized.Sequence.[i]))
                ResidueIndex = keep |> Array.map (fun i -> tokenized.ResidueIndex.[i])
                Tokens = keep |> Array.map (fun i -> tokenized.Tokens.[i])
                MissingBackbone = [||]
            }

        let decoded = StructureTokenizer.decode decoder sub
        use _ = torch.NewDisposeScope()
        let idx = torch.tensor (keep |> Array.map int64)

        let reference = (ProteinChain.backbone torch.float64 chain).index_select(0L, idx)

        let model = ProteinChain.backbone torch.float64 decoded.Chain
        let mask = torch.ones ([| int64 keep.Length |], dtype = torch.ScalarType.Bool)
        let rmsd = (Metrics.backboneRmsd model reference mask).ToDouble()

        let mirror = reference * torch.tensor ([| 1.0; 1.0; -1.0 |], dtype = torch.float64)

        let mirrorRmsd = (Metrics.backboneRmsd model mirror mask).ToDouble()

        let lddt =
            Metrics.lddtCa (model.select (1L, 1L)) (reference.select (1L, 1L)) (Some mask)

        {
            Tokenized = tokenized
            Decoded = decoded
            Residues = keep.Length
            BackboneRmsd = rmsd
            MirrorRmsd = mirrorRmsd
            LddtCa = lddt.Protein.ToDouble()
            LddtCaPerResidue = lddt.PerResidue.data<float>().ToArray()
            CaStepErrors = Metrics.caStepErrors (model.select (1L, 1L)) (reference.select (1L, 1L))
            TmScore = Metrics.tmScore (model.select (1L, 1L)) (reference.select (1L, 1L)) (Some mask)
        }

    /// Tokenizes `chain` with `encoder` (each residue's nearest code, as ESM) and measures its round trip (`ofTokens`).
    let ofChain (encoder: StructureEncoder) (decoder: StructureDecoder) (chain: ProteinChain) : RoundTrip =
        ofTokens decoder chain (StructureTokenizer.tokenize encoder chain)

    /// `ofTokens` of the tokens `TokenSearch.search config` chooses for `chain` (with `config.Rounds` = 0, `ofChain`).
    let ofSearch
        (config: TokenSearchConfig)
        (encoder: StructureEncoder)
        (decoder: StructureDecoder)
        (chain: ProteinChain)
        : RoundTrip =
        ofTokens decoder chain (TokenSearch.search config encoder decoder chain).Tokenized

    /// Medians, means and the codebook usage over round trips; `codes` is the codebook size.
    let summarize (codes: int64) (trips: RoundTrip[]) : RoundTripSummary =
        let rmsd = trips |> Array.map (fun t -> t.BackboneRmsd)
        let lddt = trips |> Array.map (fun t -> t.LddtCa)
        let histogram = Array.zeroCreate<int64>(int codes)

        for t in trips do
            for id in t.Tokenized.Tokens do
                if id >= 0L && id < codes then
                    histogram.[int id] <- histogram.[int id] + 1L

        let usage =
            {
                Histogram = histogram
                Count = Array.sum histogram
                Dim = 1L
                SquaredErrorSum = nan
            }

        {
            Chains = trips.Length
            Residues = trips |> Array.sumBy (fun t -> t.Residues)
            MedianBackboneRmsd = Metrics.median rmsd
            MeanBackboneRmsd = (if rmsd.Length = 0 then nan else Array.average rmsd)
            MedianLddtCa = Metrics.median lddt
            MeanLddtCa = (if lddt.Length = 0 then nan else Array.average lddt)
            Usage = CodebookUsage.metrics usage
            PlddtPearson =
                Metrics.pearson
                    (trips |> Array.collect (fun t -> t.Decoded.Plddt |> Array.map float))
                    (trips |> Array.collect (fun t -> t.LddtCaPerResidue))
            MeanCaStepError =
                match trips |> Array.collect (fun t -> t.CaStepErrors) with
                | [||] -> nan
                | errors -> Array.average errors
            MedianTmScore = Metrics.median (trips |> Array.map (fun t -> t.TmScore))
            CloserToMirror = trips |> Array.filter (fun t -> t.MirrorRmsd < t.BackboneRmsd) |> Array.length
            PtmPearson =
                Metrics.pearson (trips |> Array.map (fun t -> t.Decoded.Ptm)) (trips |> Array.map (fun t -> t.TmScore))
        }

    /// The summary and the per-chain figures as a JSON object (`per_chain`: name, residues, backbone_rmsd,
    /// mirror_rmsd, lddt_ca, tm_score, structure_tokens (the tokens decoded, MASK for a residue without backbone),
    /// ptm, mean_plddt). With `confidenceTrained` false (a decoder whose pLDDT and pAE heads were never
    /// trained, `StructureDecoder.ConfidenceTrained`), plddt_pearson, ptm_tm_pearson, ptm and mean_plddt are null and
    /// `confidence_heads_trained` says why; with `ptmInformative` false (`StructureDecoder.PtmInformative`) ptm is
    /// null and `ptm_informative` false. `search_rounds` records the token search's rounds (`TokenSearchConfig.Rounds`;
    /// 0: nearest codes).
    let toJson
        (confidenceTrained: bool)
        (ptmInformative: bool)
        (searchRounds: int)
        (summary: RoundTripSummary)
        (trips: RoundTrip[])
        : string =
        use stream = new IO.MemoryStream()

        (use w =
            new Text.Json.Utf8JsonWriter(stream, Text.Json.JsonWriterOptions(Indented = true))

         w.WriteStartObject()
         w.WriteNumber("chains", summary.Chains)
         w.WriteNumber("residues", summary.Residues)
         w.WriteNumber("search_rounds", searchRounds)
         w.WriteNumber("median_backbone_rmsd", summary.MedianBackboneRmsd)
         w.WriteNumber("mean_backbone_rmsd", summary.MeanBackboneRmsd)
         w.WriteNumber("median_lddt_ca", summary.MedianLddtCa)
         w.WriteNumber("mean_lddt_ca", summary.MeanLddtCa)
         w.WriteNumber("median_tm_score", summary.MedianTmScore)
         w.WriteNumber("closer_to_mirror", summary.CloserToMirror)
         w.WriteNumber("codes", summary.Usage.Codes)
         w.WriteNumber("live_codes", summary.Usage.LiveCodes)
         w.WriteNumber("live_fraction", summary.Usage.LiveFraction)
         w.WriteNumber("perplexity", summary.Usage.Perplexity)

         if Double.IsFinite summary.MeanCaStepError then
             w.WriteNumber("mean_ca_step_error", summary.MeanCaStepError)
         else
             w.WriteNull "mean_ca_step_error"

         w.WriteBoolean("confidence_heads_trained", confidenceTrained)
         w.WriteBoolean("ptm_informative", confidenceTrained && ptmInformative)

         if confidenceTrained && Double.IsFinite summary.PlddtPearson then
             w.WriteNumber("plddt_pearson", summary.PlddtPearson)
         else
             w.WriteNull "plddt_pearson"

         if confidenceTrained && Double.IsFinite summary.PtmPearson then
             w.WriteNumber("ptm_tm_pearson", summary.PtmPearson)
         else
             w.WriteNull "ptm_tm_pearson"

         w.WriteStartArray "per_chain"

         for t in trips do
             w.WriteStartObject()
             w.WriteString("name", t.Tokenized.File)
             w.WriteNumber("residues", t.Residues)
             w.WriteNumber("backbone_rmsd", t.BackboneRmsd)
             w.WriteNumber("mirror_rmsd", t.MirrorRmsd)
             w.WriteNumber("lddt_ca", t.LddtCa)
             w.WriteNumber("tm_score", t.TmScore)
             w.WriteStartArray "structure_tokens"

             for id in t.Tokenized.Tokens do
                 w.WriteNumberValue id

             w.WriteEndArray()

             if confidenceTrained && ptmInformative then
                 w.WriteNumber("ptm", t.Decoded.Ptm)
             else
                 w.WriteNull "ptm"

             if confidenceTrained then
                 w.WriteNumber("mean_plddt", float (Array.average t.Decoded.Plddt))
             else
                 w.WriteNull "mean_plddt"

             w.WriteEndObject()

         w.WriteEndArray()
         w.WriteEndObject())

        Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n"
