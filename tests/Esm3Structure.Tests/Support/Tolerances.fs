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

    /// Asserts |diff| <= tol elementwise (tol broadcast), reporting the worst ratio.
    let within (what: string) (diff: torch.Tensor) (tol: torch.Tensor) =
        let ratio = (diff.abs () / tol).max().ToDouble()

        if not (ratio <= 1.0) then
            failtestf "%s: |difference| reaches %g × its tolerance" what ratio
