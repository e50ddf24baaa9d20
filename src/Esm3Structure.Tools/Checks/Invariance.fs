namespace Esm3Structure.Checks

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure

/// One line of the SE(3) invariance report: a property, how many (chain, motion) cases were checked, and the
/// largest error seen in float32 and in float64.
type InvarianceRow =
    {
        Property: string
        Cases: int
        MaxErrorFloat32: float
        MaxErrorFloat64: float
    }

/// Settings of an invariance run.
type InvarianceConfig =
    {
        /// Random rigid motions per chain.
        Motions: int
        /// Seed of the motions.
        Seed: uint64
        /// Standard deviation of the motions' translations (Å).
        TranslationSigma: float
        /// Where the tensors live.
        Device: torch.Device
    }

/// Presets of `InvarianceConfig`.
module InvarianceConfig =

    /// 8 motions per chain, translations of σ = 100 Å, seed 0, CPU.
    let defaults =
        {
            Motions = 8
            Seed = 0UL
            TranslationSigma = 100.0
            Device = torch.CPU
        }

/// Applies random rigid motions G to real chains and measures how far each SE(3) claim of the library is from
/// holding exactly: equivariance of backbone frames, invariance of local coordinates, distances and metrics.
module Invariance =

    type private Measure =
        {
            Name: string
            Run: torch.Tensor -> torch.Tensor -> torch.Tensor -> Frame -> float
        }

    let private maxAbs (t: torch.Tensor) =
        if t.numel () = 0L then 0.0 else t.abs().max().ToDouble()

    /// The properties measured for one chain: atoms [L, 37, 3], mask [L, 37], motion G.
    let private measures: Measure list =
        let framesOf (atoms: torch.Tensor) = Frame.ofBackbone atoms

        /// max |part(frames(G x)) − part(G ∘ frames(x))| over framed residues.
        let equivariance
            (part: Frame -> torch.Tensor)
            (atoms: torch.Tensor)
            (_: torch.Tensor)
            (moved: torch.Tensor)
            (g: Frame)
            =
            let before, after = framesOf atoms, framesOf moved
            let expected = Frame.compose g before.Frames
            maxAbs ((part after.Frames - part expected).index before.Mask)

        [
            {
                Name = "frames(G x) = G ∘ frames(x): rotation"
                Run = equivariance _.R
            }
            {
                Name = "frames(G x) = G ∘ frames(x): translation (Å)"
                Run = equivariance _.T
            }
            {
                Name = "local coordinates T⁻¹(x) of every atom unchanged (Å)"
                Run =
                    fun atoms mask moved _ ->
                        let before, after = framesOf atoms, framesOf moved

                        let local (f: BackboneFrames) (x: torch.Tensor) =
                            Frame.invertApply (Frame.unsqueeze -1L f.Frames) x

                        let keep = mask.logical_and (before.Mask.unsqueeze (-1L))
                        maxAbs ((local after moved - local before atoms).index keep)
            }
            {
                Name = "G⁻¹(G x) = x (Å)"
                Run = fun atoms mask moved g -> maxAbs ((Frame.invertApply g moved - atoms).index mask)
            }
            {
                Name = "CA–CA distances unchanged (Å)"
                Run =
                    fun atoms mask moved _ ->
                        // Direct differences: torch.cdist's matmul form cancels badly far from the origin.
                        let distances (x: torch.Tensor) =
                            let ca = x.select(-2L, 1L).index(mask.select (-1L, 1L))
                            (ca.unsqueeze (-2L) - ca.unsqueeze (-3L)).norm(-1, false)

                        maxAbs (distances moved - distances atoms)
            }
            {
                Name = "backbone RMSD(G x, x) after Kabsch (Å)"
                Run =
                    fun atoms mask moved _ ->
                        let bbMask = mask.narrow(-1L, 0L, 3L).all(-1L)

                        (Metrics.backboneRmsd (moved.narrow (-2L, 0L, 3L)) (atoms.narrow (-2L, 0L, 3L)) bbMask)
                            .ToDouble()
            }
            {
                Name = "1 − LDDT-CA(G x, x)"
                Run =
                    fun atoms mask moved _ ->
                        let ca (x: torch.Tensor) = x.select (-2L, 1L)

                        1.0
                        - (Metrics.lddtCa (ca moved) (ca atoms) (Some(mask.select (-1L, 1L)))).Protein.ToDouble()
            }
            {
                Name = "1 − TM-score(G x, x)"
                Run =
                    fun atoms mask moved _ ->
                        let keep = mask.select (-1L, 1L)
                        let ca (x: torch.Tensor) = x.select(-2L, 1L).index(keep)
                        1.0 - Metrics.tmScore (ca moved) (ca atoms) None
            }
        ]

    /// Measures every property on every chain under `config.Motions` random motions, in float32 and float64.
    /// Tensors are scoped per case; nothing outlives the call.
    let run (config: InvarianceConfig) (chains: ProteinChain seq) : InvarianceRow list =
        let chains = Array.ofSeq chains
        let worst = Array.zeroCreate<float>(2 * measures.Length)
        let mutable cases = 0

        for dtypeIndex, dtype in [ 0, torch.float32; 1, torch.float64 ] do
            let generator = new torch.Generator(config.Seed)

            for chain in chains do
                for _ in 1 .. config.Motions do
                    use _ = torch.NewDisposeScope()
                    let atoms = (ProteinChain.atom37 dtype chain).``to`` config.Device
                    let mask = (ProteinChain.atom37Mask chain).``to`` config.Device

                    let g =
                        Frame.random [||] config.TranslationSigma torch.float64 torch.CPU generator
                        |> Frame.toType dtype
                        |> Frame.toDevice config.Device

                    let moved = Frame.apply g atoms

                    measures
                    |> List.iteri (fun i m ->
                        let e = m.Run atoms mask moved g
                        let k = 2 * i + dtypeIndex
                        worst.[k] <- max worst.[k] (if System.Double.IsNaN e then infinity else e))

                    if dtypeIndex = 0 then
                        cases <- cases + 1

        measures
        |> List.mapi (fun i m ->
            {
                Property = m.Name
                Cases = cases
                MaxErrorFloat32 = worst.[2 * i]
                MaxErrorFloat64 = worst.[2 * i + 1]
            })

    /// The report as an aligned text table: property, cases, max error float32, max error float64.
    let format (rows: InvarianceRow list) =
        let header = [| "property"; "cases"; "max error (float32)"; "max error (float64)" |]

        let cells =
            rows
            |> List.map (fun r ->
                [|
                    r.Property
                    string r.Cases
                    r.MaxErrorFloat32.ToString("0.000e+00")
                    r.MaxErrorFloat64.ToString("0.000e+00")
                |])

        let widths =
            Array.init header.Length (fun i ->
                (header.[i].Length :: (cells |> List.map (fun c -> c.[i].Length))) |> List.max)

        let line (c: string[]) =
            String.Join(
                "  ",
                c
                |> Array.mapi (fun i s ->
                    if i = 0 then
                        s.PadRight widths.[i]
                    else
                        s.PadLeft widths.[i])
            )

        String.Join(
            "\n",
            line header
            :: String('-', (Array.sum widths) + 2 * (widths.Length - 1))
            :: (cells |> List.map line)
        )
