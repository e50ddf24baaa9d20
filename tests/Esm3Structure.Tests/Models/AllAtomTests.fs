module Esm3Structure.Tests.Models.AllAtomTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Models
open Esm3Structure.Tests

module RC = ResidueConstants

let private cpu = torch.CPU

/// ESM's ideal local backbone (`BB_COORDINATES`, esm/utils/constants/physics.py; ESM3-REFERENCE.md §2.5).
let private esmN, esmC = [| 0.5256; 1.3612; 0.0 |], [| -1.5251; 0.0; 0.0 |]

let private slot (r: int) (name: string) = Array.IndexOf(RC.atom14Names.[r], name)

/// Bonds of each residue type, derived here from the reference table alone (AlphaFold's convention, which keeps
/// distances): atom pairs of one rigid group closer than 1.9 Å, and each group's origin atom (psi: C; chi k: the
/// third atom of chi k) with the group's atoms closer than 1.9 Å to it. Torsions cannot change these lengths.
/// Returns (slot a, slot b, reference length) per residue type.
let private bonds: (int * int * float)[][] =
    Array.init 21 (fun r ->
        let atoms = RC.rigidGroupAtomPositions.[r]
        let norm (x: float, y: float, z: float) = Math.Sqrt(x * x + y * y + z * z)

        let within =
            [|
                for i in 0 .. atoms.Length - 1 do
                    for j in i + 1 .. atoms.Length - 1 do
                        let a, b = atoms.[i], atoms.[j]
                        let d = norm (a.X - b.X, a.Y - b.Y, a.Z - b.Z)

                        if a.Group = b.Group && d < 1.9 then
                            slot r a.Atom, slot r b.Atom, d
            |]

        let origin g =
            if g = 3 then "C" else RC.chiAnglesAtoms.[r].[g - 4].[2]

        let across =
            [|
                for a in atoms do
                    if a.Group >= 3 then
                        let d = norm (a.X, a.Y, a.Z)

                        if d < 1.9 then
                            slot r (origin a.Group), slot r a.Atom, d
            |]

        Array.append within across)

/// Random decoder inputs: every residue type once per row (rotated order), random frames and unnormalised
/// (sin, cos) pairs. Shapes: backbone [*, 21], restypes [*, 21], sinCos [*, 21, 7, 2]
let private inputs (g: torch.Generator) (batch: int64[]) (dtype: torch.ScalarType) =
    let lead = Array.append batch [| 21L |]

    let offset =
        torch.randint (21L, Array.append batch [| 1L |], dtype = torch.int64, generator = g)

    let restypes =
        (torch.arange(21L, dtype = torch.int64).expand(lead) + offset).remainder((21L).ToScalar())

    let backbone = Frame.random lead 10.0 dtype cpu g

    // Unnormalised pairs: random directions with norms between 0.3 and 3.3, so the decoder must normalise them.
    let raw = torch.randn (Array.append lead [| 7L; 2L |], dtype = dtype, generator = g)

    let norms =
        0.3
        + 3.0 * torch.rand (Array.append lead [| 7L; 1L |], dtype = dtype, generator = g)

    backbone, restypes, raw / raw.norm (-1, true) * norms

/// Atom coordinates copied out as doubles, read as `at residue slot` -> [| x; y; z |]. Shapes: [*, 14, 3]
let private coordinates (positions: torch.Tensor) =
    let data =
        positions.reshape(-1L).to_type(torch.float64).cpu().data<float>().ToArray()

    fun (i: int) (k: int) -> Array.sub data ((i * 14 + k) * 3) 3

/// Pairs copied out as doubles, read as `pair residue torsion` -> (sin, cos). Shapes: [*, 7, 2]
let private pairs (sinCos: torch.Tensor) =
    let data = sinCos.reshape(-1L).to_type(torch.float64).cpu().data<float>().ToArray()
    fun (i: int) (t: int) -> data.[(i * 7 + t) * 2], data.[(i * 7 + t) * 2 + 1]

