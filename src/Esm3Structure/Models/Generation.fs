namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure.Tokenizers

/// How many positions stay masked after each step of iterative decoding (ESM's `GenerationConfig.schedule`,
/// evolutionaryscale/esm `esm/utils/noise_schedules.py`).
[<RequireQualifiedAccess>]
type UnmaskSchedule =
    /// cos(π t / 2), MaskGIT's schedule (ESM's default).
    | Cosine
    /// 1 − t.
    | Linear

/// Which masked positions a step unmasks (ESM's `GenerationConfig.strategy`).
[<RequireQualifiedAccess>]
type UnmaskStrategy =
    /// The right number of masked positions, drawn at random (ESM's default).
    | Random
    /// The masked positions whose predicted distribution has the lowest entropy.
    | Entropy

/// The deterministic pieces of ESM3's iterative decoding (evolutionaryscale/esm `esm/utils/generation.py` and
/// `esm/utils/sampling.py`), number for number: how many positions a step unmasks, which ones the entropy strategy
/// picks, the annealed temperature, top-p filtering and sampling with invalid ids masked. Parity with ESM's own
/// functions: `Reference/generation` in the tests.
module Generation =

    /// The fraction of the positions to sample that stays masked after the fraction `t` ∈ [0, 1] of the steps,
    /// computed as ESM computes it: on a float32 scalar tensor.
    let maskedFraction (schedule: UnmaskSchedule) (t: float32) : float32 =
        use _ = torch.NewDisposeScope()
        // A one-element tensor: TorchSharp's scalar overload goes through a complex copy (and warns).
        use x = torch.tensor ([| t |], dtype = torch.float32)

        let y =
            match schedule with
            | UnmaskSchedule.Cosine -> (x * Math.PI * 0.5).cos()
            | UnmaskSchedule.Linear -> 1.0f - x

        y.ToSingle()

    /// The number of positions step `step` (0-based) of `steps` unmasks, when `stillMasked` of the `total`
    /// positions to sample are masked before it: `stillMasked − ⌊fraction((step + 1) / steps) · total + 0.1⌋` in float32
    /// (ESM's `_get_iterative_sampling_mask_for_prompt_and_step`; the 0.1 guards against a product just below an
    /// integer). The last step unmasks every remaining position.
    let unmaskCount (schedule: UnmaskSchedule) (stillMasked: int) (total: int) (step: int) (steps: int) : int =
        if steps < 1 || step < 0 || step >= steps then
            raise (ArgumentOutOfRangeException("step", sprintf "step %d of %d steps" step steps))

        // ESM: torch.tensor((step + 1) / num_steps) — a Python float rounded to float32.
        let t = float32 (float (step + 1) / float steps)
        let remaining = maskedFraction schedule t * float32 total + 0.1f
        stillMasked - int remaining

    /// ESM's annealed temperature at step `step` of `steps` from `initial`: max(initial − step / max(1, steps − 1),
    /// 0.001)² (`_get_annealed_temperature`, in float64 as Python computes it).
    let annealedTemperature (step: int) (steps: int) (initial: float) : float =
        let ratio = float step / float (max 1 (steps - 1))
        let t = max (initial - ratio) 0.001
        t * t

    /// Top-p (nucleus) filtering as ESM's `top_p_logits`: per row, the logits sorted in descending order keep those
    /// whose cumulative softmax is ≤ p (the largest always), the others become float32's lowest value. A new tensor.
    /// Shapes: logits [..., V], p [...] (one per row) -> [..., V]
    let topP (logits: torch.Tensor) (p: torch.Tensor) : torch.Tensor =
        use _ = torch.NewDisposeScope()
        let batch = logits.shape.[.. logits.shape.Length - 2]
        let flat = logits.reshape (-1L, logits.shape.[logits.shape.Length - 1])
        let pRows = p.to_type(logits.dtype).expand(batch).reshape(-1L)
        let struct (sorted, order) = flat.sort (-1L, true)
        let keepSorted = sorted.softmax(-1L).cumsum(-1L).le(pRows.unsqueeze 1L)
        keepSorted.select(1L, 0L).fill_(true.ToScalar()) |> ignore
        // Back to vocabulary order: token order[r, k] is kept when keepSorted[r, k] is.
        let keep = torch.zeros_like(keepSorted).scatter_(1L, order, keepSorted)

        let lowest =
            if logits.dtype = torch.float64 then
                Double.MinValue.ToScalar()
            else
                (float Single.MinValue).ToScalar()

        torch.where(keep, flat, torch.full_like (flat, lowest)).reshape(logits.shape).MoveToOuterDisposeScope()

    /// The logits with every id outside `valid` set to −∞ (ESM's `sample_logits` masking). Shapes: [..., V] -> [..., V]
    let maskInvalid (logits: torch.Tensor) (valid: int64[]) : torch.Tensor =
        if valid.Length = 0 then
            raise (ArgumentException("no valid ids to sample from", "valid"))

        use _ = torch.NewDisposeScope()
        let v = logits.shape.[logits.shape.Length - 1]

        let allowed =
            torch.zeros ([| v |], dtype = torch.ScalarType.Bool, device = logits.device)

        allowed.index_fill_ (0L, torch.tensor (valid, device = logits.device), true.ToScalar())
        |> ignore

        logits.masked_fill(allowed.logical_not (), Double.NegativeInfinity.ToScalar()).MoveToOuterDisposeScope()

    /// The logits ESM's `sample_logits` draws from, and its entropy strategy ranks: top-p filtered when p < 1, then
    /// every id outside `valid` at −∞ (ESM modifies its logits in place, so its entropies see both).
    /// Shapes: [..., V] -> [..., V]
    let filter (logits: torch.Tensor) (valid: int64[]) (p: float) : torch.Tensor =
        if not (p > 0.0 && p <= 1.0) then
            raise (ArgumentOutOfRangeException("p", sprintf "top-p %g is outside (0, 1]" p))

        use _ = torch.NewDisposeScope()

        let filtered =
            if p < 1.0 then
                topP logits (torch.tensor (p, dtype = logits.dtype, device = logits.device))
            else
                logits

        (maskInvalid filtered valid).MoveToOuterDisposeScope()

    /// One id per position from filtered logits: the argmax at temperature 0 (ESM's convention), else a draw from
    /// softmax(logits / temperature) with `generator`. Shapes: [..., V] -> [...] int64
    let draw (filtered: torch.Tensor) (temperature: float) (generator: torch.Generator) : torch.Tensor =
        if temperature < 0.0 || Double.IsNaN temperature || Double.IsInfinity temperature then
            raise (ArgumentOutOfRangeException("temperature", sprintf "temperature %g (0 means argmax)" temperature))

        use _ = torch.NewDisposeScope()

        let ids =
            if temperature = 0.0 then
                filtered.argmax (-1L)
            else
                let v = filtered.shape.[filtered.shape.Length - 1]
                let probs = (filtered / temperature).softmax(-1L).reshape(-1L, v)

                torch
                    .multinomial(probs, 1L, generator = generator)
                    .squeeze(1L)
                    .reshape(filtered.shape.[.. filtered.shape.Length - 2])

        ids.MoveToOuterDisposeScope()

    /// One id per position as ESM's `sample_logits`: `filter`, then `draw`. Shapes: logits [..., V] -> [...] int64
    let sample
        (logits: torch.Tensor)
        (temperature: float)
        (valid: int64[])
        (p: float)
        (generator: torch.Generator)
        : torch.Tensor =
        use _ = torch.NewDisposeScope()
        (draw (filter logits valid p) temperature generator).MoveToOuterDisposeScope()

    /// The entropy of each position's predicted distribution, −Σ p log p with p = softmax(logits) (ESM's
    /// `Categorical(logits=log_probs).entropy()`; −∞ logits contribute 0). Shapes: [..., V] -> [...]
    let entropy (logits: torch.Tensor) : torch.Tensor =
        use _ = torch.NewDisposeScope()
        let logp = logits.log_softmax (-1L)
        let p = logp.exp ()
        (torch.where(p.gt (0.0.ToScalar()), p * logp, torch.zeros_like p).sum(-1L).neg()).MoveToOuterDisposeScope()

    /// The `count` positions of `candidates` with the lowest `entropy` (ESM's entropy strategy: positions outside the
    /// candidates count as float's largest value; ties go to the lower position).
    /// Shapes: entropy [B, L], candidates [B, L] bool -> [B, L] bool
    let lowestEntropy (entropy: torch.Tensor) (candidates: torch.Tensor) (count: int) : torch.Tensor =
        use _ = torch.NewDisposeScope()
        let l = entropy.shape.[1]

        let big =
            if entropy.dtype = torch.float64 then
                Double.MaxValue.ToScalar()
            else
                Single.MaxValue.ToScalar()

        let scores = entropy.masked_fill (candidates.logical_not (), big)
        // A stable ascending sort: equal scores keep position order.
        let struct (_, order) = scores.sort (-1L, false, true)
        let picked = order.narrow (1L, 0L, int64 (max 0 (min count (int l))))

        let chosen =
            torch.zeros_like(candidates).scatter_(1L, picked, torch.ones_like (picked, dtype = torch.ScalarType.Bool))

        (chosen.logical_and candidates).MoveToOuterDisposeScope()

