namespace Esm3Structure.Nn

open System
open TorchSharp
open TorchSharp.Modules

/// A module whose parameters are initialised by explicit rules, decided where each parameter is created.
/// `Initialise` sets every parameter of the module (its own, then its children's, by their own `Initialise`) in place,
/// drawing from `generator` in the order of `named_parameters` (so one seed gives one set of values). TorchSharp's
/// constructors draw from the global generator, which parallel code shares: a model is built, then initialised once
/// from an explicit generator by its top-level owner.
type IInitialise =
    /// Sets every parameter of this module and its children in place (no autograd), drawing from `generator`.
    abstract Initialise: generator: torch.Generator -> unit

/// The initialisation rules, one per kind of parameter (PyTorch's defaults unless the owner says otherwise):
/// linear weights uniform in ±1/sqrt(fan_in) and their biases 0, embeddings N(0, 1) (a padding row 0), LayerNorm
/// weights 1 and biases 0. Each rule writes in place without autograd; the fresh values and their temporaries are
/// freed per tensor (left to the finalizer they held about five copies of a 1.4B-parameter model: ESM3-open's build
/// ran out of 24 GiB).
module Init =

    /// `value` written into `t` without autograd, the temporaries freed.
    let private write (t: torch.Tensor) (value: unit -> torch.Tensor) =
        use _ = torch.no_grad ()
        use _ = torch.NewDisposeScope()
        t.copy_ (value ()) |> ignore

    /// Uniform in ±1/sqrt(fan_in), fan_in = the product of every dimension but the first (a linear weight's input
    /// width). Shapes: t [out, in, …] (≥ 2-D)
    let uniformFanIn (generator: torch.Generator) (t: torch.Tensor) =
        if t.dim () < 2L then
            raise (ArgumentException(sprintf "uniformFanIn needs a tensor of ≥ 2 dimensions, got %d" (t.dim ()), "t"))

        let fanIn = Array.fold (*) 1L t.shape.[1..]
        let bound = 1.0 / Math.Sqrt(float fanIn)

        write t (fun () ->
            (torch.rand (t.shape, dtype = t.dtype, device = t.device, generator = generator)
             * 2.0
             - 1.0)
            * bound)

    /// Standard normal N(0, 1).
    let normal (generator: torch.Generator) (t: torch.Tensor) =
        write t (fun () -> torch.randn (t.shape, dtype = t.dtype, device = t.device, generator = generator))

    /// Every element `value` (no draw).
    let constant (value: float) (t: torch.Tensor) =
        write t (fun () -> torch.full (t.shape, value.ToScalar(), dtype = t.dtype, device = t.device))

    /// Every element 0 (no draw).
    let zeros (t: torch.Tensor) = constant 0.0 t

    /// Every element 1 (no draw).
    let ones (t: torch.Tensor) = constant 1.0 t

    /// PyTorch's `nn.Linear` default: weight uniform in ±1/sqrt(in), bias (when present) 0.
    let linear (generator: torch.Generator) (m: Linear) =
        uniformFanIn generator m.weight

        if not (isNull m.bias) then
            zeros m.bias

    /// AlphaFold2's "final" initialisation (supplement §1.11.4): weight and bias (when present) 0, no draw.
    let zeroLinear (m: Linear) =
        zeros m.weight

        if not (isNull m.bias) then
            zeros m.bias

    /// PyTorch's `nn.Embedding` default: N(0, 1).
    let embedding (generator: torch.Generator) (m: Embedding) = normal generator m.weight

    /// N(0, 1) with the padding row `row` 0 (PyTorch's `nn.Embedding(padding_idx = row)`).
    let embeddingPadded (generator: torch.Generator) (row: int64) (m: Embedding) =
        embedding generator m

        use _ = torch.no_grad ()
        m.weight.[row].zero_() |> ignore

    /// PyTorch's `nn.LayerNorm` default: weight 1, bias (when present) 0.
    let layerNorm (m: LayerNorm) =
        if not (isNull m.weight) then
            ones m.weight

        if not (isNull m.bias) then
            zeros m.bias

    /// A child module's own rules (`IInitialise.Initialise`).
    let initialise (generator: torch.Generator) (m: IInitialise) = m.Initialise generator

    /// A LayerNorm, or nothing for the identity a config put in its place (e.g. no QK LayerNorm, no final norm).
    let layerNormOrIdentity (m: torch.nn.Module) =
        match m with
        | :? LayerNorm as n -> layerNorm n
        | :? Identity -> ()
        | _ -> raise (ArgumentException(sprintf "expected a LayerNorm or an Identity, got %s" (m.GetType().Name), "m"))
