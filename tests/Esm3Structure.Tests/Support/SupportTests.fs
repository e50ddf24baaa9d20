module Esm3Structure.Tests.Support.SupportTests

open System
open System.Reflection
open Expecto
open FsCheck
open FsCheck.FSharp
open Esm3Structure.Tests

/// Every FsCheck property of this assembly: its full name and the configuration Expecto.FsCheck runs it with.
let private allProperties () =
    match Impl.testFromAssembly (Assembly.GetExecutingAssembly()) with
    | None -> []
    | Some tree ->
        [
            for flat in Test.toTestCodeList tree do
                match flat.test with
                | AsyncFsCheck(config, _, _) -> String.Join(".", flat.name), config
                | _ -> ()
        ]

/// The message a property fails with when run as Expecto runs it, or None when it passes.
let private failureOf (property: Test) =
    match Test.toTestCodeList property with
    | [ {
            test = AsyncFsCheck(Some config, _, run)
        } ] ->
        try
            run config |> Async.RunSynchronously
            None
        with e ->
            Some e.Message
    | _ -> failtest "expected one property"

[<Tests>]
let tests =
    testList
        "Support"
        [
            test "every property of the suite replays Props.baseConfig's seed (ESM3_PROPERTY_SEED)" {
                let properties = allProperties ()
                // 182 when this test was written; the bound guards against a walk that finds nothing.
                Expect.isGreaterThan properties.Length 150 "the walk finds the suite's properties"

                for name, config in properties do
                    match config with
                    | Some c -> Expect.equal c.replay Props.baseConfig.replay (name + ": replay")
                    | None -> failtestf "%s: no configuration, so FsCheck draws a fresh seed every run" name
            }

            test "ESM3_PROPERTY_SEED reads a number, \"random\" and both forms a failing property prints" {
                let gamma =
                    match Props.parseSeed "7" with
                    | Some(7UL, g, None) -> g
                    | other -> failtestf "7: %A" other

                Expect.equal (gamma % 2UL) 1UL "the default gamma is odd"
                Expect.equal (Props.parseSeed null) (Some(Props.defaultSeed, gamma, None)) "unset: the fixed seed"
                Expect.equal (Props.parseSeed "") (Some(Props.defaultSeed, gamma, None)) "empty: the fixed seed"
                Expect.isNone (Props.parseSeed "random") "random"
                Expect.equal (Props.parseSeed "(12UL, 35UL)") (Some(12UL, 35UL, None)) "Original seed"
                Expect.equal (Props.parseSeed "(12UL, 35UL, Some 9)") (Some(12UL, 35UL, Some 9)) "Focus on error"
                Expect.equal (Props.parseSeed "12,35,9") (Some(12UL, 35UL, Some 9)) "bare"
                Expect.throwsT<ArgumentException> (fun () -> Props.parseSeed "12x" |> ignore) "a typo"
                Expect.throwsT<ArgumentException> (fun () -> Props.parseSeed "1, 2, 3, 4" |> ignore) "four numbers"
            }

            test "a property failing under a fresh seed prints seeds that replay the same failure" {
                // Fails on about one draw in six, so the failing case depends on the seed.
                let body (xs: int list) = List.sum xs % 6 <> 5

                let make (replay: string) =
                    testPropertyWithConfig
                        { Props.baseConfig with
                            replay = Props.parseSeed replay
                            maxTest = 200
                        }
                        "fails sometimes"
                        body

                let parameters (message: string) =
                    let i = message.IndexOf "Parameters:"
                    message.Substring(i, message.IndexOf('\n', i + 12) - i)

                for attempt in 1..3 do
                    match failureOf (make "random") with
                    | None -> failtestf "attempt %d: 200 random cases never hit the 1-in-6 failure" attempt
                    | Some message ->
                        match Props.replaySeeds message with
                        | None -> failtestf "no seeds in: %s" message
                        | Some(run, case) ->
                            for replay in [ run; case ] do
                                match failureOf (make replay) with
                                | None -> failtestf "%s does not replay the failure" replay
                                | Some again ->
                                    Expect.equal (parameters again) (parameters message) (replay + ": same case")
            }

            test "every module's test list carries [<Tests>], so that none goes undiscovered" {
                // A `let tests` whose attribute slipped onto something else still compiles, and its whole list then
                // never runs while the suite reports 0 failed (session 17's helpers above a list did exactly that).
                let lists =
                    [
                        for t in Assembly.GetExecutingAssembly().GetTypes() do
                            let p = t.GetProperty("tests", BindingFlags.Public ||| BindingFlags.Static)

                            if not (isNull p) && p.PropertyType = typeof<Test> then
                                t.FullName, p.IsDefined(typeof<TestsAttribute>, false)
                    ]

                Expect.isGreaterThan lists.Length 50 "the test modules are found"

                let missing = lists |> List.filter (snd >> not) |> List.map fst
                Expect.isEmpty missing "test lists without [<Tests>]"
            }

            test "StableHash.fnv1a64: the published FNV-1a 64 test vectors" {
                // http://www.isthe.com/chongo/tech/comp/fnv/ (test vectors of FNV-1a, 64 bits).
                Expect.equal (StableHash.fnv1a64 "") 0xcbf29ce484222325UL "empty: the offset basis"
                Expect.equal (StableHash.fnv1a64 "a") 0xaf63dc4c8601ec8cUL "a"
                Expect.equal (StableHash.fnv1a64 "foobar") 0x85944171f73967e8UL "foobar"
            }
        ]
