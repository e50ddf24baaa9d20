namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// How the mask rate r of a track is drawn per example (ESM3-TRAINING.md §3.3, Table S6). With t ~ U(0, 1):
/// cosine r = cos(πt/2), cubic r = 1 − t³, square root r = 1 − √t, linear r = 1 − t (our reading of ESM's
/// `esm/utils/noise_schedules.py` names); betalinear30 r ~ Beta(3, 9) with probability 0.8, else U(0, 1).
[<RequireQualifiedAccess>]
type NoiseSchedule =
    /// Mean 0.3 (the sequence track).
    | BetaLinear30
    /// Mean 2/π ≈ 0.64 (structure tokens).
    | Cosine
    /// Mean 0.75 (coordinates).
    | Cubic
    /// Mean 1/3 (SS8, SASA, function, residue annotations).
    | SquareRoot
    /// Uniform rate, mean 0.5.
    | Linear
    /// Always this rate.
    | Fixed of rate: float

/// The schedules as pure functions of an explicit generator.
module NoiseSchedule =

    /// Probability of the Beta(3, 9) branch of betalinear30.
    [<Literal>]
    let BetaShare = 0.8

    /// The exact mean rate: 0.8·3/12 + 0.2·1/2 = 0.3, 2/π, 3/4, 1/3, 1/2, or the fixed rate.
    let mean (schedule: NoiseSchedule) =
        match schedule with
        | NoiseSchedule.BetaLinear30 -> BetaShare * 0.25 + (1.0 - BetaShare) * 0.5
        | NoiseSchedule.Cosine -> 2.0 / Math.PI
        | NoiseSchedule.Cubic -> 0.75
        | NoiseSchedule.SquareRoot -> 1.0 / 3.0
        | NoiseSchedule.Linear -> 0.5
        | NoiseSchedule.Fixed r -> r

    /// The schedule's name as Table S6 writes it ("betalinear30", "cosine", "cubic", "sqrt", "linear", "fixed:r").
    let name (schedule: NoiseSchedule) =
        match schedule with
        | NoiseSchedule.BetaLinear30 -> "betalinear30"
        | NoiseSchedule.Cosine -> "cosine"
        | NoiseSchedule.Cubic -> "cubic"
        | NoiseSchedule.SquareRoot -> "sqrt"
        | NoiseSchedule.Linear -> "linear"
        | NoiseSchedule.Fixed r -> sprintf "fixed:%g" r

    /// `n` mask rates in [0, 1], float64 on the CPU. Beta(3, 9) is drawn as X/(X + Y) with X, Y sums of 3 and 9
    /// standard exponentials (−ln U, U in (0, 1]). The generator advances by the same amount for every schedule
    /// (n·14 uniforms), so changing one track's schedule does not shift another track's draws.
    /// Shapes: -> [n] float64
    let sample (schedule: NoiseSchedule) (generator: torch.Generator) (n: int64) : torch.Tensor =
        let u = torch.rand ([| n; 14L |], dtype = torch.float64, generator = generator)
        let t = u.select (1L, 0L)

        match schedule with
        | NoiseSchedule.BetaLinear30 ->
            let e = -((1.0 - u.narrow (1L, 2L, 12L)).log()) // 12 standard exponentials
            let x = e.narrow(1L, 0L, 3L).sum(1L)
            let y = e.narrow(1L, 3L, 9L).sum(1L)
            let beta = x / (x + y)
            torch.where (u.select(1L, 1L).lt(BetaShare.ToScalar()), beta, t)
        | NoiseSchedule.Cosine -> (t * (Math.PI / 2.0)).cos()
        | NoiseSchedule.Cubic -> 1.0 - t.pow (3.0.ToScalar())
        | NoiseSchedule.SquareRoot -> 1.0 - t.sqrt ()
        | NoiseSchedule.Linear -> 1.0 - t
        | NoiseSchedule.Fixed r -> torch.full ([| n |], r.ToScalar(), dtype = torch.float64)

