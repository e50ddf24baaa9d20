namespace Esm3Structure.Design

open System
open System.Text.Json
open Esm3Structure
open Esm3Structure.Tokenizers

/// One `Protein` as an object of `Protein.toJson`'s array, both ways (`Utf8JsonWriter` / `JsonElement`); the
/// caller checks the tracks' lengths.
module internal ProteinJson =

    /// Writes `p`, whose tracks have the common length `l` (`Protein.length`), as one object.
    let write (w: Utf8JsonWriter) (l: int) (p: Protein) =
        w.WriteStartObject()
        w.WriteString("name", p.Name)

        let nullable (name: string) (present: bool) (write: unit -> unit) =
            if present then write () else w.WriteNull name

        nullable "sequence" (not (isNull p.Sequence)) (fun () -> w.WriteString("sequence", p.Sequence))
        nullable "ss8" (not (isNull p.SecondaryStructure)) (fun () -> w.WriteString("ss8", p.SecondaryStructure))

        nullable "sasa" (not (isNull p.Sasa)) (fun () ->
            w.WriteStartArray "sasa"

            for v in p.Sasa do
                if Double.IsNaN v then
                    w.WriteNullValue()
                else
                    w.WriteNumberValue v

            w.WriteEndArray())

        nullable "structure_tokens" (not (isNull p.StructureTokens)) (fun () ->
            w.WriteStartArray "structure_tokens"

            for t in p.StructureTokens do
                w.WriteNumberValue t

            w.WriteEndArray())

        nullable "plddt" (not (isNull p.Plddt)) (fun () ->
            w.WriteStartArray "plddt"

            for v in p.Plddt do
                w.WriteNumberValue v

            w.WriteEndArray())

        nullable "ptm" p.Ptm.HasValue (fun () -> w.WriteNumber("ptm", p.Ptm.Value))

        nullable "function_annotations" (not (isNull p.FunctionAnnotations)) (fun () ->
            w.WriteStartArray "function_annotations"

            for a in p.FunctionAnnotations do
                w.WriteStartObject()
                w.WriteString("label", a.Label)
                w.WriteNumber("start", a.Start)
                w.WriteNumber("end", a.End)
                w.WriteEndObject()

            w.WriteEndArray())

        nullable "coordinates" (not (isNull p.Coordinates)) (fun () ->
            // [L][37] of [x, y, z] or null for a missing atom (atom37 order, ResidueConstants.atomTypes).
            w.WriteStartArray "coordinates"

            for i in 0 .. l - 1 do
                w.WriteStartArray()

                for a in 0..36 do
                    let c = p.Coordinates

                    if
                        Single.IsFinite c.[i, a, 0]
                        && Single.IsFinite c.[i, a, 1]
                        && Single.IsFinite c.[i, a, 2]
                    then
                        w.WriteStartArray()
                        w.WriteNumberValue c.[i, a, 0]
                        w.WriteNumberValue c.[i, a, 1]
                        w.WriteNumberValue c.[i, a, 2]
                        w.WriteEndArray()
                    else
                        w.WriteNullValue()

                w.WriteEndArray()

            w.WriteEndArray())

        w.WriteEndObject()


    /// Entry `index` of the array in `file`, its tracks' lengths unchecked. Problems raise an `InputException`
    /// naming `file` and the field (e.g. `[1].sasa[3]`).
    let parse (file: string) (index: int) (e: JsonElement) : Protein =
        let fail (field: string) message =
            InputError.raise file (InputLocation.Field(sprintf "[%d].%s" index field)) message

        if e.ValueKind <> JsonValueKind.Object then
            InputError.raise
                file
                (InputLocation.Field(sprintf "[%d]" index))
                (sprintf "expected an object, got %s" (Json.kindName e))

        let tryField (name: string) =
            match e.TryGetProperty name with
            | true, v when v.ValueKind <> JsonValueKind.Null -> Some v
            | _ -> None

        let text (name: string) =
            match tryField name with
            | None -> null
            | Some v when v.ValueKind = JsonValueKind.String -> v.GetString()
            | Some v -> fail name (sprintf "expected a string, got %s" (Json.kindName v))

        let array (name: string) (v: JsonElement) =
            if v.ValueKind <> JsonValueKind.Array then
                fail name (sprintf "expected an array, got %s" (Json.kindName v))

            v.EnumerateArray() |> Array.ofSeq

        let number (name: string) (v: JsonElement) =
            match v.ValueKind with
            | JsonValueKind.Number -> v.GetDouble()
            | _ -> fail name (sprintf "expected a number, got %s" (Json.kindName v))

        let integer (name: string) (v: JsonElement) =
            match v.ValueKind, v.TryGetInt64() with
            | JsonValueKind.Number, (true, n) -> n
            | _ -> fail name (sprintf "expected an integer, got %s" (v.GetRawText()))

        let name =
            match text "name" with
            | null -> ""
            | s -> s

        {
            Name = name
            Sequence = text "sequence"
            SecondaryStructure = text "ss8"
            Sasa =
                match tryField "sasa" with
                | None -> null
                | Some v ->
                    array "sasa" v
                    |> Array.mapi (fun i x ->
                        if x.ValueKind = JsonValueKind.Null then
                            Double.NaN
                        else
                            number (sprintf "sasa[%d]" i) x)
            StructureTokens =
                match tryField "structure_tokens" with
                | None -> null
                | Some v ->
                    array "structure_tokens" v
                    |> Array.mapi (fun i x -> integer (sprintf "structure_tokens[%d]" i) x)
            Plddt =
                match tryField "plddt" with
                | None -> null
                | Some v ->
                    array "plddt" v
                    |> Array.mapi (fun i x -> float32 (number (sprintf "plddt[%d]" i) x))
            Ptm =
                match tryField "ptm" with
                | None -> Nullable()
                | Some v -> Nullable(number "ptm" v)
            FunctionAnnotations =
                match tryField "function_annotations" with
                | None -> null
                | Some v ->
                    array "function_annotations" v
                    |> Array.mapi (fun i a ->
                        let at (f: string) =
                            sprintf "function_annotations[%d].%s" i f

                        let get (f: string) =
                            match
                                a.ValueKind,
                                (if a.ValueKind = JsonValueKind.Object then
                                     a.TryGetProperty f
                                 else
                                     (false, JsonElement()))
                            with
                            | JsonValueKind.Object, (true, x) -> x
                            | _ -> fail (at f) "missing"

                        {
                            Label =
                                (let x = get "label"

                                 if x.ValueKind = JsonValueKind.String then
                                     x.GetString()
                                 else
                                     fail (at "label") "expected a string")
                            Start = int (integer (at "start") (get "start"))
                            End = int (integer (at "end") (get "end"))
                        })
            Coordinates =
                match tryField "coordinates" with
                | None -> null
                | Some v ->
                    let rows = array "coordinates" v
                    let c = Array3D.create rows.Length 37 3 Single.NaN

                    rows
                    |> Array.iteri (fun i r ->
                        let atoms = array (sprintf "coordinates[%d]" i) r

                        if atoms.Length <> 37 then
                            fail (sprintf "coordinates[%d]" i) (sprintf "expected 37 atoms, got %d" atoms.Length)

                        atoms
                        |> Array.iteri (fun a x ->
                            if x.ValueKind <> JsonValueKind.Null then
                                let xyz = array (sprintf "coordinates[%d][%d]" i a) x

                                if xyz.Length <> 3 then
                                    fail
                                        (sprintf "coordinates[%d][%d]" i a)
                                        (sprintf "expected [x, y, z], got %d numbers" xyz.Length)

                                for k in 0..2 do
                                    c.[i, a, k] <- float32 (number (sprintf "coordinates[%d][%d][%d]" i a k) xyz.[k])))

                    c
        }
