namespace Esm3Structure.Models

open System
open TorchSharp
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

    /// The CPU-sized default: d 128, 4 heads, 2 layers, context 256.
    static member Small =
        {
            DModel = 128L
            Heads = 4L
            Layers = 2
            ExpansionRatio = 8.0 / 3.0
            Context = 256L
        }

/// Token embedding (ESM's 64-wide sequence vocabulary) → ESM transformer stack with a causal mask and rotary
/// positions → linear head over the vocabulary.
type CausalLm(config: CausalLmConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("CausalLm")

    let embed = torch.nn.Embedding(SequenceTokenizer.EmbeddingWidth, config.DModel)

    let transformer =
        new TransformerStack(
            { TransformerStackConfig.Esm3 with
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
