namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// One chain's tracks for masked-LM training, per residue (no BOS/EOS: batching adds them).
type MultiTrackExample =
    {
        Name: string
        /// [L] sequence ids (`SequenceTokenizer`, 4 … 28 for residues).
        Sequence: int64[]
        /// [L] structure codes 0 … 4095; `StructureTokens.Mask` where unknown (no frame).
        Structure: int64[]
        /// [L] SS8 ids 0 … 10 (0 = absent).
        Ss8: int64[]
        /// [L] SASA ids 0 … 18 (0 = absent).
        Sasa: int64[]
        /// [L·8] function ids 0 … 259, row-major [L, 8] (all 0 = no annotation).
        Function: int64[]
        /// [L·16] residue annotation ids 0 … 1477, row-major [L, 16] (0 = empty slot).
        ResidueAnnotations: int64[]
        /// [L·9] backbone N, CA, C, row-major [L, 3, 3], Å; NaN where an atom is missing.
        Coordinates: float32[]
        /// [L] per-residue pLDDT in [0, 1] (1 for experimental structures).
        Plddt: float32[]
    }

    member e.Length = e.Sequence.Length

/// Where each track of an example comes from: one function per track over a chain (`Func`s, so C# can fill them).
/// Sequence and coordinates are read from the chain itself.
type TrackProviders =
    {
        /// [L] structure tokens (e.g. from the structure tokenizer).
        StructureTokens: Func<ProteinChain, int64[]>
        /// [L] SS8 ids (e.g. from DSSP and the SS8 tokenizer).
        Ss8: Func<ProteinChain, int64[]>
        /// [L] SASA ids (e.g. from Shrake–Rupley and the SASA tokenizer).
        Sasa: Func<ProteinChain, int64[]>
        /// [L·8] function ids.
        Function: Func<ProteinChain, int64[]>
        /// [L·16] residue annotation ids.
        ResidueAnnotations: Func<ProteinChain, int64[]>
        /// [L] per-residue pLDDT.
        Plddt: Func<ProteinChain, float32[]>
    }

/// Standard providers.
module TrackProviders =

    /// Every optional track absent as ESM encodes it: structure tokens MASK, SS8/SASA/function/residue 0; pLDDT 1
    /// (experimental structures).
    let absent =
        let n (c: ProteinChain) = ProteinChain.length c

        {
            StructureTokens = Func<_, _>(fun c -> Array.create (n c) StructureTokens.Mask)
            Ss8 = Func<_, _>(fun c -> Array.create (n c) Tracks.Absent)
            Sasa = Func<_, _>(fun c -> Array.create (n c) Tracks.Absent)
            Function = Func<_, _>(fun c -> Array.create (n c * int Tracks.FunctionSlots) Tracks.Absent)
            ResidueAnnotations = Func<_, _>(fun c -> Array.create (n c * int Tracks.ResidueSlots) Tracks.Absent)
            Plddt = Func<_, _>(fun c -> Array.create (n c) 1.0f)
        }

    /// `absent`, with structure tokens from `encoder` (`StructureTokenizer.tokenize`: MASK where a residue has no
    /// backbone frame).
    let withStructureEncoder (encoder: StructureEncoder) =
        { absent with
            StructureTokens = Func<_, _>(fun c -> (StructureTokenizer.tokenize encoder c).Tokens)
        }

    /// Every track our own code computes from a structure (`ChainTracks`): structure tokens from `encoder`, SS8 from
    /// our DSSP, SASA from our Shrake–Rupley in ESM's bins; function and residue annotations absent (the corpus
    /// carries none, and ESM pads an unannotated protein), pLDDT 1 (experimental structures).
    let computed (encoder: StructureEncoder) =
        { withStructureEncoder encoder with
            Ss8 = Func<_, _>(fun c -> Ss8Tokenizer.encode false (Dssp.ss8String c))
            Sasa = Func<_, _>(fun c -> SasaTokenizer.encode false (Sasa.perResidue c))
        }

/// A padded batch: ESM-style tracks with BOS/EOS, and which positions are residues.
type MultiTrackBatch =
    {
        /// The clean tracks; `SequenceId` is 0 on BOS, residues and EOS, 1 on padding.
        Tracks: MultiTrackInput
        /// True at residues (not at BOS, EOS or padding). Shapes: [B, L] bool
        Residues: torch.Tensor
    }

