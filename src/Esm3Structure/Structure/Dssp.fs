namespace Esm3Structure.Structure

open System

/// The two kinds of β-bridge (Kabsch & Sander 1983).
[<RequireQualifiedAccess>]
type BridgeKind =
    /// Both strands run the same way.
    | Parallel
    /// The strands run opposite ways.
    | Antiparallel

/// A backbone hydrogen bond N-H(Donor) → O=C(Acceptor) with DSSP's electrostatic energy. Residues are 0-based
/// indices into the chain.
type DsspHBond =
    {
        /// The residue whose N-H donates.
        Donor: int
        /// The residue whose C=O accepts.
        Acceptor: int
        /// kcal/mol, rounded to 0.001 and clamped at -9.9 as DSSP does; the bond counts when below -0.5.
        Energy: float
    }

/// One β-bridge between residues I < J (0-based chain indices).
type DsspBridge =
    {
        /// Parallel or antiparallel.
        Kind: BridgeKind
        /// The first partner.
        I: int
        /// The second partner (I < J).
        J: int
    }

/// A ladder: a run of consecutive bridges of one kind, joined across β-bulges as DSSP does. Every residue from the
/// first to the last index of each side is strand (E); a ladder of one bridge gives isolated bridges (B).
type DsspLadder =
    {
        /// Parallel or antiparallel.
        Kind: BridgeKind
        /// Ladders that share a residue are in the same sheet; sheets are numbered from 0 in order of their first
        /// ladder.
        Sheet: int
        /// The bridge residues on the first side, ascending.
        I: int[]
        /// The bridge residues on the second side, ascending.
        J: int[]
    }

/// Everything one DSSP run computes for a chain of L residues. Residue arrays have length L, in chain order.
type DsspResult =
    {
        /// One SS8 letter per residue: G (3₁₀), H (α), I (π), T (turn), E (strand), B (bridge), S (bend), C (coil).
        Ss8: char[]
        /// True where the residue took part: it has all of N, CA, C and O. Other residues are C and have no bonds.
        Used: bool[]
        /// True where the C(prev)–N distance to the previous used residue is over 2.5 Å (a chain break).
        BreakBefore: bool[]
        /// [L, 3] the amide hydrogen DSSP places; NaN for unused residues.
        Hydrogens: float32[,]
        /// Per residue as N-H donor: its (at most) two lowest-energy acceptors, best first.
        AsDonor: DsspHBond[][]
        /// Per residue as C=O acceptor: its (at most) two lowest-energy donors, best first.
        AsAcceptor: DsspHBond[][]
        /// Every bond that counts: in its donor's two best and below -0.5 kcal/mol; sorted by donor, then energy.
        HBonds: DsspHBond[]
        /// [L, 3] n-turns: Turns[i, n - 3] is true when O(i) accepts from N-H(i + n) with no break, n = 3, 4, 5.
        Turns: bool[,]
        /// The CA virtual bond angle κ at i (from i-2, i, i+2) in degrees; NaN where undefined.
        Kappa: float32[]
        /// True where κ > 70°.
        Bend: bool[]
        /// Every bridge found, in the order DSSP scans pairs.
        Bridges: DsspBridge[]
        /// Ladders after joining bulges, sorted by their first residue.
        Ladders: DsspLadder[]
    }

