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

/// Vector arithmetic in doubles, written here independently of the library.
let private sub (a: float[]) (b: float[]) = Array.map2 (-) a b

let private dot (a: float[]) (b: float[]) =
    Array.fold2 (fun s x y -> s + x * y) 0.0 a b

let private cross (a: float[]) (b: float[]) =
    [|
        a.[1] * b.[2] - a.[2] * b.[1]
        a.[2] * b.[0] - a.[0] * b.[2]
        a.[0] * b.[1] - a.[1] * b.[0]
    |]

/// The IUPAC dihedral a-b-c-d, written here independently in doubles: atan2(|b₂| b₁·(b₂×b₃), (b₁×b₂)·(b₂×b₃)),
/// returned as (sin, cos).
let private dihedral (p0: float[]) (p1: float[]) (p2: float[]) (p3: float[]) =
    let b1, b2, b3 = sub p1 p0, sub p2 p1, sub p3 p2
    let n1, n2 = cross b1 b2, cross b2 b3
    let angle = Math.Atan2(Math.Sqrt(dot b2 b2) * dot b1 n2, dot n1 n2)
    Math.Sin angle, Math.Cos angle

let private pairError (s1: float, c1: float) (s2: float, c2: float) = max (abs (s1 - s2)) (abs (c1 - c2))

let private unitPairs (sc: torch.Tensor) = sc / sc.norm (-1, true)

/// Per residue type, the largest 2-norm of a default frame's translation (groups 1–7) and of an atom's position in
/// its group's frame (the tables in float64, as arrays: tensors made here would belong to the first test's scope).
let private tableNorms =
    lazy
        (use _ = torch.NewDisposeScope()
         let d = RigidGroups.defaultFrames torch.float64 cpu

         let frameShift =
             d.T.narrow(1L, 1L, 7L).norm(-1, false).amax([| -1L |]).data<float>().ToArray()

         let lit = RigidGroups.restypeAtom14GroupPositions

         let atomMax =
             Array.init 21 (fun r ->
                 Seq.max
                     [
                         for k in 0..13 ->
                             Math.Sqrt(
                                 lit.[r, k, 0] * lit.[r, k, 0]
                                 + lit.[r, k, 1] * lit.[r, k, 1]
                                 + lit.[r, k, 2] * lit.[r, k, 2]
                             )
                     ])

         frameShift, atomMax)

/// `tableNorms` per residue. Shapes: restypes [*, L] -> [*, L], [*, L]
let private tableRows (restypes: torch.Tensor) =
    let shiftTable, atomTable = tableNorms.Value

    let rows (table: float[]) =
        (torch.tensor table).index_select(0L, restypes.flatten ()).reshape(restypes.shape)

    rows shiftTable, rows atomTable

