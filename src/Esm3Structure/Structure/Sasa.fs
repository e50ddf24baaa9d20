namespace Esm3Structure.Structure

open System
open System.Collections.Generic

/// Which van der Waals radius each heavy atom gets.
[<RequireQualifiedAccess>]
type SasaRadii =
    /// ProtOr (Tsai, Taylor, Chothia & Gerstein 1999, J. Mol. Biol. 290:253): a radius per (residue, atom) from the
    /// atom's element, bond count and hydrogen count. Biotite's default `vdw_radii="ProtOr"` (hence ESM's) and
    /// FreeSASA's default classifier; the two agree on every atom of the 20 amino acids (see `Sasa.protOrClass`).
    | ProtOr
    /// One radius per element (`ResidueConstants.vanDerWaalsRadius`: C 1.70, N 1.55, O 1.52, S 1.80 Å, the values
    /// of biotite's `vdw_radii="Single"` for these elements).
    | Element

/// Shrake–Rupley settings. ESM's SASA track calls biotite's `sasa(array)` with every default, which `esm` gives.
type SasaConfig =
    {
        /// Probe (solvent) radius, Å; added to every atom's van der Waals radius.
        ProbeRadius: float
        /// Test points on each atom's sphere (golden-section spiral, `Sasa.spherePoints`).
        PointsPerAtom: int
        /// The radius table.
        Radii: SasaRadii
    }

/// Named SASA configurations and their validation.
module SasaConfig =
    /// ESM's values, i.e. biotite's `sasa` defaults (biotite 1.x, `structure/sasa.py`): probe 1.4 Å, 1000 points
    /// ("Fibonacci" golden-section spiral), ProtOr radii.
    let esm =
        {
            ProbeRadius = 1.4
            PointsPerAtom = 1000
            Radii = SasaRadii.ProtOr
        }

    /// Checks that the probe radius is finite and not negative and that there is at least one point per atom.
    let validate (c: SasaConfig) : Result<SasaConfig, string list> =
        let errors =
            [
                if not (c.ProbeRadius >= 0.0 && Double.IsFinite c.ProbeRadius) then
                    yield sprintf "ProbeRadius: must be finite and >= 0, got %g" c.ProbeRadius
                if c.PointsPerAtom < 1 then
                    yield sprintf "PointsPerAtom: must be at least 1, got %d" c.PointsPerAtom
            ]

        if errors.IsEmpty then Ok c else Error errors

