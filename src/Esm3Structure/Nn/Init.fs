namespace Esm3Structure.Nn

open System
open TorchSharp

/// Deterministic parameter initialisation from an explicit generator (TorchSharp's module constructors draw
/// from the global generator, which parallel code shares). Follows PyTorch's defaults: matrices uniform in
/// ±1/sqrt(fan_in), embeddings N(0, 1), 1-D weights (norms) 1, biases 0, other 1-D parameters (per-head scales)
/// 0.
module Init =

    /// Re-initialises every parameter of `m` in place. Parameter names decide embeddings ("embed" in the name).
    let reset (generator: torch.Generator) (m: torch.nn.Module) =
        use _ = torch.no_grad ()

        for struct (name, p) in m.named_parameters () do
            // The fresh values and their temporaries are freed per parameter: left to the finalizer they held about
            // five copies of a 1.4B-parameter model (ESM3-open's build ran out of 24 GiB).
            use _ = torch.NewDisposeScope()
            let shape = p.shape

            let value =
                if shape.Length >= 2 && name.Contains "embed" then
                    torch.randn (shape, dtype = p.dtype, device = p.device, generator = generator)
                elif shape.Length >= 2 then
                    let fanIn = Array.fold (*) 1L shape.[1..]
                    let bound = 1.0 / Math.Sqrt(float fanIn)

                    (torch.rand (shape, dtype = p.dtype, device = p.device, generator = generator)
                     * 2.0
                     - 1.0)
                    * bound
                elif name.EndsWith "weight" then
                    torch.ones (shape, dtype = p.dtype, device = p.device)
                else
                    torch.zeros (shape, dtype = p.dtype, device = p.device)

            p.copy_ value |> ignore
