module Esm3Structure.Tests.Nn.QuantizerTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Tests

let private f64 = torch.float64

/// A parent whose child is named like the structure encoder's (`codebook`), for ESM's prefixed keys.
type private EncoderLike(config: QuantizerConfig) as this =
    inherit torch.nn.Module("EncoderLike")
    let codebook = new EmaCodebook(config, new torch.Generator(1UL))
    do this.RegisterComponents()
    member _.Codebook = codebook

let private tiny kind =
    { QuantizerConfig.esm3 with
        Kind = kind
        Codes = 8L
        Dim = 3L
        DataInit = false
    }

let private ema (config: QuantizerConfig) (seed: uint64) =
    let m = new EmaCodebook(config, new torch.Generator(seed))
    m.``to`` (f64) |> ignore
    m

/// Sets the EMA state by hand: codes, counts and sums consistent with them (z_avg = N · codes).
let private setState (m: EmaCodebook) (codes: torch.Tensor) (counts: torch.Tensor) =
    use _ = torch.no_grad ()
    m.Embeddings.copy_ (codes) |> ignore
    m.Counts.copy_ (counts) |> ignore
    m.Sums.copy_ (codes * counts.unsqueeze (1L)) |> ignore

let private rowsOf (t: torch.Tensor) =
    let d = int t.shape.[t.shape.Length - 1]
    t.to_type(f64).contiguous().data<float>().ToArray() |> Array.chunkBySize d

/// Index of the nearest row of `codes` by plain doubles (first on ties).
let private nearest (codes: float[][]) (z: float[]) =
    codes
    |> Array.mapi (fun i e -> Array.fold2 (fun acc a b -> acc + (a - b) * (a - b)) 0.0 z e, i)
    |> Array.minBy id
    |> snd

/// Is every row of `a` exactly some row of `b`?
let private rowsAreRowsOf (a: torch.Tensor) (b: torch.Tensor) =
    let bs = rowsOf b |> Set.ofArray
    rowsOf a |> Array.forall bs.Contains

/// Does some row of `a` equal some row of `b` exactly?
let private anyRowIn (a: torch.Tensor) (b: torch.Tensor) =
    let bs = rowsOf b |> Set.ofArray
    rowsOf a |> Array.exists bs.Contains

/// The EMA state after one update from `state` (codes are not needed: the update reads N and z_avg only).
let private emaAfter
    (m: EmaCodebook)
    (counts: torch.Tensor)
    (sums: torch.Tensor)
    (z: torch.Tensor)
    (tok: torch.Tensor)
    =
    let d = z.shape.[z.shape.Length - 1]

    let bn, bs =
        Codebook.assignmentSums m.Config.Codes (z.reshape (-1L, d)) (tok.reshape (-1L)) None

    Codebook.emaStep m.Config.Decay m.Config.Epsilon counts sums bn bs

/// Eight well separated clusters in 4-D (centres on ±6 in the first three axes, spread 0.3).
let private clusters (g: torch.Generator) (n: int64) =
    let centres =
        torch
            .tensor(
                [|
                    for i in 0..7 do
                        yield (if i &&& 1 = 0 then -6.0 else 6.0)
                        yield (if i &&& 2 = 0 then -6.0 else 6.0)
                        yield (if i &&& 4 = 0 then -6.0 else 6.0)
                        yield 0.0
                |],
                dtype = f64
            )
            .reshape(8L, 4L)

    let which = torch.randint (0L, 8L, [| n |], generator = g)

    centres.index_select (0L, which)
    + 0.3 * torch.randn ([| n; 4L |], dtype = f64, generator = g)

/// `QuantizerConfig.validate`'s errors joined by "; " ("" for a valid config).
let private errors (c: QuantizerConfig) =
    match QuantizerConfig.validate c with
    | Ok _ -> ""
    | Error e -> String.Join("; ", e)