/// Rounding bounds of `AllAtom.decodeAllAtom`, one scalar per residue (float64 [*, L]) bounding every entry of its 8
/// group frames' R and T and of its 14 atoms, against the decoder in exact arithmetic on exact rotations; the inputs
/// may carry their own errors: the backbone's R entries (eR, e.g. its distance from a rotation) and T entries (eT),
/// and the (sin, cos) directions (eDirection). Step by step, as `torsionsToFrames` computes:
/// - a local frame D_g·Rx: D_g's float64 entries sit within 4u₆₄ of a rotation and their cast adds u; the normalised
///   (sin, cos) is within 4u per entry of a unit pair (a 2-term norm, its square root, the division), plus ε's
///   shortening ε/(2|v|²) and the input's error, and so is Rx; their product is within GeoTol.productEntry of a
///   rotation; its T is the table's, cast (u·|D_T|);
/// - each composition (chi2 … chi4, then onto the backbone): R within √3·(e_a + e_b) + 3u (GeoTol.productEntry), T =
///   R_a T_b + T_a within √3·e_a·|T_b| + √3·e_b,T + e_a,T + 3u·|T_b| + u·|T| (rows of R_a of 2-norm ≤ 1), with
///   |T_b| ≤ k·max|D_T| after k steps;
/// - each atom R x + T with |x| ≤ the residue type's largest table position: √3·(e_R + 3u)·|x| + e_T + u·|X|.
/// Products of two error terms are left out (second order).
let private decoderBound
    (dtype: torch.ScalarType)
    (eR: float)
    (eT: torch.Tensor)
    (eDirection: float)
    (restypes: torch.Tensor)
    (sinCos: torch.Tensor)
    (frames: Frame)
    (positions: torch.Tensor)
    =
    let u = Tol.unitRoundoff dtype
    let u64 = Tol.unitRoundoff torch.float64
    let sq3 = sqrt 3.0
    let dT, litMax = tableRows restypes
    let sc = sinCos.to_type torch.float64
    let v2 = (sc * sc).sum(-1L).amin([| -1L |]) // [*, L]
    let eRx = 4.0 * u + AllAtom.TorsionEps / (2.0 * v2) + eDirection
    let local = sq3 * (u + 4.0 * u64 + eRx) + 3.0 * u
    let localT = u * dT
    let mutable chainR, chainT = local, localT

    for k in 2..4 do
        let nextR = sq3 * (chainR + local) + 3.0 * u

        let nextT =
            sq3 * chainR * dT + sq3 * localT + chainT + 3.0 * u * dT + u * float k * dT

        chainR <- nextR
        chainT <- nextT

    let tB = 4.0 * dT
    let frameT64 = frames.T.to_type(torch.float64).abs().amax([| -1L; -2L |]) // [*, L]
    let frameR = sq3 * (eR + chainR) + 3.0 * u
    let frameT = sq3 * eR * tB + sq3 * chainT + eT + 3.0 * u * tB + u * frameT64
    let xMax = positions.to_type(torch.float64).abs().amax([| -1L; -2L |]) // [*, L]

    {|
        FrameR = frameR
        FrameT = frameT
        Atom = sq3 * (frameR + 3.0 * u) * litMax + frameT + u * xMax
    |}

/// Σᵢ |∂φ/∂xᵢ| of the dihedral a-b-c-d (Blondel & Karplus 1996): |∂φ/∂a| = 1/(|b₁| sin θ₁), |∂φ/∂d| =
/// 1/(|b₃| sin θ₂), and ∂φ/∂b, ∂φ/∂c are combinations of those two with weights 1 + k₁, k₃ and 1 + k₃, k₁
/// (k₁ = |b₁·b₂|/|b₂|², k₃ = |b₃·b₂|/|b₂|²): moving each atom by ≤ δ (2-norm) moves φ by ≤ that sum times δ, and
/// (sin φ, cos φ) by as much per component (first order).
let private dihedralSensitivity (p0: float[]) (p1: float[]) (p2: float[]) (p3: float[]) =
    let b1, b2, b3 = sub p1 p0, sub p2 p1, sub p3 p2
    let nb2 = dot b2 b2

    let n1, n2 =
        Math.Sqrt(dot (cross b1 b2) (cross b1 b2)), Math.Sqrt(dot (cross b2 b3) (cross b2 b3))

    let a = Math.Sqrt nb2 / n1
    let d = Math.Sqrt nb2 / n2
    let k1, k3 = abs (dot b1 b2) / nb2, abs (dot b3 b2) / nb2
    2.0 * a * (1.0 + k1) + 2.0 * d * (1.0 + k3)

