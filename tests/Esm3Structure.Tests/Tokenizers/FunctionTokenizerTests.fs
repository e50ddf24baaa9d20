module Esm3Structure.Tests.Tokenizers.FunctionTokenizerTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tokenizers
open Esm3Structure.Tests

let private config = { Props.baseConfig with maxTest = 100 }

let private terms = 37

/// One synthetic tokenizer for the whole file (its tensor lives outside any scope).
let private data = lazy (FunctionTokenizer.synthetic 11 terms 9)

let private ann label s e : FunctionAnnotation = { Label = label; Start = s; End = e }

/// Random term lists (with repeats and an out-of-vocabulary word).
let private termLists =
    Gen.oneof
        [
            Gen.choose (0, terms - 1) |> Gen.map (sprintf "kw%d")
            Gen.constant "unknown word"
        ]
    |> Gen.arrayOf

/// A random seed for a Gaussian vector of width `terms`.
let private seeds = Gen.choose (0, Int32.MaxValue) |> Gen.map uint64

let private gaussian (seed: uint64) =
    use g = new torch.Generator(seed)
    torch.randn ([| 3L; int64 terms |], dtype = torch.float64, generator = g)

let private values (t: torch.Tensor) = t.flatten().data<int64>().ToArray()

/// Random annotations over a sequence of length 1 … 30: keywords and InterPro ids.
let private annotations =
    gen {
        let! length = Gen.choose (1, 30)

        let label =
            Gen.oneof
                [
                    Gen.choose (0, terms - 1) |> Gen.map (sprintf "kw%d")
                    Gen.choose (1, 9) |> Gen.map (sprintf "IPR%06d")
                ]

        let one =
            gen {
                let! l = label
                let! a = Gen.choose (1, length)
                let! b = Gen.choose (a, length)
                return ann l a b
            }

        let! anns = Gen.listOf one
        return length, Array.ofList anns
    }

