// SE(3) invariance report on real chains: builds backbone frames, applies random rigid motions and prints, for
// every geometric claim of the library, the largest error seen in float32 and float64.
//   dotnet fsi scripts/invariance.fsx [--data DIR] [--motions N] [--seed N] [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Checks
open Esm3Structure.Structure

[<HelpFlags("--usage", "--help")>]
type Args =
    | Data of dir: string
    | Motions of int
    | Seed of int
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "folder of .pdb/.cif files, optionally gzipped (default: ../shared/data/small)"
            | Motions _ -> "random rigid motions per chain (default 8)"
            | Seed _ -> "seed of the motions (default 0)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "invariance.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let dir =
        args.GetResult(Data, defaultValue = System.IO.Path.Combine(Cli.sharedData __SOURCE_DIRECTORY__, "small"))

    let config =
        { InvarianceConfig.defaults with
            Motions = args.GetResult(Motions, defaultValue = InvarianceConfig.defaults.Motions)
            Seed = uint64 (args.GetResult(Seed, defaultValue = 0))
            Device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
        }

    let chains = StructureFile.readDirectory dir
    let residues = chains |> Array.sumBy ProteinChain.length

    printfn
        "SE(3) invariance on %d chains (%d residues) from %s, %d random motions each (translations σ = %.0f Å)"
        chains.Length
        residues
        dir
        config.Motions
        config.TranslationSigma

    printfn ""
    printfn "%s" (Invariance.format (Invariance.run config chains))
    0)
|> exit
