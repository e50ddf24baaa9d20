namespace Esm3Structure.Nn

open System

/// Which codebook a quantizer learns.
type QuantizerKind =
    /// ESM's `EMACodebook`: codes are exponential moving averages of their assigned encoder outputs (no gradient).
    | Ema = 0
    /// A plain learned codebook trained by the codebook loss (the seed's quantizer; StructTokenBench's VanillaVQ).
    | Gradient = 1
    /// AminoAseed (StructTokenBench): a frozen base C [K, D] and a learned linear map, codes Q = C Wᵀ + b.
    | Reparameterised = 2
    /// Finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505): each of the D channels is bounded and
    /// rounded to one of `Levels.[j]` values; the codes are the fixed grid (K = ∏ levels), nothing is learned.
    | Finite = 3

/// Dead-code re-initialisation.
type RestartPolicy =
    /// Never (ESM's released default, `no_random_restart = True`).
    | NoRestart
    /// VideoGPT's restart, ESM's `restart_thres` (EMA codebooks only): after every update, each code whose EMA
    /// count N_k is below the threshold is overwritten by a random (tiled, noised) row of the current batch; only
    /// the code changes, N and z_avg are kept. Because of that, the next update pulls a restarted code back towards
    /// its stale mean z_avg_k / N_k: from a collapsed codebook, recovery takes hundreds of steps where `UnusedFor`
    /// takes a few (see the tests).
    | BelowCount of threshold: float
    /// Codes selected by no vector for `steps` consecutive training updates are re-seeded from a ring buffer of
    /// the last `recentRows` encoder outputs (random rows; tiled with noise when the buffer holds fewer rows than
    /// dead codes). An EMA code restarts its statistics too (z_avg_k = code, N_k = 1, as the data-dependent init).
    | UnusedFor of steps: int * recentRows: int

/// Settings of a vector quantizer (ESM3-REFERENCE.md §6, ESM3-TRAINING.md §1.2).
type QuantizerConfig =
    {
        Kind: QuantizerKind
        /// Codebook size K.
        Codes: int64
        /// Code width D.
        Dim: int64
        /// Commitment weight β (ESM 0.25).
        Beta: float
        /// Where β goes in a gradient-trained quantizer's loss (EMA codebooks have only the commitment term).
        LossForm: VqLossForm
        /// EMA decay γ (ESM 0.99).
        Decay: float
        /// Laplace smoothing ε of the EMA counts (VideoGPT/ESM 1e-7).
        Epsilon: float
        Restart: RestartPolicy
        /// Initialise the codes from the first training batch (ESM's `_init_embeddings`; StructTokenBench's too).
        DataInit: bool
        /// Codes never change (ESM's `freeze_codebook`): no init, no EMA update, no restart, no gradient to codes.
        FreezeCodebook: bool
        /// Largest nearest-code distance block, in bytes (see `Codebook.nearestCodes`).
        DistanceBudgetBytes: int64
        /// Levels per channel of a `Finite` quantizer (D = their count, K = their product; the FSQ paper's 4,375
        /// codes are [7; 5; 5; 5; 5], its 1,000 [8; 5; 5; 5]). Empty for the other kinds.
        Levels: int list
        /// Product quantization: z is cut into this many slices, each with its own EMA codebook of K^(1/Groups)
        /// codes, and a token is their mixed-radix number (`ProductCodebook`). 1: one codebook (ESM's).
        Groups: int
    }

