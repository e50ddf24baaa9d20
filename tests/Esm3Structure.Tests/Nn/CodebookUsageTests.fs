module Esm3Structure.Tests.Nn.CodebookUsageTests

open System
open Expecto
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

let private config =
    { Props.baseConfig with
        maxTest = Props.cases
    }

let private f64 = torch.float64

/// A random batch: z, its nearest codes among `k`, the quantized vectors and a random mask.
let private batch (seed: uint64) (n: int64) (k: int64) (d: int64) =
    let g = new torch.Generator(seed)
    let codes = torch.randn ([| k; d |], dtype = f64, generator = g)
    let z = torch.randn ([| n; d |], dtype = f64, generator = g)
    let tok = Codebook.nearestCodes 4096L z codes
    let mask = torch.rand([| n |], dtype = f64, generator = g).lt((0.7).ToScalar())
    z, Codebook.lookup codes tok, tok, mask

[<Tests>]
let tests =
    testList
        "Nn/CodebookUsage"
        [
            test "distinct codes: separated codes count one each, tiled noisy copies one per row, near chains as one" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(11UL)
                // 64 standard normal codes in 16 dimensions: nearest pairs lie ~3 apart, 1 % of the norm is 0.04.
                let separated = torch.randn ([| 64L; 16L |], dtype = torch.float64, generator = g)
                Expect.equal (CodebookUsage.distinctCodes 0.01 separated) 64L "separated"

                // 16 rows tiled 4 times with noise 1e-3 (what a restart from a small batch leaves).
                let rows = torch.randn ([| 16L; 16L |], dtype = torch.float64, generator = g)

                let tiled =
                    rows.repeat (4L, 1L)
                    + torch.randn ([| 64L; 16L |], dtype = torch.float64, generator = g) * 1e-3

                Expect.equal (CodebookUsage.distinctCodes 0.01 tiled) 16L "tiled"
                Expect.equal (CodebookUsage.distinctCodes 0.01 (tiled.to_type torch.float32)) 16L "float32"

                // a, a + δ, a + 2δ with ‖δ‖ under the limit but ‖2δ‖ over it: linked through the middle one.
                let a = torch.ones ([| 1L; 16L |], dtype = torch.float64) * 10.0 // norm 40, limit 0.4
                let d = torch.zeros ([| 1L; 16L |], dtype = torch.float64)
                d.[0L, 0L] <- torch.tensor 0.3
                Expect.equal (CodebookUsage.distinctCodes 0.01 (torch.cat ([| a; a + d; a + d * 2.0 |], 0L))) 1L "chain"
                Expect.equal (CodebookUsage.distinctCodes 0.01 (torch.cat ([| a; a + d * 2.0 |], 0L))) 2L "apart"
            }

            testPropertyWithConfig
                config
                "metrics of one batch: histogram, live codes, perplexity and MSE match direct sums"
            <| Prop.forAll
                (Arb.fromGen (Gen.zip3 (Gen.choose (0, Int32.MaxValue)) (Gen.choose (1, 50)) (Gen.choose (1, 12))))
                (fun (seed, n, k) ->
                    use _ = torch.NewDisposeScope()
                    let z, e, tok, mask = batch (uint64 seed) (int64 n) (int64 k) 3L
                    let usage = CodebookUsage.compute (int64 k) z e tok (Some mask)
                    let m = CodebookUsage.metrics usage
                    let real = tok.masked_select(mask).data<int64>().ToArray()
                    Expect.equal usage.Count (int64 real.Length) "count of real rows"

                    for code in 0 .. k - 1 do
                        let uses = real |> Array.filter (fun t -> t = int64 code) |> Array.length
                        Expect.equal usage.Histogram.[code] (int64 uses) (sprintf "histogram[%d]" code)

                    let live = real |> Array.distinct |> Array.length
                    Expect.equal m.LiveCodes (int64 live) "live codes"
                    Expect.floatClose Accuracy.veryHigh m.LiveFraction (float live / float k) "live fraction"

                    Expect.floatClose
                        Accuracy.veryHigh
                        m.Perplexity
                        ((Codebook.perplexity (int64 k) tok (Some mask)).ToDouble())
                        "perplexity = the tensor version"

                    Expect.floatClose Accuracy.veryHigh m.PerplexityPerCode (m.Perplexity / float k) "per code"

                    if real.Length > 0 then
                        let mse = (Codebook.maskedMse z e (Some mask)).ToDouble()
                        Expect.floatClose Accuracy.veryHigh m.MeanSquaredError mse "mse over real rows"
                    else
                        Expect.isTrue (Double.IsNaN m.MeanSquaredError) "nothing counted: NaN")

            testPropertyWithConfig config "merging two batches equals measuring their union"
            <| Prop.forAll
                (Arb.fromGen (Gen.zip3 (Gen.choose (0, Int32.MaxValue)) (Gen.choose (1, 40)) (Gen.choose (1, 40))))
                (fun (seed, n1, n2) ->
                    use _ = torch.NewDisposeScope()
                    let k = 9L
                    let z1, e1, t1, m1 = batch (uint64 seed) (int64 n1) k 4L
                    let z2, e2, t2, m2 = batch (uint64 seed + 7UL) (int64 n2) k 4L
                    let a = CodebookUsage.compute k z1 e1 t1 (Some m1)
                    let b = CodebookUsage.compute k z2 e2 t2 (Some m2)
                    let cat (x: torch.Tensor) (y: torch.Tensor) = torch.cat ([| x; y |], 0L)

                    let u =
                        CodebookUsage.compute k (cat z1 z2) (cat e1 e2) (cat t1 t2) (Some(cat m1 m2))

                    let merged = CodebookUsage.merge a b
                    Expect.sequenceEqual merged.Histogram u.Histogram "histogram"
                    Expect.equal merged.Count u.Count "count"
                    Expect.floatClose Accuracy.veryHigh merged.SquaredErrorSum u.SquaredErrorSum "error sum"
                    let mm, mu = CodebookUsage.metrics merged, CodebookUsage.metrics u
                    Expect.equal mm.LiveCodes mu.LiveCodes "live codes"
                    Expect.floatClose Accuracy.veryHigh mm.Perplexity mu.Perplexity "perplexity"
                    let empty = CodebookUsage.empty k 4L
                    Expect.equal (CodebookUsage.merge empty a) a "empty is the identity")

            test "perplexity: uniform use of k codes gives k, one code 1, nothing counted 1" {
                let uniform =
                    { CodebookUsage.empty 10L 2L with
                        Histogram = Array.init 10 (fun i -> if i < 4 then 3L else 0L)
                        Count = 12L
                    }

                Expect.floatClose
                    { absolute = 0.0; relative = 1e-12 }
                    (CodebookUsage.perplexity uniform)
                    4.0
                    "four codes"

                let single =
                    { CodebookUsage.empty 10L 2L with
                        Histogram = Array.init 10 (fun i -> if i = 6 then 5L else 0L)
                        Count = 5L
                    }

                Expect.equal (CodebookUsage.perplexity single) 1.0 "one code"
                Expect.equal (CodebookUsage.perplexity (CodebookUsage.empty 10L 2L)) 1.0 "empty"
            }

            test "usage from indices alone has no error; merging mismatched codebooks is refused" {
                use _ = torch.NewDisposeScope()
                let u = CodebookUsage.ofIndices 5L 3L (torch.tensor ([| 0L; 0L; 4L |])) None
                Expect.sequenceEqual u.Histogram [| 2L; 0L; 0L; 0L; 1L |] "histogram"
                Expect.isTrue (Double.IsNaN (CodebookUsage.metrics u).MeanSquaredError) "no error recorded"

                Expect.throwsT<ArgumentException>
                    (fun () -> CodebookUsage.merge u (CodebookUsage.empty 6L 3L) |> ignore)
                    "K differs"
            }

            test "metrics go to a log as named numbers" {
                let m =
                    CodebookUsage.metrics
                        { CodebookUsage.empty 4L 2L with
                            Histogram = [| 1L; 1L; 0L; 0L |]
                            Count = 2L
                            SquaredErrorSum = 8.0
                        }

                let log = m.ToLog "vq/" |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq
                Expect.equal log.["vq/live_fraction"] 0.5 "live fraction"
                Expect.floatClose Accuracy.veryHigh log.["vq/perplexity"] 2.0 "perplexity"
                Expect.equal log.["vq/mse"] 2.0 "mse = 8 / (2 vectors · 2 entries)"
                Expect.equal log.Count 6 "six entries"
            }

            test "no tensors are left alive by computing usage" {
                use _ = torch.NewDisposeScope()
                let z, e, tok, mask = batch 3UL 30L 7L 4L
                CodebookUsage.compute 7L z e tok (Some mask) |> ignore
                let before = DisposeScopeManager.Statistics.ThreadTotalLiveCount

                for _ in 1..5 do
                    CodebookUsage.compute 7L z e tok (Some mask) |> ignore

                Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount before "live tensors"
            }
        ]
