namespace Esm3Structure.Io

open System
open System.IO
open Esm3Structure
open Esm3Structure.Structure

/// One row of the corpus index (`shared/data/index.tsv`).
type CorpusEntry =
    {
        /// File name under `structures/`, e.g. "1ubq_A.pdb.gz".
        File: string
        /// The entry's name: the file name without extensions, e.g. "1ubq_A"; the FASTA header.
        Name: string
        PdbId: string
        Chain: string
        /// Residues with N, CA and C.
        Length: int
        /// "train", "valid" or "test".
        Split: string
        ChainBreaks: int
        /// "full" or "backbone".
        Atoms: string
    }

/// Reads the shared corpus: `index.tsv` (split, length, source of every structure) and `sequences.fasta`.
module Corpus =

    /// Parses an index file; columns are found by header name. Raises InputException naming the line.
    let readIndex (path: string) : CorpusEntry[] =
        let lines = (TextFiles.read path).Split('\n') |> Array.map (fun l -> l.TrimEnd '\r')

        if lines.Length = 0 then
            InputError.raise path InputLocation.Whole "empty index (expected a header line)"

        let header = lines.[0].Split('\t')

        let column name =
            match Array.tryFindIndex ((=) name) header with
            | Some i -> i
            | None -> InputError.raise path (InputLocation.Line 1) (sprintf "missing column '%s'" name)

        let file, pdb, chain, length, split =
            column "file", column "pdb_id", column "chain", column "length", column "split"

        let breaks, atoms = column "chain_breaks", column "atoms"

        [|
            for i in 1 .. lines.Length - 1 do
                let line = lines.[i]

                if line.Trim() <> "" then
                    let cols = line.Split('\t')

                    if cols.Length < header.Length then
                        InputError.raise
                            path
                            (InputLocation.Line(i + 1))
                            (sprintf "%d columns, expected %d" cols.Length header.Length)

                    let int name (j: int) =
                        match Int32.TryParse cols.[j] with
                        | true, v -> v
                        | _ ->
                            InputError.raise
                                path
                                (InputLocation.Line(i + 1))
                                (sprintf "column '%s' is not an integer: '%s'" name cols.[j])

                    yield
                        {
                            File = cols.[file]
                            Name = TextFiles.stem cols.[file]
                            PdbId = cols.[pdb]
                            Chain = cols.[chain]
                            Length = int "length" length
                            Split = cols.[split]
                            ChainBreaks = int "chain_breaks" breaks
                            Atoms = cols.[atoms]
                        }
        |]

    /// Parses a FASTA file into (name, sequence) pairs in file order; the name is the header up to the first space.
    let readFasta (path: string) : (string * string)[] =
        let lines = (TextFiles.read path).Split('\n') |> Array.map (fun l -> l.TrimEnd '\r')

        let result = Collections.Generic.List<string * string>()
        let mutable name: string = null
        let body = Text.StringBuilder()

        let flush () =
            if not (isNull name) then
                result.Add((name, body.ToString()))
                body.Clear() |> ignore

        lines
        |> Array.iteri (fun i line ->
            let line = line.Trim()

            if line.StartsWith ">" then
                flush ()

                name <-
                    line.Substring(1).Split(' ', StringSplitOptions.RemoveEmptyEntries)
                    |> Array.tryHead
                    |> Option.defaultValue ""
            elif line <> "" then
                if isNull name then
                    InputError.raise path (InputLocation.Line(i + 1)) "sequence data before the first '>' header"

                body.Append line |> ignore)

        flush ()
        result.ToArray()

    /// The sequences of one split ("train", "valid", "test") of a shared data folder, in index order.
    let sequences (dataDir: string) (split: string) : (string * string)[] =
        let index = readIndex (Path.Combine(dataDir, "index.tsv"))
        let fasta = readFasta (Path.Combine(dataDir, "sequences.fasta")) |> dict

        [|
            for e in index do
                if e.Split = split then
                    match fasta.TryGetValue e.Name with
                    | true, s -> yield e.Name, s
                    | _ ->
                        InputError.raise
                            (Path.Combine(dataDir, "sequences.fasta"))
                            (InputLocation.Field e.Name)
                            "no sequence for this index entry"
        |]

    /// The index entries of one split ("train", "valid", "test") of a shared data folder, at most `limit` (≤ 0: all),
    /// in index order.
    let entriesOf (dataDir: string) (split: string) (limit: int) : CorpusEntry[] =
        let entries =
            readIndex (Path.Combine(dataDir, "index.tsv"))
            |> Array.filter (fun e -> e.Split = split)

        if limit > 0 then Array.truncate limit entries else entries

    /// The chain an index entry names, read from `structures/` of the shared data folder (the index's chain, not the
    /// file's first one).
    let readEntry (dataDir: string) (entry: CorpusEntry) : ProteinChain =
        StructureFile.read (Path.Combine(dataDir, "structures", entry.File)) (Some entry.Chain)

    /// The chains of one split, at most `limit` (≤ 0: all), in index order (`entriesOf`, `readEntry`).
    let readSplit (dataDir: string) (split: string) (limit: int) : ProteinChain[] =
        entriesOf dataDir split limit |> Array.map (readEntry dataDir)

    /// A training run's chains: the train split (at most `trainLimit`, ≤ 0: all) and the first `validChains` of the
    /// valid split (`readSplit`).
    let readTrainValid (dataDir: string) (trainLimit: int) (validChains: int) : ProteinChain[] * ProteinChain[] =
        readSplit dataDir "train" trainLimit, readSplit dataDir "valid" validChains

    /// The named entries of a shared data folder ("1smx_B": index names), each read with its index chain. A name
    /// the index lacks raises an InputException naming `index.tsv` and the name.
    let readNamed (dataDir: string) (names: string[]) : ProteinChain[] =
        let indexPath = Path.Combine(dataDir, "index.tsv")
        let index = readIndex indexPath

        names
        |> Array.map (fun name ->
            match index |> Array.tryFind (fun e -> e.Name = name.Trim()) with
            | Some e -> readEntry dataDir e
            | None -> InputError.raise indexPath (InputLocation.Field(name.Trim())) "no such entry in the index")
