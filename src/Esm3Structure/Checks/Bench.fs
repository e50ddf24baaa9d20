namespace Esm3Structure.Checks

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Nn

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
            |> Option.map (fun l -> int64 (l.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries).[1]) * 1024L)
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

    /// The dense float32 matmul rate of this machine (GFLOP/s) for [n, n] × [n, n]: the ceiling the other figures
    /// are compared with.
    let matmulGFlops (n: int64) (repeats: int) =
        use _ = torch.NewDisposeScope()
        let g = new torch.Generator(1UL)
        let a = torch.randn ([| n; n |], generator = g)
        let b = torch.randn ([| n; n |], generator = g)
        let ms = time 1 repeats (fun () -> a.matmul b |> ignore)
        2.0 * float n * float n * float n / (ms * 1e6)

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
    let geometricAttention (sizes: (string * GeometricAttentionConfig) list) (lengths: int64 list) (repeats: int) (progress: string -> unit) =
        let cells =
            [ for label, config in sizes do
                  for length in lengths do
                      for impl in [ GeometricAttentionImpl.Reference; GeometricAttentionImpl.MemoryEfficient ] do
                          for backward in [ false; true ] -> label, { config with Implementation = impl }, length, backward ]

        let run (config: GeometricAttentionConfig) (length: int64) (backward: bool) (measureWith: (unit -> unit) -> 'a) : 'a =
            use layer = new GeometricAttention(config)
            Init.reset (new torch.Generator(3UL)) layer
            use _ = torch.NewDisposeScope()
            let g = new torch.Generator(5UL)
            let s = torch.randn([| 1L; length; config.DModel |], generator = g)
            let frames = Frame.random [| 1L; length |] 10.0 torch.float32 torch.CPU g
            let framed = torch.rand([| 1L; length |], generator = g).gt((0.1).ToScalar())
            let input = GeometricAttentionInput.Create(s, frames, framed)

            measureWith (fun () ->
                if backward then
                    layer.zero_grad ()
                    let x = s.detach().requires_grad_(true)
                    let out = layer.forward { input with S = x }
                    out.sum().backward ()
                else
                    use _ = torch.no_grad ()
                    layer.forward input |> ignore)

        let times =
            cells
            |> List.map (fun (label, config, length, backward) ->
                let ms = run config length backward (time 1 repeats)
                progress (sprintf "%s %O L=%d %s: %.1f ms" label config.Implementation length (if backward then "fwd+bwd" else "fwd") ms)
                ms)

        let peaks = cells |> List.map (fun (_, config, length, backward) -> run config length backward peakBytes)

        List.zip3 cells times peaks
        |> List.map (fun ((label, config, length, backward), ms, peak) ->
            { Sizes = label
              Implementation = config.Implementation
              Length = length
              Pass = if backward then "forward+backward" else "forward"
              Measurement = { Milliseconds = ms; PeakBytes = peak }
              ResiduesPerSecond = float length / (ms / 1000.0)
              GFlops = geometricAttentionFlops config 1L length backward / (ms * 1e6) })

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
