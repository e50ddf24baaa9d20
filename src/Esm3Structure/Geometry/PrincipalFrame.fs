namespace Esm3Structure.Geometry

open TorchSharp
open Esm3Structure.Tensors

/// The principal-axes frame of a weighted point cloud: origin at the weighted centroid, axes the eigenvectors of the
/// weighted covariance in descending order of variance, the first two signed so that the points' third moment along
/// each is positive and the third their cross product (a proper rotation). Points moved by a proper rigid motion
/// give the same coordinates in their frame (up to rounding, where the variances or third moments are not close to
/// ties), so coordinates in it are SE(3)-invariant features of where a point sits in its cloud.
module PrincipalFrame =

    /// The frame of each cloud. Weights are ≥ 0 (0 leaves a point out); a cloud of total weight 0 gets the identity
    /// rotation at the origin. Shapes: points [*, N, 3], weights [*, N] -> Frame [*]
    let ofPoints (points: torch.Tensor) (weights: torch.Tensor) : Frame =
        Shape.expectTrailing "points" [| 3L |] points

        if weights.dim () <> points.dim () - 1L then
            Shape.mismatch "weights" "[*, N] matching points [*, N, 3]" weights

        use _ = torch.no_grad ()
        let w = weights.to_type(points.dtype).unsqueeze -1L // [*, N, 1]
        let total = w.sum(-2L).clamp_min(1e-12) // [*, 1]
        let centroid = (w * points).sum(-2L) / total // [*, 3]
        let d = points - centroid.unsqueeze -2L // [*, N, 3]
        let covariance = (w * d).transpose(-1L, -2L).matmul(d) / total.unsqueeze -1L // [*, 3, 3]
        let struct (_, vectors) = torch.linalg.eigh covariance // ascending eigenvalues, vectors as columns

        let signed (axis: torch.Tensor) : torch.Tensor = // [*, 3]
            let projection: torch.Tensor = (d * axis.unsqueeze -2L).sum(-1L, true) // [*, N, 1]
            let moment = (w * projection.pow ((3.0).ToScalar())).sum(-2L) // [*, 1]
            axis * (1.0 - 2.0 * moment.lt((0.0).ToScalar()).to_type(points.dtype))

        let first = signed (vectors.select (-1L, 2L))
        let second = signed (vectors.select (-1L, 1L))
        let third = torch.linalg.cross (first, second)
        let r = torch.stack ([| first; second; third |], -1L) // axes as columns

        let empty = weights.to_type(points.dtype).sum(-1L).le((0.0).ToScalar()) // [*]

        let r =
            torch.where (
                empty.unsqueeze(-1L).unsqueeze(-1L),
                Rotation.identity empty.shape points.dtype points.device,
                r
            )

        Frame.create r centroid

    /// Each point's coordinates in its cloud's principal-axes frame (`ofPoints`); points of weight 0 get zeros.
    /// Shapes: points [*, N, 3], weights [*, N] -> [*, N, 3]
    let coordinates (points: torch.Tensor) (weights: torch.Tensor) =
        let frame = ofPoints points weights
        use _ = torch.no_grad ()
        let local = Frame.invertApplyEach frame points
        local.masked_fill (weights.le((0.0).ToScalar()).unsqueeze -1L, (0.0).ToScalar())
