namespace Esm3Structure.Tests

open System
open FsCheck
open FsCheck.FSharp
open Expecto
open TorchSharp

/// One property case: a seed for torch's generator and a batch shape. Tensors are drawn from the seed inside
/// the property, so a failing case replays exactly from FsCheck's printed seed.
type GeoCase =
    {
        Seed: uint64
        Batch: int64[]
    }

    member c.Generator() = new torch.Generator(c.Seed)

/// A backbone case: a seed, a batch shape and a chain length (1 … 40).
type BackboneCase =
    {
        Seed: uint64
        Batch: int64[]
        Length: int64
    }

    member c.Generator() = new torch.Generator(c.Seed)

module Gens =
    /// Batch shapes of rank 0 to 3 with dims 1 to 4 (includes the scalar batch []).
    let batch =
        gen {
            let! rank = Gen.choose (0, 3)
            let! dims = Gen.listOfLength rank (Gen.choose (1, 4))
            return dims |> List.map int64 |> Array.ofList
        }

    let seed = Gen.choose (0, Int32.MaxValue) |> Gen.map uint64

    let geoCase =
        gen {
            let! s = seed
            let! b = batch
            return { GeoCase.Seed = s; Batch = b }
        }

    let backboneCase =
        gen {
            let! s = seed

            let! b =
                Gen.choose (0, 2) |> Gen.bind (fun r -> Gen.listOfLength r (Gen.choose (1, 3)))

            let! l = Gen.choose (1, 40)

            return
                {
                    BackboneCase.Seed = s
                    Batch = b |> List.map int64 |> Array.ofList
                    Length = int64 l
                }
        }

type Arbitraries =
    static member GeoCase() = Arb.fromGen Gens.geoCase
    static member BackboneCase() = Arb.fromGen Gens.backboneCase

