namespace Esm3Structure.Training

open TorchSharp
open Esm3Structure.Tensors

/// The all-atom terms of stage-2 tokenizer training (ESM3-TRAINING.md §1.4) as pure functions over atom14
/// coordinates. Atoms are [B, L, 14 (atom14 slots), 3] with a mask [B, L, 14] (true = the atom is present in the
/// file and the residue is real). Coordinates of absent atoms may be NaN: they are replaced by 0 before any
/// arithmetic, so they never reach a result or a gradient. Everything that decides which entries count (the mask,
/// the bonds) is read from the TRUE structure, so the prediction and the truth always use the same entries. The
/// target takes no gradient. Each loss returns a scalar (0 when no entry counts).
module AllAtomLosses =

    /// Atom14 slots per residue.
    [<Literal>]
    let Slots = 14L

    /// Two atoms of one residue closer than this (Å) in the true structure are bonded (ESM3 §A.1.7.3.2).
    [<Literal>]
    let BondMax = 2.0

    /// The direction loss uses at most this many vectors per protein (ESM3: "subsample 10,000").
    [<Literal>]
    let MaxDirectionVectors = 10000

    let private checkAtoms (name: string) (x: torch.Tensor) =
        if x.dim () <> 4L || x.shape.[2] <> Slots || x.shape.[3] <> 3L then
            Shape.mismatch name "[B, L, 14, 3]" x

    let private checkInputs (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        checkAtoms "predicted" predicted
        checkAtoms "target" target
        Shape.expect "target" predicted.shape target
        Shape.expect "mask" [| predicted.shape.[0]; predicted.shape.[1]; Slots |] mask

        if mask.dtype <> torch.ScalarType.Bool then
            raise (System.ArgumentException(sprintf "mask: expected a bool tensor, got %O" mask.dtype, "mask"))

    /// Present atoms as they are, absent ones 0 (a select, so NaN never reaches a gradient).
    /// Shapes: x [*, 3], present [*] bool -> [*, 3]
    let private clean (x: torch.Tensor) (present: torch.Tensor) =
        torch.where (present.unsqueeze -1L, x, torch.zeros_like x)

    /// Pairwise distances (or squared distances) of point sets, through the Gram matrix after centring each set on
    /// its present points (so the memory is [B, N, N], not [B, N, N, 3], and a translation cannot cost precision).
    /// The diagonal is exactly 0. Shapes: points [B, N, 3] (absent = 0), present [B, N] bool -> [B, N, N]
    let private pairDistances (squared: bool) (points: torch.Tensor) (present: torch.Tensor) =
        let w = present.to_type(points.dtype).unsqueeze -1L // [B, N, 1]
        let centre = (points * w).sum(1L, true) / w.sum(1L, true).clamp_min(1.0) // [B, 1, 3]
        let p = (points - centre) * w
        let sq = p.square().sum(-1L) // [B, N]
        let n = p.shape.[1]

        let offDiagonal =
            (1.0 - torch.eye (n, dtype = points.dtype, device = points.device)).unsqueeze 0L

        let d2 =
            ((sq.unsqueeze -1L + sq.unsqueeze -2L - p.matmul (p.transpose (-1L, -2L) * 2.0)).clamp_min 0.0)
            * offDiagonal

        // The floor keeps sqrt's gradient finite on the (exactly 0) diagonal.
        if squared then d2 else (d2 + 1e-10).sqrt()

    /// All-atom distance loss (ESM3 §1.4, as the backbone distance of Alg. 10 over the 14·L atom14 slots): with
    /// D and D̂ the pairwise distances of the true and predicted atoms, mean min((D̂ − D)², 25) over the pairs of
    /// present atoms (a pair with an absent atom is masked). `squared` compares squared distances (§1.7 #1).
    /// Shapes: predicted, target [B, L, 14, 3], mask [B, L, 14] bool -> scalar
    let allAtomDistanceWith (squared: bool) (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        checkInputs predicted target mask
        let b = predicted.shape.[0]
        let present = mask.reshape (b, -1L) // [B, 14L]
        let points (x: torch.Tensor) = clean (x.reshape (b, -1L, 3L)) present

        let dHat = pairDistances squared (points predicted) present
        let d = pairDistances squared (points (target.detach ())) present

        let error = (dHat - d).square().clamp_max(StructureLosses.DistanceClamp)

        StructureLosses.maskedMean error (StructureLosses.pairMask present)

    /// `allAtomDistanceWith false`: plain distances.
    /// Shapes: predicted, target [B, L, 14, 3], mask [B, L, 14] bool -> scalar
    let allAtomDistance (predicted: torch.Tensor) (target: torch.Tensor) (mask: torch.Tensor) =
        allAtomDistanceWith false predicted target mask

    /// The bonds of the true structure that the direction loss uses: atoms i ≠ j of one residue, both present,
    /// closer than `BondMax`, are bonded. An atom is kept when it has at least two bonds; its two partners are its
    /// first two bonded atoms in atom14 order. Returns (keep [B, L, 14] bool, first [B, L, 14] int64,
    /// second [B, L, 14] int64); the partner slots of atoms that are not kept are 0.
    /// Shapes: target [B, L, 14, 3], mask [B, L, 14] bool -> ([B, L, 14], [B, L, 14], [B, L, 14])
    let bondPartners (target: torch.Tensor) (mask: torch.Tensor) =
        checkAtoms "target" target
        Shape.expect "mask" [| target.shape.[0]; target.shape.[1]; Slots |] mask
        use _ = torch.no_grad ()
        let x = clean (target.detach ()) mask // [B, L, 14, 3]
        let d = (x.unsqueeze -2L - x.unsqueeze -3L).norm(-1, false) // [B, L, 14, 14]
        let both = mask.unsqueeze(-1L).logical_and(mask.unsqueeze -2L)

        let notSelf =
            torch.eye(Slots, dtype = torch.ScalarType.Bool, device = target.device).logical_not()

        let bonded = d.lt(BondMax.ToScalar()).logical_and(both).logical_and notSelf // [B, L, 14, 14]
        let rank = bonded.to_type(torch.int64).cumsum(-1L) // bonds up to and including slot j
        let keep = rank.select(-1L, Slots - 1L).ge((2L).ToScalar()).logical_and mask

        let partner (k: int64) =
            // the first slot j with bonded and rank = k (argmax returns the first maximum)
            let hit = bonded.logical_and(rank.eq (k.ToScalar())).to_type torch.int64
            torch.where (keep, hit.argmax (-1L), torch.zeros_like (keep.to_type torch.int64))

        keep, partner 1L, partner 2L

    /// The three direction vectors of each atom: v1 = x[first] − x[i], v2 = x[second] − x[i] (the two bond
    /// vectors) and their normal n = v1 × v2 (not normalised), flattened per protein in the order
    /// (residue, slot, v1/v2/n). Shapes: x [B, L, 14, 3] (absent = anything finite), first, second [B, L, 14] int64
    /// -> [B, L·14·3, 3]
    let directionVectors (x: torch.Tensor) (first: torch.Tensor) (second: torch.Tensor) =
        checkAtoms "x" x
        let b = x.shape.[0]

        let at (slots: torch.Tensor) =
            x.gather (-2L, slots.unsqueeze(-1L).expand(-1L, -1L, -1L, 3L)) // [B, L, 14, 3]

        let v1 = at first - x
        let v2 = at second - x
        let normal = torch.linalg.cross (v1, v2)
        torch.stack([| v1; v2; normal |], -2L).reshape(b, -1L, 3L)

    /// Keeps at most `maxVectors` of the valid entries of each row, chosen uniformly at random from `generator`
    /// (drawn on the CPU; nothing is drawn when no row has more than `maxVectors`).
    /// Shapes: valid [B, N] bool -> [B, N] bool
    let subsample (generator: torch.Generator) (maxVectors: int) (valid: torch.Tensor) =
        if maxVectors < 1 then
            raise (System.ArgumentException(sprintf "maxVectors must be positive (got %d)" maxVectors, "maxVectors"))

        let counts = valid.to_type(torch.int64).sum(-1L)

        if valid.numel () = 0L || counts.max().ToInt64() <= int64 maxVectors then
            valid
        else
            use _ = torch.no_grad ()

            let scores =
                torch.rand(valid.shape, dtype = torch.float64, generator = generator).``to`` valid.device
            // Invalid entries sort last; the rank of each entry among its row's valid ones decides.
            let keyed = torch.where (valid, scores, torch.full_like (scores, 2.0))
            let struct (_, order) = keyed.sort (-1L, false, true)
            let rank = torch.empty_like order

            let positions =
                torch.arange(valid.shape.[1], device = valid.device).expand_as(order).contiguous()

            rank.scatter_ (-1L, order, positions) |> ignore

            valid.logical_and (rank.lt ((int64 maxVectors).ToScalar()))

    /// All-atom direction loss (ESM3 §1.4): the bonds of the TRUE structure (`bondPartners`) give, per kept atom, its
    /// two bond vectors and their normal (`directionVectors`) in both structures; at most `maxVectors` vectors per
    /// protein are used (`subsample`, same indices for prediction and truth); with G = V Vᵀ of the truth and Ĝ of
    /// the prediction, the loss is mean min((Ĝ − G)², 20) over all pairs of used vectors.
    /// Shapes: predicted, target [B, L, 14, 3], mask [B, L, 14] bool -> scalar
    let allAtomDirectionWith
        (maxVectors: int)
        (generator: torch.Generator)
        (predicted: torch.Tensor)
        (target: torch.Tensor)
        (mask: torch.Tensor)
        =
        checkInputs predicted target mask
        let b = predicted.shape.[0]
        let target = clean (target.detach ()) mask
        let keep, first, second = bondPartners target mask

        let used =
            subsample generator maxVectors (keep.unsqueeze(-1L).expand(-1L, -1L, -1L, 3L).reshape(b, -1L)) // [B, 42L]

        let n =
            if used.numel () = 0L then
                0L
            else
                used.to_type(torch.int64).sum(-1L).max().ToInt64()

        if n = 0L then
            (clean predicted mask).sum() * 0.0
        else
            // Compact the used vectors to the front of each row (stable, so both structures agree).
            let struct (_, order) =
                used.logical_not().to_type(torch.int64).sort(-1L, false, true)

            let columns = order.narrow (-1L, 0L, n) // [B, n]
            let usedN = used.gather (-1L, columns)

            let vectors (x: torch.Tensor) =
                (directionVectors (clean x mask) first second).gather(1L, columns.unsqueeze(-1L).expand(-1L, -1L, 3L)) // [B, n, 3]

            let vHat = vectors predicted
            let v = vectors target
            let gHat = vHat.matmul (vHat.transpose (-1L, -2L))
            let g = v.matmul (v.transpose (-1L, -2L))

            StructureLosses.maskedMean
                ((gHat - g).square().clamp_max(StructureLosses.DirectionClamp))
                (StructureLosses.pairMask usedN)

    /// `allAtomDirectionWith MaxDirectionVectors`.
    /// Shapes: predicted, target [B, L, 14, 3], mask [B, L, 14] bool -> scalar
    let allAtomDirection
        (generator: torch.Generator)
        (predicted: torch.Tensor)
        (target: torch.Tensor)
        (mask: torch.Tensor)
        =
        allAtomDirectionWith MaxDirectionVectors generator predicted target mask
