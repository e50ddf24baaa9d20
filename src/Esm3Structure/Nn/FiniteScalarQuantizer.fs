namespace Esm3Structure.Nn

open System
open TorchSharp

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