let private distance (a: float[]) (b: float[]) =
    Math.Sqrt(Array.fold2 (fun s x y -> s + (x - y) * (x - y)) 0.0 a b)

/// The IUPAC dihedral a-b-c-d, written here independently in doubles: atan2(|b₂| b₁·(b₂×b₃), (b₁×b₂)·(b₂×b₃)),
/// returned as (sin, cos).
let private dihedral (p0: float[]) (p1: float[]) (p2: float[]) (p3: float[]) =
    let sub (a: float[]) (b: float[]) = Array.map2 (-) a b

    let dot (a: float[]) (b: float[]) =
        Array.fold2 (fun s x y -> s + x * y) 0.0 a b

    let cross (a: float[]) (b: float[]) =
        [|
            a.[1] * b.[2] - a.[2] * b.[1]
            a.[2] * b.[0] - a.[0] * b.[2]
            a.[0] * b.[1] - a.[1] * b.[0]
        |]

    let b1, b2, b3 = sub p1 p0, sub p2 p1, sub p3 p2
    let n1, n2 = cross b1 b2, cross b2 b3
    let angle = Math.Atan2(Math.Sqrt(dot b2 b2) * dot b1 n2, dot n1 n2)
    Math.Sin angle, Math.Cos angle

let private pairError (s1: float, c1: float) (s2: float, c2: float) = max (abs (s1 - s2)) (abs (c1 - c2))

let private unitPairs (sc: torch.Tensor) = sc / sc.norm (-1, true)

let private properties (dtype: torch.ScalarType) (name: string) =
    let f64 = dtype = torch.float64
    let exact = if f64 then 1e-10 else 1e-4

    testList
        name
        [
            Props.property "every bond of every residue type keeps its reference length for random torsions"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let at = coordinates atoms.Positions
                let types = restypes.reshape(-1L).data<int64>().ToArray()
                let mutable worst = 0.0

                for i in 0 .. types.Length - 1 do
                    for a, b, length in bonds.[int types.[i]] do
                        worst <- max worst (abs (distance (at i a) (at i b) - length))

                if not (worst <= 0.01) then
                    failtestf "bond length off by %g Å (limit 0.01)" worst

            Props.property "frames and atoms are equivariant under a rigid motion of the backbone"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let backbone, restypes, sinCos = inputs g c.Batch dtype
                let motion = Frame.random c.Batch 10.0 dtype cpu g |> Frame.unsqueeze -1L // [*, 1]
                let moved = Frame.compose motion backbone
                let frames = AllAtom.torsionsToFrames backbone restypes sinCos
                let framesMoved = AllAtom.torsionsToFrames moved restypes sinCos
                let expected = Frame.compose (Frame.unsqueeze -1L motion) frames
                let scale = 1.0 + framesMoved.T.abs().max().ToDouble()
                Tol.close "frame R" exact framesMoved.R expected.R
                Tol.close "frame T" (exact * scale) framesMoved.T expected.T
                let atoms = AllAtom.atom14Positions frames restypes
                let atomsMoved = AllAtom.atom14Positions framesMoved restypes
                let mask = atoms.Mask.unsqueeze (-1L)
                let movedBack = Frame.apply (Frame.unsqueeze -1L motion) atoms.Positions

                Tol.close
                    "atoms"
                    (exact * scale)
                    atomsMoved.Positions
                    (torch.where (mask, movedBack, torch.zeros_like movedBack))

            Props.property "N, CA, C are placed where the backbone frame says"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let atom k = atoms.Positions.select (-2L, k)
                // ESM's construction (C on -x, origin CA, N in the xy-plane) from the built atoms gives the input.
                let rebuilt = Frame.ofGramSchmidt 0.0 (atom 2L) (atom 1L) (atom 0L)
                let scale = 1.0 + backbone.T.abs().max().ToDouble()
                Tol.close "R from built N, CA, C" exact rebuilt.R backbone.R
                Tol.close "CA = frame origin" (exact * scale) (atom 1L) backbone.T
                // and the distances are the residue type's reference ones.
                let local =
                    Frame.invertApply (Frame.unsqueeze -1L backbone) (atoms.Positions.narrow (-2L, 0L, 3L))

                Expect.isTrue ((local.select(-2L, 2L).select(-1L, 0L)).lt(0.0.ToScalar()).all().ToBoolean()) "C on -x"

            Props.property "psi and every chi measured back from the built atoms equal the input torsions"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let want = unitPairs sinCos
                let types = restypes.reshape(-1L).data<int64>().ToArray()
                let position = coordinates atoms.Positions
                let wanted = pairs want
                let at (i: int) (r: int) (name: string) = position i (slot r name)
                let mutable worst = 0.0
                let mutable checkedChis = 0

                for i in 0 .. types.Length - 1 do
                    let r = int types.[i]

                    if r <> RC.unkRestypeIndex then
                        // psi rotates O, which sits opposite the psi-defining N(i+1): dihedral(N, CA, C, O) = psi + π.
                        let s, c = dihedral (at i r "N") (at i r "CA") (at i r "C") (at i r "O")
                        worst <- max worst (pairError (-s, -c) (wanted i 2))

                    for k, names in Array.indexed RC.chiAnglesAtoms.[r] do
                        let measured =
                            dihedral (at i r names.[0]) (at i r names.[1]) (at i r names.[2]) (at i r names.[3])

                        worst <- max worst (pairError measured (wanted i (3 + k)))
                        checkedChis <- checkedChis + 1

                Expect.isGreaterThan checkedChis 0 "some chis checked"

                if not (worst <= exact * 10.0) then
                    failtestf "measured torsion (sin, cos) off by %g" worst

                // The library's own measurement agrees and marks exactly the torsions that exist.
                let measured = AllAtom.torsionsOfAtom14 restypes atoms
                let exists = AllAtom.rigidGroupMask restypes
                let chiMask = measured.Mask.narrow (-1L, 3L, 4L)
                Expect.isTrue (chiMask.eq(exists.narrow (-1L, 4L, 4L)).all().ToBoolean()) "chi mask = chi groups"
                // psi needs O, which ESM's UNK row lacks.
                let psiMask = measured.Mask.select (-1L, 2L)
                Expect.isTrue (psiMask.eq(restypes.ne ((20L).ToScalar())).all().ToBoolean()) "psi mask"
                let m = measured.Mask.narrow(-1L, 2L, 5L).unsqueeze(-1L)
                let sel (x: torch.Tensor) = x.narrow(-2L, 2L, 5L).masked_select(m)
                Tol.close "torsionsOfAtom14" (exact * 10.0) (sel measured.SinCos) (sel want)
        ]

