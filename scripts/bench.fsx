// Benchmarks: figures printed as Markdown tables (time, throughput, peak memory, share of the machine's dense
// matmul rate measured in the same run). Never asserted by tests.
//   dotnet fsi scripts/bench.fsx [--sections geometric,quantizer,tokenize,train,load] [--lengths 128,256,512,1024]
//       [--chain-lengths 100,300,1000] [--weights ENCODER.safetensors] [--repeats N] [--quick] [--scratch DIR]
#load "_load.fsx"

open System
open Argu
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.App
open Esm3Structure.Checks
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Lengths of string
    | Repeats of int
    | Quick
    | Device of string
    | Sections of string
    | Chain_Lengths of string
    | Weights of encoder: string
    | Scratch of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Lengths _ -> "comma-separated chain lengths of the geometric section (default 128,256,512,1024)"
            | Chain_Lengths _ ->
                "comma-separated lengths of the real chains the tokenize section encodes (default 100,300,1000; --quick: 100,600)"
            | Weights _ ->
                sprintf
                    "the trained encoder of the tokenize section (default: %s; when absent its row says so; with --quick only when given)"
                    ModelFiles.DefaultEncoderPath
            | Scratch _ ->
                "the folder the load section writes its two checkpoints into, then deletes (default: the system's temporary folder; ESM3-open's size needs 11 GiB free, --quick 0.1 GiB)"
            | Repeats _ -> "timed repeats per cell, median reported (default 3)"
            | Quick ->
                "small sizes only (d 256, 32 vector heads; lengths 64,128; 8192 vectors to quantize; a d 64 encoder on chains of 100 and 600), for a smoke run"
            | Device _ -> "cpu (default); the benchmark runs on the CPU build"
            | Sections _ ->
                "comma-separated sections to run: geometric (geometric attention), quantizer (nearest-code search), tokenize (structure tokens of real chains), train (the tokenizer presets' training steps), load (a 1.4B-parameter multi-track checkpoint with ESM3-open's shapes loaded from safetensors and .pth, and its forward pass at L 128 and 512; about 10 min, 13 GiB of memory); default all"