/// Secondary structure from backbone coordinates: our own implementation of DSSP (Kabsch & Sander 1983,
/// Biopolymers 22:2577), following mkdssp 4.2.2 (PDB-REDO/dssp tag v4.2.2, `src/dssp.cpp`, read for its rules and
/// constants): backbone hydrogens, the electrostatic H-bond energy with the -0.5 kcal/mol cut-off, n-turns, bridges,
/// ladders with bulges, helices G/H/I (π-helices take priority over α, as in DSSP 4), strands E/B, bends S, coil.
/// DSSP 4's PP-II class 'P' is only ever given to coil residues and is not computed here: they stay C. ESM builds its
/// SS8 track from mkdssp through biotite's DsspApp, which turns DSSP's blank into C, and its SS8 vocabulary
/// (GHITEBSC) has no P; DSSP before version 4 printed those residues as coil.
///
/// Residue rule: a residue lacking any of N, CA, C or O is left out, exactly as mkdssp drops incomplete residues.
/// It gets C, takes part in no H-bond, and its neighbours see each other across the gap, which is a chain break
/// whenever C(i-1)–N(i+1) > 2.5 Å (always, for real geometry).
[<RequireQualifiedAccess>]
module Dssp =

    /// κ above this (degrees) is a bend.
    [<Literal>]
    let BendAngle = 70.0f

    type private Ladder =
        {
            Kind: BridgeKind
            I: ResizeArray<int>
            J: ResizeArray<int>
        }

    // helix position flags per residue and helix type, as DSSP keeps them
    [<Literal>]
    let private FlagNone = 0uy

    [<Literal>]
    let private FlagStart = 1uy

    [<Literal>]
    let private FlagEnd = 2uy

    [<Literal>]
    let private FlagStartAndEnd = 3uy

    [<Literal>]
    let private FlagMiddle = 4uy

    /// (x - y) >= k in DSSP's unsigned arithmetic.
    let private uGe (x: int) (y: int) (k: int) = x < y || x - y >= k

    /// (x - y) < k in DSSP's unsigned arithmetic.
    let private uLt (x: int) (y: int) (k: int) = x >= y && x - y < k

    /// Runs DSSP on a chain and returns the SS8 letters with the intermediate tables (see `DsspResult`).
    let compute (chain: ProteinChain) : DsspResult =
        let l = ProteinChain.length chain
        let bb = DsspHBonds.backbone chain
        let m = bb.Orig.Length
        let orig = bb.Orig
        let pairs = DsspHBonds.nearPairs bb

        // H-bonds: each residue keeps its two best acceptors (as donor) and two best donors (as acceptor).
        let accP = Array2D.create m 2 -1
        let accE = Array2D.zeroCreate<float> m 2
        let donP = Array2D.create m 2 -1
        let donE = Array2D.zeroCreate<float> m 2

        let keep (part: int[,]) (en: float[,]) (at: int) (partner: int) (e: float) =
            if e < en.[at, 0] then
                part.[at, 1] <- part.[at, 0]
                en.[at, 1] <- en.[at, 0]
                part.[at, 0] <- partner
                en.[at, 0] <- e
            elif e < en.[at, 1] then
                part.[at, 1] <- partner
                en.[at, 1] <- e

        let calc (donor: int) (acceptor: int) =
            let e = DsspHBonds.energyAt bb donor acceptor
            keep accP accE donor acceptor e
            keep donP donE acceptor donor e

        for struct (i, j) in pairs do
            calc i j

            if j <> i + 1 then
                calc j i

        /// N-H(d) → O(a) counts.
        let bond (d: int) (a: int) =
            (accP.[d, 0] = a && accE.[d, 0] < DsspHBonds.MaxHBondEnergy)
            || (accP.[d, 1] = a && accE.[d, 1] < DsspHBonds.MaxHBondEnergy)

        // Bridges, then ladders.
        let testBridge (i: int) (j: int) =
            if
                i >= 1
                && i + 1 < m
                && j >= 1
                && j + 1 < m
                && DsspHBonds.noBreak bb (i - 1) (i + 1)
                && DsspHBonds.noBreak bb (j - 1) (j + 1)
            then
                let a, b, c = i - 1, i, i + 1
                let d, e, f = j - 1, j, j + 1

                if (bond c e && bond e a) || (bond f b && bond b d) then
                    ValueSome BridgeKind.Parallel
                elif (bond c d && bond f a) || (bond e b && bond b e) then
                    ValueSome BridgeKind.Antiparallel
                else
                    ValueNone
            else
                ValueNone

        let bridges = ResizeArray<DsspBridge>()
        let ladders = ResizeArray<Ladder>()

        let addBridge (i: int) (j: int) =
            match testBridge i j with
            | ValueNone -> ()
            | ValueSome kind ->
                bridges.Add
                    {
                        Kind = kind
                        I = orig.[i]
                        J = orig.[j]
                    }

                let extends (ld: Ladder) =
                    ld.Kind = kind
                    && i = ld.I.[ld.I.Count - 1] + 1
                    && (match kind with
                        | BridgeKind.Parallel -> ld.J.[ld.J.Count - 1] + 1 = j
                        | BridgeKind.Antiparallel -> ld.J.[0] - 1 = j)

                match Seq.tryFind extends ladders with
                | Some ld ->
                    ld.I.Add i

                    match kind with
                    | BridgeKind.Parallel -> ld.J.Add j
                    | BridgeKind.Antiparallel -> ld.J.Insert(0, j)
                | None ->
                    ladders.Add
                        {
                            Kind = kind
                            I = ResizeArray [ i ]
                            J = ResizeArray [ j ]
                        }

        // mkdssp 4.2.2 scans i = 1 .. m-5 and j = i+3 .. m-2 (no CA cut-off here; the H-bonds carry it).
        for i in 1 .. m - 5 do
            for j in i + 3 .. m - 2 do
                addBridge i j

        let ladders = ResizeArray(ladders |> Seq.sortBy (fun ld -> ld.I.[0]))

        // Join ladders across bulges: a gap of < 3 on one side and < 6 on the other (DSSP's rule, unsigned maths).
        let mutable a = 0

        while a < ladders.Count do
            let mutable b = a + 1

            while b < ladders.Count do
                let la, lb = ladders.[a], ladders.[b]
                let ibi, iei = la.I.[0], la.I.[la.I.Count - 1]
                let jbi, jei = la.J.[0], la.J.[la.J.Count - 1]
                let ibj, iej = lb.I.[0], lb.I.[lb.I.Count - 1]
                let jbj, jej = lb.J.[0], lb.J.[lb.J.Count - 1]

                let skip =
                    la.Kind <> lb.Kind
                    || not (DsspHBonds.noBreak bb (min ibi ibj) (max iei iej))
                    || not (DsspHBonds.noBreak bb (min jbi jbj) (max jei jej))
                    || uGe ibj iei 6
                    || (iei >= ibj && ibi <= iej)

                let bulge =
                    not skip
                    && (match la.Kind with
                        | BridgeKind.Parallel -> (uLt jbj jei 6 && uLt ibj iei 3) || uLt jbj jei 3
                        | BridgeKind.Antiparallel -> (uLt jbi jej 6 && uLt ibj iei 3) || uLt jbi jej 3)

                if bulge then
                    la.I.AddRange lb.I

                    match la.Kind with
                    | BridgeKind.Parallel -> la.J.AddRange lb.J
                    | BridgeKind.Antiparallel -> la.J.InsertRange(0, lb.J)

                    ladders.RemoveAt b
                else
                    b <- b + 1

            a <- a + 1

        // Strands and bridges: E over each side of a ladder of two or more bridges, B for single bridges; E wins.
        let ss = Array.create m ' '

        for ld in ladders do
            let letter = if ld.I.Count > 1 then 'E' else 'B'

            for side in [ ld.I; ld.J ] do
                for r in side.[0] .. side.[side.Count - 1] do
                    if ss.[r] <> 'E' then
                        ss.[r] <- letter

        // Sheets: ladders linked by a shared residue.
        let sheetOf = Array.init ladders.Count id

        let rec root (x: int) =
            if sheetOf.[x] = x then x else root sheetOf.[x]

        let residues (ld: Ladder) = Set.ofSeq (Seq.append ld.I ld.J)
        let sets = ladders |> Seq.map residues |> Array.ofSeq

        for x in 0 .. ladders.Count - 1 do
            for y in x + 1 .. ladders.Count - 1 do
                if not (Set.isEmpty (Set.intersect sets.[x] sets.[y])) then
                    let rx, ry = root x, root y

                    if rx <> ry then
                        sheetOf.[max rx ry] <- min rx ry

        let sheetIds = Collections.Generic.Dictionary<int, int>()

        let sheet x =
            let r = root x

            match sheetIds.TryGetValue r with
            | true, s -> s
            | _ ->
                sheetIds.[r] <- sheetIds.Count
                sheetIds.[r]

        // n-turns (n = 3, 4, 5) and helix flags.
        let flags = Array2D.create 3 m FlagNone

        for t in 0..2 do
            let n = t + 3

            for i in 0 .. m - 1 - n do
                if DsspHBonds.noBreak bb i (i + n) && bond (i + n) i then
                    flags.[t, i + n] <- FlagEnd

                    for j in i + 1 .. i + n - 1 do
                        if flags.[t, j] = FlagNone then
                            flags.[t, j] <- FlagMiddle

                    flags.[t, i] <-
                        (if flags.[t, i] = FlagEnd then
                             FlagStartAndEnd
                         else
                             FlagStart)

        let starts t i =
            flags.[t, i] = FlagStart || flags.[t, i] = FlagStartAndEnd

        // κ and bends.
        let kappa = Array.create m Single.NaN

        for k in 2 .. m - 3 do
            if DsspHBonds.noBreak bb (k - 2) (k + 2) && orig.[k + 2] - orig.[k - 2] = 4 then
                let v1 = DsspHBonds.sub bb.CA.[k] bb.CA.[k - 2]
                let v2 = DsspHBonds.sub bb.CA.[k + 2] bb.CA.[k]
                let x = DsspHBonds.dot v1 v1 * DsspHBonds.dot v2 v2

                let ck =
                    if x > 0.0f then
                        DsspHBonds.dot v1 v2 / MathF.Sqrt x
                    else
                        0.0f

                let sk = MathF.Sqrt(1.0f - ck * ck)
                kappa.[k] <- MathF.Atan2(sk, ck) * float32 (180.0 / Math.PI)

        let bend = kappa |> Array.map (fun kp -> kp > BendAngle)

        // Helices: α first (over strands), then 3₁₀ on coil only, then π over coil and α (DSSP 4 prefers π).
        for i in 1 .. m - 5 do
            if starts 1 i && starts 1 (i - 1) then
                for j in i .. i + 3 do
                    ss.[j] <- 'H'

        for i in 1 .. m - 4 do
            if starts 0 i && starts 0 (i - 1) then
                if Seq.forall (fun j -> ss.[j] = ' ' || ss.[j] = 'G') (seq { i .. i + 2 }) then
                    for j in i .. i + 2 do
                        ss.[j] <- 'G'

        for i in 1 .. m - 6 do
            if starts 2 i && starts 2 (i - 1) then
                if Seq.forall (fun j -> ss.[j] = ' ' || ss.[j] = 'I' || ss.[j] = 'H') (seq { i .. i + 4 }) then
                    for j in i .. i + 4 do
                        ss.[j] <- 'I'

        // Turns and bends on what is left (never the first or last used residue).
        for i in 1 .. m - 2 do
            if ss.[i] = ' ' then
                let turn =
                    Seq.exists
                        (fun t -> Seq.exists (fun k -> i >= k && starts t (i - k)) (seq { 1 .. t + 2 }))
                        (seq { 0..2 })

                if turn then
                    ss.[i] <- 'T'
                elif bend.[i] then
                    ss.[i] <- 'S'

        // Back to chain indices.
        let ss8 = Array.create l 'C'
        let used = Array.zeroCreate l
        let breakBefore = Array.zeroCreate l
        let hydrogens = Array2D.create l 3 Single.NaN
        let turns = Array2D.zeroCreate l 3
        let kappaL = Array.create l Single.NaN
        let bendL = Array.zeroCreate l

        for k in 0 .. m - 1 do
            let i = orig.[k]
            ss8.[i] <- (if ss.[k] = ' ' then 'C' else ss.[k])
            used.[i] <- true
            breakBefore.[i] <- bb.Break.[k]
            hydrogens.[i, 0] <- bb.H.[k].X
            hydrogens.[i, 1] <- bb.H.[k].Y
            hydrogens.[i, 2] <- bb.H.[k].Z
            kappaL.[i] <- kappa.[k]
            bendL.[i] <- bend.[k]

            for t in 0..2 do
                turns.[i, t] <- starts t k

        let listed (part: int[,]) (en: float[,]) (asDonor: bool) =
            let perResidue = Array.create l Array.empty

            for k in 0 .. m - 1 do
                perResidue.[orig.[k]] <-
                    [|
                        for s in 0..1 do
                            if part.[k, s] >= 0 then
                                let other = orig.[part.[k, s]]

                                {
                                    Donor = (if asDonor then orig.[k] else other)
                                    Acceptor = (if asDonor then other else orig.[k])
                                    Energy = en.[k, s]
                                }
                    |]

            perResidue

        let asDonor = listed accP accE true

        {
            Ss8 = ss8
            Used = used
            BreakBefore = breakBefore
            Hydrogens = hydrogens
            AsDonor = asDonor
            AsAcceptor = listed donP donE false
            HBonds =
                asDonor
                |> Array.collect (Array.filter (fun hb -> hb.Energy < DsspHBonds.MaxHBondEnergy))
            Turns = turns
            Kappa = kappaL
            Bend = bendL
            Bridges = bridges.ToArray()
            Ladders =
                ladders
                |> Seq.mapi (fun x ld ->
                    {
                        Kind = ld.Kind
                        Sheet = sheet x
                        I = ld.I |> Seq.map (fun k -> orig.[k]) |> Array.ofSeq
                        J = ld.J |> Seq.map (fun k -> orig.[k]) |> Array.ofSeq
                    })
                |> Array.ofSeq
        }

    /// One SS8 letter per residue (G H I T E B S C; see `compute` and the module's residue rule).
    let assign (chain: ProteinChain) : char[] = (compute chain).Ss8

    /// The SS8 letters of a chain as a string.
    let ss8String (chain: ProteinChain) : string = String(assign chain)

    /// The letter for SS8 output of any DSSP-style letter: G H I T E B S stay, everything else (blank, '-', 'P',
    /// 'C', ...) becomes C.
    let toSs8Letter (letter: char) : char =
        match letter with
        | 'G'
        | 'H'
        | 'I'
        | 'T'
        | 'E'
        | 'B'
        | 'S' -> letter
        | _ -> 'C'

    /// ESM's 3-class map of one SS8 letter: G/H/I → H, E/B → E, everything else → C.
    let ss3Of (letter: char) : char =
        match letter with
        | 'G'
        | 'H'
        | 'I' -> 'H'
        | 'E'
        | 'B' -> 'E'
        | _ -> 'C'

    /// The 3-class map of SS8 letters (`ss3Of` at each).
    let toSs3 (ss8: char[]) : char[] = Array.map ss3Of ss8