module Props =
    /// Cases per property: 60, or ESM3_PROPERTY_CASES for a deeper run.
    let cases =
        match Int32.TryParse(Environment.GetEnvironmentVariable "ESM3_PROPERTY_CASES") with
        | true, n when n > 0 -> n
        | _ -> 60

    /// FsCheck 3's splittable generator is (seed, gamma), gamma odd; with a number alone we pair it with this gamma.
    let private defaultGamma = 0x9E3779B97F4A7C15UL

    /// The seed every run replays unless ESM3_PROPERTY_SEED says otherwise.
    let defaultSeed = 20261202UL

    /// Reads an ESM3_PROPERTY_SEED value as an FsCheck replay (seed, gamma, size): "" (unset) replays
    /// `defaultSeed`; "random" gives None (fresh seeds); "N" replays seed N; "(S, G)" replays a whole run from the
    /// "Original seed: (S, G)" a failing property prints; "(S, G, Some N)" replays its "Focus on error" triple, the
    /// failing case alone. `UL` suffixes, spaces and brackets are ignored, so either line can be pasted as printed.
    /// Anything else is an ArgumentException (a typo must not silently replay the default seed).
    let parseSeed (text: string) : (uint64 * uint64 * int option) option =
        let words =
            if isNull text then
                [||]
            else
                text
                    .Replace("(", " ")
                    .Replace(")", " ")
                    .Replace("Some", " ")
                    .Replace("UL", " ")
                    .Split([| ','; ' ' |], StringSplitOptions.RemoveEmptyEntries)

        let number (w: string) =
            match UInt64.TryParse w with
            | true, n -> n
            | _ -> invalidArg "ESM3_PROPERTY_SEED" (sprintf "cannot read '%s' in '%s' as a seed" w text)

        match words with
        | [||] -> Some(defaultSeed, defaultGamma, None)
        | [| "random" |] -> None
        | [| seed |] -> Some(number seed, defaultGamma, None)
        | [| seed; gamma |] -> Some(number seed, number gamma, None)
        | [| seed; gamma; size |] -> Some(number seed, number gamma, Some(int (number size)))
        | _ ->
            invalidArg
                "ESM3_PROPERTY_SEED"
                (sprintf "expected random, N, (seed, gamma) or (seed, gamma, Some size); got '%s'" text)

    /// From a failing property's message, what Expecto.FsCheck prints to replay it: the "Original seed: (S, G)"
    /// (the whole run) and the "Focus on error: … (S, G, Some N)" (the failing case alone), both as printed and
    /// readable by `parseSeed`; None for any other message.
    let replaySeeds (message: string) =
        let original =
            Text.RegularExpressions.Regex.Match(message, @"Original seed: (\([^)]*\))")

        let focus =
            Text.RegularExpressions.Regex.Match(message, @"Focus on error:\s*\S+ (\([^)]*\))")

        if original.Success && focus.Success then
            Some(original.Groups.[1].Value, focus.Groups.[1].Value)
        else
            None

    /// Every property's base configuration: FsCheck replays one fixed seed, so every run (CI's included) checks
    /// the same cases and a property cannot fail one run in fifty. `ESM3_PROPERTY_SEED=random` draws fresh seeds (a
    /// wider search, with `ESM3_PROPERTY_CASES`); a failing property then prints "Original seed: (S, G)", and
    /// `ESM3_PROPERTY_SEED="(S, G)"` (same `ESM3_PROPERTY_CASES`) replays that run (`parseSeed`).
    let baseConfig =
        { FsCheckConfig.defaultConfig with
            replay = parseSeed (Environment.GetEnvironmentVariable "ESM3_PROPERTY_SEED")
        }

    /// FsCheck configuration with our arbitraries.
    let config =
        { baseConfig with
            arbitrary = [ typeof<Arbitraries> ]
            maxTest = cases
        }

    /// A property over our arbitraries.
    let property name (body: 'a -> unit) = testPropertyWithConfig config name body

    /// Whether a test is an FsCheck property: Expecto.FsCheck builds every property (`testProperty`,
    /// `testPropertyWithConfig`, …) as `AsyncFsCheck` code carrying its configuration, whatever its name.
    let isProperty (code: TestCode) =
        match code with
        | AsyncFsCheck _ -> true
        | _ -> false

    /// The tree with its properties only (None when it holds none): `--only-properties` in Main.
    let rec onlyProperties (t: Test) : Test option =
        match t with
        | TestCase(code, _) -> if isProperty code then Some t else None
        | TestList(tests, state) ->
            match List.choose onlyProperties tests with
            | [] -> None
            | kept -> Some(TestList(kept, state))
        | TestLabel(label, inner, state) -> onlyProperties inner |> Option.map (fun i -> TestLabel(label, i, state))
        | Test.Sequenced(how, inner) -> onlyProperties inner |> Option.map (fun i -> Test.Sequenced(how, i))

    /// The dtypes every geometric property runs in, with its name.
    let dtypes = [ torch.float64, "float64"; torch.float32, "float32" ]

/// Seeds derived from names, the same in every process: .NET randomises `String.GetHashCode` per process.
module StableHash =
    /// 64-bit FNV-1a over the string's UTF-8 bytes (offset basis 14695981039346656037, prime 1099511628211;
    /// Fowler, Noll, Vo: http://www.isthe.com/chongo/tech/comp/fnv/).
    let fnv1a64 (text: string) =
        let mutable h = 14695981039346656037UL

        for b in Text.Encoding.UTF8.GetBytes text do
            h <- (h ^^^ uint64 b) * 1099511628211UL

        h

module Draw =
    /// Gaussian points with standard deviation `sigma`. Shapes: -> [*, 3]
    let points (g: torch.Generator) (batch: int64[]) (sigma: float) (dtype: torch.ScalarType) =
        sigma * torch.randn (Array.append batch [| 3L |], dtype = dtype, generator = g)

    /// A backbone with realistic local geometry: CA on a 3.8 Å random walk; N and C at 1.46 / 1.52 Å from CA in
    /// random directions with the ideal N-CA-C angle of 111°. Shapes: -> [*, L, 3, 3]
    let backbone (g: torch.Generator) (batch: int64[]) (length: int64) (dtype: torch.ScalarType) =
        let unit (v: torch.Tensor) = v / v.norm (-1, true)
        let shape = Array.append batch [| length; 3L |]
        let e1 = unit (torch.randn (shape, dtype = dtype, generator = g))
        let r = torch.randn (shape, dtype = dtype, generator = g)
        let e2 = unit (r - (r * e1).sum(-1L, true) * e1)
        let angle = 111.0 * Math.PI / 180.0
        let steps = 3.8 * unit (torch.randn (shape, dtype = dtype, generator = g))

        let ca =
            steps.cumsum (-2L)
            + 20.0
              * torch.randn (Array.append batch [| 1L; 3L |], dtype = dtype, generator = g)

        let n = ca + 1.46 * e1
        let c = ca + 1.52 * (Math.Cos angle * e1 + Math.Sin angle * e2)
        torch.stack ([| n; ca; c |], -2L)
