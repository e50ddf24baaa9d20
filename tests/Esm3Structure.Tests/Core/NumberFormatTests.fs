module Esm3Structure.Tests.Core.NumberFormatTests

open System
open Expecto
open Esm3Structure

[<Tests>]
let tests =
    testList
        "Core/NumberFormat"
        [
            test "scientific writes C's two-digit exponents (.NET's 'e' formats write three)" {
                Expect.equal (sprintf "%.2e" 1.33e-5) "1.33e-005" "the .NET behaviour this helper replaces"
                Expect.equal (NumberFormat.scientific 2 1.33e-5) "1.33e-05" "small"
                Expect.equal (NumberFormat.scientific 2 4e-4) "4.00e-04" "trailing zeros kept"
                Expect.equal (NumberFormat.scientific 3 -2.5e7) "-2.500e+07" "negative, positive exponent"
                Expect.equal (NumberFormat.scientific 1 1.5e123) "1.5e+123" "three digits when needed"
                Expect.equal (NumberFormat.scientific 0 3e-8) "3e-08" "no decimals"
                Expect.equal (NumberFormat.scientific 2 9.999e-5) "1.00e-04" "rounding carries into the exponent"
                Expect.equal (NumberFormat.scientific 2 0.0) "0.00e+00" "zero"
                Expect.equal (NumberFormat.scientific 2 nan) "NaN" "NaN"
                Expect.equal (NumberFormat.scientific 2 -infinity) "-Infinity" "infinity"
            }

            test "scientific agrees with C's format on random values (parsed back, same rounding)" {
                let random = Random(5)

                for _ in 1..200 do
                    let x = (random.NextDouble() - 0.5) * Math.Pow(10.0, float (random.Next(-40, 40)))
                    let text = NumberFormat.scientific 4 x
                    Expect.isMatch text @"^-?\d\.\d{4}e[+-]\d{2,3}$" "shape"
                    let back = Double.Parse(text, Globalization.CultureInfo.InvariantCulture)
                    Expect.isLessThanOrEqual (abs (back - x)) (abs x * 5.01e-5) (sprintf "%s reads back as %g" text x)
            }

            test "a negative number of decimals is refused" {
                Expect.throwsT<ArgumentOutOfRangeException>
                    (fun () -> NumberFormat.scientific -1 1.0 |> ignore)
                    "digits"
            }
        ]