/// The data pipeline of masked-LM training: examples from chains via providers (checked), random crops, padded
/// batches with BOS/EOS, a sampler that is a pure function of (seed, step).
module MultiTrackData =

    /// Checks an example: array lengths against the sequence's L, ids inside each track's vocabulary, pLDDT in
    /// [0, 1]. An `InputException` names the example (as the file) and the track and position.
    let check (e: MultiTrackExample) : MultiTrackExample =
        let l = e.Sequence.Length

        let fail (track: string) message =
            InputError.raise e.Name (InputLocation.Field track) message

        let ids (track: string) (per: int) (top: int64) (values: int64[]) =
            if isNull values || values.Length <> l * per then
                fail
                    track
                    (sprintf
                        "expected %d values (%d residues × %d), got %d"
                        (l * per)
                        l
                        per
                        (if isNull values then 0 else values.Length))

            values
            |> Array.iteri (fun k v ->
                if v < 0L || v > top then
                    fail track (sprintf "id %d at residue %d is outside 0 … %d" v (k / per) top))

        ids "sequence" 1 (Tracks.SequenceWidth - 1L) e.Sequence
        ids "structure" 1 (StructureTokens.VocabularySize - 1L) e.Structure
        ids "ss8" 1 (Tracks.Ss8Vocabulary - 1L) e.Ss8
        ids "sasa" 1 (Tracks.SasaVocabulary - 1L) e.Sasa
        ids "function" (int Tracks.FunctionSlots) (Tracks.FunctionVocabulary - 1L) e.Function
        ids "residue_annotations" (int Tracks.ResidueSlots) (Tracks.ResidueVocabulary - 1L) e.ResidueAnnotations

        if isNull e.Coordinates || e.Coordinates.Length <> l * 9 then
            fail "coordinates" (sprintf "expected %d values (%d residues × 3 atoms × 3)" (l * 9) l)

        if isNull e.Plddt || e.Plddt.Length <> l then
            fail "plddt" (sprintf "expected %d values" l)

        e.Plddt
        |> Array.iteri (fun i p ->
            if not (p >= 0.0f && p <= 1.0f) then
                fail "plddt" (sprintf "value %g at residue %d is outside [0, 1]" p i))

        e

    /// An example from a chain: sequence ids and backbone N, CA, C from the chain, the other tracks from the
    /// providers; checked (`check`).
    let ofChain (providers: TrackProviders) (chain: ProteinChain) : MultiTrackExample =
        let l = ProteinChain.length chain

        check
            {
                Name = chain.Name
                Sequence = SequenceTokenizer.encode false chain.Sequence
                Structure = providers.StructureTokens.Invoke chain
                Ss8 = providers.Ss8.Invoke chain
                Sasa = providers.Sasa.Invoke chain
                Function = providers.Function.Invoke chain
                ResidueAnnotations = providers.ResidueAnnotations.Invoke chain
                Coordinates =
                    Array.init (l * 9) (fun k ->
                        let i, a, x = k / 9, (k / 3) % 3, k % 3

                        if chain.Atom37Mask.[i, a] then
                            chain.Atom37.[i, a, x]
                        else
                            Single.NaN)
                Plddt = providers.Plddt.Invoke chain
            }

    /// Residues [start, start + length) of an example.
    let crop (start: int) (length: int) (e: MultiTrackExample) =
        let sub (per: int) (a: 'a[]) =
            Array.sub a (start * per) (length * per)

        {
            Name = e.Name
            Sequence = sub 1 e.Sequence
            Structure = sub 1 e.Structure
            Ss8 = sub 1 e.Ss8
            Sasa = sub 1 e.Sasa
            Function = sub (int Tracks.FunctionSlots) e.Function
            ResidueAnnotations = sub (int Tracks.ResidueSlots) e.ResidueAnnotations
            Coordinates = sub 9 e.Coordinates
            Plddt = sub 1 e.Plddt
        }

    /// Pads examples into a batch of L = longest + 2 positions: BOS, the residues, EOS, then padding. Special
    /// positions get each track's ids (sequence 0/2/1, structure 4098/4097/4099, others 0) and +∞ coordinates (no
    /// frame); average pLDDT is each chain's mean pLDDT; per-residue pLDDT is 0 where a residue lacks N, CA or C.
    /// Shapes: -> tracks [B, L, …] on the CPU
    let batch (examples: MultiTrackExample[]) : MultiTrackBatch =
        if examples.Length = 0 then
            raise (ArgumentException("a batch needs at least one example", "examples"))

        let b = examples.Length
        let l = (examples |> Array.map (fun e -> e.Length) |> Array.max) + 2
        let fs, rs = int Tracks.FunctionSlots, int Tracks.ResidueSlots
        let sequence = Array.create (b * l) SequenceTokenizer.Pad
        let structure = Array.create (b * l) StructureTokens.Pad
        let ss8 = Array.zeroCreate<int64>(b * l)
        let sasa = Array.zeroCreate<int64>(b * l)
        let fn = Array.zeroCreate<int64>(b * l * fs)
        let residue = Array.zeroCreate<int64>(b * l * rs)
        let coords = Array.create (b * l * 9) Single.PositiveInfinity
        let average = Array.zeroCreate<float32> b
        let plddt = Array.zeroCreate<float32>(b * l)
        let sequenceId = Array.create (b * l) 1L
        let residues = Array.zeroCreate<bool>(b * l)

        examples
        |> Array.iteri (fun r e ->
            let row = r * l
            let n = e.Length
            sequence.[row] <- SequenceTokenizer.Bos
            structure.[row] <- StructureTokens.Bos
            sequence.[row + n + 1] <- SequenceTokenizer.Eos
            structure.[row + n + 1] <- StructureTokens.Eos

            for p in row .. row + n + 1 do
                sequenceId.[p] <- 0L

            Array.blit e.Sequence 0 sequence (row + 1) n
            Array.blit e.Structure 0 structure (row + 1) n
            Array.blit e.Ss8 0 ss8 (row + 1) n
            Array.blit e.Sasa 0 sasa (row + 1) n
            Array.blit e.Function 0 fn ((row + 1) * fs) (n * fs)
            Array.blit e.ResidueAnnotations 0 residue ((row + 1) * rs) (n * rs)
            Array.blit e.Coordinates 0 coords ((row + 1) * 9) (n * 9)
            average.[r] <- if n = 0 then 1.0f else Array.average e.Plddt

            for i in 0 .. n - 1 do
                residues.[row + 1 + i] <- true
                let framed = Array.forall Single.IsFinite e.Coordinates.[i * 9 .. i * 9 + 8]
                plddt.[row + 1 + i] <- if framed then e.Plddt.[i] else 0.0f)

        let bl = [| int64 b; int64 l |]
        let ids (data: int64[]) (shape: int64[]) = torch.tensor(data).reshape shape

        {
            Tracks =
                {
                    Sequence = ids sequence bl
                    Structure = ids structure bl
                    Ss8 = ids ss8 bl
                    Sasa = ids sasa bl
                    Function = ids fn [| int64 b; int64 l; Tracks.FunctionSlots |]
                    ResidueAnnotations = ids residue [| int64 b; int64 l; Tracks.ResidueSlots |]
                    Coordinates = torch.tensor(coords).reshape(int64 b, int64 l, 3L, 3L)
                    AveragePlddt = torch.tensor(average).reshape(int64 b, 1L)
                    PerResiduePlddt = torch.tensor(plddt).reshape bl
                    SequenceId = ids sequenceId bl
                }
            Residues = torch.tensor(residues).reshape bl
        }

    /// The crops of step `step` (`Crops.sample`: the same draws as the tokenizer's).
    let sample (seed: int) (step: int) (batchSize: int) (cropLength: int) (examples: MultiTrackExample[]) =
        Crops.sample (fun (e: MultiTrackExample) -> e.Length) crop seed step batchSize cropLength examples

    /// The masking generator of step `step` (a pure function of (seed, step), so a resumed run masks alike).
    let maskGenerator (seed: int) (step: int) =
        new torch.Generator(uint64 (int64 seed) * 2_654_435_761UL + uint64 step + 1UL)
