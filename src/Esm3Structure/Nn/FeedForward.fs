namespace Esm3Structure.Nn

open System
open TorchSharp
open TorchSharp.Modules
open Esm3Structure.Tensors

/// The kinds of feed-forward network ESM uses.
type FeedForwardKind =
    /// LayerNorm → Linear(d, 2F) → SiLU(first half) ⊙ second half → Linear(F, d). ESM3 trunk, encoder, decoder.
    | SwiGlu = 0
    /// LayerNorm → Linear(d, r·d) → GELU (exact erf) → Linear(r·d, d). ESM's function-token decoder.
    | Gelu = 1

/// Settings of a feed-forward sub-layer.
type FeedForwardConfig =
    {
        DModel: int64
        /// Hidden width ratio r (ESM3 trunk 8/3, encoder 4).
        ExpansionRatio: float
        /// Biases in the two linear layers (the LayerNorm always has one, as in ESM).
        Bias: bool
        Kind: FeedForwardKind
    }

/// Presets of `FeedForwardConfig`.
module FeedForwardConfig =

    /// ESM3's trunk feed-forward (d 1536, r 8/3, no biases, SwiGLU).
    let esm3 =
        {
            DModel = 1536L
            ExpansionRatio = 8.0 / 3.0
            Bias = false
            Kind = FeedForwardKind.SwiGlu
        }

/// The parameter-free SwiGLU gate: SiLU(x₁) ⊙ x₂ where [x₁ | x₂] = x split in halves.
type SwiGluGate() =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("SwiGLU")

    /// Shapes: [*, 2F] -> [*, F]
    override _.forward(x: torch.Tensor) =
        let halves = x.chunk (2L, -1L)
        torch.nn.functional.silu halves.[0] * halves.[1]

module FeedForward =

    /// ESM's SwiGLU hidden width: 256·floor((r·d + 255)/256), i.e. r·d rounded up to a multiple of 256
    /// (ESM3-REFERENCE.md §3.3: 1536 → 4096, 1280 → 3584, 1024 with r = 4 → 4096).
    let swigluHidden (ratio: float) (dModel: int64) =
        256L * int64 (Math.Floor((ratio * float dModel + 255.0) / 256.0))

    /// The hidden width of either kind (GELU: int(r·d), as ESM).
    let hidden (config: FeedForwardConfig) =
        match config.Kind with
        | FeedForwardKind.Gelu -> int64 (config.ExpansionRatio * float config.DModel)
        | _ -> swigluHidden config.ExpansionRatio config.DModel

    /// The feed-forward network as ESM's `nn.Sequential` (keys `0.weight`, `0.bias` (LayerNorm), `1.weight`
    /// [2F or F, d], `3.weight` [d, F], plus `1.bias`, `3.bias` when biased; index 2 is the activation).
    /// Shapes: [*, d] -> [*, d]
    let create (config: FeedForwardConfig) : torch.nn.Module<torch.Tensor, torch.Tensor> =
        let d, f = config.DModel, hidden config
        let m (x: torch.nn.Module<torch.Tensor, torch.Tensor>) = x

        match config.Kind with
        | FeedForwardKind.Gelu ->
            torch.nn.Sequential(
                ("0", m (torch.nn.LayerNorm([| d |], 1e-5))),
                ("1", m (torch.nn.Linear(d, f, hasBias = config.Bias))),
                ("2", m (torch.nn.GELU())),
                ("3", m (torch.nn.Linear(f, d, hasBias = config.Bias)))
            )
        | _ ->
            torch.nn.Sequential(
                ("0", m (torch.nn.LayerNorm([| d |], 1e-5))),
                ("1", m (torch.nn.Linear(d, 2L * f, hasBias = config.Bias))),
                ("2", m (new SwiGluGate())),
                ("3", m (torch.nn.Linear(f, d, hasBias = config.Bias)))
            )

    /// Initialises a network made by `create` by PyTorch's defaults: the LayerNorm weight 1 and bias 0, the two
    /// linear layers uniform in ±1/sqrt(fan_in) (biases 0), in key order.
    let initialise (generator: torch.Generator) (ffn: torch.nn.Module<torch.Tensor, torch.Tensor>) =
        match ffn with
        | :? Sequential as s when s.Count = 4 ->
            Init.layerNorm (s.[0] :?> LayerNorm)
            Init.linear generator (s.[1] :?> Linear)
            Init.linear generator (s.[3] :?> Linear)
        | _ -> raise (ArgumentException("expected a feed-forward network made by FeedForward.create", "ffn"))