[<Tests>]
let tests =
    testList
        "Nn/Quantizer"
        [
            test "config presets validate; every bad field is named" {
                for c in [ QuantizerConfig.esm3; QuantizerConfig.small; QuantizerConfig.aminoAseed ] do
                    Expect.isOk (QuantizerConfig.validate c) "preset"

                let esm = QuantizerConfig.esm3
                Expect.stringContains (errors { esm with Codes = 0L }) "Codes" "K"
                Expect.stringContains (errors { esm with Dim = -1L }) "Dim" "D"
                Expect.stringContains (errors { esm with Beta = nan }) "Beta" "β"
                Expect.stringContains (errors { esm with Decay = 1.0 }) "Decay" "γ"
                Expect.stringContains (errors { esm with Epsilon = 0.0 }) "Epsilon" "ε"
                Expect.stringContains (errors { esm with DistanceBudgetBytes = 0L }) "DistanceBudgetBytes" "budget"

                Expect.stringContains
                    (errors
                        { esm with
                            LossForm = VqLossForm.SeedBetaOnCodebookTerm
                        })
                    "LossForm"
                    "EMA has no codebook term"

                Expect.stringContains
                    (errors
                        { esm with
                            Kind = QuantizerKind.Gradient
                            Restart = BelowCount 1.0
                        })
                    "BelowCount"
                    "N exists only for EMA"

                Expect.stringContains
                    (errors
                        { QuantizerConfig.aminoAseed with
                            Restart = UnusedFor(3, 10)
                        })
                    "Reparameterised"
                    "no rows to re-seed"

                Expect.stringContains (errors { esm with Restart = UnusedFor(0, 0) }) "steps" "steps"

                Expect.throwsT<ArgumentException>
                    (fun () -> new EmaCodebook({ esm with Codes = 0L }, new torch.Generator(1UL)) |> ignore)
                    "constructor checks"
            }

            test
                "restart policies from text: none, below:T, unused:STEPS[/ROWS]; anything else is refused with the text" {
                Expect.equal (QuantizerConfig.parseRestart "none") (Ok NoRestart) "none"
                Expect.equal (QuantizerConfig.parseRestart "below:1") (Ok(BelowCount 1.0)) "below"
                Expect.equal (QuantizerConfig.parseRestart " Below:0.25 ") (Ok(BelowCount 0.25)) "case, spaces"

                Expect.equal
                    (QuantizerConfig.parseRestart "unused:50")
                    (Ok(UnusedFor(50, QuantizerConfig.DefaultRecentRows)))
                    "unused, default rows"

                Expect.equal (QuantizerConfig.parseRestart "unused:50/1024") (Ok(UnusedFor(50, 1024))) "unused/rows"

                for bad in
                    [
                        ""
                        "never"
                        "below:"
                        "below:-1"
                        "below:x"
                        "unused:0"
                        "unused:5/0"
                        "unused:5/6/7"
                    ] do
                    match QuantizerConfig.parseRestart bad with
                    | Ok p -> failtestf "'%s' must be refused (got %A)" bad p
                    | Error message -> Expect.stringContains message (sprintf "'%s'" bad) "names the text"
            }

            test "EmaCodebook's state_dict is ESM's codebook.* (keys, order, shapes)" {
                use m = new EncoderLike(QuantizerConfig.esm3)

                Expect.sequenceEqual
                    (Checkpoint.keyShapes m |> List.map (fun (k, s) -> k, List.ofArray s))
                    [
                        "codebook.embeddings", [ 4096L; 128L ]
                        "codebook.N", [ 4096L ]
                        "codebook.z_avg", [ 4096L; 128L ]
                    ]
                    "ESM3-REFERENCE.md §5.6"

                Expect.equal (m.Codebook.Counts.sum().ToDouble()) 0.0 "N starts at 0 as ESM"
                Tol.close "z_avg starts as a copy of the codes" 0.0 m.Codebook.Sums m.Codebook.Embeddings
                Expect.isTrue m.Codebook.NeedsInit "needs the first batch"
            }

            test "gradient and reparameterised codebooks use StructTokenBench's names" {
                use g = new GradientCodebook(tiny QuantizerKind.Gradient, new torch.Generator(2UL))

                use r =
                    new ReparameterisedCodebook(tiny QuantizerKind.Reparameterised, new torch.Generator(2UL))

                let keys m =
                    Checkpoint.keyShapes m |> List.map (fun (k, s) -> k, List.ofArray s)

                Expect.sequenceEqual (keys g) [ "codebook.weight", [ 8L; 3L ] ] "VanillaVQ"

                Expect.sequenceEqual
                    (keys r)
                    [
                        "codebook.weight", [ 8L; 3L ]
                        "linear_proj.weight", [ 3L; 3L ]
                        "linear_proj.bias", [ 3L ]
                    ]
                    "AminoAseed"

                Expect.isFalse r.Base.requires_grad "the base is frozen"
            }

            test "ESM's constructor arguments map onto the config" {
                use a = new EmaCodebook(16L, 4L, new torch.Generator(1UL))
                Expect.equal a.Config.Restart NoRestart "no_random_restart = True"
                Expect.equal a.Config.Decay 0.99 "ema_decay"
                use b = new EmaCodebook(16L, 4L, new torch.Generator(1UL), false, 0.5, 0.9)
                Expect.equal b.Config.Restart (BelowCount 0.5) "restart_thres"
                Expect.equal b.Config.Decay 0.9 "ema_decay"
                Expect.sequenceEqual b.Embeddings.shape [| 16L; 4L |] "shape"
            }

            test "one EMA training step: outputs from the old codes, then the hand-computed update (float64)" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(21UL)
                use m = ema (tiny QuantizerKind.Ema) 3UL
                let codes = torch.randn ([| 8L; 3L |], dtype = f64, generator = g)
                let counts = 0.5 + torch.rand ([| 8L |], dtype = f64, generator = g)
                setState m codes counts
                let z = torch.randn ([| 2L; 5L; 3L |], dtype = f64, generator = g)
                m.train ()
                let out = m.Quantize(z, null)
                let expected = rowsOf z |> Array.map (nearest (rowsOf codes)) |> Array.map int64
                Expect.sequenceEqual (out.Indices.reshape(-1L).data<int64>().ToArray()) expected "indices = brute force"
                Expect.sequenceEqual out.Indices.shape [| 2L; 5L |] "indices [B, L]"
                let e = codes.index_select(0L, torch.tensor (expected)).reshape(2L, 5L, 3L)
                Tol.close "z_q = old codes" 1e-15 out.Quantized e
                Tol.close "loss = 0.25·MSE(z, old codes)" 1e-15 out.Loss (0.25 * (z - e).square().mean())

                let bn, bs =
                    Codebook.assignmentSums 8L (z.reshape (-1L, 3L)) (torch.tensor (expected)) None

                let n', m', e' =
                    Codebook.emaStep 0.99 1e-7 counts (codes * counts.unsqueeze (1L)) bn bs

                Tol.close "N" 1e-12 m.Counts n'
                Tol.close "z_avg" 1e-12 m.Sums m'
                Tol.close "embeddings" 1e-12 m.Embeddings e'
            }

            test "evaluation mode and a frozen codebook never change the buffers" {
                use _ = torch.NewDisposeScope()

                let z =
                    torch.randn ([| 4L; 3L |], dtype = f64, generator = new torch.Generator(4UL))

                for frozen, training in [ false, false; true, true ] do
                    use m =
                        ema
                            { tiny QuantizerKind.Ema with
                                FreezeCodebook = frozen
                                DataInit = true
                            }
                            5UL

                    let before = [ for t in [ m.Embeddings; m.Counts; m.Sums ] -> t.clone () ]
                    m.train (training)
                    m.Quantize(z, null) |> ignore

                    List.iter2
                        (fun (a: torch.Tensor) b -> Expect.equal (Tol.maxAbsDiff a b) 0.0 "unchanged")
                        before
                        [ m.Embeddings; m.Counts; m.Sums ]
            }

            test "data-dependent init: the first training batch seeds the codes, once" {
                use _ = torch.NewDisposeScope()

                let config =
                    { tiny QuantizerKind.Ema with
                        DataInit = true
                    }

                use m = ema config 6UL
                // exactly K distinct rows: the init takes all of them (no tiling, no noise)
                let z =
                    torch.randn ([| 2L; 4L; 3L |], dtype = f64, generator = new torch.Generator(7UL))

                m.train ()
                let out = m.Quantize(z, null)
                Expect.equal (Tol.maxAbsDiff out.Quantized z) 0.0 "every vector is its own code"
                Expect.equal (out.Loss.ToDouble()) 0.0 "zero commitment"

                let gapToBatch =
                    torch.cdist(m.Embeddings, z.reshape (-1L, 3L)).amin([| 1L |]).max().ToDouble()

                Expect.isLessThan gapToBatch 1e-12 "every code is a batch row (after an update that keeps it)"

                let gapToCode =
                    torch.cdist(z.reshape (-1L, 3L), m.Embeddings).amin([| 1L |]).max().ToDouble()

                Expect.isLessThan gapToCode 1e-12 "and every batch row is a code"

                Tol.close
                    "N = 1 after init and one update with one use each"
                    1e-12
                    m.Counts
                    (torch.ones ([| 8L |], dtype = f64))

                Expect.isFalse m.NeedsInit "initialised"
                let counts, sums = m.Counts.clone (), m.Sums.clone ()

                let z2 =
                    torch.randn ([| 8L; 3L |], dtype = f64, generator = new torch.Generator(8UL))

                let out2 = m.Quantize(z2, null)
                let _, _, e' = emaAfter m counts sums z2 out2.Indices
                Tol.close "the second call is a plain EMA step, not a second init" 1e-12 m.Embeddings e'
                // fewer rows than codes: tiled with noise 0.01/√D around the batch rows
                use small = ema config 9UL
                small.train ()

                let few =
                    torch.randn ([| 3L; 3L |], dtype = f64, generator = new torch.Generator(10UL))

                small.Quantize(few, null) |> ignore
                let gap = torch.cdist(small.Sums, few).amin([| 1L |]).max().ToDouble()
                Expect.isLessThan gap 0.1 "every initial code is a noised batch row"
            }

            test "E10: feeding one batch repeatedly drives each used code to the mean of its vectors (float64)" {
                use _ = torch.NewDisposeScope()
                let z = clusters (new torch.Generator(11UL)) 120L

                use m =
                    ema
                        { tiny QuantizerKind.Ema with
                            Codes = 6L
                            Dim = 4L
                            DataInit = true
                            Decay = 0.9
                        }
                        12UL

                m.train ()

                for _ in 1..400 do
                    m.Quantize(z, null) |> ignore

                m.eval ()
                let tok = m.Quantize(z, null).Indices
                let counts, sums = Codebook.assignmentSums 6L z tok None
                let used = counts.gt((0.0).ToScalar()).nonzero().squeeze(1L)
                Expect.isGreaterThan used.shape.[0] 3L "several codes in use"

                let means =
                    sums.index_select (0L, used) / counts.index_select(0L, used).unsqueeze(1L)

                let codes = m.Embeddings.index_select (0L, used)
                // the fixed point is M/Ñ with Laplace-smoothed counts: equal to the mean up to ε/n_k relative
                let n = counts.index_select (0L, used)
                let total = counts.sum ()
                let smoothed = (n + 1e-7) / (total + 6.0 * 1e-7) * total

                Tol.close
                    "codes = the smoothed fixed point"
                    1e-10
                    codes
                    (sums.index_select (0L, used) / smoothed.unsqueeze (1L))

                let bound = (means.abs().max().ToDouble()) * 1e-7 + 1e-10
                Tol.close "codes = means of their vectors (to the smoothing bias)" bound codes means
            }

            test "VideoGPT restart: codes with N < 1 after an update are replaced by batch rows" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(13UL)

                use m =
                    ema
                        { tiny QuantizerKind.Ema with
                            Restart = BelowCount 1.0
                        }
                        14UL

                let far = 100.0 + torch.randn ([| 6L; 3L |], dtype = f64, generator = g)
                let near = torch.randn ([| 2L; 3L |], dtype = f64, generator = g)
                setState m (torch.cat ([| near; far |], 0L)) (torch.ones ([| 8L |], dtype = f64))
                let z = torch.randn ([| 20L; 3L |], dtype = f64, generator = g)
                m.train ()
                let counts, sums = m.Counts.clone (), m.Sums.clone ()
                let out = m.Quantize(z, null)
                let _, _, e' = emaAfter m counts sums z out.Indices

                let used =
                    torch.zeros([| 8L |], dtype = torch.ScalarType.Bool).index_fill_(0L, out.Indices, true)

                let unusedCount = used.logical_not().sum().ToInt64()
                Expect.isGreaterThanOrEqual unusedCount 6L "the six far codes are unused"

                for k in 0L .. 7L do
                    let row = m.Embeddings.narrow (0L, k, 1L)

                    if used.[k].ToBoolean() then
                        Tol.close (sprintf "used code %d keeps its EMA value" k) 1e-12 row (e'.narrow (0L, k, 1L))
                    else
                        Expect.isTrue (rowsAreRowsOf row z) (sprintf "unused code %d is now a batch row" k)

                Expect.equal m.RestartCount unusedCount "one restart per unused code"

                Tol.close
                    "N kept"
                    1e-15
                    (m.Counts.narrow (0L, 2L, 6L))
                    (torch.full ([| 6L |], (0.99).ToScalar(), dtype = f64))
            }

            test "dead codes are re-seeded and the live fraction rises from a bad initialisation" {
                use _ = torch.NewDisposeScope()
                let data = clusters (new torch.Generator(15UL)) 400L

                let liveFraction (restart: RestartPolicy) (steps: int) =
                    let config =
                        { tiny QuantizerKind.Ema with
                            Dim = 4L
                            Restart = restart
                        }

                    use m = ema config 16UL
                    // every vector is nearest to code 0; the other codes sit further out
                    let bad =
                        torch.cat (
                            [|
                                torch.full ([| 1L; 4L |], (20.0).ToScalar(), dtype = f64)
                                40.0
                                + torch.rand ([| 7L; 4L |], dtype = f64, generator = new torch.Generator(17UL))
                            |],
                            0L
                        )

                    setState m bad (torch.ones ([| 8L |], dtype = f64))

                    let measure () =
                        m.eval ()
                        let out = m.Quantize(data, null)

                        (CodebookUsage.metrics (CodebookUsage.compute 8L data out.Quantized out.Indices None))
                            .LiveFraction

                    let before = measure ()
                    let g = new torch.Generator(18UL)
                    m.train ()

                    for _ in 1..steps do
                        let pick = torch.randint (0L, 400L, [| 32L |], generator = g)
                        m.Quantize(data.index_select (0L, pick), null) |> ignore

                    before, measure (), m.RestartCount

                let b0, a0, r0 = liveFraction NoRestart 30
                Expect.equal b0 0.125 "one live code of eight at the start"
                Expect.equal a0 0.125 "without restarts it stays collapsed"
                Expect.equal r0 0L "no restarts"
                let before, after, restarts = liveFraction (UnusedFor(2, 64)) 30
                Expect.equal before 0.125 "same start"
                Expect.isGreaterThanOrEqual after 0.75 (sprintf "UnusedFor: live fraction %g after 30 steps" after)
                Expect.isGreaterThan restarts 0L "restarts happened"
                // VideoGPT's restart keeps the stale z_avg and N, so the next update drags a restarted code back
                // towards its old mean: recovery takes hundreds of steps instead of a few
                let _, early, _ = liveFraction (BelowCount 1.0) 30
                let _, late, restarts = liveFraction (BelowCount 1.0) 400
                Expect.isLessThan early 0.75 "BelowCount: still collapsed after 30 steps"
                Expect.isGreaterThanOrEqual late 0.75 (sprintf "BelowCount: live fraction %g after 400 steps" late)
                Expect.isGreaterThan restarts 30L "restarted again and again"
            }

            test "UnusedFor counts steps without use and re-seeds from the recent rows (gradient codebook too)" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(19UL)

                let config =
                    { tiny QuantizerKind.Gradient with
                        Codes = 4L
                        Restart = UnusedFor(2, 10)
                    }

                use m = new GradientCodebook(config, new torch.Generator(20UL))
                m.``to`` (f64) |> ignore

                do
                    use _ = torch.no_grad ()

                    m.Codes.copy_ (
                        torch.cat (
                            [|
                                torch.zeros ([| 1L; 3L |], dtype = f64)
                                50.0 + torch.rand ([| 3L; 3L |], dtype = f64, generator = g)
                            |],
                            0L
                        )
                    )
                    |> ignore

                m.train ()
                let z1 = torch.randn ([| 6L; 3L |], dtype = f64, generator = g)
                let z2 = torch.randn ([| 6L; 3L |], dtype = f64, generator = g)
                m.Quantize(z1, null) |> ignore
                Expect.equal m.RestartCount 0L "one unused step is not enough"
                m.Quantize(z2, null) |> ignore
                Expect.equal m.RestartCount 3L "three codes unused for two steps"

                Expect.isTrue
                    (rowsAreRowsOf (m.Codes.narrow (0L, 1L, 3L)) (torch.cat ([| z1; z2 |], 0L)))
                    "re-seeded from the last 10 rows"

                Expect.isFalse
                    (anyRowIn (m.Codes.narrow (0L, 1L, 3L)) (z1.narrow (0L, 0L, 2L)))
                    "not from rows pushed out of the buffer"
            }

            test
                "TrainingState carries UnusedFor's counters and recent rows into another quantizer; MarkLoaded skips the data init" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(19UL)

                let config =
                    { tiny QuantizerKind.Gradient with
                        Codes = 4L
                        Restart = UnusedFor(2, 10)
                        DataInit = false
                    }

                let codes =
                    torch.cat (
                        [|
                            torch.zeros ([| 1L; 3L |], dtype = f64)
                            50.0 + torch.rand ([| 3L; 3L |], dtype = f64, generator = g)
                        |],
                        0L
                    )

                let fresh seed =
                    let m = new GradientCodebook(config, new torch.Generator(seed))
                    m.``to`` (f64) |> ignore

                    do
                        use _ = torch.no_grad ()
                        m.Codes.copy_ codes |> ignore

                    m.train ()
                    m

                use a = fresh 20UL
                let z1 = torch.randn ([| 6L; 3L |], dtype = f64, generator = g)
                let z2 = torch.randn ([| 6L; 3L |], dtype = f64, generator = g)
                a.Quantize(z1, null) |> ignore
                let state = a.TrainingState() |> List.map (fun (k, v) -> k, v.clone ()) |> dict

                let lookup k =
                    match state.TryGetValue k with
                    | true, t -> Some t
                    | _ -> None

                Expect.sequenceEqual
                    (state.Keys |> Seq.sort)
                    [
                        "dead_codes.cursor"
                        "dead_codes.recent"
                        "dead_codes.unused"
                        "needs_init"
                        "restarts"
                    ]
                    "the state's names"

                use b = fresh 21UL
                b.RestoreTrainingState lookup
                b.Quantize(z2, null) |> ignore
                Expect.equal b.RestartCount 3L "the restored counters: three codes unused for two steps"

                Expect.isTrue
                    (rowsAreRowsOf (b.Codes.narrow (0L, 1L, 3L)) (torch.cat ([| z1; z2 |], 0L)))
                    "re-seeded from the restored recent rows and the new ones"

                use c = fresh 21UL
                c.Quantize(z2, null) |> ignore
                Expect.equal c.RestartCount 0L "without the state: one unused step, no restart"

                let wrongCapacity =
                    { config with
                        Restart = UnusedFor(2, 11)
                    }

                use d = new GradientCodebook(wrongCapacity, new torch.Generator(22UL))

                Expect.throwsC (fun () -> d.RestoreTrainingState lookup) (fun e ->
                    Expect.stringContains e.Message "'recent'" "names the tensor")

                // A data-initialised codebook loaded from a trained model keeps its codes on its first training call.
                let dataInit =
                    { config with
                        DataInit = true
                        Restart = NoRestart
                    }

                use loaded = new GradientCodebook(dataInit, new torch.Generator(23UL))
                loaded.``to`` (f64) |> ignore

                do
                    use _ = torch.no_grad ()
                    loaded.Codes.copy_ codes |> ignore

                loaded.MarkLoaded()
                loaded.train ()
                loaded.Quantize(z1, null) |> ignore
                Tol.close "MarkLoaded: codes kept" 0.0 loaded.Codes codes
                use unmarked = new GradientCodebook(dataInit, new torch.Generator(23UL))
                unmarked.``to`` (f64) |> ignore
                unmarked.train ()
                unmarked.Quantize(z1, null) |> ignore
                Expect.isTrue (rowsAreRowsOf unmarked.Codes z1) "without it: the codes are the batch's rows"
            }

            test "masked rows are quantized but never learned from" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(22UL)
                let z = torch.randn ([| 2L; 6L; 3L |], dtype = f64, generator = g)
                let mask = torch.rand([| 2L; 6L |], dtype = f64, generator = g).lt((0.5).ToScalar())
                let poisoned = torch.where (mask.unsqueeze (-1L), z, torch.full_like (z, 1e6))
                let codes = torch.randn ([| 8L; 3L |], dtype = f64, generator = g)
                use a = ema (tiny QuantizerKind.Ema) 1UL
                use b = ema (tiny QuantizerKind.Ema) 1UL
                setState a codes (torch.ones ([| 8L |], dtype = f64))
                setState b codes (torch.ones ([| 8L |], dtype = f64))
                a.train ()
                b.train ()
                let outA = a.Quantize(z, mask)
                let outB = b.Quantize(poisoned, mask)
                Tol.close "codes unaffected by masked rows" 0.0 a.Embeddings b.Embeddings
                Tol.close "loss over real rows only" 0.0 outA.Loss outB.Loss
                Expect.sequenceEqual outB.Indices.shape [| 2L; 6L |] "every row quantized"
            }

            test "checkpoint round trip: identical buffers and outputs, and no re-init after loading" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let config =
                    { tiny QuantizerKind.Ema with
                        DataInit = true
                        Restart = UnusedFor(2, 16)
                    }

                let g = new torch.Generator(23UL)
                use a = new EmaCodebook(config, new torch.Generator(24UL))
                a.train ()

                for _ in 1..5 do
                    a.Quantize(torch.randn ([| 3L; 5L; 3L |], generator = g), null) |> ignore

                let path = dir.File "codebook.safetensors"
                Checkpoint.save path a null
                use b = new EmaCodebook(config, new torch.Generator(99UL))
                Expect.isTrue b.NeedsInit "fresh"
                Checkpoint.load path b
                Expect.isFalse b.NeedsInit "loaded counts mean initialised"

                for (name, x), (_, y) in List.zip (Checkpoint.stateDict a) (Checkpoint.stateDict b) do
                    Expect.equal (Tol.maxAbsDiff x y) 0.0 name

                a.eval ()
                b.eval ()
                let z = torch.randn ([| 2L; 7L; 3L |], generator = g)
                let oa, ob = a.Quantize(z, null), b.Quantize(z, null)
                Expect.equal (Tol.maxAbsDiff oa.Indices ob.Indices) 0.0 "indices"
                Expect.equal (Tol.maxAbsDiff oa.Quantized ob.Quantized) 0.0 "z_q"
                Expect.equal (oa.Loss.ToDouble()) (ob.Loss.ToDouble()) "loss"
                b.train ()
                let counts, sums = b.Counts.clone (), b.Sums.clone ()
                let out = b.Quantize(z, null)
                let _, _, e' = emaAfter b counts sums z out.Indices
                // Exact: the training call runs the same Codebook.assignmentSums and emaStep on the same values.
                Tol.close "the first training call after loading is an EMA step, not an init" 0.0 b.Embeddings e'
            }

            test "the reparameterised codebook moves unselected codes when trained; the plain one does not" {
                use _ = torch.NewDisposeScope()

                let z =
                    torch.randn ([| 3L; 3L |], dtype = f64, generator = new torch.Generator(25UL))

                let step (m: VectorQuantizer) =
                    m.``to`` (f64) |> ignore
                    m.train ()
                    let before = m.Codes.detach().clone()
                    let out = m.Quantize(z, null)
                    out.Loss.backward ()

                    do
                        use _ = torch.no_grad ()

                        for p in m.parameters () do
                            if p.requires_grad && not (isNull p.grad) then
                                p.sub_ (0.5 * p.grad) |> ignore

                    let moved = (m.Codes.detach () - before).abs().sum(1L).gt((0.0).ToScalar())

                    let selected =
                        torch.zeros([| 8L |], dtype = torch.ScalarType.Bool).index_fill_(0L, out.Indices, true)

                    moved, selected

                use plain =
                    new GradientCodebook(tiny QuantizerKind.Gradient, new torch.Generator(26UL))

                let moved, selected = step plain
                Expect.isTrue (moved.eq(selected).all().ToBoolean()) "plain: exactly the selected codes move"

                use reparam =
                    new ReparameterisedCodebook(tiny QuantizerKind.Reparameterised, new torch.Generator(26UL))

                let moved, selected = step reparam
                Expect.isTrue (selected.logical_not().sum().ToInt64() >= 5L) "at least five codes unselected"
                Expect.isTrue (moved.all().ToBoolean()) "reparameterised: every code moves"
            }

            test "every kind runs in float32 and float64 and gives gradients to z" {
                use _ = torch.NewDisposeScope()

                for kind in [ QuantizerKind.Ema; QuantizerKind.Gradient; QuantizerKind.Reparameterised ] do
                    for dtype in [ torch.float32; f64 ] do
                        use m =
                            Quantizer.create { tiny kind with DataInit = true } (new torch.Generator(27UL))

                        m.``to`` (dtype) |> ignore
                        m.train ()

                        let z =
                            torch
                                .randn([| 2L; 5L; 3L |], dtype = dtype, generator = new torch.Generator(28UL))
                                .requires_grad_(true)

                        let out, usage = Quantizer.quantizeWithUsage m z null
                        Expect.equal out.Quantized.dtype dtype (sprintf "%O %O: z_q dtype" kind dtype)
                        Expect.equal out.Loss.dtype dtype "loss dtype"
                        Expect.isTrue (Double.IsFinite(out.Loss.ToDouble())) "finite loss"
                        Expect.equal usage.Count 10L "usage counted"
                        (out.Quantized.sum () + out.Loss).backward()
                        Expect.isNotNull z.grad "gradient reaches z"

                        Expect.throwsT<ArgumentException>
                            (fun () -> m.Quantize(torch.zeros ([| 2L; 4L |], dtype = dtype), null) |> ignore)
                            "wrong D"

                        Expect.throwsT<ArgumentException>
                            (fun () -> m.Quantize(z, torch.ones ([| 3L |], dtype = torch.ScalarType.Bool)) |> ignore)
                            "wrong mask"
            }

            test "training is deterministic for a generator seed and leaves no live tensors behind" {
                let config =
                    { QuantizerConfig.small with
                        Codes = 32L
                        Dim = 8L
                        Restart = UnusedFor(1, 40)
                    }

                let data = torch.randn ([| 64L; 8L |], generator = new torch.Generator(29UL))

                let run seed =
                    let m = new EmaCodebook(config, new torch.Generator(seed))
                    m.train ()
                    let g = new torch.Generator(30UL)

                    let step () =
                        use _ = torch.NewDisposeScope()

                        m.Quantize(data.index_select (0L, torch.randint (0L, 64L, [| 16L |], generator = g)), null)
                        |> ignore

                    step ()
                    let live = DisposeScopeManager.Statistics.ThreadTotalLiveCount

                    for _ in 1..10 do
                        step ()

                    Expect.equal
                        DisposeScopeManager.Statistics.ThreadTotalLiveCount
                        live
                        "no live tensors left per step"

                    Expect.isGreaterThan m.RestartCount 0L "restarts ran"
                    m

                use a = run 31UL
                use b = run 31UL
                Expect.equal (Tol.maxAbsDiff a.Embeddings b.Embeddings) 0.0 "same seed, same codes"
                use c = run 32UL
                Expect.isGreaterThan (Tol.maxAbsDiff a.Embeddings c.Embeddings) 0.0 "another seed differs"
                data.Dispose()
            }

            test "FSQ: the grid holds every code once in [−1, 1], lookups give the quantized vectors, z = 0 is code 500" {
                use _ = torch.NewDisposeScope()
                let config = QuantizerConfig.finite [ 8; 5; 5; 5 ]
                Expect.equal config.Codes 1000L "8·5·5·5 codes"
                use m = new FiniteScalarQuantizer(config)
                m.``to`` f64 |> ignore
                let grid = m.Codes
                Expect.sequenceEqual grid.shape [| 1000L; 4L |] "grid shape"

                let distinct =
                    (grid * 4.0).round().to_type(torch.int64).data<int64>().ToArray()
                    |> Array.chunkBySize 4
                    |> Array.map (fun row -> String.Join(",", row))
                    |> Array.distinct

                Expect.equal distinct.Length 1000 "distinct codes"
                Expect.isLessThanOrEqual (grid.abs().max().ToDouble()) 1.0 "in [−1, 1]"

                let z =
                    torch.randn ([| 6L; 7L; 4L |], dtype = f64, generator = new torch.Generator(3UL))
                    * 3.0

                let out = m.Quantize(z, null)
                // The straight-through sum b + (round(b) − b) can miss round(b) by one rounding of a value below
                // 4 in float64, and the division by ⌊L/2⌋ ≥ 1 keeps it below 2·2⁻⁵¹.
                Tol.close "lookup = quantized" 1e-15 (m.DictionaryLookup out.Indices) out.Quantized
                Expect.isGreaterThanOrEqual (out.Indices.min().ToInt64()) 0L "index ≥ 0"
                Expect.isLessThan (out.Indices.max().ToInt64()) 1000L "index < K"
                Expect.equal (out.Loss.ToDouble()) 0.0 "no loss"
                // z = 0: every channel rounds to its middle level (digits 4, 2, 2, 2): 4 + 2·8 + 2·40 + 2·200.
                let zero = m.Quantize(torch.zeros ([| 1L; 4L |], dtype = f64), null)
                Expect.equal (zero.Indices.[0L].ToInt64()) 500L "mixed-radix index of the centre"
                Tol.close "centre code" 0.0 zero.Quantized (torch.zeros ([| 1L; 4L |], dtype = f64))
            }

            test "FSQ: the gradient passes straight through the rounding (the bound's derivative)" {
                use _ = torch.NewDisposeScope()
                let levels = [ 7; 6 ]
                use m = new FiniteScalarQuantizer(QuantizerConfig.finite levels)
                m.``to`` f64 |> ignore

                let z =
                    (torch.randn ([| 5L; 2L |], dtype = f64, generator = new torch.Generator(8UL))).requires_grad_(true)

                m.Quantize(z, null).Quantized.sum().backward()
                // d/dz [tanh(z + shift)·h − offset] / ⌊L/2⌋ with h = (L − 1)(1 − ε)/2 and shift = atanh(offset/h).
                let l = torch.tensor ([| 7.0; 6.0 |], dtype = f64)
                let h = (l - 1.0) * (1.0 - FiniteScalarQuantizer.BoundEpsilon) / 2.0
                let offset = torch.tensor ([| 0.0; 0.5 |], dtype = f64)
                let shift = (offset / h).atanh()
                let t = (z.detach () + shift).tanh()
                let expected = (1.0 - t * t) * h / torch.tensor ([| 3.0; 3.0 |], dtype = f64)
                Tol.close "dQ/dz" 1e-12 z.grad expected
            }

            test "FSQ configs: an empty level list, a level below 2 and a wrong product are named errors" {
                Expect.stringContains (errors (QuantizerConfig.finite [])) "Levels" "no codes"
                Expect.stringContains (errors (QuantizerConfig.finite [ 8; 1 ])) "at least 2 levels" "level 1"

                Expect.stringContains
                    (errors
                        { QuantizerConfig.finite [ 8; 5 ] with
                            Codes = 41L
                        })
                    "product (40)"
                    "product"

                Expect.stringContains
                    (errors
                        { QuantizerConfig.esm3 with
                            Levels = [ 4 ]
                        })
                    "Levels are for a Finite quantizer"
                    "levels on a codebook"

                Expect.equal (errors (QuantizerConfig.finite [ 8; 5; 5; 5 ])) "" "valid"
            }

            test
                "product codebook: its token is the nearest row of its Cartesian table, and its vector that row (float64)" {
                use _ = torch.NewDisposeScope()

                let config =
                    { QuantizerConfig.esm3 with
                        Codes = 36L
                        Dim = 4L
                        Groups = 2
                        Restart = UnusedFor(2, 64)
                    }

                let g = new torch.Generator(11UL)
                use q = new ProductCodebook(config, g)
                q.``to`` f64 |> ignore
                Expect.equal q.CodesPerGroup 6L "k = √36"
                let data = clusters g 96L

                for _ in 1..4 do
                    q.Quantize(data, null) |> ignore

                Expect.isTrue (q.Groups |> Array.forall (fun e -> not e.NeedsInit)) "every group learned"
                q.eval ()
                let z = torch.randn ([| 40L; 4L |], dtype = f64, generator = g) * 6.0
                let out = q.Quantize(z, null)
                let table = q.Codes
                Expect.equal table.shape [| 36L; 4L |] "table K × D"
                let codes = rowsOf table
                let expected = rowsOf z |> Array.map (nearest codes >> int64)
                Expect.equal (out.Indices.data<int64>().ToArray()) expected "nearest rows of the table"
                // Straight-through z + (e − z): two float64 roundings of values up to |z| + |e|.
                let tol =
                    Tol.derived f64 4.0 (z.abs().max().ToDouble() + table.abs().max().ToDouble())

                Tol.close "quantized = table rows" tol out.Quantized (table.index_select (0L, out.Indices))
                // Group 0 is the least significant digit: the first two channels are its code.
                let group0 =
                    q.Groups.[0].Embeddings.index_select(0L, out.Indices.remainder ((6L).ToScalar()))

                Tol.close "group 0's slice" tol (out.Quantized.narrow (1L, 0L, 2L)) group0
                let state = q.TrainingState() |> List.map fst
                Expect.contains state "group0.restarts" "group 0's state"
                Expect.contains state "group1.dead_codes.unused" "group 1's tracker"

                Expect.equal
                    (Checkpoint.keyShapes q |> List.map fst)
                    [
                        for i in 0..1 do
                            for b in [ "embeddings"; "N"; "z_avg" ] -> sprintf "groups.%d.%s" i b
                    ]
                    "state-dict keys"

                Expect.isGreaterThan (q.JointCounts.sum().ToDouble()) 0.0 "joint counts"
                // The table cut back into groups (an `--init` from the release file) gives the same product.
                use fresh = new ProductCodebook(config, new torch.Generator(12UL))
                fresh.``to`` f64 |> ignore
                fresh.LoadTable(table, "table")
                Tol.close "table loaded back" 0.0 fresh.Codes table
                Expect.isFalse fresh.Groups.[0].NeedsInit "loaded codes are not re-initialised"
                let scrambled = table.roll (1L, 0L) // row i holds row i − 1: no product of slices

                Expect.throwsT<ArgumentException>
                    (fun () -> fresh.LoadTable(scrambled, "table"))
                    "a table whose rows are not the product's"
            }

            test
                "product codebook configs: groups below 1, a code count that is no power, an indivisible width, a non-EMA kind" {
                let product =
                    { QuantizerConfig.esm3 with
                        Codes = 4096L
                        Dim = 64L
                        Groups = 2
                    }

                Expect.equal (errors product) "" "4096 = 64², 64 channels in two slices"
                Expect.equal (QuantizerConfig.codesPerGroup { product with Groups = 3 }) 16L "4096 = 16³"
                Expect.stringContains (errors { product with Groups = 0 }) "Groups must be at least 1" "zero groups"
                Expect.stringContains (errors { product with Codes = 2048L }) "2-th power" "2048 is no square"
                Expect.stringContains (errors { product with Dim = 63L }) "multiple of Groups" "63 channels"

                Expect.stringContains
                    (errors
                        { product with
                            Kind = QuantizerKind.Gradient
                        })
                    "built on EMA codebooks"
                    "gradient kind"
            }
        ]
