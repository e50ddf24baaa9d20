namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure

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

    /// A probability written as text (invariant culture), or an error naming `what`.
    let parseProbability (what: string) (text: string) : Result<float, string> =
        match
            Double.TryParse(text.Trim(), Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture)
        with
        | true, p when p >= 0.0 && p <= 1.0 -> Ok p
        | _ -> Error(sprintf "%s must be a number in [0, 1], got '%s'" what text)

    /// The schedule of a name as `name` writes it ("fixed:r" with r in [0, 1]), or an error listing the names.
    let ofName (text: string) : Result<NoiseSchedule, string> =
        let text = text.Trim().ToLowerInvariant()

        let named =
            [
                NoiseSchedule.BetaLinear30
                NoiseSchedule.Cosine
                NoiseSchedule.Cubic
                NoiseSchedule.SquareRoot
                NoiseSchedule.Linear
            ]

        match named |> List.tryFind (fun s -> name s = text) with
        | Some s -> Ok s
        | None when text.StartsWith "fixed:" ->
            parseProbability "fixed schedule rate" (text.Substring 6)
            |> Result.map NoiseSchedule.Fixed
        | None ->
            Error(
                sprintf
                    "unknown noise schedule '%s' (expected %s or fixed:r)"
                    text
                    (String.Join(", ", named |> List.map name))
            )

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

    /// The track names of `updateTrack`, in Table S6's order.
    let trackNames =
        [
            "sequence"
            "structure"
            "coordinates"
            "ss8"
            "sasa"
            "function"
            "residue-annotations"
        ]

    /// The config with one track's noise passed through `update`; the track named as in `trackNames`, else an
    /// error listing them.
    let updateTrack
        (track: string)
        (update: TrackNoise -> TrackNoise)
        (c: MaskingConfig)
        : Result<MaskingConfig, string> =
        match track.Trim().ToLowerInvariant() with
        | "sequence" -> Ok { c with Sequence = update c.Sequence }
        | "structure" ->
            Ok
                { c with
                    Structure = update c.Structure
                }
        | "coordinates" ->
            Ok
                { c with
                    Coordinates = update c.Coordinates
                }
        | "ss8" -> Ok { c with Ss8 = update c.Ss8 }
        | "sasa" -> Ok { c with Sasa = update c.Sasa }
        | "function" -> Ok { c with Function = update c.Function }
        | "residue-annotations" ->
            Ok
                { c with
                    ResidueAnnotations = update c.ResidueAnnotations
                }
        | other -> Error(sprintf "unknown track '%s' (expected %s)" other (String.Join(", ", trackNames)))

    /// The config with one track's noise set from `TRACK=SCHEDULE[/DROPOUT]` (e.g. "coordinates=linear/0.25"; the
    /// dropout kept when omitted), as `train.fsx --mask` takes it; else the error.
    let withSpec (spec: string) (c: MaskingConfig) : Result<MaskingConfig, string> =
        match spec.Split('=', 2) with
        | [| track; noise |] ->
            let scheduleText, dropoutText =
                match noise.Split('/', 2) with
                | [| schedule; dropout |] -> schedule, Some dropout
                | _ -> noise, None

            NoiseSchedule.ofName scheduleText
            |> Result.bind (fun schedule ->
                match dropoutText |> Option.map (NoiseSchedule.parseProbability "dropout") with
                | Some(Error e) -> Error e
                | Some(Ok dropout) -> Ok(schedule, Some dropout)
                | None -> Ok(schedule, None))
            |> Result.bind (fun (schedule, dropout) ->
                updateTrack
                    track
                    (fun current ->
                        {
                            Schedule = schedule
                            Dropout = defaultArg dropout current.Dropout
                        })
                    c)
        | _ -> Error "expected TRACK=SCHEDULE[/DROPOUT], e.g. coordinates=linear/0.25"

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
