namespace Esm3Structure.Structure

open System
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Geometry

/// Optimal rigid superposition (Kabsch) of one point set onto another, and RMSD.
///
/// Conventions shared by every function here:
/// - `mobile` and `target` have the same shape [*, N, 3] (any leading batch dims); they may differ in float dtype
///   but must live on the same device.
/// - `mask` [*, N] (optional) marks the points present in both sets. A non-bool mask is read as `mask <> 0`.
///   Masked-out points may hold anything, NaN included: they are replaced by 0 before any arithmetic, so they never
///   reach the result.
/// - All arithmetic runs in float64; returned tensors are cast back to `mobile`'s dtype.
/// - Fewer than 3 present points define no unique rotation. Then the rotation is the identity and the translation
///   moves the centroid of the present mobile points onto that of the present target points (with no present point
///   at all, the translation is 0). Nothing here ever returns NaN for NaN-free present points.
///
/// The fit follows the design note (ESM3-TRAINING §2.2): centre both sets on their centroids,
/// `H = Σ p̃ q̃ᵀ = U S Vᵀ`, `s = sign det(V Uᵀ)`, `R = V diag(1, 1, s) Uᵀ`, so `R p + t` best fits `q` with det R = +1
/// (a mirrored target yields the best proper rotation, never a reflection).
module Superpose =

    /// The number of present points below which no rotation is fitted (identity is returned instead).
    [<Literal>]
    let MinPointsForRotation = 3

    /// Checks shapes of a mobile/target pair and its optional mask.
    let internal checkPair (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) =
        if mobile.dim () < 2L then
            Shape.mismatch "mobile" "[*, N, 3]" mobile

        Shape.expectTrailing "mobile" [| 3L |] mobile

        if target.shape <> mobile.shape then
            Shape.mismatch "target" (Shape.show mobile.shape + " (the shape of mobile)") target

        if mobile.device.``type`` <> target.device.``type`` then
            raise (ArgumentException(sprintf "mobile is on %O but target is on %O" mobile.device target.device))

        match mask with
        | Some m -> Shape.expect "mask" (Shape.batchDims 1 mobile) m
        | None -> ()

    /// The presence mask as bool [*, N] (all true when no mask is given).
    let internal presence (points: torch.Tensor) (mask: torch.Tensor option) : torch.Tensor =
        match mask with
        | Some m when m.dtype = torch.ScalarType.Bool -> m.alias ()
        | Some m -> m.ne (torch.zeros_like m)
        | None -> torch.ones (Shape.batchDims 1 points, dtype = torch.ScalarType.Bool, device = points.device)

    /// Points in float64 with every absent point replaced by 0 (NaN-safe: a select, not a product).
    /// Shapes: points [*, N, 3], present [*, N] bool -> [*, N, 3]
    let internal clean (points: torch.Tensor) (present: torch.Tensor) : torch.Tensor =
        let x = points.to_type torch.ScalarType.Float64
        torch.where (present.unsqueeze -1L, x, torch.zeros_like x)

    /// The float64 fit on already cleaned points.
    /// Returns (fit Frame [*], centred mobile [*,N,3], centred target [*,N,3], count [*]); the centred sets are zero
    /// at absent points.
    let internal fit64 (p: torch.Tensor) (q: torch.Tensor) (present: torch.Tensor) =
        let w_N1 = present.to_type(torch.ScalarType.Float64).unsqueeze -1L // [*, N, 1]
        let n_1 = w_N1.sum (-2L) // [*, 1]
        let nSafe_1 = n_1.clamp_min 1.0
        let cp_3 = p.sum (-2L) / nSafe_1 // [*, 3]
        let cq_3 = q.sum (-2L) / nSafe_1
        let pc = (p - cp_3.unsqueeze -2L) * w_N1 // [*, N, 3]
        let qc = (q - cq_3.unsqueeze -2L) * w_N1
        let h_33 = pc.transpose(-1L, -2L).matmul qc // Σ p̃ q̃ᵀ  [*, 3, 3]
        let struct (u, _, vh) = torch.linalg.svd (h_33, false)
        let v = vh.transpose (-1L, -2L)
        let ut = u.transpose (-1L, -2L)
        let det = torch.linalg.det (v.matmul ut) // ±1  [*]

        let s =
            torch.ones_like det
            - det.lt(torch.zeros_like det).to_type(torch.ScalarType.Float64) * 2.0

        let ones_2 = torch.ones_like(h_33.select (-1L, 0L)).narrow(-1L, 0L, 2L) // [*, 2]
        let diag_3 = torch.cat ([| ones_2; s.unsqueeze -1L |], -1L) // (1, 1, s)
        let rFit = (v * diag_3.unsqueeze -2L).matmul ut // V diag(1,1,s) Uᵀ
        let enough = n_1.ge(torch.full_like (n_1, float MinPointsForRotation)).unsqueeze -1L // [*, 1, 1]
        let eye = torch.eye (3L, 3L, dtype = torch.ScalarType.Float64, device = p.device)
        let r = torch.where (enough, rFit, eye.expand_as rFit)
        let t = cq_3 - r.matmul(cp_3.unsqueeze -1L).squeeze -1L
        { R = r; T = t }, pc, qc, n_1.squeeze -1L

    let private prepare (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) =
        checkPair mobile target mask
        let present = presence mobile mask
        fit64 (clean mobile present) (clean target present) present

    /// The rigid motion, as a frame (R, T), such that `R mobile + T` (`Frame.applyEach`) best fits `target` over
    /// the present points (least squares), with det R = +1. Fewer than 3 present points: R = identity, T = centroid
    /// difference (see the module doc). Returned in mobile's dtype.
    /// Shapes: mobile [*, N, 3], target [*, N, 3], mask [*, N] -> Frame [*]
    let kabsch (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) : Frame =
        let fit, _, _, _ = prepare mobile target mask
        Frame.toType mobile.dtype fit

    /// `mobile` moved by its Kabsch fit onto `target` (every point is moved, absent ones included; NaN stays NaN).
    /// Returned in mobile's dtype.
    /// Shapes: mobile [*, N, 3], target [*, N, 3], mask [*, N] -> [*, N, 3]
    let superpose (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) : torch.Tensor =
        let fit, _, _, _ = prepare mobile target mask
        (Frame.applyEach fit (mobile.to_type torch.ScalarType.Float64)).to_type mobile.dtype

    /// Root-mean-square deviation over the present points after the Kabsch fit:
    /// `sqrt((1/n) Σ ‖R p̃ᵢ − q̃ᵢ‖²)`. With fewer than 3 present points this is the RMSD after centroid matching
    /// only; with none it is 0. Returned in mobile's dtype.
    /// Shapes: mobile [*, N, 3], target [*, N, 3], mask [*, N] -> [*]
    let rmsd (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) : torch.Tensor =
        let fit, pc, qc, n = prepare mobile target mask
        let diff = pc.matmul (fit.R.transpose (-1L, -2L)) - qc // zero at absent points
        let msd = diff.square().sum([| -2L; -1L |], false) / n.clamp_min 1.0
        msd.sqrt().to_type mobile.dtype

    /// Root-mean-square deviation over the present points as given (no superposition): `sqrt((1/n) Σ ‖pᵢ − qᵢ‖²)`;
    /// 0 when no point is present. Returned in mobile's dtype.
    /// Shapes: mobile [*, N, 3], target [*, N, 3], mask [*, N] -> [*]
    let rmsdNoSuperpose (mobile: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor option) : torch.Tensor =
        checkPair mobile target mask
        let present = presence mobile mask
        let diff = clean mobile present - clean target present
        let n = present.to_type(torch.ScalarType.Float64).sum(-1L)
        let msd = diff.square().sum([| -2L; -1L |], false) / n.clamp_min 1.0
        msd.sqrt().to_type mobile.dtype
