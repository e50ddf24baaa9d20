namespace Esm3Structure.Tokenizers

open System.Collections.Generic
open Esm3Structure

/// A label on residues `Start` … `End` (1-based, inclusive), as ESM's `FunctionAnnotation`
/// (evolutionaryscale/esm `esm/utils/types.py`). The label is a function keyword, an InterPro id (`IPR…`) or a
/// residue-annotation (InterPro site) description, depending on the track that reads it.
type FunctionAnnotation =
    {
        /// Keyword, InterPro id or site description.
        Label: string
        /// First residue, 1-based.
        Start: int
        /// Last residue, 1-based, inclusive.
        End: int
    }

/// Expanding range annotations into per-residue label sets (shared by the function and residue-annotation tracks).
module FunctionAnnotation =

    /// Checks `1 ≤ Start ≤ End ≤ length` and a non-null label for every annotation; a violation raises an
    /// `InputException` naming `source` and "annotation i" (0-based index in `annotations`).
    let check (source: string) (length: int) (annotations: FunctionAnnotation[]) : unit =
        annotations
        |> Array.iteri (fun i a ->
            let at = InputLocation.Field(sprintf "annotation %d" i)

            if isNull a.Label then
                InputError.raise source at "the label is null"

            if not (1 <= a.Start && a.Start <= a.End && a.End <= length) then
                InputError.raise
                    source
                    at
                    (sprintf
                        "range [%d, %d] of '%s' is not within 1…%d (1-based, inclusive, start ≤ end)"
                        a.Start
                        a.End
                        a.Label
                        length))

    /// The distinct labels covering each residue, in the order they first appear in `annotations`; an empty array
    /// for a residue no annotation covers. Ranges are checked as `check` does.
    let perResidue (source: string) (length: int) (annotations: FunctionAnnotation[]) : string[][] =
        if length < 0 then
            InputError.raise source InputLocation.Whole (sprintf "negative sequence length %d" length)

        check source length annotations
        let sets = Array.init length (fun _ -> ResizeArray<string>())
        let seen = Array.init length (fun _ -> HashSet<string>())

        for a in annotations do
            for i in a.Start - 1 .. a.End - 1 do
                if seen.[i].Add a.Label then
                    sets.[i].Add a.Label

        sets |> Array.map (fun s -> s.ToArray())