/// Presets and checks for `QuantizerConfig`.
module QuantizerConfig =

    /// ESM3's structure-token codebook: EMA, 4096 × 128, β 0.25, γ 0.99, ε 1e-7, restarts off (the released
    /// constructor's defaults), data-dependent init; distance blocks of at most 64 MiB.
    let esm3 =
        {
            Kind = QuantizerKind.Ema
            Codes = 4096L
            Dim = 128L
            Beta = 0.25
            LossForm = VqLossForm.Standard
            Decay = 0.99
            Epsilon = 1e-7
            Restart = NoRestart
            DataInit = true
            FreezeCodebook = false
            DistanceBudgetBytes = 64L * 1024L * 1024L
            Levels = []
            Groups = 1
        }

    /// Our small CPU tokenizer's codebook (ESM3-TRAINING.md §4.2): EMA 512 × 64 with VideoGPT's restart below N 1.
    let small =
        { esm3 with
            Codes = 512L
            Dim = 64L
            Restart = BelowCount 1.0
        }

    /// The AminoAseed ablation of `small` (StructTokenBench: frozen base, learned linear map, standard loss with
    /// commitment 0.25 and codebook weight 1).
    let aminoAseed =
        { small with
            Kind = QuantizerKind.Reparameterised
            Restart = NoRestart
        }

    /// A finite scalar quantizer with the given levels per channel (K = their product, D = their count), otherwise
    /// `esm3`'s settings (no restart).
    let finite (levels: int list) =
        { esm3 with
            Kind = QuantizerKind.Finite
            Levels = levels
            Codes = levels |> List.fold (fun k l -> k * int64 l) 1L
            Dim = int64 levels.Length
            Restart = NoRestart
        }

    /// The integer k with k^Groups = Codes, if there is one.
    let tryCodesPerGroup (c: QuantizerConfig) : int64 option =
        if c.Groups < 1 || c.Codes < 1L then
            None
        else
            let k = int64 (Math.Round(Math.Pow(float c.Codes, 1.0 / float c.Groups)))

            [ k - 1L; k; k + 1L ]
            |> List.tryFind (fun k -> k >= 1L && pown k c.Groups = c.Codes)

    /// Codes per group of a product quantizer (`Groups` ≥ 1; Codes must be a Groups-th power).
    let codesPerGroup (c: QuantizerConfig) : int64 =
        match tryCodesPerGroup c with
        | Some k -> k
        | None -> invalidArg "config" (sprintf "Codes %d is not a %d-th power (Groups)" c.Codes c.Groups)

    /// Rows of the recent-output ring buffer `parseRestart` gives `UnusedFor` when the text names none.
    [<Literal>]
    let DefaultRecentRows = 8192

    /// A restart policy from its text: "none", "below:T" (`BelowCount T`) or "unused:STEPS[/ROWS]" (`UnusedFor`,
    /// ROWS default `DefaultRecentRows`); an error message saying what was expected otherwise. Only the syntax and
    /// the numbers' signs are checked here; `validate` judges the policy against the codebook's kind.
    let parseRestart (text: string) : Result<RestartPolicy, string> =
        let expected =
            sprintf "'%s' is not none, below:THRESHOLD or unused:STEPS[/ROWS]" text

        match text.Trim().ToLowerInvariant().Split(':') with
        | [| "none" |] -> Ok NoRestart
        | [| "below"; t |] ->
            match Double.TryParse(t, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
            | true, v when v >= 0.0 && not (Double.IsInfinity v) -> Ok(BelowCount v)
            | _ -> Error expected
        | [| "unused"; spec |] ->
            let parts = spec.Split('/')

            let number (s: string) =
                match Int32.TryParse s with
                | true, v when v >= 1 -> Some v
                | _ -> None

            match parts |> Array.map number with
            | [| Some steps |] -> Ok(UnusedFor(steps, DefaultRecentRows))
            | [| Some steps; Some rows |] -> Ok(UnusedFor(steps, rows))
            | _ -> Error expected
        | _ -> Error expected

    /// The config, or the list of what is wrong with it (each message names the field).
    let validate (c: QuantizerConfig) : Result<QuantizerConfig, string list> =
        let finite (x: float) =
            not (Double.IsNaN x || Double.IsInfinity x)

        let errors =
            [
                if c.Kind = QuantizerKind.Finite then
                    if c.Levels.IsEmpty then
                        "Levels: a Finite quantizer needs at least one level per channel (an empty list has no codes)"
                    else
                        for l in c.Levels do
                            if l < 2 then
                                sprintf "Levels: every channel needs at least 2 levels (got %d)" l

                        let product = c.Levels |> List.fold (fun k l -> k * (max 1L (int64 l))) 1L

                        if product <> c.Codes then
                            sprintf "Levels: their product (%d) must equal Codes (%d)" product c.Codes

                        if int64 c.Levels.Length <> c.Dim then
                            sprintf "Levels: their count (%d) must equal Dim (%d)" c.Levels.Length c.Dim

                    if c.Restart <> NoRestart then
                        "Restart: a Finite quantizer has a fixed grid of codes, nothing to restart"
                elif not c.Levels.IsEmpty then
                    sprintf "Levels are for a Finite quantizer (Kind is %O)" c.Kind
                if c.Codes <= 0L then
                    sprintf "Codes must be positive, got %d" c.Codes
                if c.Groups < 1 then
                    sprintf "Groups must be at least 1, got %d" c.Groups
                elif c.Groups > 1 then
                    if c.Kind <> QuantizerKind.Ema then
                        sprintf "Groups: product quantization is built on EMA codebooks (Kind is %O)" c.Kind

                    if c.Dim % int64 c.Groups <> 0L then
                        sprintf "Groups: Dim (%d) must be a multiple of Groups (%d)" c.Dim c.Groups

                    if c.Codes > 0L && (tryCodesPerGroup c).IsNone then
                        sprintf
                            "Groups: Codes (%d) must be a %d-th power (k codes per group, K = k^%d)"
                            c.Codes
                            c.Groups
                            c.Groups
                if c.Dim <= 0L then
                    sprintf "Dim must be positive, got %d" c.Dim
                if not (finite c.Beta) || c.Beta < 0.0 then
                    sprintf "Beta must be finite and non-negative, got %g" c.Beta
                if not (c.Decay >= 0.0 && c.Decay < 1.0) then
                    sprintf "Decay must be in [0, 1), got %g" c.Decay
                if not (finite c.Epsilon) || c.Epsilon <= 0.0 then
                    sprintf "Epsilon must be finite and positive, got %g" c.Epsilon
                if c.DistanceBudgetBytes <= 0L then
                    sprintf "DistanceBudgetBytes must be positive, got %d" c.DistanceBudgetBytes
                if not (Enum.IsDefined(typeof<QuantizerKind>, c.Kind)) then
                    sprintf "Kind: unknown value %d" (int c.Kind)
                if not (Enum.IsDefined(typeof<VqLossForm>, c.LossForm)) then
                    sprintf "LossForm: unknown value %d" (int c.LossForm)
                if c.Kind = QuantizerKind.Ema && c.LossForm <> VqLossForm.Standard then
                    "LossForm: an EMA codebook has no codebook loss term to weight (use Standard)"
                match c.Restart with
                | NoRestart -> ()
                | BelowCount threshold ->
                    if c.Kind <> QuantizerKind.Ema then
                        sprintf "Restart: BelowCount needs the EMA counts N of an Ema codebook (Kind is %O)" c.Kind

                    if not (finite threshold) || threshold < 0.0 then
                        sprintf "Restart: BelowCount threshold must be finite and non-negative, got %g" threshold
                | UnusedFor(steps, rows) ->
                    if c.Kind = QuantizerKind.Reparameterised then
                        "Restart: a Reparameterised codebook has no per-code rows to re-seed (its codes are C Wᵀ + b)"

                    if steps < 1 then
                        sprintf "Restart: UnusedFor steps must be at least 1, got %d" steps

                    if rows < 1 then
                        sprintf "Restart: UnusedFor recentRows must be at least 1, got %d" rows
            ]

        if errors.IsEmpty then Ok c else Error errors

    /// The config, or an ArgumentException listing every error.
    let check (c: QuantizerConfig) =
        match validate c with
        | Ok c -> c
        | Error errors -> raise (ArgumentException("quantizer config: " + String.Join("; ", errors), "config"))