[<Tests>]
let tests =
    testList
        "Tokenizers/FunctionTokenizer"
        [
            test "ESM's ids (§8.5, §8.7): <pad> 0 (BOS/EOS/MASK/break), <motif> 1, <unk> 2, <none> 3, <lsh:u> 4 + u" {
                Expect.equal
                    [
                        FunctionTokenizer.Bos
                        FunctionTokenizer.Eos
                        FunctionTokenizer.Pad
                        FunctionTokenizer.Mask
                        FunctionTokenizer.ChainBreak
                    ]
                    [ 0L; 0L; 0L; 0L; 0L ]
                    "specials"

                Expect.equal
                    (FunctionTokenizer.Motif, FunctionTokenizer.Unk, FunctionTokenizer.NoLabels)
                    (1L, 2L, 3L)
                    "motif, unk, none"

                Expect.equal FunctionTokenizer.VocabularySize 260L "260"
                Expect.equal FunctionTokenizer.vocabulary.Length 260 "260 strings"

                Expect.equal
                    FunctionTokenizer.vocabulary.[0..4]
                    [| "<pad>"; "<motif>"; "<unk>"; "<none>"; "<lsh:0>" |]
                    "first"

                Expect.equal FunctionTokenizer.vocabulary.[259] "<lsh:255>" "last"
                Expect.equal (FunctionTokenizer.Depth, FunctionTokenizer.BitsPerToken) (8, 8) "8 × 8"
            }

            test "TF-IDF by hand: (1 + ln tf)·idf, L2-normalised; out-of-vocabulary terms ignored; empty → 0" {
                use _ = torch.NewDisposeScope()

                let v =
                    FunctionTokenizer.createVocabulary "t" [| "a"; "b"; "c" |] [| 2.0; 3.0; 5.0 |] null

                let x = FunctionTokenizer.tfidf v [ "a"; "zz"; "b"; "a" ]
                let a, b = (1.0 + log 2.0) * 2.0, 3.0
                let n = sqrt (a * a + b * b)
                Tol.close "tfidf" 1e-15 x (torch.tensor [| a / n; b / n; 0.0 |])
                let z = FunctionTokenizer.tfidf v [ "zz" ]
                Expect.equal (z.abs().sum().ToDouble()) 0.0 "zero vector"
            }

            testPropertyWithConfig config "T4: TF-IDF vectors have unit L2 norm (f64, 1e-12)" (fun () ->
                Prop.forAll (Arb.fromGen termLists) (fun ts ->
                    use _ = torch.NewDisposeScope()
                    let v = FunctionTokenizer.tfidf data.Value.Vocabulary ts
                    let anyKnown = ts |> Array.exists (fun t -> t <> "unknown word")
                    let norm = v.norm().ToDouble()

                    v.dtype = torch.float64
                    && (if anyKnown then abs (norm - 1.0) <= 1e-12 else norm = 0.0)))

            test "max pooling: a keyword and an InterPro entry give the element-wise max of their vectors" {
                use _ = torch.NewDisposeScope()
                let vocab = data.Value.Vocabulary
                let ipr = "IPR000001"
                let pooled = FunctionTokenizer.labelVector vocab [ "kw5"; ipr ]
                let a = FunctionTokenizer.tfidf vocab [ "kw5" ]
                let b = FunctionTokenizer.tfidf vocab vocab.InterProKeywords.[ipr]
                Tol.close "max" 0.0 pooled (torch.maximum (a, b))
                // an InterPro id inside a longer label is recognised, as ESM's re.search does
                Tol.close "search" 0.0 (FunctionTokenizer.labelVector vocab [ "InterPro:" + ipr ]) b
            }

            test "LSH bit order: hyperplane b of a table is bit b (least significant first)" {
                use _ = torch.NewDisposeScope()
                // every table's hyperplane b is the unit vector e_b (V = 8)
                let h =
                    torch.eye(8L, dtype = torch.float64).unsqueeze(0L).expand(8L, 8L, 8L).contiguous()

                let tables = { Hyperplanes = h }
                let v = torch.tensor [| 1.0; -1.0; 2.0; -3.0; -1.0; -1.0; -0.5; 4.0 |]
                let u = FunctionTokenizer.lshValues tables v
                Expect.equal u.shape [| 8L |] "one value per table"
                Expect.equal (values u) (Array.create 8 (1L + 4L + 128L)) "bits 0, 2, 7"

                Expect.equal
                    (FunctionTokenizer.bitsOfValue 133)
                    [| true; false; true; false; false; false; false; true |]
                    "bits"
                // a zero product counts as 1 (≥ 0)
                let w = torch.zeros ([| 8L |], dtype = torch.float64)
                Expect.equal (values (FunctionTokenizer.lshValues tables w)) (Array.create 8 255L) "zero → all ones"
            }

            testPropertyWithConfig
                config
                "T3: token(αv) = token(v) for α > 0 (powers of two, and generic α off the hyperplanes)"
            <| fun () ->
                let case =
                    Gen.zip3 seeds (Gen.choose (-20, 20)) (Gen.choose (1, 100000)) |> Arb.fromGen

                Prop.forAll case (fun (seed, k, a) ->
                    use _ = torch.NewDisposeScope()
                    let tables = data.Value.Tables
                    let v = gaussian seed
                    let u = values (FunctionTokenizer.lshValues tables v)
                    let pow2 = values (FunctionTokenizer.lshValues tables (v * (2.0 ** float k)))
                    let alpha = float a / 997.0
                    // generic α: only meaningful when no product is within rounding of 0
                    let dots =
                        v.matmul(tables.Hyperplanes.reshape(64L, int64 terms).t()).abs().min().ToDouble()

                    let generic = values (FunctionTokenizer.lshValues tables (v * alpha))
                    pow2 = u && (dots < 1e-9 || generic = u))

            testPropertyWithConfig
                config
                "T3: token(−v) = 255 − token(v) per table when no product is exactly 0"
                (fun () ->
                    Prop.forAll (Arb.fromGen seeds) (fun seed ->
                        use _ = torch.NewDisposeScope()
                        let tables = data.Value.Tables
                        let v = gaussian seed

                        let dotsZero =
                            v
                                .matmul(tables.Hyperplanes.reshape(64L, int64 terms).t())
                                .eq(torch.tensor 0.0)
                                .any()
                                .ToBoolean()

                        let u = values (FunctionTokenizer.lshValues tables v)
                        let m = values (FunctionTokenizer.lshValues tables (-v))
                        dotsZero || Array.forall2 (fun a b -> b = 255L - a) u m))

            test "tokenize: no annotations → <pad>; uncovered → <none>; all-zero vector → <unk>; BOS/EOS rows 0" {
                use _ = torch.NewDisposeScope()

                let interPro = Dictionary<string, string[]>()
                interPro.["IPR000007"] <- [| "a" |]
                interPro.["IPR000009"] <- [| "not a term" |]

                let vocab =
                    FunctionTokenizer.createVocabulary "t" [| "a"; "b" |] [| 1.5; 2.5 |] interPro

                use d =
                    {
                        Vocabulary = vocab
                        Tables =
                            {
                                Hyperplanes =
                                    (torch.randn ([| 8L; 8L; 2L |], dtype = torch.float64)).DetachFromDisposeScope()
                            }
                    }

                let none = FunctionTokenizer.encode d [||] 3
                Expect.equal (Array2D.length1 none, Array2D.length2 none) (5, 8) "[L + 2, 8]"
                Expect.isTrue (none |> Seq.cast<int64> |> Seq.forall ((=) 0L)) "all <pad>"

                let tokens =
                    FunctionTokenizer.tokenize d [| ann "IPR000009" 1 1; ann "b" 3 4; ann "IPR000007" 4 4 |] 5

                Expect.equal tokens.[0] FunctionToken.Unk "all-zero vector"
                Expect.equal tokens.[1] FunctionToken.NoLabels "uncovered"
                Expect.equal tokens.[4] FunctionToken.NoLabels "uncovered"

                let expected (labels: string list) =
                    let v = FunctionTokenizer.labelVector vocab labels
                    values (FunctionTokenizer.lshValues d.Tables v) |> Array.map int

                Expect.equal tokens.[2] (FunctionToken.Hash(expected [ "b" ])) "hash of b"
                Expect.equal tokens.[3] (FunctionToken.Hash(expected [ "b"; "IPR000007" ])) "hash of the pooled vector"

                let ids = FunctionTokenizer.encodeTokens true tokens
                Expect.equal (Array2D.length1 ids) 7 "L + 2 rows"
                Expect.equal [| for k in 0..7 -> ids.[0, k] |] (Array.zeroCreate 8) "BOS row"
                Expect.equal [| for k in 0..7 -> ids.[6, k] |] (Array.zeroCreate 8) "EOS row"
                Expect.equal [| for k in 0..7 -> ids.[1, k] |] (Array.create 8 2L) "<unk> row"
                Expect.equal [| for k in 0..7 -> ids.[2, k] |] (Array.create 8 3L) "<none> row"

                Expect.isTrue
                    ([| for k in 0..7 -> ids.[3, k] |]
                     |> Array.forall (fun id -> id >= 4L && id < 260L))
                    "LSH ids"

                Expect.equal (FunctionTokenizer.tokenText tokens.[1]) "<none>" "text"
            }

            testPropertyWithConfig
                { config with maxTest = 40 }
                "annotations → ids → tokens round trip; each hash is the labels' LSH"
            <| fun () ->
                Prop.forAll (Arb.fromGen annotations) (fun (length, anns) ->
                    use _ = torch.NewDisposeScope()
                    let d = data.Value
                    let tokens = FunctionTokenizer.tokenize d anns length
                    let ids = FunctionTokenizer.encode d anns length
                    let back = FunctionTokenizer.decodeTokens true ids
                    let sets = FunctionAnnotation.perResidue "t" length anns

                    let hashesMatch =
                        Array.forall2
                            (fun (labels: string[]) token ->
                                match token with
                                | FunctionToken.Hash u ->
                                    let v = FunctionTokenizer.labelVector d.Vocabulary labels
                                    values (FunctionTokenizer.lshValues d.Tables v) = Array.map int64 u
                                | FunctionToken.NoLabels -> labels.Length = 0
                                | FunctionToken.Pad -> anns.Length = 0
                                | FunctionToken.Unk -> labels.Length > 0
                                | FunctionToken.Motif -> false)
                            sets
                            tokens

                    back = tokens && Array2D.length1 ids = length + 2 && hashesMatch)

            testPropertyWithConfig config "ids → tokens → ids round trip over every id" (fun () ->
                let row =
                    Gen.oneof
                        [
                            Gen.choose (0, 3) |> Gen.map (fun s -> Array.create 8 (int64 s))
                            Gen.arrayOfLength 8 (Gen.choose (4, 259) |> Gen.map int64)
                        ]

                Prop.forAll (Arb.fromGen (Gen.listOf row)) (fun rows ->
                    let ids = Array2D.init rows.Length 8 (fun r k -> rows.[r].[k])
                    FunctionTokenizer.encodeTokens false (FunctionTokenizer.decodeTokens false ids) = ids))

            test "decodeTokens: mixed rows and bad BOS are named errors" {
                let mixed =
                    array2D [ [ 0L; 0L; 0L; 0L; 0L; 0L; 0L; 0L ]; [ 3L; 3L; 3L; 3L; 3L; 3L; 3L; 9L ] ]

                match InputError.catch (fun () -> FunctionTokenizer.decodeTokens false mixed |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "row 1") "row"

                let badBos =
                    array2D [ [ 5L; 5L; 5L; 5L; 5L; 5L; 5L; 5L ]; [ 0L; 0L; 0L; 0L; 0L; 0L; 0L; 0L ] ]

                match InputError.catch (fun () -> FunctionTokenizer.decodeTokens true badBos |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "row 0") "BOS row"
            }

            test "an unsupported label is a named error" {
                match
                    InputError.catch (fun () ->
                        FunctionTokenizer.tokenize data.Value [| ann "no such label" 1 2 |] 3 |> ignore)
                with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "label 'no such label'") "label"
            }

            test "T5: padding id 0 embeds to exactly zero (function_embed has padding_idx 0)" {
                use _ = torch.NewDisposeScope()
                use emb = torch.nn.Embedding(260L, 6L, padding_idx = 0L)
                let ids = FunctionTokenizer.encode data.Value [||] 4
                let t = torch.tensor (ids: int64[,])
                let e = emb.forward t
                Expect.equal (e.abs().sum().ToDouble()) 0.0 "unannotated protein → zero"
            }
        ]