/// Solvent-accessible surface area by the Shrake–Rupley method (Shrake & Rupley 1973, J. Mol. Biol. 79:351), the
/// values of ESM3's SASA track (`esm/utils/structure/protein_chain.py`, `ProteinChain.sasa`).
///
/// Each atom's sphere of radius r + probe carries `PointsPerAtom` test points; a point is buried when it lies strictly
/// inside another atom's sphere (also of radius + probe). The atom's area is 4π(r + probe)² × accessible / points.
/// All present atom37 atoms of the chain take part (hydrogens never occur in atom37). Arithmetic is float64; biotite
/// works in float32, which moves per-chain totals by far less than the point sampling does.
[<RequireQualifiedAccess>]
module Sasa =

    /// The radius, Å, given to an atom the radius table does not know: biotite's fallback in `sasa` for atoms
    /// without a ProtOr or element radius. (For an atom missing from the residue's chemical component biotite raises
    /// a KeyError instead; we use 1.8 Å so that every present atom counts.)
    let fallbackRadius = 1.8

    // -----------------------------------------------------------------------------------------------------------
    // ProtOr. Classes and radii: Tsai et al. 1999, Table 1 ("ProtOr" set), as listed in biotite
    // `structure/info/radii.py` (`_PROTOR_RADII`, key: element, bonded neighbours, bonded hydrogens) and in FreeSASA
    // 2.1.2 `share/protor.config` ("types:"); S2H0 (MET SD) is an addition of both. Class of each amino-acid atom:
    // biotite derives it from the Chemical Component Dictionary's bonds of the free residue (all hydrogens, OXT
    // with HXT, ASP/GLU protonated on OD2/OE2, HIS on both ND1 and NE2); we wrote it out by hand from the same
    // CCD bonding and checked it against FreeSASA's `protor.config` ("atoms:"), which lists the same classes for
    // the 20 amino acids. UNK is the CCD's
    // UNK component: the ALA atoms.
    // (FreeSASA's file calls the N3H2 of the backbone N a mistake for N3H1; the radius is 1.64 Å either way.)

    let private protOrRadii =
        dict
            [
                "C3H0", 1.61
                "C3H1", 1.76
                "C4H1", 1.88
                "C4H2", 1.88
                "C4H3", 1.88
                "N3H0", 1.64
                "N3H1", 1.64
                "N3H2", 1.64
                "N4H3", 1.64
                "O1H0", 1.42
                "O2H1", 1.46
                "S2H0", 1.77
                "S2H1", 1.77
            ]

    /// Backbone atoms of every residue, classed in the free residue as the CCD bonds it: N carries H and H2 (N3H2;
    /// PRO's N3H1), OXT carries HXT (O2H1). GLY's CA is C4H2. Within a class group the radius is the same.
    let private backboneClasses =
        [ "N", "N3H2"; "CA", "C4H1"; "C", "C3H0"; "O", "O1H0"; "OXT", "O2H1" ]

    /// Side-chain atoms per residue (three-letter name, "atom:class atom:class ...").
    let private sideChainClasses =
        [
            "ALA", "CB:C4H3"
            "ARG", "CB:C4H2 CG:C4H2 CD:C4H2 NE:N3H1 CZ:C3H0 NH1:N3H2 NH2:N3H2"
            "ASN", "CB:C4H2 CG:C3H0 OD1:O1H0 ND2:N3H2"
            "ASP", "CB:C4H2 CG:C3H0 OD1:O1H0 OD2:O2H1"
            "CYS", "CB:C4H2 SG:S2H1"
            "GLN", "CB:C4H2 CG:C4H2 CD:C3H0 OE1:O1H0 NE2:N3H2"
            "GLU", "CB:C4H2 CG:C4H2 CD:C3H0 OE1:O1H0 OE2:O2H1"
            "GLY", "CA:C4H2"
            "HIS", "CB:C4H2 CG:C3H0 ND1:N3H1 CD2:C3H1 CE1:C3H1 NE2:N3H1"
            "ILE", "CB:C4H1 CG1:C4H2 CG2:C4H3 CD1:C4H3"
            "LEU", "CB:C4H2 CG:C4H1 CD1:C4H3 CD2:C4H3"
            "LYS", "CB:C4H2 CG:C4H2 CD:C4H2 CE:C4H2 NZ:N4H3"
            "MET", "CB:C4H2 CG:C4H2 SD:S2H0 CE:C4H3"
            "PHE", "CB:C4H2 CG:C3H0 CD1:C3H1 CD2:C3H1 CE1:C3H1 CE2:C3H1 CZ:C3H1"
            "PRO", "N:N3H1 CB:C4H2 CG:C4H2 CD:C4H2"
            "SER", "CB:C4H2 OG:O2H1"
            "THR", "CB:C4H1 OG1:O2H1 CG2:C4H3"
            "TRP", "CB:C4H2 CG:C3H0 CD1:C3H1 CD2:C3H0 NE1:N3H1 CE2:C3H0 CE3:C3H1 CZ2:C3H1 CZ3:C3H1 CH2:C3H1"
            "TYR", "CB:C4H2 CG:C3H0 CD1:C3H1 CD2:C3H1 CE1:C3H1 CE2:C3H1 CZ:C3H0 OH:O2H1"
            "VAL", "CB:C4H1 CG1:C4H3 CG2:C4H3"
            "UNK", "CB:C4H3"
        ]

    let private protOrTable: IReadOnlyDictionary<struct (string * string), string> =
        let d = Dictionary<struct (string * string), string>()

        for res, side in sideChainClasses do
            for atom, cls in backboneClasses do
                d.[struct (res, atom)] <- cls

            for entry in side.Split(' ', StringSplitOptions.RemoveEmptyEntries) do
                let parts = entry.Split ':'
                d.[struct (res, parts.[0])] <- parts.[1]

        d :> IReadOnlyDictionary<_, _>

    /// The ProtOr class (e.g. "C3H1": element, bonded neighbours, bonded hydrogens) of an atom of one of the 20 amino
    /// acids or UNK, by three-letter residue name and PDB atom name; None for any other pair.
    let protOrClass (residueName: string) (atomName: string) : string option =
        match protOrTable.TryGetValue(struct (residueName, atomName)) with
        | true, c -> Some c
        | _ -> None

    /// The van der Waals radius, Å, of an atom under a radius table: ProtOr by (residue, atom), or by element (the
    /// first letter of the atom name, as ESM sets it). Atoms the table does not know get `fallbackRadius` (1.8 Å).
    let radius (radii: SasaRadii) (residueName: string) (atomName: string) : float =
        match radii with
        | SasaRadii.ProtOr ->
            match protOrClass residueName atomName with
            | Some c -> protOrRadii.[c]
            | None -> fallbackRadius
        | SasaRadii.Element ->
            if String.IsNullOrEmpty atomName then
                fallbackRadius
            else
                match ResidueConstants.vanDerWaalsRadius.TryGetValue(atomName.Substring(0, 1)) with
                | true, r -> r
                | _ -> fallbackRadius

    /// `n` nearly uniform points on the unit sphere on a golden-section spiral, biotite's "Fibonacci" distribution
    /// (and FreeSASA's): point k has z = 1 − (2k + 1)/n and longitude k·π(3 − √5).
    /// Shapes: -> [n, 3]
    let spherePoints (n: int) : float[,] =
        if n < 1 then
            raise (ArgumentOutOfRangeException("n", n, "at least one point is needed"))

        let step = Math.PI * (3.0 - sqrt 5.0)

        Array2D.init n 3 (fun k c ->
            let z = 1.0 - float (2 * k + 1) / float n
            let rho = sqrt (max 0.0 (1.0 - z * z))
            let phi = step * float k

            match c with
            | 0 -> rho * cos phi
            | 1 -> rho * sin phi
            | _ -> z)

    let private finite (x: float) = Double.IsFinite x

    /// Shrake–Rupley area of each atom, given its centre and van der Waals radius (the probe is added here). Atoms
    /// with a non-finite coordinate are absent: NaN, and they bury nothing. Neighbours are found on a grid of cubes
    /// with edge 2·max(r + probe), so the cost grows with the atom count, not its square.
    /// Shapes: coords [A, 3], radii [A] -> [A]
    let ofAtoms (config: SasaConfig) (coords: float[,]) (radii: float[]) : float[] =
        match SasaConfig.validate config with
        | Error es -> raise (ArgumentException("SasaConfig: " + String.Join("; ", es), "config"))
        | Ok _ -> ()

        let n = Array2D.length1 coords

        if Array2D.length2 coords <> 3 then
            raise (
                ArgumentException(sprintf "coords must be [A, 3], got [%d, %d]" n (Array2D.length2 coords), "coords")
            )

        if radii.Length <> n then
            raise (ArgumentException(sprintf "radii has length %d but coords has %d atoms" radii.Length n, "radii"))

        for i in 0 .. n - 1 do
            if not (radii.[i] >= 0.0 && finite radii.[i]) then
                raise (ArgumentException(sprintf "radii.[%d] must be finite and >= 0, got %g" i radii.[i], "radii"))

        let present =
            Array.init n (fun i -> finite coords.[i, 0] && finite coords.[i, 1] && finite coords.[i, 2])

        let result = Array.create n Double.NaN

        let live =
            [|
                for i in 0 .. n - 1 do
                    if present.[i] then
                        yield i
            |]

        if live.Length > 0 then
            let big = live |> Array.map (fun i -> radii.[i] + config.ProbeRadius)
            let cell = max 1e-6 (2.0 * Array.max big)

            let lo =
                Array.init 3 (fun c -> live |> Array.map (fun i -> coords.[i, c]) |> Array.min)

            let cellOf (i: int) (c: int) =
                int64 (Math.Floor((coords.[i, c] - lo.[c]) / cell))

            // Atoms bucketed by cell.
            let grid = Dictionary<struct (int64 * int64 * int64), ResizeArray<int>>()

            for i in live do
                let key = struct (cellOf i 0, cellOf i 1, cellOf i 2)

                match grid.TryGetValue key with
                | true, bucket -> bucket.Add i
                | _ -> grid.[key] <- ResizeArray [ i ]

            let bigOf = Array.zeroCreate n

            for k in 0 .. live.Length - 1 do
                bigOf.[live.[k]] <- big.[k]

            let points = spherePoints config.PointsPerAtom
            let m = config.PointsPerAtom
            // Reused per atom: the overlapping neighbours (squared distance, index), then their centres and squared
            // radii in that order.
            let order = ResizeArray<struct (float * int)>()
            let ox = Array.zeroCreate n
            let oy = Array.zeroCreate n
            let oz = Array.zeroCreate n
            let or2 = Array.zeroCreate n

            for i in live do
                let xi, yi, zi, ri = coords.[i, 0], coords.[i, 1], coords.[i, 2], bigOf.[i]
                let cx, cy, cz = cellOf i 0, cellOf i 1, cellOf i 2
                order.Clear()

                for dx in -1L .. 1L do
                    for dy in -1L .. 1L do
                        for dz in -1L .. 1L do
                            match grid.TryGetValue(struct (cx + dx, cy + dy, cz + dz)) with
                            | true, bucket ->
                                for j in bucket do
                                    if j <> i then
                                        let ddx = coords.[j, 0] - xi
                                        let ddy = coords.[j, 1] - yi
                                        let ddz = coords.[j, 2] - zi
                                        let d2 = ddx * ddx + ddy * ddy + ddz * ddz
                                        let reach = ri + bigOf.[j]

                                        if d2 < reach * reach then
                                            order.Add(struct (d2, j))
                            | _ -> ()

                // Nearest neighbours first: they bury the most points, so the scan below usually stops early.
                order.Sort(fun (struct (a, _)) (struct (b, _)) -> compare a b)
                let count = order.Count

                for k in 0 .. count - 1 do
                    let struct (_, j) = order.[k]
                    ox.[k] <- coords.[j, 0]
                    oy.[k] <- coords.[j, 1]
                    oz.[k] <- coords.[j, 2]
                    or2.[k] <- bigOf.[j] * bigOf.[j]

                let mutable accessible = 0
                // The neighbour that buried the previous point is tried first: neighbouring points share occluders.
                let mutable last = 0

                for p in 0 .. m - 1 do
                    let px = xi + ri * points.[p, 0]
                    let py = yi + ri * points.[p, 1]
                    let pz = zi + ri * points.[p, 2]

                    let inside k =
                        let ddx = px - ox.[k]
                        let ddy = py - oy.[k]
                        let ddz = pz - oz.[k]
                        ddx * ddx + ddy * ddy + ddz * ddz < or2.[k]

                    if count = 0 then
                        accessible <- accessible + 1
                    elif not (inside last) then
                        let mutable k = 0

                        while k < count && (k = last || not (inside k)) do
                            k <- k + 1

                        if k < count then
                            last <- k
                        else
                            accessible <- accessible + 1

                result.[i] <- 4.0 * Math.PI * ri * ri * float accessible / float m

        result

    /// The van der Waals radius of every atom37 slot of a chain (NaN where the atom is absent), by the residue name ESM
    /// uses: the three-letter name of the sequence letter (`X` -> UNK), not the name as read.
    /// Shapes: chain of L residues -> [L, 37]
    let atomRadii (radii: SasaRadii) (chain: ProteinChain) : float[,] =
        let n = ProteinChain.length chain
        let restypes = ProteinChain.restypeIndices chain

        Array2D.init n 37 (fun i a ->
            if chain.Atom37Mask.[i, a] then
                radius radii ResidueConstants.resnames.[restypes.[i]] ResidueConstants.atomTypes.[a]
            else
                Double.NaN)

    /// Per-atom SASA in Å² of every present atom37 atom of a chain, all present atoms burying each other; NaN where
    /// the atom is absent. Shapes: chain of L residues -> [L, 37]
    let perAtomWith (config: SasaConfig) (chain: ProteinChain) : float[,] =
        let n = ProteinChain.length chain
        let radii37 = atomRadii config.Radii chain

        let slots =
            [|
                for i in 0 .. n - 1 do
                    for a in 0..36 do
                        if chain.Atom37Mask.[i, a] then
                            yield i, a
            |]

        let coords =
            Array2D.init slots.Length 3 (fun k c ->
                let i, a = slots.[k]
                float chain.Atom37.[i, a, c])

        let radii = slots |> Array.map (fun (i, a) -> radii37.[i, a])
        let areas = ofAtoms config coords radii
        let out = Array2D.create n 37 Double.NaN

        slots |> Array.iteri (fun k (i, a) -> out.[i, a] <- areas.[k])
        out

    /// `perAtomWith SasaConfig.esm`. Shapes: chain of L residues -> [L, 37]
    let perAtom (chain: ProteinChain) : float[,] = perAtomWith SasaConfig.esm chain

    /// Per-residue SASA in Å²: the sum over the residue's present atoms; NaN for a residue with no atom at all
    /// (ESM's `ProteinChain.sasa(by_residue=True)`, where such residues are NaN and the track's token is padding).
    /// Shapes: chain of L residues -> [L]
    let perResidueWith (config: SasaConfig) (chain: ProteinChain) : float[] =
        let atoms = perAtomWith config chain

        Array.init (ProteinChain.length chain) (fun i ->
            let mutable sum = 0.0
            let mutable any = false

            for a in 0..36 do
                if chain.Atom37Mask.[i, a] then
                    sum <- sum + atoms.[i, a]
                    any <- true

            if any then sum else Double.NaN)

    /// `perResidueWith SasaConfig.esm`: the values of ESM3's SASA track. Shapes: chain of L residues -> [L]
    let perResidue (chain: ProteinChain) : float[] = perResidueWith SasaConfig.esm chain

    /// The total area of per-residue (or per-atom) values, skipping NaN entries. Shapes: [n] -> scalar
    let total (values: float[]) : float =
        values |> Array.sumBy (fun v -> if Double.IsNaN v then 0.0 else v)