/// Side-chain rebuild of a real chain from its own backbone frames and torsions.
let private rebuild (chain: ProteinChain) =
    let dt = torch.float64
    let torsions = AllAtom.torsionsOfChain dt chain
    let frames = Frame.ofBackbone (ProteinChain.backbone dt chain)
    let restypes = ProteinChain.restypes chain
    let built = AllAtom.decodeAllAtom frames.Frames restypes torsions.SinCos
    // Residues whose needed torsions (psi and the chis their type has) could all be measured.
    let needed = AllAtom.rigidGroupMask(restypes).narrow(-1L, 1L, 7L)
    let complete = torsions.Mask.logical_or(needed.logical_not ()).all(-1L)
    let real = ProteinChain.atom14 dt chain
    let present = (ProteinChain.atom14Mask chain).logical_and(complete.unsqueeze (-1L))
    let dist = (built.Positions - torch.nan_to_num real).norm(-1, false)
    let err = torch.where (present, dist, torch.zeros_like dist)
    // The phi group's frame, turned by the measured phi, has C(i-1) in its xy-plane (y > 0): its angle there.
    let phiFrames =
        AllAtom.torsionsToFrames frames.Frames restypes torsions.SinCos
        |> Frame.select -1L 2L

    let n = int64 chain.Sequence.Length

    let local =
        Frame.invertApply
            (Frame.index [| torch.TensorIndex.Slice(1L) |] phiFrames)
            (real.select(-2L, 2L).narrow(0L, 0L, n - 1L))

    let phiOk = torsions.Mask.select(-1L, 1L).narrow(0L, 1L, n - 1L)

    let cPrevAngle =
        torch.atan2(local.select (-1L, 2L), local.select (-1L, 1L)).abs().masked_select(phiOk)

    torsions, present, err, cPrevAngle

