namespace Esm3Structure.Checks

open System
open TorchSharp
open Esm3Structure.Nn

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

/// The nearest-code search benchmark of `scripts/bench.fsx --sections quantizer`.
module QuantizerBench =

    /// Times the nearest-code search of `vectors` × `dim` float32 vectors against `codes` × `dim` codes (random
    /// normal, fixed seeds): ESM's naive full-distance argmin and the chunked search for each budget; then
    /// measures each method's peak memory in later sweeps (after every timing, see `Bench.peakBytes`; the median of
    /// `repeats` sweeps) and checks that every method picks the naive search's codes.
    let search
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
                let ms = Bench.time 1 repeats (fun () -> run () |> ignore)

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
                    let peak = Bench.peakBytes (fun () -> run () |> ignore)

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
    let format (ceilingGFlops: float) (rows: QuantizerBenchRow list) =
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
