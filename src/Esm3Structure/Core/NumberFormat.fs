namespace Esm3Structure

open System
open System.Globalization

/// How the library and the scripts print numbers for people.
module NumberFormat =

    /// `x` in scientific notation with `digits` decimals and an exponent of at least two digits, as C's printf
    /// `%.*e` writes it: `scientific 2 1.33e-5` = "1.33e-05", `scientific 1 -2.5e123` = "-2.5e+123" (F#'s `%e` and
    /// .NET's "E2" write three exponent digits: "1.33e-005"). Invariant culture; NaN and ±∞ as "NaN", "Infinity",
    /// "-Infinity". Use it for every exponent a person reads (progress lines, tables, test reports).
    let scientific (digits: int) (x: float) : string =
        if digits < 0 then
            raise (ArgumentOutOfRangeException("digits", digits, "the number of decimals must be ≥ 0"))

        let mantissa = if digits = 0 then "0" else "0." + String('0', digits)
        x.ToString(mantissa + "e+00", CultureInfo.InvariantCulture)
