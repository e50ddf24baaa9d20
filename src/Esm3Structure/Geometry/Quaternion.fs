namespace Esm3Structure.Geometry

open TorchSharp
open Esm3Structure.Tensors

/// Quaternions `q = (w, x, y, z)`, real part first (ESM's and AlphaFold's convention), as tensors [*, 4].
/// Unit quaternions represent rotations; `q` and `-q` give the same rotation (double cover).
/// Source of conventions: ESM3-REFERENCE.md §2.3 (evolutionaryscale/esm `esm/utils/structure/affine3d.py`).
module Quaternion =

    let private part (q: torch.Tensor) (i: int64) = q.select (-1L, i)

    /// Splits into (w, x, y, z) components. Shapes: [*, 4] -> 4 x [*]
    let components (q: torch.Tensor) =
        Shape.expectTrailing "q" [| 4L |] q
        part q 0L, part q 1L, part q 2L, part q 3L

    /// Builds [*, 4] from four [*] components.
    let ofComponents (w: torch.Tensor) (x: torch.Tensor) (y: torch.Tensor) (z: torch.Tensor) =
        torch.stack ([| w; x; y; z |], -1L)

    /// Divides by the norm and flips the sign so that `w >= 0` (ESM's standardisation).
    /// Shapes: [*, 4] -> [*, 4]
    let normalize (q: torch.Tensor) =
        Shape.expectTrailing "q" [| 4L |] q
        let unit = q / q.norm (-1, true)

        let sign =
            torch.where((part unit 0L).lt((0.0).ToScalar()), -1.0, 1.0).unsqueeze(-1L).to_type(q.dtype)

        unit * sign

    /// The Hamilton product `a ⊗ b` (apply b, then a, when used on vectors).
    /// Shapes: [*, 4] x [*, 4] -> [*, 4]
    let multiply (a: torch.Tensor) (b: torch.Tensor) =
        let aw, ax, ay, az = components a
        let bw, bx, by, bz = components b

        ofComponents
            (aw * bw - ax * bx - ay * by - az * bz)
            (aw * bx + ax * bw + ay * bz - az * by)
            (aw * by - ax * bz + ay * bw + az * bx)
            (aw * bz + ax * by - ay * bx + az * bw)

    /// The conjugate `(w, -x, -y, -z)`; the inverse of a unit quaternion. Shapes: [*, 4] -> [*, 4]
    let conjugate (q: torch.Tensor) =
        let w, x, y, z = components q
        ofComponents w (-x) (-y) (-z)

    /// The rotation matrix of `q` (normalised first, so any non-zero quaternion works).
    /// Shapes: [*, 4] -> [*, 3, 3]
    let toMatrix (q: torch.Tensor) =
        let w, x, y, z = components (q / q.norm (-1, true))

        let rows =
            [|
                1.0 - 2.0 * (y * y + z * z)
                2.0 * (x * y - z * w)
                2.0 * (x * z + y * w)
                2.0 * (x * y + z * w)
                1.0 - 2.0 * (x * x + z * z)
                2.0 * (y * z - x * w)
                2.0 * (x * z - y * w)
                2.0 * (y * z + x * w)
                1.0 - 2.0 * (x * x + y * y)
            |]

        Shape.unflattenLast [| 3L; 3L |] (torch.stack (rows, -1L))

    /// sqrt(max(x, 0)) whose gradient is 0 (not NaN) where x <= 0.
    let private sqrtPositive (x: torch.Tensor) =
        let positive = x.gt ((0.0).ToScalar())
        torch.where (positive, torch.where(positive, x, torch.ones_like x).sqrt(), torch.zeros_like x)

    /// The unit quaternion (w >= 0) of a rotation matrix. Numerically stable for every rotation: of four
    /// candidate formulas (from 1 ± R00 ± R11 ± R22) the one with the largest magnitude is kept, each divided by
    /// 2·max(|q_i|, 0.1), as ESM's `affine3d.py` does (the method of PyTorch3D's `matrix_to_quaternion`).
    /// Shapes: [*, 3, 3] -> [*, 4]
    let ofMatrix (r: torch.Tensor) =
        Shape.expectTrailing "r" [| 3L; 3L |] r

        let m i j =
            r.select(-2L, int64 i).select(-1L, int64 (j: int))

        let m00, m01, m02 = m 0 0, m 0 1, m 0 2
        let m10, m11, m12 = m 1 0, m 1 1, m 1 2
        let m20, m21, m22 = m 2 0, m 2 1, m 2 2

        let qAbs =
            sqrtPositive (
                torch.stack (
                    [|
                        1.0 + m00 + m11 + m22
                        1.0 + m00 - m11 - m22
                        1.0 - m00 + m11 - m22
                        1.0 - m00 - m11 + m22
                    |],
                    -1L
                )
            ) // [*, 4]

        let qa i = qAbs.select (-1L, int64 (i: int))

        let candidates =
            torch.stack (
                [|
                    ofComponents (qa 0 * qa 0) (m21 - m12) (m02 - m20) (m10 - m01)
                    ofComponents (m21 - m12) (qa 1 * qa 1) (m10 + m01) (m02 + m20)
                    ofComponents (m02 - m20) (m10 + m01) (qa 2 * qa 2) (m12 + m21)
                    ofComponents (m10 - m01) (m20 + m02) (m21 + m12) (qa 3 * qa 3)
                |],
                -2L
            ) // [*, 4 candidates, 4]

        let floor = torch.full_like (qAbs, 0.1)
        let scaled = candidates / (2.0 * torch.maximum (qAbs, floor)).unsqueeze(-1L)

        let best =
            qAbs.argmax(-1L, true).unsqueeze(-1L).expand(Array.append (Shape.batchDims 1 qAbs) [| 1L; 4L |])

        normalize (scaled.gather(-2L, best).squeeze(-2L))

    /// Rotates vectors: `q v q*`. Shapes: q [*, 4], v [*, 3] -> [*, 3]
    let rotate (q: torch.Tensor) (v: torch.Tensor) =
        Shape.expectTrailing "v" [| 3L |] v
        let unit = q / q.norm (-1, true)
        let asQuat = torch.cat ([| torch.zeros_like (v.narrow (-1L, 0L, 1L)); v |], -1L)
        (multiply (multiply unit asQuat) (conjugate unit)).narrow(-1L, 1L, 3L)

    /// Uniformly distributed (Haar) random unit quaternions with w >= 0: four Gaussians, normalised.
    /// Shapes: batch [*] -> [*, 4]
    let random (batch: int64[]) (dtype: torch.ScalarType) (device: torch.Device) (generator: torch.Generator) =
        let q =
            torch.randn (Array.append batch [| 4L |], dtype = dtype, device = device, generator = generator)

        normalize q
