namespace Esm3Structure.Nn

open System
open System.Runtime.InteropServices
open TorchSharp
open Esm3Structure.Tensors

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

/// What a quantizer returns (ESM's `(z_q, indices, commitment_loss)`).
type QuantizerOutput =
    {
        /// Straight-through quantized vectors z + sg(e − z) [*, D]: forward value the codes, gradient to z.
        Quantized: torch.Tensor
        /// Code indices [*] int64.
        Indices: torch.Tensor
        /// The loss to add to the model's: β·commitment (EMA), or the VQ loss (gradient-trained codes).
        Loss: torch.Tensor
    }

/// The ring buffer of recent encoder outputs and the per-code "unused for" counters behind
/// `RestartPolicy.UnusedFor`. Its tensors live outside dispose scopes (they persist across training steps) and are
/// not part of any state_dict.
type internal DeadCodeTracker(steps: int, capacity: int64, generator: torch.Generator) =
    let mutable unused: torch.Tensor = null
    let mutable recent: torch.Tensor = null
    let mutable filled = 0L
    let mutable position = 0L

    let keep (t: torch.Tensor) = t.DetachFromDisposeScope()

    let reset (codes: int64) (rows: torch.Tensor) =
        for t in [ unused; recent ] do
            if not (isNull t) then
                t.Dispose()

        unused <- keep (torch.zeros ([| codes |], dtype = torch.int64, device = rows.device))
        recent <- keep (torch.empty ([| capacity; rows.shape.[1] |], dtype = rows.dtype, device = rows.device))
        filled <- 0L
        position <- 0L

    let push (rows: torch.Tensor) =
        let n = rows.shape.[0]

        if n >= capacity then
            recent.copy_ (rows.narrow (0L, n - capacity, capacity)) |> ignore
            filled <- capacity
            position <- 0L
        elif n > 0L then
            let slots =
                (torch.arange (n, dtype = torch.int64, device = rows.device) + position).remainder(capacity.ToScalar())

            recent.index_copy_ (0L, slots, rows) |> ignore
            filled <- min capacity (filled + n)
            position <- (position + n) % capacity

    /// Records one training update (the batch's real rows and per-code counts) and returns the dead codes with
    /// their replacement rows, if any. Shapes: rows [N, D], counts [K] -> ([M] int64, [M, D]) option
    member _.Step(rows: torch.Tensor, counts: torch.Tensor) =
        if
            isNull unused
            || unused.shape.[0] <> counts.shape.[0]
            || recent.dtype <> rows.dtype
            || recent.shape.[1] <> rows.shape.[1]
            || recent.device.``type`` <> rows.device.``type``
        then
            reset counts.shape.[0] rows

        unused.add_((1L).ToScalar()).masked_fill_(counts.gt ((0.0).ToScalar()), (0L).ToScalar())
        |> ignore

        push rows
        let dead = unused.ge((int64 steps).ToScalar()).nonzero().squeeze(1L)

        if dead.shape.[0] = 0L || filled = 0L then
            None
        else
            unused.index_fill_ (0L, dead, 0L) |> ignore

            let replacements =
                Codebook.randomRows generator dead.shape.[0] (recent.narrow (0L, 0L, filled))

            Some(dead, replacements)

    /// Steps since each code was last selected. Shapes: -> [K] int64 (null before the first step)
    member _.Unused = unused

