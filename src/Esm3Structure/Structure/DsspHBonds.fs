namespace Esm3Structure.Structure

open System

/// DSSP's hydrogen-bond model (Kabsch & Sander 1983, Biopolymers 22:2577; values, rules and float32 precision as in
/// PDB-REDO/dssp v4.2.2 `src/dssp.cpp`): the backbone of the residues DSSP uses, its chain breaks and residue
/// numbers, the amide hydrogens it places, the residue pairs close enough to test, and the electrostatic energy of a
/// bond. `Dssp` builds the secondary structure on it.
[<RequireQualifiedAccess>]
module DsspHBonds =

    /// q1·q2·f = 0.42 e · 0.20 e · 332 Å·kcal/mol (Kabsch & Sander 1983), stored as float32 like DSSP.
    [<Literal>]
    let CouplingConstant = -27.888f

    /// An H-bond counts when its energy is below this (kcal/mol).
    [<Literal>]
    let MaxHBondEnergy = -0.5

    /// The lowest energy DSSP reports (kcal/mol); also used when two atoms are closer than 0.5 Å.
    [<Literal>]
    let MinHBondEnergy = -9.9f

    /// Only residue pairs whose CAs are closer than this (Å) are tested for H-bonds.
    [<Literal>]
    let CaCutoff = 9.0f

    /// A C(i)–N(i+1) distance over this (Å) is a chain break.
    [<Literal>]
    let MaxPeptideBondLength = 2.5f

    [<Literal>]
    let internal MinimalDistance = 0.5f

    [<Struct>]
    type internal P = { X: float32; Y: float32; Z: float32 }

    let internal sub (a: P) (b: P) =
        {
            X = a.X - b.X
            Y = a.Y - b.Y
            Z = a.Z - b.Z
        }

    let internal dot (a: P) (b: P) = a.X * b.X + a.Y * b.Y + a.Z * b.Z

    let internal dist (a: P) (b: P) =
        let d = sub a b
        MathF.Sqrt(dot d d)

    /// DSSP's energy for N-H(donor) → O=C(acceptor), in float32 distances and float64 sums as DSSP computes it.
    let internal energyOf (n: P) (h: P) (c: P) (o: P) : float =
        let dHO = dist h o
        let dHC = dist h c
        let dNC = dist n c
        let dNO = dist n o

        let e =
            if
                dHO < MinimalDistance
                || dHC < MinimalDistance
                || dNC < MinimalDistance
                || dNO < MinimalDistance
            then
                float MinHBondEnergy
            else
                let k = float CouplingConstant
                k / float dHO - k / float dHC + k / float dNC - k / float dNO

        let e = Math.Round(e * 1000.0, MidpointRounding.AwayFromZero) / 1000.0
        if e < float MinHBondEnergy then float MinHBondEnergy else e

    /// DSSP's electrostatic H-bond energy (kcal/mol) for N-H of a donor and C=O of an acceptor, each point given as
    /// x, y, z: E = 0.084 · 332 · (1/r(ON) + 1/r(CH) − 1/r(OH) − 1/r(CN)), rounded to 0.001 and clamped at -9.9.
    /// Shapes: donorN, donorH, acceptorC, acceptorO [3] -> scalar
    let hbondEnergy (donorN: float32[]) (donorH: float32[]) (acceptorC: float32[]) (acceptorO: float32[]) : float =
        let p (what: string) (v: float32[]) =
            if isNull v || v.Length <> 3 then
                raise (ArgumentException(sprintf "%s must have 3 coordinates" what, what))

            { X = v.[0]; Y = v.[1]; Z = v.[2] }

        energyOf (p "donorN" donorN) (p "donorH" donorH) (p "acceptorC" acceptorC) (p "acceptorO" acceptorO)

    /// The backbone of the used residues (those with N, CA, C and O), in chain order.
    type internal Backbone =
        {
            Orig: int[]
            N: P[]
            CA: P[]
            C: P[]
            O: P[]
            H: P[]
            Proline: bool[]
            Break: bool[]
            /// DSSP's residue number: +1 per residue, +1 more at each break.
            Number: int[]
        }

    let internal backbone (chain: ProteinChain) : Backbone =
        let l = ProteinChain.length chain
        let mask = chain.Atom37Mask
        let xyz = chain.Atom37

        let complete i =
            mask.[i, ResidueConstants.nIndex]
            && mask.[i, ResidueConstants.caIndex]
            && mask.[i, ResidueConstants.cIndex]
            && mask.[i, ResidueConstants.oIndex]

        let orig =
            [|
                for i in 0 .. l - 1 do
                    if complete i then
                        i
            |]

        let atom (a: int) =
            orig
            |> Array.map (fun i ->
                {
                    X = xyz.[i, a, 0]
                    Y = xyz.[i, a, 1]
                    Z = xyz.[i, a, 2]
                })

        let n = atom ResidueConstants.nIndex
        let c = atom ResidueConstants.cIndex
        let o = atom ResidueConstants.oIndex
        let m = orig.Length
        let proline = orig |> Array.map (fun i -> chain.Sequence.[i] = 'P')

        let brk =
            Array.init m (fun k -> k > 0 && dist c.[k - 1] n.[k] > MaxPeptideBondLength)

        let number = Array.zeroCreate m
        let mutable nr = 0

        for k in 0 .. m - 1 do
            nr <- nr + (if brk.[k] then 2 else 1)
            number.[k] <- nr

        // H = N + unit(C - O) of the previous used residue (none for prolines and the first residue), as DSSP places
        // it: DSSP 4 does this across breaks too.
        let h =
            Array.init m (fun k ->
                if k = 0 || proline.[k] then
                    n.[k]
                else
                    let co = sub c.[k - 1] o.[k - 1]
                    let d = dist c.[k - 1] o.[k - 1]

                    {
                        X = n.[k].X + co.X / d
                        Y = n.[k].Y + co.Y / d
                        Z = n.[k].Z + co.Z / d
                    })

        {
            Orig = orig
            N = n
            CA = atom ResidueConstants.caIndex
            C = c
            O = o
            H = h
            Proline = proline
            Break = brk
            Number = number
        }

    /// True when no break lies between used residues a and b (a ≤ b), DSSP's NoChainBreak.
    let internal noBreak (bb: Backbone) (a: int) (b: int) =
        a <= b && bb.Number.[b] - bb.Number.[a] = b - a

    /// The residue pairs (i < j) whose CAs are closer than `CaCutoff`, in DSSP's scan order.
    let internal nearPairs (bb: Backbone) =
        let m = bb.Orig.Length
        let pairs = ResizeArray<struct (int * int)>()

        for i in 0 .. m - 2 do
            let ci = bb.CA.[i]

            for j in i + 1 .. m - 1 do
                if dist ci bb.CA.[j] < CaCutoff then
                    pairs.Add(struct (i, j))

        pairs

    let internal energyAt (bb: Backbone) (donor: int) (acceptor: int) =
        if bb.Proline.[donor] then
            0.0
        else
            energyOf bb.N.[donor] bb.H.[donor] bb.C.[acceptor] bb.O.[acceptor]
