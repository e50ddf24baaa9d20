module Esm3Structure.Tests.Tools.Ablations.AblationTests

open System
open System.Globalization
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Ablations

/// The smoke preset shrunk to a run of a second or two (3 steps, validation on one short chain).
let private micro =
    let smoke = TokenizerTrainConfig.smoke

    { smoke with
        Encoder =
            { smoke.Encoder with
                DModel = 16L
                VHeads = 2L
                DOut = 8L
                Quantizer =
                    { smoke.Encoder.Quantizer with
                        Codes = 16L
                        Dim = 8L
                    }
            }
        Decoder =
            {
                DModel = 16L
                Heads = 2L
                Layers = 1
                PairwiseDownproject = 8L
                PairwiseHidden = 8L
                StructureModule = None
                ChainFrames = false
            }
        CropLength = 24
        ValidChains = 1
        ValidLength = 24
        Trainer =
            { smoke.Trainer with
                BatchSize = 2
                LearningRate = 3e-3
                WarmupSteps = 1
                EvalEvery = 0
                CheckpointEvery = 1
                LogEvery = 1
            }
    }

let private chains =
    lazy
        (Data.smallNames.Value
         |> Array.truncate 2
         |> Array.map (fun n -> StructureFile.read (Data.small n) None))

let private microTrainer () =
    TokenizerAblations.trainer torch.CPU chains.Value chains.Value.[..0]

let private microAblation (variants: AblationVariant<TokenizerTrainConfig>[]) =
    {
        Name = "micro"
        Base = micro
        Variants = variants
        Seeds = [| 3 |]
        Budget = AblationBudget.Steps 3
    }

let private betaVariant (b: float) =
    Ablation.variant (sprintf "beta %g" b) (fun (c: TokenizerTrainConfig) ->
        { c with
            Encoder =
                { c.Encoder with
                    Quantizer = { c.Encoder.Quantizer with Beta = b }
                }
        })

let private quiet = Action<string>(ignore)

/// A hand-written `runs/<key>.json` with the given final metrics.
let private runJson (variant: string) (index: int) (seed: int) (final: (string * string) list) =
    let finals =
        final |> List.map (fun (k, v) -> sprintf "\"%s\": %s" k v) |> String.concat ", "

    sprintf
        """{ "ablation": "fixed", "variant": "%s", "variant_index": %d, "seed": %d, "key": "%s.seed%d",
  "commit": "abc", "steps": 10, "wall_seconds": 1.5, "peak_memory_bytes": 1000, "resumed": false,
  "final": { %s }, "config": { "x": 1 },
  "history": [ { "step": 10, "values": { %s } } ] }"""
        variant
        index
        seed
        variant
        seed
        finals
        finals

let private writeFixed (folder: string) =
    let runs = Path.Combine(folder, "runs")
    Directory.CreateDirectory runs |> ignore

    let put (name: string) (text: string) =
        File.WriteAllText(Path.Combine(runs, name + ".json"), text)

    put "a.seed0" (runJson "a" 0 0 [ "rmsd", "1"; "loss", "0.5" ])
    put "a.seed1" (runJson "a" 0 1 [ "rmsd", "2"; "loss", "0.25" ])
    put "a.seed2" (runJson "a" 0 2 [ "rmsd", "4"; "loss", "\"NaN\"" ])
    put "b.seed0" (runJson "b" 1 0 [ "rmsd", "0.5" ])
    put "b.seed1" (runJson "b" 1 1 [ "rmsd", "1.5"; "loss", "2" ])

