module Esm3Structure.Tests.Tokenizers.ResidueAnnotationTokenizerTests

open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Tests

let private config = { Props.baseConfig with maxTest = 100 }

let private labelCount = 25

let private vocab =
    ResidueAnnotationTokenizer.create "test" (Array.init labelCount (sprintf "site %02d"))

let private ann label s e : FunctionAnnotation = { Label = label; Start = s; End = e }

/// Random annotations over a sequence of length 1 … 25, with unknown labels now and then; many labels may pile up
/// on one residue (to reach the 16-id limit).
let private annotations =
    gen {
        let! length = Gen.choose (1, 25)

        let label =
            Gen.frequency
                [
                    9, Gen.choose (0, labelCount - 1) |> Gen.map (sprintf "site %02d")
                    1, Gen.constant "unknown site"
                ]

        let one =
            gen {
                let! l = label
                let! a = Gen.choose (1, length)
                let! b = Gen.choose (a, min length (a + 6))
                return ann l a b
            }

        let! n = Gen.choose (0, 60)
        let! anns = Gen.listOfLength n one
        return length, Array.ofList anns
    }

/// The expected label sets, computed straight from the annotations: ids of the covering labels (unknown → 2),
/// distinct, ascending, the 16 smallest, as names.
let private expected (length: int) (anns: FunctionAnnotation[]) =
    let idOf (l: string) =
        match Array.tryFindIndex ((=) l) vocab.Labels with
        | Some i -> 4L + int64 i
        | None -> 2L

    let names = Array.append [| "<pad>"; "<motif>"; "<unk>"; "<none>" |] vocab.Labels

    Array.init length (fun i ->
        anns
        |> Array.filter (fun a -> a.Start <= i + 1 && i + 1 <= a.End)
        |> Array.map (fun a -> idOf a.Label)
        |> Array.distinct
        |> Array.sort
        |> Array.truncate 16
        |> Array.map (fun id -> names.[int id]))

