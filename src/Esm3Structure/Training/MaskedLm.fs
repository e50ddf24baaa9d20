namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// Per-track boolean masks over positions. Shapes: each [B, L] bool
type TrackMasks =
    {
        Sequence: torch.Tensor
        Structure: torch.Tensor
        Coordinates: torch.Tensor
        Ss8: torch.Tensor
        Sasa: torch.Tensor
        Function: torch.Tensor
        ResidueAnnotations: torch.Tensor
    }

/// A batch after masking.
type MaskedBatch =
    {
        /// What the model sees: hidden positions replaced by each track's mask id, coordinates NaN there (and
        /// noisy elsewhere), per-residue pLDDT 0 where coordinates are hidden.
        Inputs: MultiTrackInput
        /// The clean tracks.
        Targets: MultiTrackInput
        /// The hidden positions of every track.
        Masked: TrackMasks
        /// Hidden positions with a real label: the positions that enter each track's loss (`Coordinates` = the
        /// hidden coordinates, which have no loss).
        LossMasks: TrackMasks
    }

/// Per-track loss weights (the paper gives none: ours all 1).
type TrackWeights =
    {
        Sequence: float
        Structure: float
        Ss8: float
        Sasa: float
        Function: float
        ResidueAnnotations: float
    }

    /// All 1.
    static member Unit =
        {
            Sequence = 1.0
            Structure = 1.0
            Ss8 = 1.0
            Sasa = 1.0
            Function = 1.0
            ResidueAnnotations = 1.0
        }

/// Summed statistics of one track over validation batches.
type TrackStatistics =
    {
        /// "sequence", "structure", "ss8", "sasa", "function" or "residue".
        Track: string
        /// Σ negative log-likelihood (residue: Σ per-position mean binary cross-entropy).
        Nll: float
        /// Σ correct predictions (argmax = target; function: per slot; residue: exact label set at logit > 0).
        Correct: float
        /// Predictions counted (function: positions × 8).
        Count: float
    }