/// The common surface of the three codebooks: a module from z [*, D] to `QuantizerOutput`, its effective codes,
/// and dictionary lookups. `forward z` is `Quantize(z, null)`.
[<AbstractClass>]
type VectorQuantizer(name: string) =
    inherit torch.nn.Module<torch.Tensor, QuantizerOutput>(name)

    /// The configuration the quantizer was built with.
    abstract Config: QuantizerConfig

    /// The effective codes (for the reparameterised codebook, C Wᵀ + b with its gradient). Shapes: -> [K, D]
    abstract Codes: torch.Tensor

    /// Quantizes z; in training mode also learns (init, EMA update, restarts) from the rows where `mask` is true
    /// (null: every row). The loss averages over those rows only.
    /// Shapes: z [*, D], mask [*] bool | null -> Quantized [*, D], Indices [*] int64, Loss scalar
    abstract Quantize: z: torch.Tensor * mask: torch.Tensor -> QuantizerOutput

    /// Codes re-seeded so far (dead-code restarts).
    abstract RestartCount: int64

    /// ESM's `dictionary_lookup`. Shapes: indices [*] int64 -> [*, D]
    member this.DictionaryLookup(indices: torch.Tensor) = Codebook.lookup this.Codes indices

    /// ESM's `soft_codebook_lookup`. Shapes: weights [*, K] -> [*, D]
    member this.SoftCodebookLookup(weights: torch.Tensor) = Codebook.softLookup this.Codes weights

    /// Shapes: z [*, D] -> Quantized [*, D], Indices [*] int64, Loss scalar
    override this.forward(z: torch.Tensor) = this.Quantize(z, null)

/// Helpers the three codebooks share.
module internal QuantizerParts =

    /// z flattened to rows and the mask flattened alike, after shape checks.
    let flatten (config: QuantizerConfig) (z: torch.Tensor) (mask: torch.Tensor) =
        Shape.expectTrailing "z" [| config.Dim |] z

        if not (z.is_floating_point ()) then
            raise (ArgumentException(sprintf "z: expected a float tensor, got %O" z.dtype, "z"))

        let lead = Shape.batchDims 1 z

        let mask =
            match Option.ofObj mask with
            | None -> None
            | Some m ->
                Shape.expect "mask" lead m

                if m.dtype <> torch.ScalarType.Bool then
                    raise (ArgumentException(sprintf "mask: expected a bool tensor, got %O" m.dtype, "mask"))

                Some(m.reshape ([| -1L |]))

        z.reshape ([| -1L; config.Dim |]), mask, lead

    /// The rows that count (detached).
    let realRows (z_ND: torch.Tensor) (mask: torch.Tensor option) =
        match mask with
        | None -> z_ND.detach ()
        | Some m -> z_ND.detach().index_select(0L, m.nonzero().squeeze(1L))

    /// The indices of the rows that count.
    let realIndices (indices_N: torch.Tensor) (mask: torch.Tensor option) =
        match mask with
        | None -> indices_N
        | Some m -> indices_N.masked_select (m)

    /// Uniform(−bound, bound) values from an explicit generator.
    let uniform (generator: torch.Generator) (shape: int64[]) (bound: float) =
        (torch.rand (shape, generator = generator) * 2.0 - 1.0) * bound