/// One track's noise: the mask-rate schedule and the probability that the whole track is absent for an example.
type TrackNoise =
    {
        Schedule: NoiseSchedule
        /// Whole-track dropout probability (Table S6).
        Dropout: float
    }

/// Per-track noise of masked-LM training.
type MaskingConfig =
    {
        Sequence: TrackNoise
        Structure: TrackNoise
        Coordinates: TrackNoise
        Ss8: TrackNoise
        Sasa: TrackNoise
        /// Applied per residue to all 8 function tokens at once (ESM3 A.1.8).
        Function: TrackNoise
        /// Applied per residue to all 16 slots at once.
        ResidueAnnotations: TrackNoise
        /// Probability that an example's coordinates are masked as one contiguous span (of length r·n) instead of
        /// position by position (Table S6: 0.5).
        CoordinateSpanFraction: float
        /// σ in Å of Gaussian noise on every visible input coordinate (ESM3-TRAINING.md §3.4: 0.1).
        CoordinateNoise: float
        /// Also hide the coordinates wherever the structure tokens are hidden (ours, §4.3: no leak of the answer).
        NestCoordinates: bool
    }

/// Presets and checks of `MaskingConfig`.
module MaskingConfig =

    /// Table S6 verbatim (sequence betalinear30/0, structure cosine/0.25, coordinates cubic/0.5 with spans half
    /// the time, SS8/SASA/function/residue sqrt/0.9), σ = 0.1 Å coordinate noise, coordinates nested in the
    /// structure mask. (A.1.8 says cosine for the function track's per-residue rate; Table S6 says sqrt: we follow
    /// the table.)
    let esm3 =
        let sqrt90 =
            {
                Schedule = NoiseSchedule.SquareRoot
                Dropout = 0.9
            }

        {
            Sequence =
                {
                    Schedule = NoiseSchedule.BetaLinear30
                    Dropout = 0.0
                }
            Structure =
                {
                    Schedule = NoiseSchedule.Cosine
                    Dropout = 0.25
                }
            Coordinates =
                {
                    Schedule = NoiseSchedule.Cubic
                    Dropout = 0.5
                }
            Ss8 = sqrt90
            Sasa = sqrt90
            Function = sqrt90
            ResidueAnnotations = sqrt90
            CoordinateSpanFraction = 0.5
            CoordinateNoise = 0.1
            NestCoordinates = true
        }

    /// Every track masked position by position at rate `rate`, no dropout, no spans, no coordinate noise,
    /// coordinates nested (a fixed-difficulty validation setting).
    let fixedRate (rate: float) =
        let track =
            {
                Schedule = NoiseSchedule.Fixed rate
                Dropout = 0.0
            }

        {
            Sequence = track
            Structure = track
            Coordinates = track
            Ss8 = track
            Sasa = track
            Function = track
            ResidueAnnotations = track
            CoordinateSpanFraction = 0.0
            CoordinateNoise = 0.0
            NestCoordinates = true
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: MaskingConfig) =
        let probability name (p: float) =
            if p >= 0.0 && p <= 1.0 then
                None
            else
                Some(sprintf "%s must lie in [0, 1], got %g" name p)

        [
            for name, t in
                [
                    "Sequence", c.Sequence
                    "Structure", c.Structure
                    "Coordinates", c.Coordinates
                    "Ss8", c.Ss8
                    "Sasa", c.Sasa
                    "Function", c.Function
                    "ResidueAnnotations", c.ResidueAnnotations
                ] do
                yield! Option.toList (probability (name + ".Dropout") t.Dropout)

                match t.Schedule with
                | NoiseSchedule.Fixed r -> yield! Option.toList (probability (name + ".Schedule rate") r)
                | _ -> ()
            yield! Option.toList (probability "CoordinateSpanFraction" c.CoordinateSpanFraction)
            if not (c.CoordinateNoise >= 0.0) then
                sprintf "CoordinateNoise must be ≥ 0, got %g" c.CoordinateNoise
        ]
        |> Validation.ofErrors c

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
