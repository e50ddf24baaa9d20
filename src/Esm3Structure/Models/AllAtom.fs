namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure
open Esm3Structure.Tensors

/// Atom coordinates in a per-residue layout (atom14 or atom37) with their mask.
type AtomPositions =
    {
        /// [*, L, A, 3] coordinates in Å; 0 where `Mask` is false.
        Positions: torch.Tensor
        /// [*, L, A] bool: true where the slot holds an atom.
        Mask: torch.Tensor
    }

/// The seven torsion angles of each residue (omega, phi, psi, chi1..chi4) as (sin, cos) pairs, in the convention of
/// AlphaFold 2's `atom37_to_torsion_angles` (see `AllAtom.torsionsOfAtom14`).
type Torsions =
    {
        /// [*, L, 7, 2] unit (sin, cos) pairs; (0, 1) where `Mask` is false.
        SinCos: torch.Tensor
        /// [*, L, 7, 2] the same with π added to the π-periodic chis (symmetric side chains), as AlphaFold's
        /// `alt_torsion_angles_sin_cos`.
        AltSinCos: torch.Tensor
        /// [*, L, 7] bool: true where every atom defining the torsion is present (and the residue type has it).
        Mask: torch.Tensor
    }

/// All-atom decoding from backbone frames and torsions: ESM3's Algorithm 8 (all-atom decoder), which follows
/// AlphaFold 2's supplementary Algorithm 24 (`computeAllAtomCoordinates`). ESM's released code leaves it out
/// (ESM3-REFERENCE.md §7.8).
///
/// Rigid groups per residue: 0 backbone, 1 pre-omega, 2 phi, 3 psi, 4..7 chi1..chi4. Each torsion (sin, cos) is
/// normalised, turned into a rotation about the local x-axis, placed after the group's default frame, and the chi
/// frames are chained (chi2 on chi1, ...) from the backbone frame. Atoms are then placed from their reference
/// positions in their group's frame.
///
/// Frame convention. The tables (`ResidueConstants.rigidGroupAtomPositions`, deepmind/alphafold
/// `residue_constants.py`) are written in AlphaFold's backbone frame (CA at the origin, C on the POSITIVE x-axis,
/// N in the xy-plane with y > 0). ESM's backbone frame (§2.5) puts C on the NEGATIVE x-axis, N again in the
/// xy-plane with y > 0: for the same N, CA, C, `R_esm = R_af2 · F` with `F = diag(−1, 1, −1)`, the rotation by 180°
/// about the local y-axis (x̂_esm = −x̂_af2, ŷ equal, ẑ_esm = −ẑ_af2). Since `F` is its own inverse,
/// `T_af2 = T_esm ∘ F`. Here the backbone frame given to `torsionsToFrames` is ESM's, so
///  - the reference positions of group-0 atoms (N, CA, C, CB) are mapped by `F`: (x, y, z) -> (−x, y, −z);
///  - the default frames of groups 1..4, which AlphaFold gives relative to its backbone frame, are `F ∘ D_g`;
///  - groups 5..7 are relative to the previous chi frame and are unchanged, as are all other atom positions.
/// Output frames 1..7 are therefore exactly AlphaFold's global frames; output frame 0 is ESM's backbone frame.
[<RequireQualifiedAccess>]
module AllAtom =

    /// The ε inside the square root when (sin, cos) pairs are normalised.
    [<Literal>]
    let TorsionEps = 1e-12

    /// Normalises each (sin, cos) pair: `a / sqrt(‖a‖² + ε)` (ε = `TorsionEps`, inside the square root, so a zero
    /// pair stays finite). Shapes: [*, 2] -> [*, 2]
    let normalizeTorsions (sinCos: torch.Tensor) =
        Shape.expectTrailing "sinCos" [| 2L |] sinCos
        sinCos / ((sinCos * sinCos).sum(-1L, true) + TorsionEps).sqrt()

    /// Rotations about the local x-axis by angles given as unit (sin, cos): [[1,0,0],[0,c,−s],[0,s,c]].
    /// Shapes: [*, 2] -> [*, 3, 3]
    let rotationX (sinCos: torch.Tensor) =
        Shape.expectTrailing "sinCos" [| 2L |] sinCos
        let s = sinCos.select (-1L, 0L)
        let c = sinCos.select (-1L, 1L)
        let one = torch.ones_like s
        let zero = torch.zeros_like s
        Shape.unflattenLast [| 3L; 3L |] (torch.stack ([| one; zero; zero; zero; c; -s; zero; s; c |], -1L))

    /// Global frames of the 8 rigid groups of every residue (AlphaFold 2 supplement Algorithm 24, lines 1–10):
    /// each (sin, cos) pair is normalised (`normalizeTorsions`); group g ≥ 1 gets `D_g ∘ Rx(torsion g−1)` with `D_g`
    /// its default frame (`RigidGroups.defaultFrames`); chi2..chi4 are composed onto chi1..chi3; everything onto the backbone
    /// frame. Frame 0 is the backbone frame itself. Torsion order: omega, phi, psi, chi1..chi4.
    /// Shapes: backbone Frame [*, L] (ESM convention), restypes [*, L] (rows 0..20), sinCos [*, L, 7, 2]
    ///         -> Frame [*, L, 8]
    let torsionsToFrames (backbone: Frame) (restypes: torch.Tensor) (sinCos: torch.Tensor) : Frame =
        let r = RigidGroups.checkRestypes restypes
        let lead = r.shape
        Shape.expect "sinCos" (Array.append lead [| 7L; 2L |]) sinCos

        if backbone.Shape <> lead then
            raise (
                ArgumentException(
                    sprintf "backbone: frames are %s but restypes is %s" (Shape.show backbone.Shape) (Shape.show lead),
                    "backbone"
                )
            )

        Shape.expectSameKind "backbone" backbone.T "sinCos" sinCos
        let defaults = RigidGroups.defaultFrames sinCos.dtype sinCos.device
        let dR = RigidGroups.rowsOf defaults.R r // [*, L, 8, 3, 3]
        let dT = RigidGroups.rowsOf defaults.T r // [*, L, 8, 3]
        let rx = rotationX (normalizeTorsions sinCos) // [*, L, 7, 3, 3]
        let eye = Rotation.identity (Array.append lead [| 1L |]) sinCos.dtype sinCos.device // [*, L, 1, 3, 3]

        let local =
            {
                R = dR.matmul (torch.cat ([| eye; rx |], -3L))
                T = dT
            } // [*, L, 8]: group -> parent

        let group g = Frame.select -1L g local // [*, L]
        let chi2 = Frame.compose (group 4L) (group 5L)
        let chi3 = Frame.compose chi2 (group 6L)
        let chi4 = Frame.compose chi3 (group 7L)

        let toBackbone =
            Frame.stack -1L [ group 0L; group 1L; group 2L; group 3L; group 4L; chi2; chi3; chi4 ] // [*, L, 8]

        Frame.compose (Frame.unsqueeze -1L backbone) toBackbone

    /// Which rigid groups each residue has (`restypeRigidGroupMask`). Shapes: restypes [*, L] -> [*, L, 8] bool
    let rigidGroupMask (restypes: torch.Tensor) =
        let r = RigidGroups.checkRestypes restypes
        RigidGroups.rowsOf (RigidGroups.boolTable RigidGroups.restypeRigidGroupMask r.device) r

    /// Atom14 coordinates from the rigid-group frames (Algorithm 24, line 11: `x = T_group(atom) ∘ x_lit`), with the
    /// residue type's atom14 mask (`ResidueConstants.restypeAtom14Mask`); empty slots are 0.
    /// Shapes: frames Frame [*, L, 8] (from `torsionsToFrames`), restypes [*, L] -> Positions [*, L, 14, 3],
    ///         Mask [*, L, 14]
    let atom14Positions (frames: Frame) (restypes: torch.Tensor) : AtomPositions =
        let r = RigidGroups.checkRestypes restypes
        let lead = r.shape

        if frames.Shape <> Array.append lead [| 8L |] then
            raise (
                ArgumentException(
                    sprintf
                        "frames: expected %s, got %s"
                        (Shape.show (Array.append lead [| 8L |]))
                        (Shape.show frames.Shape),
                    "frames"
                )
            )

        let dtype, device = frames.Dtype, frames.T.device

        let groupTable =
            RigidGroups.int64Table 21 14 (fun row k -> int64 ResidueConstants.restypeAtom14ToRigidGroup.[row, k]) device

        let group_LA = RigidGroups.rowsOf groupTable r // [*, L, 14]

        let rIdx =
            group_LA.unsqueeze(-1L).unsqueeze(-1L).expand(Array.append lead [| 14L; 3L; 3L |])

        let tIdx = group_LA.unsqueeze(-1L).expand(Array.append lead [| 14L; 3L |])

        let atomFrames =
            {
                R = frames.R.gather (-3L, rIdx)
                T = frames.T.gather (-2L, tIdx)
            } // [*, L, 14]

        let lit =
            RigidGroups.rowsOf
                (RigidGroups.tensorOf
                    (RigidGroups.flat3 RigidGroups.restypeAtom14GroupPositions)
                    [| 21L; 14L; 3L |]
                    dtype
                    device)
                r // [*, L, 14, 3]

        let mask =
            RigidGroups.rowsOf (RigidGroups.boolTable ResidueConstants.restypeAtom14Mask device) r // [*, L, 14]

        let positions = Frame.apply atomFrames lit

        {
            Positions = torch.where (mask.unsqueeze (-1L), positions, torch.zeros_like positions)
            Mask = mask
        }

    /// The all-atom decoder's last stage: `torsionsToFrames` then `atom14Positions`.
    /// Shapes: backbone Frame [*, L], restypes [*, L], sinCos [*, L, 7, 2] -> Positions [*, L, 14, 3], Mask [*, L, 14]
    let decodeAllAtom (backbone: Frame) (restypes: torch.Tensor) (sinCos: torch.Tensor) : AtomPositions =
        atom14Positions (torsionsToFrames backbone restypes sinCos) restypes

    /// Atom14 to atom37 (`ResidueConstants.restypeAtom37ToAtom14`); atom37 slots the residue type lacks, or whose
    /// atom14 slot is masked, are 0 and masked.
    /// Shapes: restypes [*, L], atom14 Positions [*, L, 14, 3], Mask [*, L, 14] -> [*, L, 37, 3], [*, L, 37]
    let atom14ToAtom37 (restypes: torch.Tensor) (atom14: AtomPositions) : AtomPositions =
        let r = RigidGroups.checkRestypes restypes
        let lead = r.shape
        Shape.expect "atom14.Positions" (Array.append lead [| 14L; 3L |]) atom14.Positions
        Shape.expect "atom14.Mask" (Array.append lead [| 14L |]) atom14.Mask
        let device = atom14.Positions.device

        let slots =
            RigidGroups.rowsOf
                (RigidGroups.int64Table
                    21
                    37
                    (fun row a -> int64 ResidueConstants.restypeAtom37ToAtom14.[row, a])
                    device)
                r // [*, L, 37]

        let exists =
            RigidGroups.rowsOf (RigidGroups.boolTable ResidueConstants.restypeAtom37ToAtom14Mask device) r

        let mask =
            exists.logical_and (atom14.Mask.to_type(torch.ScalarType.Bool).gather(-1L, slots))

        let positions =
            atom14.Positions.gather (-2L, slots.unsqueeze(-1L).expand(Array.append lead [| 37L; 3L |]))

        {
            Positions = torch.where (mask.unsqueeze (-1L), positions, torch.zeros_like positions)
            Mask = mask
        }

    /// A chain from decoded atom14 coordinates, ready for `Pdb.write` (all heavy atoms of each residue type, via
    /// atom37). Residues are numbered 1..L; non-finite coordinates become missing atoms. Sequence letters other than
    /// the 20 amino acids are `X` (N, CA, C only).
    /// Shapes: atom14 [L, 14, 3] (any float dtype and device; copied to CPU float32); sequence of length L.
    let toProteinChain (name: string) (chainId: string) (sequence: string) (atom14: torch.Tensor) : ProteinChain =
        Shape.expect "atom14" [| int64 sequence.Length; 14L; 3L |] atom14
        // Only managed data leaves this function, so its intermediate tensors are freed here.
        use _ = torch.NewDisposeScope()
        let n = sequence.Length

        let restypes =
            torch.tensor (
                sequence.ToCharArray() |> Array.map (ResidueConstants.restypeIndex >> int64),
                ReadOnlySpan<int64> [| int64 n |]
            )

        let positions = atom14.detach().cpu()
        let finite = positions.isfinite().all(-1L)
        let atom37 = atom14ToAtom37 restypes { Positions = positions; Mask = finite }

        let nan = torch.full_like (atom37.Positions, Double.NaN)
        let coords = torch.where (atom37.Mask.unsqueeze (-1L), atom37.Positions, nan)
        ProteinChain.ofAtom37Tensor name chainId sequence (Array.init n (fun i -> i + 1)) coords

    // ---------------------------------------------------------------------------------------------------------------
    // Torsions of a structure (training targets), the inverse of `torsionsToFrames` for the atoms it places.

    [<Literal>]
    let private MeasureEps = 1e-12

    /// The dihedral angle a-b-c-d as unit (sin, cos): the angle of `d` about the axis b -> c, measured in the frame
    /// with origin c, x̂ ∝ c − b and `a` in the xy-plane (y > 0). Shapes: a, b, c, d [*, 3] -> [*, 2]
    let dihedralSinCos (a: torch.Tensor) (b: torch.Tensor) (c: torch.Tensor) (d: torch.Tensor) =
        let local = Frame.invertApply (Frame.ofGramSchmidt MeasureEps b c a) d
        let y, z = local.select (-1L, 1L), local.select (-1L, 2L)
        let norm = (y * y + z * z + MeasureEps).sqrt()
        torch.stack ([| z / norm; y / norm |], -1L)

    /// The previous residue's value at each residue (zeros for the first). Shapes: x [*, L, ...] with L at `dim`.
    let private previous (dim: int64) (x: torch.Tensor) =
        let d = if dim < 0L then x.dim () + dim else dim
        let n = x.shape.[int d]

        if n = 0L then
            x.clone ()
        else
            torch.cat ([| torch.zeros_like (x.narrow (d, 0L, 1L)); x.narrow (d, 0L, n - 1L) |], d)

    /// The seven torsions of each residue from atom14 coordinates, as AlphaFold's `atom37_to_torsion_angles`:
    /// omega = dihedral(CA₋₁, C₋₁, N, CA), phi = dihedral(C₋₁, N, CA, C), psi = dihedral(N, CA, C, O) + π (O lies
    /// opposite N₊₁; the +π makes it the psi group's rotation), chi k = dihedral of `ResidueConstants.chiAnglesAtoms`.
    /// Omega and phi of the first residue are masked (chain breaks are not detected, as in AlphaFold). Masked
    /// entries hold (0, 1). `torsionsToFrames` with these torsions puts O and every chi's fourth atom back at the
    /// measured dihedral.
    /// Shapes: restypes [*, L], atom14 Positions [*, L, 14, 3] (missing atoms may be NaN), Mask [*, L, 14]
    ///         -> SinCos, AltSinCos [*, L, 7, 2], Mask [*, L, 7]
    let torsionsOfAtom14 (restypes: torch.Tensor) (atom14: AtomPositions) : Torsions =
        let r = RigidGroups.checkRestypes restypes
        let lead = r.shape
        Shape.expect "atom14.Positions" (Array.append lead [| 14L; 3L |]) atom14.Positions
        Shape.expect "atom14.Mask" (Array.append lead [| 14L |]) atom14.Mask
        let dtype, device = atom14.Positions.dtype, atom14.Positions.device
        let mask = atom14.Mask.to_type torch.ScalarType.Bool // [*, L, 14]
        // Zero missing atoms so that no NaN enters the arithmetic (and its gradients).
        let pos =
            torch.where (mask.unsqueeze (-1L), atom14.Positions, torch.zeros_like atom14.Positions) // [*, L, 14, 3]

        let atom k = pos.select (-2L, k) // [*, L, 3]
        let has k = mask.select (-1L, k) // [*, L]
        let n, ca, c, o = atom 0L, atom 1L, atom 2L, atom 3L
        let prevCa, prevC = previous -2L ca, previous -2L c
        let prevOk = previous -1L ((has 1L).logical_and(has 2L))
        let bbOk = (has 0L).logical_and(has 1L).logical_and(has 2L)
        let omega = dihedralSinCos prevCa prevC n ca
        let phi = dihedralSinCos prevC n ca c
        let psi = -(dihedralSinCos n ca c o)

        let slotTable =
            let data =
                [|
                    for row in 0..20 do
                        for k in 0..3 do
                            for a in 0..3 -> RigidGroups.chiAtom14Slots.[row, k, a]
                |]

            use t = torch.tensor (data, ReadOnlySpan<int64> [| 21L; 16L |])
            t.``to`` device

        let slots = RigidGroups.rowsOf slotTable r // [*, L, 16]: chi k, atom a at 4k + a

        let chiPos =
            pos
                .gather(-2L, slots.unsqueeze(-1L).expand(Array.append lead [| 16L; 3L |]))
                .reshape(Array.append lead [| 4L; 4L; 3L |]) // [*, L, 4 chis, 4 atoms, 3]

        let chiAtom a = chiPos.select (-2L, a) // [*, L, 4, 3]
        let chi = dihedralSinCos (chiAtom 0L) (chiAtom 1L) (chiAtom 2L) (chiAtom 3L) // [*, L, 4, 2]

        let chiExists =
            let table = Array2D.init 21 4 (fun row k -> RigidGroups.hasChi row k)
            RigidGroups.rowsOf (RigidGroups.boolTable table device) r // [*, L, 4]

        let chiAtomsPresent =
            mask.gather(-1L, slots).reshape(Array.append lead [| 4L; 4L |]).all(-1L)

        let sinCos =
            torch.cat ([| omega.unsqueeze -2L; phi.unsqueeze -2L; psi.unsqueeze -2L; chi |], -2L) // [*, L, 7, 2]

        let torsionMask =
            torch.cat (
                [|
                    bbOk.logical_and(prevOk).unsqueeze -1L
                    bbOk.logical_and(prevOk).unsqueeze -1L
                    bbOk.logical_and(has 3L).unsqueeze -1L
                    chiExists.logical_and chiAtomsPresent
                |],
                -1L
            ) // [*, L, 7]

        let identityAngle =
            torch.tensor([| 0.0; 1.0 |], dtype = dtype, device = device).expand(Array.append lead [| 7L; 2L |])

        let masked = torch.where (torsionMask.unsqueeze (-1L), sinCos, identityAngle)

        let flip =
            let table =
                Array2D.init 21 7 (fun row t ->
                    if t >= 3 && ResidueConstants.chiPiPeriodic.[row, t - 3] > 0.0f then
                        -1.0
                    else
                        1.0)

            let data =
                [|
                    for row in 0..20 do
                        for t in 0..6 -> table.[row, t]
                |]

            RigidGroups.rowsOf (RigidGroups.tensorOf data [| 21L; 7L |] dtype device) r // [*, L, 7]

        {
            SinCos = masked
            AltSinCos = torch.where (torsionMask.unsqueeze (-1L), sinCos * flip.unsqueeze (-1L), identityAngle)
            Mask = torsionMask
        }

    /// `torsionsOfAtom14` of a chain's atom14 coordinates. Shapes: -> SinCos, AltSinCos [L, 7, 2], Mask [L, 7]
    let torsionsOfChain (dtype: torch.ScalarType) (chain: ProteinChain) : Torsions =
        use restypes = ProteinChain.restypes chain
        use positions = ProteinChain.atom14 dtype chain
        use mask = ProteinChain.atom14Mask chain
        torsionsOfAtom14 restypes { Positions = positions; Mask = mask }