[<Tests>]
let tests =
    testList
        "Tokenizers/ResidueAnnotationTokenizer"
        [
            test "ESM's ids (§8.6, §8.7): <pad> 0 (BOS/EOS/MASK/break), <motif> 1, <unk> 2, <none> 3, labels from 4" {
                Expect.equal
                    [
                        ResidueAnnotationTokenizer.Bos
                        ResidueAnnotationTokenizer.Eos
                        ResidueAnnotationTokenizer.Pad
                        ResidueAnnotationTokenizer.Mask
                        ResidueAnnotationTokenizer.ChainBreak
                    ]
                    [ 0L; 0L; 0L; 0L; 0L ]
                    "specials"

                Expect.equal
                    (ResidueAnnotationTokenizer.Motif,
                     ResidueAnnotationTokenizer.Unk,
                     ResidueAnnotationTokenizer.NoLabels)
                    (1L, 2L, 3L)
                    "motif, unk, none"

                Expect.equal ResidueAnnotationTokenizer.MaxAnnotations 16 "16 per residue"
                Expect.equal ResidueAnnotationTokenizer.Esm3VocabularySize 1478L "ESM3 width"

                Expect.equal
                    (ResidueAnnotationTokenizer.tokenStrings vocab).[0..4]
                    [| "<pad>"; "<motif>"; "<unk>"; "<none>"; "site 00" |]
                    "strings"

                Expect.equal (ResidueAnnotationTokenizer.size vocab) (4L + int64 labelCount) "size"
            }

            test "ofCounts orders as ESM: summed counts descending, ties by label" {
                let v =
                    ResidueAnnotationTokenizer.ofCounts "t" [| "b", 5L; "a", 5L; "c", 9L; "b", 1L; "z", 2L; "y", 2L |]

                Expect.equal v.Labels [| "c"; "b"; "a"; "y"; "z" |] "order"
            }

            test "tokenize: unannotated protein → <pad>; uncovered → <none>; unknown → <unk>; ids ascending" {
                Expect.equal (ResidueAnnotationTokenizer.tokenize vocab [||] 2) [| [| 0L |]; [| 0L |] |] "pad"

                let t =
                    ResidueAnnotationTokenizer.tokenize
                        vocab
                        [| ann "site 03" 1 2; ann "site 01" 2 2; ann "what" 2 3 |]
                        4

                Expect.equal t [| [| 7L |]; [| 2L; 5L; 7L |]; [| 2L |]; [| 3L |] |] "sets"
                let rows = ResidueAnnotationTokenizer.encode true t
                Expect.equal (Array2D.length1 rows, Array2D.length2 rows) (6, 16) "[L + 2, 16]"
                Expect.equal [| for k in 0..3 -> rows.[2, k] |] [| 2L; 5L; 7L; 0L |] "row, padded with 0"

                Expect.isTrue
                    ([| for k in 0..15 -> rows.[0, k] + rows.[5, k] |] |> Array.forall ((=) 0L))
                    "BOS/EOS rows 0"
            }

            test "more than 16 labels on a residue: the 16 smallest ids are kept" {
                let anns = Array.init 20 (fun i -> ann (sprintf "site %02d" (19 - i)) 1 1)
                let rows = ResidueAnnotationTokenizer.encodeAnnotations vocab anns 1
                Expect.equal [| for k in 0..15 -> rows.[1, k] |] (Array.init 16 (fun k -> 4L + int64 k)) "ids 4 … 19"
            }

            testPropertyWithConfig config "annotations → ids → label sets round trip (16-id rule applied)" (fun () ->
                Prop.forAll (Arb.fromGen annotations) (fun (length, anns) ->
                    let rows = ResidueAnnotationTokenizer.encodeAnnotations vocab anns length
                    let back = ResidueAnnotationTokenizer.decodeLabels vocab true rows
                    back = expected length anns))

            testPropertyWithConfig config "id sets → rows → id sets round trip" (fun () ->
                Prop.forAll (Arb.fromGen annotations) (fun (length, anns) ->
                    let sets = ResidueAnnotationTokenizer.tokenize vocab anns length
                    let kept = sets |> Array.map (Array.truncate 16)
                    ResidueAnnotationTokenizer.decode true (ResidueAnnotationTokenizer.encode true sets) = kept))

            test "decode: an id after padding or out of order is a named error" {
                let rows = Array2D.zeroCreate 2 16
                rows.[1, 0] <- 5L
                rows.[1, 2] <- 6L

                match InputError.catch (fun () -> ResidueAnnotationTokenizer.decode false rows |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "row 1, slot 2") "slot"

                rows.[1, 1] <- 4L

                match InputError.catch (fun () -> ResidueAnnotationTokenizer.decode false rows |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "row 1, slot 1") "order"
            }

            test "a bad range is a named error" {
                match
                    InputError.catch (fun () ->
                        ResidueAnnotationTokenizer.tokenize vocab [| ann "site 00" 2 9 |] 4 |> ignore)
                with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "annotation 0") "annotation"
            }

            test "save → load round trip; a repeated label names its line" {
                use dir = new TempDir()
                let path = dir.File "labels.txt"
                ResidueAnnotationTokenizer.save path vocab
                Expect.equal (ResidueAnnotationTokenizer.load path) vocab "round trip"
                File.WriteAllLines(path, [| "a"; "b"; "a" |])

                match InputError.catch (fun () -> ResidueAnnotationTokenizer.load path |> ignore) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Line 3) "line"
            }

            test "T5: padding ids add exactly zero and the sum over a row is order-independent" {
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(5UL)

                use emb =
                    torch.nn.Embedding(ResidueAnnotationTokenizer.size vocab, 12L, padding_idx = 0L)

                let anns = [| ann "site 03" 1 3; ann "site 07" 2 2; ann "site 11" 2 3 |]
                let rows = torch.tensor (ResidueAnnotationTokenizer.encodeAnnotations vocab anns 3)
                let sum = emb.forward(rows).sum(1L) // [L + 2, 12]
                let perm = torch.randperm (16L, generator = g)
                let shuffled = emb.forward(rows.index_select (1L, perm)).sum(1L)
                Tol.close "order-independent" 1e-6 sum shuffled
                Expect.equal (sum.[0L].abs().sum().ToDouble()) 0.0 "BOS row → zero"
                let only = emb.forward(torch.tensor [| 7L |]).sum(0L)
                Tol.close "padding adds nothing" 0.0 sum.[1L] only
            }
        ]
