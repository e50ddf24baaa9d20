namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

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

    /// The base uniform in ±1/sqrt(D) and `linear_proj` PyTorch's linear default with bias 0 (a redraw of the
    /// constructor's values: the rules every initialised model has trained from; frozen parts stay frozen).
    override _.InitialiseParameters generator =
        Init.uniformFanIn generator codebook.weight
        Init.linear generator linear_proj

    override _.Config = config
    override _.Codes = linear_proj.forward (codebook.weight)
    override _.RestartCount = 0L
    override _.MarkLoaded() = needsInit <- false

    /// Whether the data init is still pending ("needs_init").
    override _.TrainingState() =
        [
            "needs_init", torch.tensor ([| (if needsInit then 1L else 0L) |], dtype = torch.int64)
        ]

    override _.RestoreTrainingState lookup =
        lookup "needs_init" |> Option.iter (fun t -> needsInit <- t.[0].ToInt64() <> 0L)

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
