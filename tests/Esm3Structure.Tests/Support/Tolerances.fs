namespace Esm3Structure.Tests

open System
open TorchSharp
open Expecto

/// Tolerances and tensor comparisons. Compare with abs().max(), never a signed max.
module Tol =
    /// The unit roundoff u of a floating dtype: the largest relative error of one correctly rounded operation,
    /// 2⁻²⁴ ≈ 5.96e-8 (float32), 2⁻⁵³ ≈ 1.11e-16 (float64), 2⁻¹¹ (float16), 2⁻⁸ (bfloat16).
    let unitRoundoff (dt: torch.ScalarType) =
        if dt = torch.float64 then Math.Pow(2.0, -53.0)
        elif dt = torch.float32 then Math.Pow(2.0, -24.0)
        elif dt = torch.float16 then Math.Pow(2.0, -11.0)
        elif dt = torch.bfloat16 then Math.Pow(2.0, -8.0)
        else invalidArg "dt" (sprintf "no unit roundoff for %O" dt)

    /// A derived rounding bound, never a guess: `ops` roundings of relative size u(dtype), each on a value of at
    /// most `magnitude`, add up to at most ops · u · magnitude (the first-order form of the standard bound
    /// γₙ = n·u/(1 − n·u) for n operations; Higham, "Accuracy and Stability of Numerical Algorithms", §3.1). The
    /// caller states in a comment where its count of operations and its magnitude come from.
    let derived (dt: torch.ScalarType) (ops: float) (magnitude: float) = ops * unitRoundoff dt * magnitude

    /// max |a - b| as a double.
    let maxAbsDiff (a: torch.Tensor) (b: torch.Tensor) =
        if a.numel () = 0L && b.numel () = 0L then
            0.0
        else
            (a - b).abs().max().ToDouble()

    /// Asserts max |a - b| <= tol, naming what is compared.
    let close (what: string) (tol: float) (a: torch.Tensor) (b: torch.Tensor) =
        Expect.sequenceEqual a.shape b.shape (what + ": shapes")
        let d = maxAbsDiff a b

        if not (d <= tol) then
            failtestf "%s: max |difference| %g exceeds %g" what d tol

    /// Asserts value <= tol (an error measure against its bound), naming what is checked.
    let atMost (what: string) (tol: float) (value: float) =

        if not (value <= tol) then
            failtestf "%s: %g exceeds %g" what value tol

    /// Asserts |diff| <= tol elementwise (tol broadcast; a zero tolerance demands an exact zero), reporting the
    /// worst ratio.
    let within (what: string) (diff: torch.Tensor) (tol: torch.Tensor) =
        if not (diff.abs().le(tol).all().ToBoolean()) then
            let ratio = (diff.abs () / tol).nan_to_num(0.0).max().ToDouble()
            failtestf "%s: |difference| reaches %g × its tolerance" what ratio

/// Rounding bounds of the geometry primitives (src/Esm3Structure/Geometry), derived once here and used by the
/// geometry and structure properties. u is the dtype's unit roundoff; "an entry" is one entry of a 3×3 rotation.
module GeoTol =
    /// Error of one entry of `Quaternion.toMatrix q` (so of `Rotation.random`, `Frame.random`) against the exact
    /// rotation of q/|q|: the normalisation leaves each component within 4u relative (a 4-term sum of squares: 4u,
    /// halved by the square root, +u for it, +u for the division); a diagonal entry 1 − 2(y² + z²) then carries
    /// 2·(2·4u + 2u) on y² + z² ≤ 1 (two squares and their sum) plus u for the subtraction, and an off-diagonal
    /// 2(xy ± zw) less (|xy| + |zw| ≤ ½): 21 roundings on values ≤ 1.
    let quatMatrixEntry (dt: torch.ScalarType) = Tol.derived dt 21.0 1.0

    /// Error of one entry of a 3×3 product A B of near-rotations whose entries are within ea and eb of rotations:
    /// (A + Ea)(B + Eb) − A B has entries ≤ ‖row of Ea‖₂ + ‖column of Eb‖₂ ≤ √3·(ea + eb) (rotation rows and
    /// columns are unit vectors), and the product itself rounds 3 products and 2 sums on Σₖ|aᵢₖ bₖⱼ| ≤ 1: 3u.
    let productEntry (dt: torch.ScalarType) (ea: float) (eb: float) =
        sqrt 3.0 * (ea + eb) + Tol.derived dt 3.0 1.0

    /// Bound on `Rotation.properError` of a matrix whose entries are within e of a rotation R. Orthogonality:
    /// (R + E)ᵀ(R + E) − I = RᵀE + EᵀR + O(e²), entries ≤ 2√3·e, plus 3u + u for the product and the subtraction.
    /// Determinant: δ det = tr(adj(R) E) = tr(RᵀE) ≤ Σ|rᵢⱼ| · e ≤ 3√3·e, and `torch.linalg.det` (LU with partial
    /// pivoting) is the exact determinant of R + ΔA with |ΔA| ≤ γ₃|L||U| ≤ 3u · 3·ρ, ρ ≤ 2ⁿ⁻¹ = 4 (n = 3): 36u per
    /// entry, through the same 3√3 factor; the product of the three pivots adds 2u. The determinant term dominates.
    let properError (dt: torch.ScalarType) (e: float) =
        3.0 * sqrt 3.0 * (e + Tol.derived dt 36.0 1.0) + Tol.derived dt 2.0 1.0

    /// max |R̂ᵀR̂ − I| of a computed rotation, measured in float64 (a posteriori: the orthogonality defect that a
    /// round trip through R̂ and R̂ᵀ leaves, which worst-case bounds of R̂'s entries overstate many times).
    let orthogonalityDefect (r: torch.Tensor) =
        use r64 = r.to_type torch.float64
        use rtr = r64.transpose(-1L, -2L).matmul r64
        use eye = torch.eye(3L, dtype = torch.float64).expand_as rtr
        Tol.maxAbsDiff rtr eye
