namespace Esm3Structure.Tokenizers

open System
open System.Collections.Generic
open TorchSharp

/// The keyword vocabulary of the function track: terms (index = term id), each term's IDF weight, and the keywords of
/// each InterPro entry. Built by `FunctionTokenizer.createVocabulary` (which validates) or loaded by
/// `FunctionTokenizerFiles.load`.
[<Sealed>]
type KeywordVocabulary internal (terms: string[], idf: float[], interProKeywords: IReadOnlyDictionary<string, string[]>)
    =
    let index =
        let d = Dictionary<string, int>(StringComparer.Ordinal)
        terms |> Array.iteri (fun i t -> d.[t] <- i)
        d

    /// The terms in id order.
    member _.Terms = terms
    /// IDF weight per term (finite, > 0).
    member _.Idf = idf
    /// InterPro id (`IPR…`) → its keywords (terms outside the vocabulary are allowed and ignored, as in ESM).
    member _.InterProKeywords = interProKeywords
    /// V, the number of terms.
    member _.Size = terms.Length

    /// The id of a term, or −1.
    member _.IndexOf(term: string) =
        match index.TryGetValue term with
        | true, i -> i
        | _ -> -1

/// The LSH hyperplanes of the function track: `Hyperplanes` [T = 8 tables, 8 bits, V] float64. Owns its tensor.
type LshTables =
    {
        /// Shapes: [8, 8, V] float64; hyperplane b of table t is `Hyperplanes[t, b]`.
        Hyperplanes: torch.Tensor
    }

    interface IDisposable with
        member this.Dispose() = this.Hyperplanes.Dispose()

/// Everything the function tokenizer needs: the keyword vocabulary and the LSH tables over it. Owns its tensor.
type FunctionTokenizerData =
    {
        /// Terms, IDF and InterPro → keywords.
        Vocabulary: KeywordVocabulary
        /// Hyperplanes [8, 8, V].
        Tables: LshTables
    }

    interface IDisposable with
        member this.Dispose() = (this.Tables :> IDisposable).Dispose()

/// One residue's function token, before ids: a special, or the 8 LSH values (0 … 255, one per table).
[<RequireQualifiedAccess>]
type FunctionToken =
    /// `<pad>`: the protein has no annotations (also BOS, EOS, mask, chain break).
    | Pad
    /// `<motif>`.
    | Motif
    /// `<unk>`: the residue's labels have an all-zero TF-IDF vector.
    | Unk
    /// `<none>`: nothing covers this residue in an annotated protein.
    | NoLabels
    /// The LSH value of each table (0 … 255); bit b of value t is hyperplane b of table t.
    | Hash of values: int[]

/// Checks on a `KeywordVocabulary`'s terms and IDF weights, shared by `FunctionTokenizer.createVocabulary` and
/// `FunctionTokenizerFiles.load`.
module internal KeywordVocabulary =

    /// The first problem with terms and IDF, if any: (term index, message).
    let problem (terms: string[]) (idf: float[]) : (int * string) option =
        let seen = HashSet<string>(StringComparer.Ordinal)

        terms
        |> Array.indexed
        |> Array.tryPick (fun (i, t) ->
            if String.IsNullOrEmpty t then
                Some(i, "empty term")
            elif t.Contains '\n' || t.Contains '\r' then
                Some(i, "a term may not contain a line break")
            elif not (seen.Add t) then
                Some(i, sprintf "term '%s' appears twice" t)
            elif i < idf.Length && not (Double.IsFinite idf.[i] && idf.[i] > 0.0) then
                Some(i, sprintf "IDF of '%s' is %g; it must be finite and positive" t idf.[i])
            else
                None)
