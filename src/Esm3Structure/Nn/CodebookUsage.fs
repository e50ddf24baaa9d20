namespace Esm3Structure.Nn

open System
open System.Collections.Generic
open TorchSharp
open Esm3Structure.Tensors

/// Quantizer metrics of one batch or of many merged (a validation epoch), as plain numbers for training logs
/// (ESM3-TRAINING.md §4.4).
type QuantizerMetrics =
    {
        /// Codebook size K.
        Codes: int64
        /// Vectors counted (real residues only when a mask was given).
        Count: int64
        /// Codes used at least once.
        LiveCodes: int64
        /// LiveCodes / K (the utilisation rate, "UR").
        LiveFraction: float
        /// exp(entropy of the usage frequencies), in [1, K]; 1 when nothing was counted.
        Perplexity: float
        /// Perplexity / K, in [1/K, 1].
        PerplexityPerCode: float
        /// Mean over counted vectors and their D entries of (z − e)², i.e. the MSE the commitment loss scales by β
        /// (NaN when nothing was counted or no error was recorded).
        MeanSquaredError: float
    }

    /// The metrics as (name, value) pairs for a metrics log, each name prefixed (e.g. "vq/").
    member m.ToLog(prefix: string) : IReadOnlyList<KeyValuePair<string, float>> =
        [|
            KeyValuePair(prefix + "count", float m.Count)
            KeyValuePair(prefix + "live_codes", float m.LiveCodes)
            KeyValuePair(prefix + "live_fraction", m.LiveFraction)
            KeyValuePair(prefix + "perplexity", m.Perplexity)
            KeyValuePair(prefix + "perplexity_per_code", m.PerplexityPerCode)
            KeyValuePair(prefix + "mse", m.MeanSquaredError)
        |]
        :> IReadOnlyList<_>

/// Code usage accumulated over batches: the raw sums every metric is derived from, so that merging two batches
/// and then deriving equals deriving over their union.
type CodebookUsage =
    {
        /// Uses per code [K].
        Histogram: int64[]
        /// Vectors counted (Σ Histogram).
        Count: int64
        /// Code width D (for the per-entry mean error).
        Dim: int64
        /// Σ over counted vectors of ‖z − e‖²; NaN when not recorded (usage from indices alone).
        SquaredErrorSum: float
    }

