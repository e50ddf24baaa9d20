namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Structure

/// One chain ready for batching: backbone N, CA, C (NaN where missing), presence and author numbering.
type TokenizerExample =
    {
        Name: string
        /// [L·9] row-major [L, 3, 3].
        Backbone: float32[]
        /// [L] true where N, CA and C are present.
        Present: bool[]
        /// [L] author residue numbers.
        ResidueIndex: int64[]
    }

    member e.Length = e.Present.Length

/// A batch of crops padded to the longest.
type TokenizerBatch =
    {
        /// Shapes: [B, L, 3, 3] float32 (0 in padding, NaN where an atom is missing)
        Backbone: torch.Tensor
        /// True in padded rows. Shapes: [B, L] bool
        Padding: torch.Tensor
        /// Real residues with N, CA, C. Shapes: [B, L] bool
        Mask: torch.Tensor
        /// Shapes: [B, L] int64
        ResidueIndex: torch.Tensor
    }

/// The data pipeline of tokenizer training: examples from chains, random contiguous crops, padded batches, and a
/// sampler that is a pure function of (seed, step).
module TokenizerData =

    /// An example from a chain.
    let ofChain (chain: ProteinChain) : TokenizerExample =
        let l = ProteinChain.length chain

        {
            Name = chain.Name
            Backbone = Array.init (l * 9) (fun k -> chain.Atom37.[k / 9, (k / 3) % 3, k % 3])
            Present =
                Array.init l (fun i -> chain.Atom37Mask.[i, 0] && chain.Atom37Mask.[i, 1] && chain.Atom37Mask.[i, 2])
            ResidueIndex = chain.ResidueIndex |> Array.map int64
        }

    /// Residues [start, start + length) of an example.
    let crop (start: int) (length: int) (e: TokenizerExample) =
        {
            Name = e.Name
            Backbone = Array.sub e.Backbone (start * 9) (length * 9)
            Present = Array.sub e.Present start length
            ResidueIndex = Array.sub e.ResidueIndex start length
        }

    /// Pads examples into a batch. Shapes: -> TokenizerBatch with B = examples.Length, L = the longest
    let batch (examples: TokenizerExample[]) : TokenizerBatch =
        let b = examples.Length
        let l = examples |> Array.map (fun e -> e.Length) |> Array.max
        let coords = Array.zeroCreate<float32>(b * l * 9)
        let padding = Array.create (b * l) true
        let mask = Array.zeroCreate<bool>(b * l)
        let index = Array.zeroCreate<int64>(b * l)

        examples
        |> Array.iteri (fun r e ->
            Array.blit e.Backbone 0 coords (r * l * 9) e.Backbone.Length

            for i in 0 .. e.Length - 1 do
                padding.[r * l + i] <- false
                mask.[r * l + i] <- e.Present.[i]
                index.[r * l + i] <- e.ResidueIndex.[i])

        let bl = [| int64 b; int64 l |]

        {
            Backbone = torch.tensor(coords).reshape(int64 b, int64 l, 3L, 3L)
            Padding = torch.tensor(padding).reshape bl
            Mask = torch.tensor(mask).reshape bl
            ResidueIndex = torch.tensor(index).reshape bl
        }

    /// The crops of step `step` (`Crops.sample`).
    let sample (seed: int) (step: int) (batchSize: int) (cropLength: int) (examples: TokenizerExample[]) =
        Crops.sample (fun (e: TokenizerExample) -> e.Length) crop seed step batchSize cropLength examples

    /// Examples of the chains with at least 2 residues; none at all raises an `ArgumentException`.
    let trainingExamples (chains: ProteinChain[]) =
        chains
        |> Array.map ofChain
        |> Crops.trainable 2 (fun (e: TokenizerExample) -> e.Length)

    /// The first `count` chains, each cut to its first `length` residues.
    let validationExamples (count: int) (length: int) (chains: ProteinChain[]) =
        chains
        |> Array.truncate count
        |> Array.map ofChain
        |> Crops.firstWindows (fun (e: TokenizerExample) -> e.Length) crop count length

    /// A run's examples: every train chain with at least 2 residues (`trainingExamples`) and the first
    /// `validChains` valid chains cut to `validLength` (`validationExamples`).
    let examples (validChains: int) (validLength: int) (train: ProteinChain[]) (valid: ProteinChain[]) =
        trainingExamples train, validationExamples validChains validLength valid

    /// The batch's tensors on `device`. Shapes: as `batch`
    let toDevice (device: torch.Device) (b: TokenizerBatch) =
        {
            Backbone = b.Backbone.``to`` device
            Padding = b.Padding.``to`` device
            Mask = b.Mask.``to`` device
            ResidueIndex = b.ResidueIndex.``to`` device
        }

    /// The residue positions the pairwise losses read at step `step`: `count` distinct positions of `length`,
    /// ascending, drawn from (seed, step) apart from the batch draw; all positions when count is 0 or ≥ length.
    let pairPositions (seed: int) (step: int) (count: int) (length: int) : int64[] =
        if count <= 0 || count >= length then
            Array.init length int64
        else
            let random = Crops.stepRandom (seed + 7919) step
            let order = Array.init length id
            // Partial Fisher–Yates: the first `count` slots are a uniform sample without replacement.
            for i in 0 .. count - 1 do
                let j = i + random.Next(length - i)
                let t = order.[i]
                order.[i] <- order.[j]
                order.[j] <- t

            order |> Array.truncate count |> Array.sort |> Array.map int64
