namespace Esm3Structure.Geometry

open TorchSharp
open Esm3Structure.Tensors

/// Rotation matrices [*, 3, 3] (columns are the rotated frame's axes) and conversions to and from quaternions,
/// axis-angle vectors and the 6D representation. Pure functions: inputs are never modified or disposed.
module Rotation =

    /// Identity rotations. Shapes: batch [*] -> [*, 3, 3]
    let identity (batch: int64[]) (dtype: torch.ScalarType) (device: torch.Device) =
        torch.eye(3L, dtype = dtype, device = device).expand(Array.append batch [| 3L; 3L |]).contiguous()

    /// Rotates vectors: `R v`. Shapes: r [*, 3, 3], v [*, 3] -> [*, 3] (batch dims broadcast)
    let apply (r: torch.Tensor) (v: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        Shape.expectTrailing "v" [| 3L |] v
        r.matmul(v.unsqueeze (-1L)).squeeze(-1L)

    /// Rotates vectors by the inverse: `Rᵀ v`. Shapes: r [*, 3, 3], v [*, 3] -> [*, 3]
    let invertApply (r: torch.Tensor) (v: torch.Tensor) = apply (r.transpose (-1L, -2L)) v

    /// Rotates N vectors by each rotation: `R v` for every row of `v`, as one [N, 3] × [3, 3] product per
    /// rotation (`v Rᵀ`). The same values as `apply (r.unsqueeze -3) v`, which broadcasts R over the N vectors
    /// and runs one 3 × 3 product per vector: many times slower for large N.
    /// Shapes: r [*, 3, 3], v [*, N, 3] -> [*, N, 3] (batch dims broadcast)
    let applyEach (r: torch.Tensor) (v: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        Shape.expectTrailing "v" [| 3L |] v
        v.matmul (r.transpose (-1L, -2L))

    /// Rotates N vectors by each inverse rotation: `Rᵀ v` for every row of `v` (`v R`; see `applyEach`).
    /// Shapes: r [*, 3, 3], v [*, N, 3] -> [*, N, 3] (batch dims broadcast)
    let invertApplyEach (r: torch.Tensor) (v: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        Shape.expectTrailing "v" [| 3L |] v
        v.matmul r

    /// `a b` (b applied first). Shapes: [*, 3, 3] x [*, 3, 3] -> [*, 3, 3]
    let compose (a: torch.Tensor) (b: torch.Tensor) =
        Shape.expectTrailing "a" [| 3L; 3L |] a
        Shape.expectTrailing "b" [| 3L; 3L |] b
        a.matmul b

    /// The inverse (transpose). Shapes: [*, 3, 3] -> [*, 3, 3]
    let invert (r: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        r.transpose(-1L, -2L).contiguous()

    /// The cross-product (skew-symmetric) matrix `[v]×`, with `[v]× u = v × u`. Shapes: [*, 3] -> [*, 3, 3]
    let skew (v: torch.Tensor) =
        Shape.expectTrailing "v" [| 3L |] v
        let x, y, z = v.select (-1L, 0L), v.select (-1L, 1L), v.select (-1L, 2L)
        let o = torch.zeros_like x
        Shape.unflattenLast [| 3L; 3L |] (torch.stack ([| o; -z; y; z; o; -x; -y; x; o |], -1L))

    /// The rotation of an axis-angle (rotation) vector `θ·axis`, by Rodrigues' formula; exact at θ = 0 and
    /// smooth near it (Taylor series below θ² = 1e-6). Shapes: [*, 3] -> [*, 3, 3]
    let ofAxisAngle (v: torch.Tensor) =
        let theta2 = (v * v).sum(-1L, true).unsqueeze(-1L) // [*, 1, 1]
        let small = theta2.lt ((1e-6).ToScalar())
        let safe2 = torch.where (small, torch.ones_like theta2, theta2)
        let theta = safe2.sqrt ()
        let a = torch.where (small, 1.0 - theta2 / 6.0, theta.sin () / theta)
        let b = torch.where (small, 0.5 - theta2 / 24.0, (1.0 - theta.cos ()) / safe2)
        let k = skew v
        identity (Shape.batchDims 1 v) v.dtype v.device + a * k + b * k.matmul k

    /// The axis-angle vector `θ·axis` with θ in [0, π] (via the quaternion, so stable everywhere).
    /// Shapes: [*, 3, 3] -> [*, 3]
    let toAxisAngle (r: torch.Tensor) =
        let q = Quaternion.ofMatrix r
        let w = q.narrow (-1L, 0L, 1L)
        let xyz = q.narrow (-1L, 1L, 3L)
        let s = xyz.norm (-1, true)
        let theta = 2.0 * torch.atan2 (s, w)
        let small = s.lt ((1e-7).ToScalar())

        let scale =
            torch.where (small, 2.0 / w, theta / torch.where (small, torch.ones_like s, s))

        xyz * scale

    /// ESM's two-vector Gram–Schmidt (`_graham_schmidt`): x̂ = a/sqrt(|a|²+ε); u = b − (x̂·b)x̂;
    /// ê₁ = u/sqrt(|u|²+ε); ê₂ = x̂ × ê₁; R = [x̂ | ê₁ | ê₂] as columns. ε sits inside the square root, so a
    /// degenerate input (b ∥ a, or a = 0) gives finite zero columns (det 0), never NaN; callers mask such frames.
    /// Shapes: a [*, 3], b [*, 3] -> [*, 3, 3]
    let gramSchmidt (eps: float) (a: torch.Tensor) (b: torch.Tensor) =
        Shape.expectTrailing "a" [| 3L |] a
        Shape.expectTrailing "b" [| 3L |] b
        let x = a / ((a * a).sum(-1L, true) + eps).sqrt()
        let u = b - (x * b).sum(-1L, true) * x
        let e1 = u / ((u * u).sum(-1L, true) + eps).sqrt()
        let e2 = torch.linalg.cross (x, e1, -1L)
        torch.stack ([| x; e1; e2 |], -1L)

    /// The Gram–Schmidt ε ESM uses for every frame it builds.
    [<Literal>]
    let EsmFrameEps = 1e-10

    /// The rotation of a 6D representation (Zhou et al. 2019): the first two columns, orthonormalised by
    /// `gramSchmidt`. Shapes: [*, 6] -> [*, 3, 3]
    let ofSixD (eps: float) (v: torch.Tensor) =
        Shape.expectTrailing "v" [| 6L |] v
        gramSchmidt eps (v.narrow (-1L, 0L, 3L)) (v.narrow (-1L, 3L, 3L))

    /// The 6D representation: the first two columns, concatenated. Shapes: [*, 3, 3] -> [*, 6]
    let toSixD (r: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        torch.cat ([| r.select (-1L, 0L); r.select (-1L, 1L) |], -1L)

    /// Uniformly distributed (Haar) random rotations. Shapes: batch [*] -> [*, 3, 3]
    let random (batch: int64[]) (dtype: torch.ScalarType) (device: torch.Device) (generator: torch.Generator) =
        Quaternion.toMatrix (Quaternion.random batch dtype device generator)

    /// The largest deviation from a proper rotation: max(|RᵀR − I|, |det R − 1|) over the whole batch.
    /// Shapes: [*, 3, 3] -> scalar (as a double)
    let properError (r: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r
        let eye = identity (Shape.batchDims 2 r) r.dtype r.device
        let ortho = (r.transpose(-1L, -2L).matmul r - eye).abs().max().ToDouble()
        let det = (torch.linalg.det r - 1.0).abs().max().ToDouble()
        max ortho det
