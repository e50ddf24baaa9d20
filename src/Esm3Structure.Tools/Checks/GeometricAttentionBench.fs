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
