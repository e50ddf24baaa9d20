namespace Esm3Structure.Checks

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Training

/// One timed measurement: median wall time of the repeats, and the process's peak resident memory above what it
/// held before the first run (Linux `VmHWM`, reset through `/proc/self/clear_refs`; 0 where unavailable).
type Measurement =
    {
        Milliseconds: float
        PeakBytes: int64
    }

/// One row of the geometric attention benchmark.
type GeometricAttentionBenchRow =
    {
        Sizes: string
        Implementation: GeometricAttentionImpl
        Length: int64
        /// "forward" or "forward+backward".
        Pass: string
        Measurement: Measurement
        ResiduesPerSecond: float
        GFlops: float
    }

/// One row of the nearest-code search benchmark.
type QuantizerBenchRow =
    {
        /// "naive" (ESM's full [N, K] expression) or "chunked".
        Method: string
        /// Vectors N, codes K, width D.
        Vectors: int64
        Codes: int64
        Dim: int64
        /// The distance budget of the chunked search (0 for the naive one).
        BudgetBytes: int64
        /// Bytes of the largest distance block the method builds (naive: the whole [N, K] matrix).
        BlockBytes: int64
        Measurement: Measurement
        VectorsPerSecond: float
        /// 2·N·K·D (the distance matmul) per second.
        GFlops: float
        /// Vectors whose code differs from the naive search's (0 expected: same arithmetic).
        Mismatches: int64
    }

/// One row of the training-step benchmark: one preset's stage-1 step (forward, losses, backward, AdamW).
type TrainStepBenchRow =
    {
        Preset: string
        Batch: int
        Crop: int
        /// Median milliseconds per step.
        Milliseconds: float
        /// Median seconds of each stage (`TrainingStep.Stages`, then backward and optimizer).
        Stages: (string * float)[]
        StepsPerSecond: float
        ResiduesPerSecond: float
        /// The counted matrix products of one step (forward and backward, `Bench.trainingGFlop`).
        GFlop: float
        GFlops: float
    }

