namespace Esm3Structure.Design

open System
open TorchSharp
open Esm3Structure.Structure
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// The three tasks of `GenerationEvaluation` for one generation seed: each figure over all evaluated chains.
type GenerationTaskScores =
    {
        /// The generation seed (`ProteinGeneration.sampleSeed seed i` for chain i).
        Seed: int
        /// Inverse folding (structure → sequence): native residues recovered / residues (letters other than the 20
        /// amino acids not counted).
        Recovery: float
        /// SS8 from sequence: residues whose generated SS8 equals our DSSP's / residues.
        Ss8Accuracy: float
        /// Structure from sequence (structure tokens, then the decoder): median backbone RMSD in Å over the chains.
        MedianRmsd: float
        /// Median TM-score (CA) over the chains.
        MedianTmScore: float
    }

/// What each figure is compared with; none depends on the generation seed.
type GenerationBaselines =
    {
        /// The most frequent residue letter of the evaluated chains themselves (an oracle unigram).
        UnigramLetter: char
        /// The recovery of predicting `UnigramLetter` everywhere.
        UnigramRecovery: float
        /// The most frequent SS8 class of the evaluated chains themselves (an oracle majority class).
        MajorityClass: char
        /// The accuracy of predicting `MajorityClass` everywhere.
        MajorityAccuracy: float
        /// Decoding each chain's true structure tokens (the tokenizer's round trip): the ceiling of the structure task.
        TrueTokensMedianRmsd: float
        TrueTokensMedianTmScore: float
        /// Decoding each chain's true tokens in a random order (a fixed permutation per chain): what the decoder makes
        /// of the right composition without the order, the floor of the structure task.
        ShuffledTokensMedianRmsd: float
        ShuffledTokensMedianTmScore: float
    }

