namespace Esm3Structure.Nn

open System
open System.Runtime.InteropServices
open TorchSharp
open Esm3Structure.Tensors

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

    /// The restart count and the `UnusedFor` tracker's state (`DeadCodeTracker.State`).
    override _.TrainingState() =
        ("restarts", torch.tensor ([| restarts |], dtype = torch.int64))
        :: (tracker |> Option.map (fun t -> t.State) |> Option.defaultValue [])

    override _.RestoreTrainingState lookup =
        lookup "restarts" |> Option.iter (fun r -> restarts <- r.[0].ToInt64())
        tracker |> Option.iter (fun t -> t.Restore lookup)

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
