namespace Esm3Structure.Design

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Structure
open Esm3Structure.Io
open Esm3Structure.Tokenizers
open Esm3Structure.Models
open Esm3Structure.Training

/// What generation needs besides the prompt: the multi-track model, and optionally the structure tokenizer's
/// encoder (coordinates in a prompt → structure tokens), its decoder (generated structure tokens → coordinates) and
/// a function tokenizer (function annotations in a prompt → function tokens).
type ProteinDesigner =
    {
        /// The multi-track model (eval mode is set by `ProteinGeneration.generate`).
        Model: MultiTrackModel
        /// Structure encoder; None: prompts' coordinates are not tokenized (the structure track stays MASK unless the
        /// prompt carries structure tokens).
        Encoder: StructureEncoder option
        /// Structure decoder; None: generated structure tokens are not decoded.
        Decoder: StructureDecoder option
        /// Function tokenizer; None: prompts with function annotations are refused.
        FunctionTokenizer: FunctionTokenizerData option
    }

    /// For C#: a designer from a model and a structure encoder and decoder, either of which may be null (absent).
    static member Of(model: MultiTrackModel, encoder: StructureEncoder, decoder: StructureDecoder) =
        let optional (x: 'a) =
            if obj.ReferenceEquals(x, null) then None else Some x

        {
            Model = model
            Encoder = optional encoder
            Decoder = optional decoder
            FunctionTokenizer = None
        }

/// ESM3's `generate` / `batch_generate` on `Protein` records: tokenize each prompt as training does
/// (`Protein.toInput`), fill the configured track by iterative decoding (`IterativeDecoding`), and decode the result
/// (`Protein.ofInput`; structure tokens through the decoder when the structure track was generated).
module ProteinGeneration =

    /// The seed of sample `index` of a batch seeded `seed`: a pure function of both, so a sample does not depend on
    /// the other prompts of its batch.
    let sampleSeed (seed: int) (index: int) : uint64 =
        uint64 (int64 seed) * 0x9E3779B97F4A7C15UL + uint64 index + 1UL

    /// The positions of `track` that a prompt leaves to generate (its MASK ids among the residues).
    let maskedPositions (designer: ProteinDesigner) (track: GenerationTrack) (prompt: Protein) : int =
        let e = Protein.toExample designer.Encoder designer.FunctionTokenizer prompt

        let ids, mask =
            match track with
            | GenerationTrack.Sequence -> e.Sequence, SequenceTokenizer.Mask
            | GenerationTrack.Structure -> e.Structure, StructureTokens.Mask
            | GenerationTrack.Ss8 -> e.Ss8, Tracks.Absent
            | GenerationTrack.Sasa -> e.Sasa, Tracks.Absent

        ids |> Array.filter (fun id -> id = mask) |> Array.length

    /// Generates one protein per prompt: prompt i is decoded from a generator seeded `sampleSeed seed i` (the same
    /// prompt several times gives several samples). Prompts run one after another (on a CPU a padded batch saves
    /// nothing and would make each sample depend on its neighbours' lengths). `onStep` is called after every step
    /// with (prompt index, steps done, steps of this prompt). Deterministic for a given seed and thread count.
    let generate
        (designer: ProteinDesigner)
        (config: GenerationConfig)
        (seed: int)
        (onStep: Action<int, int, int>)
        (prompts: Protein[])
        : Protein[] =
        designer.Model.eval ()

        designer.Encoder |> Option.iter (fun e -> e.eval ())
        designer.Decoder |> Option.iter (fun d -> d.eval ())
        let device = Checkpoint.deviceOf designer.Model

        prompts
        |> Array.mapi (fun i prompt ->
            use scope = torch.NewDisposeScope()
            let masked = maskedPositions designer config.Track prompt
            let steps = min config.Steps masked

            let input =
                Protein.toInput designer.Encoder designer.FunctionTokenizer prompt
                |> MultiTrackInput.toDevice device

            use generator = new torch.Generator(sampleSeed seed i)

            let notify (done_: int) =
                if not (isNull onStep) then
                    onStep.Invoke(i, done_, steps)

            let out =
                IterativeDecoding.generateWith notify designer.Model input config generator

            let cpu = MultiTrackInput.toDevice torch.CPU out
            Protein.ofInput designer.Decoder (config.Track = GenerationTrack.Structure) prompt cpu)

/// The prompts and settings of `scripts/generate.fsx`, checked with one-line errors that name the flag
/// (ARCHITECTURE.md, `generate.fsx`).
module GenerationPrompt =

    let private fail (message: string) : 'a = raise (ArgumentException message)

    /// `sequence`, `structure`, `ss8` or `sasa`; anything else raises naming --track.
    let parseTrack (name: string) : GenerationTrack =
        match (if isNull name then "" else name.Trim().ToLowerInvariant()) with
        | "sequence" -> GenerationTrack.Sequence
        | "structure" -> GenerationTrack.Structure
        | "ss8"
        | "secondary_structure" -> GenerationTrack.Ss8
        | "sasa" -> GenerationTrack.Sasa
        | _ -> fail (sprintf "--track: unknown track '%s' (expected sequence, structure, ss8 or sasa)" name)

    /// `random` or `entropy`; anything else raises naming --strategy.
    let parseStrategy (name: string) : UnmaskStrategy =
        match name.Trim().ToLowerInvariant() with
        | "random" -> UnmaskStrategy.Random
        | "entropy" -> UnmaskStrategy.Entropy
        | _ -> fail (sprintf "--strategy: unknown strategy '%s' (expected random or entropy)" name)

    /// `cosine` or `linear`; anything else raises naming --schedule.
    let parseSchedule (name: string) : UnmaskSchedule =
        match name.Trim().ToLowerInvariant() with
        | "cosine" -> UnmaskSchedule.Cosine
        | "linear" -> UnmaskSchedule.Linear
        | _ -> fail (sprintf "--schedule: unknown schedule '%s' (expected cosine or linear)" name)

    /// Checks the numeric settings: --steps ≥ 1, --temperature ≥ 0 (0 = argmax), --top-p in (0, 1], --num ≥ 1.
    let checkSettings (steps: int) (temperature: float) (topP: float) (num: int) : unit =
        if steps < 1 then
            fail (sprintf "--steps must be at least 1 (got %d)" steps)

        if not (temperature >= 0.0) || Double.IsInfinity temperature then
            fail (sprintf "--temperature must be a finite number ≥ 0, 0 meaning argmax (got %g)" temperature)

        if not (topP > 0.0 && topP <= 1.0) then
            fail (sprintf "--top-p must be in (0, 1] (got %g)" topP)

        if num < 1 then
            fail (sprintf "--num must be at least 1 (got %d)" num)

    let private checkAlphabet (flag: string) (allowed: string) (what: string) (text: string) =
        match text |> Seq.tryFindIndex (fun c -> not (allowed.Contains c || c = '_')) with
        | Some i -> fail (sprintf "%s: character %d ('%c') is not %s or _" flag (i + 1) text.[i] what)
        | None -> ()

    /// The residue letters of `--sequence` (ESM's sequence vocabulary: the 20 amino acids, X, B, U, Z, O).
    let SequenceLetters = "ACDEFGHIKLMNPQRSTVWYXBUZO"

    /// The prompt of `generate.fsx`: the chain of `--pdb` (`pdb`: its sequence and coordinates; null: none),
    /// `--sequence` (`_` = masked; replaces the chain's sequence) and `--ss8` (`_` = masked), at least one of them.
    /// The track to generate is taken from its own flag where it has one (`--sequence`, `--ss8`: its `_`
    /// positions are generated) and is otherwise entirely masked; for `structure` the chain's coordinates are left
    /// out (they would give the answer away) and its sequence kept. Raises naming the flag: no prompt, characters
    /// outside a track's alphabet, lengths that disagree between flags.
    let build
        (track: GenerationTrack)
        (pdb: Protein option)
        (pdbLabel: string)
        (sequence: string)
        (ss8: string)
        : Protein =
        let given (s: string) = not (String.IsNullOrEmpty s)

        if pdb.IsNone && not (given sequence) && not (given ss8) then
            fail "give a prompt: --pdb FILE, --sequence S or --ss8 S (at least one)"

        let sequence =
            if given sequence then
                let s = sequence.Trim().ToUpperInvariant()
                checkAlphabet "--sequence" SequenceLetters "a residue letter" s
                s
            else
                null

        let ss8 =
            if given ss8 then
                let s = ss8.Trim().ToUpperInvariant()
                checkAlphabet "--ss8" Ss8Tokenizer.Classes "an SS8 letter (GHITEBSC)" s
                s
            else
                null

        let lengths =
            [
                match pdb with
                | Some p -> sprintf "--pdb %s" pdbLabel, Protein.length p
                | None -> ()
                if not (isNull sequence) then
                    "--sequence", sequence.Length
                if not (isNull ss8) then
                    "--ss8", ss8.Length
            ]

        match lengths with
        | (first, l) :: rest ->
            match rest |> List.tryFind (fun (_, n) -> n <> l) with
            | Some(flag, n) -> fail (sprintf "%s has %d positions but %s has %d" flag n first l)
            | None -> ()
        | [] -> ()

        let l = snd lengths.Head

        let name =
            match pdb with
            | Some p -> p.Name
            | None -> "prompt"

        let basis =
            match pdb with
            | Some p -> p
            | None -> Protein.empty name

        let masked = String('_', l)

        { basis with
            Sequence =
                match track, sequence with
                | _, s when not (isNull s) -> s
                | GenerationTrack.Sequence, _ -> masked
                | _ -> basis.Sequence
            SecondaryStructure =
                match track, ss8 with
                | _, s when not (isNull s) -> s
                | GenerationTrack.Ss8, _ -> masked
                | _ -> basis.SecondaryStructure
            Sasa = (if track = GenerationTrack.Sasa then null else basis.Sasa)
            Coordinates =
                (if track = GenerationTrack.Structure then
                     null
                 else
                     basis.Coordinates)
            StructureTokens =
                (if track = GenerationTrack.Structure then
                     null
                 else
                     basis.StructureTokens)
        }

    /// Checks that --steps does not exceed the positions the prompt leaves to generate (ESM would silently lower
    /// it); none at all raises naming the track's flag.
    let checkSteps (track: GenerationTrack) (steps: int) (masked: int) : unit =
        if masked = 0 then
            let flag =
                match track with
                | GenerationTrack.Sequence -> "--sequence"
                | GenerationTrack.Ss8 -> "--ss8"
                | _ -> "--track"

            fail (sprintf "%s: the prompt leaves no position of the %A track to generate (mark them with _)" flag track)

        if steps > masked then
            fail (sprintf "--steps %d is larger than the %d masked positions of the %A track" steps masked track)

    /// Checks that `--out` has a known extension and, for structure formats, that the samples will have coordinates
    /// (a structure prompt via --pdb, or --track structure).
    let checkOutput (out: string) (track: GenerationTrack) (promptHasCoordinates: bool) : unit =
        let bare = TextFiles.withoutGz out

        match IO.Path.GetExtension(bare).ToLowerInvariant() with
        | ".fasta"
        | ".fa"
        | ".json" -> ()
        | ".pdb"
        | ".cif"
        | ".mmcif" ->
            if track <> GenerationTrack.Structure && not promptHasCoordinates then
                fail (
                    sprintf
                        "--out %s: a structure file needs coordinates: generate --track structure, or give --pdb"
                        out
                )
        | other -> fail (sprintf "--out %s: unknown format '%s' (expected .fasta, .pdb, .cif or .json)" out other)
