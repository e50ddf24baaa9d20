namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// One chain ready for stage-2 batching.
type Stage2Example =
    {
        /// Backbone, presence and numbering, as in stage 1.
        Backbone: TokenizerExample
        /// [L] residue types 0 … 20 (`ResidueConstants` order; 20 = X).
        Restypes: int64[]
        /// [L·14·3] row-major [L, 14, 3] atom14 coordinates; NaN where missing.
        Atom14: float32[]
        /// [L·14] the atoms the all-atom losses use: present in the file; for a backbone-only file (index column
        /// `atoms` = "backbone") only slots 0 … 3 (N, CA, C, O).
        Atom14Mask: bool[]
    }

    member e.Length = e.Backbone.Length

/// A padded stage-2 batch. The decoder sees BOS, the L structure tokens and EOS (then PAD), like ESM's decoder.
type Stage2Batch =
    {
        /// Backbone, padding, residue mask and numbering, as in stage 1. Shapes: [B, L, …]
        Structure: TokenizerBatch
        /// Decoder input: BOS, structure tokens (MASK where the encoder had no frame), EOS, then PAD.
        /// Shapes: [B, L + 2] int64
        Tokens: torch.Tensor
        /// The decoder's sequence input, aligned with `Tokens`: residue types, −1 at BOS, EOS and PAD.
        /// Shapes: [B, L + 2] int64
        SequenceInput: torch.Tensor
        /// Residue types (0 in padding). Shapes: [B, L] int64
        Restypes: torch.Tensor
        /// Atom14 coordinates (NaN where missing, 0 in padding). Shapes: [B, L, 14, 3] float32
        Atom14: torch.Tensor
        /// `Stage2Example.Atom14Mask` (false in padding). Shapes: [B, L, 14] bool
        Atom14Mask: torch.Tensor
    }

/// The stage-2 data pipeline: examples with atom14 targets, crops drawn as a pure function of (seed, step), and
/// padded batches with the decoder's token rows.
module Stage2Data =

    /// An example from a chain; `full` says whether the file has every heavy atom (index column `atoms`).
    let ofChain (full: bool) (chain: ProteinChain) : Stage2Example =
        let l = ProteinChain.length chain

        {
            Backbone = TokenizerData.ofChain chain
            Restypes = ProteinChain.restypeIndices chain |> Array.map int64
            Atom14 = Array.init (l * 42) (fun k -> chain.Atom14.[k / 42, (k / 3) % 14, k % 3])
            Atom14Mask = Array.init (l * 14) (fun k -> chain.Atom14Mask.[k / 14, k % 14] && (full || k % 14 < 4))
        }

    /// Residues [start, start + length) of an example.
    let crop (start: int) (length: int) (e: Stage2Example) =
        {
            Backbone = TokenizerData.crop start length e.Backbone
            Restypes = Array.sub e.Restypes start length
            Atom14 = Array.sub e.Atom14 (start * 42) (length * 42)
            Atom14Mask = Array.sub e.Atom14Mask (start * 14) (length * 14)
        }

    /// Pads examples into a batch; `tokens.[r]` are the structure tokens of example r (one per residue).
    /// Shapes: -> Stage2Batch with B = examples.Length, L = the longest
    let batch (examples: Stage2Example[]) (tokens: int64[][]) : Stage2Batch =
        if tokens.Length <> examples.Length then
            raise (ArgumentException(sprintf "%d token rows for %d examples" tokens.Length examples.Length, "tokens"))

        let structure = TokenizerData.batch (examples |> Array.map _.Backbone)
        let b = examples.Length
        let l = examples |> Array.map _.Length |> Array.max
        let w = l + 2
        let ids = Array.create (b * w) StructureTokens.Pad
        let sequence = Array.create (b * w) -1L
        let restypes = Array.zeroCreate<int64>(b * l)
        let atoms = Array.zeroCreate<float32>(b * l * 42)
        let mask = Array.zeroCreate<bool>(b * l * 14)

        examples
        |> Array.iteri (fun r e ->
            let n = e.Length

            if tokens.[r].Length <> n then
                raise (
                    ArgumentException(
                        sprintf "example %d (%s) has %d residues but %d tokens" r e.Backbone.Name n tokens.[r].Length,
                        "tokens"
                    )
                )

            ids.[r * w] <- StructureTokens.Bos
            ids.[r * w + n + 1] <- StructureTokens.Eos

            for i in 0 .. n - 1 do
                ids.[r * w + 1 + i] <- tokens.[r].[i]
                sequence.[r * w + 1 + i] <- e.Restypes.[i]
                restypes.[r * l + i] <- e.Restypes.[i]

            Array.blit e.Atom14 0 atoms (r * l * 42) e.Atom14.Length
            Array.blit e.Atom14Mask 0 mask (r * l * 14) e.Atom14Mask.Length)

        let bw = [| int64 b; int64 w |]

        {
            Structure = structure
            Tokens = torch.tensor(ids).reshape bw
            SequenceInput = torch.tensor(sequence).reshape bw
            Restypes = torch.tensor(restypes).reshape(int64 b, int64 l)
            Atom14 = torch.tensor(atoms).reshape(int64 b, int64 l, 14L, 3L)
            Atom14Mask = torch.tensor(mask).reshape(int64 b, int64 l, 14L)
        }

    /// The batch on `device`.
    let toDevice (device: torch.Device) (b: Stage2Batch) =
        let s = b.Structure

        {
            Structure =
                {
                    Backbone = s.Backbone.``to`` device
                    Padding = s.Padding.``to`` device
                    Mask = s.Mask.``to`` device
                    ResidueIndex = s.ResidueIndex.``to`` device
                }
            Tokens = b.Tokens.``to`` device
            SequenceInput = b.SequenceInput.``to`` device
            Restypes = b.Restypes.``to`` device
            Atom14 = b.Atom14.``to`` device
            Atom14Mask = b.Atom14Mask.``to`` device
        }

    /// Chains of one split of the corpus with their `atoms` column read as "full" (true) or not, at most `limit`
    /// (≤ 0: all), in index order.
    let readSplit (dataDir: string) (split: string) (limit: int) : (ProteinChain * bool)[] =
        Corpus.entriesOf dataDir split limit
        |> Array.map (fun e -> Corpus.readEntry dataDir e, e.Atoms = "full")
