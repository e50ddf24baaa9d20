module Esm3Structure.Tests.Structure.ProteinChainTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Structure
open Esm3Structure.Tests

module RC = ResidueConstants

/// A small chain "GWX" with distinct coordinates per (residue, atom, xyz); W lacks CZ3, X has an O; an infinite
/// coordinate on GLY's O marks it missing.
let private sample () =
    let seq = "GWX"
    let atom37 = Array3D.create 3 37 3 Single.NaN

    for i, names in
        [
            0, RC.residueAtoms.[7]
            1, RC.residueAtoms.[17]
            2, [| "N"; "CA"; "C"; "O" |]
        ] do
        for name in names do
            if not (i = 1 && name = "CZ3") then
                let k = RC.atom37Index name

                for c in 0..2 do
                    atom37.[i, k, c] <- float32 (100 * i + 3 * k + c)

    atom37.[0, RC.oIndex, 1] <- Single.PositiveInfinity
    ProteinChain.ofAtom37 "sample" "A" seq [| 5; 6; 7 |] atom37

[<Tests>]
let tests =
    testList
        "Structure/ProteinChain"
        [
            test "ofAtom37 derives masks, names and atom14 slots" {
                let c = sample ()
                Expect.equal (ProteinChain.length c) 3 "length"
                Expect.equal c.ResidueNames [| "GLY"; "TRP"; "UNK" |] "names from the sequence"
                Expect.equal c.InsertionCodes [| ""; ""; "" |] "blank insertion codes"
                Expect.isFalse c.Atom37Mask.[0, RC.oIndex] "an infinite coordinate makes the atom missing"
                Expect.isTrue (Single.IsNaN c.Atom37.[0, RC.oIndex, 0]) "and NaN"
                Expect.isTrue c.Atom37Mask.[2, RC.oIndex] "X keeps O in atom37"

                for i in 0..2 do
                    let r = RC.restypeIndex c.Sequence.[i]

                    for k in 0..13 do
                        let name = RC.atom14Names.[r].[k]
                        let expected = name <> "" && c.Atom37Mask.[i, RC.atom37Index name]
                        Expect.equal c.Atom14Mask.[i, k] expected (sprintf "residue %d slot %d" i k)

                        if expected then
                            Expect.equal c.Atom14.[i, k, 2] c.Atom37.[i, RC.atom37Index name, 2] "same coordinates"
                        else
                            Expect.isTrue (Single.IsNaN c.Atom14.[i, k, 0]) "NaN where missing"

                Expect.equal
                    (Seq.init 14 (fun k -> c.Atom14Mask.[1, k]) |> Seq.filter id |> Seq.length)
                    13
                    "TRP without CZ3"

                Expect.equal
                    (Seq.init 14 (fun k -> c.Atom14Mask.[2, k]) |> Seq.filter id |> Seq.length)
                    3
                    "X: N, CA, C only"
            }

            test "tensor views have the documented shapes, dtypes and values" {
                use _ = torch.NewDisposeScope()
                let c = sample ()
                let a37 = ProteinChain.atom37 torch.float64 c
                Expect.sequenceEqual a37.shape [| 3L; 37L; 3L |] "atom37 shape"
                Expect.equal a37.dtype torch.float64 "dtype"
                Expect.equal (a37.[1L, int64 RC.caIndex, 2L].ToDouble()) (float c.Atom37.[1, RC.caIndex, 2]) "value"
                let m37 = ProteinChain.atom37Mask c
                Expect.equal m37.dtype torch.ScalarType.Bool "mask dtype"

                Expect.equal
                    (m37.sum().ToInt64())
                    (int64 (
                        Seq.sum
                            [
                                for i in 0..2 do
                                    for k in 0..36 do
                                        if c.Atom37Mask.[i, k] then
                                            1
                            ]
                    ))
                    "mask count"

                let a14 = ProteinChain.atom14 torch.float32 c
                Expect.sequenceEqual a14.shape [| 3L; 14L; 3L |] "atom14 shape"
                Expect.equal (ProteinChain.atom14Mask c).shape [| 3L; 14L |] "atom14 mask shape"
                Expect.equal (a14.[1L, 13L, 0L].ToSingle()) c.Atom14.[1, 13, 0] "TRP CH2"
                let bb = ProteinChain.backbone torch.float32 c
                Expect.sequenceEqual bb.shape [| 3L; 3L; 3L |] "backbone shape"
                Tol.close "backbone = atom37[:, :3]" 0.0 (bb.to_type torch.float64) (a37.narrow (1L, 0L, 3L))

                Expect.equal
                    ((ProteinChain.backboneMask c).data<bool>().ToArray())
                    [| true; true; true |]
                    "backbone mask"

                let ca = ProteinChain.ca torch.float32 c
                Expect.sequenceEqual ca.shape [| 3L; 3L |] "ca shape"
                Expect.equal (ca.[2L, 1L].ToSingle()) c.Atom37.[2, 1, 1] "ca value"
                Expect.equal ((ProteinChain.restypes c).data<int64>().ToArray()) [| 7L; 17L; 20L |] "restypes"
                Expect.equal ((ProteinChain.residueIndex c).data<int64>().ToArray()) [| 5L; 6L; 7L |] "residue index"
                // NaN survives in the tensor where atoms are missing.
                Expect.isTrue (a37.[0L, int64 RC.oIndex, 0L].ToDouble() |> Double.IsNaN) "NaN in the tensor"
            }

            test "backboneMask is false when any of N, CA, C is missing" {
                use _ = torch.NewDisposeScope()
                let c = sample ()
                let atom37 = c.Atom37.Clone() :?> float32[,,]
                atom37.[1, RC.cIndex, 0] <- Single.NaN
                let c2 = ProteinChain.ofAtom37 "x" "A" c.Sequence c.ResidueIndex atom37
                Expect.equal ((ProteinChain.backboneMask c2).data<bool>().ToArray()) [| true; false; true |] "C missing"
                Expect.equal ((ProteinChain.caMask c2).data<bool>().ToArray()) [| true; true; true |] "CA present"
            }

            test "ofAtom37Tensor equals ofAtom37 on the same data" {
                use _ = torch.NewDisposeScope()
                let c = sample ()
                let t = ProteinChain.atom37 torch.float64 c
                let c2 = ProteinChain.ofAtom37Tensor "t" "A" c.Sequence c.ResidueIndex t
                Expect.equal c2.Atom37Mask c.Atom37Mask "masks"
                Expect.equal c2.Atom14Mask c.Atom14Mask "atom14 masks"
                Expect.equal c2.Atom37.[1, 5, 2] c.Atom37.[1, 5, 2] "a value"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        ProteinChain.ofAtom37Tensor "t" "A" "G" [| 1 |] (torch.zeros (1L, 14L, 3L))
                        |> ignore)
                    "shape checked"
            }

            test "create rejects inconsistent lengths" {
                Expect.throwsT<ArgumentException>
                    (fun () ->
                        ProteinChain.create
                            "x"
                            "A"
                            [| "GLY" |]
                            "GG"
                            [| 1 |]
                            [| "" |]
                            (Array3D.zeroCreate 1 37 3)
                            (Array2D.zeroCreate 1 37)
                        |> ignore)
                    "sequence length"
            }
        ]
