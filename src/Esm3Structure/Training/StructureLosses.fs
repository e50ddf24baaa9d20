namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Tensors

/// The structure tokenizer's training losses (ESM3-TRAINING.md §1.3–1.4) as pure functions. Every loss takes a
/// residue mask (true = the residue is real and its N, CA, C are resolved), averages over the entries the mask
/// allows, and returns a scalar (0 when nothing is allowed). Coordinates of masked residues may be NaN: they are
/// zeroed before use, so they never reach a gradient. Backbones are [B, L, 3 (N, CA, C), 3].
module StructureLosses =

    /// Clamp of the squared distance error (ESM3 Alg. 10: (5 Å)²).
    [<Literal>]
    let DistanceClamp = 25.0

    /// Clamp of the squared Gram-matrix error (ESM3 Alg. 11).
    [<Literal>]
    let DirectionClamp = 20.0

    /// Bins per direction dot product (16 equal bins on [−1, 1]).
    [<Literal>]
    let DirectionBinCount = 16L

    /// Dot-product channels of the binned direction loss (the six ordered cross pairs u_a(i)·u_b(j), a ≠ b).
    [<Literal>]
    let DirectionPairs = 6L

    /// Distogram classes.
    [<Literal>]
    let DistogramBinCount = 64L

    /// The distogram's first edge (Å) and step (Å): edges 2.3125 + 0.3125·k, k = 0 … 62, last 21.6875
    /// (ESM3-TRAINING.md §1.7 #2: the printed step 0.3075 cannot reach the printed last edge).
    let DistogramFirstEdge, DistogramStep = 2.3125, 0.3125

    /// pLDDT classes (bin width 0.02 on [0, 1]).
    [<Literal>]
    let PlddtBinCount = 50L

    /// pAE classes (bins 0.5 Å wide; the last one open).
    [<Literal>]
    let PaeBinCount = 64L

    /// Maximum C_i → N_{i+1} distance (Å) of a peptide bond in the target: longer links are chain breaks, and the
    /// direction vectors that need the neighbour are dropped.
    [<Literal>]
    let PeptideBondMax = 2.0

    let private checkBackbone (name: string) (x: torch.Tensor) =
        if x.dim () <> 4L || x.shape.[2] <> 3L || x.shape.[3] <> 3L then
            Shape.mismatch name "[B, L, 3 (N, CA, C), 3]" x

    let private checkMask (x: torch.Tensor) (mask: torch.Tensor) =
        Shape.expect "mask" [| x.shape.[0]; x.shape.[1] |] mask

    /// Mean of `values` over the entries where `allowed` is true; 0 when none is. Shapes: [*], [*] bool -> scalar
    let maskedMean (values: torch.Tensor) (allowed: torch.Tensor) =
        let w = allowed.to_type values.dtype
        (values * w).sum() / w.sum().clamp_min(1.0)

    /// Pair mask of a residue (or point) mask. Shapes: [B, N] bool -> [B, N, N] bool
    let pairMask (mask: torch.Tensor) =
        mask.unsqueeze(-1L).logical_and(mask.unsqueeze -2L)

    /// Cross-entropy of logits against integer labels, averaged where `allowed` is true.
    /// Shapes: logits [*, K], labels [*] int64, allowed [*] bool -> scalar
    let maskedCrossEntropy (logits: torch.Tensor) (labels: torch.Tensor) (allowed: torch.Tensor) =
        let k = logits.shape.[logits.shape.Length - 1]

        let nll =
            torch.nn.functional.cross_entropy (
                logits.reshape (-1L, k),
                labels.reshape(-1L).clamp((0L).ToScalar(), (k - 1L).ToScalar()),
                reduction = torch.nn.Reduction.None
            )

        maskedMean nll (allowed.reshape -1L)

    let private clean (x: torch.Tensor) = x.nan_to_num (0.0, 0.0, 0.0)

    /// Squared distances between every two points of each row. Shapes: [B, N, 3] -> [B, N, N]
    let private squaredPairDistances (p: torch.Tensor) =
        (p.unsqueeze -2L - p.unsqueeze -3L).square().sum(-1L)

    /// A squared error e² limited at `clamp` c: min(e², c) (ESM's; no gradient beyond c), or with `linear` the
    /// Huber form e² up to c and 2√c·|e| − c beyond, which has the same value and slope at c and a constant slope
    /// 2√c after it, so that pairs far off keep pulling. Shapes: [*] -> [*]
    let limitError (linear: bool) (clamp: float) (squaredError: torch.Tensor) =
        if linear then
            // sqrt of max(e², c): the branch torch.where discards stays finite, and so does its gradient.
            let beyond = squaredError.clamp_min(clamp).sqrt() * (2.0 * sqrt clamp) - clamp
            torch.where (squaredError.le (clamp.ToScalar()), squaredError, beyond)
        else
            squaredError.clamp_max clamp

    /// Backbone distance loss (ESM3 Alg. 10): over all pairs of the 3L backbone atoms of allowed residues,
    /// mean min((D̂ − D)², 25). `squared` compares squared distances, as Algorithm 10 prints (§1.7 #1; the
    /// default, false, compares plain distances); `linear` limits errors beyond the clamp as `limitError` does
    /// (default false: ESM's clamp). Shapes: predicted, target [B, L, 3, 3], mask [B, L] bool -> scalar
    let backboneDistanceWith
        (squared: bool)
        (linear: bool)
        (predicted: torch.Tensor)
        (target: torch.Tensor)
        (mask: torch.Tensor)
        =
        checkBackbone "predicted" predicted
        checkBackbone "target" target
        Shape.expect "target" predicted.shape target
        checkMask predicted mask
        let b = predicted.shape.[0]

        let distances (x: torch.Tensor) =
            let d2 = squaredPairDistances ((clean x).reshape(b, -1L, 3L)) // [B, 3L, 3L]
            // Equal pairs get distance 0 in both structures; the floor keeps sqrt's gradient finite there.
            if squared then d2 else (d2 + 1e-10).sqrt()

        let error =
            (distances predicted - distances (target.detach ())).square()
            |> limitError linear DistanceClamp

        let points = mask.unsqueeze(-1L).expand(-1L, -1L, 3L).reshape(b, -1L)
        maskedMean error (pairMask points)

    /// `backboneDistanceWith false false`: ESM's loss on plain distances.
    /// Shapes: predicted, target [B, L, 3, 3], mask [B, L] -> scalar
    let backboneDistance (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        backboneDistanceWith false false predicted target mask

    /// FAPE's clamp (Å) and length scale Z (AlphaFold2 supplement §1.9.2: d_clamp = Z = 10 Å).
    [<Literal>]
    let FapeClamp = 10.0

    /// The fraction of each batch's FAPE left unclamped (AlphaFold2 supplement §1.11.5: 10 % of batches unclamped;
    /// here the same expectation as a fixed 0.9 · clamped + 0.1 · unclamped mixture, so every step sees it).
    [<Literal>]
    let FapeUnclampedFraction = 0.1

    /// ε (Å²) inside FAPE's square root (AlphaFold2 Alg. 28).
    [<Literal>]
    let FapeEps = 1e-4

    /// Backbone frame-aligned point error (AlphaFold2 Alg. 28) over the N, CA, C atoms: every allowed residue's
    /// frame (origin CA, built from N, CA, C by `Frame.ofBackbone`) expresses every allowed atom in local
    /// coordinates in both structures; the error is sqrt(‖x̂ − x‖² + ε), averaged with each pair's error clamped at
    /// `clamp` (weight 1 − `unclampedFraction`) and unclamped (weight `unclampedFraction`), divided by Z = 10 Å.
    /// Invariant to a rigid motion of either structure; unlike the clamped pairwise losses it keeps a gradient for
    /// large errors through its unclamped part. Shapes: predicted, target [B, L, 3, 3], mask [B, L] bool -> scalar
    let backboneFapeWith
        (clamp: float)
        (unclampedFraction: float)
        (predicted: torch.Tensor)
        (target: torch.Tensor)
        (mask: torch.Tensor)
        =
        checkBackbone "predicted" predicted
        Shape.expect "target" predicted.shape target
        checkMask predicted mask
        let b = predicted.shape.[0]

        let local (x: torch.Tensor) =
            let x = clean x
            let frames = (Frame.ofBackbone x).Frames
            let points = x.reshape (b, -1L, 3L) // [B, 3L, 3]
            // Frame i's view of atom j: R_iᵀ (x_j − t_i). [B, L, 3L, 3]
            Frame.invertApplyEach frames (points.unsqueeze 1L)

        let error =
            ((local predicted - local (target.detach ())).square().sum(-1L) + FapeEps).sqrt() // [B, L, 3L]

        let points = mask.unsqueeze(-1L).expand(-1L, -1L, 3L).reshape(b, -1L)
        let allowed = mask.unsqueeze(-1L).logical_and(points.unsqueeze 1L)

        let clamped = maskedMean (error.clamp_max clamp) allowed
        let unclamped = maskedMean error allowed

        (clamped * (1.0 - unclampedFraction) + unclamped * unclampedFraction)
        / FapeClamp

    /// `backboneFapeWith FapeClamp FapeUnclampedFraction`. Shapes: predicted, target [B, L, 3, 3], mask [B, L] -> scalar
    let backboneFape (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        backboneFapeWith FapeClamp FapeUnclampedFraction predicted target mask

    /// Local CA distance loss, the surrogate of LDDT-CA: over ordered pairs i ≠ j of allowed residues whose target
    /// CA atoms lie within `radius` (LDDT's inclusion radius, 15 Å: `LddtConfig.esm`, judged on the target as LDDT
    /// is), the mean absolute CA–CA distance error √((D̂ − D)² + ε) in Å. Unlike ESM's distance loss it neither
    /// clamps nor lets the L² long-range pairs outnumber a residue's few neighbours, so it pulls on exactly the
    /// distances LDDT-CA counts. Not one of ESM's terms. Shapes: predicted, target [B, L, 3, 3], mask [B, L] ->
    /// scalar
    let localCaDistance (radius: float) (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        checkBackbone "predicted" predicted
        Shape.expect "target" predicted.shape target
        checkMask predicted mask

        let distances (x: torch.Tensor) =
            (squaredPairDistances ((clean x).select(2L, 1L)) + 1e-10).sqrt() // [B, L, L]

        let truth = distances (target.detach ())
        let l = predicted.shape.[1]

        let offDiagonal =
            torch.eye(l, dtype = torch.ScalarType.Bool, device = predicted.device).logical_not()

        let allowed =
            (pairMask mask).logical_and(truth.lt (radius.ToScalar())).logical_and(offDiagonal)

        let error = ((distances predicted - truth).square() + FapeEps).sqrt()
        maskedMean error allowed

    /// Links i → i+1 that are real peptide bonds: both residues allowed and the target's C_i–N_{i+1} distance at
    /// most `PeptideBondMax`. The last residue has no link. Shapes: target [B, L, 3, 3], mask [B, L] -> [B, L] bool
    let bonded (target: torch.Tensor) (mask: torch.Tensor) =
        checkBackbone "target" target
        checkMask target mask
        let l = target.shape.[1]
        let t = clean target

        if l < 2L then
            torch.zeros_like mask
        else
            let c = t.select(2L, 2L).narrow(1L, 0L, l - 1L)
            let nNext = t.select(2L, 0L).narrow(1L, 1L, l - 1L)
            let close = (nNext - c).norm(-1, false).le(PeptideBondMax.ToScalar())

            let both =
                mask.narrow(1L, 0L, l - 1L).logical_and(mask.narrow (1L, 1L, l - 1L)).logical_and close

            torch.cat ([| both; torch.zeros_like (mask.narrow (1L, 0L, 1L)) |], 1L)

    /// Classes of the CA virtual bond angle in `localShapeLabels`: 10° bins from 70° to 160°, the ends open.
    [<Literal>]
    let LocalShapeAngleBins = 9L

    /// Classes of the CA virtual torsion in `localShapeLabels`: 15° bins over (−180°, 180°].
    [<Literal>]
    let LocalShapeTorsionBins = 24L

    /// The local shape of the CA trace at each residue i, as classes: the virtual bond angle CA(i−1)–CA(i)–CA(i+1)
    /// (`LocalShapeAngleBins`) and the virtual torsion CA(i−1)–CA(i)–CA(i+1)–CA(i+2) (`LocalShapeTorsionBins`),
    /// defined where the links i−1 → i, i → i+1 and i+1 → i+2 are peptide bonds (`bonded`). The two numbers that
    /// fix a CA trace up to a rigid motion given its 3.8 Å steps. Classes are 0 where not allowed.
    /// Shapes: target [B, L, 3, 3], mask [B, L] -> angle [B, L] int64, torsion [B, L] int64, allowed [B, L] bool
    let localShapeLabels (target: torch.Tensor) (mask: torch.Tensor) =
        let links = bonded target mask // [B, L]: i → i+1
        let l = target.shape.[1]
        use _ = torch.no_grad ()
        let ca = (clean target).select(2L, 1L).to_type torch.float64 // [B, L, 3]

        let shifted (x: torch.Tensor) (by: int64) =
            // Row i holds x_{i+by}; zeros (or false) past the ends.
            let pad = torch.zeros_like (x.narrow (1L, 0L, 1L))

            if l <= abs by then
                torch.zeros_like x
            elif by > 0L then
                torch.cat ([| x.narrow (1L, by, l - by); yield! Array.create (int by) pad |], 1L)
            else
                torch.cat ([| yield! Array.create (int -by) pad; x.narrow (1L, 0L, l + by) |], 1L)

        let allowed = (shifted links -1L).logical_and(links).logical_and(shifted links 1L)

        let previous, next, after = shifted ca -1L, shifted ca 1L, shifted ca 2L
        let u = previous - ca
        let v = next - ca

        let cosine =
            (u * v).sum(-1L) / (u.norm (-1, false) * v.norm (-1, false)).clamp_min(1e-8)

        let angle =
            cosine.clamp((-1.0).ToScalar(), (1.0).ToScalar()).acos() * (180.0 / Math.PI)

        let b1, b2, b3 = ca - previous, next - ca, after - next
        let n1 = torch.linalg.cross (b1, b2)
        let n2 = torch.linalg.cross (b2, b3)
        // IUPAC's sign (Blondel & Karplus 1996): atan2(|b2| b1 · n2, n1 · n2); an α-helix's CA torsion is about +50°.
        let torsion =
            torch.atan2 (b2.norm (-1, false) * (b1 * n2).sum(-1L), (n1 * n2).sum(-1L))
            * (180.0 / Math.PI)

        let angleBin =
            ((angle - 70.0) / 10.0)
                .floor()
                .clamp((0.0).ToScalar(), (float (LocalShapeAngleBins - 1L)).ToScalar())
                .to_type
                torch.int64

        let torsionBin =
            ((torsion + 180.0) / 15.0)
                .floor()
                .clamp((0.0).ToScalar(), (float (LocalShapeTorsionBins - 1L)).ToScalar())
                .to_type
                torch.int64

        let off = allowed.logical_not ()
        angleBin.masked_fill (off, 0L), torsionBin.masked_fill (off, 0L), allowed

    /// Cross-entropy of per-residue logits against `localShapeLabels`: the angle's classes first, then the
    /// torsion's, each averaged over the allowed residues, summed. Not one of ESM's terms: with it on a token's
    /// vector (`TokenizerLossWeights.LocalShape`), the codes must tell local shapes apart, not only positions.
    /// Shapes: logits [B, L, LocalShapeAngleBins + LocalShapeTorsionBins], target [B, L, 3, 3], mask [B, L] -> scalar
    let localShape (logits: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        checkBackbone "target" target
        checkMask target mask

        Shape.expect
            "logits"
            [|
                target.shape.[0]
                target.shape.[1]
                LocalShapeAngleBins + LocalShapeTorsionBins
            |]
            logits

        let angle, torsion, allowed = localShapeLabels target mask

        maskedCrossEntropy (logits.narrow (-1L, 0L, LocalShapeAngleBins)) angle allowed
        + maskedCrossEntropy (logits.narrow (-1L, LocalShapeAngleBins, LocalShapeTorsionBins)) torsion allowed

    /// The six direction vectors of ESM3 Alg. 11 per residue and whether each exists: v1 = CA − N, v2 = C − CA,
    /// v3 = N_{i+1} − C_i, v4 = −(v1 × v2), v5 = (N_i − C_{i−1}) × v1, v6 = v2 × v3. v3 and v6 need the link
    /// i → i+1, v5 the link i−1 → i (see `bonded`, judged on the target so that both structures drop the same
    /// vectors). Shapes: x [B, L, 3, 3], mask [B, L], links [B, L] bool -> vectors [B, 6L, 3], valid [B, 6L] bool
    let directionVectors (x: torch.Tensor) (mask: torch.Tensor) (links: torch.Tensor) =
        checkBackbone "backbone" x
        let b, l = x.shape.[0], x.shape.[1]
        let x = clean x
        let n, ca, c = x.select (2L, 0L), x.select (2L, 1L), x.select (2L, 2L)

        let shift (v: torch.Tensor) (by: int64) =
            // by = 1: row i holds v_{i+1}; by = −1: row i holds v_{i−1}; zeros past the ends.
            let zero = torch.zeros_like (v.narrow (1L, 0L, 1L))

            if l < 2L then
                torch.zeros_like v
            elif by > 0L then
                torch.cat ([| v.narrow (1L, 1L, l - 1L); zero |], 1L)
            else
                torch.cat ([| zero; v.narrow (1L, 0L, l - 1L) |], 1L)

        let v1 = ca - n
        let v2 = c - ca
        let v3 = shift n 1L - c
        let v4 = -(torch.linalg.cross (v1, v2))
        let v5 = torch.linalg.cross (n - shift c -1L, v1)
        let v6 = torch.linalg.cross (v2, v3)
        let next = links
        let previous = (shift (links.to_type torch.int64) -1L).to_type torch.ScalarType.Bool
        let vectors = torch.stack([| v1; v2; v3; v4; v5; v6 |], 2L).reshape(b, 6L * l, 3L)

        let valid =
            torch.stack([| mask; mask; next; mask; previous; next |], 2L).reshape(b, 6L * l)

        vectors, valid

    /// Backbone direction loss (ESM3 Alg. 11): G = V Vᵀ of the six vectors per residue; mean min((Ĝ − G)², 20)
    /// over pairs of vectors that exist in the target (chain ends and breaks drop v3, v5, v6 as §1.3 says); `linear`
    /// limits errors beyond the clamp as `limitError` does (default false: ESM's clamp).
    /// Shapes: predicted, target [B, L, 3, 3], mask [B, L] bool -> scalar
    let backboneDirectionWith (linear: bool) (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        checkBackbone "predicted" predicted
        Shape.expect "target" predicted.shape target
        checkMask predicted mask
        let target = target.detach ()
        let links = bonded target mask
        let vHat, valid = directionVectors predicted mask links
        let v, _ = directionVectors target mask links
        let gHat = vHat.matmul (vHat.transpose (-1L, -2L))
        let g = v.matmul (v.transpose (-1L, -2L))
        maskedMean ((gHat - g).square() |> limitError linear DirectionClamp) (pairMask valid)

    /// `backboneDirectionWith false`: ESM's loss. Shapes: predicted, target [B, L, 3, 3], mask [B, L] -> scalar
    let backboneDirection (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        backboneDirectionWith false predicted target mask

    /// Unit vectors u1 = CA→C, u2 = CA→N, u3 = normalise(u1 × u2) of each residue.
    /// Shapes: backbone [B, L, 3, 3] -> [B, L, 3 (u1, u2, u3), 3]
    let unitFrames (backbone: torch.Tensor) =
        let x = clean backbone
        let n, ca, c = x.select (2L, 0L), x.select (2L, 1L), x.select (2L, 2L)

        let unit (v: torch.Tensor) = v / v.norm(-1, true).clamp_min(1e-8)

        let u1 = unit (c - ca)
        let u2 = unit (n - ca)
        let u3 = unit (torch.linalg.cross (u1, u2))
        torch.stack ([| u1; u2; u3 |], 2L)

    /// Ordered (a, b) index pairs of the six direction channels: (u1,u2), (u1,u3), (u2,u1), (u2,u3), (u3,u1), (u3,u2).
    let directionChannels = [| 0, 1; 0, 2; 1, 0; 1, 2; 2, 0; 2, 1 |]

    /// Labels of the binned direction loss: channel c = (a, b) of pair (i, j) is u_a(i)·u_b(j) binned into 16
    /// equal bins on [−1, 1]. Shapes: target [B, L, 3, 3] -> [B, L, L, 6] int64
    let directionLabels (target: torch.Tensor) =
        checkBackbone "target" target
        use _ = torch.no_grad ()
        let u = unitFrames target // [B, L, 3, 3]

        let channels =
            directionChannels
            |> Array.map (fun (a, b) ->
                let ui = u.select (2L, int64 a) // [B, L, 3]
                let uj = u.select (2L, int64 b)
                ui.matmul (uj.transpose (-1L, -2L))) // [B, L, L]

        let dots = torch.stack (channels, -1L)
        let width = 2.0 / float DirectionBinCount

        ((dots + 1.0) / width).floor().clamp((0.0).ToScalar(), (float (DirectionBinCount - 1L)).ToScalar()).to_type
            torch.int64

    /// Binned direction classification (bootstrap term of §1.3 #3). Logits are the decoder's 96 direction
    /// channels read as [6 pairs, 16 bins]. Shapes: logits [B, L, L, 96], target [B, L, 3, 3], mask [B, L] -> scalar
    let binnedDirection (logits: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        let b, l = target.shape.[0], target.shape.[1]
        Shape.expect "logits" [| b; l; l; DirectionPairs * DirectionBinCount |] logits
        checkMask target mask
        let labels = directionLabels target
        let logits = logits.reshape (b, l, l, DirectionPairs, DirectionBinCount)
        let allowed = (pairMask mask).unsqueeze(-1L).expand(-1L, -1L, -1L, DirectionPairs)
        maskedCrossEntropy logits labels allowed

    /// ESM's virtual Cβ from N, CA, C: b = CA − N, c = C − CA, a = b × c,
    /// Cβ = −0.58273431·a + 0.56802827·b − 0.54067466·c + CA. Shapes: backbone [*, 3, 3] -> [*, 3]
    let virtualCb (backbone: torch.Tensor) =
        Shape.expectTrailing "backbone" [| 3L; 3L |] backbone

        let n, ca, c =
            backbone.select (-2L, 0L), backbone.select (-2L, 1L), backbone.select (-2L, 2L)

        let bv = ca - n
        let cv = c - ca
        let av = torch.linalg.cross (bv, cv)
        av * -0.58273431 + bv * 0.56802827 - cv * 0.54067466 + ca

    /// Distogram classes of the target's virtual Cβ pairs: the number of edges e_k = 2.3125 + 0.3125·k
    /// (k = 0 … 62) with d² ≥ e_k², comparing squared distances with squared edges (§1.7 #2).
    /// Shapes: target [B, L, 3, 3] -> [B, L, L] int64
    let distogramLabels (target: torch.Tensor) =
        checkBackbone "target" target
        use _ = torch.no_grad ()
        let cb = virtualCb (clean target) // [B, L, 3]
        let d2 = (cb.unsqueeze -2L - cb.unsqueeze -3L).square().sum(-1L) // [B, L, L]

        let edges =
            torch.arange ((DistogramBinCount - 1L).ToScalar(), dtype = d2.dtype, device = d2.device)
            * DistogramStep
            + DistogramFirstEdge

        d2.unsqueeze(-1L).ge(edges.square ()).to_type(torch.int64).sum(-1L)

    /// Distogram cross-entropy over all allowed pairs (§1.3 #4). Shapes: logits [B, L, L, 64], target [B, L, 3, 3],
    /// mask [B, L] -> scalar
    let distogram (logits: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        let b, l = target.shape.[0], target.shape.[1]
        Shape.expect "logits" [| b; l; l; DistogramBinCount |] logits
        checkMask target mask
        maskedCrossEntropy logits (distogramLabels target) (pairMask mask)

    /// pLDDT classes of a per-residue LDDT in [0, 1]: floor(lddt / 0.02), clamped to 0 … 49. Shapes: [*] -> [*] int64
    let plddtLabels (lddt: torch.Tensor) =
        (lddt.detach () / 0.02).floor().clamp((0.0).ToScalar(), (float (PlddtBinCount - 1L)).ToScalar()).to_type
            torch.int64

    /// pLDDT cross-entropy (§1.4; stage 2): target the per-residue LDDT of the decoded structure against the truth.
    /// Shapes: logits [B, L, 50], lddt [B, L] in [0, 1], mask [B, L] -> scalar
    let plddt (logits: torch.Tensor) (lddt: torch.Tensor) (mask: torch.Tensor) =
        Shape.expect "logits" [| lddt.shape.[0]; lddt.shape.[1]; PlddtBinCount |] logits
        checkMask lddt mask
        maskedCrossEntropy logits (plddtLabels lddt) mask

    /// pAE classes (§1.4, as the paper writes it: the distance difference, not AlphaFold's aligned error):
    /// floor(|D̂_ij − D_ij| / 0.5) over CA–CA distances, clamped to 0 … 63.
    /// Shapes: predicted, target [B, L, 3, 3] -> [B, L, L] int64
    let paeLabels (predicted: torch.Tensor) (target: torch.Tensor) =
        checkBackbone "predicted" predicted
        Shape.expect "target" predicted.shape target
        use _ = torch.no_grad ()

        let distances (x: torch.Tensor) =
            let ca = (clean x).select(2L, 1L)
            (ca.unsqueeze -2L - ca.unsqueeze -3L).norm(-1, false)

        ((distances predicted - distances target).abs() / 0.5)
            .floor()
            .clamp((0.0).ToScalar(), (float (PaeBinCount - 1L)).ToScalar())
            .to_type
            torch.int64

    /// pAE cross-entropy over allowed pairs (§1.4; stage 2). The labels take no gradient.
    /// Shapes: logits [B, L, L, 64], predicted, target [B, L, 3, 3], mask [B, L] -> scalar
    let pae (logits: torch.Tensor) (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        let b, l = target.shape.[0], target.shape.[1]
        Shape.expect "logits" [| b; l; l; PaeBinCount |] logits
        checkMask target mask
        maskedCrossEntropy logits (paeLabels predicted target) (pairMask mask)