/// The track an iterative decode fills.
[<RequireQualifiedAccess>]
type GenerationTrack =
    | Sequence
    | Structure
    | Ss8
    | Sasa

/// ESM's `GenerationConfig` (evolutionaryscale/esm `esm/sdk/api.py`), with its defaults in `GenerationConfig.esm3`.
type GenerationConfig =
    {
        Track: GenerationTrack
        /// Decoding steps; lowered to the number of masked positions when there are fewer (as ESM does).
        Steps: int
        Schedule: UnmaskSchedule
        Strategy: UnmaskStrategy
        /// 0 means argmax.
        Temperature: float
        /// Anneal the temperature over the steps (`Generation.annealedTemperature`).
        TemperatureAnnealing: bool
        /// Nucleus filtering, in (0, 1]; 1 keeps every id.
        TopP: float
        /// Ids never drawn, beyond the track's special ids.
        InvalidIds: int64[]
        /// With coordinates in the prompt, hide its structure tokens (ESM: the coordinates alone condition).
        ConditionOnCoordinatesOnly: bool
    }

/// Presets of `GenerationConfig`.
module GenerationConfig =

    /// ESM's defaults for `track`: 20 steps, cosine schedule, random strategy, temperature 1 annealed, top-p 1, no
    /// invalid ids, conditioning on coordinates only.
    let esm3 (track: GenerationTrack) =
        {
            Track = track
            Steps = 20
            Schedule = UnmaskSchedule.Cosine
            Strategy = UnmaskStrategy.Random
            Temperature = 1.0
            TemperatureAnnealing = true
            TopP = 1.0
            InvalidIds = [||]
            ConditionOnCoordinatesOnly = true
        }

