namespace Esm3Structure.Checks

open System
open System.Diagnostics
open System.Runtime.InteropServices
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Geometry
open Esm3Structure.Nn

/// One timing / memory measurement of a geometric attention forward.
type GeometricAttentionBenchmark =
    {
        Implementation: GeometricAttentionImpl
        Batch: int64
        Length: int64
        VHeads: int64
        /// Mean wall time of one forward (after one warm-up call), in milliseconds.
        MeanMilliseconds: float
        /// Bytes of the tensors one forward leaves alive in the caller's dispose scope, output excluded (each
        /// storage counted once, views included). Under a per-step dispose scope this is what the forward holds
        /// until the step ends.
        ScopeBytes: int64
        /// Bytes of one [B, V, L, L] float tensor, for scale.
        PairTensorBytes: int64
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

/// A small timing and memory comparison a benchmark script can call.
module GeometricAttentionBenchmark =

    /// The address and size in bytes of a tensor's storage (views share their base's storage).
    let private storageOf (t: torch.Tensor) =
        let typed (storage: torch.Storage<'T>) =
            use st = storage
            Some(st.data_ptr (), int64 (st.nbytes ()))

        match t.dtype with
        | torch.ScalarType.Float32 -> typed (t.storage<single>())
        | torch.ScalarType.Float64 -> typed (t.storage<double>())
        | torch.ScalarType.Int64 -> typed (t.storage<int64>())
        | torch.ScalarType.Bool -> typed (t.storage<bool>())
        | _ -> Some(nativeint (t.GetHashCode()), t.numel () * t.ElementSize)

    /// Runs `repeats` forwards of a randomly initialised layer on random inputs (float32, random frames, ~10%
    /// unframed) and measures time and scope-retained bytes. Shapes: builds s [batch, length, d] internally.
    let run (config: GeometricAttentionConfig) (batch: int64) (length: int64) (repeats: int) (seed: uint64) =
        use layer = new GeometricAttention(config)
        use _ = torch.NewDisposeScope()
        use g = new torch.Generator(seed)
        let s = torch.randn ([| batch; length; config.DModel |], generator = g)
        let frames = Frame.random [| batch; length |] 10.0 torch.float32 torch.CPU g
        let framed = torch.rand([| batch; length |], generator = g).gt(0.1.ToScalar())
        let input = GeometricAttentionInput.Create(s, frames, framed)

        use _ = torch.no_grad ()
        layer.forward input |> ignore

        let scopeBytes =
            use scope = torch.NewDisposeScope()
            let out = layer.forward input

            scope.DisposablesView
            |> Seq.choose (fun d ->
                match d with
                | :? torch.Tensor as t when not (obj.ReferenceEquals(t, out)) && not t.IsInvalid -> storageOf t
                | _ -> None)
            |> Seq.distinctBy fst
            |> Seq.sumBy snd

        let watch = Stopwatch.StartNew()

        for _ in 1..repeats do
            use _ = torch.NewDisposeScope()
            layer.forward input |> ignore

        {
            Implementation = config.Implementation
            Batch = batch
            Length = length
            VHeads = config.VHeads
            MeanMilliseconds = watch.Elapsed.TotalMilliseconds / float (max repeats 1)
            ScopeBytes = scopeBytes
            PairTensorBytes = batch * config.VHeads * length * length * 4L
        }

    /// Approximate FLOPs of one geometric attention forward (projections, the three L² terms; the backward counted
    /// as twice the forward).
    let flops (config: GeometricAttentionConfig) (batch: int64) (length: int64) (backward: bool) =
        let l, d, v = float length, float config.DModel, float config.VHeads
        let projections = 2.0 * l * d * 15.0 * v + 2.0 * l * 3.0 * v * d
        let pairs = 2.0 * v * l * l * 3.0 * 3.0 // rotation scores, distance scores, value sums
        let forward = float batch * (projections + pairs)
        if backward then 3.0 * forward else forward

    /// Times geometric attention (float32, batch 1, random frames, ~10% unframed) for each size, implementation,
    /// length and pass, then measures each cell's peak memory in a second sweep (after all timings, see
    /// `Bench.peakBytes`). `sizes` pairs a label with a config (its Implementation is overridden).
    let sweep
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
                let ms = run config length backward (Bench.time 1 repeats)

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
            |> List.map (fun (_, config, length, backward) -> run config length backward Bench.peakBytes)

        List.zip3 cells times peaks
        |> List.map (fun ((label, config, length, backward), ms, peak) ->
            {
                Sizes = label
                Implementation = config.Implementation
                Length = length
                Pass = if backward then "forward+backward" else "forward"
                Measurement = { Milliseconds = ms; PeakBytes = peak }
                ResiduesPerSecond = float length / (ms / 1000.0)
                GFlops = flops config 1L length backward / (ms * 1e6)
            })

    /// A Markdown table of geometric attention rows, with each row's share of the matmul ceiling.
    let format (ceilingGFlops: float) (rows: GeometricAttentionBenchRow list) =
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
