module Esm3Structure.Tests.Tokenizers.FunctionTokenizerFilesTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tokenizers
open Esm3Structure.Tests

let private terms = 37

/// One synthetic tokenizer for the whole file (its tensor lives outside any scope).
let private data = lazy (FunctionTokenizer.synthetic 11 terms 9)

let private ann label s e : FunctionAnnotation = { Label = label; Start = s; End = e }

[<Tests>]
let tests =
    testList
        "Tokenizers/FunctionTokenizerFiles"
        [
            test "save → load keeps terms, IDF, InterPro and hyperplanes; the tokens are unchanged" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let d = data.Value

                let kw, st, ip =
                    dir.File "keywords.txt", dir.File "function.safetensors", dir.File "interpro.tsv"

                FunctionTokenizerFiles.save kw st ip d
                use loaded = FunctionTokenizerFiles.load kw st ip
                Expect.equal loaded.Vocabulary.Terms d.Vocabulary.Terms "terms"
                Expect.equal loaded.Vocabulary.Idf d.Vocabulary.Idf "idf"

                Expect.equal
                    (loaded.Vocabulary.InterProKeywords
                     |> Seq.map (fun kv -> kv.Key, kv.Value)
                     |> Seq.sortBy fst
                     |> List.ofSeq)
                    (d.Vocabulary.InterProKeywords
                     |> Seq.map (fun kv -> kv.Key, kv.Value)
                     |> Seq.sortBy fst
                     |> List.ofSeq)
                    "interpro"

                Tol.close "hyperplanes" 0.0 loaded.Tables.Hyperplanes d.Tables.Hyperplanes
                let anns = [| ann "kw3" 1 4; ann "IPR000002" 3 6; ann "IPR000003" 6 6 |]
                Expect.equal (FunctionTokenizer.encode loaded anns 7) (FunctionTokenizer.encode d anns 7) "same ids"
            }

            test "load errors name the file and the line or tensor" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let d = data.Value
                let kw, st = dir.File "keywords.txt", dir.File "function.safetensors"
                FunctionTokenizerFiles.save kw st null d
                let lines = File.ReadAllLines kw
                File.WriteAllLines(kw, Array.append lines.[.. lines.Length - 2] [| "kw0" |])

                match
                    InputError.catch (fun () -> (FunctionTokenizerFiles.load kw st null :> IDisposable).Dispose())
                with
                | Ok _ -> failtest "expected an error"
                | Error e ->
                    Expect.equal e.File kw "keywords file"
                    Expect.equal e.Location (InputLocation.Line terms) "the repeated term's line"

                FunctionTokenizerFiles.save kw st null d

                Safetensors.write
                    st
                    [
                        "idf", torch.ones (int64 terms, dtype = torch.float64)
                        "hyperplanes", torch.zeros (8L, 7L, int64 terms)
                    ]
                    null

                match InputError.catch (fun () -> (FunctionTokenizerFiles.load kw st "" :> IDisposable).Dispose()) with
                | Ok _ -> failtest "expected an error"
                | Error e ->
                    Expect.equal e.File st "tensors file"
                    Expect.equal e.Location (InputLocation.Field "hyperplanes") "tensor"

                Safetensors.write
                    st
                    [
                        "idf", -torch.ones(int64 terms, dtype = torch.float64)
                        "hyperplanes", torch.zeros (8L, 8L, int64 terms)
                    ]
                    null

                match InputError.catch (fun () -> (FunctionTokenizerFiles.load kw st "" :> IDisposable).Dispose()) with
                | Ok _ -> failtest "expected an error"
                | Error e -> Expect.equal e.Location (InputLocation.Field "idf") "negative IDF"
            }
        ]
