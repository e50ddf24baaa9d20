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
    /// roots, to first order, shortens x̂ by ε/2 and ê₁ by ε/(2 sin²∠(a, c)), and tilts ê₁ towards x̂ by cos·ε/sin
    /// (x̂·ũ = (x̂·b)(1 − |x̂|²)); with N = 0.5256 x̂ + 1.3612 ê₁ that moves ‖N−CA‖ by
    /// (−0.276 ε − 1.853 ε/sin² + 1.431 cos ε/sin)/(2·1.459) Å and the angle by (0.168 ε − 0.168 ε/sin² − 0.870 cos ε/sin)
    /// radians (1.853/2.129 = 0.870), both bounded below in absolute value with coefficients rounded up; ‖CA−C‖ =
    /// 1.5251 |x̂| moves by 0.76 ε. Second-order terms are (ε/sin²)² relative: negligible. Rounding adds to these (see
    /// below). Shapes: projection [*, 23], backbone [*, 3, 3]
    let checkIdealGeometry (dtype: torch.ScalarType) (projection: torch.Tensor) (backbone: torch.Tensor) =
        let eps = Rotation.EsmFrameEps
        let nCa, caC, angle = idealGeometry.Value

        let p64 = projection.to_type torch.float64

        let s =
            (sinAngle (p64.narrow (-1L, 3L, 3L)) (p64.narrow (-1L, 6L, 3L))).squeeze(-1L)

        let illConditioned = eps / (s * s) // [*]
        let a64, c64 = p64.narrow (-1L, 3L, 3L), p64.narrow (-1L, 6L, 3L)
        let cosAc = (a64 * c64).sum(-1L) / (a64.norm (-1, false) * c64.norm (-1, false))
        let tilt = eps * cosAc.abs () / s // [*]: ê₁'s tilt towards x̂
        // Rounding, derived per residue (u the unit roundoff; T = max |t| = 10·max |p[0:3]| Å). Bond lengths and
        // angles depend only on how far R is from orthonormal, not on which rotation it is: the Gram–Schmidt
        // rotation's entries lie within g = (56/sin∠(a, c) + 18)·u of a rotation (Geometry/RotationTests' count), so
        // R x is within 3g·|x| (2-norm) of a rotated x. Placing an atom rounds R·BB (≤ 2 products and 1 sum on
        // |BB| ≤ 1.46: 3u·1.46) and + t (u·(T + 1.46)), and CA = t exactly, so the bond N − CA differs from R·BB_N
        // by ≤ u·(T + 1.5) + u·1.5 + 4.5u per entry, ≤ √3u·(T + 7.5) in 2-norm. CA − C = −1.5251·x̂ is the first
        // column alone: x̂'s norm is 1 ± 4u (≤ 6u on 1.53 Å) and its placement rounds √3u·(T + 4.6). Each norm rounds
        // 3u on ≤ 1.53 (4.6u), and the ideal coordinates' cast to the dtype moves them by ≤ 1.5u. The angle moves
        // by ≤ |δu|/|u| + |δv|/|v| radians, and cos = u·v/(|u||v|) rounds ~8u, through acos at 111° (÷ sin ≈ 0.93),
        // plus ~2u for the cast: 12u.
        let u = Tol.unitRoundoff dtype

        let tMax =
            p64.narrow(-1L, 0L, 3L).abs().amax([| -1L |]) * BackboneHead.TranslationScale // [*]

        let g = (56.0 / s + 18.0) * u
        let dU = sqrt 3.0 * u * (tMax + 7.5) + 3.0 * g * 1.46
        let dV = sqrt 3.0 * u * (tMax + 4.6) + 3.0 * g * 1.53
        let tolA = dU + 6.0 * u
        let tolC = sqrt 3.0 * u * (tMax + 4.6) + 12.2 * u
        let tolDeg = (dU / 1.45 + dV / 1.52 + 12.0 * u) * (180.0 / Math.PI)

        let n, ca, cc =
            backbone.select (-2L, 0L), backbone.select (-2L, 1L), backbone.select (-2L, 2L)

        let u, v = n - ca, cc - ca

        Tol.within
            (sprintf "‖N−CA‖ (%O)" dtype)
            (u.norm (-1, false) - nCa)
            (tolA + 0.1 * eps + 0.65 * illConditioned + 0.5 * tilt)

        Tol.within (sprintf "‖CA−C‖ (%O)" dtype) (v.norm (-1, false) - caC) (tolC + 0.8 * eps)
        let cos = (u * v).sum(-1L) / (u.norm (-1, false) * v.norm (-1, false))

        let degrees =
            cos.clamp((-1.0).ToScalar(), (1.0).ToScalar()).acos() * (180.0 / Math.PI)

        Tol.within
            (sprintf "∠N-CA-C (%O)" dtype)
            (degrees - angle)
            (tolDeg + (0.17 * eps + 0.17 * illConditioned + 0.88 * tilt) * (180.0 / Math.PI))
