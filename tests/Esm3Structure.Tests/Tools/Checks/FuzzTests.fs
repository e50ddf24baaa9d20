module Esm3Structure.Tests.Tools.Checks.FuzzTests

open System
open System.IO
open System.Text
open Expecto
open Esm3Structure
open Esm3Structure.Checks
open Esm3Structure.Tests
open Esm3Structure.App

/// Small real inputs: three small PDB chains, the three mmCIF copies, a tiny safetensors file, a tokens JSON.
let private seeds (scratch: string) (format: FuzzFormat) : FuzzSeed[] =
    let load (path: string) =
        {
            Name = Path.GetFileName path
            Bytes = File.ReadAllBytes path
        }

    match format with
    | FuzzFormat.Pdb -> [| "1ubq_A"; "2erl_A"; "1lcd_A" |] |> Array.map (Data.small >> load)
    | FuzzFormat.Mmcif ->
        [| "1ubq_A"; "1a8o_A"; "1ctf_A" |]
        |> Array.map (fun n -> load (Data.path [ "mmcif"; n + ".cif" ]))
    | FuzzFormat.Safetensors -> [| FuzzMutators.safetensorsSeed scratch |]
    | FuzzFormat.Tokens -> [| FuzzMutators.tokensSeed () |]

let private config =
    { FuzzConfig.defaults with
        Cases = 500
        Seed = 20261123
        MaxInputBytes = 128 <<< 10
    }

let private fuzzTest (format: FuzzFormat) =
    test (
        sprintf
            "%d %s cases all end as Valid or a typed error naming the file"
            config.Cases
            (FuzzMutators.formatName format)
    ) {
        use dir = new TempDir()
        let cases = Fuzz.run config format (seeds dir.Path format) dir.Path
        let report = Fuzz.summary cases
        Expect.hasLength cases config.Cases "cases run"

        let bad = cases |> Array.filter (fun c -> not (Fuzz.isAcceptable c.Outcome))
        Expect.isEmpty bad (sprintf "unacceptable outcomes:\n%s" report)

        // The mutators must exercise both sides: some inputs still read, most are rejected with a typed error.
        let count pred =
            cases |> Array.filter (fun c -> pred c.Outcome) |> Array.length

        Expect.isGreaterThan (count (fun o -> o = FuzzOutcome.Valid)) 0 (sprintf "some cases are valid\n%s" report)

        Expect.isGreaterThan
            (count (function
                | FuzzOutcome.TypedError _ -> true
                | _ -> false))
            (config.Cases / 4)
            (sprintf "many cases are typed errors\n%s" report)
    }

/// Reads `text` (as bytes) as `format` through the harness and returns the outcome.
let private outcomeOf (format: FuzzFormat) (bytes: byte[]) =
    use dir = new TempDir()
    let path = dir.File("case" + (if format = FuzzFormat.Pdb then ".pdb" else ".cif"))
    (Fuzz.runCase FuzzConfig.defaults format path 0 "regression" "none" bytes).Outcome

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Checks/Fuzz"
        [
            yield! FuzzMutators.formats |> List.map fuzzTest

            test "mutations are deterministic in the seed and change the input" {
                let seed = FuzzMutators.tokensSeed ()

                let draw s =
                    let random = Random(s: int)
                    Array.init 50 (fun _ -> FuzzMutators.mutate FuzzFormat.Tokens random 4096 seed.Bytes)

                let a = draw 3
                let b = draw 3
                Expect.equal (a |> Array.map fst) (b |> Array.map fst) "same names"
                Expect.isTrue (Array.forall2 (fun (_, x: byte[]) (_, y: byte[]) -> x = y) a b) "same bytes"

                Expect.isGreaterThan
                    (a |> Array.filter (fun (_, x) -> x <> seed.Bytes) |> Array.length)
                    40
                    "most mutations change the bytes"
            }

            test "the runner classifies an intact input as Valid and flags allocation beyond the bound" {
                use dir = new TempDir()
                let bytes = File.ReadAllBytes(Data.small "1ubq_A")
                let path = dir.File "case.pdb"

                let ok =
                    Fuzz.runCase FuzzConfig.defaults FuzzFormat.Pdb path 0 "1ubq_A" "none" bytes

                Expect.equal ok.Outcome FuzzOutcome.Valid "intact PDB"
                Expect.isGreaterThan ok.AllocatedBytes (int64 bytes.Length) "allocation is measured"

                let strict =
                    { FuzzConfig.defaults with
                        AllocationFactor = 0L
                        AllocationSlack = 1024L
                    }

                match (Fuzz.runCase strict FuzzFormat.Pdb path 0 "1ubq_A" "none" bytes).Outcome with
                | FuzzOutcome.ExcessAllocation(a, l) -> Expect.isGreaterThan a l "over the limit"
                | o -> failtestf "expected ExcessAllocation, got %A" o
            }

            test "a million-token JSON reads, within the large-input time limit and the allocation bound" {
                use dir = new TempDir()

                match FuzzLarge.largeInputs FuzzFormat.Tokens FuzzLarge.MillionResidues dir.Path with
                | [ input ] ->
                    let case = Fuzz.runLarge FuzzConfig.defaults dir.Path 0 input
                    let line = Fuzz.largeLine FuzzConfig.defaults input case
                    Expect.isTrue (Fuzz.largeOk input case) line
                    Expect.equal case.Outcome FuzzOutcome.Valid line
                    Expect.isGreaterThan case.AllocatedBytes (int64 input.Bytes.Length) "allocation is measured"

                    let chains = TokensJson.ofJson "million.json" (Encoding.UTF8.GetString input.Bytes)

                    Expect.equal chains.[0].Tokens.Length FuzzLarge.MillionResidues "a million tokens"
                | inputs -> failtestf "expected one tokens input, got %d" inputs.Length
            }

            test "a typed error carries the location kind" {
                let text =
                    Encoding.ASCII.GetBytes "ATOM      1  N   MET A   1      27.340  24.430\n"

                Expect.equal (outcomeOf FuzzFormat.Pdb text) (FuzzOutcome.TypedError "Line") "truncated ATOM record"
            }
        ]