/// ESM3's masked-LM objective (ESM3-TRAINING.md §3.1–§3.4): per-track masking with the noise schedules and track
/// dropout, masked cross-entropy per track (per slot for function tokens), binary cross-entropy for residue
/// annotations, and per-track perplexity and accuracy.
module MaskedLm =

    let private rand (generator: torch.Generator) (shape: int64[]) (device: torch.Device) =
        torch.rand(shape, dtype = torch.float64, generator = generator).``to`` device

    /// Positions to hide for one track: position by position with each example's rate, or everywhere in examples
    /// whose track is dropped. Only `residues` can be hidden.
    /// Shapes: residues [B, L] bool -> [B, L] bool
    let drawMask (noise: TrackNoise) (generator: torch.Generator) (residues: torch.Tensor) =
        let b, l = residues.shape.[0], residues.shape.[1]
        let device = residues.device
        let rate = (NoiseSchedule.sample noise.Schedule generator b).``to`` device // [B]
        let drop = (rand generator [| b |] device).lt(noise.Dropout.ToScalar()) // [B]
        let u = rand generator [| b; l |] device
        residues.logical_and (u.lt(rate.unsqueeze 1L).logical_or(drop.unsqueeze 1L))

    /// Positions whose coordinates are hidden: like `drawMask`, except that with probability `spanFraction` an
    /// example hides one contiguous run of round(r·n) of its n residues (uniform start) instead.
    /// Shapes: residues [B, L] bool -> [B, L] bool
    let drawCoordinateMask
        (noise: TrackNoise)
        (spanFraction: float)
        (generator: torch.Generator)
        (residues: torch.Tensor)
        =
        let b, l = residues.shape.[0], residues.shape.[1]
        let device = residues.device
        let rate = (NoiseSchedule.sample noise.Schedule generator b).``to`` device // [B]
        let drop = (rand generator [| b |] device).lt(noise.Dropout.ToScalar())
        let useSpan = (rand generator [| b |] device).lt(spanFraction.ToScalar())
        let startU = rand generator [| b |] device
        let u = rand generator [| b; l |] device
        let iid = u.lt (rate.unsqueeze 1L)
        let real = residues.to_type torch.float64
        let n = real.sum (1L) // [B]
        let length = (rate * n).round()
        let start = (startU * (n - length + 1.0)).floor().minimum(n - length) // [B]
        let ordinal = real.cumsum (1L) - 1.0 // [B, L]

        let span =
            ordinal.ge(start.unsqueeze 1L).logical_and(ordinal.lt ((start + length).unsqueeze 1L))

        residues.logical_and (torch.where(useSpan.unsqueeze 1L, span, iid).logical_or(drop.unsqueeze 1L))

    /// The hidden positions of every track (draw order: sequence, structure, coordinates, SS8, SASA, function,
    /// residue annotations). With `NestCoordinates`, coordinates are hidden wherever structure tokens are.
    /// Shapes: residues [B, L] bool (true at real residues, false at BOS/EOS/padding) -> TrackMasks [B, L]
    let drawMasks (config: MaskingConfig) (generator: torch.Generator) (residues: torch.Tensor) : TrackMasks =
        let sequence = drawMask config.Sequence generator residues
        let structure = drawMask config.Structure generator residues

        let coordinates =
            drawCoordinateMask config.Coordinates config.CoordinateSpanFraction generator residues

        let coordinates =
            if config.NestCoordinates then
                coordinates.logical_or structure
            else
                coordinates

        {
            Sequence = sequence
            Structure = structure
            Coordinates = coordinates
            Ss8 = drawMask config.Ss8 generator residues
            Sasa = drawMask config.Sasa generator residues
            Function = drawMask config.Function generator residues
            ResidueAnnotations = drawMask config.ResidueAnnotations generator residues
        }

    /// The model's inputs: each hidden position replaced by its track's mask id (sequence 32, structure 4096,
    /// SS8/SASA/function/residue 0, coordinates NaN), per-residue pLDDT 0 where coordinates are hidden, and
    /// N(0, σ²) noise on the other coordinates (drawn only when σ > 0). Everything else passes through unchanged.
    /// Shapes: clean tracks [B, L, …], masks [B, L] -> tracks [B, L, …]
    let hide
        (clean: MultiTrackInput)
        (masked: TrackMasks)
        (coordinateNoise: float)
        (generator: torch.Generator)
        : MultiTrackInput =
        let fill (id: int64) (mask: torch.Tensor) (t: torch.Tensor) =
            let mask = if t.dim () > mask.dim () then mask.unsqueeze -1L else mask
            t.masked_fill (mask, id.ToScalar())

        let coords = clean.Coordinates

        let noisy =
            if coordinateNoise > 0.0 then
                let noise =
                    torch.randn(coords.shape, dtype = coords.dtype, generator = generator).``to`` coords.device

                coords + noise * coordinateNoise
            else
                coords

        { clean with
            Sequence = fill SequenceTokenizer.Mask masked.Sequence clean.Sequence
            Structure = fill StructureTokens.Mask masked.Structure clean.Structure
            Ss8 = fill Tracks.Absent masked.Ss8 clean.Ss8
            Sasa = fill Tracks.Absent masked.Sasa clean.Sasa
            Function = fill Tracks.Absent masked.Function clean.Function
            ResidueAnnotations = fill Tracks.Absent masked.ResidueAnnotations clean.ResidueAnnotations
            Coordinates = noisy.masked_fill (masked.Coordinates.unsqueeze(-1L).unsqueeze(-1L), Double.NaN)
            PerResiduePlddt = clean.PerResiduePlddt.masked_fill (masked.Coordinates, (0.0).ToScalar())
        }

    /// The hidden positions that have a real label: sequence ids 4 … 28 (the 25 residue letters), structure codes
    /// 0 … 4095, SS8/SASA ids ≥ 3, function and residue annotations with any non-zero slot (0 everywhere means the
    /// protein has no annotation).
    /// Shapes: targets [B, L, …], masked [B, L] -> TrackMasks [B, L]
    let lossMasks (targets: MultiTrackInput) (masked: TrackMasks) : TrackMasks =
        let between (lo: int64) (hi: int64) (t: torch.Tensor) =
            t.ge(lo.ToScalar()).logical_and(t.le (hi.ToScalar()))

        let anySlot (t: torch.Tensor) = t.ne(Tracks.Absent.ToScalar()).any(-1L)

        {
            Sequence = masked.Sequence.logical_and (between 4L 28L targets.Sequence)
            Structure = masked.Structure.logical_and (between 0L (StructureTokens.CodebookSize - 1L) targets.Structure)
            Coordinates = masked.Coordinates
            Ss8 = masked.Ss8.logical_and (between Tracks.FirstLabel (Tracks.Ss8Vocabulary - 1L) targets.Ss8)
            Sasa = masked.Sasa.logical_and (between Tracks.FirstLabel (Tracks.SasaVocabulary - 1L) targets.Sasa)
            Function = masked.Function.logical_and (anySlot targets.Function)
            ResidueAnnotations = masked.ResidueAnnotations.logical_and (anySlot targets.ResidueAnnotations)
        }

    /// Masks a clean batch (see `drawMasks`, `hide`, `lossMasks`).
    /// Shapes: clean tracks [B, L, …], residues [B, L] bool -> MaskedBatch
    let mask
        (config: MaskingConfig)
        (generator: torch.Generator)
        (clean: MultiTrackInput)
        (residues: torch.Tensor)
        : MaskedBatch =
        let masked = drawMasks config generator residues

        {
            Inputs = hide clean masked config.CoordinateNoise generator
            Targets = clean
            Masked = masked
            LossMasks = lossMasks clean masked
        }

    /// Per-position negative log-likelihood of `targets` where `mask` holds, 0 elsewhere (whatever the logits or
    /// targets hold there). Shapes: logits [*, C], targets [*] int64, mask [*] bool -> [*]
    let maskedNll (logits: torch.Tensor) (targets: torch.Tensor) (mask: torch.Tensor) =
        let c = logits.shape.[logits.shape.Length - 1]

        let safe =
            targets.masked_fill(mask.logical_not (), (0L).ToScalar()).clamp((0L).ToScalar(), (c - 1L).ToScalar())

        let nll = -(logits.log_softmax(-1L).gather(-1L, safe.unsqueeze -1L).squeeze(-1L))

        torch.where (mask, nll, torch.zeros_like nll)

    /// Mean cross-entropy over the masked positions (0, still attached to the logits, when none is masked).
    /// Shapes: logits [*, C], targets [*] int64, mask [*] bool -> []
    let maskedCrossEntropy (logits: torch.Tensor) (targets: torch.Tensor) (mask: torch.Tensor) =
        let count = mask.to_type(logits.dtype).sum().clamp_min(1.0.ToScalar())
        (maskedNll logits targets mask).sum() / count

    /// Multi-hot targets of residue annotations: 1 at every id a slot holds, except id 0.
    /// Shapes: ids [*, 16] int64 -> [*, 1478] in `dtype`
    let residueTargets (dtype: torch.ScalarType) (ids: torch.Tensor) =
        let shape =
            Array.append (ids.shape.[.. ids.shape.Length - 2]) [| Tracks.ResidueVocabulary |]

        let ones = torch.ones (ids.shape, dtype = dtype, device = ids.device)

        let hot =
            torch.zeros(shape, dtype = dtype, device = ids.device).scatter(-1L, ids, ones)

        hot.narrow(-1L, 0L, 1L).zero_() |> ignore
        hot

    /// Per-position binary cross-entropy (mean over the 1478 labels) where `mask` holds, 0 elsewhere.
    /// Shapes: logits [*, 1478], ids [*, 16], mask [*] -> [*]
    let maskedBce (logits: torch.Tensor) (ids: torch.Tensor) (mask: torch.Tensor) =
        let y = residueTargets logits.dtype ids
        let safeLogits = torch.where (mask.unsqueeze -1L, logits, torch.zeros_like logits)
        let bce = (torch.nn.functional.softplus safeLogits - safeLogits * y).mean([| -1L |])
        torch.where (mask, bce, torch.zeros_like bce)

    /// The per-track losses (each a mean over its loss mask) and their weighted sum.
    /// Shapes: output logits [B, L, …], batch [B, L, …] -> [], (name, []) × 6
    let losses (weights: TrackWeights) (output: MultiTrackOutput) (batch: MaskedBatch) =
        let t, m = batch.Targets, batch.LossMasks

        let slots (mask: torch.Tensor) =
            mask.unsqueeze(-1L).expand_as t.Function

        let residue =
            let count =
                m.ResidueAnnotations.to_type(output.ResidueLogits.dtype).sum().clamp_min(1.0.ToScalar())

            (maskedBce output.ResidueLogits t.ResidueAnnotations m.ResidueAnnotations).sum()
            / count

        let terms =
            [|
                "sequence", maskedCrossEntropy output.SequenceLogits t.Sequence m.Sequence, weights.Sequence
                "structure", maskedCrossEntropy output.StructureLogits t.Structure m.Structure, weights.Structure
                "ss8", maskedCrossEntropy output.Ss8Logits t.Ss8 m.Ss8, weights.Ss8
                "sasa", maskedCrossEntropy output.SasaLogits t.Sasa m.Sasa, weights.Sasa
                "function", maskedCrossEntropy output.FunctionLogits t.Function (slots m.Function), weights.Function
                "residue", residue, weights.ResidueAnnotations
            |]

        let total =
            terms
            |> Array.map (fun (_, loss, w) -> loss * w)
            |> Array.reduce (fun a b -> a + b)

        total, terms |> Array.map (fun (name, loss, _) -> name, loss)

    let private ceStatistics (track: string) (logits: torch.Tensor) (targets: torch.Tensor) (mask: torch.Tensor) =
        let nll = maskedNll logits targets mask
        let predicted = logits.argmax (-1L)
        let correct = predicted.eq(targets).logical_and mask

        {
            Track = track
            Nll = nll.sum().ToDouble()
            Correct = correct.sum().ToDouble()
            Count = mask.sum().ToDouble()
        }

    /// Summed statistics of every track on one masked batch.
    /// Shapes: output logits [B, L, …], batch [B, L, …] -> 6 records
    let statistics (output: MultiTrackOutput) (batch: MaskedBatch) : TrackStatistics[] =
        let t, m = batch.Targets, batch.LossMasks
        let slots = m.Function.unsqueeze(-1L).expand_as t.Function

        let residue =
            let mask = m.ResidueAnnotations
            let y = residueTargets output.ResidueLogits.dtype t.ResidueAnnotations

            let exact =
                output.ResidueLogits.gt(0.0.ToScalar()).eq(y.gt (0.5.ToScalar())).all(-1L)

            {
                Track = "residue"
                Nll = (maskedBce output.ResidueLogits t.ResidueAnnotations mask).sum().ToDouble()
                Correct = exact.logical_and(mask).sum().ToDouble()
                Count = mask.sum().ToDouble()
            }

        [|
            ceStatistics "sequence" output.SequenceLogits t.Sequence m.Sequence
            ceStatistics "structure" output.StructureLogits t.Structure m.Structure
            ceStatistics "ss8" output.Ss8Logits t.Ss8 m.Ss8
            ceStatistics "sasa" output.SasaLogits t.Sasa m.Sasa
            ceStatistics "function" output.FunctionLogits t.Function slots
            residue
        |]

    /// Adds statistics track by track (same order).
    let addStatistics (a: TrackStatistics[]) (b: TrackStatistics[]) =
        Array.map2
            (fun (x: TrackStatistics) (y: TrackStatistics) ->
                { x with
                    Nll = x.Nll + y.Nll
                    Correct = x.Correct + y.Correct
                    Count = x.Count + y.Count
                })
            a
            b

    /// Metrics from summed statistics: for the categorical tracks `<track>_perplexity` = exp(mean NLL) and
    /// `<track>_accuracy`; for residue annotations `residue_bce` and `residue_exact`. Tracks with nothing counted
    /// are left out.
    let metrics (stats: TrackStatistics[]) : (string * float)[] =
        [|
            for s in stats do
                if s.Count > 0.0 then
                    if s.Track = "residue" then
                        yield "residue_bce", s.Nll / s.Count
                        yield "residue_exact", s.Correct / s.Count
                    else
                        yield s.Track + "_perplexity", Math.Exp(s.Nll / s.Count)
                        yield s.Track + "_accuracy", s.Correct / s.Count
        |]