/// ESM's `EMACodebook` (evolutionaryscale/esm `esm/layers/codebook.py`) with the training update its release
/// leaves out, reconstructed from VideoGPT (ESM3-REFERENCE.md §6.2). State-dict keys and order are ESM's:
/// `embeddings` [K, D], `N` [K], `z_avg` [K, D], all persistent buffers (ESM's `_need_init` is a plain attribute,
/// not state). At construction, as ESM: `embeddings` ~ N(0, 1) (from `generator`), `N` = 0, `z_avg` = a copy of
/// `embeddings`. A training-mode call (unless frozen): initialises the codes from the batch while every N_k is 0
/// (so a loaded checkpoint is never re-initialised), picks the nearest codes, computes β·commitment against the
/// codes *before* the update, then applies `Codebook.emaStep` and the restart policy. Without `DataInit`, N starts
/// at 1 so that the first update is well defined. Evaluation mode only quantizes.
type EmaCodebook(config: QuantizerConfig, generator: torch.Generator) as this =
    inherit VectorQuantizer("EMACodebook")

    do QuantizerConfig.check config |> ignore

    do
        if config.Kind <> QuantizerKind.Ema then
            raise (ArgumentException(sprintf "EmaCodebook needs Kind = Ema, got %O" config.Kind, "config"))

    let embeddings = torch.randn ([| config.Codes; config.Dim |], generator = generator)

    let N =
        if config.DataInit then
            torch.zeros ([| config.Codes |])
        else
            torch.ones ([| config.Codes |])

    let z_avg = embeddings.clone ()

    let tracker =
        match config.Restart with
        | UnusedFor(steps, rows) -> Some(DeadCodeTracker(steps, int64 rows, generator))
        | _ -> None

    let mutable restarts = 0L

    do this.RegisterComponents()

    /// The codes (the live buffer `embeddings`). Shapes: -> [K, D]
    member _.Embeddings = embeddings

    /// The EMA counts (the live buffer `N`). Shapes: -> [K]
    member _.Counts = N

    /// The EMA sums (the live buffer `z_avg`). Shapes: -> [K, D]
    member _.Sums = z_avg

    /// True while the next training call will initialise the codes from its batch (DataInit, and every N_k = 0).
    member _.NeedsInit =
        config.DataInit && not config.FreezeCodebook && N.max().ToDouble() = 0.0

    /// Steps since each code was last selected, under `UnusedFor` (null otherwise or before the first update).
    /// Shapes: -> [K] int64
    member _.StepsUnused =
        match tracker with
        | Some t -> t.Unused
        | None -> null

    override _.Config = config
    override _.Codes = embeddings
    override _.RestartCount = restarts

    override this.Quantize(z: torch.Tensor, mask: torch.Tensor) =
        let z_ND, mask_N, lead = QuantizerParts.flatten config z mask
        Shape.expectSameKind "z" z "embeddings" embeddings
        let learning = this.training && not config.FreezeCodebook

        if learning && this.NeedsInit then
            use _ = torch.no_grad ()
            let rows = QuantizerParts.realRows z_ND mask_N

            if rows.shape.[0] > 0L then
                let codes = Codebook.randomRows generator config.Codes rows
                embeddings.copy_ (codes) |> ignore
                z_avg.copy_ (codes) |> ignore
                N.fill_ (1.0) |> ignore

        let indices_N =
            Codebook.nearestCodes config.DistanceBudgetBytes (z_ND.detach ()) embeddings

        let e_ND = Codebook.lookup embeddings indices_N
        let loss = Codebook.commitmentLoss config.Beta z_ND e_ND mask_N

        if learning then
            use _ = torch.no_grad ()
            let rows = QuantizerParts.realRows z_ND mask_N
            let used = QuantizerParts.realIndices indices_N mask_N

            if rows.shape.[0] > 0L then
                let counts, sums = Codebook.assignmentSums config.Codes rows used None
                let n', m', e' = Codebook.emaStep config.Decay config.Epsilon N z_avg counts sums
                N.copy_ (n') |> ignore
                z_avg.copy_ (m') |> ignore
                embeddings.copy_ (e') |> ignore

                match config.Restart, tracker with
                | BelowCount threshold, _ ->
                    let dead_K = N.lt (threshold.ToScalar())
                    let deadCount = dead_K.sum().ToInt64()

                    if deadCount > 0L then
                        let fresh = Codebook.randomRows generator config.Codes rows

                        embeddings.copy_ (torch.where (dead_K.unsqueeze (1L), fresh, embeddings))
                        |> ignore

                        restarts <- restarts + deadCount
                | UnusedFor _, Some t ->
                    match t.Step(rows, counts) with
                    | Some(dead, fresh) ->
                        embeddings.index_copy_ (0L, dead, fresh) |> ignore
                        z_avg.index_copy_ (0L, dead, fresh) |> ignore
                        N.index_fill_ (0L, dead, 1.0) |> ignore
                        restarts <- restarts + dead.shape.[0]
                    | None -> ()
                | _ -> ()

        {
            Quantized = Codebook.straightThrough z (e_ND.reshape (z.shape))
            Indices = indices_N.reshape (lead)
            Loss = loss
        }

    /// ESM's constructor signature (`EMACodebook(n_codes, embedding_dim, no_random_restart=True,
    /// restart_thres=1.0, ema_decay=0.99)`) on top of the ESM3 preset.
    new
        (
            codes: int64,
            dim: int64,
            generator: torch.Generator,
            [<Optional; DefaultParameterValue(true)>] noRandomRestart: bool,
            [<Optional; DefaultParameterValue(1.0)>] restartThreshold: float,
            [<Optional; DefaultParameterValue(0.99)>] emaDecay: float
        ) =
        new EmaCodebook(
            { QuantizerConfig.esm3 with
                Codes = codes
                Dim = dim
                Decay = emaDecay
                Restart =
                    if noRandomRestart then
                        NoRestart
                    else
                        BelowCount restartThreshold
            },
            generator
        )

/// A plain learned codebook (the seed's quantizer; StructTokenBench's VanillaVQ): codes `codebook.weight` [K, D]
/// (an `nn.Embedding`, N(0, 1) from `generator`), trained by the VQ loss of `LossForm` through the straight-through
/// estimator. With `DataInit`, the first training call copies random batch rows into the codes; after loading a
/// checkpoint for further training, set `NeedsInit` to false. `UnusedFor` restarts re-seed code rows in place.
type GradientCodebook(config: QuantizerConfig, generator: torch.Generator) as this =
    inherit VectorQuantizer("GradientCodebook")

    do QuantizerConfig.check config |> ignore

    do
        if config.Kind <> QuantizerKind.Gradient then
            raise (ArgumentException(sprintf "GradientCodebook needs Kind = Gradient, got %O" config.Kind, "config"))

    let codebook = torch.nn.Embedding(config.Codes, config.Dim)

    let tracker =
        match config.Restart with
        | UnusedFor(steps, rows) -> Some(DeadCodeTracker(steps, int64 rows, generator))
        | _ -> None

    let mutable restarts = 0L
    let mutable needsInit = config.DataInit && not config.FreezeCodebook

    do this.RegisterComponents()

    do
        use _ = torch.no_grad ()

        codebook.weight.copy_ (torch.randn ([| config.Codes; config.Dim |], generator = generator))
        |> ignore

        if config.FreezeCodebook then
            codebook.weight.requires_grad <- false

    /// True while the next training call will initialise the codes from its batch.
    member _.NeedsInit
        with get () = needsInit
        and set v = needsInit <- v

    override _.Config = config
    override _.Codes = codebook.weight
    override _.RestartCount = restarts

    override this.Quantize(z: torch.Tensor, mask: torch.Tensor) =
        let z_ND, mask_N, lead = QuantizerParts.flatten config z mask
        let codes = codebook.weight
        Shape.expectSameKind "z" z "codebook.weight" codes
        let learning = this.training && not config.FreezeCodebook

        if learning && needsInit then
            use _ = torch.no_grad ()
            let rows = QuantizerParts.realRows z_ND mask_N

            if rows.shape.[0] > 0L then
                codes.copy_ (Codebook.randomRows generator config.Codes rows) |> ignore
                needsInit <- false

        let indices_N =
            Codebook.nearestCodes config.DistanceBudgetBytes (z_ND.detach ()) (codes.detach ())

        let e_ND = Codebook.lookup codes indices_N
        let loss = Codebook.vqLoss config.LossForm config.Beta z_ND e_ND mask_N

        match tracker with
        | Some t when learning ->
            use _ = torch.no_grad ()
            let rows = QuantizerParts.realRows z_ND mask_N

            if rows.shape.[0] > 0L then
                let used = QuantizerParts.realIndices indices_N mask_N
                let counts = (torch.bincount (used, minlength = config.Codes)).to_type(rows.dtype)

                match t.Step(rows, counts) with
                | Some(dead, fresh) ->
                    codes.index_copy_ (0L, dead, fresh) |> ignore
                    restarts <- restarts + dead.shape.[0]
                | None -> ()
        | _ -> ()

        {
            Quantized = Codebook.straightThrough z (e_ND.reshape (z.shape))
            Indices = indices_N.reshape (lead)
            Loss = loss
        }

/// AminoAseed's reparameterised codebook (StructTokenBench, `src/vqvae/quantizer_module.py` with
/// `use_linear_project`): a frozen base `codebook.weight` C [K, D] and a learned `linear_proj` (weight [D, D],
/// bias [D]); the effective codes are Q = C Wᵀ + b, searched and looked up with gradient to W and b, so every
/// code moves when any is trained. Base ~ N(0, 1), W and b ~ U(±1/√D) (PyTorch's defaults), all from
/// `generator`. With `DataInit` the first training call copies random batch rows into C (as StructTokenBench
/// does); `FreezeCodebook` freezes W and b too.
type ReparameterisedCodebook(config: QuantizerConfig, generator: torch.Generator) as this =
    inherit VectorQuantizer("ReparameterisedCodebook")

    do QuantizerConfig.check config |> ignore

    do
        if config.Kind <> QuantizerKind.Reparameterised then
            raise (
                ArgumentException(
                    sprintf "ReparameterisedCodebook needs Kind = Reparameterised, got %O" config.Kind,
                    "config"
                )
            )

    let codebook = torch.nn.Embedding(config.Codes, config.Dim)
    let linear_proj = torch.nn.Linear(config.Dim, config.Dim)
    let mutable needsInit = config.DataInit && not config.FreezeCodebook

    do this.RegisterComponents()

    do
        use _ = torch.no_grad ()
        let bound = 1.0 / Math.Sqrt(float config.Dim)

        codebook.weight.copy_ (torch.randn ([| config.Codes; config.Dim |], generator = generator))
        |> ignore

        codebook.weight.requires_grad <- false

        linear_proj.weight.copy_ (QuantizerParts.uniform generator [| config.Dim; config.Dim |] bound)
        |> ignore

        linear_proj.bias.copy_ (QuantizerParts.uniform generator [| config.Dim |] bound)
        |> ignore

        if config.FreezeCodebook then
            linear_proj.weight.requires_grad <- false
            linear_proj.bias.requires_grad <- false

    /// The frozen base C (`codebook.weight`). Shapes: -> [K, D]
    member _.Base = codebook.weight

    /// True while the next training call will initialise the base from its batch.
    member _.NeedsInit
        with get () = needsInit
        and set v = needsInit <- v

    override _.Config = config
    override _.Codes = linear_proj.forward (codebook.weight)
    override _.RestartCount = 0L

    override this.Quantize(z: torch.Tensor, mask: torch.Tensor) =
        let z_ND, mask_N, lead = QuantizerParts.flatten config z mask
        Shape.expectSameKind "z" z "codebook.weight" codebook.weight

        if this.training && needsInit then
            use _ = torch.no_grad ()
            let rows = QuantizerParts.realRows z_ND mask_N

            if rows.shape.[0] > 0L then
                codebook.weight.copy_ (Codebook.randomRows generator config.Codes rows)
                |> ignore

                needsInit <- false

        let codes = this.Codes

        let indices_N =
            Codebook.nearestCodes config.DistanceBudgetBytes (z_ND.detach ()) (codes.detach ())

        let e_ND = Codebook.lookup codes indices_N
        let loss = Codebook.vqLoss config.LossForm config.Beta z_ND e_ND mask_N

        {
            Quantized = Codebook.straightThrough z (e_ND.reshape (z.shape))
            Indices = indices_N.reshape (lead)
            Loss = loss
        }

/// Builds the quantizer a config asks for.
/// Finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505, their appendix A code): channel j of z is
/// bounded to (−(Lⱼ − 1)/2, (Lⱼ − 1)/2) by tanh (with a half-step shift for even Lⱼ), rounded straight-through,
/// and divided by ⌊Lⱼ/2⌋, so each channel takes Lⱼ values in [−1, 1]. The index is the mixed-radix number of the
/// rounded values (first channel least significant). There is no loss and nothing to learn; the grid of all K codes
/// is the persistent buffer `embeddings` [K, D], so `DictionaryLookup` works as for the other codebooks.
type FiniteScalarQuantizer(config: QuantizerConfig) as this =
    inherit VectorQuantizer("FiniteScalarQuantizer")

    do QuantizerConfig.check config |> ignore

    do
        if config.Kind <> QuantizerKind.Finite then
            raise (ArgumentException(sprintf "FiniteScalarQuantizer needs Kind = Finite, got %O" config.Kind, "config"))

    let levels = config.Levels |> List.map int64 |> Array.ofList

    // Mixed-radix place values: 1, L₀, L₀L₁, …
    let basis = Array.scan (*) 1L levels |> Array.truncate levels.Length

    // Per channel: ⌊L/2⌋, the half-step offset of even L, and (L − 1)(1 − ε)/2.
    let halfWidths = levels |> Array.map (fun l -> float (l / 2L))
    let offsets = levels |> Array.map (fun l -> if l % 2L = 0L then 0.5 else 0.0)

    let grid =
        Array.init (int config.Codes * levels.Length) (fun i ->
            let k, j = int64 (i / levels.Length), i % levels.Length
            let digit = (k / basis.[j]) % levels.[j]
            float32 ((float digit - halfWidths.[j]) / halfWidths.[j]))

    let embeddings = torch.tensor(grid).reshape(config.Codes, int64 levels.Length)

    do this.RegisterComponents()

    /// Values the tanh bound keeps away from the rounding edge (the paper's eps).
    static member BoundEpsilon = 1e-3

    override _.Config = config
    override _.Codes = embeddings
    override _.RestartCount = 0L

    override _.Quantize(z: torch.Tensor, mask: torch.Tensor) =
        let z_ND, _, lead = QuantizerParts.flatten config z mask
        let dev = z.device

        let channel (values: float[]) =
            torch.tensor (values, dtype = z.dtype, device = dev)

        let halfL =
            channel (
                levels
                |> Array.map (fun l -> float (l - 1L) * (1.0 - FiniteScalarQuantizer.BoundEpsilon) / 2.0)
            )

        let offset = channel offsets
        let shift = (offset / halfL).atanh()
        let bounded = (z_ND + shift).tanh() * halfL - offset
        let rounded = bounded.round ()
        let straight = bounded + (rounded - bounded).detach()
        let halfWidth = channel halfWidths
        let quantized = straight / halfWidth

        let indices =
            ((rounded.detach () + halfWidth).to_type torch.int64
             * torch.tensor (basis, device = dev))
                .sum(-1L)

        {
            Quantized = quantized.reshape (Array.append lead [| config.Dim |])
            Indices = indices.reshape lead
            Loss = torch.zeros ([||], dtype = z.dtype, device = dev)
        }

module Quantizer =

    /// A new quantizer of `config.Kind`, its random draws from `generator` (which it keeps for init and restarts).
    let create (config: QuantizerConfig) (generator: torch.Generator) : VectorQuantizer =
        match config.Kind with
        | QuantizerKind.Gradient -> new GradientCodebook(config, generator)
        | QuantizerKind.Reparameterised -> new ReparameterisedCodebook(config, generator)
        | QuantizerKind.Finite -> new FiniteScalarQuantizer(config)
        | _ -> new EmaCodebook(config, generator)

    /// Quantizes z and measures the batch (usage over the rows where `mask` is true, and quantisation error).
    /// Shapes: z [*, D], mask [*] bool | null -> output, usage
    let quantizeWithUsage (quantizer: VectorQuantizer) (z: torch.Tensor) (mask: torch.Tensor) =
        let output = quantizer.Quantize(z, mask)

        let usage =
            CodebookUsage.compute quantizer.Config.Codes z output.Quantized output.Indices (Option.ofObj mask)

        output, usage
