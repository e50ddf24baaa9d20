namespace Esm3Structure.Io

open System
open System.Buffers.Binary
open System.Collections.Generic
open System.Globalization
open System.IO
open System.Numerics
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.Tensors

/// One tensor's entry in a safetensors header.
type SafetensorsEntry =
    {
        /// The tensor's name (the header key).
        Name: string
        /// The safetensors dtype name: "F32", "I64", "BOOL", ...
        Dtype: string
        /// The shape; empty for a 0-d scalar.
        Shape: int64[]
        /// First byte of the tensor's data, relative to the start of the data region.
        Begin: int64
        /// One past the last byte, relative to the start of the data region.
        End: int64
    }

/// A validated safetensors header.
type SafetensorsHeader =
    {
        /// The file it was read from.
        File: string
        /// N, the length of the JSON header in bytes.
        HeaderLength: int64
        /// Absolute file offset of the data region (8 + N).
        DataStart: int64
        /// The tensors, ordered by their data offsets.
        Entries: SafetensorsEntry list
        /// The `__metadata__` map (empty when absent).
        Metadata: Map<string, string>
    }

/// The contents of a safetensors file: CPU tensors in file (data offset) order, and the metadata.
type SafetensorsFile =
    {
        /// (name, tensor) pairs, ordered by data offset. Each tensor is freshly allocated on the CPU.
        Tensors: (string * torch.Tensor) list
        /// The `__metadata__` map (empty when absent).
        Metadata: Map<string, string>
    }

