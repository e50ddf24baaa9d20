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

            test "schedule names read back as the schedules they name, and bad names and rates are refused" {
                for schedule in
                    [
                        NoiseSchedule.BetaLinear30
                        NoiseSchedule.Cosine
                        NoiseSchedule.Cubic
                        NoiseSchedule.SquareRoot
                        NoiseSchedule.Linear
                        NoiseSchedule.Fixed 0.25
                        NoiseSchedule.Fixed 1.0
                    ] do
                    Expect.equal (NoiseSchedule.ofName (NoiseSchedule.name schedule)) (Ok schedule) "round trip"

                Expect.equal (NoiseSchedule.ofName " Cosine ") (Ok NoiseSchedule.Cosine) "case and spaces"

                for bad in [ "cosin"; "fixed:1.5"; "fixed:-0.1"; "fixed:x"; "" ] do
                    Expect.isError (NoiseSchedule.ofName bad) bad
            }

            test "updateTrack replaces exactly the named track's noise and refuses unknown tracks" {
                let noise =
                    {
                        Schedule = NoiseSchedule.Linear
                        Dropout = 0.125
                    }

                let tracks (c: MaskingConfig) =
                    [
                        c.Sequence
                        c.Structure
                        c.Coordinates
                        c.Ss8
                        c.Sasa
                        c.Function
                        c.ResidueAnnotations
                    ]

                for i, name in List.indexed MaskingConfig.trackNames do
                    match MaskingConfig.updateTrack name (fun _ -> noise) MaskingConfig.esm3 with
                    | Ok c ->
                        let expected =
                            tracks MaskingConfig.esm3 |> List.mapi (fun j t -> if j = i then noise else t)

                        Expect.equal (tracks c) expected name
                        Expect.equal c.NestCoordinates MaskingConfig.esm3.NestCoordinates "other fields kept"
                    | Error e -> failtest e

                Expect.isError (MaskingConfig.updateTrack "coords" id MaskingConfig.esm3) "unknown track"
            }

            test "withSpec sets a track's schedule and dropout from TRACK=SCHEDULE[/DROPOUT] and names what is wrong" {
                let spec text =
                    match MaskingConfig.withSpec text MaskingConfig.esm3 with
                    | Ok c -> c
                    | Error e -> failtest e

                Expect.equal
                    (spec "coordinates=linear/0.25").Coordinates
                    {
                        Schedule = NoiseSchedule.Linear
                        Dropout = 0.25
                    }
                    "schedule and dropout"

                Expect.equal
                    (spec "sequence=fixed:0.5").Sequence
                    {
                        Schedule = NoiseSchedule.Fixed 0.5
                        Dropout = MaskingConfig.esm3.Sequence.Dropout
                    }
                    "dropout kept when omitted"

                for bad, says in
                    [
                        "coordinates", "TRACK=SCHEDULE"
                        "coords=linear", "unknown track"
                        "coordinates=bogus", "unknown noise schedule"
                        "coordinates=linear/2", "dropout must be a number in [0, 1]"
                        "coordinates=fixed:1.5", "fixed schedule rate"
                    ] do
                    match MaskingConfig.withSpec bad MaskingConfig.esm3 with
                    | Ok _ -> failtestf "%s: accepted" bad
                    | Error e -> Expect.stringContains e says bad
            }
        ]
