namespace Esm3Structure.Design

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.Structure
open Esm3Structure.Io
open Esm3Structure.Tokenizers
open Esm3Structure.Models
open Esm3Structure.Training

/// Building, checking, tokenizing and decoding `Protein`s, and their file formats.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Protein =

    /// A protein with every track absent.
    let empty (name: string) : Protein =
        {
            Name = (if isNull name then "" else name)
            Sequence = null
            Coordinates = null
            SecondaryStructure = null
            Sasa = null
            FunctionAnnotations = null
            StructureTokens = null
            Plddt = null
            Ptm = Nullable()
        }

    /// A protein with only a sequence (`_` = masked).
    let ofSequence (name: string) (sequence: string) : Protein = { empty name with Sequence = sequence }

    /// The sequence and atom37 coordinates of a chain (as ESM's `ESMProtein.from_protein_chain`); name = the
    /// chain's name.
    let ofChain (chain: ProteinChain) : Protein =
        { empty chain.Name with
            Sequence = chain.Sequence
            Coordinates = chain.Atom37.Clone() :?> float32[,,]
        }

    /// `ofChain`, plus the SS8 of our DSSP and the SASA of our Shrake–Rupley (the tracks ESM computes from a
    /// structure): ground truth for evaluation.
    let ofChainWithTracks (chain: ProteinChain) : Protein =
        { ofChain chain with
            SecondaryStructure = Dssp.ss8String chain
            Sasa = Sasa.perResidue chain
        }

    /// Every present track's length, by its JSON name (`toJson`).
    let trackLengths (p: Protein) : (string * int) list =
        [
            if not (isNull p.Sequence) then
                "sequence", p.Sequence.Length
            if not (isNull p.Coordinates) then
                "coordinates", Array3D.length1 p.Coordinates
            if not (isNull p.SecondaryStructure) then
                "ss8", p.SecondaryStructure.Length
            if not (isNull p.Sasa) then
                "sasa", p.Sasa.Length
            if not (isNull p.StructureTokens) then
                "structure_tokens", p.StructureTokens.Length
            if not (isNull p.Plddt) then
                "plddt", p.Plddt.Length
        ]

    /// L: the common length of the present tracks. Tracks of different lengths, coordinates not [L, 37, 3], or no
    /// track at all raise an `InputException` naming the protein and the track.
    let length (p: Protein) : int =
        let fail field message =
            InputError.raise p.Name (InputLocation.Field field) message

        if
            not (isNull p.Coordinates)
            && (Array3D.length2 p.Coordinates <> 37 || Array3D.length3 p.Coordinates <> 3)
        then
            fail
                "coordinates"
                (sprintf
                    "expected [L, 37, 3] atom37 coordinates, got [%d, %d, %d]"
                    (Array3D.length1 p.Coordinates)
                    (Array3D.length2 p.Coordinates)
                    (Array3D.length3 p.Coordinates))

        match trackLengths p with
        | [] -> fail "sequence" "the protein has no track (sequence, coordinates, ss8, sasa or structure_tokens)"
        | (firstName, l) :: rest ->
            match rest |> List.tryFind (fun (_, n) -> n <> l) with
            | Some(name, n) -> fail name (sprintf "has %d positions but %s has %d" n firstName l)
            | None -> l

    /// The chain of a protein with coordinates: residue names from the sequence (`_`, absent or unknown letters:
    /// UNK), only the atoms of each residue's type (`ResidueConstants.restypeAtom37Mask`, plus O and OXT), residue
    /// numbers 1 … L, chain id "A", B-factors 100 · pLDDT when present, else 0.
    let toChain (p: Protein) : ProteinChain =
        if isNull p.Coordinates then
            InputError.raise p.Name (InputLocation.Field "coordinates") "the protein has no coordinates to write"

        let l = length p

        let sequence =
            if isNull p.Sequence then
                String('X', l)
            else
                p.Sequence.Replace('_', 'X')

        // Atoms the residue type does not have are left out (a designed sequence on a native backbone must not
        // carry the native side chains); the backbone O and the terminal OXT are kept for every type.
        let atoms =
            Array3D.init l 37 3 (fun i a k ->
                let r = ResidueConstants.restypeIndex sequence.[i]

                if
                    ResidueConstants.restypeAtom37Mask.[r, a]
                    || a = ResidueConstants.oIndex
                    || a = ResidueConstants.oxtIndex
                then
                    p.Coordinates.[i, a, k]
                else
                    Single.NaN)

        let chain =
            ProteinChain.ofAtom37 p.Name "A" sequence (Array.init l (fun i -> i + 1)) atoms

        match p.Plddt with
        | null -> chain
        | plddt ->
            let b =
                Array2D.init l 37 (fun i a -> if chain.Atom37Mask.[i, a] then 100.0f * plddt.[i] else 0.0f)

            { chain with BFactors = b }

    // ---- tokens -------------------------------------------------------------------------------------------------

    /// The per-residue tracks of a protein as the masked-LM data pipeline's example (`MultiTrackData.ofChain`'s
    /// layout, so generation sees exactly what training saw): sequence ids (absent: MASK); structure tokens as given,
    /// else from `encoder` when there are coordinates (`StructureTokenizer.tokenize`: MASK where a residue has no
    /// backbone), else MASK; SS8 and SASA ids (absent or `_`/NaN: 0, ESM's mask); function ids from
    /// `functionTokenizer` when there are annotations (none: `<pad>`, as ESM encodes an unannotated protein);
    /// residue annotations `<pad>`; backbone N, CA, C (NaN where missing or absent); pLDDT 1. Bad ids raise the
    /// pipeline's `InputException` naming the protein and track.
    let toExample
        (encoder: StructureEncoder option)
        (functionTokenizer: FunctionTokenizerData option)
        (p: Protein)
        : MultiTrackExample =
        let l = length p

        let structure =
            match p.StructureTokens, p.Coordinates, encoder with
            | null, null, _
            | null, _, None -> Array.create l StructureTokens.Mask
            | null, coordinates, Some encoder ->
                let chain =
                    ProteinChain.ofAtom37
                        p.Name
                        "A"
                        (if isNull p.Sequence then
                             String('X', l)
                         else
                             p.Sequence.Replace('_', 'X'))
                        (Array.init l (fun i -> i + 1))
                        coordinates

                (StructureTokenizer.tokenize encoder chain).Tokens
            | given, _, _ -> Array.copy given

        let functionIds =
            match p.FunctionAnnotations, functionTokenizer with
            | null, _
            | [||], _ -> Array.create (l * int Tracks.FunctionSlots) Tracks.Absent
            | annotations, Some data ->
                let rows = FunctionTokenizer.encode data annotations l

                Array.init (l * int Tracks.FunctionSlots) (fun k ->
                    rows.[1 + k / int Tracks.FunctionSlots, k % int Tracks.FunctionSlots])
            | _, None ->
                InputError.raise
                    p.Name
                    (InputLocation.Field "function_annotations")
                    "function annotations need a function tokenizer (keyword vocabulary and LSH tables); none is loaded"

        MultiTrackData.check
            {
                Name = p.Name
                Sequence =
                    if isNull p.Sequence then
                        Array.create l SequenceTokenizer.Mask
                    else
                        SequenceTokenizer.encode false p.Sequence
                Structure = structure
                Ss8 =
                    if isNull p.SecondaryStructure then
                        Array.create l Tracks.Absent
                    else
                        Ss8Tokenizer.encode false p.SecondaryStructure
                Sasa =
                    if isNull p.Sasa then
                        Array.create l Tracks.Absent
                    else
                        SasaTokenizer.encode false p.Sasa
                Function = functionIds
                ResidueAnnotations = Array.create (l * int Tracks.ResidueSlots) Tracks.Absent
                Coordinates =
                    Array.init (l * 9) (fun k ->
                        if isNull p.Coordinates then
                            Single.NaN
                        else
                            p.Coordinates.[k / 9, (k / 3) % 3, k % 3])
                Plddt = Array.create l 1.0f
            }

    /// The model input of one protein: `toExample` batched as training batches it (BOS/EOS added, B = 1).
    /// Shapes: -> tracks [1, L + 2]
    let toInput
        (encoder: StructureEncoder option)
        (functionTokenizer: FunctionTokenizerData option)
        (p: Protein)
        : MultiTrackInput =
        (MultiTrackData.batch [| toExample encoder functionTokenizer p |]).Tracks

    let private row (t: torch.Tensor) : int64[] =
        let ids = t.select(0L, 0L).cpu().contiguous().data<int64>().ToArray()
        ids.[1 .. ids.Length - 2]

    /// The sequence of ids 4 … 31 and MASK (`_`); `<unk>` and other specials as `X`.
    let private sequenceOf (ids: int64[]) =
        ids
        |> Array.map (fun id ->
            if id = SequenceTokenizer.Mask then
                '_'
            elif id >= 4L && id < 31L then
                SequenceTokenizer.vocabulary.[int id].[0]
            else
                'X')
        |> String

    /// The SS8 string of ids (0: `_`; `<motif>`, `<unk>`: `X`).
    let private ss8Of (ids: int64[]) =
        ids
        |> Array.map (fun id ->
            if id = Ss8Tokenizer.Mask then
                '_'
            elif id >= Tracks.FirstLabel && id < Ss8Tokenizer.VocabularySize then
                Ss8Tokenizer.Classes.[int (id - Tracks.FirstLabel)]
            else
                'X')
        |> String

    /// A protein from the model's tokens (B = 1, BOS/EOS included), as ESM's `decode_protein_tensor`: the sequence
    /// (MASK as `_`), structure tokens, SS8 (mask as `_`), SASA (bin midpoints, NaN at masks); name and function
    /// annotations from `template`. Coordinates: with `decodeStructure`, a `decoder`, and structure tokens without
    /// MASK, the decoder's backbone (N, CA, C, inferred O; `StructureDecoder.decodeWithSequence` with the sequence,
    /// `_` read as alanine) with its pLDDT (when the decoder's confidence heads were trained) and pTM (when also
    /// informative); otherwise the template's coordinates, pLDDT and pTM. Unlike ESM, which re-decodes structure
    /// tokens whenever they are complete, a structure given as coordinates is kept as given unless
    /// `decodeStructure` asks for the decoder's.
    let ofInput
        (decoder: StructureDecoder option)
        (decodeStructure: bool)
        (template: Protein)
        (x: MultiTrackInput)
        : Protein =
        if x.Sequence.shape.[0] <> 1L then
            raise (ArgumentException(sprintf "one protein at a time (B = 1), got B = %d" x.Sequence.shape.[0], "x"))

        let sequence = sequenceOf (row x.Sequence)
        let tokens = row x.Structure
        let ss8 = ss8Of (row x.Ss8)
        let sasa = SasaTokenizer.decode false (row x.Sasa)

        let decoded =
            match decoder with
            | Some decoder when decodeStructure && tokens |> Array.forall StructureTokens.isCode ->
                let d =
                    StructureDecoder.decodeWithSequence
                        decoder
                        (sequence.Replace('_', 'A'))
                        (StructureTokens.wrap template.Name tokens)

                Some(d, decoder.ConfidenceTrained, decoder.ConfidenceTrained && decoder.PtmInformative)
            | _ -> None

        let coordinates, plddt, ptm =
            match decoded with
            | Some(d, plddtTrained, ptmInformative) ->
                d.Chain.Atom37.Clone() :?> float32[,,],
                (if plddtTrained then Array.copy d.Plddt else null),
                (if ptmInformative then Nullable d.Ptm else Nullable())
            | None -> template.Coordinates, template.Plddt, template.Ptm

        {
            Name = template.Name
            Sequence = sequence
            Coordinates = coordinates
            SecondaryStructure = ss8
            Sasa = sasa
            FunctionAnnotations = template.FunctionAnnotations
            StructureTokens = tokens
            Plddt = plddt
            Ptm = ptm
        }

    // ---- files --------------------------------------------------------------------------------------------------

    let private inv = CultureInfo.InvariantCulture

    /// FASTA text: `>name`, then the sequence (`_` kept) in lines of 80. A protein without a sequence raises an
    /// `InputException` naming it.
    let toFasta (proteins: Protein[]) : string =
        let sb = StringBuilder()

        for p in proteins do
            if isNull p.Sequence then
                InputError.raise p.Name (InputLocation.Field "sequence") "a FASTA record needs a sequence"

            sb.Append('>').Append(p.Name).Append('\n') |> ignore

            for start in 0..80 .. max 0 (p.Sequence.Length - 1) do
                sb.Append(p.Sequence.Substring(start, min 80 (p.Sequence.Length - start))).Append('\n')
                |> ignore

        sb.ToString()

    /// Proteins from a FASTA file (`Corpus.readFasta`: name = the header up to the first space), sequence only.
    /// Characters that are not letters or `_` raise an `InputException` naming the file and record.
    let readFasta (path: string) : Protein[] =
        Corpus.readFasta path
        |> Array.map (fun (name, sequence) ->
            match sequence |> Seq.tryFindIndex (fun c -> not (Char.IsAsciiLetter c || c = '_')) with
            | Some i ->
                InputError.raise
                    path
                    (InputLocation.Field name)
                    (sprintf "character %d ('%c') is not a residue letter or _" (i + 1) sequence.[i])
            | None -> ofSequence name (sequence.ToUpperInvariant()))

    /// PDB text of proteins with coordinates (`toChain`): one MODEL per protein when there are several, each
    /// preceded by `REMARK 250 PTM: 0.8123` when its pTM is known; B-factor = 100 · pLDDT.
    let toPdb (proteins: Protein[]) : string =
        let sb = StringBuilder()
        let several = proteins.Length > 1

        proteins
        |> Array.iteri (fun m p ->
            if p.Ptm.HasValue then
                sb.Append(String.Format(inv, "REMARK 250 PTM: {0:F4}\n", p.Ptm.Value)) |> ignore

            if several then
                sb.Append(String.Format(inv, "MODEL     {0,4}\n", m + 1)) |> ignore

            let text = Pdb.toText AtomLayout.Atom37 None (toChain p)
            // Pdb.toText ends each chain with END; inside MODELs it becomes ENDMDL, and one END closes the file.
            let body = text.Substring(0, text.Length - "END\n".Length)
            sb.Append(body) |> ignore

            if several then
                sb.Append("ENDMDL\n") |> ignore)

        sb.Append("END\n").ToString()

    /// mmCIF text (`Mmcif.toText`) of proteins with coordinates: one model per protein (`pdbx_PDB_model_num`),
    /// B-factor = 100 · pLDDT.
    let toMmcif (proteins: Protein[]) : string =
        Mmcif.toText (proteins |> Array.map toChain)

    /// A protein from a structure file (PDB or mmCIF, optionally gzipped; first model; `chain` null or "": the first
    /// protein chain): `ofChain`.
    let read (path: string) (chain: string) : Protein =
        StructureFile.read path (if String.IsNullOrEmpty chain then None else Some chain)
        |> ofChain

    // ---- JSON ---------------------------------------------------------------------------------------------------

    /// JSON text: an array with one object per protein, fields `name`, `sequence`, `ss8`, `sasa` (null at masked
    /// positions), `structure_tokens`, `plddt`, `ptm`, `function_annotations` ([{label, start, end}]) and
    /// `coordinates` ([L][37] of [x, y, z], null for a missing atom), each null when absent (ARCHITECTURE.md,
    /// `generate.fsx`). Numbers round-trip exactly (float32 and float64 shortest forms).
    let toJson (proteins: Protein[]) : string =
        use stream = new MemoryStream()

        do
            use w = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = true))
            w.WriteStartArray()

            for p in proteins do
                ProteinJson.write w (length p) p

            w.WriteEndArray()

        Encoding.UTF8.GetString(stream.ToArray()) + "\n"

    /// Parses the JSON of `toJson` (an array of objects, or one object). Problems raise an `InputException` naming
    /// `file` and the field (e.g. `[1].sasa[3]`), or the line for text that is not JSON.
    let ofJson (file: string) (json: string) : Protein[] =
        use doc = Json.parseDocument file json
        let root = doc.RootElement

        let parse (index: int) (e: JsonElement) =
            let p = ProteinJson.parse file index e

            if (trackLengths p).IsEmpty && isNull p.Coordinates then
                p
            else
                // The lengths must agree; the error names the file and the entry.
                try
                    length p |> ignore
                    p
                with :? InputException as ex ->
                    InputError.raise file (InputLocation.Field(sprintf "[%d]" index)) ex.Message

        match root.ValueKind with
        | JsonValueKind.Array -> root.EnumerateArray() |> Seq.mapi parse |> Array.ofSeq
        | JsonValueKind.Object -> [| parse 0 root |]
        | _ ->
            InputError.raise
                file
                InputLocation.Whole
                (sprintf "expected an array of proteins, got %s" (Json.kindName root))

    /// Reads a protein JSON file (`ofJson`).
    let readJson (path: string) : Protein[] = ofJson path (TextFiles.read path)

    /// Writes proteins by the extension of `path`: `.fasta`/`.fa`, `.pdb`, `.cif`/`.mmcif`, `.json` (each optionally
    /// `.gz`), atomically. Another extension raises an `ArgumentException` naming the path.
    let write (path: string) (proteins: Protein[]) : unit =
        let bare = TextFiles.withoutGz path

        let text =
            match Path.GetExtension(bare).ToLowerInvariant() with
            | ".fasta"
            | ".fa" -> toFasta proteins
            | ".pdb" -> toPdb proteins
            | ".cif"
            | ".mmcif" -> toMmcif proteins
            | ".json" -> toJson proteins
            | other ->
                raise (
                    ArgumentException(
                        sprintf "%s: unknown output format '%s' (expected .fasta, .pdb, .cif or .json)" path other
                    )
                )

        TextFiles.writeAtomic path text
