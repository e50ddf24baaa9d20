namespace Esm3Structure.Geometry

open System
open TorchSharp
open Esm3Structure.Tensors

/// A batch of rigid transforms (frames) `x ↦ R x + T`, mapping local coordinates to global ones.
/// `R` [*, 3, 3] has the local axes as columns; `T` [*, 3] is the local origin in global coordinates.
/// Both share batch shape `[*]`, dtype and device. A frame "looks like" a tensor of frames: its shape is `[*]`.
type Frame =
    {
        R: torch.Tensor
        T: torch.Tensor
    }

    /// The batch shape `[*]`.
    member f.Shape = Shape.batchDims 1 f.T
    /// The element type.
    member f.Dtype = f.T.dtype

/// The frames of a backbone and which residues have a real frame (see `Frame.ofBackbone`).
type BackboneFrames =
    {
        /// Frames [*, L]; unframed residues hold the row's "black-hole" frame.
        Frames: Frame
        /// [*, L] bool: true where N, CA and C are all present (and, if asked, not degenerate).
        Mask: torch.Tensor
    }

/// Options of `Frame.ofBackboneWith`.
type BackboneFrameOptions =
    {
        /// Gram–Schmidt ε inside the square root (ESM: 1e-10).
        Eps: float
        /// Coordinates must be below this (ESM: 1e6; ESM tests only the upper bound).
        MaxCoordinate: float
        /// Also mask residues whose N, CA, C are collinear or coincide (ESM does not: it returns a det-0
        /// rotation there and relies on callers). Off in the ESM preset.
        MaskDegenerate: bool
    }

/// Presets of `BackboneFrameOptions`.
module BackboneFrameOptions =

    /// ESM's construction exactly (`build_affine3d_from_coordinates`).
    let esm3 =
        {
            Eps = Rotation.EsmFrameEps
            MaxCoordinate = 1e6
            MaskDegenerate = false
        }

    /// ESM's construction, plus masking of degenerate residues (the safe choice for untrusted input).
    let strict = { esm3 with MaskDegenerate = true }