/// ESM3's iterative decoding on `MultiTrackModel` (ESM's `iterative_sampling_tokens` for one prompt).
module IterativeDecoding =

    /// The track's MASK id and the ids a decode may draw: ESM's `all_token_ids − special_token_ids` of the track's
    /// tokenizer (sequence: the 27 residue letters and gap symbols 4–30; structure: the 4096 codes; SS8 and SASA:
    /// the labels after `<pad>`, `<motif>`, `<unk>`), less `invalid`.
    let trackIds (track: GenerationTrack) (invalid: int64[]) : int64 * int64[] =
        let mask, ids =
            match track with
            | GenerationTrack.Sequence ->
                SequenceTokenizer.Mask,
                [|
                    for i in 0L .. SequenceTokenizer.Mask do
                        if
                            not (
                                List.contains
                                    i
                                    [
                                        SequenceTokenizer.Bos
                                        SequenceTokenizer.Pad
                                        SequenceTokenizer.Eos
                                        SequenceTokenizer.Unk
                                        SequenceTokenizer.ChainBreak
                                        SequenceTokenizer.Mask
                                    ]
                            )
                        then
                            i
                |]
            | GenerationTrack.Structure -> StructureTokens.Mask, Array.init (int StructureTokens.CodebookSize) int64
            | GenerationTrack.Ss8 -> Tracks.Absent, [| Tracks.FirstLabel .. int64 Tracks.Ss8Vocabulary - 1L |]
            | GenerationTrack.Sasa -> Tracks.Absent, [| Tracks.FirstLabel .. int64 Tracks.SasaVocabulary - 1L |]

        mask, ids |> Array.filter (fun i -> not (Array.contains i invalid))

    let private tokensOf (track: GenerationTrack) (x: MultiTrackInput) : torch.Tensor =
        match track with
        | GenerationTrack.Sequence -> x.Sequence
        | GenerationTrack.Structure -> x.Structure
        | GenerationTrack.Ss8 -> x.Ss8
        | GenerationTrack.Sasa -> x.Sasa

    let private withTokens (track: GenerationTrack) (tokens: torch.Tensor) (x: MultiTrackInput) =
        match track with
        | GenerationTrack.Sequence -> { x with Sequence = tokens }
        | GenerationTrack.Structure -> { x with Structure = tokens }
        | GenerationTrack.Ss8 -> { x with Ss8 = tokens }
        | GenerationTrack.Sasa -> { x with Sasa = tokens }

    let private logitsOf (track: GenerationTrack) (out: MultiTrackOutput) =
        match track with
        | GenerationTrack.Sequence -> out.SequenceLogits
        | GenerationTrack.Structure -> out.StructureLogits
        | GenerationTrack.Ss8 -> out.Ss8Logits
        | GenerationTrack.Sasa -> out.SasaLogits

    /// The input ESM's `ESM3.logits` builds from a prompt: average pLDDT 1, per-residue pLDDT 1 where a residue has
    /// an atom with finite coordinates, else 0; with `conditionOnCoordinatesOnly` and any finite coordinate, the
    /// structure track all MASK between BOS and EOS. Shapes: as `MultiTrackInput`, B = 1
    let modelInput (conditionOnCoordinatesOnly: bool) (prompt: MultiTrackInput) : MultiTrackInput =
        let finite = prompt.Coordinates.isfinite().all(-1L).any(-1L)
        let l = prompt.Sequence.shape.[1]

        let structure =
            if conditionOnCoordinatesOnly && finite.any().ToBoolean() then
                let s = torch.full_like (prompt.Structure, StructureTokens.Mask.ToScalar())
                s.select(1L, 0L).fill_(StructureTokens.Bos.ToScalar()) |> ignore
                s.select(1L, l - 1L).fill_(StructureTokens.Eos.ToScalar()) |> ignore
                s
            else
                prompt.Structure

        { prompt with
            Structure = structure
            AveragePlddt = torch.ones ([| prompt.Sequence.shape.[0]; 1L |], dtype = prompt.Coordinates.dtype)
            PerResiduePlddt = finite.to_type prompt.Coordinates.dtype
        }

    /// Fills the MASK positions of `config.Track` in `prompt` (one protein: B = 1; BOS at 0 and EOS at L − 1 are never
    /// sampled) by iterative decoding as ESM's `iterative_sampling_tokens`: each step runs the model on the current
    /// tokens, draws every position (`Generation.filter`, `Generation.draw` at the step's temperature), and keeps the
    /// draws at `Generation.unmaskCount` still-masked positions, chosen at random (`generator`) or by lowest
    /// entropy of the filtered logits. Returns the prompt with that track filled (every other track as given).
    /// Deterministic for a given generator state. A prompt without masked positions in the track, B ≠ 1, or a bad
    /// setting raises an `ArgumentException` naming it. `onStep` is called after each step with the number of steps
    /// done (for progress bars); the number of steps is min(`config.Steps`, masked positions), as in ESM.
    /// Shapes: prompt tracks [1, L] -> the same, the track's MASKs replaced
    let generateWith
        (onStep: int -> unit)
        (model: MultiTrackModel)
        (prompt: MultiTrackInput)
        (config: GenerationConfig)
        (generator: torch.Generator)
        : MultiTrackInput =
        MultiTrackInput.checkShapes prompt

        if prompt.Sequence.shape.[0] <> 1L then
            raise (
                ArgumentException(
                    sprintf "one prompt at a time (B = 1), got B = %d" prompt.Sequence.shape.[0],
                    "prompt"
                )
            )

        if config.Steps < 1 then
            raise (ArgumentOutOfRangeException("steps", sprintf "--steps must be at least 1 (got %d)" config.Steps))

        let mask, valid = trackIds config.Track config.InvalidIds
        let tokens = tokensOf config.Track prompt
        let l = tokens.shape.[1]

        let inner =
            torch.ones ([| 1L; l |], dtype = torch.ScalarType.Bool, device = tokens.device)

        inner.select(1L, 0L).fill_(false.ToScalar()) |> ignore
        inner.select(1L, l - 1L).fill_(false.ToScalar()) |> ignore
        let total = int (tokens.eq(mask.ToScalar()).logical_and(inner).sum().ToInt64())

        if total = 0 then
            raise (ArgumentException(sprintf "the %A track has no masked positions to generate" config.Track, "prompt"))

        let steps = min config.Steps total
        let input = modelInput config.ConditionOnCoordinatesOnly prompt
        let mutable current = tokens.clone ()

        use _ = torch.no_grad ()

        for step in 0 .. steps - 1 do
            use scope = torch.NewDisposeScope()
            let out = model.forward (withTokens config.Track current input)
            let filtered = Generation.filter (logitsOf config.Track out) valid config.TopP

            let temperature =
                if config.TemperatureAnnealing then
                    Generation.annealedTemperature step steps config.Temperature
                else
                    config.Temperature

            let drawn = Generation.draw filtered temperature generator
            let still = current.eq(mask.ToScalar()).logical_and inner

            let count =
                Generation.unmaskCount config.Schedule (int (still.sum().ToInt64())) total step steps

            let where =
                match config.Strategy with
                | UnmaskStrategy.Entropy -> Generation.lowestEntropy (Generation.entropy filtered) still count
                | UnmaskStrategy.Random ->
                    let positions = still.select(0L, 0L).nonzero().select(1L, 0L)
                    let order = torch.randperm (positions.shape.[0], generator = generator)
                    let picked = positions.index_select(0L, order).narrow(0L, 0L, int64 (max 0 count))
                    torch.zeros_like(still).index_fill_(1L, picked, true.ToScalar())

            let next = torch.where (where, drawn, current)
            current.Dispose()
            current <- scope.MoveToOuter next
            onStep (step + 1)

        withTokens config.Track current prompt

    /// `generateWith` without a step callback.
    /// Shapes: prompt tracks [1, L] -> the same, the track's MASKs replaced
    let generate
        (model: MultiTrackModel)
        (prompt: MultiTrackInput)
        (config: GenerationConfig)
        (generator: torch.Generator)
        =
        generateWith ignore model prompt config generator
