module Esm3Structure.Tests.Training.MaskingConfigTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Training

[<Tests>]
let tests =
    testList
        "Training/MaskingConfig"
        [
            test "each schedule's Monte Carlo mean matches its exact mean and its rates lie in [0, 1]" {
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(21UL)

                for schedule, exact in
                    [
                        NoiseSchedule.BetaLinear30, 0.3
                        NoiseSchedule.Cosine, 2.0 / Math.PI
                        NoiseSchedule.Cubic, 0.75
                        NoiseSchedule.SquareRoot, 1.0 / 3.0
                        NoiseSchedule.Linear, 0.5
                        NoiseSchedule.Fixed 0.2, 0.2
                    ] do
                    Expect.floatClose Accuracy.veryHigh (NoiseSchedule.mean schedule) exact "exact mean"
                    let r = NoiseSchedule.sample schedule g 60_000L
                    // Standard error ≤ 0.5/sqrt(6e4) ≈ 0.002: 0.008 is 4 standard errors.
                    Expect.floatClose
                        { absolute = 0.008; relative = 0.0 }
                        (r.mean().ToDouble())
                        exact
                        (NoiseSchedule.name schedule)

                    Expect.isTrue
                        (r.ge(0.0.ToScalar()).all().ToBoolean() && r.le(1.0.ToScalar()).all().ToBoolean())
                        "in [0, 1]"

                // betalinear30's Beta(3, 9) branch: variance of Beta(3, 9) is 3·9/(12²·13) ≈ 0.0144.
                let r = NoiseSchedule.sample NoiseSchedule.BetaLinear30 g 60_000L
                let low = r.lt (0.05.ToScalar())
                // P(r < 0.05) = 0.8·P(Beta(3,9) < 0.05) + 0.2·0.05 ≈ 0.8·0.0152 + 0.01 ≈ 0.022
                Expect.floatClose
                    { absolute = 0.004; relative = 0.0 }
                    (low.to_type(torch.float64).mean().ToDouble())
                    0.0222
                    "low tail"
            }
        ]
