namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.RegularExpressions
open TorchSharp
open Esm3Structure
open Esm3Structure.Io

/// The function tokenizer's files (formats in `FunctionTokenizer`'s summary): `load` reads and checks them, `save`
/// writes them.
module FunctionTokenizerFiles =

    let private readLines (path: string) =
        try
            File.ReadAllLines(path, Encoding.UTF8)
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            InputError.raise path InputLocation.Whole (sprintf "cannot read the file: %s" e.Message)

    let private readInterPro (path: string) : IReadOnlyDictionary<string, string[]> =
        let d = Dictionary<string, string[]>(StringComparer.Ordinal)

        readLines path
        |> Array.iteri (fun i line ->
            let at = InputLocation.Line(i + 1)

            if line.Length > 0 then
                let tab = line.IndexOf '\t'

                if tab < 0 then
                    InputError.raise path at "expected 'IPRxxxxxx<TAB>term,term,…'"

                let id = line.Substring(0, tab)

                if not (Regex.IsMatch(id, @"^IPR\d+$")) then
                    InputError.raise path at (sprintf "'%s' is not an InterPro id (IPR followed by digits)" id)

                if d.ContainsKey id then
                    InputError.raise path at (sprintf "%s appears twice" id)

                let rest = line.Substring(tab + 1)
                d.[id] <- (if rest.Length = 0 then [||] else rest.Split ','))

        d :> _

    let private toFloats (path: string) (name: string) (t: torch.Tensor) : float[] =
        if t.dtype <> torch.float32 && t.dtype <> torch.float64 then
            InputError.raise path (InputLocation.Field name) (sprintf "expected F32 or F64, got %O" t.dtype)

        use t64 = t.to_type torch.float64
        use flat = t64.contiguous().flatten()
        flat.data<float>().ToArray()

    let private writeLines (path: string) (lines: string seq) =
        AtomicFile.writeText path (lines |> Seq.map (fun l -> l + "\n") |> String.concat "")

    /// Loads the tokenizer's files (formats in `FunctionTokenizer`'s summary); `interProPath` may be null or empty for none.
    /// Every problem raises an `InputException` naming the file and the line, term or tensor: an empty or repeated
    /// term, a count mismatch between terms and `idf`, a non-positive or non-finite IDF, `hyperplanes` not
    /// [8, 8, V] or not finite, a missing or unexpected tensor, a malformed InterPro line. The returned data owns a
    /// tensor detached from any dispose scope: dispose the data (it is `IDisposable`) when done.
    let load (keywordsPath: string) (tensorsPath: string) (interProPath: string) : FunctionTokenizerData =
        let lines = readLines keywordsPath

        let terms =
            if lines.Length > 0 && lines.[lines.Length - 1] = "" then
                lines.[.. lines.Length - 2]
            else
                lines

        let interPro =
            if String.IsNullOrEmpty interProPath then
                Dictionary<string, string[]>() :> IReadOnlyDictionary<_, _>
            else
                readInterPro interProPath

        let file = Safetensors.read tensorsPath
        let tensors = dict file.Tensors

        try
            for name, _ in file.Tensors do
                if name <> "idf" && name <> "hyperplanes" then
                    InputError.raise
                        tensorsPath
                        (InputLocation.Field name)
                        "unexpected tensor (expected only 'idf' and 'hyperplanes')"

            for name in [ "idf"; "hyperplanes" ] do
                if not (tensors.ContainsKey name) then
                    InputError.raise tensorsPath (InputLocation.Field name) "missing tensor"

            let idfT = tensors.["idf"]
            let h = tensors.["hyperplanes"]
            let v = int64 terms.Length

            if idfT.shape <> [| v |] then
                InputError.raise
                    tensorsPath
                    (InputLocation.Field "idf")
                    (sprintf "expected [%d] (one per term of %s), got %s" v keywordsPath (Tensors.Shape.show idfT.shape))

            if
                h.shape
                <> [| int64 FunctionTokenizer.Depth; int64 FunctionTokenizer.BitsPerToken; v |]
            then
                InputError.raise
                    tensorsPath
                    (InputLocation.Field "hyperplanes")
                    (sprintf "expected [8, 8, %d], got %s" v (Tensors.Shape.show h.shape))

            let idf = toFloats tensorsPath "idf" idfT
            let planes = toFloats tensorsPath "hyperplanes" h

            if planes |> Array.exists (fun x -> not (Double.IsFinite x)) then
                InputError.raise tensorsPath (InputLocation.Field "hyperplanes") "non-finite value"

            match KeywordVocabulary.problem terms idf with
            | Some(i, message) when message.StartsWith "IDF" ->
                InputError.raise tensorsPath (InputLocation.Field "idf") (sprintf "entry %d: %s" i message)
            | Some(i, message) -> InputError.raise keywordsPath (InputLocation.Line(i + 1)) message
            | None -> ()

            {
                Vocabulary = FunctionTokenizer.createVocabulary keywordsPath terms idf interPro
                Tables =
                    {
                        Hyperplanes =
                            torch
                                .tensor(planes, dtype = torch.float64)
                                .reshape(int64 FunctionTokenizer.Depth, int64 FunctionTokenizer.BitsPerToken, v)
                                .DetachFromDisposeScope()
                    }
            }
        finally
            for _, t in file.Tensors do
                t.Dispose()

    /// Writes the files `load` reads (each atomically); `interProPath` may be null or empty to skip the InterPro file.
    /// A keyword of an InterPro entry containing a comma, tab or line break raises an `ArgumentException`.
    let save (keywordsPath: string) (tensorsPath: string) (interProPath: string) (data: FunctionTokenizerData) : unit =
        let vocab = data.Vocabulary
        writeLines keywordsPath vocab.Terms
        use idf = torch.tensor (vocab.Idf, dtype = torch.float64)
        use h = data.Tables.Hyperplanes.to_type torch.float64
        Safetensors.write tensorsPath [ "idf", idf; "hyperplanes", h ] null

        if not (String.IsNullOrEmpty interProPath) then
            let lines =
                vocab.InterProKeywords
                |> Seq.sortBy (fun kv -> kv.Key)
                |> Seq.map (fun kv ->
                    for k in kv.Value do
                        if k.IndexOfAny [| ','; '\t'; '\n'; '\r' |] >= 0 then
                            raise (ArgumentException(sprintf "%s: keyword '%s' contains a separator" kv.Key k, "data"))

                    kv.Key + "\t" + String.Join(",", kv.Value))
                |> Array.ofSeq

            writeLines interProPath lines