[<Tests>]
let tests =
    testList
        "Ablations/Ablation"
        [
            test "run keys, plan order and validation" {
                Expect.equal (Ablation.runKey "beta 0.1" 2) "beta-0.1.seed2" "key"
                Expect.equal (Ablation.safeName "4096x128/é") "4096x128--" "safe name"

                let a =
                    { microAblation [| betaVariant 0.1; betaVariant 1.0 |] with
                        Seeds = [| 4; 7 |]
                    }

                Expect.isEmpty (Validation.errors (Ablation.validate a)) "valid"

                Expect.equal
                    (Ablation.plan a |> Array.map (fun (i, _, seed, key) -> i, seed, key))
                    [|
                        0, 4, "beta-0.1.seed4"
                        0, 7, "beta-0.1.seed7"
                        1, 4, "beta-1.seed4"
                        1, 7, "beta-1.seed7"
                    |]
                    "variant-major"

                let bad =
                    { a with
                        Variants = [| betaVariant 0.1; betaVariant 0.1 |]
                        Seeds = [| 1; 1 |]
                        Budget = AblationBudget.Steps 0
                    }

                Expect.equal
                    (Validation.errors (Ablation.validate bad)).Length
                    3
                    "duplicate names, duplicate seeds, no steps"

                for seconds in [ 0.0; -1.0; nan; infinity ] do
                    match
                        Validation.errors
                        <| Ablation.validate
                            { a with
                                Budget = AblationBudget.Seconds seconds
                            }
                    with
                    | [ e ] -> Expect.stringContains e "Budget: Seconds" (sprintf "%g s is named" seconds)
                    | errors -> failtestf "expected one error for %g s, got %A" seconds errors

                Expect.isEmpty
                    (Validation.errors
                     <| Ablation.validate
                         { a with
                             Budget = AblationBudget.Seconds 1.5
                         })
                    "1.5 s"

                for builtIn in TokenizerAblations.all do
                    Expect.isEmpty (Validation.errors (Ablation.validate builtIn)) builtIn.Name

                    for _, v, _, _ in Ablation.plan builtIn do
                        let c = v.Change.Invoke builtIn.Base

                        Expect.isEmpty
                            (Validation.errors (TokenizerTrainConfig.validate c))
                            (builtIn.Name + "/" + v.Name)
            }

            test "the summary's mean and sample standard deviation equal a hand computation on a fixed folder" {
                use dir = new TempDir()
                writeFixed dir.Path
                let rows = AblationReport.writeSummary dir.Path "fixed"

                let find v m =
                    rows |> Array.find (fun r -> r.Variant = v && r.Metric = m)

                // a/rmsd: 1, 2, 4 -> mean 7/3, sd sqrt(((4/3)² + (1/3)² + (5/3)²) / 2) = sqrt(7/3)
                let r = find "a" "rmsd"
                Expect.equal r.Runs 3 "a rmsd runs"
                Expect.floatClose Accuracy.veryHigh r.Mean (7.0 / 3.0) "a rmsd mean"
                Expect.floatClose Accuracy.veryHigh r.StdDev (sqrt (7.0 / 3.0)) "a rmsd sd"
                // a/loss: 0.5, 0.25 (NaN skipped) -> mean 0.375, sd sqrt(2 · 0.125² / 1) = 0.1767767
                let r = find "a" "loss"
                Expect.equal r.Runs 2 "NaN not counted"
                Expect.floatClose Accuracy.veryHigh r.Mean 0.375 "a loss mean"
                Expect.floatClose Accuracy.veryHigh r.StdDev (sqrt (2.0 * 0.125 * 0.125)) "a loss sd"
                // b/rmsd: 0.5, 1.5 -> 1 ± sqrt(0.5); b/loss: one run -> no sd
                Expect.floatClose Accuracy.veryHigh (find "b" "rmsd").StdDev (sqrt 0.5) "b rmsd sd"
                // Welch b − a on rmsd: Δ = 1 − 7/3, SE = sqrt(0.5/2 + (7/3)/3), df = SE⁴ / ((0.25)²/1 + (7/9)²/2).
                let contrast =
                    AblationStatistics.contrasts rows
                    |> Array.find (fun c -> c.Variant = "b" && c.Metric = "rmsd")

                let a, c = 0.25, 7.0 / 9.0
                Expect.equal contrast.Baseline "a" "baseline is the first variant"
                Expect.floatClose Accuracy.veryHigh contrast.Difference (1.0 - 7.0 / 3.0) "difference"
                Expect.floatClose Accuracy.veryHigh contrast.StandardError (sqrt (a + c)) "standard error"

                Expect.floatClose
                    Accuracy.veryHigh
                    contrast.DegreesOfFreedom
                    ((a + c) * (a + c) / (a * a + c * c / 2.0))
                    "Welch df"

                Expect.isFalse contrast.Exceeds "1.33 is inside 4.3 × 1.01"
                // b/loss has one run: no standard error, never "exceeds".
                let loss =
                    AblationStatistics.contrasts rows
                    |> Array.find (fun c -> c.Variant = "b" && c.Metric = "loss")

                Expect.isTrue (Double.IsNaN loss.StandardError && not loss.Exceeds) "one run: no test"
                Expect.equal (AblationStatistics.tCritical 4.7) 2.776 "df rounded down"

                let row v mean =
                    {
                        Variant = v
                        Metric = "m"
                        Runs = 3
                        Mean = mean
                        StdDev = 0.1
                    }

                let far = AblationStatistics.contrasts [| row "x" 0.0; row "y" 1.0; row "z" 0.2 |]
                Expect.equal (far |> Array.map (fun c -> c.Variant, c.Exceeds)) [| "y", true; "z", false |] "verdicts"
                Expect.stringContains (File.ReadAllText(Path.Combine(dir.Path, "summary.md"))) "| b | rmsd |" "table"
                Expect.isTrue (Double.IsNaN (find "b" "loss").StdDev) "one run: no sd"

                let md = File.ReadAllText(Path.Combine(dir.Path, "summary.md"))
                Expect.stringContains md "| variant | runs | rmsd | loss |" "header"
                Expect.stringContains md "| a | 3 | 2.3333 ± 1.5275 | 0.375 ± 0.17678 |" "row a"
                Expect.stringContains md "| b | 2 | 1 ± 0.70711 | 2 |" "row b"

                let lines = File.ReadAllLines(Path.Combine(dir.Path, "summary.csv"))
                Expect.equal lines.[0] "variant,metric,runs,mean,std" "csv header"
                let row = lines |> Array.find (fun l -> l.StartsWith "a,rmsd,")
                let cells = row.Split ','
                Expect.equal cells.[2] "3" "csv runs"

                let parsed (i: int) =
                    Double.Parse(cells.[i], CultureInfo.InvariantCulture)

                Expect.equal (parsed 3) (find "a" "rmsd").Mean "csv mean round-trips"
                Expect.equal (parsed 4) (find "a" "rmsd").StdDev "csv sd round-trips"
                Expect.floatClose Accuracy.veryHigh (parsed 4) (sqrt (7.0 / 3.0)) "csv sd by hand"
                Expect.contains lines "b,loss,1,2," "one run: empty sd"
            }

            test "a malformed result file is an InputException naming the file and the field" {
                use dir = new TempDir()
                let path = Path.Combine(dir.Path, "x.json")
                File.WriteAllText(path, (runJson "a" 0 0 [ "rmsd", "1" ]).Replace("\"seed\": 0", "\"seed\": \"zero\""))

                match InputError.catch (fun () -> AblationResults.readRun path) with
                | Error e ->
                    Expect.equal e.File path "file"
                    Expect.equal e.Location (InputLocation.Field "seed") "field"
                | Ok _ -> failtest "a string seed was accepted"

                File.WriteAllText(
                    path,
                    (runJson "a" 0 0 [ "rmsd", "1" ]).Replace("\"seed\": 0,", "\"seed\": 0, \"budget\": 5,")
                )

                match InputError.catch (fun () -> AblationResults.readRun path) with
                | Error e -> Expect.equal e.Location (InputLocation.Field "budget") "a budget that is no object"
                | Ok _ -> failtest "a numeric budget was accepted"

                File.WriteAllText(path, "{ \"ablation\": ")

                Expect.throwsT<InputException> (fun () -> AblationResults.readRun path |> ignore) "truncated"
                |> ignore
            }

            test "a result written before budgets existed reads as a step budget; budgets round-trip" {
                use dir = new TempDir()
                writeFixed dir.Path
                let old = AblationResults.readResults dir.Path
                Expect.equal old.[0].Budget (AblationBudget.Steps 10) "absent budget: the steps"
                Expect.isFalse old.[0].StoppedOnTime "absent: not stopped on time"

                for budget in [ AblationBudget.Steps 7; AblationBudget.Seconds 90.5 ] do
                    let r =
                        { old.[0] with
                            Budget = budget
                            StoppedOnTime = true
                        }

                    let path = Path.Combine(dir.Path, "again.json")
                    File.WriteAllText(path, AblationResults.toJson r)
                    let back = AblationResults.readRun path
                    Expect.equal back.Budget budget "budget"
                    Expect.isTrue back.StoppedOnTime "stopped on time"

                let t = TrainerConfig.small
                let stepped = Ablation.configureTrainer t 5 (AblationBudget.Steps 50)
                Expect.equal (stepped.Seed, stepped.Steps, stepped.MaxSeconds) (5, 50, 0.0) "step budget"
                Expect.equal stepped.WarmupSteps 5 "warm-up at most a tenth"
                let timed = Ablation.configureTrainer t 5 (AblationBudget.Seconds 60.0)
                Expect.equal (timed.Steps, timed.MaxSeconds) (t.Steps, 60.0) "time budget keeps the schedule"
            }

            test "a tiny ablation with a time budget stops each run on time and records it" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                // 1 ms of training is used up by the first step, whatever the machine
                let ablation =
                    { microAblation [| betaVariant 0.25 |] with
                        Budget = AblationBudget.Seconds 0.001
                    }

                let results = Ablation.run (microTrainer ()) dir.Path "test" quiet ablation
                let r = results.[0]
                Expect.isTrue r.StoppedOnTime "stopped on time"
                Expect.equal r.Steps 1 "after the first step"
                Expect.equal r.Budget (AblationBudget.Seconds 0.001) "the budget is recorded"
                let final = dict r.Final
                Expect.equal final.["steps"] 1.0 "the step count reached is a final metric"
                Expect.isTrue (Double.IsFinite final.["valid/rmsd"]) "validated at the stop"
                Expect.stringContains r.Config "\"MaxSeconds\":0.001" "the config holds the budget"

                let stored = AblationResults.readRun (Ablation.resultPath dir.Path r.Key)
                Expect.equal stored.Budget r.Budget "stored budget"
                Expect.isTrue stored.StoppedOnTime "stored stop"
            }

            test "the same seed and config give the same metrics to the last printed digit (a tiny run twice)" {
                use _ = torch.NewDisposeScope()
                use a = new TempDir()
                use b = new TempDir()
                let ablation = microAblation [| betaVariant 0.25 |]
                let ra = Ablation.run (microTrainer ()) a.Path "test" quiet ablation
                let rb = Ablation.run (microTrainer ()) b.Path "test" quiet ablation
                Expect.equal ra.Length 1 "one run"

                let printed (r: AblationRun) =
                    [
                        for p in r.History do
                            for k, v in p.Values do
                                sprintf "%d %s %s" p.Step k (AblationReport.formatNumber v)
                        for k, v in r.Final do
                            if k <> "wall_seconds" && k <> "peak_memory_mb" then
                                sprintf "final %s %s" k (AblationReport.formatNumber v)
                    ]

                Expect.equal (printed rb.[0]) (printed ra.[0]) "same printed metrics"
                Expect.equal (ra.[0].History |> Array.map (fun p -> p.Step)) [| 1; 2; 3 |] "every step logged"
                let final = dict ra.[0].Final
                Expect.isTrue (Double.IsFinite final.["valid/rmsd"]) "validated at the end"
                Expect.isGreaterThan final.["peak_memory_mb"] 1.0 "peak memory"
                Expect.equal ra.[0].Config rb.[0].Config "same config stored"
                Expect.stringContains ra.[0].Config "\"Seed\":3" "the run's seed in its config"
                Expect.equal ra.[0].Commit "test" "commit"
                Expect.isTrue (File.Exists(Path.Combine(a.Path, "summary.md"))) "summary"
            }

            test
                "a finished run stays done when only bookkeeping fields differ (KeepCheckpoints, Progress), not otherwise" {
                use dir = new TempDir()
                let trainer = microTrainer ()
                let current = trainer.ToJson.Invoke micro
                // As a result stored before KeepCheckpoints existed records it: the field absent from Trainer.
                let stored = Nodes.JsonNode.Parse(current)
                Expect.isTrue ((stored.["Trainer"].AsObject()).Remove "KeepCheckpoints") "the field was written"
                let runs = Path.Combine(dir.Path, "runs")
                Directory.CreateDirectory runs |> ignore

                File.WriteAllText(
                    Ablation.resultPath dir.Path "micro.seed3",
                    (runJson "micro" 0 3 [ "rmsd", "1" ])
                        .Replace("\"config\": { \"x\": 1 }", "\"config\": " + stored.ToJsonString())
                )

                let isDone (c: TokenizerTrainConfig) =
                    Ablation.isDone dir.Path "micro.seed3" (trainer.ToJson.Invoke c)

                Expect.isTrue (isDone micro) "the same run, recorded without the field"

                Expect.isTrue
                    (isDone
                        { micro with
                            Trainer =
                                { micro.Trainer with
                                    KeepCheckpoints = 0
                                    Progress = ProgressMode.Auto
                                }
                        })
                    "other bookkeeping"

                Expect.isFalse
                    (isDone
                        { micro with
                            Trainer = { micro.Trainer with Steps = 4 }
                        })
                    "another step count is another run"

                Expect.isFalse (isDone { micro with CropLength = 20 }) "another crop length is another run"

                Expect.isFalse
                    (AblationResults.sameRun """{"Trainer":{"Seed":1}}""" """{"Trainer":{"Seed":2}}""")
                    "seed"

                Expect.isTrue (AblationResults.sameRun """{"a": [1, 2]}""" """{ "a":[1,2] }""") "layout ignored"
                Expect.isFalse (AblationResults.sameRun "not json" "not json either") "texts compared as they are"
            }

            test "a killed ablation resumes without redoing finished runs, continuing an interrupted one" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let ablation = microAblation [| betaVariant 0.1; betaVariant 1.0 |]
                let real = microTrainer ()
                let calls = ResizeArray<string * bool>()

                // First attempt: the first run finishes; the second is killed after 2 of its 3 steps (its
                // checkpoint at step 2 is on disk), as a kill during its third step would leave it.
                let killing =
                    { real with
                        Train =
                            Func<_, _, _, _>(fun (c: TokenizerTrainConfig) (folder: string) (resume: bool) ->
                                calls.Add(Path.GetFileName folder, resume)

                                if calls.Count = 1 then
                                    real.Train.Invoke(c, folder, resume)
                                else
                                    let short =
                                        { c with
                                            Trainer = { c.Trainer with Steps = 2 }
                                        }

                                    let examples = chains.Value |> Array.map TokenizerData.ofChain

                                    use task = new TokenizerTraining.Task(short, torch.CPU, examples, examples.[..0])

                                    Trainer.run short.Trainer task folder false (real.ToJson.Invoke c) |> ignore
                                    failwith "killed")
                    }

                Expect.throws (fun () -> Ablation.run killing dir.Path "test" quiet ablation |> ignore) "killed"
                let first = Ablation.resultPath dir.Path "beta-0.1.seed3"
                Expect.isTrue (File.Exists first) "the first run's result is written"
                Expect.isFalse (File.Exists(Ablation.resultPath dir.Path "beta-1.seed3")) "the killed run has none"
                let before = File.ReadAllBytes first
                calls.Clear()

                let counting =
                    { real with
                        Train =
                            Func<_, _, _, _>(fun c folder resume ->
                                calls.Add(Path.GetFileName folder, resume)
                                real.Train.Invoke(c, folder, resume))
                    }

                let results = Ablation.run counting dir.Path "test" quiet ablation
                Expect.equal (List.ofSeq calls) [ "beta-1.seed3", true ] "only the killed run, resumed"
                Expect.equal (File.ReadAllBytes first) before "the finished run is untouched"
                Expect.equal results.Length 2 "both results"
                let resumed = results.[1]
                Expect.isTrue resumed.Resumed "marked as resumed"
                Expect.equal resumed.Steps 3 "all steps"
                Expect.equal (resumed.History |> Array.map (fun p -> p.Step)) [| 1; 2; 3 |] "the whole history"
                let rows = AblationStatistics.summarize results

                Expect.equal
                    (rows |> Array.map (fun r -> r.Variant) |> Array.distinct)
                    [| "beta 0.1"; "beta 1" |]
                    "both variants"

                // a third call has nothing left to do
                calls.Clear()
                Ablation.run counting dir.Path "test" quiet ablation |> ignore
                Expect.isEmpty calls "nothing rerun"
            }
        ]