/// Building, merging and reading `CodebookUsage`.
module CodebookUsage =

    /// No vectors counted yet (the start of an epoch's accumulation).
    let empty (codes: int64) (dim: int64) =
        {
            Histogram = Array.zeroCreate (int codes)
            Count = 0L
            Dim = dim
            SquaredErrorSum = 0.0
        }

    /// Usage from code indices alone (of the rows where `mask` is true); the error sum is NaN.
    /// Shapes: indices [*] int64, mask [*] bool | None
    let ofIndices (codes: int64) (dim: int64) (indices: torch.Tensor) (mask: torch.Tensor option) =
        use _ = torch.NewDisposeScope()

        let histogram =
            (Codebook.histogram codes indices mask).cpu().data<int64>().ToArray()

        {
            Histogram = histogram
            Count = Array.sum histogram
            Dim = dim
            SquaredErrorSum = Double.NaN
        }

    /// Usage and quantisation error of one batch: z the encoder outputs, quantized the vectors they were
    /// replaced by (the codes, or the straight-through output, whose value is the codes), indices the codes'
    /// indices; only rows where `mask` is true count. Computed without gradient, in float64.
    /// Shapes: z [*, D], quantized [*, D], indices [*] int64, mask [*] bool | None
    let compute
        (codes: int64)
        (z: torch.Tensor)
        (quantized: torch.Tensor)
        (indices: torch.Tensor)
        (mask: torch.Tensor option)
        =
        Shape.expect "quantized" z.shape quantized
        Shape.expect "indices" (Shape.batchDims 1 z) indices
        mask |> Option.iter (Shape.expect "mask" indices.shape)
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad ()
        let usage = ofIndices codes z.shape.[z.shape.Length - 1] indices mask

        let error_N =
            (z.detach().to_type(torch.float64) - quantized.detach().to_type(torch.float64)).square().sum(-1L)

        let error =
            match mask with
            | None -> error_N.sum().ToDouble()
            | Some m -> error_N.masked_select(m).sum().ToDouble()

        { usage with SquaredErrorSum = error }

    /// The usage of two batches together. Both must describe the same codebook size and width.
    let merge (a: CodebookUsage) (b: CodebookUsage) =
        if a.Histogram.Length <> b.Histogram.Length || a.Dim <> b.Dim then
            raise (
                ArgumentException(
                    sprintf
                        "cannot merge usage of %d codes × %d with %d codes × %d"
                        a.Histogram.Length
                        a.Dim
                        b.Histogram.Length
                        b.Dim
                )
            )

        {
            Histogram = Array.map2 (+) a.Histogram b.Histogram
            Count = a.Count + b.Count
            Dim = a.Dim
            SquaredErrorSum = a.SquaredErrorSum + b.SquaredErrorSum
        }

    /// exp(−Σ p ln p) over the usage frequencies (0·ln 0 = 0), 1 when nothing was counted.
    let perplexity (usage: CodebookUsage) =
        if usage.Count = 0L then
            1.0
        else
            let total = float usage.Count

            usage.Histogram
            |> Array.sumBy (fun c ->
                if c = 0L then
                    0.0
                else
                    let p = float c / total
                    -p * Math.Log p)
            |> Math.Exp

    /// Every metric derived from the usage.
    let metrics (usage: CodebookUsage) : QuantizerMetrics =
        let k = int64 usage.Histogram.Length
        let live = usage.Histogram |> Array.sumBy (fun c -> if c > 0L then 1L else 0L)
        let ppl = perplexity usage

        {
            Codes = k
            Count = usage.Count
            LiveCodes = live
            LiveFraction = float live / float k
            Perplexity = ppl
            PerplexityPerCode = ppl / float k
            MeanSquaredError =
                if usage.Count = 0L then
                    Double.NaN
                else
                    usage.SquaredErrorSum / (float usage.Count * float usage.Dim)
        }

    /// How many distinct vectors a codebook holds when codes closer than `relative` × the median code norm count as
    /// one: the groups of codes linked by such near pairs (single linkage). A healthy codebook gives K; one whose
    /// codes were restarted at every step from batches smaller than K (tiled copies with 1 % noise; see
    /// `TokenizerTrainConfig.warnings`) gives about the batch's row count. Shapes: codes [K, D] -> int64
    let distinctCodes (relative: float) (codes: torch.Tensor) =
        if codes.dim () <> 2L then
            Shape.mismatch "codes" "[K, D]" codes

        let k = codes.shape.[0]

        if k = 0L then
            0L
        else
            use _ = torch.NewDisposeScope()
            let c = codes.detach().to_type torch.float64
            let limit = relative * c.norm(1).median().ToDouble()
            let parent = Array.init (int k) id

            let rec root (i: int) =
                if parent.[i] = i then
                    i
                else
                    parent.[i] <- parent.[parent.[i]]
                    root parent.[i]

            // Blocks of rows against all codes keep the distance matrix at most 256 × K.
            let block = 256L

            for start in 0L .. block .. k - 1L do
                let rows = c.narrow (0L, start, min block (k - start))

                let near =
                    torch.cdist(rows.unsqueeze 0L, c.unsqueeze 0L).squeeze(0L).lt(limit.ToScalar())

                let pairs = near.nonzero().data<int64>().ToArray()

                for p in 0 .. pairs.Length / 2 - 1 do
                    let i = int (start + pairs.[2 * p])
                    let j = int pairs.[2 * p + 1]
                    let a, b = root i, root j

                    if a <> b then
                        parent.[max a b] <- min a b

            [| 0 .. int k - 1 |] |> Array.sumBy (fun i -> if root i = i then 1L else 0L)
