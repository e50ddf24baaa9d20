module Esm3Structure.Tests.Structure.ResidueConstantsTests

open System
open Expecto
open Esm3Structure.Structure

module RC = ResidueConstants

let private dist (a: RigidGroupAtom) (b: RigidGroupAtom) =
    Math.Sqrt((a.X - b.X) ** 2.0 + (a.Y - b.Y) ** 2.0 + (a.Z - b.Z) ** 2.0)

let private find (r: int) (name: string) =
    RC.rigidGroupAtomPositions.[r] |> Array.find (fun a -> a.Atom = name)

[<Tests>]
let tests =
    testList
        "Structure/ResidueConstants"
        [
            test "20 amino acids in AlphaFold order, then X" {
                Expect.equal (String(RC.restypes)) "ARNDCQEGHILKMFPSTWYV" "restypes"
                Expect.equal RC.restypesWithX.Length 21 "with X"
                Expect.equal RC.restypesWithX.[RC.unkRestypeIndex] 'X' "X last"
                Expect.equal RC.resnames.Length 21 "21 names"
            }

            test "one- and three-letter maps are inverse and cover the 21 rows" {
                for i in 0..20 do
                    let c = RC.restypesWithX.[i]
                    let three = RC.restype1to3.[c]
                    Expect.equal three RC.resnames.[i] (sprintf "row %d" i)
                    Expect.equal RC.restype3to1.[three] c (sprintf "back for %s" three)
                    Expect.equal (RC.restypeIndex c) i "restypeIndex"

                Expect.equal (RC.oneLetterOf "MSE") 'X' "non-standard name is X"
                Expect.equal (RC.restypeIndex 'B') RC.unkRestypeIndex "non-standard letter is X"
                Expect.equal (RC.restypeIndex 'w') 17 "lower case accepted"
            }

            test "37 distinct atom types with N, CA, C first and OXT last" {
                Expect.equal RC.atomTypes.Length 37 "count"
                Expect.equal RC.atomTypeNum 37 "atomTypeNum"
                Expect.equal (Array.distinct RC.atomTypes).Length 37 "distinct"
                Expect.sequenceEqual RC.atomTypes.[0..2] RC.backboneAtoms "bb3 first"
                Expect.equal RC.atomTypes.[RC.cbIndex] "CB" "CB index"
                Expect.equal RC.atomTypes.[RC.oIndex] "O" "O index"
                Expect.equal RC.atomTypes.[RC.oxtIndex] "OXT" "OXT index"

                for i in 0..36 do
                    Expect.equal (RC.atom37Index RC.atomTypes.[i]) i "atomOrder"

                Expect.equal (RC.atom37Index "SE") -1 "unknown name"
            }

            test "atom14 rows: 21 rows of 14, backbone first, every name an atom37 atom of that residue" {
                Expect.equal RC.atom14Names.Length 21 "rows"

                for r in 0..20 do
                    let row = RC.atom14Names.[r]
                    Expect.equal row.Length 14 (sprintf "row %d length" r)
                    Expect.sequenceEqual row.[0..2] [| "N"; "CA"; "C" |] (sprintf "row %d backbone" r)
                    let names = row |> Array.filter (fun n -> n <> "")
                    Expect.equal (Array.distinct names).Length names.Length (sprintf "row %d distinct" r)
                    // The atoms of a residue type are exactly its heavy atoms, as listed in residueAtoms.
                    Expect.equal
                        (Set.ofArray names)
                        (Set.ofArray RC.residueAtoms.[r])
                        (sprintf "row %d = residueAtoms" r)

                    for n in names do
                        Expect.isGreaterThanOrEqual (RC.atom37Index n) 0 (sprintf "%s of row %d in atom37" n r)

                    // Empty slots only after the filled ones.
                    let firstEmpty = row |> Array.tryFindIndex ((=) "") |> Option.defaultValue 14
                    Expect.isTrue (row.[firstEmpty..] |> Array.forall ((=) "")) (sprintf "row %d padding" r)

                Expect.equal
                    RC.atom14Names.[20]
                    [| "N"; "CA"; "C"; ""; ""; ""; ""; ""; ""; ""; ""; ""; ""; "" |]
                    "UNK row as in ESM"

                Expect.equal (RC.atom14Names.[17] |> Array.filter ((<>) "")).Length 14 "TRP fills all 14"
            }

            test "atom14 <-> atom37 index tables invert each other" {
                for r in 0..20 do
                    for k in 0..13 do
                        let name = RC.atom14Names.[r].[k]
                        Expect.equal RC.restypeAtom14Mask.[r, k] (name <> "") "mask"

                        if name <> "" then
                            let a = RC.restypeAtom14ToAtom37.[r, k]
                            Expect.equal RC.atomTypes.[a] name (sprintf "14->37 %d %d" r k)
                            Expect.isTrue RC.restypeAtom37ToAtom14Mask.[r, a] "37 mask"
                            Expect.equal RC.restypeAtom37ToAtom14.[r, a] k (sprintf "37->14 %d %s" r name)

                    let n37 =
                        Seq.init 37 (fun a -> RC.restypeAtom37ToAtom14Mask.[r, a])
                        |> Seq.filter id
                        |> Seq.length

                    let n14 =
                        Seq.init 14 (fun k -> RC.restypeAtom14Mask.[r, k])
                        |> Seq.filter id
                        |> Seq.length

                    Expect.equal n37 n14 (sprintf "row %d counts" r)

                    let std =
                        Seq.init 37 (fun a -> RC.restypeAtom37Mask.[r, a])
                        |> Seq.filter id
                        |> Seq.length

                    Expect.equal std n14 (sprintf "row %d standard atom mask" r)
            }

            test "rigid groups: CA at the origin and C on +x in group 0, O in group 3, atoms belong to the residue" {
                Expect.equal RC.rigidGroupAtomPositions.Length 21 "rows"

                for r in 0..20 do
                    let atoms = RC.rigidGroupAtomPositions.[r]
                    let ca = find r "CA"
                    Expect.equal (ca.Group, ca.X, ca.Y, ca.Z) (0, 0.0, 0.0, 0.0) (sprintf "row %d CA" r)
                    let c = find r "C"
                    Expect.equal c.Group 0 "C in group 0"
                    Expect.isTrue (c.X > 1.5 && abs c.Y < 1e-9 && abs c.Z < 1e-9) (sprintf "row %d C on +x" r)
                    let n = find r "N"
                    Expect.equal n.Group 0 "N in group 0"
                    Expect.isTrue (n.Z = 0.0 && n.Y > 0.0) (sprintf "row %d N in the xy plane, +y" r)
                    Expect.isTrue (dist ca n > 1.44 && dist ca n < 1.48) (sprintf "row %d CA-N %g" r (dist ca n))
                    Expect.isTrue (dist ca c > 1.51 && dist ca c < 1.54) (sprintf "row %d CA-C %g" r (dist ca c))

                    for a in atoms do
                        Expect.isTrue
                            (Array.contains a.Atom RC.residueAtoms.[r])
                            (sprintf "row %d: %s is an atom of the residue" r a.Atom)

                        Expect.isTrue (a.Group = 0 || a.Group >= 3 && a.Group <= 7) (sprintf "%s group" a.Atom)

                    if r < 20 then
                        Expect.equal
                            (Set.ofArray (atoms |> Array.map (fun a -> a.Atom)))
                            (Set.ofArray RC.residueAtoms.[r])
                            (sprintf "row %d lists every heavy atom" r)

                        Expect.equal (find r "O").Group 3 "O in the psi group"

                // The mean CA-N / CA-C distances ESM quotes.
                let mean f = Array.init 20 f |> Array.average

                Expect.floatClose
                    Accuracy.low
                    (mean (fun r -> dist (find r "CA") (find r "N")))
                    RC.caToNNorm
                    "CA_TO_N_NORM"

                Expect.floatClose
                    Accuracy.low
                    (mean (fun r -> dist (find r "CA") (find r "C")))
                    RC.caToCNorm
                    "CA_TO_C_NORM"
            }

            test "chi angles: atoms of the residue, consecutive chis share three atoms, mask matches the count" {
                Expect.equal RC.chiAnglesAtoms.Length 21 "rows"
                Expect.equal (Array2D.length1 RC.chiAnglesMask) 21 "mask rows"
                Expect.equal (Array2D.length1 RC.chiPiPeriodic) 21 "pi rows"

                for r in 0..20 do
                    let chis = RC.chiAnglesAtoms.[r]

                    for i in 0..3 do
                        Expect.equal
                            RC.chiAnglesMask.[r, i]
                            (if i < chis.Length then 1.0f else 0.0f)
                            (sprintf "row %d chi%d mask" r (i + 1))

                        if RC.chiPiPeriodic.[r, i] = 1.0f then
                            Expect.equal RC.chiAnglesMask.[r, i] 1.0f "pi-periodic chis exist"

                    for i, chi in Array.indexed chis do
                        Expect.equal chi.Length 4 "four atoms"

                        for a in chi do
                            Expect.isTrue
                                (Array.contains a RC.residueAtoms.[r])
                                (sprintf "row %d chi%d atom %s belongs to the residue" r (i + 1) a)

                        for k in 0..3 do
                            Expect.equal RC.atomTypes.[RC.chiAnglesAtomIndices.[r, i, k]] chi.[k] "indices"

                        if i > 0 then
                            Expect.sequenceEqual
                                chi.[0..2]
                                chis.[i - 1].[1..3]
                                (sprintf "row %d chi%d follows chi%d" r (i + 1) i)

                        // The chi's last atom is placed by the chi's own rigid group (4 + i).
                        Expect.equal (find r chi.[3]).Group (4 + i) (sprintf "row %d chi%d moving atom group" r (i + 1))

                let periodic =
                    [
                        for r in 0..20 do
                            for i in 0..3 do
                                if RC.chiPiPeriodic.[r, i] = 1.0f then
                                    RC.resnames.[r], i + 1
                    ]

                Expect.equal periodic [ "ASP", 2; "GLU", 3; "PHE", 2; "TYR", 2 ] "pi-periodic chis"
            }

            test "ideal geometry constants are consistent" {
                let degrees (c: float) = Math.Acos c * 180.0 / Math.PI
                Expect.floatClose Accuracy.low (degrees RC.betweenResCosAnglesCNCA.[0]) 121.352 "C-N-CA"
                Expect.floatClose Accuracy.low (degrees RC.betweenResCosAnglesCACN.[0]) 116.568 "CA-C-N"
                Expect.isTrue (RC.caCa > 3.7 && RC.caCa < 3.9) "CA-CA"
                Expect.equal RC.vanDerWaalsRadius.Count 4 "C N O S"

                for KeyValue(res, swaps) in RC.residueAtomRenamingSwaps do
                    let r = RC.restypeIndex RC.restype3to1.[res]

                    for a, b in swaps do
                        Expect.isTrue
                            (Array.contains a RC.residueAtoms.[r] && Array.contains b RC.residueAtoms.[r])
                            (sprintf "%s swap" res)
            }

            test "derived atom14 rigid-group tables agree with rigidGroupAtomPositions" {
                for r in 0..20 do
                    for k in 0..13 do
                        match RC.atom14Names.[r].[k] with
                        | "" -> Expect.equal RC.restypeAtom14ToRigidGroup.[r, k] 0 "empty slot"
                        | name ->
                            let a = find r name
                            Expect.equal RC.restypeAtom14ToRigidGroup.[r, k] a.Group (sprintf "%d %s group" r name)

                            Expect.floatClose
                                Accuracy.medium
                                (float RC.restypeAtom14RigidGroupPositions.[r, k, 0])
                                a.X
                                "x"

                            Expect.floatClose
                                Accuracy.medium
                                (float RC.restypeAtom14RigidGroupPositions.[r, k, 2])
                                a.Z
                                "z"
            }
        ]