/// Pure functions over `Frame`s. Conventions and formulas: ESM3-REFERENCE.md §2.1–2.6
/// (evolutionaryscale/esm `esm/utils/structure/affine3d.py`), here in any float dtype (ESM forces float32).
module Frame =

    /// Builds a frame, checking shapes, dtypes and devices. Shapes: r [*, 3, 3], t [*, 3] -> Frame [*]
    let create (r: torch.Tensor) (t: torch.Tensor) =
        Shape.expectTrailing "R" [| 3L; 3L |] r
        Shape.expectTrailing "T" [| 3L |] t

        if Shape.batchDims 2 r <> Shape.batchDims 1 t then
            raise (
                ArgumentException(
                    sprintf "frame: R is %s but T is %s (batch dims differ)" (Shape.show r.shape) (Shape.show t.shape)
                )
            )

        Shape.expectSameKind "R" r "T" t
        { R = r; T = t }

    /// Identity frames. Shapes: batch [*] -> Frame [*]
    let identity (batch: int64[]) (dtype: torch.ScalarType) (device: torch.Device) =
        {
            R = Rotation.identity batch dtype device
            T = torch.zeros (Array.append batch [| 3L |], dtype = dtype, device = device)
        }

    /// `a ∘ b`: apply `b` first, then `a`. `(R₁R₂, R₁t₂ + t₁)`. Shapes: Frame [*] x Frame [*] -> Frame [*]
    /// (batch dims broadcast).
    let compose (a: Frame) (b: Frame) =
        {
            R = a.R.matmul b.R
            T = Rotation.apply a.R b.T + a.T
        }

    /// The inverse `(Rᵀ, −Rᵀt)`. Shapes: Frame [*] -> Frame [*]
    let invert (f: Frame) =
        let rInv = f.R.transpose (-1L, -2L)

        {
            R = rInv.contiguous ()
            T = -(Rotation.apply rInv f.T)
        }

    /// Composition along a chain: P_i = S_0 ∘ S_1 ∘ … ∘ S_i, each step S_i the pose of residue i in residue i−1's
    /// frame (S_0 in the global frame), as an inclusive prefix scan (Hillis–Steele: ⌈log₂ L⌉ rounds of batched
    /// `compose`, each P_i ← P_{i−s} ∘ P_i; valid because composition is associative).
    /// Shapes: steps [*, L] -> Frame [*, L]
    let chain (steps: Frame) : Frame =
        if steps.R.dim () < 3L then
            invalidArg "steps" (sprintf "Frame.chain needs a chain axis: R [*, L, 3, 3], got %A" steps.R.shape)

        let l = steps.R.shape.[int (steps.R.dim ()) - 3]
        let mutable p = steps
        let mutable s = 1L

        while s < l do
            let take (start: int64) (n: int64) (f: Frame) =
                {
                    R = f.R.narrow (-3L, start, n)
                    T = f.T.narrow (-2L, start, n)
                }

            let updated = compose (take 0L (l - s) p) (take s (l - s) p)

            p <-
                {
                    R = torch.cat ([| p.R.narrow (-3L, 0L, s); updated.R |], -3L)
                    T = torch.cat ([| p.T.narrow (-2L, 0L, s); updated.T |], -2L)
                }

            s <- s * 2L

        p

    /// Local to global: `R x + T`. Shapes: f [*], x [*, 3] -> [*, 3] (batch dims broadcast; add singleton axes
    /// to the frame, e.g. `Frame.unsqueeze -1L f`, to apply one frame to several points).
    let apply (f: Frame) (x: torch.Tensor) = Rotation.apply f.R x + f.T

    /// Local to global for N points per frame: `R xₙ + T` for every row of `x`, as one [N, 3] × [3, 3] product per
    /// frame (`Rotation.applyEach`): `apply (unsqueeze -1L f) x` up to rounding order, many times faster for large N.
    /// Shapes: f [*], x [*, N, 3] -> [*, N, 3] (batch dims broadcast)
    let applyEach (f: Frame) (x: torch.Tensor) =
        Rotation.applyEach f.R x + f.T.unsqueeze -2L

    /// Global to local: `Rᵀ (x − T)`. Shapes: f [*], x [*, 3] -> [*, 3]
    let invertApply (f: Frame) (x: torch.Tensor) = Rotation.invertApply f.R (x - f.T)

    /// Global to local for N points per frame: `Rᵀ (xₙ − T)` for every row of `x`, as one [N, 3] × [3, 3] product
    /// per frame (`Rotation.invertApplyEach`); the inverse of `applyEach`.
    /// Shapes: f [*], x [*, N, 3] -> [*, N, 3] (batch dims broadcast)
    let invertApplyEach (f: Frame) (x: torch.Tensor) =
        Rotation.invertApplyEach f.R (x - f.T.unsqueeze -2L)

    /// Rotation only: `R v` (for directions, not points). Shapes: f [*], v [*, 3] -> [*, 3]
    let rotate (f: Frame) (v: torch.Tensor) = Rotation.apply f.R v

    /// Frames where `valid` is false become the identity. (ESM's `Affine3D.mask(m)` takes the opposite boolean:
    /// True there means "replace".) Shapes: valid [*] bool, f [*] -> Frame [*]
    let mask (valid: torch.Tensor) (f: Frame) =
        let identityF = identity f.Shape f.Dtype f.T.device

        {
            R = torch.where (valid.unsqueeze(-1L).unsqueeze(-1L), f.R, identityF.R)
            T = torch.where (valid.unsqueeze (-1L), f.T, identityF.T)
        }

    /// Frames where `valid` is false become all zeros (ESM's "with_zero" variant). Shapes: valid [*], f [*] -> [*]
    let maskZero (valid: torch.Tensor) (f: Frame) =
        {
            R = f.R * valid.unsqueeze(-1L).unsqueeze(-1L).to_type(f.Dtype)
            T = f.T * valid.unsqueeze(-1L).to_type(f.Dtype)
        }

    /// Indexes the batch dims (the trailing 3 / 3×3 are kept). Shapes: Frame [*] -> Frame [*']
    let index (idx: torch.TensorIndex[]) (f: Frame) =
        { R = f.R.index idx; T = f.T.index idx }

    /// Selects index `i` of batch dim `dim` (dim counted among the batch dims; negative from the end).
    /// Shapes: Frame [..., n, ...] -> Frame [..., ...]
    let select (dim: int64) (i: int64) (f: Frame) =
        let d = if dim < 0L then int64 f.Shape.Length + dim else dim

        {
            R = f.R.select (d, i)
            T = f.T.select (d, i)
        }

    /// Inserts a singleton batch dim at `dim` (counted among batch dims; -1 appends a last batch dim).
    /// Shapes: Frame [*] -> Frame [*, 1] (for dim = -1)
    let unsqueeze (dim: int64) (f: Frame) =
        let d = if dim < 0L then int64 f.Shape.Length + dim + 1L else dim

        {
            R = f.R.unsqueeze d
            T = f.T.unsqueeze d
        }

    /// Stacks frames along a new batch dim. Shapes: n x Frame [*] -> Frame [*, n] at `dim` among batch dims.
    let stack (dim: int64) (frames: Frame seq) =
        let fs = Array.ofSeq frames
        let rank = if fs.Length = 0 then 0L else int64 fs.[0].Shape.Length
        let d = if dim < 0L then rank + dim + 1L else dim

        {
            R = torch.stack (fs |> Array.map _.R, d)
            T = torch.stack (fs |> Array.map _.T, d)
        }

    /// Concatenates frames along an existing batch dim. Shapes: Frame [.., nᵢ, ..] -> Frame [.., Σnᵢ, ..]
    let cat (dim: int64) (frames: Frame seq) =
        let fs = Array.ofSeq frames
        let rank = if fs.Length = 0 then 0L else int64 fs.[0].Shape.Length
        let d = if dim < 0L then rank + dim else dim

        {
            R = torch.cat (fs |> Array.map _.R, d)
            T = torch.cat (fs |> Array.map _.T, d)
        }

    /// Converts dtype (and keeps device). Shapes: Frame [*] -> Frame [*]
    let toType (dtype: torch.ScalarType) (f: Frame) =
        {
            R = f.R.to_type dtype
            T = f.T.to_type dtype
        }

    /// Moves to a device. Shapes: Frame [*] -> Frame [*]
    let toDevice (device: torch.Device) (f: Frame) =
        {
            R = f.R.``to`` device
            T = f.T.``to`` device
        }

    /// Detaches both tensors from the autograd graph.
    let detach (f: Frame) =
        { R = f.R.detach (); T = f.T.detach () }

    /// ESM's canonical flat layout: R row-major (9) then T (3). Shapes: Frame [*] -> [*, 12]
    let toTensor12 (f: Frame) =
        torch.cat ([| Shape.flattenLast 2 f.R; f.T |], -1L)

    /// From ESM's 12-float layout. Shapes: [*, 12] -> Frame [*]
    let ofTensor12 (x: torch.Tensor) =
        Shape.expectTrailing "x" [| 12L |] x

        {
            R = Shape.unflattenLast [| 3L; 3L |] (x.narrow (-1L, 0L, 9L))
            T = x.narrow(-1L, 9L, 3L).contiguous()
        }

    /// From a quaternion (w, x, y, z; normalised here) then T, ESM's 7-float layout. Shapes: [*, 7] -> Frame [*]
    let ofTensor7 (x: torch.Tensor) =
        Shape.expectTrailing "x" [| 7L |] x

        {
            R = Quaternion.toMatrix (x.narrow (-1L, 0L, 4L))
            T = x.narrow(-1L, 4L, 3L).contiguous()
        }

    /// To the 7-float layout (unit quaternion with w >= 0, then T). Shapes: Frame [*] -> [*, 7]
    let toTensor7 (f: Frame) =
        torch.cat ([| Quaternion.ofMatrix f.R; f.T |], -1L)

    /// To homogeneous 4×4 matrices. Shapes: Frame [*] -> [*, 4, 4]
    let toMatrix4 (f: Frame) =
        let top = torch.cat ([| f.R; f.T.unsqueeze (-1L) |], -1L) // [*, 3, 4]

        let row =
            torch.tensor ([| 0.0; 0.0; 0.0; 1.0 |], dtype = f.Dtype, device = f.T.device)

        let bottom = row.expand (Array.append f.Shape [| 1L; 4L |])
        torch.cat ([| top; bottom |], -2L)

    /// From homogeneous 4×4 matrices (the last row is ignored). Shapes: [*, 4, 4] -> Frame [*]
    let ofMatrix4 (m: torch.Tensor) =
        Shape.expectTrailing "m" [| 4L; 4L |] m

        {
            R = m.narrow(-2L, 0L, 3L).narrow(-1L, 0L, 3L).contiguous()
            T = m.narrow(-2L, 0L, 3L).select(-1L, 3L).contiguous()
        }

    /// ESM's `from_graham_schmidt(neg_x_axis, origin, xy_plane, eps)`: origin at `origin`, x̂ ∝ origin − negX
    /// (so `negX` lies on the negative x-axis), `xy` in the xy-plane with positive y.
    /// Shapes: negX, origin, xy [*, 3] -> Frame [*]
    let ofGramSchmidt (eps: float) (negX: torch.Tensor) (origin: torch.Tensor) (xy: torch.Tensor) =
        {
            R = Rotation.gramSchmidt eps (origin - negX) (xy - origin)
            T = origin.clone ()
        }

    /// Random frames: uniform rotations and Gaussian translations with standard deviation `sigma` (Å).
    /// Shapes: batch [*] -> Frame [*]
    let random
        (batch: int64[])
        (sigma: float)
        (dtype: torch.ScalarType)
        (device: torch.Device)
        (generator: torch.Generator)
        =
        {
            R = Rotation.random batch dtype device generator
            T =
                sigma
                * torch.randn (Array.append batch [| 3L |], dtype = dtype, device = device, generator = generator)
        }

    /// Backbone frames as ESM builds them (`build_affine3d_from_coordinates`, ESM3-REFERENCE.md §2.5–2.6), in
    /// the input's float dtype:
    /// - residue frame: origin CA, x̂ ∝ CA − C (C on the negative x-axis), N in the xy-plane (positive y);
    /// - a residue is framed when all nine N/CA/C numbers are finite and below `MaxCoordinate`;
    /// - unframed residues get the row's "black-hole" frame, built the same way from the means of framed atoms
    ///   (the identity when a row has no framed residue), so every frame is finite.
    /// Shapes: backbone [*, L, 3 (N, CA, C), 3] (atom37 or atom14 tensors may be passed: only atoms 0–2 are read)
    ///         -> Frames [*, L], Mask [*, L]
    let ofBackboneWith (options: BackboneFrameOptions) (backbone: torch.Tensor) : BackboneFrames =
        Shape.expectTrailing "backbone" [| 3L |] backbone

        if backbone.dim () < 3L || backbone.shape.[backbone.shape.Length - 2] < 3L then
            Shape.mismatch "backbone" "[*, L, 3 (N, CA, C), 3]" backbone

        if not (backbone.is_floating_point ()) then
            raise (ArgumentException(sprintf "backbone: expected a float tensor, got %O" backbone.dtype, "backbone"))

        let bb = backbone.narrow (-2L, 0L, 3L) // [*, L, 3, 3]
        let finite = bb.isfinite().logical_and(bb.lt ((options.MaxCoordinate).ToScalar()))
        let framed0 = finite.flatten(-2L).all(-1L) // [*, L]

        let zeroed =
            torch.where (framed0.unsqueeze(-1L).unsqueeze(-1L), bb, torch.zeros_like bb)

        let atom i = zeroed.select (-2L, int64 (i: int)) // [*, L, 3]
        let n, ca, c = atom 0, atom 1, atom 2
        let residue = ofGramSchmidt options.Eps c ca n // [*, L]

        let framed =
            if options.MaskDegenerate then
                // A proper Gram–Schmidt output has det 1; collinear or coincident atoms give det ≈ 0.
                framed0.logical_and ((torch.linalg.det residue.R).gt((0.5).ToScalar()))
            else
                framed0

        let zeroedFramed =
            torch.where (framed.unsqueeze(-1L).unsqueeze(-1L), bb, torch.zeros_like bb)

        let count = framed.to_type(bb.dtype).sum(-1L, true) // [*, 1]

        let mean i =
            zeroedFramed.select(-2L, int64 (i: int)).sum(-2L) / (count + 1e-8) // [*, 3]

        let hole0 = ofGramSchmidt options.Eps (mean 2) (mean 1) (mean 0) // [*]
        let anyFramed = framed.any (-1L) // [*]
        let eye = Rotation.identity hole0.Shape hole0.Dtype hole0.T.device

        let holeR =
            torch.where(anyFramed.unsqueeze(-1L).unsqueeze(-1L), hole0.R, eye).unsqueeze(-3L) // [*, 1, 3, 3]

        let holeT = hole0.T.unsqueeze (-2L) // [*, 1, 3]

        {
            Frames =
                {
                    R = torch.where (framed.unsqueeze(-1L).unsqueeze(-1L), residue.R, holeR)
                    T = torch.where (framed.unsqueeze (-1L), residue.T, holeT)
                }
            Mask = framed
        }

    /// `ofBackboneWith BackboneFrameOptions.esm3`. Shapes: [*, L, 3, 3] -> Frames [*, L], Mask [*, L]
    let ofBackbone (backbone: torch.Tensor) =
        ofBackboneWith BackboneFrameOptions.esm3 backbone
