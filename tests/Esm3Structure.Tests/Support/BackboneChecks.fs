namespace Esm3Structure.Tests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Models

/// Checks of decoded backbones against the ideal local geometry the library places (the heads' and the decoder's
/// tests share them).
module BackboneChecks =

    /// sin of the angle between a and c. Shapes: [*, 3] -> [*, 1]
    let sinAngle (a: torch.Tensor) (c: torch.Tensor) =
        torch.linalg.cross(a, c, -1L).norm(-1, true)
        / (a.norm (-1, true) * c.norm (-1, true))

    /// ‖N−CA‖ (Å), ‖CA−C‖ (Å) and ∠N-CA-C (degrees) of the ideal local backbone the library places
    /// (`BackboneHead.idealBackbone`), measured in float64.
    let idealGeometry =
        lazy
            (use bb = BackboneHead.idealBackbone torch.float64 torch.CPU
             let u = bb.[0L] - bb.[1L]
             let v = bb.[2L] - bb.[1L]
             let nu, nv = u.norm().ToDouble(), v.norm().ToDouble()
             let cos = (u * v).sum().ToDouble() / (nu * nv)
             nu, nv, Math.Acos cos * 180.0 / Math.PI)

    /// D2: ‖N−CA‖ = 1.459151 Å, ‖CA−C‖ = 1.5251 Å, ∠N-CA-C = 111.113°, measured on the library's ideal backbone (the
    /// test "ideal backbone" checks those against ESM's BB_COORDINATES). The Gram–Schmidt ε = 1e-10 inside the square
    /// roots shortens the second axis by ε/(2 sin²∠(a, c)), which moves ‖N−CA‖ by ≈ 0.64 ε/sin² Å and the angle by
    /// ≈ 9.6 ε/sin² degrees; the float64 tolerances include that term. Shapes: projection [*, 23], backbone [*, 3, 3]
    let checkIdealGeometry (dtype: torch.ScalarType) (projection: torch.Tensor) (backbone: torch.Tensor) =
        let f64 = dtype = torch.float64
        let eps = Rotation.EsmFrameEps
        let nCa, caC, angle = idealGeometry.Value

        let s =
            (sinAngle (projection.narrow (-1L, 3L, 3L)) (projection.narrow (-1L, 6L, 3L))).squeeze(-1L)

        let illConditioned = eps / (s * s) // [*]
        let tolA, tolDeg = if f64 then 1e-10, 1e-8 else 1e-5, 1e-3

        let n, ca, cc =
            backbone.select (-2L, 0L), backbone.select (-2L, 1L), backbone.select (-2L, 2L)

        let u, v = n - ca, cc - ca
        Tol.within "‖N−CA‖" (u.norm (-1, false) - nCa) (tolA + 0.1 * eps + 0.7 * illConditioned)
        Tol.within "‖CA−C‖" (v.norm (-1, false) - caC) (torch.full_like (s, (tolA + eps).ToScalar()))
        let cos = (u * v).sum(-1L) / (u.norm (-1, false) * v.norm (-1, false))

        let degrees =
            cos.clamp((-1.0).ToScalar(), (1.0).ToScalar()).acos() * (180.0 / Math.PI)

        Tol.within "∠N-CA-C" (degrees - angle) (tolDeg + 20.0 * illConditioned)
