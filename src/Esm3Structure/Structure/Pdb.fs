namespace Esm3Structure.Structure

open System
open System.Globalization
open System.Text
open Esm3Structure

/// Which coordinates of a chain a writer uses.
[<RequireQualifiedAccess>]
type AtomLayout =
    /// `ProteinChain.Atom37` (all present atoms, OXT included).
    | Atom37
    /// `ProteinChain.Atom14` (the atom14 slots of each residue type).
    | Atom14

/// PDB format: reading (plain or gzip) and writing of single chains.
///
/// Reading keeps the first MODEL only, reads ATOM records plus HETATM MSE, and applies the chain rules of
/// `AtomSites` (altlocs, insertion codes, hydrogens, unknown residues, MSE -> MET).
[<RequireQualifiedAccess>]
module Pdb =

    let private inv = CultureInfo.InvariantCulture

    let private parseFloat (file: string) (lineNo: int) (line: string) (start: int) (width: int) (what: string) =
        let span = line.AsSpan(start, width).Trim()
        let mutable v = 0.0

        if span.Length = 0 || not (Double.TryParse(span, NumberStyles.Float, inv, &v)) then
            InputError.raise
                file
                (InputLocation.Line lineNo)
                (sprintf "%s '%s' (columns %d-%d) is not a number" what (span.ToString()) (start + 1) (start + width))

        if Double.IsNaN v || Double.IsInfinity v then
            InputError.raise
                file
                (InputLocation.Line lineNo)
                (sprintf "%s '%s' (columns %d-%d) is not finite" what (span.ToString()) (start + 1) (start + width))

        float32 v

    let private optionalFloat
        (file: string)
        (lineNo: int)
        (line: string)
        (start: int)
        (width: int)
        (what: string)
        (fallback: float32)
        =
        if line.Length < start + width || line.AsSpan(start, width).Trim().Length = 0 then
            fallback
        else
            parseFloat file lineNo line start width what

    let private column (line: string) (i: int) =
        if line.Length > i && line.[i] <> ' ' then
            string line.[i]
        else
            ""

    /// The value of a 4-character hybrid-36 residue number, the convention for numbers beyond 9999 (after
    /// R. W. Grosse-Kunstleve's hybrid-36 scheme, cctbx iotbx/pdb/hybrid_36.py): "A000".."ZZZZ" are 10000 onwards
    /// (base 36, digits 0-9A-Z), then "a000".."zzzz". None when `field` is not one.
    let hybrid36 (field: string) : int option =
        let width = 4
        let span = 46656 // 36^3

        let digits (isLetter: char -> bool) (letterBase: char) =
            if field.Length <> width || not (isLetter field.[0]) then
                None
            else
                let mutable v = 0
                let mutable ok = true

                for c in field do
                    if c >= '0' && c <= '9' then
                        v <- v * 36 + int c - int '0'
                    elif isLetter c then
                        v <- v * 36 + 10 + int c - int letterBase
                    else
                        ok <- false

                if ok then Some v else None

        match digits Char.IsAsciiLetterUpper 'A' with
        | Some v -> Some(v - 10 * span + 10000)
        | None ->
            digits Char.IsAsciiLetterLower 'a'
            |> Option.map (fun v -> v + 16 * span + 10000)

    /// Parses one ATOM/HETATM line (PDB v3.3 columns).
    let private parseAtomLine (file: string) (lineNo: int) (record: string) (line: string) : AtomSite =
        if line.Length < 54 then
            InputError.raise
                file
                (InputLocation.Line lineNo)
                (sprintf "%s record is truncated (%d columns; coordinates need 54)" record line.Length)

        let seqText = line.AsSpan(22, 4).Trim()
        let mutable resSeq = 0

        if not (Int32.TryParse(seqText, NumberStyles.AllowLeadingSign, inv, &resSeq)) then
            match hybrid36 (line.Substring(22, 4)) with
            | Some n -> resSeq <- n
            | None ->
                InputError.raise
                    file
                    (InputLocation.Line lineNo)
                    (sprintf
                        "residue number '%s' (columns 23-26) is not an integer (nor a hybrid-36 number)"
                        (seqText.ToString()))

        let element =
            if line.Length >= 78 then
                line.Substring(76, 2).Trim().ToUpperInvariant()
            elif line.Length = 77 then
                line.Substring(76, 1).Trim().ToUpperInvariant()
            else
                ""

        {
            Line = lineNo
            Hetero = line.StartsWith("HETATM", StringComparison.Ordinal)
            AtomName = line.Substring(12, 4).Trim()
            AltLoc = column line 16
            ResName = line.Substring(17, 3).Trim()
            ChainId = column line 21
            ResSeq = resSeq
            InsCode = column line 26
            X = parseFloat file lineNo line 30 8 "x coordinate"
            Y = parseFloat file lineNo line 38 8 "y coordinate"
            Z = parseFloat file lineNo line 46 8 "z coordinate"
            Occupancy = optionalFloat file lineNo line 54 6 "occupancy" 1.0f
            BFactor = optionalFloat file lineNo line 60 6 "B-factor" 0.0f
            Element = element
        }

    /// The record names of the PDB format (wwPDB "Atomic Coordinate Entry Format Version 3.3", the record types of
    /// its sections), used only to tell a PDB file without atoms from a file that is not PDB at all.
    let private recordNames =
        set
            [
                "HEADER"
                "OBSLTE"
                "TITLE"
                "SPLIT"
                "CAVEAT"
                "COMPND"
                "SOURCE"
                "KEYWDS"
                "EXPDTA"
                "NUMMDL"
                "MDLTYP"
                "AUTHOR"
                "REVDAT"
                "SPRSDE"
                "JRNL"
                "REMARK"
                "DBREF"
                "DBREF1"
                "DBREF2"
                "SEQADV"
                "SEQRES"
                "MODRES"
                "HET"
                "HETNAM"
                "HETSYN"
                "FORMUL"
                "HELIX"
                "SHEET"
                "SSBOND"
                "LINK"
                "CISPEP"
                "SITE"
                "CRYST1"
                "ORIGX1"
                "ORIGX2"
                "ORIGX3"
                "SCALE1"
                "SCALE2"
                "SCALE3"
                "MTRIX1"
                "MTRIX2"
                "MTRIX3"
                "MODEL"
                "ATOM"
                "ANISOU"
                "TER"
                "HETATM"
                "ENDMDL"
                "CONECT"
                "MASTER"
                "END"
            ]

    /// True when some line of `text` starts with a PDB record name (columns 1-6, blank-padded).
    let private looksLikePdb (text: string) =
        text.Split('\n')
        |> Array.exists (fun line ->
            let head = (if line.Length > 6 then line.Substring(0, 6) else line).TrimEnd()
            recordNames.Contains head)

    /// The atom records of the first model of a PDB text (all ATOM and HETATM lines up to the first ENDMDL or END).
    /// Raises `InputException` (naming `file` and the line) for empty or binary text and malformed records.
    let atomSites (file: string) (text: string) : AtomSite[] =
        TextFiles.check file text
        let sites = ResizeArray<AtomSite>()
        let mutable lineNo = 0
        let mutable pos = 0
        let mutable fin = false

        while not fin && pos < text.Length do
            let nl = text.IndexOf('\n', pos)
            let stop = if nl < 0 then text.Length else nl
            let line = text.Substring(pos, stop - pos).TrimEnd('\r')
            pos <- stop + 1
            lineNo <- lineNo + 1

            let record =
                if line.StartsWith("HETATM", StringComparison.Ordinal) then
                    "HETATM"
                elif
                    line.StartsWith("ATOM", StringComparison.Ordinal)
                    && (line.Length = 4 || line.[4] = ' ' || Char.IsDigit line.[4])
                then
                    "ATOM"
                else
                    ""

            if record <> "" then
                sites.Add(parseAtomLine file lineNo record line)
            elif line.StartsWith("ENDMDL", StringComparison.Ordinal) then
                fin <- sites.Count > 0
            elif
                line.StartsWith("END", StringComparison.Ordinal)
                && line.Substring(3).Trim() = ""
            then
                fin <- true

        if sites.Count = 0 then
            if looksLikePdb text then
                InputError.raise file InputLocation.Whole "no ATOM or HETATM records"
            else
                InputError.raise
                    file
                    InputLocation.Whole
                    "not a PDB or mmCIF file (no line starts with a PDB record name, none with 'data_')"

        sites.ToArray()

    /// Parses PDB text into the chain `chain` (None: the first chain with an amino-acid residue), naming it `name`.
    /// Raises `InputException` naming `name` and the line or field for every problem with the input.
    let parse (name: string) (text: string) (chain: string option) : ProteinChain =
        AtomSites.toChain name name (atomSites name text) chain

    /// Reads a PDB file (plain or gzip, detected by content) into the chain `chain` (None: the first chain with an
    /// amino-acid residue). The chain's name is the file stem ("1ubq_A" for "1ubq_A.pdb.gz").
    /// Raises `InputException` naming the file and the line or field for every problem with the input.
    let read (path: string) (chain: string option) : ProteinChain =
        let text = TextFiles.read path
        AtomSites.toChain path (TextFiles.stem path) (atomSites path text) chain

    // ---------------------------------------------------------------------------------------------------------------
    // Writing.

    let private fixedWidth (width: int) (decimals: int) (what: string) (v: float32) =
        let s = (float v).ToString("F" + string decimals, inv)

        if s.Length > width then
            raise (ArgumentException(sprintf "%s %g does not fit the PDB column (%d characters)" what v width))

        s.PadLeft width

    /// The atom37 indices written for residue type `r` in PDB order: the atom14 order, then the other atom37 atoms.
    /// The order atoms of each residue type (0 … 20) are written in: its atom14 slots first (N, CA, C, O, side
    /// chain), then every other atom37 slot (OXT among them). Shared by the PDB and mmCIF writers.
    let writeOrder37 =
        Array.init 21 (fun r ->
            let first =
                [|
                    for k in 0..13 do
                        if ResidueConstants.restypeAtom14Mask.[r, k] then
                            ResidueConstants.restypeAtom14ToAtom37.[r, k]
                |]

            Array.append first ([| 0..36 |] |> Array.filter (fun a -> not (Array.contains a first))))

    /// PDB text for a chain: ATOM records in standard columns (element column included), TER and END.
    /// `layout` picks atom37 or atom14 coordinates; only present atoms are written. `bfactors`, when given, holds one
    /// value per residue and overrides the chain's B-factors (e.g. pLDDT). Occupancy is 1.00; serials wrap at 99999.
    /// Raises `ArgumentException` for values that do not fit the fixed columns (chain id longer than 1 character,
    /// residue number outside -999..9999, coordinates outside -999.999..9999.999, B-factor outside -99.99..999.99)
    /// or a `bfactors` array of the wrong length.
    let toText (layout: AtomLayout) (bfactors: float32[] option) (chain: ProteinChain) : string =
        let n = ProteinChain.length chain

        match bfactors with
        | Some b when b.Length <> n ->
            raise (ArgumentException(sprintf "bfactors has %d values for %d residues" b.Length n, "bfactors"))
        | _ -> ()

        if chain.ChainId.Length > 1 then
            raise (
                ArgumentException(sprintf "chain id '%s' does not fit the one-character PDB chain column" chain.ChainId)
            )

        let chainCol = if chain.ChainId = "" then ' ' else chain.ChainId.[0]
        let restypes = ProteinChain.restypeIndices chain
        let sb = StringBuilder()
        let mutable serial = 0

        let residueFields i =
            let resName =
                let rn = chain.ResidueNames.[i]

                if rn.Length > 3 then
                    ResidueConstants.resnames.[restypes.[i]]
                else
                    rn

            let num = chain.ResidueIndex.[i]

            if num < -999 || num > 9999 then
                raise (ArgumentException(sprintf "residue number %d does not fit the PDB column" num))

            let ins = chain.InsertionCodes.[i]
            let insCol = if ins = "" then ' ' else ins.[0]
            sprintf "%-3s %c%4d%c" resName chainCol num insCol

        for i in 0 .. n - 1 do
            let fields = residueFields i
            let r = restypes.[i]

            let atoms =
                match layout with
                | AtomLayout.Atom37 ->
                    writeOrder37.[r]
                    |> Array.filter (fun a -> chain.Atom37Mask.[i, a])
                    |> Array.map (fun a ->
                        ResidueConstants.atomTypes.[a],
                        chain.Atom37.[i, a, 0],
                        chain.Atom37.[i, a, 1],
                        chain.Atom37.[i, a, 2],
                        chain.BFactors.[i, a])
                | AtomLayout.Atom14 ->
                    [|
                        for k in 0..13 do
                            if chain.Atom14Mask.[i, k] then
                                let a = ResidueConstants.restypeAtom14ToAtom37.[r, k]

                                ResidueConstants.atom14Names.[r].[k],
                                chain.Atom14.[i, k, 0],
                                chain.Atom14.[i, k, 1],
                                chain.Atom14.[i, k, 2],
                                chain.BFactors.[i, a]
                    |]

            for atomName, x, y, z, b in atoms do
                serial <- serial % 99999 + 1

                let b =
                    match bfactors with
                    | Some bs -> bs.[i]
                    | None -> b

                sb
                    .Append("ATOM  ")
                    .Append(serial.ToString(inv).PadLeft 5)
                    .Append(' ')
                    .Append((" " + atomName).PadRight 4)
                    .Append(' ')
                    .Append(fields)
                    .Append("   ")
                    .Append(fixedWidth 8 3 "x coordinate" x)
                    .Append(fixedWidth 8 3 "y coordinate" y)
                    .Append(fixedWidth 8 3 "z coordinate" z)
                    .Append("  1.00")
                    .Append(fixedWidth 6 2 "B-factor" b)
                    .Append(String(' ', 10))
                    .Append((ResidueConstants.elementOf atomName).PadLeft 2)
                    .Append('\n')
                |> ignore

        if n > 0 then
            serial <- serial % 99999 + 1

            sb
                .Append("TER   ")
                .Append(serial.ToString(inv).PadLeft 5)
                .Append("      ")
                .Append(residueFields (n - 1))
                .Append('\n')
            |> ignore

        sb.Append("END\n").ToString()

    /// Writes `toText layout bfactors chain` to `path` atomically (temporary file, then rename); gzip when the path
    /// ends in ".gz".
    let write (path: string) (layout: AtomLayout) (bfactors: float32[] option) (chain: ProteinChain) : unit =
        TextFiles.writeAtomic path (toText layout bfactors chain)
