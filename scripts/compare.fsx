// Compares a model structure with a native one, residue by residue in order (no sequence alignment): backbone RMSD
// after the Kabsch fit, TM-score and LDDT-CA over the residues with N, CA and C in both (README, "Generate").
//   dotnet fsi scripts/compare.fsx -- --model FILE [--model-chain C] --native FILE [--native-chain C]
#load "_load.fsx"

open System
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Structure

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Mandatory; Unique>] Model of file: string
    | [<Unique>] Model_Chain of id: string
    | [<Mandatory; Unique>] Native of file: string
    | [<Unique>] Native_Chain of id: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model structure, PDB or mmCIF (plain or gzipped)"
            | Model_Chain _ -> "its chain (default: the first)"
            | Native _ -> "the reference structure, PDB or mmCIF"
            | Native_Chain _ -> "its chain (default: the first)"

Cli.run<Args> "compare.fsx" (fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")) (fun args ->
    let model =
        StructureFile.read (args.GetResult Model) (args.TryGetResult Model_Chain)

    let native =
        StructureFile.read (args.GetResult Native) (args.TryGetResult Native_Chain)

    if ProteinChain.length model <> ProteinChain.length native then
        raise (
            ArgumentException(
                sprintf
                    "--model has %d residues but --native has %d (residues are compared in order)"
                    (ProteinChain.length model)
                    (ProteinChain.length native)
            )
        )

    use _ = torch.NewDisposeScope()
    let x = ProteinChain.backbone torch.float64 model // [L, 3, 3]
    let y = ProteinChain.backbone torch.float64 native

    let both =
        (ProteinChain.backboneMask model).logical_and(ProteinChain.backboneMask native) // [L]

    let ca (t: torch.Tensor) = t.select (1L, 1L) // [L, 3]

    printfn
        "%d residues compared  backbone RMSD %.2f Å  TM-score %.3f  LDDT-CA %.3f"
        (both.sum().item<int64>())
        ((Metrics.backboneRmsd x y both).item<float>())
        (Metrics.tmScore (ca x) (ca y) (Some both))
        ((Metrics.lddtCa (ca x) (ca y) (Some both)).Protein.item<float>())

    0)
|> exit