/// Reads and writes safetensors files: an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
/// (`name -> {"dtype", "shape", "data_offsets": [begin, end]}` plus optional `"__metadata__": {string: string}`),
/// then the raw little-endian tensor data. Format and validation rules follow huggingface/safetensors
/// (`safetensors/src/tensor.rs`: `read_metadata`, `Metadata::validate`, `prepare`, the `Dtype` enum).
///
/// Tensor bytes are copied between the file and the tensor's memory as they are, so this module assumes a
/// little-endian host (x86-64, arm64); big-endian hosts are out of scope.
module Safetensors =

    /// safetensors' own limit on the header length (MAX_HEADER_SIZE in tensor.rs).
    let maxHeaderLength = 100_000_000L

    // name, bits per element, torch dtype when TorchSharp has one. Listed in the order of safetensors' `Dtype` enum
    // (tensor.rs, "MUST be in increasing alignment order"); the writer orders tensors by this rank, descending, then
    // by name, exactly as safetensors' `prepare` does.
    let private dtypeTable: (string * int * torch.ScalarType option) list =
        [
            "BOOL", 8, Some torch.ScalarType.Bool
            "F4", 4, None
            "F6_E2M3", 6, None
            "F6_E3M2", 6, None
            "U8", 8, Some torch.ScalarType.Byte
            "I8", 8, Some torch.ScalarType.Int8
            "F8_E5M2", 8, None
            "F8_E4M3", 8, None
            "F8_E8M0", 8, None
            "I16", 16, Some torch.ScalarType.Int16
            "U16", 16, None
            "F16", 16, Some torch.ScalarType.Float16
            "BF16", 16, Some torch.ScalarType.BFloat16
            "I32", 32, Some torch.ScalarType.Int32
            "U32", 32, None
            "F32", 32, Some torch.ScalarType.Float32
            "C64", 64, Some torch.ScalarType.ComplexFloat32
            "F64", 64, Some torch.ScalarType.Float64
            "I64", 64, Some torch.ScalarType.Int64
            "U64", 64, None
        ]

    let private bitsByName =
        dtypeTable |> List.map (fun (n, bits, _) -> n, bits) |> dict

    let private rankByName = dtypeTable |> List.mapi (fun i (n, _, _) -> n, i) |> dict

    let private nameByScalar =
        dtypeTable
        |> List.choose (fun (n, _, st) -> st |> Option.map (fun s -> s, n))
        |> dict

    /// Every dtype name the safetensors format defines (including those TorchSharp lacks).
    let dtypeNames: string list = dtypeTable |> List.map (fun (n, _, _) -> n)

    /// The TorchSharp dtype for a safetensors dtype name; None for names TorchSharp lacks (U16, U32, U64, F8_*, F4,
    /// F6_*) or does not know.
    let scalarType (dtype: string) : torch.ScalarType option =
        dtypeTable |> List.tryPick (fun (n, _, st) -> if n = dtype then st else None)

    /// The safetensors dtype name for a TorchSharp dtype; None for dtypes safetensors cannot store
    /// (ComplexFloat64, quantized types).
    let dtypeName (dtype: torch.ScalarType) : string option =
        match nameByScalar.TryGetValue dtype with
        | true, n -> Some n
        | _ -> None

    let private fail (file: string) (location: InputLocation) (message: string) : 'a =
        InputError.raise file location message

    /// Reads a non-negative integer that fits in int64, or fails naming `what`.
    let private nonNegativeInt (file: string) (name: string) (what: string) (e: JsonElement) : int64 =
        if e.ValueKind <> JsonValueKind.Number then
            fail
                file
                (InputLocation.Field name)
                (sprintf "%s must be a non-negative integer, got %s" what (Json.kindName e))

        match e.TryGetInt64() with
        | true, v when v >= 0L -> v
        | true, v -> fail file (InputLocation.Field name) (sprintf "%s must be a non-negative integer, got %d" what v)
        | _ ->
            fail
                file
                (InputLocation.Field name)
                (sprintf "%s must be a non-negative integer below 2^63, got %s" what (e.GetRawText()))

    let private property (file: string) (name: string) (key: string) (entry: JsonElement) : JsonElement =
        match entry.TryGetProperty key with
        | true, v -> v
        | _ -> fail file (InputLocation.Field name) (sprintf "missing \"%s\"" key)

    let private parseEntry (file: string) (name: string) (entry: JsonElement) : SafetensorsEntry =
        if entry.ValueKind <> JsonValueKind.Object then
            fail
                file
                (InputLocation.Field name)
                (sprintf "the tensor entry must be an object, got %s" (Json.kindName entry))

        let dtypeEl = property file name "dtype" entry

        if dtypeEl.ValueKind <> JsonValueKind.String then
            fail file (InputLocation.Field name) (sprintf "\"dtype\" must be a string, got %s" (Json.kindName dtypeEl))

        let dtype = dtypeEl.GetString()

        if not (bitsByName.ContainsKey dtype) then
            fail
                file
                (InputLocation.Field name)
                (sprintf "unknown dtype \"%s\" (known: %s)" dtype (String.Join(", ", dtypeNames)))

        let shapeEl = property file name "shape" entry

        if shapeEl.ValueKind <> JsonValueKind.Array then
            fail file (InputLocation.Field name) (sprintf "\"shape\" must be an array, got %s" (Json.kindName shapeEl))

        let shape =
            [|
                for i, d in Seq.indexed (shapeEl.EnumerateArray()) ->
                    nonNegativeInt file name (sprintf "\"shape\"[%d]" i) d
            |]

        let offsetsEl = property file name "data_offsets" entry

        if offsetsEl.ValueKind <> JsonValueKind.Array || offsetsEl.GetArrayLength() <> 2 then
            fail
                file
                (InputLocation.Field name)
                (sprintf "\"data_offsets\" must be an array [begin, end], got %s" (offsetsEl.GetRawText()))

        let b = nonNegativeInt file name "\"data_offsets\"[0]" offsetsEl.[0]
        let e = nonNegativeInt file name "\"data_offsets\"[1]" offsetsEl.[1]

        if e < b then
            fail file (InputLocation.Field name) (sprintf "\"data_offsets\" [%d, %d]: begin is after end" b e)

        // Byte size from the shape, in arbitrary precision so a lying shape cannot overflow.
        let bits =
            Array.fold (fun (acc: BigInteger) (d: int64) -> acc * BigInteger d) (BigInteger bitsByName.[dtype]) shape

        if not (bits % BigInteger 8).IsZero then
            fail
                file
                (InputLocation.Field name)
                (sprintf "shape %s of %s is not a whole number of bytes" (Shape.show shape) dtype)

        let needed = bits / BigInteger 8

        if needed <> BigInteger(e - b) then
            fail
                file
                (InputLocation.Field name)
                (sprintf
                    "\"data_offsets\" [%d, %d] hold %d bytes, but shape %s of %s needs %O bytes"
                    b
                    e
                    (e - b)
                    (Shape.show shape)
                    dtype
                    needed)

        {
            Name = name
            Dtype = dtype
            Shape = shape
            Begin = b
            End = e
        }

    let private parseMetadata (file: string) (value: JsonElement) : Map<string, string> =
        let loc = InputLocation.Field "__metadata__"

        match value.ValueKind with
        | JsonValueKind.Null -> Map.empty
        | JsonValueKind.Object ->
            let mutable m = Map.empty

            for p in value.EnumerateObject() do
                if p.Value.ValueKind <> JsonValueKind.String then
                    fail
                        file
                        loc
                        (sprintf "the value of \"%s\" must be a string, got %s" p.Name (Json.kindName p.Value))

                if m.ContainsKey p.Name then
                    fail file loc (sprintf "key \"%s\" appears twice" p.Name)

                m <- m.Add(p.Name, p.Value.GetString())

            m
        | _ -> fail file loc (sprintf "must be an object of strings, got %s" (Json.kindName value))

    /// Validates the header against the file length and returns it. Nothing sized by the file's claims is allocated
    /// before the claim is checked against the actual file length.
    let private readHeaderFrom (file: string) (stream: Stream) : SafetensorsHeader =
        let headerLoc = InputLocation.Field "header length"
        let fileLength = stream.Length

        if fileLength < 8L then
            fail file headerLoc (sprintf "the file is %d bytes long, shorter than the 8-byte header length" fileLength)

        let lengthBytes = Array.zeroCreate<byte> 8
        stream.Position <- 0L
        stream.ReadExactly(lengthBytes, 0, 8)
        let n = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan lengthBytes)

        if n > uint64 (fileLength - 8L) then
            fail
                file
                headerLoc
                (sprintf "%d is larger than the %d bytes that follow it in the file" n (fileLength - 8L))

        if n > uint64 maxHeaderLength then
            fail file headerLoc (sprintf "%d is larger than safetensors' limit of %d bytes" n maxHeaderLength)

        let n = int64 n
        let headerBytes = Array.zeroCreate<byte>(int n)
        stream.ReadExactly(headerBytes, 0, int n)

        let text =
            try
                UTF8Encoding(false, true).GetString headerBytes
            with :? DecoderFallbackException as e ->
                fail file (InputLocation.Offset(8L + int64 (max 0 e.Index))) "the header is not valid UTF-8"

        use doc =
            try
                JsonDocument.Parse text
            with :? JsonException as e ->
                fail file (InputLocation.Field "header") (sprintf "the header is not valid JSON: %s" e.Message)

        let root = doc.RootElement

        if root.ValueKind <> JsonValueKind.Object then
            fail
                file
                (InputLocation.Field "header")
                (sprintf "the header must be a JSON object, got %s" (Json.kindName root))

        let seen = HashSet<string>()
        let mutable metadata = Map.empty
        let entries = ResizeArray<SafetensorsEntry>()

        for p in root.EnumerateObject() do
            if not (seen.Add p.Name) then
                fail file (InputLocation.Field p.Name) "the key appears twice in the header"

            if p.Name = "__metadata__" then
                metadata <- parseMetadata file p.Value
            else
                entries.Add(parseEntry file p.Name p.Value)

        let dataLength = fileLength - 8L - n

        for e in entries do
            if e.End > dataLength then
                fail
                    file
                    (InputLocation.Field e.Name)
                    (sprintf
                        "\"data_offsets\" [%d, %d] run past the end of the data region (%d bytes; the file is truncated or the offsets are wrong)"
                        e.Begin
                        e.End
                        dataLength)

        // Tensors must tile the data region: sorted by offsets, each starts where the previous one ended.
        let sorted = entries |> Seq.sortBy (fun e -> e.Begin, e.End) |> List.ofSeq
        let mutable position = 0L
        let mutable previous = None

        for e in sorted do
            if e.Begin < position then
                let other = previous |> Option.map (fun p -> p.Name) |> Option.defaultValue "?"

                fail
                    file
                    (InputLocation.Field e.Name)
                    (sprintf
                        "\"data_offsets\" [%d, %d] overlap tensor '%s' (which ends at %d)"
                        e.Begin
                        e.End
                        other
                        position)

            if e.Begin > position then
                fail
                    file
                    (InputLocation.Field e.Name)
                    (sprintf
                        "hole in the data region: bytes %d..%d before this tensor belong to no tensor"
                        position
                        e.Begin)

            position <- e.End
            previous <- Some e

        if position < dataLength then
            fail
                file
                (InputLocation.Offset(8L + n + position))
                (sprintf "the last %d bytes of the data region belong to no tensor" (dataLength - position))

        {
            File = file
            HeaderLength = n
            DataStart = 8L + n
            Entries = sorted
            Metadata = metadata
        }

    let private openRead (path: string) : FileStream =
        try
            new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 <<< 16)
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            raise (
                InputException(
                    {
                        File = path
                        Location = InputLocation.Whole
                        Message = "cannot open: " + e.Message
                    },
                    e
                )
            )

    /// Reads and validates the header of a safetensors file without reading tensor data: the header length fits the
    /// file and safetensors' limit; the header is UTF-8 JSON holding an object; every tensor has a known dtype, a
    /// shape of non-negative integers and `data_offsets` [begin ≤ end] whose size is shape × item size; the tensors
    /// neither overlap nor leave holes and cover the data region exactly; `__metadata__` maps strings to strings.
    /// Each violation raises an `InputException` naming the file and the tensor / "header length" / "header" /
    /// "__metadata__" or a byte offset.
    let readHeader (path: string) : SafetensorsHeader =
        use stream = openRead path
        readHeaderFrom path stream

    // Tensor bytes move in pieces of at most this many bytes (a Span is int-indexed).
    let private chunkBytes = 1L <<< 26

    /// Fills a fresh contiguous tensor from the stream's current position.
    let private fill (file: string) (entry: SafetensorsEntry) (dataStart: int64) (stream: Stream) (t: torch.Tensor) =
        use flat = t.reshape (-1L)
        let count = flat.shape.[0]
        let itemSize = int64 t.ElementSize
        let chunk = max 1L (chunkBytes / itemSize)
        let isBool = t.dtype = torch.ScalarType.Bool
        let mutable start = 0L

        while start < count do
            let length = min chunk (count - start)
            use part = flat.narrow (0L, start, length)
            let span = part.bytes

            try
                stream.ReadExactly span
            with :? EndOfStreamException ->
                fail
                    file
                    (InputLocation.Field entry.Name)
                    "the file ended inside this tensor's data (was it truncated while being read?)"

            if isBool then
                for i in 0 .. span.Length - 1 do
                    if span.[i] > 1uy then
                        fail
                            file
                            (InputLocation.Offset(dataStart + entry.Begin + start + int64 i))
                            (sprintf
                                "tensor '%s' is BOOL but holds the byte %d (only 0 and 1 are booleans)"
                                entry.Name
                                span.[i])

            start <- start + length

    /// Reads a whole safetensors file (validated as `readHeader` describes) into fresh CPU tensors, in data order.
    /// The tensors belong to the caller's dispose scope, if one is open. A dtype TorchSharp lacks (U16, U32, U64,
    /// F8_*, F4, F6_*) raises an `InputException` naming the tensor, as does a BOOL byte other than 0 or 1.
    /// Shapes: each tensor has the shape its header entry states.
    let read (path: string) : SafetensorsFile =
        use stream = openRead path
        let header = readHeaderFrom path stream

        for e in header.Entries do
            if (scalarType e.Dtype).IsNone then
                fail
                    path
                    (InputLocation.Field e.Name)
                    (sprintf "dtype %s has no TorchSharp equivalent, so this reader cannot load it" e.Dtype)

        let created = ResizeArray<string * torch.Tensor>()

        try
            for e in header.Entries do
                let t = torch.empty (e.Shape, dtype = (scalarType e.Dtype).Value)
                created.Add((e.Name, t))
                stream.Position <- header.DataStart + e.Begin
                fill path e header.DataStart stream t

            {
                Tensors = List.ofSeq created
                Metadata = header.Metadata
            }
        with _ ->
            for _, t in created do
                t.Dispose()

            reraise ()

    /// Reads every tensor of the file into `into name`, an existing tensor of the same shape (the caller checks
    /// names and shapes first, e.g. `Checkpoint.load`): a contiguous CPU target of the stored dtype is filled
    /// straight from the file, with no second copy; any other target (another dtype or device) receives a copy.
    /// Validation and errors as `read`; a failure part-way leaves the targets read so far changed. Call under
    /// no_grad when the targets are parameters.
    let readInto (path: string) (into: string -> torch.Tensor) : unit =
        use stream = openRead path
        let header = readHeaderFrom path stream

        for e in header.Entries do
            let dtype =
                match scalarType e.Dtype with
                | Some d -> d
                | None ->
                    fail
                        path
                        (InputLocation.Field e.Name)
                        (sprintf "dtype %s has no TorchSharp equivalent, so this reader cannot load it" e.Dtype)

            let target = into e.Name

            if target.shape <> e.Shape then
                fail path (InputLocation.Field e.Name) (sprintf "shape %A, the target's is %A" e.Shape target.shape)

            stream.Position <- header.DataStart + e.Begin

            if
                target.dtype = dtype
                && target.device_type = DeviceType.CPU
                && target.is_contiguous ()
            then
                fill path e header.DataStart stream target
            else
                use copy = torch.empty (e.Shape, dtype = dtype)
                fill path e header.DataStart stream copy
                target.copy_ copy |> ignore

    // ---- writing ----

    /// Ordinal comparison of UTF-8 bytes (Rust's `String` order, which safetensors' writer uses).
    let private utf8Compare (a: string) (b: string) =
        let x = Encoding.UTF8.GetBytes a
        let y = Encoding.UTF8.GetBytes b
        let n = min x.Length y.Length
        let mutable i = 0

        while i < n && x.[i] = y.[i] do
            i <- i + 1

        if i < n then
            compare x.[i] y.[i]
        else
            compare x.Length y.Length

    /// A JSON string literal escaped as serde_json does (`"`, `\`, control characters; everything else verbatim).
    let private jsonString (s: string) =
        let sb = StringBuilder(s.Length + 2)
        sb.Append '"' |> ignore

        for c in s do
            match c with
            | '"' -> sb.Append "\\\"" |> ignore
            | '\\' -> sb.Append "\\\\" |> ignore
            | '\n' -> sb.Append "\\n" |> ignore
            | '\r' -> sb.Append "\\r" |> ignore
            | '\t' -> sb.Append "\\t" |> ignore
            | '\b' -> sb.Append "\\b" |> ignore
            | '\012' -> sb.Append "\\f" |> ignore
            | c when c < ' ' ->
                sb.Append("\\u00").Append((int c).ToString("x2", CultureInfo.InvariantCulture))
                |> ignore
            | c -> sb.Append c |> ignore

        sb.Append('"').ToString()

    let private invariant (v: int64) =
        v.ToString(CultureInfo.InvariantCulture)

    /// Writes tensors and metadata as a safetensors file, atomically (`AtomicFile.write`). The bytes are
    /// deterministic and follow safetensors' own writer: tensors ordered by dtype (safetensors' alignment order,
    /// largest first) then by name, so a single-dtype file is in name order; compact JSON with `__metadata__` first
    /// (keys sorted, omitted when empty); the header padded with spaces to a multiple of 8 bytes. Each tensor is
    /// written from a contiguous CPU copy (detached). A bad argument (duplicate or reserved name, a dtype safetensors
    /// cannot store, a null) raises an `ArgumentException` naming `path` before anything is written; an I/O failure
    /// raises an `IOException` naming `path`, and the previous file at `path`, if any, is left intact.
    /// `metadata` may be null.
    /// Shapes: any.
    let write
        (path: string)
        (tensors: seq<string * torch.Tensor>)
        (metadata: IReadOnlyDictionary<string, string>)
        : unit =
        let bad msg =
            raise (ArgumentException(sprintf "%s: cannot write safetensors: %s" path msg))

        let items = List.ofSeq tensors
        let names = HashSet<string>()

        let entries =
            [
                for name, t in items do
                    if isNull name then
                        bad "a tensor name is null"

                    if isNull (box t) then
                        bad (sprintf "tensor '%s' is null" name)

                    if name = "__metadata__" then
                        bad "\"__metadata__\" is reserved and cannot name a tensor"

                    if not (names.Add name) then
                        bad (sprintf "the name '%s' appears twice" name)

                    match dtypeName t.dtype with
                    | Some d -> yield name, d, t
                    | None -> bad (sprintf "tensor '%s' has dtype %O, which safetensors cannot store" name t.dtype)
            ]
            |> List.sortWith (fun (n1, d1, _) (n2, d2, _) ->
                match compare rankByName.[d2] rankByName.[d1] with
                | 0 -> utf8Compare n1 n2
                | c -> c)

        let meta =
            if isNull metadata then
                []
            else
                [
                    for kv in metadata do
                        if isNull kv.Key || isNull kv.Value then
                            bad "a metadata key or value is null"

                        yield kv.Key, kv.Value
                ]
                |> List.sortWith (fun (a, _) (b, _) -> utf8Compare a b)

        let json = StringBuilder()
        json.Append '{' |> ignore
        let mutable first = true

        let comma () =
            if not first then
                json.Append ',' |> ignore

            first <- false

        if not meta.IsEmpty then
            comma ()
            json.Append(jsonString "__metadata__").Append(":{") |> ignore

            meta
            |> List.iteri (fun i (k, v) ->
                if i > 0 then
                    json.Append ',' |> ignore

                json.Append(jsonString k).Append(':').Append(jsonString v) |> ignore)

            json.Append '}' |> ignore

        let mutable offset = 0L

        for name, d, t in entries do
            let size = t.NumberOfElements * int64 t.ElementSize
            comma ()

            json
                .Append(jsonString name)
                .Append(":{\"dtype\":")
                .Append(jsonString d)
                .Append(",\"shape\":[")
                .Append(String.Join(",", t.shape |> Array.map invariant))
                .Append("],\"data_offsets\":[")
                .Append(invariant offset)
                .Append(',')
                .Append(invariant (offset + size))
                .Append("]}")
            |> ignore

            offset <- offset + size

        json.Append '}' |> ignore
        let raw = Encoding.UTF8.GetBytes(json.ToString())
        let padded = (raw.Length + 7) / 8 * 8
        let header = Array.create padded (byte ' ')
        Array.blit raw 0 header 0 raw.Length

        AtomicFile.write path (fun stream ->
            let lengthBytes = Array.zeroCreate<byte> 8
            BinaryPrimitives.WriteUInt64LittleEndian(Span lengthBytes, uint64 padded)
            stream.Write(lengthBytes, 0, 8)
            stream.Write(header, 0, header.Length)

            for _, _, t in entries do
                use _scope = torch.NewDisposeScope()
                let c = t.detach().cpu().contiguous()
                let flat = c.reshape (-1L)
                let count = flat.shape.[0]
                let chunk = max 1L (chunkBytes / int64 c.ElementSize)
                let mutable start = 0L

                while start < count do
                    let length = min chunk (count - start)
                    let part = flat.narrow (0L, start, length)
                    stream.Write(Span.op_Implicit part.bytes)
                    start <- start + length)
