namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Structure

/// AlphaFold 2's rigid groups per residue type (0 backbone, 1 pre-omega, 2 phi, 3 psi, 4..7 chi1..chi4) as the
/// tables `AllAtom` decodes with: each group's default frame, each atom14 slot's reference position, which groups
/// exist, and the atoms defining each chi, re-expressed in ESM's backbone convention (see `AllAtom`'s frame
/// convention), with the tensor helpers that turn them into per-residue tensors.
[<RequireQualifiedAccess>]
module RigidGroups =

    // ---------------------------------------------------------------------------------------------------------------
    // Default frames, built from the reference positions in double precision as AlphaFold's
    // `_make_rigid_group_constants` does (deepmind/alphafold alphafold/common/residue_constants.py), then re-expressed
    // in ESM's backbone convention.

    let private sub (a: float[]) (b: float[]) = Array.map2 (-) a b

    let private dot (a: float[]) (b: float[]) =
        Array.fold2 (fun s x y -> s + x * y) 0.0 a b

    let private scale (s: float) (a: float[]) = Array.map ((*) s) a

    let private cross (a: float[]) (b: float[]) =
        [|
            a.[1] * b.[2] - a.[2] * b.[1]
            a.[2] * b.[0] - a.[0] * b.[2]
            a.[0] * b.[1] - a.[1] * b.[0]
        |]

    let private unit (a: float[]) = scale (1.0 / sqrt (dot a a)) a

    /// x̂ along `ex`, ŷ the part of `ey` orthogonal to x̂, ẑ = x̂ × ŷ; origin at `t` (AlphaFold's
    /// `_make_rigid_transformation_4x4`). The axes are computed in .NET doubles, whose square root is correctly
    /// rounded (libtorch's float64 `sqrt` is not always), so the tables are the same bits on every machine.
    /// Shapes: -> Frame [] (float64, CPU)
    let private frameOfAxes (ex: float[]) (ey: float[]) (t: float[]) : Frame =
        let x = unit ex
        let y = unit (sub ey (scale (dot ey x) x))
        let z = cross x y
        let axes = [| x; y; z |]

        let rows =
            [|
                for i in 0..2 do
                    for j in 0..2 -> axes.[j].[i]
            |] // the axes as columns

        Frame.create
            (torch.tensor(rows, dtype = torch.float64, device = torch.CPU).reshape(3L, 3L))
            (torch.tensor (t, dtype = torch.float64, device = torch.CPU))

    let private position (r: int) (name: string) =
        let a =
            ResidueConstants.rigidGroupAtomPositions.[r]
            |> Array.find (fun a -> a.Atom = name)

        [| a.X; a.Y; a.Z |]

    let internal hasChi (r: int) (k: int) =
        ResidueConstants.chiAnglesMask.[r, k] > 0.0f

    /// Default frames of one residue type, group -> parent group (0 -> backbone), ESM convention.
    /// Shapes: -> Frame [8] (float64, CPU)
    let private defaultGroupFrames (r: int) : Frame =
        let identity = Frame.identity [||] torch.float64 torch.CPU
        // ESM from AlphaFold backbone frame: the 180° rotation about local y.
        let flipY =
            Frame.create
                (torch.diag (torch.tensor ([| -1.0; 1.0; -1.0 |], dtype = torch.float64, device = torch.CPU)))
                (torch.zeros (3L, dtype = torch.float64, device = torch.CPU))

        let n, ca, c = position r "N", position r "CA", position r "C"
        let esm (af2: Frame) = Frame.compose flipY af2
        let phi = frameOfAxes (sub n ca) [| 1.0; 0.0; 0.0 |] n
        let psi = frameOfAxes (sub c ca) (sub ca n) c

        let chi1 =
            if hasChi r 0 then
                let atoms = ResidueConstants.chiAnglesAtoms.[r].[0] |> Array.map (position r)
                esm (frameOfAxes (sub atoms.[2] atoms.[1]) (sub atoms.[0] atoms.[1]) atoms.[2])
            else
                flipY

        let chiNext k =
            if hasChi r k then
                // The axis of chi k starts at the origin of chi k-1's frame; its end atom is in chi k-1's group.
                let axisEnd = position r ResidueConstants.chiAnglesAtoms.[r].[k].[2]
                frameOfAxes axisEnd [| -1.0; 0.0; 0.0 |] axisEnd
            else
                identity

        Frame.stack 0L [ identity; flipY; esm phi; esm psi; chi1; chiNext 1; chiNext 2; chiNext 3 ]

    /// [21, 8, 4, 4] homogeneous default frame of each rigid group relative to its parent (groups 0..4: the ESM
    /// backbone frame; group k+1: chi k's frame for k = 1..3), in ESM's backbone convention (see `AllAtom`'s frame
    /// convention). Group 0 is the identity. Groups a residue type lacks (see `restypeRigidGroupMask`) hold placeholders: `F`
    /// (AlphaFold's identity) for groups 1 and 4, the identity for groups 5..7.
    let restypeRigidGroupDefaultFrames: float[,,,] =
        // Only managed data leaves this construction, so its tensors are freed here.
        use _ = torch.NewDisposeScope()

        let m = Frame.toMatrix4 (Frame.stack 0L [ for r in 0..20 -> defaultGroupFrames r ]) // [21, 8, 4, 4]

        let data = m.contiguous().data<float>().ToArray()
        Array4D.init 21 8 4 4 (fun r g i j -> data.[((r * 8 + g) * 4 + i) * 4 + j])

    /// [21, 14, 3] reference position of each atom14 slot in its rigid group's frame, ESM convention (group-0 atoms
    /// mapped by (x, y, z) -> (−x, y, −z)); 0 for empty slots. Source: `ResidueConstants.rigidGroupAtomPositions`.
    let restypeAtom14GroupPositions: float[,,] =
        Array3D.init 21 14 3 (fun r k c ->
            let name = ResidueConstants.atom14Names.[r].[k]

            match
                ResidueConstants.rigidGroupAtomPositions.[r]
                |> Array.tryFind (fun a -> name <> "" && a.Atom = name)
            with
            | None -> 0.0
            | Some a ->
                let v = [| a.X; a.Y; a.Z |].[c]
                if a.Group = 0 && c <> 1 then -v else v)

    /// [21, 8] true where the residue type has the rigid group (AlphaFold's `rigidgroups_group_exists`): backbone
    /// and psi always, chi k where `ResidueConstants.chiAnglesMask` says so; pre-omega and phi carry no heavy atom
    /// and are marked absent, as in AlphaFold.
    let restypeRigidGroupMask: bool[,] =
        Array2D.init 21 8 (fun r g ->
            match g with
            | 0
            | 3 -> true
            | 1
            | 2 -> false
            | _ -> hasChi r (g - 4))

    /// [21, 4, 4] atom14 slots of the four atoms defining each chi angle (0 where the chi does not exist).
    let internal chiAtom14Slots: int64[,,] =
        Array3D.init 21 4 4 (fun r k a ->
            if hasChi r k then
                let name = ResidueConstants.chiAnglesAtoms.[r].[k].[a]
                int64 (Array.IndexOf(ResidueConstants.atom14Names.[r], name))
            else
                0L)

    // ---------------------------------------------------------------------------------------------------------------
    // Tensor helpers.

    let internal tensorOf (data: float[]) (shape: int64[]) (dtype: torch.ScalarType) (device: torch.Device) =
        use t = torch.tensor (data, ReadOnlySpan<int64> shape)
        t.``to`` (dtype, device)

    let internal flat4 (a: float[,,,]) =
        [|
            for i in 0 .. Array4D.length1 a - 1 do
                for j in 0 .. Array4D.length2 a - 1 do
                    for k in 0 .. Array4D.length3 a - 1 do
                        for l in 0 .. Array4D.length4 a - 1 -> a.[i, j, k, l]
        |]

    let internal flat3 (a: float[,,]) =
        [|
            for i in 0 .. Array3D.length1 a - 1 do
                for j in 0 .. Array3D.length2 a - 1 do
                    for k in 0 .. Array3D.length3 a - 1 -> a.[i, j, k]
        |]

    let internal int64Table (rows: int) (cols: int) (f: int -> int -> int64) (device: torch.Device) =
        let data =
            [|
                for r in 0 .. rows - 1 do
                    for c in 0 .. cols - 1 -> f r c
            |]

        use t = torch.tensor (data, ReadOnlySpan<int64> [| int64 rows; int64 cols |])
        t.``to`` device

    let internal boolTable (table: bool[,]) (device: torch.Device) =
        let rows, cols = Array2D.length1 table, Array2D.length2 table

        let data =
            [|
                for r in 0 .. rows - 1 do
                    for c in 0 .. cols - 1 -> table.[r, c]
            |]

        use t = torch.tensor (data, [| int64 rows; int64 cols |])
        t.``to`` device

    /// Rows of a per-residue-type table for each residue. Shapes: table [21, ...], restypes [*, L] -> [*, L, ...]
    let internal rowsOf (table: torch.Tensor) (restypes: torch.Tensor) =
        let rows = table.index_select (0L, restypes.reshape (-1L))
        rows.reshape (Array.append restypes.shape table.shape.[1..])

    /// Checks that restypes is an integer tensor with values 0..20 and returns it as int64.
    let internal checkRestypes (restypes: torch.Tensor) =
        if restypes.is_floating_point () || restypes.dtype = torch.ScalarType.Bool then
            raise (ArgumentException(sprintf "restypes: expected an integer tensor, got %O" restypes.dtype, "restypes"))

        let r = restypes.to_type torch.int64

        if r.numel () > 0L then
            let lo, hi = r.min().ToInt64(), r.max().ToInt64()

            if lo < 0L || hi > 20L then
                raise (
                    ArgumentException(
                        sprintf "restypes: values must be residue-type rows 0..20, got %d..%d" lo hi,
                        "restypes"
                    )
                )

        r

    /// Default frames of every residue type (see `restypeRigidGroupDefaultFrames`). Shapes: -> Frame [21, 8]
    let defaultFrames (dtype: torch.ScalarType) (device: torch.Device) : Frame =
        Frame.ofMatrix4 (tensorOf (flat4 restypeRigidGroupDefaultFrames) [| 21L; 8L; 4L; 4L |] dtype device)