/// The evaluation of a multi-track model on whole chains (`scripts/evaluate-generation.fsx`): inverse
/// folding, SS8 from sequence, and structure from sequence, each decoded by `ProteinGeneration.generate` with the
/// configured steps, schedule, strategy and sampling (the script's default: argmax, temperature 0).
module GenerationEvaluation =

    let private isAminoAcid (c: char) = ResidueConstants.restypeIndex c < 20

    /// Backbone RMSD and TM-score (CA) of a structure against a chain, over the residues where both have N, CA, C.
    let structureScores (model: ProteinChain) (reference: ProteinChain) : float * float =
        use _ = torch.NewDisposeScope()
        let p = ProteinChain.backbone torch.float64 model
        let q = ProteinChain.backbone torch.float64 reference

        let mask =
            (ProteinChain.backboneMask model).logical_and(ProteinChain.backboneMask reference)

        let rmsd = (Metrics.backboneRmsd p q mask).ToDouble()
        let tm = Metrics.tmScore (p.select (1L, 1L)) (q.select (1L, 1L)) (Some mask)
        rmsd, tm

    /// Fraction of positions where `generated` equals `native`, over positions `counted` keeps, as (hits, total).
    let private agreement (counted: char -> bool) (generated: string) (native: string) =
        let mutable hits, total = 0, 0

        for i in 0 .. native.Length - 1 do
            if counted native.[i] then
                total <- total + 1

                if generated.[i] = native.[i] then
                    hits <- hits + 1

        hits, total

    /// The baselines of `tasks` over `chains` (`Protein.ofChainWithTracks` of each; the encoder and decoder of the
    /// structure tokenizer for the structure figures). The structure baselines decode every chain twice, so they
    /// are NaN when Structure is not among `tasks`; the others cost little and are always computed.
    let baselines
        (encoder: StructureEncoder)
        (decoder: StructureDecoder)
        (tasks: GenerationTrack[])
        (chains: ProteinChain[])
        : GenerationBaselines =
        let letters =
            chains
            |> Array.collect (fun c -> c.Sequence.ToCharArray())
            |> Array.filter isAminoAcid

        let unigram, unigramCount = letters |> Array.countBy id |> Array.maxBy snd
        let ss8 = chains |> Array.collect (fun c -> (Dssp.ss8String c).ToCharArray())
        let majority, majorityCount = ss8 |> Array.countBy id |> Array.maxBy snd

        let decodeScores (reorder: int -> int64[] -> int64[]) =
            if not (Array.contains GenerationTrack.Structure tasks) then
                [| nan, nan |]
            else
                chains
                |> Array.mapi (fun i chain ->
                    let tokens = (StructureTokenizer.tokenize encoder chain).Tokens |> reorder i

                    let decoded =
                        StructureDecoder.decodeWithSequence
                            decoder
                            chain.Sequence
                            (StructureTokens.wrap chain.Name tokens)

                    structureScores decoded.Chain chain)

        let trueScores = decodeScores (fun _ t -> t)

        let shuffled =
            decodeScores (fun i t ->
                let random = Random(i + 1)
                let copy = Array.copy t
                random.Shuffle copy
                copy)

        {
            UnigramLetter = unigram
            UnigramRecovery = float unigramCount / float letters.Length
            MajorityClass = majority
            MajorityAccuracy = float majorityCount / float ss8.Length
            TrueTokensMedianRmsd = trueScores |> Array.map fst |> Metrics.median
            TrueTokensMedianTmScore = trueScores |> Array.map snd |> Metrics.median
            ShuffledTokensMedianRmsd = shuffled |> Array.map fst |> Metrics.median
            ShuffledTokensMedianTmScore = shuffled |> Array.map snd |> Metrics.median
        }

    /// The three tasks for one seed, each named by the track it generates (`tasks`: Sequence = inverse folding,
    /// Ss8 = SS8 from sequence, Structure = structure from sequence; a task left out scores NaN). `config` sets
    /// steps, schedule, strategy, temperature (0: argmax, the evaluation's default), top-p and coordinate
    /// conditioning; the track is set per task. `onChain` is called with (task, chains done, chains).
    /// Shapes: chains with a backbone at every residue (tokenizable throughout).
    let run
        (designer: ProteinDesigner)
        (config: GenerationConfig)
        (tasks: GenerationTrack[])
        (seed: int)
        (onChain: Action<string, int, int>)
        (chains: ProteinChain[])
        : GenerationTaskScores =
        let natives = chains |> Array.map Protein.ofChainWithTracks
        let wanted (track: GenerationTrack) = Array.contains track tasks

        let task (name: string) (track: GenerationTrack) (prompt: Protein -> Protein) =
            let c = { config with Track = track }

            natives
            |> Array.mapi (fun i native ->
                let p = prompt native
                let steps = min c.Steps (ProteinGeneration.maskedPositions designer track p)

                let out =
                    ProteinGeneration.generate designer { c with Steps = max 1 steps } (seed + i) null [| p |]

                if not (isNull onChain) then
                    onChain.Invoke(name, i + 1, natives.Length)

                out.[0])

        let masked (n: int) = String('_', n)

        let fraction (pairs: (int * int)[]) =
            let hits, total = pairs |> Array.fold (fun (a, b) (c, d) -> a + c, b + d) (0, 0)
            float hits / float total

        let recovery =
            if wanted GenerationTrack.Sequence then
                // Inverse folding from the chain's structure (the prompt's SS8 and SASA left out).
                task "inverse folding" GenerationTrack.Sequence (fun n ->
                    { n with
                        Sequence = masked n.Sequence.Length
                        SecondaryStructure = null
                        Sasa = null
                    })
                |> Array.map2 (fun (n: Protein) (g: Protein) -> agreement isAminoAcid g.Sequence n.Sequence) natives
                |> fraction
            else
                nan

        let ss8Accuracy =
            if wanted GenerationTrack.Ss8 then
                task "ss8 from sequence" GenerationTrack.Ss8 (fun n -> Protein.ofSequence n.Name n.Sequence)
                |> Array.map2
                    (fun (n: Protein) (g: Protein) ->
                        agreement (fun _ -> true) g.SecondaryStructure n.SecondaryStructure)
                    natives
                |> fraction
            else
                nan

        let scores =
            if wanted GenerationTrack.Structure then
                task "structure from sequence" GenerationTrack.Structure (fun n -> Protein.ofSequence n.Name n.Sequence)
                |> Array.map2
                    (fun (chain: ProteinChain) (g: Protein) -> structureScores (Protein.toChain g) chain)
                    chains
            else
                [||]

        {
            Seed = seed
            Recovery = recovery
            Ss8Accuracy = ss8Accuracy
            MedianRmsd = scores |> Array.map fst |> Metrics.median
            MedianTmScore = scores |> Array.map snd |> Metrics.median
        }
