namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

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

    /// The codes uniform in ±1/sqrt(D) (a redraw of the constructor's N(0, 1): the rule every initialised model has
    /// trained from; a frozen codebook stays frozen).
    override _.InitialiseParameters generator =
        Init.uniformFanIn generator codebook.weight

    override _.Config = config
    override _.Codes = codebook.weight
    override _.RestartCount = restarts
    override _.MarkLoaded() = needsInit <- false

    /// Whether the data init is still pending ("needs_init"), the restart count and the `UnusedFor` tracker's state
    /// (`DeadCodeTracker.State`).
    override _.TrainingState() =
        [
            "needs_init", torch.tensor ([| (if needsInit then 1L else 0L) |], dtype = torch.int64)
            "restarts", torch.tensor ([| restarts |], dtype = torch.int64)
            yield! tracker |> Option.map (fun t -> t.State) |> Option.defaultValue []
        ]

    override _.RestoreTrainingState lookup =
        lookup "needs_init" |> Option.iter (fun t -> needsInit <- t.[0].ToInt64() <> 0L)
        lookup "restarts" |> Option.iter (fun r -> restarts <- r.[0].ToInt64())
        tracker |> Option.iter (fun t -> t.Restore lookup)

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
