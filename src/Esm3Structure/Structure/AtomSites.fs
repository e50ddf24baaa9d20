namespace Esm3Structure.Structure

open System
open System.Collections.Generic
open Esm3Structure

/// One atom record of a coordinate file (a PDB ATOM/HETATM line or an mmCIF `_atom_site` row), as read.
type AtomSite =
    {
        /// 1-based line of the record in its file (for error messages).
        Line: int
        /// True for HETATM records (in mmCIF without `group_PDB`: residue names that are not amino acids).
        Hetero: bool
        /// Atom name, trimmed (e.g. "CA").
        AtomName: string
        /// Alternate-location label; "" when blank.
        AltLoc: string
        /// Residue name as read, trimmed (e.g. "MSE").
        ResName: string
        /// Chain id; "" when blank.
        ChainId: string
        /// Author residue number.
        ResSeq: int
        /// Insertion code; "" when blank.
        InsCode: string
        /// x coordinate, Å.
        X: float32
        /// y coordinate, Å.
        Y: float32
        /// z coordinate, Å.
        Z: float32
        /// Occupancy (1 when not given).
        Occupancy: float32
        /// B-factor (0 when not given).
        BFactor: float32
        /// Element symbol, upper case; "" when not given.
        Element: string
    }

/// The rules that turn the atom records of one model into a `ProteinChain`, shared by the PDB and mmCIF readers.
///
/// - ATOM records are kept, and HETATM records only for MSE (read as MET, atom SE becomes SD). Waters, ligands and
///   other HETATM residues are skipped. Hydrogens (element H or D; without an element, names starting with H) too.
/// - Common tool aliases are mapped: HSD/HSE/HSP/HID/HIE/HIP -> HIS, CYX -> CYS; atoms OT1/OT2 -> O/OXT, ILE CD -> CD1.
/// - Other residue names read as 'X' (their atoms whose names are atom37 names are kept).
/// - Atoms that are not atom37 atoms of their residue type (OXT is allowed for all) are ignored; of duplicate atom
///   names the first is kept.
/// - A residue is a chain id + residue number + insertion code, and its atoms are consecutive (among the kept
///   records of its chain): a residue that appears again after other residues is an error. Per residue, the
///   blank-altloc atoms are kept plus the atoms of the one altloc label with the highest summed occupancy (ties: the
///   first label seen).
/// - Residues missing backbone atoms are kept with mask false; a chain without any residue that has N, CA and C is
///   an error.
[<RequireQualifiedAccess>]
module AtomSites =

    let private residueAliases =
        dict
            [
                "MSE", "MET"
                "HSD", "HIS"
                "HSE", "HIS"
                "HSP", "HIS"
                "HID", "HIS"
                "HIE", "HIS"
                "HIP", "HIS"
                "CYX", "CYS"
            ]

    /// The canonical three-letter name of a residue name: MSE -> MET and the tool aliases above; others unchanged.
    let canonicalResName (name: string) : string =
        match residueAliases.TryGetValue name with
        | true, n -> n
        | _ -> name

    /// True for the 20 amino-acid names, MSE and the tool aliases (the names read as ATOM when an mmCIF file has no
    /// `group_PDB` column).
    let isAminoAcidName (name: string) : bool =
        ResidueConstants.restype3to1.ContainsKey(canonicalResName name)

    /// True when the record is a hydrogen (or deuterium).
    let isHydrogen (site: AtomSite) : bool =
        if site.Element <> "" then
            site.Element = "H" || site.Element = "D"
        else
            let name =
                site.AtomName.TrimStart([| '0'; '1'; '2'; '3'; '4'; '5'; '6'; '7'; '8'; '9' |])

            name.StartsWith("H", StringComparison.Ordinal)

    /// True when the record belongs to a residue that is read (ATOM, or HETATM MSE) and is not a hydrogen.
    let isKept (site: AtomSite) : bool =
        (not site.Hetero || site.ResName = "MSE") && not (isHydrogen site)

    // [21, 37] atoms accepted per residue type: the type's heavy atoms plus OXT; for X every atom37 name.
    let private allowed =
        Array2D.init 21 37 (fun r a ->
            r = ResidueConstants.unkRestypeIndex
            || a = ResidueConstants.oxtIndex
            || ResidueConstants.restypeAtom37Mask.[r, a])

    let private canonicalAtomName (resName: string) (atom: string) =
        match resName, atom with
        | "MSE", "SE" -> "SD"
        | "ILE", "CD" -> "CD1"
        | _, "OT1" -> "O"
        | _, "OT2" -> "OXT"
        | _ -> atom

    /// Shows a chain id for messages ("" as "' '").
    let private show (chainId: string) =
        sprintf "'%s'" (if chainId = "" then " " else chainId)

    type private Residue =
        {
            Key: struct (int * string)
            Atoms: ResizeArray<AtomSite>
        }

    type private Chain =
        {
            Id: string
            Residues: ResizeArray<Residue>
            ByKey: Dictionary<struct (int * string), Residue>
            mutable HasProtein: bool
        }

    /// Builds the chain `chain` (None: the first chain that has an amino-acid residue) from the atom records of one
    /// model. `file` names the input in errors; `name` becomes the chain's `Name`.
    /// Raises `InputException` for a missing chain, a chain without amino acids, or no complete backbone.
    let toChain (file: string) (name: string) (sites: IReadOnlyList<AtomSite>) (chain: string option) : ProteinChain =
        let chains = ResizeArray<Chain>()
        let byId = Dictionary<string, Chain>()
        let allIds = ResizeArray<string>()

        for s in sites do
            if not (byId.ContainsKey s.ChainId) && not (allIds.Contains s.ChainId) then
                allIds.Add s.ChainId

            if isKept s then
                let c =
                    match byId.TryGetValue s.ChainId with
                    | true, c -> c
                    | _ ->
                        let c =
                            {
                                Id = s.ChainId
                                Residues = ResizeArray()
                                ByKey = Dictionary()
                                HasProtein = false
                            }

                        byId.[s.ChainId] <- c
                        chains.Add c
                        c

                let key = struct (s.ResSeq, s.InsCode)

                let r =
                    match c.ByKey.TryGetValue key with
                    | true, r when Object.ReferenceEquals(r, c.Residues.[c.Residues.Count - 1]) -> r
                    | true, r ->
                        // Merging would silently mix two residues (e.g. PDB numbers that wrap after 9999).
                        let struct (num, ins) = key

                        let hint =
                            if c.ByKey.ContainsKey(struct (9999, "")) then
                                "; residue numbers that wrap after 9999 cannot be read (use hybrid-36 numbers or mmCIF)"
                            else
                                ""

                        InputError.raise
                            file
                            (InputLocation.Line s.Line)
                            (sprintf
                                "residue %d%s of chain %s appears again after other residues (first on line %d); a residue's atoms must be consecutive%s"
                                num
                                ins
                                (show s.ChainId)
                                r.Atoms.[0].Line
                                hint)
                    | _ ->
                        let r = { Key = key; Atoms = ResizeArray() }
                        c.ByKey.[key] <- r
                        c.Residues.Add r
                        r

                r.Atoms.Add s

                if
                    not c.HasProtein
                    && (ResidueConstants.restype3to1.ContainsKey(canonicalResName s.ResName)
                        && s.ResName <> "UNK"
                        || s.AtomName = "CA")
                then
                    c.HasProtein <- true

        let list (ids: seq<string>) =
            let ids = List.ofSeq ids

            if ids.IsEmpty then
                "none"
            else
                String.Join(", ", ids |> List.map show)

        let selected =
            match chain with
            | Some id ->
                match byId.TryGetValue id with
                | true, c -> c
                | _ when allIds.Contains id ->
                    InputError.raise
                        file
                        (InputLocation.Field "chain")
                        (sprintf
                            "chain %s has no amino-acid residues (chains with amino acids: %s)"
                            (show id)
                            (list (chains |> Seq.map (fun c -> c.Id))))
                | _ ->
                    let present = Seq.append (chains |> Seq.map (fun c -> c.Id)) allIds |> Seq.distinct

                    InputError.raise
                        file
                        (InputLocation.Field "chain")
                        (sprintf "chain %s not found; chains present: %s" (show id) (list present))
            | None ->
                match chains |> Seq.tryFind (fun c -> c.HasProtein) with
                | Some c -> c
                | None ->
                    InputError.raise
                        file
                        InputLocation.Whole
                        (sprintf
                            "no chain with an amino-acid residue; chains present: %s"
                            (list (Seq.append (chains |> Seq.map (fun c -> c.Id)) allIds |> Seq.distinct)))

        let n = selected.Residues.Count
        let resNames = Array.zeroCreate n
        let sequence = Array.zeroCreate n
        let resIndex = Array.zeroCreate n
        let insCodes = Array.zeroCreate n
        let coords = Array3D.create n 37 3 Single.NaN
        let bfactors = Array2D.zeroCreate n 37
        let filled = Array2D.zeroCreate n 37

        for i in 0 .. n - 1 do
            let res = selected.Residues.[i]
            let struct (seqNum, ins) = res.Key

            // Altloc choice: the label with the highest summed occupancy, first seen on ties.
            let kept =
                if res.Atoms.TrueForAll(fun a -> a.AltLoc = "") then
                    res.Atoms
                else
                    let labels = ResizeArray<string>()
                    let sums = Dictionary<string, float>()

                    for a in res.Atoms do
                        if a.AltLoc <> "" then
                            match sums.TryGetValue a.AltLoc with
                            | true, v -> sums.[a.AltLoc] <- v + float a.Occupancy
                            | _ ->
                                labels.Add a.AltLoc
                                sums.[a.AltLoc] <- float a.Occupancy

                    let chosen =
                        let mutable best = ""
                        let mutable bestSum = Double.NegativeInfinity

                        for l in labels do
                            if sums.[l] > bestSum then
                                best <- l
                                bestSum <- sums.[l]

                        best

                    res.Atoms.FindAll(fun a -> a.AltLoc = "" || a.AltLoc = chosen)

            let readName = kept.[0].ResName
            let canonical = canonicalResName readName
            let letter = ResidueConstants.oneLetterOf canonical
            let r = ResidueConstants.restypeIndex letter
            resNames.[i] <- canonical
            sequence.[i] <- letter
            resIndex.[i] <- seqNum
            insCodes.[i] <- ins

            for a in kept do
                if a.ResName = readName then
                    let atomIdx = ResidueConstants.atom37Index (canonicalAtomName readName a.AtomName)

                    if atomIdx >= 0 && allowed.[r, atomIdx] && not filled.[i, atomIdx] then
                        filled.[i, atomIdx] <- true
                        coords.[i, atomIdx, 0] <- a.X
                        coords.[i, atomIdx, 1] <- a.Y
                        coords.[i, atomIdx, 2] <- a.Z
                        bfactors.[i, atomIdx] <- a.BFactor

        let complete =
            Seq.init n id
            |> Seq.exists (fun i -> filled.[i, 0] && filled.[i, 1] && filled.[i, 2])

        if not complete then
            InputError.raise
                file
                (InputLocation.Field(sprintf "chain %s" (show selected.Id)))
                "no complete backbone: no residue has all of N, CA and C"

        ProteinChain.create name selected.Id resNames (String(sequence)) resIndex insCodes coords bfactors
