namespace Esm3Structure.Structure

open System
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Geometry

/// LDDT settings: the inclusion radius (judged on the reference) and the distance-difference thresholds, in Å.
/// Released defaults (ESM `esm/utils/structure/metrics.py`, `compute_lddt`): cutoff 15, thresholds 0.5/1/2/4.
type LddtConfig = { Cutoff: float; Thresholds: float[] }

/// Named LDDT configurations and their validation.
module LddtConfig =
    /// ESM's defaults: cutoff 15 Å, thresholds 0.5, 1, 2, 4 Å.
    let esm =
        {
            Cutoff = 15.0
            Thresholds = [| 0.5; 1.0; 2.0; 4.0 |]
        }

    /// Checks that the cutoff is positive and finite and that there is at least one positive, finite threshold.
    let validate (c: LddtConfig) : Result<LddtConfig, string list> =
        let errors =
            [
                if not (c.Cutoff > 0.0 && Double.IsFinite c.Cutoff) then
                    yield sprintf "Cutoff: must be positive and finite, got %g" c.Cutoff
                if isNull c.Thresholds || c.Thresholds.Length = 0 then
                    yield "Thresholds: at least one threshold is needed"
                else
                    for t in c.Thresholds do
                        if not (t > 0.0 && Double.IsFinite t) then
                            yield sprintf "Thresholds: each must be positive and finite, got %g" t
            ]

        if errors.IsEmpty then Ok c else Error errors

/// The result of an LDDT computation (tensors in the model's dtype).
/// - `PerResidue` [*, L]: mean pair score of each residue over its scored pairs; NaN for a residue with no scored
///   pair (absent, or no present neighbour within the cutoff in the reference).
/// - `Scored` [*, L] bool: the residue has at least one scored pair (exactly where `PerResidue` is not NaN).
/// - `Protein` [*]: the score pooled over all scored (ordered) pairs, ESM's `compute_lddt(per_residue=False)`
///   convention (not the mean of `PerResidue`); NaN when no pair is scored at all.
type LddtResult =
    {
        PerResidue: torch.Tensor
        Scored: torch.Tensor
        Protein: torch.Tensor
    }

