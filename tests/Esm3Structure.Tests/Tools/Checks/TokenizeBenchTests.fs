module Esm3Structure.Tests.Tools.Checks.TokenizeBenchTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure.Checks
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests

/// A tiny encoder config (d 32, 4 vector heads, 2 blocks, k 16, 4096 × 128 codes).
let private tiny =
    { StructureEncoderConfig.esm3 with
        DModel = 32L
        VHeads = 4L
    }

let private corpusChain (name: string) =
    let entry =
        Corpus.readIndex (Data.path [ "index.tsv" ])
        |> Array.find (fun e -> e.Name = name)

    StructureFile.read (Data.path [ "structures"; entry.File ]) None

let private caOf (c: ProteinChain) (i: int) =
    Array.init 3 (fun x -> float c.Atom37.[i, ResidueConstants.caIndex, x])

[<Tests>]
let tests =
    testList
        "Checks/TokenizeBench"
        [
            test "a short bench chain is the first residues of one real chain, numbering and coordinates kept" {
                let b = TokenizeBench.benchChain (Data.root.Value) 100
                Expect.equal (ProteinChain.length b.Chain) 100 "length"
                let name = b.Source.Split(' ').[0]
                Expect.equal b.Source (name + " 1–100") "source"
                Expect.equal b.Chain.Name name "named after its chain"
                let whole = corpusChain name
                Expect.isGreaterThanOrEqual (ProteinChain.length whole) 100 "long enough"
                Expect.equal b.Chain.Sequence (whole.Sequence.Substring(0, 100)) "sequence"
                Expect.equal b.Chain.ResidueIndex whole.ResidueIndex.[..99] "numbering"
                Expect.equal (caOf b.Chain 57) (caOf whole 57) "coordinates"
                Expect.equal (TokenizeBench.benchChain (Data.root.Value) 100).Source b.Source "deterministic"
            }

            test "a chain longer than the corpus's longest is joined from real pieces, far apart, numbers apart" {
                let b = TokenizeBench.benchChain (Data.root.Value) 1000
                let c = b.Chain
                Expect.equal (ProteinChain.length c) 1000 "length"
                let parts = b.Source.Split(" + ")
                Expect.equal parts.Length 3 "three pieces (the corpus has nothing above 500 residues)"
                let sizes = parts |> Array.map (fun p -> int (p.Split('–').[1]))
                Expect.equal sizes [| 334; 333; 333 |] "sizes"
                let mutable start = 0
                let mutable previous = 0

                for p, n in Array.zip parts sizes do
                    let whole = corpusChain (p.Split(' ').[0])
                    Expect.equal (c.Sequence.Substring(start, n)) (whole.Sequence.Substring(0, n)) (p + ": sequence")
                    // Rigidly translated: CA–CA vectors inside the piece are the file's.
                    let d (ch: ProteinChain) i j = Array.map2 (-) (caOf ch i) (caOf ch j)
                    let inside = d c (start + n - 1) start
                    let original = d whole (n - 1) 0

                    for x in 0..2 do
                        Expect.floatClose Accuracy.low inside.[x] original.[x] (p + ": translated only")

                    if start > 0 then
                        Expect.equal
                            (c.ResidueIndex.[start] - c.ResidueIndex.[start - 1])
                            TokenizeBench.PieceNumberGap
                            "gap"

                        let centre (from: int) (count: int) =
                            Array.init 3 (fun x ->
                                Array.average [| for i in from .. from + count - 1 -> (caOf c i).[x] |])

                        let a = centre previous (start - previous)
                        let bCentre = centre start n
                        let apart = sqrt (Array.sum (Array.map2 (fun u v -> (u - v) ** 2.0) a bCentre))
                        Expect.floatClose Accuracy.low apart TokenizeBench.PieceSpacing "centroids PieceSpacing apart"

                    previous <- start
                    start <- start + n
            }

            test "the FLOP count: ESM's sizes by hand, and the pruned last feed-forward" {
                let c = StructureEncoderConfig.esm3
                let d, v, e, f = 1024.0, 128.0, 16.0, 4096.0
                // Per neighbourhood slot: proj, out_proj, pair terms over E keys, SwiGLU (ESM3-REFERENCE.md §4.4, §5.6).
                let attention = 2.0 * d * 15.0 * v + 2.0 * 3.0 * v * d + 18.0 * v * e
                let ffn = 2.0 * d * 2.0 * f + 2.0 * f * d
                let head = 2.0 * d * 128.0 + 2.0 * 4096.0 * 128.0
                let dense = 2.0 * e * (attention + ffn) + head
                Expect.floatClose Accuracy.high (TokenizeBench.denseEncoderFlops c 1000L) (1000.0 * dense) "dense"

                Expect.floatClose
                    Accuracy.high
                    (TokenizeBench.encoderFlops c 1000L)
                    (1000.0 * (dense - (e - 1.0) * ffn))
                    "as run: the last block's SwiGLU on the query slot only"

                Expect.sequenceEqual (TokenizeBench.dominantShape c 1000L) [| 16000L; 1024L; 8192L |] "dominant shape"
                // A chain shorter than k: E = L.
                Expect.sequenceEqual (TokenizeBench.dominantShape c 5L) [| 25L; 1024L; 8192L |] "E = L"

                Expect.equal
                    (TokenizeBench.encoderFlops c 5L)
                    (TokenizeBench.denseEncoderFlops c 5L - 5.0 * 4.0 * ffn)
                    "E = L"
            }

            test "run measures every chain of an available encoder and reports an unavailable one" {
                use encoder = TokenizeBench.randomEncoder tiny 3UL
                let chain = TokenizeBench.benchChain (Data.root.Value) 40
                let messages = Collections.Generic.List<string>()
                let clock = Diagnostics.Stopwatch.StartNew()

                let rows =
                    // No peak sweep: it would fix the allocator for every later test (see `TokenizeBench.run`).
                    TokenizeBench.run
                        false
                        [
                            TokenizeBenchEncoder.Of("tiny", encoder)
                            TokenizeBenchEncoder.Missing("shipped", "no shipped model exists yet")
                        ]
                        [ chain ]
                        1
                        messages.Add

                let wall = clock.Elapsed.TotalSeconds

                Expect.equal (rows |> List.map (fun r -> r.Encoder)) [ "tiny"; "shipped" ] "rows in encoder order"
                let r = rows.[0]
                Expect.equal r.Note "" "measured"
                Expect.equal r.Length 40 "length"
                Expect.isGreaterThan r.Measurement.Milliseconds 0.0 "time"
                // Against this test's own clock: the one timed repeat is part of the whole call (warm-up, matmul
                // ceiling and all), so the reported rates can be no lower than these; a unit slip (ms for s, or
                // GFLOP/s off by 1e3) falls outside them.
                Expect.isLessThanOrEqual (r.Measurement.Milliseconds / 1000.0) wall "the timed repeat fits the call"
                Expect.isGreaterThanOrEqual r.ResiduesPerSecond (40.0 / wall) "residues/s ≥ 40 residues / wall time"
                Expect.floatClose Accuracy.high r.Flops (TokenizeBench.encoderFlops tiny 40L) "flops"

                Expect.isGreaterThanOrEqual
                    r.GFlops
                    (TokenizeBench.encoderFlops tiny 40L / (wall * 1e9))
                    "GFLOP/s ≥ FLOPs / wall time"

                Expect.sequenceEqual r.CeilingShape (TokenizeBench.dominantShape tiny 40L) "ceiling shape"
                Expect.isGreaterThan r.CeilingGFlops 0.0 "ceiling"
                Expect.isNonEmpty messages "progress"
                Expect.equal rows.[1].Note "no shipped model exists yet" "the reason"
                let table = TokenizeBench.format rows
                Expect.stringContains table "| tiny | 40 |" "measured row"
                Expect.stringContains table "| shipped | — | not measured: no shipped model exists yet |" "reason row"
            }

            test "a random encoder is deterministic for its seed and in eval mode" {
                use _ = torch.NewDisposeScope()
                use a = TokenizeBench.randomEncoder tiny 5UL
                use b = TokenizeBench.randomEncoder tiny 5UL
                Expect.isFalse a.training "eval"
                let chain = (TokenizeBench.benchChain (Data.root.Value) 40).Chain
                let ta = StructureTokenizer.tokenize a chain
                Expect.equal ta.Tokens (StructureTokenizer.tokenize b chain).Tokens "same tokens"
                Expect.isGreaterThan (Array.distinct ta.Tokens).Length 1 "not constant"
            }

            test "benchChain refuses a length below 1" {
                Expect.throwsT<ArgumentOutOfRangeException>
                    (fun () -> TokenizeBench.benchChain (Data.root.Value) 0 |> ignore)
                    "length 0"
            }
        ]