/// Benchmarks printed by `scripts/bench.fsx`. Figures are printed, never asserted: tests only check that the
/// machinery runs.
module Bench =

    [<System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mallopt")>]
    extern int private mallopt(int param, int value)

    [<System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")>]
    extern int private mallocTrim(unativeint pad)

    let private allocatorFixed =
        lazy
            (try
                // M_MMAP_THRESHOLD = 128 KiB, fixed (glibc otherwise raises it after frees and keeps large blocks in
                // the heap): every tensor buffer then returns to the OS when freed, so resident memory follows the
                // live tensors and the peak-RSS counter measures a run's own peak.
                mallopt (-3, 128 * 1024) = 1
             with _ ->
                 false)

    let private statusKb (field: string) =
        try
            File.ReadLines "/proc/self/status"
            |> Seq.tryFind (fun l -> l.StartsWith(field + ":"))
            |> Option.map (fun l ->
                int64 (l.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries).[1])
                * 1024L)
        with _ ->
            None

    /// Resets the peak-RSS counter to the current RSS; false where the kernel does not allow it.
    let resetPeak () =
        try
            File.WriteAllText("/proc/self/clear_refs", "5")
            true
        with _ ->
            false

    /// Median wall time (ms) of `repeats` runs of `f` after `warmup` runs, each run in its own dispose scope.
    let time (warmup: int) (repeats: int) (f: unit -> unit) : float =
        for _ in 1..warmup do
            use _ = torch.NewDisposeScope()
            f ()

        let times =
            Array.init repeats (fun _ ->
                use _ = torch.NewDisposeScope()
                let watch = Stopwatch.StartNew()
                f ()
                watch.Elapsed.TotalMilliseconds)

        Array.sort times |> fun t -> t.[t.Length / 2]

    /// Peak resident memory (bytes) of one run of `f` above what the process held before it. Fixes the allocator
    /// first (see `allocatorFixed`), which slows later allocations: take every timing before the first call.
    let peakBytes (f: unit -> unit) : int64 =
        allocatorFixed.Force() |> ignore
        // Tensors dropped without Dispose free their memory in finalizers: run them before the baseline is read.
        GC.Collect()
        GC.WaitForPendingFinalizers()
        GC.Collect()

        try
            mallocTrim 0un |> ignore
        with _ ->
            ()

        if resetPeak () then
            let before = defaultArg (statusKb "VmRSS") 0L

            do
                use _ = torch.NewDisposeScope()
                f ()

            max 0L (defaultArg (statusKb "VmHWM") before - before)
        else
            0L

    /// The dense float32 matmul rate of this machine (GFLOP/s, 2·m·k·n per product, the median of `repeats`) for
    /// [m, k] × [k, n] with random normal operands: the ceiling a model's figures are compared with.
    let matmulShapeGFlops (m: int64) (k: int64) (n: int64) (repeats: int) =
        use _ = torch.NewDisposeScope()
        let g = new torch.Generator(1UL)
        let a = torch.randn ([| m; k |], generator = g)
        let b = torch.randn ([| k; n |], generator = g)
        let ms = time 1 repeats (fun () -> a.matmul b |> ignore)
        2.0 * float m * float k * float n / (ms * 1e6)

    /// The dense float32 matmul rate of this machine (GFLOP/s) for [n, n] × [n, n]: the ceiling the other figures
    /// are compared with.
    let matmulGFlops (n: int64) (repeats: int) = matmulShapeGFlops n n n repeats

    /// Approximate FLOPs of one geometric attention forward (projections, the three L² terms; the backward counted
    /// as twice the forward).
    let geometricAttentionFlops (config: GeometricAttentionConfig) (batch: int64) (length: int64) (backward: bool) =
        let l, d, v = float length, float config.DModel, float config.VHeads
        let projections = 2.0 * l * d * 15.0 * v + 2.0 * l * 3.0 * v * d
        let pairs = 2.0 * v * l * l * 3.0 * 3.0 // rotation scores, distance scores, value sums
        let forward = float batch * (projections + pairs)
        if backward then 3.0 * forward else forward

    /// Times geometric attention (float32, batch 1, random frames, ~10% unframed) for each size, implementation,
    /// length and pass, then measures each cell's peak memory in a second sweep (after all timings, see
    /// `peakBytes`). `sizes` pairs a label with a config (its Implementation is overridden).
    let geometricAttention
        (sizes: (string * GeometricAttentionConfig) list)
        (lengths: int64 list)
        (repeats: int)
        (progress: string -> unit)
        =
        let cells =
            [
                for label, config in sizes do
                    for length in lengths do
                        for impl in [ GeometricAttentionImpl.Reference; GeometricAttentionImpl.MemoryEfficient ] do
                            for backward in [ false; true ] ->
                                label, { config with Implementation = impl }, length, backward
            ]

        let run
            (config: GeometricAttentionConfig)
            (length: int64)
            (backward: bool)
            (measureWith: (unit -> unit) -> 'a)
            : 'a =
            use layer = new GeometricAttention(config)
            Init.initialise (new torch.Generator(3UL)) layer
            use _ = torch.NewDisposeScope()
            let g = new torch.Generator(5UL)
            let s = torch.randn ([| 1L; length; config.DModel |], generator = g)
            let frames = Frame.random [| 1L; length |] 10.0 torch.float32 torch.CPU g
            let framed = torch.rand([| 1L; length |], generator = g).gt((0.1).ToScalar())
            let input = GeometricAttentionInput.Create(s, frames, framed)

            measureWith (fun () ->
                if backward then
                    layer.zero_grad ()
                    let x = s.detach().requires_grad_(true)
                    let out = layer.forward { input with S = x }
                    out.sum().backward()
                else
                    use _ = torch.no_grad ()
                    layer.forward input |> ignore)

        let times =
            cells
            |> List.map (fun (label, config, length, backward) ->
                let ms = run config length backward (time 1 repeats)

                progress (
                    sprintf
                        "%s %O L=%d %s: %.1f ms"
                        label
                        config.Implementation
                        length
                        (if backward then "fwd+bwd" else "fwd")
                        ms
                )

                ms)

        let peaks =
            cells
            |> List.map (fun (_, config, length, backward) -> run config length backward peakBytes)

        List.zip3 cells times peaks
        |> List.map (fun ((label, config, length, backward), ms, peak) ->
            {
                Sizes = label
                Implementation = config.Implementation
                Length = length
                Pass = if backward then "forward+backward" else "forward"
                Measurement = { Milliseconds = ms; PeakBytes = peak }
                ResiduesPerSecond = float length / (ms / 1000.0)
                GFlops = geometricAttentionFlops config 1L length backward / (ms * 1e6)
            })

    /// A Markdown table of geometric attention rows, with each row's share of the matmul ceiling.
    let formatGeometric (ceilingGFlops: float) (rows: GeometricAttentionBenchRow list) =
        let header =
            "| sizes | implementation | L | pass | ms | residues/s | peak MB | GFLOP/s | % of matmul |"

        let rule = "|---|---|---:|---|---:|---:|---:|---:|---:|"

        let line (r: GeometricAttentionBenchRow) =
            sprintf
                "| %s | %O | %d | %s | %.1f | %.0f | %.0f | %.1f | %.0f%% |"
                r.Sizes
                r.Implementation
                r.Length
                r.Pass
                r.Measurement.Milliseconds
                r.ResiduesPerSecond
                (float r.Measurement.PeakBytes / 1048576.0)
                r.GFlops
                (100.0 * r.GFlops / ceilingGFlops)

        String.Join("\n", header :: rule :: (rows |> List.map line))

    /// Times the nearest-code search of `vectors` × `dim` float32 vectors against `codes` × `dim` codes (random
    /// normal, fixed seeds): ESM's naive full-distance argmin and the chunked search for each budget; then
    /// measures each method's peak memory in later sweeps (after every timing, see `peakBytes`; the median of
    /// `repeats` sweeps) and checks that every method picks the naive search's codes.
    let quantizerSearch
        (vectors: int64)
        (codes: int64)
        (dim: int64)
        (budgets: int64 list)
        (repeats: int)
        (progress: string -> unit)
        =
        let g = new torch.Generator(7UL)
        let z = torch.randn([| vectors; dim |], generator = g).DetachFromDisposeScope()
        let e = torch.randn([| codes; dim |], generator = g).DetachFromDisposeScope()

        let methods =
            ("naive", 0L, (fun () -> Codebook.nearestCodesNaive z e))
            :: [ for b in budgets -> "chunked", b, (fun () -> Codebook.nearestCodes b z e) ]

        let reference = (Codebook.nearestCodesNaive z e).DetachFromDisposeScope()

        let mismatches =
            methods
            |> List.map (fun (_, _, run) ->
                use _ = torch.NewDisposeScope()
                run().ne(reference).sum().ToInt64())

        let times =
            methods
            |> List.map (fun (name, budget, run) ->
                let ms = time 1 repeats (fun () -> run () |> ignore)

                progress (
                    sprintf "%s %s: %.1f ms" name (if budget > 0L then sprintf "%d MiB" (budget >>> 20) else "") ms
                )

                ms)

        // Peaks are the median of `repeats` sweeps (the first call after the timings can read low). Budgets below 32 MiB make poor peak figures after the
        // timings: glibc then serves the blocks from its heap (its dynamic mmap threshold rises to at most
        // 32 MiB), and later runs re-touch those trimmed heap fragments, adding hundreds of MB of resident memory
        // the search itself does not need; the script therefore uses budgets of 64 MiB and more.
        let peaks =
            List.init (max 1 repeats) (fun _ ->
                methods
                |> List.map (fun (name, budget, run) ->
                    let peak = peakBytes (fun () -> run () |> ignore)

                    progress (
                        sprintf
                            "%s %s: peak %d MB"
                            name
                            (if budget > 0L then sprintf "%d MiB" (budget >>> 20) else "")
                            (peak >>> 20)
                    )

                    peak))
            |> List.transpose
            |> List.map (fun p -> List.sort p |> fun sorted -> sorted.[sorted.Length / 2])

        let rows =
            List.zip3 methods times peaks
            |> List.zip mismatches
            |> List.map (fun (wrong, ((name, budget, _), ms, peak)) ->
                {
                    Method = name
                    Vectors = vectors
                    Codes = codes
                    Dim = dim
                    BudgetBytes = budget
                    BlockBytes =
                        if budget = 0L then
                            vectors * codes * 4L
                        else
                            (Codebook.distanceBlocks budget 4L vectors codes).BlockBytes
                    Measurement = { Milliseconds = ms; PeakBytes = peak }
                    VectorsPerSecond = float vectors / (ms / 1000.0)
                    GFlops = 2.0 * float vectors * float codes * float dim / (ms * 1e6)
                    Mismatches = wrong
                })

        for t in [ z; e; reference ] do
            t.Dispose()

        rows

    /// A Markdown table of nearest-code search rows, with each row's share of the matmul ceiling.
    let formatQuantizer (ceilingGFlops: float) (rows: QuantizerBenchRow list) =
        let header =
            "| search | N × K × D | budget | largest block MB | ms | vectors/s | peak MB | GFLOP/s | % of matmul | codes ≠ naive |"

        let rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"

        let line (r: QuantizerBenchRow) =
            sprintf
                "| %s | %d × %d × %d | %s | %.0f | %.1f | %.0f | %.0f | %.1f | %.0f%% | %d |"
                r.Method
                r.Vectors
                r.Codes
                r.Dim
                (if r.BudgetBytes > 0L then
                     sprintf "%.0f MiB" (float r.BudgetBytes / 1048576.0)
                 else
                     "none")
                (float r.BlockBytes / 1048576.0)
                r.Measurement.Milliseconds
                r.VectorsPerSecond
                (float r.Measurement.PeakBytes / 1048576.0)
                r.GFlops
                (100.0 * r.GFlops / ceilingGFlops)
                r.Mismatches

        String.Join("\n", header :: rule :: (rows |> List.map line))

    /// Floating-point operations (GFLOP) of the matrix products of one stage-1 training step of `config` on a batch
    /// of `batch` crops of `length` residues: every linear layer and attention product, 2 per multiply-add, the
    /// backward counted as twice the forward. Normalisations, activations, gathers and losses are not counted, so
    /// the share of the matmul ceiling derived from it is a lower bound.
    let trainingGFlop (config: TokenizerTrainConfig) (batch: int) (length: int) =
        let b, l = float batch, float length
        let e = float (min config.Encoder.Knn length)
        let enc = config.Encoder
        let d, v = float enc.DModel, float enc.VHeads
        let f = float (FeedForward.swigluHidden enc.ExpansionRatio enc.DModel)
        let neighbourhoods = b * l
        let tokens = neighbourhoods * e
        // Geometric attention per block: the 15·V projection channels and the 3·V output, then rotation and
        // distance scores and value sums over each neighbourhood's E × E pairs (as geometricAttentionFlops).
        let attention =
            2.0 * tokens * d * 15.0 * v
            + 2.0 * tokens * 3.0 * v * d
            + neighbourhoods * 2.0 * v * e * e * 9.0

        let swiglu (rows: float) (width: float) (hidden: float) = 6.0 * rows * width * hidden
        let layers = float enc.Layers
        // The last block's feed-forward runs on the query slot only.
        let encoder =
            layers * attention
            + (layers - 1.0) * swiglu tokens d f
            + swiglu neighbourhoods d f
            + 2.0 * neighbourhoods * d * float enc.DOut

        let dec = config.Decoder
        let dd = float dec.DModel

        let fd =
            float (FeedForward.swigluHidden (StructureDecoderConfig.stack dec).ExpansionRatio dec.DModel)

        let n = b * l
        let block = 2.0 * n * 4.0 * dd * dd + 2.0 * 2.0 * b * l * l * dd + swiglu n dd fd
        let p, h = float dec.PairwiseDownproject, float dec.PairwiseHidden
        let bins = float StructureDecoderConfig.PairwiseBins

        let heads =
            2.0 * n * (dd * dd + dd * 23.0) // affine head
            + 2.0 * n * (dd * dd + dd * 50.0) // pLDDT head
            + 2.0 * n * dd * p
            + 2.0 * b * l * l * (p * h + h * bins) // pairwise head

        let decoder = 2.0 * n * float enc.DOut * dd + float dec.Layers * block + heads

        3.0 * (encoder + decoder) / 1e9

    /// Times the stage-1 training step of each preset: `warmup` steps, then the median of `repeats`, each step the
    /// trainer's sequence (the task's step with its stage clock, backward with clipping, AdamW). The batches are
    /// the presets' own random crops of `chains`.
    let trainSteps
        (presets: (string * TokenizerTrainConfig) list)
        (chains: TokenizerExample[])
        (warmup: int)
        (repeats: int)
        (progress: string -> unit)
        =
        [
            for name, config in presets do
                progress (sprintf "train step: %s" name)
                use task = new TokenizerTraining.Task(config, torch.CPU, chains, [||])
                let model = task.Model
                model.train ()

                use optimizer =
                    torch.optim.AdamW(
                        model.parameters (),
                        lr = config.Trainer.LearningRate,
                        beta1 = config.Trainer.Beta1,
                        beta2 = config.Trainer.Beta2,
                        weight_decay = config.Trainer.WeightDecay
                    )

                let runs =
                    [|
                        for i in 0 .. warmup + repeats - 1 do
                            use _ = torch.NewDisposeScope()
                            let watch = Stopwatch.StartNew()
                            optimizer.zero_grad ()
                            let out = task.Step i
                            let clock = StageClock()
                            out.Loss.backward ()

                            torch.nn.utils.clip_grad_norm_ (model.parameters (), config.Trainer.ClipNorm)
                            |> ignore

                            clock.Lap "backward"
                            optimizer.step () |> ignore
                            clock.Lap "optimizer"

                            if i >= warmup then
                                watch.Elapsed.TotalMilliseconds, Array.append out.Stages clock.Laps
                    |]

                let median (xs: float[]) = (Array.sort xs).[xs.Length / 2]
                let ms = runs |> Array.map fst |> median

                let stages =
                    (snd runs.[0])
                    |> Array.map (fun (stage, _) ->
                        stage,
                        runs
                        |> Array.map (fun (_, laps) -> laps |> Array.find (fst >> (=) stage) |> snd)
                        |> median)

                let crop = config.CropLength
                let gflop = trainingGFlop config config.Trainer.BatchSize crop

                {
                    Preset = name
                    Batch = config.Trainer.BatchSize
                    Crop = crop
                    Milliseconds = ms
                    Stages = stages
                    StepsPerSecond = 1000.0 / ms
                    ResiduesPerSecond = float (config.Trainer.BatchSize * crop) * 1000.0 / ms
                    GFlop = gflop
                    GFlops = gflop * 1000.0 / ms
                }
        ]

    /// A Markdown table of training-step rows with each row's share of the matmul ceiling, and a second table of
    /// the stage times.
    let formatTrain (ceilingGFlops: float) (rows: TrainStepBenchRow list) =
        let header =
            "| preset | batch × crop | ms/step | steps/s | residues/s | GFLOP/step (counted) | GFLOP/s | % of matmul |"

        let rule = "|---|---|---:|---:|---:|---:|---:|---:|"

        let line (r: TrainStepBenchRow) =
            sprintf
                "| %s | %d × %d | %.0f | %.2f | %.0f | %.1f | %.1f | %.0f%% |"
                r.Preset
                r.Batch
                r.Crop
                r.Milliseconds
                r.StepsPerSecond
                r.ResiduesPerSecond
                r.GFlop
                r.GFlops
                (100.0 * r.GFlops / ceilingGFlops)

        let stages =
            match rows with
            | [] -> []
            | first :: _ ->
                let names = first.Stages |> Array.map fst

                [
                    ""
                    "| preset | "
                    + String.Join(" | ", names |> Array.map (fun n -> n + " ms"))
                    + " |"
                    "|---|" + String.Join("", names |> Array.map (fun _ -> "---:|"))
                    for r in rows do
                        "| "
                        + r.Preset
                        + " | "
                        + String.Join(" | ", r.Stages |> Array.map (fun (_, t) -> sprintf "%.0f" (t * 1000.0)))
                        + " |"
                ]

        String.Join("\n", header :: rule :: (rows |> List.map line) @ stages)