/// Structure-comparison metrics over CA (or backbone) coordinates: LDDT-CA, TM-score, GDT_TS, backbone RMSD.
/// Definitions: ESM3-TRAINING §2.2. Residue correspondence is always by index (no sequence alignment).
/// Masks [*, L] mark residues present in both structures (non-bool masks are read as `mask <> 0`); absent residues
/// may hold NaN coordinates, which never reach a result. Arithmetic runs in float64.
module Metrics =

    /// GDT_TS distance thresholds in Å (ESM `compute_gdt_ts_no_alignment`: strict `<`).
    let gdtThresholds = [| 1.0; 2.0; 4.0; 8.0 |]

    let private f64 = torch.ScalarType.Float64

    /// Pairwise Euclidean distances. Shapes: x [*, L, 3] -> [*, L, L]
    let private distances (x: torch.Tensor) =
        (x.unsqueeze -2L - x.unsqueeze -3L).square().sum(-1L).sqrt()

    /// LDDT-CA with an explicit configuration (superposition-free). For residue i the scored partners are
    /// `S_i = { j ≠ i : both present, d_ij(reference) < Cutoff }`; a pair scores the fraction of thresholds τ with
    /// `|d_ij(model) − d_ij(reference)| < τ`. See `LddtResult` for the per-residue and pooled outputs.
    /// Shapes: model [*, L, 3], reference [*, L, 3], mask [*, L] -> PerResidue [*, L], Scored [*, L], Protein [*]
    let lddtCaWith (config: LddtConfig) (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) =
        match LddtConfig.validate config with
        | Error es -> raise (ArgumentException("LddtConfig: " + String.Join("; ", es), "config"))
        | Ok _ -> ()

        Superpose.checkPair model reference mask
        let present = Superpose.presence model mask
        let dm_LL = distances (Superpose.clean model present)
        let dr_LL = distances (Superpose.clean reference present)
        let l = model.shape.[model.shape.Length - 2]

        let notSelf =
            torch.eye(l, l, dtype = torch.ScalarType.Bool, device = model.device).logical_not()

        let pair_LL =
            present
                .unsqueeze(-1L)
                .logical_and(present.unsqueeze -2L)
                .logical_and(notSelf)
                .logical_and(dr_LL.lt (torch.full_like (dr_LL, config.Cutoff)))

        let delta = (dm_LL - dr_LL).abs()

        let score_LL =
            config.Thresholds
            |> Array.map (fun t -> delta.lt(torch.full_like (delta, t)).to_type f64)
            |> Array.reduce (+)
            |> fun s -> s / float config.Thresholds.Length

        let pairF = pair_LL.to_type f64
        let count_L = pairF.sum (-1L)
        let sum_L = (pairF * score_LL).sum(-1L)
        let scored = count_L.gt (torch.zeros_like count_L)

        let perResidue =
            torch.where (scored, sum_L / count_L.clamp_min 1.0, torch.full_like (sum_L, Double.NaN))

        let protein = sum_L.sum (-1L) / count_L.sum (-1L) // 0/0 = NaN when nothing is scored

        {
            PerResidue = perResidue.to_type model.dtype
            Scored = scored
            Protein = protein.to_type model.dtype
        }

    /// LDDT-CA with ESM's defaults (`LddtConfig.esm`: cutoff 15 Å, thresholds 0.5/1/2/4 Å).
    /// Shapes: model [*, L, 3], reference [*, L, 3], mask [*, L] -> PerResidue [*, L], Scored [*, L], Protein [*]
    let lddtCa (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) =
        lddtCaWith LddtConfig.esm model reference mask

    /// GDT_TS as ESM computes it: superpose the model on the reference with the RMSD (Kabsch) fit over the present
    /// residues, then average over τ ∈ {1, 2, 4, 8} Å the fraction of present CA with deviation < τ. (This is not the
    /// GDT-optimal superposition of LGA.) NaN when no residue is present. Returned in the model's dtype.
    /// Shapes: model [*, L, 3], reference [*, L, 3], mask [*, L] -> [*]
    let gdtTs (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) =
        Superpose.checkPair model reference mask
        let present = Superpose.presence model mask

        let fit, pc, qc, n =
            Superpose.fit64 (Superpose.clean model present) (Superpose.clean reference present) present

        let dev_L = (pc.matmul (fit.R.transpose (-1L, -2L)) - qc).square().sum(-1L).sqrt()

        let fractions =
            gdtThresholds
            |> Array.map (fun t ->
                dev_L.lt(torch.full_like (dev_L, t)).logical_and(present).to_type(f64).sum(-1L)
                / n)

        ((Array.reduce (+) fractions) / float gdtThresholds.Length).to_type model.dtype

    /// Backbone RMSD (ESM3-TRAINING §2.2): the N, CA, C atoms of the residues present in both structures, after the
    /// Kabsch fit of all those atoms together (the [*, L, 3, 3] atoms are flattened to [*, 3L, 3]). 0 when no residue
    /// is present. Returned in the model's dtype.
    /// Shapes: model [*, L, 3, 3], reference [*, L, 3, 3] (atoms N, CA, C), mask [*, L] -> [*]
    let backboneRmsd (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor) =
        if model.dim () < 3L then
            Shape.mismatch "model" "[*, L, 3, 3]" model

        Shape.expectTrailing "model" [| 3L; 3L |] model

        if reference.shape <> model.shape then
            Shape.mismatch "reference" (Shape.show model.shape + " (the shape of model)") reference

        let batch = Shape.batchDims 3 model
        let l = model.shape.[model.shape.Length - 3]
        Shape.expect "mask" (Array.append batch [| l |]) mask

        let flatPoints (x: torch.Tensor) =
            x.reshape (Array.append batch [| 3L * l; 3L |])

        let flatMask =
            mask.unsqueeze(-1L).expand(Array.append batch [| l; 3L |]).reshape(Array.append batch [| 3L * l |])

        Superpose.rmsd (flatPoints model) (flatPoints reference) (Some flatMask)

    /// The TM-score distance scale for a reference of `l` residues: `d0 = 1.24 (l − 15)^(1/3) − 1.8`, and 0.5 when
    /// `l ≤ 15` or when the formula gives less than 0.5 (as the TMscore program does; the formula is below 0.5 for
    /// l ≤ 21).
    let tmScoreD0 (l: int) : float =
        let d0 =
            if l > 15 then
                1.24 * Math.Cbrt(float (l - 15)) - 1.8
            else
                0.5

        max d0 0.5

    /// Present residues in float64, compacted: (model [n, 3], reference [n, 3]).
    let private compact (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) =
        Shape.expect "model" [| -1L; 3L |] model
        Superpose.checkPair model reference mask
        let idx = (Superpose.presence model mask).nonzero().squeeze -1L
        model.to_type(f64).index_select(0L, idx), reference.to_type(f64).index_select(0L, idx)

    /// Σᵢ 1 / (1 + (dᵢ/d0)²) / n over the last dim. Shapes: dist [*, n] -> [*]
    let private tmOfDistances (d0: float) (n: int) (dist: torch.Tensor) =
        (1.0 / (1.0 + (dist / d0).square())).sum(-1L) / float n

    /// TM-score of the structures as given (no superposition), normalised by the number n of present residues,
    /// with d0 = `tmScoreD0 n`. NaN when no residue is present.
    /// Shapes: model [L, 3], reference [L, 3], mask [L] -> float
    let tmScoreNoSuperpose (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) : float =
        use _ = torch.NewDisposeScope() // returns a float: nothing escapes
        let p, q = compact model reference mask
        let n = int p.shape.[0]

        if n = 0 then
            Double.NaN
        else
            tmOfDistances (tmScoreD0 n) n ((p - q).square().sum(-1L).sqrt())
            |> fun t -> t.ToDouble()

    /// The TMscore program's fragment lengths (Zhang & Skolnick; TMscore.f): n, n/2, n/4, ... (integer division, at
    /// most 5 halvings), ending with the minimum length min(4, n).
    let tmScoreFragmentLengths (n: int) : int list =
        let lenMin = min 4 n

        let rec go i acc =
            if i > 5 then
                List.rev (lenMin :: acc)
            else
                let l = n / (1 <<< (i - 1))

                if l <= lenMin then
                    List.rev (lenMin :: acc)
                else
                    go (i + 1) (l :: acc)

        go 1 []

    /// Seeds are processed in chunks of at most this many points (seeds × residues) to bound memory.
    let private chunkPoints = 1 <<< 17

    /// TM-score of `model` against `reference`, residues corresponding by index, normalised by the number n of
    /// residues the mask keeps (present in both; all L without a mask). Note: the TMscore program divides by the full
    /// reference length instead, which is larger when the model lacks residues the reference has. d0 = `tmScoreD0 n`.
    /// The score is maximised over superpositions by the TMscore program's heuristic (Zhang & Skolnick 2004,
    /// TMscore.f, restated):
    /// seeds are Kabsch fits on every contiguous fragment (over the present residues) of each length in
    /// `tmScoreFragmentLengths n`; each seed selects the residues closer than d0s − 1 (d0s = d0 clamped to [4.5, 8];
    /// the cutoff grows by 0.5 Å until at least 3 residues are selected when n > 3), then up to 20 times re-fits on the
    /// selection and re-selects with d0s + 1, stopping when the selection no longer changes. Every superposition met
    /// is scored and the best score is returned. Seeds run together in batches (of at most 2^17 seed × residue
    /// points). NaN when no residue is present.
    /// Cost: about 5n seeds × up to 21 batched Kabsch fits over n points.
    /// Shapes: model [L, 3], reference [L, 3], mask [L] -> float
    let tmScore (model: torch.Tensor) (reference: torch.Tensor) (mask: torch.Tensor option) : float =
        // This function returns a float, so it owns its temporaries: one scope for the call, one per iteration.
        use _ = torch.NewDisposeScope()
        let p, q = compact model reference mask
        let n = int p.shape.[0]

        if n = 0 then
            Double.NaN
        else
            let d0 = tmScoreD0 n
            let d0Search = d0 |> max 4.5 |> min 8.0

            let seeds =
                [|
                    for len in tmScoreFragmentLengths n do
                        for start in 0 .. n - len -> int64 start, int64 len
                |]

            let pos_1N =
                torch.arange(int64 n, dtype = torch.ScalarType.Int64, device = p.device).unsqueeze 0L

            // Selection of residues closer than d (grown by 0.5 Å steps until ≥ 3 are selected, when n > 3).
            // Shapes: dist [S, n] -> [S, n] bool
            let within (d: float) (dist: torch.Tensor) =
                if n > 3 then
                    let struct (d3, _) = dist.kthvalue (3L, Nullable -1L, false) // 3rd smallest  [S]
                    let steps = (((d3 - d) / 0.5).floor() + 1.0).clamp_min 0.0
                    let dTmp = steps * 0.5 + d
                    dist.lt (dTmp.unsqueeze -1L)
                else
                    dist.lt (torch.full_like (dist, d))

            // Fit on `sel`, score, and select anew with cutoff d. Shapes: sel [S, n] -> best float, next sel [S, n]
            let step (pS: torch.Tensor) (qS: torch.Tensor) (sel: torch.Tensor) (d: float) =
                use scope = torch.NewDisposeScope()

                let fit, _, _, _ =
                    Superpose.fit64 (Superpose.clean pS sel) (Superpose.clean qS sel) sel

                let dist = (Frame.applyEach fit pS - qS).square().sum(-1L).sqrt() // [S, n]
                let best = (tmOfDistances d0 n dist).max().ToDouble()
                let next = within d dist
                best, scope.MoveToOuter next

            let chunk = max 1 (chunkPoints / n)
            let mutable best = 0.0

            for c in 0..chunk .. seeds.Length - 1 do
                let part = seeds.[c .. min (seeds.Length - 1) (c + chunk - 1)]
                let s = int64 part.Length
                let starts = torch.tensor(part |> Array.map fst, device = p.device).unsqueeze -1L
                let lens = torch.tensor(part |> Array.map snd, device = p.device).unsqueeze -1L
                let sel0 = pos_1N.ge(starts).logical_and(pos_1N.lt (starts + lens)) // [S, n]
                let pS = p.unsqueeze(0L).expand(s, int64 n, 3L)
                let qS = q.unsqueeze(0L).expand(s, int64 n, 3L)
                let b0, sel1 = step pS qS sel0 (d0Search - 1.0)
                best <- max best b0
                let mutable sel = sel1
                let mutable it = 1
                let mutable converged = false

                while it <= 20 && not converged do
                    let b, next = step pS qS sel (d0Search + 1.0)
                    best <- max best b
                    converged <- next.eq(sel).all().ToBoolean()
                    sel <- next
                    it <- it + 1

            best

    /// Longest reference CA(i)–CA(i+1) distance (Å) counted as a link of the chain: trans peptides give 3.8 Å, cis
    /// 2.9 Å; anything longer is a chain break.
    [<Literal>]
    let CaLinkMax = 4.2

    /// The signed error of each CA(i)–CA(i+1) distance of a model, d_model − d_reference (Å), over the links the
    /// reference holds (its CA(i)–CA(i+1) distance at most `CaLinkMax`; residues with a NaN CA count as breaks). A
    /// decoder that shrinks its chain locally shows a negative mean here however good its global fit.
    /// Shapes: model [L, 3], reference [L, 3] -> float[] (one per link, in chain order)
    let caStepErrors (model: torch.Tensor) (reference: torch.Tensor) =
        Shape.expect "reference" model.shape reference

        if model.dim () <> 2L || model.shape.[1] <> 3L then
            Shape.mismatch "model" "[L, 3]" model

        let l = model.shape.[0]

        if l < 2L then
            [||]
        else
            use _ = torch.NewDisposeScope()

            let step (x: torch.Tensor) =
                let x = x.to_type f64
                (x.narrow (0L, 1L, l - 1L) - x.narrow (0L, 0L, l - 1L)).square().sum(-1L).sqrt()

            let dm = (step model).data<float>().ToArray()
            let dr = (step reference).data<float>().ToArray()

            Array.zip dm dr
            |> Array.filter (fun (m, r) -> Double.IsFinite m && Double.IsFinite r && r <= CaLinkMax)
            |> Array.map (fun (m, r) -> m - r)

    /// The median of values (the mean of the middle two for an even count); NaN for none.
    let median (xs: float[]) =
        if xs.Length = 0 then
            nan
        else
            let s = Array.sort xs
            let n = s.Length

            if n % 2 = 1 then
                s.[n / 2]
            else
                0.5 * (s.[n / 2 - 1] + s.[n / 2])

    /// Pearson's correlation of paired values, over the pairs where both are finite (e.g. per-residue pLDDT against
    /// per-residue LDDT-CA, whose unscored residues are NaN); NaN with fewer than 2 such pairs or no spread. Sums in
    /// float64 after centring. A length mismatch raises an `ArgumentException`.
    let pearson (xs: float[]) (ys: float[]) =
        if xs.Length <> ys.Length then
            raise (ArgumentException(sprintf "pearson: %d values against %d" xs.Length ys.Length, "ys"))

        let pairs =
            Array.zip xs ys
            |> Array.filter (fun (x, y) -> Double.IsFinite x && Double.IsFinite y)

        if pairs.Length < 2 then
            nan
        else
            let mx = pairs |> Array.averageBy fst
            let my = pairs |> Array.averageBy snd
            let sxy = pairs |> Array.sumBy (fun (x, y) -> (x - mx) * (y - my))
            let sxx = pairs |> Array.sumBy (fun (x, _) -> (x - mx) * (x - mx))
            let syy = pairs |> Array.sumBy (fun (_, y) -> (y - my) * (y - my))

            if sxx = 0.0 || syy = 0.0 then
                nan
            else
                sxy / sqrt (sxx * syy)