let private properties (dtype: torch.ScalarType) (name: string) =
    let u = Tol.unitRoundoff dtype
    let sq3 = sqrt 3.0
    let d64 (x: torch.Tensor) = x.to_type torch.float64
    let noError = torch.zeros (1L, dtype = torch.float64)

    /// The largest |entry| over the last `k` dims. Shapes: [*, L, …] -> [*, L]
    let maxOver (k: int) (x: torch.Tensor) =
        (d64 x).abs().amax(Array.init k (fun i -> -1L - int64 i))

    testList
        name
        [
            Props.property "every bond of every residue type keeps its reference length for random torsions"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let frames = AllAtom.torsionsToFrames backbone restypes sinCos
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                // Exact rotations keep every length; each atom is within decoderBound of the exact decoder's (√3 times
                // per entry in 2-norm), the backbone's rotation within GeoTol.quatMatrixEntry of one; the tables'
                // cast moves a reference length by ≤ 2u·max|x| (cross-group bonds: a child frame's origin is its
                // origin atom's table position, the same float64 numbers).
                let bound =
                    decoderBound dtype (GeoTol.quatMatrixEntry dtype) noError 0.0 restypes sinCos frames atoms.Positions

                let _, litMax = tableRows restypes

                let tol =
                    (2.0 * sq3 * bound.Atom + 2.0 * u * litMax).flatten().data<float>().ToArray()

                let at = coordinates atoms.Positions
                let types = restypes.reshape(-1L).data<int64>().ToArray()
                let mutable worst = 0.0

                for i in 0 .. types.Length - 1 do
                    for a, b, length in bonds.[int types.[i]] do
                        worst <- max worst (abs (distance (at i a) (at i b) - length) / tol.[i])

                if not (worst <= 1.0) then
                    failtestf "a bond length is off by %g × its rounding bound" worst

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
                // Composition is associative for any matrices, so only rounding separates (M∘B)∘G from M∘(B∘G), G the
                // groups' frames in the backbone's (the same bits on both sides): each product within 3u on entries
                // ≤ 1, each translation R_a T_b + T_a within 3u·|T_b| + u·|T| plus its inputs' errors as in
                // decoderBound (|T_G| ≤ 4·max|D_T|); atoms R x + T likewise.
                let dT, litMax = tableRows restypes
                let tG = 4.0 * dT
                let norm (t: torch.Tensor) = (d64 t).norm(-1, false)
                let eR1, eT1 = 3.0 * u, 3.0 * u * norm backbone.T + u * maxOver 1 moved.T
                let leftR = sq3 * eR1 + 3.0 * u
                let leftT = sq3 * eR1 * tG + eT1 + 3.0 * u * tG + u * maxOver 2 framesMoved.T
                let eRF, eTF = 3.0 * u, 3.0 * u * tG + u * maxOver 2 frames.T
                let rightR = sq3 * eRF + 3.0 * u
                let tF = (norm frames.T).amax([| -1L |])
                let rightT = sq3 * eTF + 3.0 * u * tF + u * maxOver 2 expected.T
                let perFrame (x: torch.Tensor) = x.unsqueeze(-1L).unsqueeze(-1L)
                Tol.close "frame R" (leftR + rightR) framesMoved.R expected.R
                Tol.within "frame T" (d64 (framesMoved.T - expected.T)) (perFrame (leftT + rightT))
                let atoms = AllAtom.atom14Positions frames restypes
                let atomsMoved = AllAtom.atom14Positions framesMoved restypes
                let mask = atoms.Mask.unsqueeze (-1L)
                let movedBack = Frame.apply (Frame.unsqueeze -1L motion) atoms.Positions

                let leftAtom =
                    sq3 * (leftR + 3.0 * u) * litMax + leftT + u * maxOver 2 atomsMoved.Positions

                let atomF = sq3 * (eRF + 3.0 * u) * litMax + eTF + u * maxOver 2 atoms.Positions
                let xF = (d64 atoms.Positions).norm(-1, false).amax([| -1L |])
                let rightAtom = sq3 * atomF + 3.0 * u * xF + u * maxOver 2 movedBack

                Tol.within
                    "atoms"
                    (d64 (atomsMoved.Positions - torch.where (mask, movedBack, torch.zeros_like movedBack)))
                    (perFrame (leftAtom + rightAtom))

            Props.property "N, CA, C are placed where the backbone frame says"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let atom k = atoms.Positions.select (-2L, k)
                // ESM's construction (C on -x, origin CA, N in the xy-plane) from the built atoms gives the input.
                let rebuilt = Frame.ofGramSchmidt 0.0 (atom 2L) (atom 1L) (atom 0L)
                // Group 0's frame is the backbone frame bit for bit (the identity default, composed exactly), so
                // CA (table position (−0, 0, −0)) is its origin exactly. Gram–Schmidt of CA − C and N − CA gives
                // the identity on the tables' atoms (C on −x, N in the xy-plane), so R·that: within its own rounding
                // (56/sin + 18)·u, plus its inputs' errors — the atoms' placement (3u on |R||x| and u·|X| per entry,
                // √3 times in 2-norm), the subtraction (u·|v|) and R's distance e from a rotation Q (√3·e·|v|) —
                // turning x̂ by p_a = δa/|a| and ê₁ by (p_c + 2p_a)/sin; R itself is within e of Q.
                Tol.close "CA = frame origin" 0.0 (atom 1L) backbone.T
                let e = GeoTol.quatMatrixEntry dtype
                let _, litMax = tableRows restypes
                let xMax = maxOver 2 (atoms.Positions.narrow (-2L, 0L, 3L))
                let place = sq3 * (3.0 * sq3 * u * litMax + u * xMax)
                let a = d64 (atom 1L - atom 2L)
                let cc = d64 (atom 0L - atom 1L)
                let na, nc = a.norm (-1, false), cc.norm (-1, false)
                let sin = (BackboneChecks.sinAngle a cc).squeeze(-1L)
                let pa = (2.0 * place + sq3 * u * na + sq3 * e * na) / na
                let pc = (2.0 * place + sq3 * u * nc + sq3 * e * nc) / nc
                let tolR = (56.0 / sin + 18.0) * u + pa + (pc + 2.0 * pa) / sin + e
                Tol.within "R from built N, CA, C" (d64 (rebuilt.R - backbone.R)) (tolR.unsqueeze(-1L).unsqueeze(-1L))
                // and the distances are the residue type's reference ones.
                let local =
                    Frame.invertApply (Frame.unsqueeze -1L backbone) (atoms.Positions.narrow (-2L, 0L, 3L))

                Expect.isTrue ((local.select(-2L, 2L).select(-1L, 0L)).lt(0.0.ToScalar()).all().ToBoolean()) "C on -x"

            Props.property "psi and every chi measured back from the built atoms equal the input torsions"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch dtype
                let frames = AllAtom.torsionsToFrames backbone restypes sinCos
                let atoms = AllAtom.decodeAllAtom backbone restypes sinCos
                let want = unitPairs sinCos
                // The exact decoder's atoms have exactly the input torsions; the built ones are within √3·decoderBound
                // (2-norm) of them, which moves each measured (sin, cos) by ≤ dihedralSensitivity times that (first
                // order, doubled); the wanted unit pair rounds 4u.
                let bound =
                    decoderBound dtype (GeoTol.quatMatrixEntry dtype) noError 0.0 restypes sinCos frames atoms.Positions

                let atomError = (sq3 * bound.Atom).flatten().data<float>().ToArray()
                let types = restypes.reshape(-1L).data<int64>().ToArray()
                let position = coordinates atoms.Positions
                let wanted = pairs want
                let at (i: int) (r: int) (name: string) = position i (slot r name)
                let mutable worst = 0.0
                let mutable worstSensitivity = 0.0
                let mutable checkedChis = 0

                let check (i: int) (names: string[]) (measured: float * float) (target: float * float) =
                    let p k = at i (int types.[i]) names.[k]
                    let sens = dihedralSensitivity (p 0) (p 1) (p 2) (p 3)
                    worstSensitivity <- max worstSensitivity sens
                    let tol = 2.0 * sens * atomError.[i] + 4.0 * u
                    worst <- max worst (pairError measured target / tol)

                for i in 0 .. types.Length - 1 do
                    let r = int types.[i]

                    if r <> RC.unkRestypeIndex then
                        // psi rotates O, which sits opposite the psi-defining N(i+1): dihedral(N, CA, C, O) = psi + π.
                        let names = [| "N"; "CA"; "C"; "O" |]
                        let s, c = dihedral (at i r "N") (at i r "CA") (at i r "C") (at i r "O")
                        check i names (-s, -c) (wanted i 2)

                    for k, names in Array.indexed RC.chiAnglesAtoms.[r] do
                        let measured =
                            dihedral (at i r names.[0]) (at i r names.[1]) (at i r names.[2]) (at i r names.[3])

                        check i names measured (wanted i (3 + k))
                        checkedChis <- checkedChis + 1

                Expect.isGreaterThan checkedChis 0 "some chis checked"

                if not (worst <= 1.0) then
                    failtestf "a measured torsion (sin, cos) is off by %g × its rounding bound" worst

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
                // Its own differences of coordinates round ≤ 2u·max|X| per entry (2-norm √3 times), as if the atoms
                // moved that much more; its products, atan2 and normalisation ≤ 10u; the wanted pair 4u.
                let xMax = (d64 atoms.Positions).abs().max().ToDouble()
                let worstAtom = Array.max atomError

                Tol.close
                    "torsionsOfAtom14"
                    (2.0 * worstSensitivity * (worstAtom + 2.0 * sq3 * u * xMax) + 14.0 * u)
                    (sel measured.SinCos)
                    (sel want)
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
                let esmPos = RigidGroups.restypeAtom14GroupPositions

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
                let d = RigidGroups.defaultFrames torch.float64 cpu
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

            Props.property "float32 decoding matches float64 within both decoders' rounding bounds"
            <| fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let backbone, restypes, sinCos = inputs (c.Generator()) c.Batch torch.float64
                let f64 = AllAtom.decodeAllAtom backbone restypes sinCos

                let backbone32, sinCos32 =
                    Frame.toType torch.float32 backbone, sinCos.to_type torch.float32

                let f32 = AllAtom.decodeAllAtom backbone32 restypes sinCos32
                Expect.equal f32.Positions.dtype torch.float32 "dtype follows the input"
                // Both against the exact decoder on the float64 inputs: float32 also carries its inputs' cast (u₃₂ on
                // R's entries and on |T|, ≤ 2u₃₂ on each (sin, cos) direction).
                let u32 = Tol.unitRoundoff torch.float32
                let zero = torch.zeros (1L, dtype = torch.float64)
                let frames64 = AllAtom.torsionsToFrames backbone restypes sinCos
                let frames32 = AllAtom.torsionsToFrames backbone32 restypes sinCos32

                let b64 =
                    decoderBound torch.float64 0.0 zero 0.0 restypes sinCos frames64 f64.Positions

                let castT = u32 * backbone.T.abs().amax([| -1L |])

                let b32 =
                    decoderBound torch.float32 u32 castT (2.0 * u32) restypes sinCos32 frames32 f32.Positions

                Tol.within
                    "atom14"
                    (f32.Positions.to_type torch.float64 - f64.Positions)
                    ((b32.Atom + b64.Atom).unsqueeze(-1L).unsqueeze(-1L))

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
                    Expect.equal bbErr 0.0 (name + ": CA exact")

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
                // The chain holds float32 copies (u₃₂·|x|), PDB writes them to 3 decimals (≤ 5e-4) and reading the
                // decimals back rounds u₆₄·|x|.
                let xMax = atoms.Positions.abs().max().ToDouble()

                Tol.close
                    "coordinates (PDB has 3 decimals)"
                    (5e-4 + Tol.derived torch.float32 1.0 xMax + Tol.derived torch.float64 1.0 xMax)
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
