namespace Esm3Structure.Structure

open System
open System.Collections.Generic
open System.Globalization
open Esm3Structure

/// mmCIF (PDBx) format: reading a chain from the `_atom_site` category (plain or gzip).
///
/// The tokenizer follows CIF 1.1: `#` comments, `'..'` / `".."` quoted values (a quote ends a value only when
/// followed by whitespace), `;` text fields (a line starting with `;` up to the next line starting with `;`, in any
/// category), and unquoted `.` / `?` as null. Columns of `_atom_site` are found by name, in any order:
/// coordinates `Cartn_x/y/z` are required; atom, residue, chain and number columns use the author (`auth_*`) value
/// and fall back to the `label_*` one; `group_PDB`, `type_symbol`, `label_alt_id`, `pdbx_PDB_ins_code`, `occupancy`,
/// `B_iso_or_equiv` and `pdbx_PDB_model_num` are optional. Without `group_PDB` (gemmi writes none), residues whose
/// names are not amino acids are treated as HETATM. The chain rules are those of `AtomSites` (first model only).
[<RequireQualifiedAccess>]
module Mmcif =

    type private Kind =
        | Value = 0
        | Tag = 1
        | Loop = 2
        | Data = 3
        | Other = 4
        | End = 5

    [<Struct>]
    type private Token =
        {
            Kind: Kind
            Start: int
            Length: int
            Line: int
            Quoted: bool
        }

    let private isSpace (c: char) =
        c = ' ' || c = '\t' || c = '\r' || c = '\n'

    /// A pull tokenizer over the whole text; values are positions into the text, not strings.
    type private Tokenizer(file: string, text: string) =
        let mutable pos = 0
        let mutable line = 1

        let token kind start length quoted tokLine =
            {
                Kind = kind
                Start = start
                Length = length
                Line = tokLine
                Quoted = quoted
            }

        member _.Text(t: Token) = text.Substring(t.Start, t.Length)

        member _.Span(t: Token) = text.AsSpan(t.Start, t.Length)

        member _.Next() : Token =
            let mutable result = ValueNone

            while result.IsNone do
                if pos >= text.Length then
                    result <- ValueSome(token Kind.End pos 0 false line)
                else
                    let c = text.[pos]

                    if c = '\n' then
                        line <- line + 1
                        pos <- pos + 1
                    elif isSpace c then
                        pos <- pos + 1
                    elif c = '#' then
                        while pos < text.Length && text.[pos] <> '\n' do
                            pos <- pos + 1
                    elif c = ';' && (pos = 0 || text.[pos - 1] = '\n') then
                        // Text field: up to the next line that starts with ';'.
                        let startLine = line
                        let close = text.IndexOf("\n;", pos + 1, StringComparison.Ordinal)

                        if close < 0 then
                            InputError.raise
                                file
                                (InputLocation.Line startLine)
                                "unterminated text field (no closing ';' line)"

                        for i in pos..close do
                            if text.[i] = '\n' then
                                line <- line + 1

                        result <- ValueSome(token Kind.Value (pos + 1) (close - pos - 1) true startLine)
                        pos <- close + 2
                    elif c = '\'' || c = '"' then
                        // Quoted value: the quote ends it only when followed by whitespace (or the end).
                        let mutable q = pos + 1
                        let mutable found = -1

                        while found < 0 do
                            if q >= text.Length || text.[q] = '\n' then
                                InputError.raise
                                    file
                                    (InputLocation.Line line)
                                    (sprintf "unterminated quoted value (%c)" c)
                            elif text.[q] = c && (q + 1 >= text.Length || isSpace text.[q + 1]) then
                                found <- q
                            else
                                q <- q + 1

                        result <- ValueSome(token Kind.Value (pos + 1) (found - pos - 1) true line)
                        pos <- found + 1
                    else
                        let start = pos

                        while pos < text.Length && not (isSpace text.[pos]) do
                            pos <- pos + 1

                        let word = text.AsSpan(start, pos - start)

                        let kind =
                            if c = '_' then
                                Kind.Tag
                            elif word.Equals("loop_", StringComparison.OrdinalIgnoreCase) then
                                Kind.Loop
                            elif word.StartsWith("data_", StringComparison.OrdinalIgnoreCase) then
                                Kind.Data
                            elif
                                word.StartsWith("save_", StringComparison.OrdinalIgnoreCase)
                                || word.Equals("global_", StringComparison.OrdinalIgnoreCase)
                                || word.Equals("stop_", StringComparison.OrdinalIgnoreCase)
                            then
                                Kind.Other
                            else
                                Kind.Value

                        result <- ValueSome(token kind start (pos - start) false line)

            result.Value

    let private prefix = "_atom_site."

    /// The `_atom_site` table: column names (lower case, without the category) and the values row by row.
    let private readAtomSiteTable (file: string) (tk: Tokenizer) : string[] * Token[] =
        let mutable tok = tk.Next()
        let mutable table = None
        let single = ResizeArray<string * Token>()

        while tok.Kind <> Kind.End && table.IsNone do
            match tok.Kind with
            | Kind.Loop ->
                let loopLine = tok.Line
                let tags = ResizeArray<string>()
                tok <- tk.Next()

                while tok.Kind = Kind.Tag do
                    tags.Add(tk.Text tok)
                    tok <- tk.Next()

                if tags.Count = 0 then
                    InputError.raise file (InputLocation.Line loopLine) "loop_ without tags"

                let isAtomSite = tags.[0].StartsWith(prefix, StringComparison.OrdinalIgnoreCase)
                let values = ResizeArray<Token>()
                let mutable count = 0
                let mutable lastLine = loopLine

                while tok.Kind = Kind.Value do
                    if isAtomSite then
                        values.Add tok

                    count <- count + 1
                    lastLine <- tok.Line
                    tok <- tk.Next()

                if count % tags.Count <> 0 then
                    InputError.raise
                        file
                        (InputLocation.Line lastLine)
                        (sprintf
                            "the loop of %s ends mid-row: %d values for %d columns (truncated file?)"
                            tags.[0]
                            count
                            tags.Count)

                if isAtomSite then
                    if count = 0 then
                        InputError.raise file (InputLocation.Field "_atom_site") "the _atom_site loop has no rows"

                    let names =
                        tags
                        |> Seq.map (fun t -> t.Substring(prefix.Length).ToLowerInvariant())
                        |> Array.ofSeq

                    table <- Some(names, values.ToArray())
            | Kind.Tag ->
                let tag = tk.Text tok
                let value = tk.Next()

                if value.Kind <> Kind.Value then
                    InputError.raise file (InputLocation.Line tok.Line) (sprintf "%s has no value" tag)

                if tag.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) then
                    single.Add(tag.Substring(prefix.Length).ToLowerInvariant(), value)

                tok <- tk.Next()
            | Kind.Value ->
                InputError.raise
                    file
                    (InputLocation.Line tok.Line)
                    (sprintf "unexpected value '%s' outside a loop or tag" (tk.Text tok))
            | _ -> tok <- tk.Next()

        match table with
        | Some t -> t
        | None when single.Count > 0 -> (single |> Seq.map fst |> Array.ofSeq), (single |> Seq.map snd |> Array.ofSeq)
        | None ->
            InputError.raise
                file
                (InputLocation.Field "_atom_site")
                "no _atom_site loop (not an mmCIF coordinate file?)"

    /// The atom records of the first model of an mmCIF text.
    /// Raises `InputException` (naming `file` and the line or field) for every problem with the input.
    let atomSites (file: string) (text: string) : AtomSite[] =
        TextFiles.check file text
        let tk = Tokenizer(file, text)
        let names, values = readAtomSiteTable file tk
        let ncol = names.Length
        let nrow = values.Length / ncol

        let col (name: string) =
            Array.IndexOf(names, name.ToLowerInvariant())

        let required (preferred: string) (fallback: string) =
            let a = col preferred
            let b = if fallback = "" then -1 else col fallback

            if a < 0 && b < 0 then
                InputError.raise
                    file
                    (InputLocation.Field(prefix + (if fallback = "" then preferred else fallback)))
                    "missing column"

            a, b

        let cx, _ = required "Cartn_x" ""
        let cy, _ = required "Cartn_y" ""
        let cz, _ = required "Cartn_z" ""
        let atomA, atomB = required "auth_atom_id" "label_atom_id"
        let compA, compB = required "auth_comp_id" "label_comp_id"
        let asymA, asymB = required "auth_asym_id" "label_asym_id"
        let seqA, seqB = required "auth_seq_id" "label_seq_id"
        let cGroup = col "group_PDB"
        let cType = col "type_symbol"
        let cAlt = col "label_alt_id"
        let cIns = col "pdbx_PDB_ins_code"
        let cOcc = col "occupancy"
        let cB = col "B_iso_or_equiv"
        let cModel = col "pdbx_PDB_model_num"

        let isNull (t: Token) =
            not t.Quoted && t.Length = 1 && (text.[t.Start] = '.' || text.[t.Start] = '?')

        // The value at (row, column) as a string; "" for null or an absent column.
        let str row c =
            if c < 0 then
                ""
            else
                let t = values.[row * ncol + c]
                if isNull t then "" else tk.Text t

        // Author value, else label value.
        let either row a b =
            match str row a with
            | "" -> str row b
            | s -> s

        let number row c (what: string) (fallback: float32) (requiredValue: bool) =
            if c < 0 || isNull values.[row * ncol + c] then
                if requiredValue then
                    InputError.raise
                        file
                        (InputLocation.Line values.[row * ncol].Line)
                        (sprintf "%s%s is missing" prefix what)

                fallback
            else
                let t = values.[row * ncol + c]
                let mutable span = tk.Span t
                let paren = span.IndexOf '('

                if paren > 0 then
                    span <- span.Slice(0, paren) // standard uncertainty, e.g. 12.345(6)

                let mutable v = 0.0

                if not (Double.TryParse(span, NumberStyles.Float, CultureInfo.InvariantCulture, &v)) then
                    InputError.raise
                        file
                        (InputLocation.Line t.Line)
                        (sprintf "%s%s '%s' is not a number" prefix what (tk.Text t))

                if Double.IsNaN v || Double.IsInfinity v then
                    InputError.raise
                        file
                        (InputLocation.Line t.Line)
                        (sprintf "%s%s '%s' is not finite" prefix what (tk.Text t))

                float32 v

        let firstModel = str 0 cModel
        let sites = ResizeArray<AtomSite>(nrow)

        for row in 0 .. nrow - 1 do
            if cModel < 0 || str row cModel = firstModel then
                let line = values.[row * ncol].Line
                let comp = either row compA compB

                let hetero =
                    match (str row cGroup).ToUpperInvariant() with
                    | "HETATM" -> true
                    | "ATOM" -> false
                    | _ -> not (AtomSites.isAminoAcidName comp)

                let seqText = either row seqA seqB
                let mutable resSeq = 0

                if
                    not (Int32.TryParse(seqText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, &resSeq))
                    && not hetero
                then
                    InputError.raise
                        file
                        (InputLocation.Line line)
                        (sprintf "residue number '%s' (%sauth_seq_id) is not an integer" seqText prefix)

                let atomName = either row atomA atomB

                if atomName = "" then
                    InputError.raise
                        file
                        (InputLocation.Line line)
                        (sprintf "%sauth_atom_id/label_atom_id is missing" prefix)

                sites.Add
                    {
                        Line = line
                        Hetero = hetero
                        AtomName = atomName
                        AltLoc = str row cAlt
                        ResName = comp
                        ChainId = either row asymA asymB
                        ResSeq = resSeq
                        InsCode = str row cIns
                        X = number row cx "Cartn_x" 0.0f true
                        Y = number row cy "Cartn_y" 0.0f true
                        Z = number row cz "Cartn_z" 0.0f true
                        Occupancy = number row cOcc "occupancy" 1.0f false
                        BFactor = number row cB "B_iso_or_equiv" 0.0f false
                        Element = (str row cType).ToUpperInvariant()
                    }

        sites.ToArray()

    /// Parses mmCIF text into the chain `chain` (author chain id; None: the first chain with an amino-acid residue),
    /// naming it `name`. Raises `InputException` naming `name` and the line or field for every problem.
    let parse (name: string) (text: string) (chain: string option) : ProteinChain =
        AtomSites.toChain name name (atomSites name text) chain

    /// Reads an mmCIF file (plain or gzip, detected by content) into the chain `chain` (author chain id; None: the
    /// first chain with an amino-acid residue). The chain's name is the file stem.
    /// Raises `InputException` naming the file and the line or field for every problem with the input.
    let read (path: string) (chain: string option) : ProteinChain =
        let text = TextFiles.read path
        AtomSites.toChain path (TextFiles.stem path) (atomSites path text) chain

    /// mmCIF text of chains as models 1, 2, … of one entry (`pdbx_PDB_model_num`): a `_atom_site` loop with label
    /// and author columns (label_seq_id 1 … L, auth_seq_id the chain's residue numbers), present atom37 atoms in
    /// `Pdb.writeOrder37`, occupancy 1, B-factors from the chain. Chain ids may be longer than one character ("" is
    /// written as "A"). `read` and `parse` read the first model back.
    let toText (chains: ProteinChain[]) : string =
        let inv = CultureInfo.InvariantCulture
        let sb = Text.StringBuilder()

        let name =
            match chains |> Array.tryHead with
            | Some c when not (String.IsNullOrWhiteSpace c.Name) ->
                String(
                    c.Name.ToCharArray()
                    |> Array.map (fun ch -> if Char.IsWhiteSpace ch then '_' else ch)
                )
            | _ -> "model"

        sb.Append("data_").Append(name).Append("\n#\nloop_\n") |> ignore

        for column in
            [
                "group_PDB"
                "id"
                "type_symbol"
                "label_atom_id"
                "label_alt_id"
                "label_comp_id"
                "label_asym_id"
                "label_entity_id"
                "label_seq_id"
                "pdbx_PDB_ins_code"
                "Cartn_x"
                "Cartn_y"
                "Cartn_z"
                "occupancy"
                "B_iso_or_equiv"
                "auth_seq_id"
                "auth_comp_id"
                "auth_asym_id"
                "auth_atom_id"
                "pdbx_PDB_model_num"
            ] do
            sb.Append(prefix).Append(column).Append('\n') |> ignore

        let mutable serial = 0

        chains
        |> Array.iteri (fun m chain ->
            let asym = if chain.ChainId = "" then "A" else chain.ChainId
            let restypes = ProteinChain.restypeIndices chain

            for i in 0 .. ProteinChain.length chain - 1 do
                let r = restypes.[i]

                let resName =
                    let rn = chain.ResidueNames.[i]

                    if String.IsNullOrWhiteSpace rn || rn.Contains ' ' then
                        ResidueConstants.resnames.[r]
                    else
                        rn

                let ins =
                    if chain.InsertionCodes.[i] = "" then
                        "?"
                    else
                        chain.InsertionCodes.[i]

                for a in Pdb.writeOrder37.[r] do
                    if chain.Atom37Mask.[i, a] then
                        serial <- serial + 1
                        let atom = ResidueConstants.atomTypes.[a]

                        sb.AppendFormat(
                            inv,
                            "ATOM {0} {1} {2} . {3} {4} 1 {5} {6} {7:F3} {8:F3} {9:F3} 1.00 {10:F2} {11} {3} {4} {2} {12}\n",
                            serial,
                            ResidueConstants.elementOf atom,
                            atom,
                            resName,
                            asym,
                            i + 1,
                            ins,
                            chain.Atom37.[i, a, 0],
                            chain.Atom37.[i, a, 1],
                            chain.Atom37.[i, a, 2],
                            chain.BFactors.[i, a],
                            chain.ResidueIndex.[i],
                            m + 1
                        )
                        |> ignore)

        sb.Append("#\n").ToString()
