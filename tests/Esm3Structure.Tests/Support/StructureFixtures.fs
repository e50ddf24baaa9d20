namespace Esm3Structure.Tests

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open System.IO.Compression
open Expecto
open Esm3Structure

/// Helpers for structure-reader tests: an independent PDB column reader and line writer, FASTA reading,
/// gzip, and assertions on `InputException`s.
module StructureFixtures =

    let private inv = CultureInfo.InvariantCulture

    /// Three-letter -> one-letter for the 20 amino acids, written out here independently of the library.
    let oneLetter =
        let pairs =
            "ALA A ARG R ASN N ASP D CYS C GLN Q GLU E GLY G HIS H ILE I LEU L LYS K MET M PHE F PRO P SER S THR T TRP W TYR Y VAL V"
                .Split(' ')

        dict [ for i in 0..2 .. pairs.Length - 1 -> pairs.[i], pairs.[i + 1].[0] ]

    /// One ATOM/HETATM record as the test reads it from fixed columns.
    type PdbAtom =
        {
            Line: int
            Record: string
            Name: string
            AltLoc: char
            ResName: string
            Chain: char
            ResSeq: int
            ICode: char
            X: float32
            Y: float32
            Z: float32
            B: float32
        }

    /// The ATOM/HETATM records of a PDB text, read from columns 1-6, 13-16, 17, 18-20, 22, 23-26, 27, 31-54, 61-66.
    let pdbAtoms (text: string) : PdbAtom[] =
        text.Split('\n')
        |> Array.mapi (fun i l -> i + 1, l.TrimEnd('\r'))
        |> Array.filter (fun (_, l) -> l.StartsWith "ATOM  " || l.StartsWith "HETATM")
        |> Array.map (fun (i, l) ->
            {
                Line = i
                Record = l.Substring(0, 6).Trim()
                Name = l.Substring(12, 4).Trim()
                AltLoc = l.[16]
                ResName = l.Substring(17, 3).Trim()
                Chain = l.[21]
                ResSeq = Int32.Parse(l.Substring(22, 4).Trim(), inv)
                ICode = l.[26]
                X = Single.Parse(l.Substring(30, 8), inv)
                Y = Single.Parse(l.Substring(38, 8), inv)
                Z = Single.Parse(l.Substring(46, 8), inv)
                B =
                    if l.Length >= 66 then
                        Single.Parse(l.Substring(60, 6), inv)
                    else
                        0.0f
            })

    /// A PDB ATOM/HETATM line in standard columns, formatted here (not by the library's writer).
    let pdbLine
        (record: string)
        (serial: int)
        (name: string)
        (altLoc: char)
        (resName: string)
        (chain: char)
        (resSeq: int)
        (iCode: char)
        (x: float)
        (y: float)
        (z: float)
        (occ: float)
        (b: float)
        (element: string)
        =
        let name4 = if name.Length >= 4 then name else " " + name.PadRight 3

        String.Format(
            inv,
            "{0,-6}{1,5} {2,-4}{3}{4,3} {5}{6,4}{7}   {8,8:F3}{9,8:F3}{10,8:F3}{11,6:F2}{12,6:F2}          {13,2}",
            record,
            serial,
            name4,
            altLoc,
            resName,
            chain,
            resSeq,
            iCode,
            x,
            y,
            z,
            occ,
            b,
            element
        )

    /// An ATOM line with blank altloc and insertion code, occupancy 1, B 10, element = first letter of the name.
    let atom
        (serial: int)
        (name: string)
        (resName: string)
        (chain: char)
        (resSeq: int)
        (x: float)
        (y: float)
        (z: float)
        =
        pdbLine "ATOM" serial name ' ' resName chain resSeq ' ' x y z 1.0 10.0 (name.Substring(0, 1))

    /// N, CA, C, O lines of one residue at an offset (a plausible geometry, not ideal).
    let backboneLines (serial: int) (resName: string) (chain: char) (resSeq: int) (offset: float) =
        [
            atom serial "N" resName chain resSeq (offset + 0.0) 1.0 0.0
            atom (serial + 1) "CA" resName chain resSeq (offset + 1.2) 1.5 0.1
            atom (serial + 2) "C" resName chain resSeq (offset + 2.4) 0.8 0.2
            atom (serial + 3) "O" resName chain resSeq (offset + 2.6) -0.4 0.3
        ]

    /// FASTA entries by name.
    let readFasta (path: string) : IReadOnlyDictionary<string, string> =
        let d = Dictionary<string, string>()
        let mutable name = ""

        for l in File.ReadAllLines path do
            if l.StartsWith ">" then
                name <- l.Substring(1).Trim()
                d.[name] <- ""
            elif name <> "" then
                d.[name] <- d.[name] + l.Trim()

        d :> IReadOnlyDictionary<string, string>

    /// Decompressed bytes of a gzip file (.NET's GZipStream; only for known-good test inputs).
    let gunzipFile (path: string) : byte[] =
        use f = File.OpenRead path
        use g = new GZipStream(f, CompressionMode.Decompress)
        use m = new MemoryStream()
        g.CopyTo m
        m.ToArray()

    /// gzip-compressed bytes.
    let gzip (data: byte[]) : byte[] =
        use m = new MemoryStream()

        do
            use g = new GZipStream(m, CompressionLevel.Optimal, true)
            g.Write(data, 0, data.Length)

        m.ToArray()

    /// Asserts that an InputException names the file and the expected location, and that its message says so.
    let expectNames (what: string) (file: string) (location: InputLocation) (e: InputException) =
        Expect.equal e.Error.File file (what + ": file in the error")
        Expect.equal e.Error.Location location (what + ": location in the error")
        Expect.stringContains e.Message file (what + ": message names the file")

        match location with
        | InputLocation.Line n ->
            Expect.stringContains e.Message (sprintf "line %d" n) (what + ": message names the line")
        | InputLocation.Field f -> Expect.stringContains e.Message f (what + ": message names the field")
        | _ -> ()
