namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

/// How the two squared-error terms of a gradient-trained quantizer are weighted (ESM3-REFERENCE.md §6.3).
type VqLossForm =
    /// The standard VQ-VAE loss `mean((sg(z) − e)²) + β·mean((z − sg(e))²)`: β weights the commitment term (the
    /// one whose gradient reaches the encoder), as in van den Oord et al., ESM (β = 0.25) and AminoAseed.
    | Standard = 0
    /// The seed's formula `mean((sg(e) − z)²) + β·mean((e − sg(z))²)`: β weights the codebook term instead (⚠ the
    /// seed misplaces β; kept only to reproduce it).
    | SeedBetaOnCodebookTerm = 1

/// The block shape a chunked nearest-code search uses: the distance matrix is computed `Rows` × `Columns` at a
/// time, never larger.
type DistanceBlocks =
    {
        /// Vectors per block (1 … N).
        Rows: int64
        /// Codes per block (1 … K).
        Columns: int64
        /// Bytes of one block: Rows · Columns · element size.
        BlockBytes: int64
    }

/// Vector quantisation as pure functions (ESM3-REFERENCE.md §6; evolutionaryscale/esm `esm/layers/codebook.py`,
/// wilson1yan/VideoGPT `videogpt/vqvae.py` for the EMA update). Shapes in this file: `N` vectors (B·L
/// flattened), `K` codes, `D` code width, `*` leading dims of z (here `K` is the codebook size and `N` the number
/// of vectors, unlike the library-wide legend of `Tensors/Shape.fs`). Nothing here opens a dispose scope;
/// everything works in any float dtype (z and codes must share it).
module Codebook =

    /// The dtype's size in bytes.
    let private elementSize (dtype: torch.ScalarType) =
        match dtype with
        | torch.ScalarType.Float64
        | torch.ScalarType.Int64 -> 8L
        | torch.ScalarType.Float16
        | torch.ScalarType.BFloat16 -> 2L
        | _ -> 4L

    let private checkPair (z: torch.Tensor) (codes: torch.Tensor) =
        Shape.expect "codes" [| -1L; -1L |] codes
        Shape.expect "z" [| -1L; codes.shape.[1] |] z
        Shape.expectSameKind "z" z "codes" codes

        if not (z.is_floating_point ()) then
            raise (ArgumentException(sprintf "z: expected a float tensor, got %O" z.dtype, "z"))

    /// The block shape for a search of `n` vectors against `k` codes whose distance blocks may hold at most
    /// `budgetBytes` (elements of `elementBytes` bytes each): the whole [n, k] matrix when it fits; otherwise as
    /// many whole rows of k distances as fit; when not even one row fits, one row split into column chunks of as
    /// many codes as fit (never less than one element, so a budget below one element yields 1 × 1 blocks).
    let distanceBlocks (budgetBytes: int64) (elementBytes: int64) (n: int64) (k: int64) : DistanceBlocks =
        if budgetBytes <= 0L then
            raise (ArgumentOutOfRangeException("budgetBytes", budgetBytes, "the distance budget must be positive"))

        if elementBytes <= 0L then
            raise (ArgumentOutOfRangeException("elementBytes", elementBytes, "must be positive"))

        let n, k = max n 1L, max k 1L
        let cells = max 1L (budgetBytes / elementBytes)

        let rows, columns = if cells >= k then min n (cells / k), k else 1L, cells

        {
            Rows = rows
            Columns = columns
            BlockBytes = rows * columns * elementBytes
        }

    /// Squared distances in ESM's expanded form `‖z_n‖² − 2 z_n·e_k + ‖e_k‖²`, evaluated in ESM's order
    /// (`(‖z‖² − (2z) eᵀ) + ‖e‖²`), for every pair at once: the [N, K] matrix is materialised (with temporaries of
    /// the same size). The reference the chunked search is checked against.
    /// Shapes: z [N, D], codes [K, D] -> [N, K]
    let squaredDistances (z: torch.Tensor) (codes: torch.Tensor) =
        checkPair z codes
        let codes_DK = codes.t ()

        (z * z).sum(1L, true) - (2.0 * z).matmul(codes_DK)
        + (codes_DK * codes_DK).sum(0L, true)

    /// The nearest code of each vector by a full [N, K] distance matrix, exactly as ESM's forward computes it
    /// (`argmin` of `squaredDistances`). Memory grows as N·K; use `nearestCodes` for large inputs.
    /// Shapes: z [N, D], codes [K, D] -> [N] int64
    let nearestCodesNaive (z: torch.Tensor) (codes: torch.Tensor) =
        use _ = torch.no_grad ()
        (squaredDistances z codes).argmin(1L)

    /// The nearest code of each vector, `argmin_k ‖z_n − e_k‖²` in ESM's expanded form, computed block by block
    /// (`distanceBlocks`) so that no distance block exceeds `budgetBytes` (the block is built in place: one
    /// matmul output, scaled by −2, then ‖z‖² and ‖e‖² added, which rounds exactly as ESM's expression).
    /// Ties go to the lowest code index, as `torch.argmin` does (it returns the first minimal index; across
    /// column blocks a later block wins only when strictly smaller). A NaN distance counts as the minimum, as in
    /// `torch.argmin`. No gradient flows (indices are discrete).
    /// Shapes: z [N, D], codes [K, D] -> [N] int64
    let nearestCodes (budgetBytes: int64) (z: torch.Tensor) (codes: torch.Tensor) =
        checkPair z codes
        use _ = torch.no_grad ()
        let n, k = z.shape.[0], codes.shape.[0]

        if k = 0L then
            raise (ArgumentException("codes: the codebook is empty", "codes"))

        let blocks = distanceBlocks budgetBytes (elementSize z.dtype) n k

        if n = 0L then
            torch.empty ([| 0L |], dtype = torch.int64, device = z.device)
        else
            let zNorm_N1 = (z * z).sum(1L, true)
            let codes_DK = codes.t ()
            let codeNorm_1K = (codes_DK * codes_DK).sum(0L, true)
            let result_N = torch.empty ([| n |], dtype = torch.int64, device = z.device)
            let mutable r0 = 0L

            while r0 < n do
                let rows = min blocks.Rows (n - r0)
                use twoZ_RD = 2.0 * z.narrow (0L, r0, rows)
                let zNorm_R1 = zNorm_N1.narrow (0L, r0, rows)
                let mutable best_R: torch.Tensor = null
                let mutable bestIndex_R: torch.Tensor = null
                let mutable c0 = 0L

                while c0 < k do
                    let columns = min blocks.Columns (k - c0)
                    use block_RC = twoZ_RD.matmul (codes_DK.narrow (1L, c0, columns))

                    block_RC.neg_().add_(zNorm_R1).add_(codeNorm_1K.narrow (1L, c0, columns))
                    |> ignore

                    let index_R1 = block_RC.argmin(1L).unsqueeze(1L)
                    let value_R = block_RC.gather(1L, index_R1).squeeze(1L)
                    let index_R = index_R1.squeeze (1L) + c0

                    if isNull best_R then
                        best_R <- value_R
                        bestIndex_R <- index_R
                    else
                        let take_R =
                            value_R.lt(best_R).logical_or(value_R.isnan().logical_and(best_R.isnan().logical_not()))

                        best_R <- torch.where (take_R, value_R, best_R)
                        bestIndex_R <- torch.where (take_R, index_R, bestIndex_R)

                    c0 <- c0 + columns

                result_N.narrow(0L, r0, rows).copy_(bestIndex_R) |> ignore
                r0 <- r0 + rows

            result_N

    /// One-hot encodings of code indices, in `dtype` (the seed's `Y`, `Y[n, tok_n] = 1`).
    /// Shapes: indices [*] int64 -> [*, K]
    let oneHot (codeCount: int64) (dtype: torch.ScalarType) (indices: torch.Tensor) =
        torch.nn.functional.one_hot(indices, codeCount).to_type(dtype)

    /// The codes of the given indices, `E[tok]` (ESM's `dictionary_lookup`); gradients reach `codes`.
    /// Shapes: codes [K, D], indices [*] int64 -> [*, D]
    let lookup (codes: torch.Tensor) (indices: torch.Tensor) =
        Shape.expect "codes" [| -1L; -1L |] codes

        codes.index_select(0L, indices.reshape ([| -1L |])).reshape(Array.append indices.shape [| codes.shape.[1] |])

    /// The seed's lookup `z_q = Y E` through the one-hot product (same values as `lookup`, at N·K memory).
    /// Shapes: oneHot [*, K], codes [K, D] -> [*, D]
    let lookupOneHot (codes: torch.Tensor) (oneHot: torch.Tensor) = oneHot.matmul (codes)

    /// ESM's `soft_codebook_lookup`: a weighted sum of codes.
    /// Shapes: weights [*, K], codes [K, D] -> [*, D]
    let softLookup (codes: torch.Tensor) (weights: torch.Tensor) = weights.matmul (codes)

    /// The straight-through estimator `z + sg(e − z)` (ESM: `(embeddings - z).detach() + z`): the forward value is
    /// e (to 1 ulp of max(|z|, |e|)), the gradient reaches z unchanged and never reaches e.
    /// Shapes: z [*, D], e [*, D] -> [*, D]
    let straightThrough (z: torch.Tensor) (e: torch.Tensor) = (e - z).detach() + z

    /// Mean of `(a − b)²` over every entry, or over the entries of the rows where `mask` is true
    /// (0 when the mask selects nothing). Shapes: a [*, D], b [*, D], mask [*] bool | None -> scalar
    let maskedMse (a: torch.Tensor) (b: torch.Tensor) (mask: torch.Tensor option) =
        match mask with
        | None -> torch.nn.functional.mse_loss (a, b)
        | Some m ->
            let weight = m.to_type(a.dtype).unsqueeze(-1L)
            let sq = (a - b).square() * weight
            let count = weight.sum () * float a.shape.[a.shape.Length - 1]
            sq.sum () / count.clamp_min (1.0)

    /// ESM's commitment loss `β · mean((z − sg(e))²)`: its gradient reaches z only.
    /// Shapes: z [*, D], e [*, D], mask [*] bool | None -> scalar
    let commitmentLoss (beta: float) (z: torch.Tensor) (e: torch.Tensor) (mask: torch.Tensor option) =
        beta * maskedMse z (e.detach ()) mask

    /// The codebook loss `mean((sg(z) − e)²)`: its gradient reaches the codes only.
    /// Shapes: z [*, D], e [*, D], mask [*] bool | None -> scalar
    let codebookLoss (z: torch.Tensor) (e: torch.Tensor) (mask: torch.Tensor option) = maskedMse (z.detach ()) e mask

    /// The standard VQ-VAE loss `mean((sg(z) − e)²) + β · mean((z − sg(e))²)`.
    /// Shapes: z [*, D], e [*, D], mask [*] bool | None -> scalar
    let standardLoss (beta: float) (z: torch.Tensor) (e: torch.Tensor) (mask: torch.Tensor option) =
        codebookLoss z e mask + commitmentLoss beta z e mask

    /// The seed's loss `mean((sg(z_q) − z)²) + β · mean((z_q − sg(z))²)` with z_q = e (⚠ β on the codebook term;
    /// ESM3-REFERENCE.md §6.3). Shapes: z [*, D], e [*, D], mask [*] bool | None -> scalar
    let seedLoss (beta: float) (z: torch.Tensor) (e: torch.Tensor) (mask: torch.Tensor option) =
        maskedMse (e.detach ()) z mask + beta * maskedMse e (z.detach ()) mask

    /// The gradient-trained quantizer's loss in the chosen form.
    /// Shapes: z [*, D], e [*, D], mask [*] bool | None -> scalar
    let vqLoss (form: VqLossForm) (beta: float) (z: torch.Tensor) (e: torch.Tensor) (mask: torch.Tensor option) =
        match form with
        | VqLossForm.SeedBetaOnCodebookTerm -> seedLoss beta z e mask
        | _ -> standardLoss beta z e mask

    /// How often each code is used: counts over the indices (of the rows where `mask` is true).
    /// Shapes: indices [*] int64, mask [*] bool | None -> [K] int64
    let histogram (codeCount: int64) (indices: torch.Tensor) (mask: torch.Tensor option) =
        let flat =
            match mask with
            | None -> indices.reshape ([| -1L |])
            | Some m -> indices.masked_select (m)

        torch.bincount (flat, minlength = codeCount)

    /// Perplexity of code use `exp(−Σ_k p_k ln p_k)`, p the batch's usage frequencies, with 0·ln 0 = 0 (so a
    /// uniform use of k codes gives exactly k and a single code 1). VideoGPT and the seed write `ln(p + 1e-10)`,
    /// which lowers the value by a relative ≤ K·1e-10. Returns 1 when nothing is counted.
    /// Shapes: indices [*] int64, mask [*] bool | None -> scalar float64
    let perplexity (codeCount: int64) (indices: torch.Tensor) (mask: torch.Tensor option) =
        let counts = (histogram codeCount indices mask).to_type(torch.float64)
        let p = counts / counts.sum().clamp_min(1.0)
        (torch.xlogy (p, p)).sum().neg().exp()

    /// The batch statistics of an EMA step: per-code counts `n_k` and sums `s_k = Σ_{tok_n = k} z_n` (of the
    /// rows where `mask` is true), in z's dtype.
    /// Shapes: z [N, D], indices [N] int64, mask [N] bool | None -> [K], [K, D]
    let assignmentSums (codeCount: int64) (z: torch.Tensor) (indices: torch.Tensor) (mask: torch.Tensor option) =
        let z, indices =
            match mask with
            | None -> z, indices
            | Some m -> z.index_select (0L, m.nonzero().squeeze(1L)), indices.masked_select (m)

        let counts_K =
            torch
                .zeros([| codeCount |], dtype = z.dtype, device = z.device)
                .index_add_(
                    0L,
                    indices,
                    torch.ones ([| indices.shape.[0] |], dtype = z.dtype, device = z.device),
                    (1.0).ToScalar()
                )

        let sums_KD =
            torch
                .zeros([| codeCount; z.shape.[1] |], dtype = z.dtype, device = z.device)
                .index_add_(0L, indices, z, (1.0).ToScalar())

        counts_K, sums_KD

    /// One EMA step of the VideoGPT/ESM codebook (ESM3-REFERENCE.md §6.2, our reconstruction):
    /// `N ← γN + (1 − γ)n`, `M ← γM + (1 − γ)s`, `Ñ_k = (N_k + ε)/(Σ_j N_j + Kε) · Σ_j N_j`, `e_k = M_k / Ñ_k`.
    /// Returns the new (N, M, codes); the inputs are not modified.
    /// Shapes: counts N [K], sums M [K, D], batchCounts n [K], batchSums s [K, D] -> [K], [K, D], [K, D]
    let emaStep
        (decay: float)
        (epsilon: float)
        (counts: torch.Tensor)
        (sums: torch.Tensor)
        (batchCounts: torch.Tensor)
        (batchSums: torch.Tensor)
        =
        let k = float counts.shape.[0]
        let n_K = decay * counts + (1.0 - decay) * batchCounts
        let m_KD = decay * sums + (1.0 - decay) * batchSums
        let total = n_K.sum ()
        let smoothed_K = (n_K + epsilon) / (total + k * epsilon) * total
        n_K, m_KD, m_KD / smoothed_K.unsqueeze (1L)

    /// ESM's `_tile`: when x has fewer than `rows` rows, repeats it ceil(rows / n) times and adds Gaussian noise of
    /// standard deviation 0.01/√D to every row (drawn from `generator`); otherwise returns x unchanged.
    /// Shapes: x [N, D] -> [max(N, ceil(rows/N)·N), D]
    let tile (generator: torch.Generator) (rows: int64) (x: torch.Tensor) =
        let n, d = x.shape.[0], x.shape.[1]

        if n >= rows then
            x
        else
            let repeats = (rows + n - 1L) / n
            let y = x.repeat ([| repeats; 1L |])
            let std = 0.01 / Math.Sqrt(float d)

            let noise =
                torch.randn(y.shape, dtype = y.dtype, generator = generator).``to``(y.device)

            y + noise * std

    /// `count` random rows of x as ESM's data-dependent init draws them: tile x to at least `count` rows (`tile`),
    /// then the first `count` rows of a random permutation. Shapes: x [N, D] (N ≥ 1) -> [count, D]
    let randomRows (generator: torch.Generator) (count: int64) (x: torch.Tensor) =
        if x.shape.[0] = 0L then
            raise (ArgumentException("x: no rows to draw from", "x"))

        let y = tile generator count x

        let order =
            torch.randperm(y.shape.[0], generator = generator).narrow(0L, 0L, count).``to``(y.device)

        y.index_select (0L, order)
