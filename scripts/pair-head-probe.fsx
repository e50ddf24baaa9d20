// Can the decoder's pairwise head learn ESM's binned-direction labels? Trains the head of the `small` tokenizer on
// the true frames of a fixed batch of train chains (PairHeadProbe), with each loss alone and both together, and
// prints the two cross-entropies (chance: direction ln 16 = 2.773, distogram ln 64 = 4.159).
//   dotnet fsi scripts/pair-head-probe.fsx [--data DIR] [--chains N] [--crop L] [--steps N] [--device cpu|cuda]
#load "_load.fsx"

open Argu
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Data of dir: string
    | Chains of int
    | Crop of length: int
    | Steps of int
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Data _ -> "corpus folder with index.tsv and structures/ (default: ../shared/data)"
            | Chains _ -> "train chains of at least --crop residues, in index order (default 16)"
            | Crop _ -> "residues of each chain, from its start (default 64)"
            | Steps _ -> "Adam steps per variant (default 500)"
            | Device _ -> "cpu (default) or cuda"

Cli.run<Args> "pair-head-probe.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let chains = args.GetResult(Chains, defaultValue = 16)
    let crop = args.GetResult(Crop, defaultValue = 64)
    let steps = args.GetResult(Steps, defaultValue = 500)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))

    for name, value in [ "--chains", chains; "--crop", crop; "--steps", steps ] do
        if value < 1 then
            raise (System.ArgumentException(sprintf "%s must be ≥ 1 (got %d)" name value))

    let examples =
        // the first 4N train chains suffice: nearly every corpus chain has ≥ 64 residues
        Corpus.readSplit data "train" (4 * chains)
        |> Seq.map TokenizerData.ofChain
        |> Seq.filter (fun e -> e.Length >= crop)
        |> Seq.truncate chains
        |> Seq.map (TokenizerData.crop 0 crop)
        |> Seq.toArray

    if examples.Length < chains then
        raise (
            System.ArgumentException(
                sprintf
                    "--chains: only %d of the first %d train chains have ≥ %d residues"
                    examples.Length
                    (4 * chains)
                    crop
            )
        )

    let batch = TokenizerData.batch examples

    let small =
        { PairHeadProbeConfig.small with
            Steps = steps
            LogEvery = max 1 (steps / 10)
        }

    let variants =
        [
            "distogram alone", { small with DirectionWeight = 0.0 }
            "direction alone", { small with DistogramWeight = 0.0 }
            "both, ESM's weights (1, 1)", small
            "both, direction weight 6", { small with DirectionWeight = 6.0 }
            "both, ESM's head width (P 128, H 128)",
            { small with
                Downproject = 128L
                Hidden = 128L
            }
        ]

    printfn
        "%d train chains × %d residues (true frames), %d Adam steps at lr %g per variant"
        examples.Length
        crop
        steps
        small.LearningRate

    printfn "%-40s %12s %12s %12s %12s" "variant" "distogram" "" "direction" ""

    printfn
        "%-40s %12s %12s %12s %12s"
        ""
        (sprintf "step %d" (steps / 2))
        (sprintf "step %d" steps)
        (sprintf "step %d" (steps / 2))
        (sprintf "step %d" steps)

    for name, config in variants do
        let curve = PairHeadProbe.run config device batch

        let at s =
            curve |> Array.minBy (fun p -> abs (p.Step - s))

        let half, last = at (steps / 2), curve.[curve.Length - 1]

        printfn
            "%-40s %12.3f %12.3f %12.3f %12.3f"
            name
            half.Distogram
            last.Distogram
            half.BinnedDirection
            last.BinnedDirection

    0)
|> exit
