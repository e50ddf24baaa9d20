namespace Esm3Structure.Tests

open TorchSharp
open Expecto

/// Tolerances and tensor comparisons. Compare with abs().max(), never a signed max.
module Tol =
    /// Geometry algebra in float64.
    let f64 = 1e-10
    /// Geometry algebra in float32.
    let f32 = 1e-5

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

    /// The tolerance for a dtype.
    let forDtype (dt: torch.ScalarType) = if dt = torch.float64 then f64 else f32
