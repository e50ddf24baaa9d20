namespace Esm3Structure.App

open System
open System.IO
open System.Text.Json
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Models

/// Every ESM3 track of one chain, computed by our own code from its coordinates (ESM3-REFERENCE §8, §9.1): what
/// `scripts/tracks.fsx` prints and what the multi-track model trains on. Token arrays carry BOS and EOS (L + 2 rows).
type ChainTracks =
    {
        File: string
        Chain: string
        /// One-letter sequence. [L]
        Sequence: string
        /// DSSP SS8 letters (G H I T E B S C; C where DSSP leaves a residue out). [L]
        Ss8: string
        /// Solvent-accessible surface per residue in Å² (Shrake–Rupley, ESM's settings); NaN without atoms. [L]
        Sasa: float[]
        /// [L + 2]
        SequenceTokens: int64[]
        /// Codes of the structure encoder; MASK where the backbone is incomplete. [L + 2]
        StructureTokens: int64[]
        /// [L + 2]
        Ss8Tokens: int64[]
        /// [L + 2]
        SasaTokens: int64[]
        /// All `<pad>` (0): the corpus has no function annotations, and ESM pads a protein without any. [L + 2, 8]
        FunctionTokens: int64[,]
        /// All `<pad>` (0), as above. [L + 2, 16]
        ResidueAnnotationTokens: int64[,]
        /// 1 where the residue has an atom with finite coordinates (experimental structure), else 0. [L]
        PerResiduePlddt: float[]
        /// 1.0 for an experimental structure (ESM3-TRAINING §3.5).
        AveragePlddt: float
    }

/// Computes and writes `ChainTracks`.
module ChainTracks =

    /// All tracks of `chain`, its structure tokens from `encoder`.
    let ofChain (encoder: StructureEncoder) (chain: ProteinChain) : ChainTracks =
        let l = ProteinChain.length chain
        let tokenized = StructureTokenizer.tokenize encoder chain
        let ss8 = Dssp.ss8String chain
        let sasa = Sasa.perResidue chain

        let present =
            Array.init l (fun i ->
                if Seq.exists (fun a -> chain.Atom37Mask.[i, a]) (seq { 0..36 }) then
                    1.0
                else
                    0.0)

        {
            File = chain.Name
            Chain = chain.ChainId
            Sequence = chain.Sequence
            Ss8 = ss8
            Sasa = sasa
            SequenceTokens = SequenceTokenizer.encode true chain.Sequence
            StructureTokens = StructureTrack.encode tokenized.Tokens
            Ss8Tokens = Ss8Tokenizer.encode true ss8
            SasaTokens = SasaTokenizer.encode true sasa
            FunctionTokens = Array2D.zeroCreate (l + 2) (int Tracks.FunctionSlots)
            ResidueAnnotationTokens = Array2D.zeroCreate (l + 2) (int Tracks.ResidueSlots)
            PerResiduePlddt = present
            AveragePlddt = 1.0
        }

    let private writeRows (w: Utf8JsonWriter) (name: string) (rows: int64[,]) =
        w.WriteStartArray name

        for r in 0 .. Array2D.length1 rows - 1 do
            w.WriteStartArray()

            for c in 0 .. Array2D.length2 rows - 1 do
                w.WriteNumberValue rows.[r, c]

            w.WriteEndArray()

        w.WriteEndArray()

    let private writeNumbers (w: Utf8JsonWriter) (name: string) (xs: int64[]) =
        w.WriteStartArray name

        for x in xs do
            w.WriteNumberValue x

        w.WriteEndArray()

    /// One JSON object: file, chain, sequence, ss8, sasa (null where NaN, two decimals), tokens per track
    /// (sequence, structure, ss8, sasa, function [L+2][8], residue_annotations [L+2][16]) and the pLDDT inputs.
    let toJson (t: ChainTracks) : string =
        use stream = new MemoryStream()

        (use w = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = false))
         w.WriteStartObject()
         w.WriteString("file", t.File)
         w.WriteString("chain", t.Chain)
         w.WriteString("sequence", t.Sequence)
         w.WriteString("ss8", t.Ss8)
         w.WriteStartArray "sasa"

         for v in t.Sasa do
             if Double.IsNaN v then
                 w.WriteNullValue()
             else
                 w.WriteNumberValue(Math.Round(v, 2))

         w.WriteEndArray()
         w.WriteStartObject "tokens"
         writeNumbers w "sequence" t.SequenceTokens
         writeNumbers w "structure" t.StructureTokens
         writeNumbers w "ss8" t.Ss8Tokens
         writeNumbers w "sasa" t.SasaTokens
         writeRows w "function" t.FunctionTokens
         writeRows w "residue_annotations" t.ResidueAnnotationTokens
         w.WriteEndObject()
         w.WriteStartObject "plddt"
         w.WriteNumber("average", t.AveragePlddt)
         w.WriteStartArray "per_residue"

         for v in t.PerResiduePlddt do
             w.WriteNumberValue v

         w.WriteEndArray()
         w.WriteEndObject()
         w.WriteEndObject())

        Text.Encoding.UTF8.GetString(stream.ToArray())
