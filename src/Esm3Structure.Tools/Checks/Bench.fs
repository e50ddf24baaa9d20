namespace Esm3Structure.Checks

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Esm3Structure.Native

/// One timed measurement: median wall time of the repeats, and the process's peak resident memory above what it
/// held before the first run (Linux `VmHWM`, reset through `/proc/self/clear_refs`; 0 where unavailable).
type Measurement =
    {
        Milliseconds: float
        PeakBytes: int64
    }

/// Timing, peak-memory and matmul-ceiling measurements shared by the benchmarks of `scripts/bench.fsx`. Figures are
/// printed, never asserted: tests only check that the machinery runs.
module Bench =

    // Every tensor buffer returns to the OS when freed, so resident memory follows the live tensors and the
    // peak-RSS counter measures a run's own peak (`NativeHeap.returnFreedMemory`).
    let private allocatorFixed = lazy (NativeHeap.returnFreedMemory ())

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

        NativeHeap.releaseFree ()

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
