module Esm3Structure.Tests.Training.ScheduleTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Training
open Esm3Structure.Tests

/// A warm-up cosine schedule: peak rate, warm-up steps (0 … 300), total steps (warm-up + 1 … 3000) and the final
/// fraction (0 … 1, the ends included).
type private ScheduleCase =
    {
        Peak: float
        Warmup: int
        Total: int
        FinalFraction: float
    }

    member c.Rate(step: int) =
        Schedule.warmupCosine c.Peak c.Warmup c.Total c.FinalFraction step

    member c.Floor = c.Peak * c.FinalFraction

let private cases =
    gen {
        let! peakExponent = Gen.choose (-60, 0)
        let! warmup = Gen.frequency [ 1, Gen.constant 0; 4, Gen.choose (1, 300) ]
        let! decay = Gen.choose (1, 2700)

        let! fraction =
            Gen.frequency
                [
                    1, Gen.elements [ 0.0; 1.0 ]
                    4, Gen.choose (0, 1000) |> Gen.map (fun k -> float k / 1000.0)
                ]

        return
            {
                Peak = 3.0 * Math.Pow(10.0, float peakExponent / 10.0)
                Warmup = warmup
                Total = warmup + decay
                FinalFraction = fraction
            }
    }
    |> Arb.fromGen

let private property name (body: ScheduleCase -> unit) =
    testPropertyWithConfig { Props.baseConfig with maxTest = 200 } name (Prop.forAll cases body)

/// A rate's rounding: the schedule is a handful of float64 operations on values at most `peak` (the warm-up: one
/// multiply, one divide; the cosine: subtract, cos, add, two multiplies, add; under 8 in all).
let private slack (c: ScheduleCase) = Tol.derived torch.float64 8.0 c.Peak

[<Tests>]
let tests =
    testList
        "Training/Schedule"
        [
            test "warmupCosine by hand: peak 1e-3, 10 warm-up steps, 110 total, floor 10 %" {
                let rate = Schedule.warmupCosine 1e-3 10 110 0.1

                let close (expected: float) (step: int) =
                    Expect.floatClose
                        { absolute = 1e-18; relative = 1e-15 }
                        (rate step)
                        expected
                        (sprintf "step %d" step)

                close 1e-4 0 // (0 + 1)/10 of the peak
                close 5e-4 4
                close 1e-3 9 // the warm-up's last step reaches the peak
                close 1e-3 10 // the decay starts at the peak
                // Halfway (progress 50/100): 1e-4 + 9e-4 · (1 + cos(π/2))/2 = 5.5e-4.
                close 5.5e-4 60
                // A quarter (progress 25/100): 1e-4 + 9e-4 · (1 + cos(π/4))/2 = 1e-4 + 4.5e-4 · (1 + √2/2).
                close (1e-4 + 4.5e-4 * (1.0 + Math.Sqrt 2.0 / 2.0)) 35
                close 1e-4 110
                close 1e-4 100000 // constant after `total`
            }

            test "no warm-up starts at the peak; total ≤ warm-up drops to the floor the step after the warm-up" {
                Expect.equal (Schedule.warmupCosine 2e-3 0 100 0.0 0) 2e-3 "warm-up 0: step 0 is the peak"
                Expect.equal (Schedule.warmupCosine 2e-3 10 5 0.25 9) 2e-3 "the warm-up's last step"
                Expect.equal (Schedule.warmupCosine 2e-3 10 5 0.25 10) 2e-3 "then the peak once"
                Expect.equal (Schedule.warmupCosine 2e-3 10 5 0.25 11) 5e-4 "then the floor"
            }

            property "warm-up: rises by peak/warmup per step, from peak/warmup at step 0 to the peak at its last step"
            <| fun c ->
                if c.Warmup > 0 then
                    let step = c.Peak / float c.Warmup
                    Expect.floatClose { absolute = slack c; relative = 0.0 } (c.Rate 0) step "step 0"
                    Expect.floatClose { absolute = slack c; relative = 0.0 } (c.Rate(c.Warmup - 1)) c.Peak "last step"

                    for s in 1 .. c.Warmup - 1 do
                        let rise = c.Rate s - c.Rate(s - 1)

                        if abs (rise - step) > 2.0 * slack c then
                            failtestf "step %d: rises by %g, not peak/warmup = %g" s rise step

            property "decay: starts at the peak, never increases, stays in [floor, peak] and is the floor from total on"
            <| fun c ->
                Expect.floatClose { absolute = slack c; relative = 0.0 } (c.Rate c.Warmup) c.Peak "first decay step"
                let decay = [| for s in c.Warmup .. c.Total + 5 -> c.Rate s |]

                for i in 1 .. decay.Length - 1 do
                    if decay.[i] > decay.[i - 1] + slack c then
                        failtestf "step %d: %g after %g" (c.Warmup + i) decay.[i] decay.[i - 1]

                for i, r in Array.indexed decay do
                    if r < c.Floor - slack c || r > c.Peak + slack c then
                        failtestf "step %d: %g outside [%g, %g]" (c.Warmup + i) r c.Floor c.Peak

                for s in c.Total .. c.Total + 5 do
                    Expect.floatClose { absolute = slack c; relative = 0.0 } (c.Rate s) c.Floor (sprintf "step %d" s)

            property "decay: the cosine is point-symmetric about its midpoint, rate(w + k) + rate(T − k) = peak + floor"
            <| fun c ->
                let span = c.Total - c.Warmup

                for k in 0 .. min span 50 do
                    let pair = c.Rate(c.Warmup + k) + c.Rate(c.Total - k)

                    Expect.floatClose
                        {
                            absolute = 2.0 * slack c
                            relative = 0.0
                        }
                        pair
                        (c.Peak + c.Floor)
                        (sprintf "k %d" k)
        ]
