namespace Esm3Structure.Structure

open System
open System.IO

/// The coordinate-file formats the readers know.
[<RequireQualifiedAccess>]
type StructureFormat =
    /// PDB (fixed columns).
    | Pdb
    /// mmCIF / PDBx.
    | Mmcif

/// Reads a chain from a PDB or mmCIF file, choosing the format by content (a first data line starting with
/// `data_` means mmCIF) and otherwise by extension (.cif, .mmcif, with or without .gz).
[<RequireQualifiedAccess>]
module StructureFile =

    /// The format of a text: mmCIF when its first line that is neither blank nor a `#` comment starts with `data_`;
    /// otherwise mmCIF when `path` ends in .cif or .mmcif (optionally + .gz), else PDB.
    let detect (path: string) (text: string) : StructureFormat =
        let rec firstLine (pos: int) =
            if pos >= text.Length then
                ""
            else
                let nl = text.IndexOf('\n', pos)
                let stop = if nl < 0 then text.Length else nl
                let line = text.Substring(pos, stop - pos).Trim()

                if line = "" || line.StartsWith "#" then
                    firstLine (stop + 1)
                else
                    line

        if firstLine(0).StartsWith("data_", StringComparison.OrdinalIgnoreCase) then
            StructureFormat.Mmcif
        else
            let name = (TextFiles.withoutGz (Path.GetFileName path)).ToLowerInvariant()

            if name.EndsWith ".cif" || name.EndsWith ".mmcif" then
                StructureFormat.Mmcif
            else
                StructureFormat.Pdb

    /// Parses a PDB or mmCIF text (format detected by `detect name text`) into the chain `chain`
    /// (None: the first chain with an amino-acid residue). Raises `InputException` for bad input.
    let parse (name: string) (text: string) (chain: string option) : ProteinChain =
        match detect name text with
        | StructureFormat.Mmcif -> Mmcif.parse name text chain
        | StructureFormat.Pdb -> Pdb.parse name text chain

    /// Reads a PDB or mmCIF file (plain or gzip) into the chain `chain` (None: the first chain with an amino-acid
    /// residue). The chain's name is the file stem. Raises `InputException` naming the file for bad input.
    let read (path: string) (chain: string option) : ProteinChain =
        let text = TextFiles.read path
        let name = TextFiles.stem path

        match detect path text with
        | StructureFormat.Mmcif -> AtomSites.toChain path name (Mmcif.atomSites path text) chain
        | StructureFormat.Pdb -> AtomSites.toChain path name (Pdb.atomSites path text) chain

    /// True for the names the readers accept: .pdb, .ent, .cif, .mmcif, each optionally + .gz.
    let isStructureFile (path: string) =
        let name = (TextFiles.withoutGz (Path.GetFileName path)).ToLowerInvariant()

        [ ".pdb"; ".ent"; ".cif"; ".mmcif" ] |> List.exists name.EndsWith

    /// The structure files of a folder (not recursive), sorted by name. Raises `InputException` when the folder
    /// does not exist or holds none.
    let listDirectory (dir: string) : string[] =
        if not (Directory.Exists dir) then
            Esm3Structure.InputError.raise dir Esm3Structure.InputLocation.Whole "no such folder"

        let files = Directory.GetFiles dir |> Array.filter isStructureFile |> Array.sort

        if files.Length = 0 then
            Esm3Structure.InputError.raise
                dir
                Esm3Structure.InputLocation.Whole
                "no .pdb/.cif files (optionally .gz) in this folder"

        files

    /// Reads the default chain of every structure file in a folder (see `listDirectory`).
    let readDirectory (dir: string) : ProteinChain[] =
        listDirectory dir |> Array.map (fun f -> read f None)
