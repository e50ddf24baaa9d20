namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// A small causal (next-token) language model over protein sequences, built from ESM's blocks.
type CausalLmConfig =
    {
        DModel: int64
        Heads: int64
        Layers: int
        ExpansionRatio: float
        /// Tokens per training window (the attention span).
        Context: int64
    }

/// Presets and checks of `CausalLmConfig`.
module CausalLmConfig =

    /// The CPU-sized model: d 128, 4 heads, 2 layers, SwiGLU ratio 8/3, context 256.
    let small =
        {
            DModel = 128L
            Heads = 4L
            Layers = 2
            ExpansionRatio = 8.0 / 3.0
            Context = 256L
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: CausalLmConfig) =
        [
            if c.DModel <= 0L then
                sprintf "DModel must be positive (got %d)" c.DModel
            if c.Heads <= 0L || c.DModel % c.Heads <> 0L then
                sprintf "Heads (%d) must be positive and divide DModel (%d)" c.Heads c.DModel
            elif (c.DModel / c.Heads) % 2L <> 0L then
                "the head width DModel / Heads must be even (rotary embedding)"
            if c.Layers < 1 then
                sprintf "Layers must be at least 1 (got %d)" c.Layers
            if not (c.ExpansionRatio > 0.0 && c.ExpansionRatio < infinity) then
                sprintf "ExpansionRatio must be positive and finite (got %g)" c.ExpansionRatio
            if c.Context < 1L then
                sprintf "Context must be at least 1 (got %d)" c.Context
        ]
        |> Validation.ofErrors c

/// Token embedding (ESM's 64-wide sequence vocabulary) → ESM transformer stack with a causal mask and rotary
/// positions → linear head over the vocabulary.
type CausalLm(config: CausalLmConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("CausalLm")

    do Validation.check "causal LM" (CausalLmConfig.validate config) |> ignore

    let embed = torch.nn.Embedding(SequenceTokenizer.EmbeddingWidth, config.DModel)

    let transformer =
        new TransformerStack(
            { TransformerStackConfig.esm3 with
                DModel = config.DModel
                Heads = config.Heads
                Layers = config.Layers
                ExpansionRatio = config.ExpansionRatio
                ScaleResidue = false
                GeometricLayers = 0
            }
        )

    let head = torch.nn.Linear(config.DModel, SequenceTokenizer.EmbeddingWidth)

    do this.RegisterComponents()

    member _.Config = config

    /// PyTorch's defaults, in key order: `embed` N(0, 1), the trunk's own rules, `head` uniform in ±1/sqrt(d) with
    /// bias 0 (training then sets the bias to the unigram log-probabilities, `SetOutputBias`).
    interface IInitialise with
        member _.Initialise generator =
            Init.embedding generator embed
            Init.initialise generator transformer
            Init.linear generator head

    /// Sets the output bias to the given log-probabilities (e.g. the unigram distribution) so that training
    /// starts from the unigram model. Non-finite entries become −30. Shapes: logProbs [64]
    member _.SetOutputBias(logProbs: float[]) =
        if int64 logProbs.Length <> SequenceTokenizer.EmbeddingWidth then
            raise (
                ArgumentException(
                    sprintf "expected %d log-probabilities, got %d" SequenceTokenizer.EmbeddingWidth logProbs.Length
                )
            )

        let finite =
            logProbs |> Array.map (fun v -> if Double.IsFinite v then float32 v else -30.0f)

        use _ = torch.no_grad ()
        head.bias.copy_ (torch.tensor finite) |> ignore

    /// Next-token logits. Shapes: tokens [B, L] int64 -> [B, L, 64]
    override _.forward(tokens: torch.Tensor) =
        Shape.expect "tokens" [| -1L; -1L |] tokens
        let l = tokens.shape.[1]
        let mask = AttentionMask.Allowed(AttentionMask.causal l l tokens.device)
        head.forward (transformer.forward (embed.forward tokens, BlockContext.Plain mask))

/// Saving and loading `CausalLm`s as safetensors (the state_dict's keys, no prefix).
module CausalLmCheckpoint =

    /// Saves the state dict atomically; the metadata records what shapes cannot tell (heads, the SwiGLU ratio, the
    /// context).
    let save (path: string) (model: CausalLm) =
        let c = model.Config

        Checkpoint.save
            path
            model
            (readOnlyDict
                [
                    "format", "causal-lm"
                    "heads", string c.Heads
                    "expansion_ratio", c.ExpansionRatio.ToString("R", Globalization.CultureInfo.InvariantCulture)
                    "context", string c.Context
                ])

    /// Loads a file `save` wrote: d from `embed.weight` [64, d], layers from the highest `transformer.blocks.{i}` + 1,
    /// heads from the metadata (required), SwiGLU ratio and context from the metadata (defaults: the small preset's),
    /// then a strict load. A file that is not such a model raises an `InputException` naming it and the tensor or
    /// field. float32, CPU, eval mode.
    let load (path: string) : CausalLm =
        let header = TensorFile.readHeader path
        let embedKey = "embed.weight"

        let d =
            match header.Shapes |> List.tryFind (fst >> (=) embedKey) with
            | Some(_, [| _; d |]) -> d
            | Some(_, shape) ->
                InputError.raise
                    path
                    (InputLocation.Field embedKey)
                    (sprintf "expected [%d, d], got shape %s" SequenceTokenizer.EmbeddingWidth (Shape.show shape))
            | _ ->
                InputError.raise
                    path
                    InputLocation.Whole
                    (sprintf "not a causal LM checkpoint: no '%s' among its %d tensors" embedKey header.Shapes.Length)

        let layers =
            match Checkpoint.blockCount "transformer.blocks" (List.map fst header.Shapes) with
            | Ok n -> n
            | Error key -> InputError.raise path (InputLocation.Field key) "block index out of range"

        let meta (key: string) (expected: string) (parse: string -> 'a option) (fallback: 'a) =
            CheckpointMetadata.read path header.Metadata key expected parse fallback

        let small = CausalLmConfig.small

        let config =
            {
                DModel = d
                Heads =
                    if header.Metadata.ContainsKey "heads" then
                        meta "heads" "a positive integer" CheckpointMetadata.positiveInt64 0L
                    else
                        InputError.raise
                            path
                            (CheckpointMetadata.field "heads")
                            "missing (no tensor's shape records the attention heads)"
                Layers = layers
                ExpansionRatio = meta "expansion_ratio" "a number" CheckpointMetadata.finite small.ExpansionRatio
                Context = meta "context" "a positive integer" CheckpointMetadata.positiveInt64 small.Context
            }

        match CausalLmConfig.validate config with
        | Ok _ -> ()
        | Error errors ->
            InputError.raise
                path
                InputLocation.Whole
                ("the tensors' shapes and metadata give an invalid model: "
                 + String.Join("; ", errors))

        let model = new CausalLm(config)

        try
            Checkpoint.load path model
            model.eval ()
            model
        with _ ->
            model.Dispose()
            reraise ()