[<Tests>]
let tests =
    testList
        "Models/AllAtom"
        [
            test "default frames are AlphaFold's re-expressed in ESM's backbone convention" {
                use _ = torch.NewDisposeScope()
                let esmPos = AllAtom.restypeAtom14GroupPositions

                for r in 0..20 do
                    let af2 name =
                        let a = RC.rigidGroupAtomPositions.[r] |> Array.find (fun a -> a.Atom = name)
                        torch.tensor ([| a.X; a.Y; a.Z |], dtype = torch.float64)

                    // ESM's frame of the reference N, CA, C (written in AlphaFold's frame) maps them to the table.
                    let esm = Frame.ofGramSchmidt 0.0 (af2 "C") (af2 "CA") (af2 "N")

                    for k, name in [ 0, "N"; 1, "CA"; 2, "C" ] do
                        let want = Frame.invertApply esm (af2 name)

                        let got =
                            torch.tensor ([| for c in 0..2 -> esmPos.[r, k, c] |], dtype = torch.float64)

                        Tol.close (sprintf "%s %s" RC.resnames.[r] name) 1e-12 got want

                    Expect.isLessThan esmPos.[r, 2, 0] 0.0 "C on the negative x-axis"
                    Expect.equal (esmPos.[r, 2, 1], esmPos.[r, 2, 2]) (0.0, 0.0) "C on the x-axis"
                    Expect.isGreaterThan esmPos.[r, 0, 1] 0.0 "N has y > 0"
                    Expect.equal esmPos.[r, 0, 2] 0.0 "N in the xy-plane"

                    for c in 0..2 do
                        // Per-residue spread of the table (GLY's N is the farthest, 0.05 Å).
                        Expect.isLessThan (abs (esmPos.[r, 0, c] - esmN.[c])) 0.06 "N near ESM's ideal N"
                        Expect.isLessThan (abs (esmPos.[r, 2, c] - esmC.[c])) 0.01 "C near ESM's ideal C"

                // ESM's ideal backbone is the mean of the 20 types' table positions (observed within 1e-4 Å).
                for c in 0..2 do
                    let mean k =
                        [ for r in 0..19 -> esmPos.[r, k, c] ] |> List.average

                    Expect.isLessThan (abs (mean 0 - esmN.[c])) 0.01 "mean N = BB_COORDINATES N"
                    Expect.isLessThan (abs (mean 2 - esmC.[c])) 0.01 "mean C = BB_COORDINATES C"

                // Every default frame is a proper rotation; psi's origin is C, chi1's is CB.
                let d = AllAtom.defaultFrames torch.float64 cpu
                Expect.isLessThan (Rotation.properError d.R) 1e-12 "proper rotations"

                for r in 0..20 do
                    let origin g = d.T.select(0L, int64 r).select(0L, g)

                    let table k =
                        torch.tensor ([| for c in 0..2 -> esmPos.[r, k, c] |], dtype = torch.float64)

                    Tol.close "psi origin = C" 1e-12 (origin 3L) (table 2)

                    if RC.chiAnglesMask.[r, 0] > 0.0f then
                        Tol.close "chi1 origin = CB" 1e-12 (origin 4L) (table 4)
            }

            test "the test's bond lists connect every atom of every residue type" {
                for r in 0..20 do
                    let atoms = RC.rigidGroupAtomPositions.[r] |> Array.map (fun a -> slot r a.Atom)
                    let parent = Array.init 14 id

                    let rec find i =
                        if parent.[i] = i then i else find parent.[i]

                    for a, b, _ in bonds.[r] do
                        parent.[find a] <- find b

                    let roots = atoms |> Array.map find |> Array.distinct
                    Expect.equal roots.Length 1 (sprintf "%s: one connected component" RC.resnames.[r])
            }

            properties torch.float64 "float64"
            properties torch.float32 "float32"

            Props.property "float32 decoding matches float64 within 1e-4 Å"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch torch.float64
                let f64 = AllAtom.decodeAllAtom backbone restypes sinCos

                let f32 =
                    AllAtom.decodeAllAtom (Frame.toType torch.float32 backbone) restypes (sinCos.to_type torch.float32)

                Expect.equal f32.Positions.dtype torch.float32 "dtype follows the input"
                Tol.close "atom14" 1e-4 (f32.Positions.to_type torch.float64) f64.Positions

            test "a real chain rebuilt from its own frames and torsions reproduces its side chains" {
                use _ = torch.NewDisposeScope()
                let mutable sq, count, oSq, oCount, cbSq, cbCount = 0.0, 0L, 0.0, 0L, 0.0, 0L
                let mutable worstChain = 0.0
                let mutable angleSum, angleCount = 0.0, 0L

                for name in Data.smallNames.Value do
                    let chain = Pdb.read (Data.small name) None
                    let torsions, present, err, cPrevAngle = rebuild chain
                    angleSum <- angleSum + cPrevAngle.sum().ToDouble()
                    angleCount <- angleCount + cPrevAngle.numel ()
                    let side = present.clone ()
                    side.narrow(-1L, 0L, 4L).fill_(false) |> ignore // N, CA, C (exact by construction) and O
                    let sideSq = (err.square () * side.to_type torch.float64).sum().ToDouble()
                    let n = side.sum().ToInt64()
                    worstChain <- max worstChain (Math.Sqrt(sideSq / float n))
                    sq <- sq + sideSq
                    count <- count + n
                    let o = present.select (-1L, 3L)
                    oSq <- oSq + (err.select(-1L, 3L).square() * o.to_type torch.float64).sum().ToDouble()
                    oCount <- oCount + o.sum().ToInt64()
                    let cb = present.select (-1L, 4L)

                    cbSq <-
                        cbSq
                        + (err.select(-1L, 4L).square() * cb.to_type torch.float64).sum().ToDouble()

                    cbCount <- cbCount + cb.sum().ToInt64()
                    // CA is exact: it is the backbone frame's origin.
                    let bbErr = err.narrow(-1L, 1L, 1L).max().ToDouble()
                    Expect.isLessThan bbErr 1e-9 (name + ": CA exact")

                    // The measured chis are the IUPAC dihedrals of the real atoms.
                    let types = ProteinChain.restypeIndices chain
                    let at = coordinates (ProteinChain.atom14 torch.float64 chain)
                    let measured = pairs torsions.SinCos
                    let valid = torsions.Mask.reshape(-1L).data<bool>().ToArray()
                    let mutable worstChi = 0.0

                    for i in 0 .. types.Length - 1 do
                        for k, names in Array.indexed RC.chiAnglesAtoms.[types.[i]] do
                            if valid.[i * 7 + 3 + k] then
                                let atom n = at i (slot types.[i] n)

                                let want =
                                    dihedral (atom names.[0]) (atom names.[1]) (atom names.[2]) (atom names.[3])

                                worstChi <- max worstChi (pairError (measured i (3 + k)) want)

                    Expect.isLessThan worstChi 1e-9 (name + ": chis = IUPAC dihedrals of the real atoms")

                Expect.isGreaterThan count 2000L "side-chain atoms compared"
                let rmsd = Math.Sqrt(sq / float count)
                // Observed over the 9 chains: side chains 0.315 Å (worst chain 0.417), O 0.044 Å, CB 0.102 Å. Real
                // bond angles differ from the ideal ones and the error grows along each side chain (ARG/LYS tips reach
                // 2.5 Å); N itself is up to 0.26 Å from the ideal N that the frames imply.
                Expect.isLessThan rmsd 0.35 (sprintf "side-chain RMSD %.3f Å" rmsd)
                Expect.isLessThan worstChain 0.45 (sprintf "worst chain's side-chain RMSD %.3f Å" worstChain)
                let oRmsd = Math.Sqrt(oSq / float oCount)
                Expect.isLessThan oRmsd 0.1 (sprintf "O RMSD %.3f Å" oRmsd)
                let cbRmsd = Math.Sqrt(cbSq / float cbCount)
                Expect.isLessThan cbRmsd 0.15 (sprintf "CB RMSD %.3f Å" cbRmsd)
                // A wrong phi convention would put C(i-1) far off the plane (observed mean 3.7°, max 20°).
                let meanAngle = angleSum / float angleCount * 180.0 / Math.PI
                Expect.isLessThan meanAngle 10.0 (sprintf "C(i-1) in the phi frame's xy-plane: mean %.1f°" meanAngle)
            }

            test "atom14ToAtom37 gives a chain's own atom37 coordinates" {
                use _ = torch.NewDisposeScope()
                let chain = Pdb.read (Data.small "1ubq_A") None
                let restypes = ProteinChain.restypes chain

                let atom14 =
                    {
                        Positions = torch.nan_to_num (ProteinChain.atom14 torch.float64 chain)
                        Mask = ProteinChain.atom14Mask chain
                    }

                let atom37 = AllAtom.atom14ToAtom37 restypes atom14
                let want = ProteinChain.atom37 torch.float64 chain
                // atom37 has OXT, which atom14 lacks.
                let mask37 = (ProteinChain.atom37Mask chain).clone()
                mask37.select(-1L, int64 RC.oxtIndex).fill_(false) |> ignore
                Expect.isTrue (atom37.Mask.eq(mask37).all().ToBoolean()) "masks"
                let m = mask37.unsqueeze (-1L)
                Tol.close "coordinates" 0.0 (atom37.Positions.masked_select m) (want.masked_select m)
            }

            test "a decoded chain is written as all heavy atoms and reads back" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(7UL)
                let backbone, restypes, sinCos = inputs g [||] torch.float64

                let sequence =
                    String(
                        restypes.data<int64>().ToArray()
                        |> Array.map (fun r -> RC.restypesWithX.[int r])
                    )

                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let chain = AllAtom.toProteinChain "decoded" "A" sequence atoms.Positions
                Expect.equal chain.Sequence sequence "sequence"
                let heavy = RC.residueAtoms |> Array.sumBy Array.length
                let back = Pdb.parse "decoded" (Pdb.toText AtomLayout.Atom37 None chain) None
                let written = back.Atom37Mask |> Seq.cast<bool> |> Seq.filter id |> Seq.length
                Expect.equal written heavy "every heavy atom of every residue type, once"
                Expect.equal back.Atom14Mask chain.Atom14Mask "atom14 masks"
                let got = ProteinChain.atom14 torch.float64 back
                let m = atoms.Mask.unsqueeze (-1L)

                Tol.close
                    "coordinates (PDB has 3 decimals)"
                    6e-4
                    (got.masked_select m)
                    (atoms.Positions.masked_select m)
            }

            test "bad inputs raise errors that name the argument" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(3UL)
                let backbone, restypes, sinCos = inputs g [| 2L |] torch.float64

                let names (param: string) (what: string) (f: unit -> Frame) =
                    let outcome =
                        try
                            f () |> ignore
                            None
                        with :? ArgumentException as e ->
                            Some e

                    match outcome with
                    | None -> failtestf "%s: expected an ArgumentException" what
                    | Some e -> Expect.equal e.ParamName param (what + ": names the argument")

                names "restypes" "restype 21" (fun () ->
                    AllAtom.torsionsToFrames backbone (restypes.add ((1L).ToScalar())) sinCos)

                names "restypes" "float restypes" (fun () ->
                    AllAtom.torsionsToFrames backbone (restypes.to_type torch.float32) sinCos)

                names "sinCos" "6 torsions" (fun () ->
                    AllAtom.torsionsToFrames backbone restypes (sinCos.narrow (-2L, 0L, 6L)))

                names "backbone" "frames of another shape" (fun () ->
                    AllAtom.torsionsToFrames (Frame.select 0L 0L backbone) restypes sinCos)

            }
        ]
