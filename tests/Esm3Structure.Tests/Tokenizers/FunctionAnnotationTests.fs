module Esm3Structure.Tests.Tokenizers.FunctionAnnotationTests

open Expecto
open Esm3Structure
open Esm3Structure.Tokenizers

let private ann label s e : FunctionAnnotation = { Label = label; Start = s; End = e }

[<Tests>]
let tests =
    testList
        "Tokenizers/FunctionAnnotation"
        [
            test "ranges are 1-based and inclusive; labels per residue are distinct, in first-seen order" {
                let sets =
                    FunctionAnnotation.perResidue "t" 5 [| ann "b" 2 3; ann "a" 3 5; ann "b" 3 3; ann "c" 1 1 |]

                Expect.equal sets [| [| "c" |]; [| "b" |]; [| "b"; "a" |]; [| "a" |]; [| "a" |] |] "sets"
            }

            test "a range outside the sequence is a named error" {
                for bad in [ ann "x" 0 2; ann "x" 3 2; ann "x" 4 6 ] do
                    match InputError.catch (fun () -> FunctionAnnotation.perResidue "t" 5 [| ann "ok" 1 5; bad |]) with
                    | Ok _ -> failtestf "expected an error for %A" bad
                    | Error e ->
                        Expect.equal e.Location (InputLocation.Field "annotation 1") "names the annotation"
                        Expect.equal e.File "t" "names the source"
            }
        ]
