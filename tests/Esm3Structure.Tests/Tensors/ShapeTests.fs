module Esm3Structure.Tests.Tensors.ShapeTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Tests

/// The ArgumentException `f` raises (fails the test when it raises none).
let private argumentError (f: unit -> unit) =
    try
        f ()
        failtest "expected an ArgumentException"
    with :? ArgumentException as e ->
        e

/// A leading batch shape (rank 0 … 3, dims 1 … 4) and trailing dims (1 … 3 of them, each 1 … 5).
let private shapes =
    gen {
        let! batch =
            Gen.choose (0, 3) |> Gen.bind (fun r -> Gen.listOfLength r (Gen.choose (1, 4)))

        let! trailing =
            Gen.choose (1, 3) |> Gen.bind (fun r -> Gen.listOfLength r (Gen.choose (1, 5)))

        return batch |> List.map int64 |> Array.ofList, trailing |> List.map int64 |> Array.ofList
    }
    |> Arb.fromGen

[<Tests>]
let tests =
    testList
        "Tensors/Shape"
        [
            test "show writes PyTorch-like brackets" {
                Expect.equal (Shape.show [||]) "[]" "scalar"
                Expect.equal (Shape.show [| 7L |]) "[7]" "one dim"
                Expect.equal (Shape.show [| 2L; 7L; 3L |]) "[2, 7, 3]" "three dims"
            }

            test "expectTrailing accepts any batch in front and names the argument and both shapes otherwise" {
                use _ = torch.NewDisposeScope()

                for shape in [ [| 3L |]; [| 5L; 3L |]; [| 2L; 4L; 3L |] ] do
                    Shape.expectTrailing "x" [| 3L |] (torch.zeros shape)

                Shape.expectTrailing "bb" [| 3L; 3L |] (torch.zeros [| 7L; 3L; 3L |])
                Shape.expectTrailing "any" [||] (torch.zeros [| 2L |])

                let e =
                    argumentError (fun () -> Shape.expectTrailing "bb" [| 3L; 3L |] (torch.zeros [| 3L; 4L |]))

                Expect.equal e.ParamName "bb" "parameter"
                Expect.stringStarts e.Message "bb: expected shape [*, 3, 3], got [3, 4]" "message"
                // Fewer dims than the trailing ones: an error, not an index exception.
                let short =
                    argumentError (fun () -> Shape.expectTrailing "p" [| 4L; 3L |] (torch.zeros [| 3L |]))

                Expect.stringStarts short.Message "p: expected shape [*, 4, 3], got [3]" "rank too small"
            }

            test "expect checks rank and sizes; −1 matches any size and shows as _" {
                use _ = torch.NewDisposeScope()
                Shape.expect "t" [| 2L; -1L; 3L |] (torch.zeros [| 2L; 9L; 3L |])
                Shape.expect "s" [||] (torch.tensor 1.0)

                let size =
                    argumentError (fun () -> Shape.expect "t" [| 2L; -1L; 3L |] (torch.zeros [| 2L; 9L; 4L |]))

                Expect.stringStarts size.Message "t: expected shape [2, _, 3], got [2, 9, 4]" "a size differs"

                let rank =
                    argumentError (fun () -> Shape.expect "t" [| 2L; -1L |] (torch.zeros [| 2L; 9L; 3L |]))

                Expect.stringStarts rank.Message "t: expected shape [2, _], got [2, 9, 3]" "the rank differs"
            }

            test "batchDims drops the trailing dims" {
                use _ = torch.NewDisposeScope()
                let t = torch.zeros [| 2L; 5L; 7L; 3L |]
                Expect.equal (Shape.batchDims 1 t) [| 2L; 5L; 7L |] "one trailing"
                Expect.equal (Shape.batchDims 2 t) [| 2L; 5L |] "two trailing"
                Expect.equal (Shape.batchDims 4 t) [||] "all trailing"
                Expect.equal (Shape.batchDims 0 t) [| 2L; 5L; 7L; 3L |] "none"
            }

            test "expectSameKind names both tensors when dtypes differ, and accepts equal kinds" {
                use _ = torch.NewDisposeScope()
                let a = torch.zeros ([| 2L |], dtype = torch.float32)
                let b = torch.zeros ([| 3L |], dtype = torch.float64)
                Shape.expectSameKind "a" a "c" (torch.ones ([| 5L |], dtype = torch.float32))
                let e = argumentError (fun () -> Shape.expectSameKind "a" a "b" b)
                Expect.stringContains e.Message "a is Float32 but b is Float64" "both named with their dtypes"
            }

            testPropertyWithConfig
                { Props.baseConfig with maxTest = 100 }
                "unflattenLast and flattenLast are inverse and keep every element in place"
            <| Prop.forAll shapes (fun (batch, trailing) ->
                use _ = torch.NewDisposeScope()
                let full = Array.append batch trailing
                let count = Array.fold (*) 1L full
                let t = torch.arange(count, dtype = torch.int64).reshape full
                let flat = Shape.flattenLast trailing.Length t
                let width = Array.fold (*) 1L trailing
                Expect.sequenceEqual flat.shape (Array.append batch [| width |]) "flattened shape"
                // Row-major: element (b, j) of the flat view is b·width + j, as in the original.
                Expect.isTrue
                    (flat.reshape(-1L).eq(torch.arange (count, dtype = torch.int64)).all().item<bool>())
                    "order kept"

                let back = Shape.unflattenLast trailing flat
                Expect.sequenceEqual back.shape full "unflattened shape"
                Expect.isTrue (back.eq(t).all().item<bool>()) "round trip")
        ]
