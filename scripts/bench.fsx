// Benchmarks: figures printed as Markdown tables (time, throughput, peak memory, share of the machine's dense
// matmul rate measured in the same run). Never asserted by tests.
//   dotnet fsi scripts/bench.fsx [--sections geometric,quantizer] [--lengths 128,256,512,1024] [--repeats N] [--quick]
#load "_load.fsx"

open System
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Checks
open Esm3Structure.Nn

[<HelpFlags("--usage", "--help")>]
type Args =
    | Lengths of string
    | Repeats of int
    | Quick
    | Device of string
    | Sections of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Lengths _ -> "comma-separated chain lengths (default 128,256,512,1024)"
            | Repeats _ -> "timed repeats per cell, median reported (default 3)"
            | Quick ->
                "small sizes only (d 256, 32 vector heads; lengths 64,128; 8192 vectors to quantize), for a smoke run"
            | Device _ -> "cpu (default); the benchmark runs on the CPU build"
            | Sections _ ->
                "comma-separated sections to run: geometric (geometric attention), quantizer (nearest-code search); default all"

Cli.run<Args> "bench.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    Cli.device (args.GetResult(Device, defaultValue = "cpu")) |> ignore
    let quick = args.Contains Quick

    let lengths =
        args.GetResult(Lengths, defaultValue = (if quick then "64,128" else "128,256,512,1024")).Split(',')
        |> Array.map (fun s -> int64 (s.Trim()))
        |> List.ofArray

    let repeats = args.GetResult(Repeats, defaultValue = 3)

    let sections =
        args.GetResult(Sections, defaultValue = "geometric,quantizer").Split(',')
        |> Array.map (fun s -> s.Trim().ToLowerInvariant())
        |> Set.ofArray

    for s in sections do
        if s <> "geometric" && s <> "quantizer" then
            raise (ArgumentException(sprintf "--sections: unknown section '%s' (known: geometric, quantizer)" s))

    let sizes =
        if quick then
            [
                "d 256, V 32",
                { GeometricAttentionConfig.esm3Encoder with
                    DModel = 256L
                    VHeads = 32L
                }
            ]
        else
            [
                "encoder: d 1024, V 128", GeometricAttentionConfig.esm3Encoder
                "ESM3 trunk: d 1536, V 256", GeometricAttentionConfig.esm3Trunk
            ]

    printfn
        "machine: %d cores, %s, torch threads %d"
        Environment.ProcessorCount
        (Runtime.InteropServices.RuntimeInformation.OSDescription)
        (torch.get_num_threads ())

    let ceiling = Bench.matmulGFlops 2048L 3
    printfn "dense float32 matmul [2048, 2048] x [2048, 2048]: %.1f GFLOP/s (the ceiling)" ceiling

    if sections.Contains "geometric" then
        printfn ""
        printfn "geometric attention, float32, batch 1, %d repeats (median):" repeats

        let rows = Bench.geometricAttention sizes lengths repeats (eprintfn "  %s")

        printfn "%s" (Bench.formatGeometric ceiling rows)
        printfn ""

        for label, _ in sizes do
            for l in lengths do
                let pick impl pass =
                    rows
                    |> List.find (fun r -> r.Sizes = label && r.Length = l && r.Implementation = impl && r.Pass = pass)

                for pass in [ "forward"; "forward+backward" ] do
                    let a = pick GeometricAttentionImpl.Reference pass
                    let b = pick GeometricAttentionImpl.MemoryEfficient pass

                    printfn
                        "%s, L %d, %s: memory-efficient is %.2fx faster, peak memory %.2fx of the reference"
                        label
                        l
                        pass
                        (a.Measurement.Milliseconds / b.Measurement.Milliseconds)
                        (float b.Measurement.PeakBytes / float (max 1L a.Measurement.PeakBytes))

    if sections.Contains "quantizer" then
        let vectors = if quick then 8192L else 65536L
        // 64 MiB is the preset's budget; 1 GiB holds the whole float32 [65536, 4096] matrix as one in-place block
        let budgets =
            [ QuantizerConfig.esm3.DistanceBudgetBytes; 256L <<< 20; 1024L <<< 20 ]

        printfn ""

        printfn
            "nearest-code search, float32, %d vectors x 128 against 4096 x 128 codes, %d repeats (median):"
            vectors
            repeats

        let rows =
            Bench.quantizerSearch vectors 4096L 128L budgets repeats (eprintfn "  %s")

        printfn "%s" (Bench.formatQuantizer ceiling rows)
        let naive = rows |> List.head

        for r in List.tail rows do
            printfn
                "chunked, %d MiB budget: %.2fx the naive time, peak memory %.2fx of the naive"
                (r.BudgetBytes >>> 20)
                (r.Measurement.Milliseconds / naive.Measurement.Milliseconds)
                (float r.Measurement.PeakBytes / float (max 1L naive.Measurement.PeakBytes))

    0)
|> exit