Cli.run<Args> "bench.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    Cli.device (args.GetResult(Device, defaultValue = "cpu")) |> ignore
    let quick = args.Contains Quick

    let lengths =
        args.GetResult(Lengths, defaultValue = (if quick then "64,128" else "128,256,512,1024")).Split(',')
        |> Array.map (fun s -> int64 (s.Trim()))
        |> List.ofArray

    let repeats = args.GetResult(Repeats, defaultValue = 3)

    let sections =
        args.GetResult(Sections, defaultValue = "geometric,quantizer,tokenize,train,load").Split(',')
        |> Array.map (fun s -> s.Trim().ToLowerInvariant())
        |> Set.ofArray

    for s in sections do
        if not (List.contains s [ "geometric"; "quantizer"; "tokenize"; "train"; "load" ]) then
            raise (
                ArgumentException(
                    sprintf "--sections: unknown section '%s' (known: geometric, quantizer, tokenize, train, load)" s
                )
            )

    let chainLengths =
        args.GetResult(Chain_Lengths, defaultValue = (if quick then "100,600" else "100,300,1000")).Split(',')
        |> Array.map (fun s -> int (s.Trim()))
        |> List.ofArray

    let sizes =
        if quick then
            [
                ("d 256, V 32",
                 { GeometricAttentionConfig.esm3Encoder with
                     DModel = 256L
                     VHeads = 32L
                 })
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

    let square = if quick then 1024L else 2048L
    let ceiling = Bench.matmulGFlops square 3

    printfn "dense float32 matmul [%d, %d] x [%d, %d]: %.1f GFLOP/s (the ceiling)" square square square square ceiling

    if sections.Contains "geometric" then
        printfn ""
        printfn "geometric attention, float32, batch 1, %d repeats (median):" repeats

        let rows = GeometricAttentionBenchmark.sweep sizes lengths repeats (eprintfn "  %s")

        printfn "%s" (GeometricAttentionBenchmark.format ceiling rows)
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
            QuantizerBench.search vectors 4096L 128L budgets repeats (eprintfn "  %s")

        printfn "%s" (QuantizerBench.format ceiling rows)
        let naive = rows |> List.head

        for r in List.tail rows do
            printfn
                "chunked, %d MiB budget: %.2fx the naive time, peak memory %.2fx of the naive"
                (r.BudgetBytes >>> 20)
                (r.Measurement.Milliseconds / naive.Measurement.Milliseconds)
                (float r.Measurement.PeakBytes / float (max 1L naive.Measurement.PeakBytes))

    if sections.Contains "tokenize" then
        let data = Cli.sharedData __SOURCE_DIRECTORY__
        let chains = chainLengths |> List.map (TokenizeBench.benchChain data)

        let sized =
            if quick then
                "d 64, V 8 (random init)",
                { StructureEncoderConfig.esm3 with
                    DModel = 64L
                    VHeads = 8L
                }
            else
                "ESM size: d 1024, V 128 (random init)", StructureEncoderConfig.esm3

        use random = TokenizeBench.randomEncoder (snd sized) 2024UL

        let shipped =
            let given = args.TryGetResult Weights

            let label =
                match given with
                | Some path -> IO.Path.GetFileName path
                | None -> "shipped"

            match given with
            | None when quick -> TokenizeBenchEncoder.Missing(label, "skipped with --quick (pass --weights)")
            | _ ->
                try
                    TokenizeBenchEncoder.Of(
                        label,
                        ModelFiles.loadEncoderFor __SOURCE_DIRECTORY__ (defaultArg given "") "cpu"
                    )
                with e ->
                    TokenizeBenchEncoder.Missing(label, e.Message)

        printfn ""

        printfn
            "tokenization (StructureTokenizer.tokenize: kNN, encoder, codebook; no gradients), float32, %d repeats (median):"
            repeats

        for c in chains do
            printfn "  %d residues: %s" (Esm3Structure.Structure.ProteinChain.length c.Chain) c.Source

        let rows =
            TokenizeBench.run
                true
                [ TokenizeBenchEncoder.Of(fst sized, random); shipped ]
                chains
                repeats
                (eprintfn "  %s")

        if shipped.IsAvailable then
            shipped.Encoder.Dispose()

        printfn "%s" (TokenizeBench.format rows)

        printfn
            "FLOPs: matrix products of the encoder as run (the last block's SwiGLU on the query slot only; ESM's dense count, every block on all 16 slots, in brackets). The ceiling: a float32 matmul of the encoder's dominant shape [L·16, d] x [d, 2F], same run; %% of matmul uses the FLOPs as run."

        for r in rows do
            if r.Note = "" then
                printfn
                    "%s, L %d: %.0f%% of the matmul ceiling (target for the ESM-size encoder: at least 50%%)"
                    r.Encoder
                    r.Length
                    (100.0 * r.GFlops / r.CeilingGFlops)


    if sections.Contains "load" then
        let config, label =
            if quick then
                { MultiTrackConfig.esm3 with
                    DModel = 256L
                    Heads = 4L
                    VHeads = 32L
                    Layers = 4
                },
                "d 256, 4 layers (--quick)"
            else
                MultiTrackConfig.esm3, "ESM3-open: d 1536, 48 layers, 24 heads, 256 geometric heads"

        let lengths = if quick then [ 64L; 128L ] else [ 128L; 512L ]

        let scratch =
            IO.Path.Combine(
                args.GetResult(Scratch, defaultValue = IO.Path.GetTempPath()),
                sprintf "bench-load-%d" Environment.ProcessId
            )

        IO.Directory.CreateDirectory scratch |> ignore
        let tensorBytes = LoadBench.tensorBytes config

        try
            printfn ""

            printfn
                "multi-track model, %s: %s parameters, %.2f GiB of float32 tensors"
                label
                ((MultiTrackCheckpoint.parameterCount config)
                    .ToString("N0", Globalization.CultureInfo.InvariantCulture))
                (float tensorBytes / float (1L <<< 30))

            let forward, files =
                LoadBench.buildRunAndWrite config lengths 1 scratch (eprintfn "  %s")

            // The ceiling for this model: a float32 matmul of its feed-forward shape at the longest length, median of
            // 5, measured right after the passes (this machine's rate drifts within a run).
            let ffn =
                Esm3Structure.Nn.FeedForward.swigluHidden config.ExpansionRatio config.DModel

            let longest = List.max lengths
            let modelCeiling = Bench.matmulShapeGFlops longest config.DModel (2L * ffn) 5
            printfn ""

            printfn
                "one forward pass, B 1, float32, no gradients (a random sequence, other tracks absent; one warm-up pass at L %d):"
                lengths.Head

            printfn
                "the %% column against a float32 matmul of the feed-forward shape [%d, %d] x [%d, %d] measured right after the passes: %.1f GFLOP/s"
                longest
                config.DModel
                config.DModel
                (2L * ffn)
                modelCeiling

            printfn "%s" (LoadBench.formatForward modelCeiling forward)
            printfn ""

            printfn
                "loading (each row once; the files were just written, so they are read from the page cache, not a cold disk):"

            let rows = LoadBench.loads config files (eprintfn "  %s")
            printfn "%s" (LoadBench.formatLoads tensorBytes rows)

            for format, _ in files do
                let pick (m: string) =
                    rows |> List.find (fun r -> r.Format = format && r.Method.StartsWith m)

                let direct = pick "MultiTrackCheckpoint"
                let baseline = pick "baseline"

                printfn
                    "%s: MultiTrackCheckpoint.load takes %.2fx the baseline's time and %.2fx its peak memory; its peak is %.2fx the tensors' size (target < 1.3)"
                    format
                    (direct.Seconds / baseline.Seconds)
                    (float direct.PeakBytes / float (max 1L baseline.PeakBytes))
                    (float direct.PeakBytes / float tensorBytes)
        finally
            IO.Directory.Delete(scratch, true)

    // Last: training keeps freed memory for reuse (`NativeHeap.retainFreedMemory`), which would skew the peak-memory
    // figures of the sections measured after it.
    if sections.Contains "train" then
        let presets =
            if quick then
                [ ("smoke", TokenizerTrainConfig.smoke) ]
            else
                [
                    "smoke", TokenizerTrainConfig.smoke
                    "small", TokenizerTrainConfig.small
                    "small-decoder", TokenizerTrainConfig.smallDecoder
                ]

        let chains =
            Corpus.readSplit (Cli.sharedData __SOURCE_DIRECTORY__) "train" 64
            |> Array.map TokenizerData.ofChain

        printfn ""

        printfn
            "stage-1 training step (forward, losses, backward with clipping, AdamW), float32, crops of the first %d train chains, 1 warm-up + %d steps (median):"
            chains.Length
            repeats

        let rows = TrainBench.steps presets chains 1 repeats (eprintfn "  %s")
        printfn "%s" (TrainBench.format ceiling rows)

    0)
|> exit
