namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.RegularExpressions
open TorchSharp
open Esm3Structure

/// Reading and writing the function tokenizer's text and tensor files (formats in `FunctionTokenizer`'s summary).
module internal FunctionTokenizerFiles =

    let readLines (path: string) =
        try
            File.ReadAllLines(path, Encoding.UTF8)
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            InputError.raise path InputLocation.Whole (sprintf "cannot read the file: %s" e.Message)

    let readInterPro (path: string) : IReadOnlyDictionary<string, string[]> =
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

    let toFloats (path: string) (name: string) (t: torch.Tensor) : float[] =
        if t.dtype <> torch.float32 && t.dtype <> torch.float64 then
            InputError.raise path (InputLocation.Field name) (sprintf "expected F32 or F64, got %O" t.dtype)

        use t64 = t.to_type torch.float64
        use flat = t64.contiguous().flatten()
        flat.data<float>().ToArray()

    let writeLines (path: string) (lines: string seq) =
        AtomicFile.writeText path (lines |> Seq.map (fun l -> l + "\n") |> String.concat "")
