namespace Esm3Structure.Nn

open TorchSharp

/// Builds the quantizer a config asks for.
module Quantizer =

    /// A new quantizer of `config.Kind`, its random draws from `generator` (which it keeps for init and restarts).
    let create (config: QuantizerConfig) (generator: torch.Generator) : VectorQuantizer =
        match config.Kind with
        | QuantizerKind.Gradient -> new GradientCodebook(config, generator)
        | QuantizerKind.Reparameterised -> new ReparameterisedCodebook(config, generator)
        | QuantizerKind.Finite -> new FiniteScalarQuantizer(config)
        | QuantizerKind.Ema when config.Groups > 1 -> new ProductCodebook(config, generator)
        | _ -> new EmaCodebook(config, generator)

    /// Quantizes z and measures the batch (usage over the rows where `mask` is true, and quantisation error).
    /// Shapes: z [*, D], mask [*] bool | null -> output, usage
    let quantizeWithUsage (quantizer: VectorQuantizer) (z: torch.Tensor) (mask: torch.Tensor) =
        let output = quantizer.Quantize(z, mask)

        let usage =
            CodebookUsage.compute quantizer.Config.Codes z output.Quantized output.Indices (Option.ofObj mask)

        output, usage
