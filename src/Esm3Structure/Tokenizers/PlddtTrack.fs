namespace Esm3Structure.Tokenizers

open TorchSharp
open Esm3Structure

/// ESM3's two pLDDT conditioning tracks (evolutionaryscale/esm `esm/models/esm3.py`, `rbf` in `esm/utils/misc.py`;
/// ESM3-REFERENCE.md §8.7, §9.1–9.2): an average pLDDT per protein and a per-residue pLDDT, both on [0, 1]
/// (pLDDT / 100), each expanded by a 16-centre radial basis before its `Linear(16, d)`.
module PlddtTrack =

    /// `forward()`'s average pLDDT when the track is absent (and what ESM's inference wrapper always passes).
    [<Literal>]
    let DefaultAverage = 1.0

    /// `forward()`'s per-residue pLDDT when the track is absent.
    [<Literal>]
    let DefaultPerResidue = 0.0

    /// Number of RBF centres.
    [<Literal>]
    let RbfCount = 16

    /// RBF width: (1 − 0) / 16 (ESM divides the range by the number of bins, not by bins − 1).
    [<Literal>]
    let RbfWidth = 0.0625

    /// ESM's `rbf(v, 0, 1, 16)`: `exp(−((v − c_k) / (1/16))²)` for the centres `c_k = k / 15`, k = 0 … 15, in the
    /// dtype and on the device of `values`.
    /// Shapes: values [*] -> [*, 16]
    let rbf (values: torch.Tensor) : torch.Tensor =
        use centres =
            torch.linspace (0.0, 1.0, int64 RbfCount, dtype = values.dtype, device = values.device)

        use v = values.unsqueeze -1L
        use width = RbfWidth.ToScalar()
        use d = v - centres
        use z = d.div width
        use z2 = z * z
        use neg = -z2
        neg.exp ()

    /// The per-residue pLDDT ESM's inference wrapper derives from coordinates: 1 where the residue has at least one
    /// atom whose three coordinates are all finite, else 0, in float32.
    /// Shapes: coordinates [*, L, A, 3] -> [*, L]
    let perResidueFromCoordinates (coordinates: torch.Tensor) : torch.Tensor =
        Tensors.Shape.expectTrailing "coordinates" [| 3L |] coordinates

        if coordinates.dim () < 3L then
            Tensors.Shape.mismatch "coordinates" "[*, L, A, 3]" coordinates

        use finite = coordinates.isfinite ()
        use atomOk = finite.all (-1L)
        use residueOk = atomOk.any (-1L)
        residueOk.to_type torch.float32

    /// The per-residue track when absent: `length` × 0.0 (float32), as `forward()` defaults it.
    /// Shapes: -> [L]
    let defaultPerResidue (length: int64) : torch.Tensor =
        use value = DefaultPerResidue.ToScalar()
        torch.full ([| length |], value, dtype = torch.float32)

    /// The average track when absent: a float32 scalar 1.0 (broadcast to [B, L] by the model).
    /// Shapes: -> []
    let defaultAverage () : torch.Tensor =
        torch.tensor (DefaultAverage, dtype = torch.float32)
