namespace Esm3Structure.Io

open System
open System.Collections.Generic
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp
open Esm3Structure

/// Reads the tensors of a PyTorch checkpoint written by `torch.save` in the zip format of PyTorch ≥ 1.6
/// (`NAME/data.pkl`, `NAME/data/<storage key>`, `NAME/version`, since 2.1 `NAME/byteorder`), e.g. ESM's
/// `esm3_structure_encoder_v0.pth`. A pickle is a program: this reader interprets only the opcodes a tensor
/// checkpoint uses and knows only these globals, whose effect it implements itself (nothing is ever imported or
/// called): `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` /
/// `_rebuild_parameter`, and the typed storages `torch.FloatStorage`, `HalfStorage`, `BFloat16Storage`,
/// `DoubleStorage`, `LongStorage`, `IntStorage`, `ShortStorage`, `CharStorage`, `ByteStorage`, `BoolStorage`.
/// Any other global is refused with an `InputException` naming it. The format is PyTorch's
/// (`torch/serialization.py`: `_save`, `_load`, `persistent_load`; `torch/_utils.py`: `_rebuild_tensor_v2`) and
/// Python's pickle protocol (`Lib/pickletools.py`, protocols 2–5).
module PyTorchCheckpoint =

    /// True when the file starts with a zip local-file header ("PK\003\004"), as `torch.save`'s files do; false
    /// for a shorter file. A missing file raises an `InputException`.
    let isZip (path: string) =
        try
            use s = File.OpenRead path
            let head = Array.zeroCreate<byte> 4

            s.ReadAtLeast(head.AsSpan(), 4, false) = 4
            && head = [| 0x50uy; 0x4buy; 0x03uy; 0x04uy |]
        with
        | :? FileNotFoundException
        | :? DirectoryNotFoundException -> InputError.raise path InputLocation.Whole "no such file"

    /// The pickle's bytes and the archive's folder name.
    let private pickleOf (path: string) (archive: ZipArchive) =
        let pickles =
            archive.Entries
            |> Seq.filter (fun e ->
                e.FullName.EndsWith "/data.pkl"
                && e.FullName.IndexOf '/' = e.FullName.Length - 9)
            |> List.ofSeq

        match pickles with
        | [ entry ] ->
            let prefix = entry.FullName.Substring(0, entry.FullName.Length - 9)
            use s = entry.Open()
            use m = new MemoryStream()
            s.CopyTo m
            m.ToArray(), prefix
        | [] ->
            InputError.raise
                path
                InputLocation.Whole
                "a zip file without NAME/data.pkl: not a checkpoint written by torch.save"
        | many ->
            InputError.raise
                path
                InputLocation.Whole
                (sprintf "%d data.pkl records: not a single torch.save checkpoint" many.Length)

    /// The open archive of a checkpoint, its pickle's bytes and its folder name, after checking the format.
    let private openArchive (path: string) =
        if not (isZip path) then
            let head =
                use s = File.OpenRead path
                let b = Array.zeroCreate<byte> 2
                s.ReadAtLeast(b.AsSpan(), 2, false) |> ignore
                b

            if head = [| 0x80uy; 0x02uy |] then
                InputError.raise
                    path
                    InputLocation.Whole
                    "a PyTorch file in the pre-1.6 format (not a zip): load it in Python and torch.save it again"
            else
                InputError.raise path InputLocation.Whole "not a PyTorch checkpoint (no zip header)"

        let archive =
            try
                ZipFile.OpenRead path
            with :? InvalidDataException as e ->
                InputError.raise path InputLocation.Whole ("not a readable zip archive: " + e.Message)

        try
            let data, prefix = pickleOf path archive

            match archive.GetEntry(prefix + "/byteorder") with
            | null -> ()
            | entry ->
                use r = new StreamReader(entry.Open())
                let order = r.ReadToEnd().Trim()

                if order <> "little" then
                    InputError.raise
                        path
                        (InputLocation.Field(prefix + "/byteorder"))
                        (sprintf "byte order '%s' (this reader reads little-endian checkpoints)" order)

            archive, data, prefix
        with _ ->
            archive.Dispose()
            reraise ()

    /// Each tensor's name and stored view, in the pickle's order, from the pickle alone: no tensor data is read
    /// (the shapes of a checkpoint of any size, at once). Errors as `read`.
    let entries (path: string) : (string * StoredTensor) list =
        let archive, data, prefix = openArchive path
        use _ = archive
        PyTorchPickle.describe path data prefix

    let private elementSize (dtype: torch.ScalarType) =
        match dtype with
        | torch.ScalarType.Float64
        | torch.ScalarType.Int64 -> 8L
        | torch.ScalarType.Float32
        | torch.ScalarType.Int32 -> 4L
        | torch.ScalarType.Float16
        | torch.ScalarType.BFloat16
        | torch.ScalarType.Int16 -> 2L
        | _ -> 1L

    /// True when the view's elements are its storage's elements `Offset …` in C order (no gaps, no repeats).
    let private isContiguous (t: StoredTensor) =
        let mutable expected = 1L
        let mutable ok = true

        for d in t.Shape.Length - 1 .. -1 .. 0 do
            if t.Shape.[d] <> 1L && t.Stride.[d] <> expected then
                ok <- false

            expected <- expected * t.Shape.[d]

        ok || Array.contains 0L t.Shape

    /// The storage record of `t`, opened and positioned at element `skip`, after checking the record's size.
    let private openRecord (path: string) (archive: ZipArchive) (prefix: string) (t: StoredTensor) (skip: int64) =
        let name = prefix + "/data/" + t.Storage

        let entry =
            match archive.GetEntry name with
            | null ->
                InputError.raise path (InputLocation.Field name) "the pickle refers to a storage the archive lacks"
            | e -> e

        let expected = t.StorageCount * elementSize t.Dtype

        if entry.Length <> expected then
            InputError.raise
                path
                (InputLocation.Field name)
                (sprintf
                    "storage of %d × %O needs %d bytes, the record holds %d"
                    t.StorageCount
                    t.Dtype
                    expected
                    entry.Length)

        let s = entry.Open()

        try
            let mutable left = skip * elementSize t.Dtype
            let buffer = Array.zeroCreate<byte>(int (min left (1L <<< 20)) |> max 1)

            while left > 0L do
                let n = s.Read(buffer, 0, int (min left buffer.LongLength))

                if n <= 0 then
                    InputError.raise path (InputLocation.Field name) "the record ends early"

                left <- left - int64 n

            s
        with _ ->
            s.Dispose()
            reraise ()

    /// Fills the contiguous CPU tensor `target` (its bytes in order) from `s`, in pieces of at most 16 MiB.
    let private fill (path: string) (name: string) (s: Stream) (target: torch.Tensor) =
        use flat = target.view (-1L)
        let count = flat.shape.[0]
        let chunk = max 1L ((1L <<< 24) / int64 target.ElementSize)
        let mutable start = 0L

        while start < count do
            let length = min chunk (count - start)
            use part = flat.narrow (0L, start, length)

            try
                s.ReadExactly part.bytes
            with :? EndOfStreamException ->
                InputError.raise path (InputLocation.Field name) "the record ends inside this tensor's data"

            start <- start + length

    /// Tensor `name` (`t`) into a fresh contiguous CPU tensor: a contiguous view is read straight into it; any other
    /// view reads its whole storage, then copies the view out.
    let private readOne (path: string) (archive: ZipArchive) (prefix: string) (name: string) (t: StoredTensor) =
        if isContiguous t then
            let out = torch.empty (t.Shape, dtype = t.Dtype)

            try
                use s = openRecord path archive prefix t t.Offset
                fill path name s out
                out
            with _ ->
                out.Dispose()
                reraise ()
        else
            use storage = torch.empty ([| t.StorageCount |], dtype = t.Dtype)

            do
                use s = openRecord path archive prefix t 0L
                fill path name s storage

            use view = storage.as_strided (t.Shape, t.Stride, t.Offset)
            let out = torch.empty (t.Shape, dtype = t.Dtype)
            out.copy_ view |> ignore
            out

    /// The checkpoint's tensors as (name, tensor) in the pickle's order: fresh contiguous CPU tensors of the stored
    /// dtypes (float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool). Views of one storage
    /// (offsets, strides, shared storages) become separate copies. Nested dicts are flattened with "." (ESM's
    /// files hold the state dict itself; `{"model": state_dict}` gives "model.…" names); non-tensor leaves (step
    /// counts, strings, lists) are left out. The file must be the zip format; the pre-1.6 format, a big-endian
    /// archive, a refused global, a storage out of bounds or a duplicate name raise an `InputException` naming the
    /// file and the record or tensor. Tensors are read one at a time, each straight from its record when it is a
    /// contiguous view. The tensors belong to the caller's dispose scope, if one is open.
    let read (path: string) : (string * torch.Tensor) list =
        let archive, data, prefix = openArchive path
        use _ = archive
        let created = List<string * torch.Tensor>()

        try
            for name, t in PyTorchPickle.describe path data prefix do
                created.Add((name, readOne path archive prefix name t))

            List.ofSeq created
        with _ ->
            for _, t in created do
                t.Dispose()

            reraise ()

    /// Reads every tensor of the checkpoint into `into name`, an existing tensor of the same shape (the caller
    /// checks names and shapes first, e.g. `Checkpoint.load`): a contiguous CPU target of the stored dtype is
    /// filled straight from the record, with no second copy; any other target (another dtype or device) receives
    /// a copy. Errors as `read`; a failure part-way leaves the targets read so far changed. Call under no_grad when
    /// the targets are parameters.
    let readInto (path: string) (into: string -> torch.Tensor) : unit =
        let archive, data, prefix = openArchive path
        use _ = archive

        for name, t in PyTorchPickle.describe path data prefix do
            let target = into name

            if target.shape <> t.Shape then
                InputError.raise
                    path
                    (InputLocation.Field name)
                    (sprintf "shape %A, the target's is %A" t.Shape target.shape)

            if
                isContiguous t
                && target.dtype = t.Dtype
                && target.device_type = DeviceType.CPU
                && target.is_contiguous ()
            then
                use s = openRecord path archive prefix t t.Offset
                fill path name s target
            else
                use copy = readOne path archive prefix name t
                target.copy_ copy |> ignore

    /// Writes a state dict as `torch.save(OrderedDict(tensors), path)` writes it in PyTorch ≥ 1.6: a zip of stored
    /// records `ARCHIVE/data.pkl` (pickle protocol 2: an OrderedDict of `torch._utils._rebuild_tensor_v2` calls
    /// on typed storages), `ARCHIVE/data/<i>` (each tensor's contiguous little-endian bytes, one storage per tensor),
    /// `ARCHIVE/byteorder` ("little") and `ARCHIVE/version` ("3"), ARCHIVE being the file name without its
    /// extension. Such a file loads in PyTorch with `torch.load(path, weights_only=True)` (only those globals) and
    /// in `read`. The same name and tensors give the same bytes. Written atomically (`AtomicFile`): a failure leaves
    /// any previous file intact. A dtype without a
    /// typed storage (complex, quantized), a duplicate or empty name raise an `ArgumentException` naming `path`.
    /// Shapes: any.
    let write (path: string) (tensors: seq<string * torch.Tensor>) : unit =
        let items = List.ofSeq tensors

        let bad msg =
            raise (ArgumentException(sprintf "%s: cannot write a PyTorch checkpoint: %s" path msg))

        let names = HashSet<string>()

        for name, t in items do
            if String.IsNullOrEmpty name then
                bad "a tensor name is empty"

            if not (names.Add name) then
                bad (sprintf "two tensors named '%s'" name)

            if (PyTorchPickle.storageTypeOf t.dtype).IsNone then
                bad (sprintf "tensor '%s' has dtype %O, which has no typed storage here" name t.dtype)

        let archive =
            let stem = Path.GetFileNameWithoutExtension path
            if String.IsNullOrEmpty stem then "archive" else stem

        let contiguous =
            items
            |> List.mapi (fun i (name, t) -> name, string i, t.detach().cpu().contiguous())

        let pickle = PyTorchPickle.stateDict contiguous

        Esm3Structure.AtomicFile.write path (fun stream ->
            use zip = new ZipArchive(stream, ZipArchiveMode.Create, true)

            let record (name: string) (write: Stream -> unit) =
                let entry = zip.CreateEntry(archive + "/" + name, CompressionLevel.NoCompression)
                // A fixed time stamp (zip's earliest, as torch.save writes): the same tensors give the same bytes.
                entry.LastWriteTime <- DateTimeOffset(1980, 1, 1, 0, 0, 0, TimeSpan.Zero)
                use s = entry.Open()
                write s

            record "data.pkl" (fun s -> s.Write pickle)
            record "byteorder" (fun s -> s.Write(Encoding.ASCII.GetBytes "little"))

            for _, key, c in contiguous do
                record ("data/" + key) (fun s ->
                    let count = c.numel ()
                    let chunk = max 1L ((1L <<< 24) / int64 c.ElementSize)
                    use flat = c.reshape (-1L)
                    let mutable start = 0L

                    while start < count do
                        let length = min chunk (count - start)
                        use part = flat.narrow (0L, start, length)
                        s.Write(part.bytes)
                        start <- start + length)

            record "version" (fun s -> s.Write(Encoding.ASCII.GetBytes "3\n")))

        for _, _, c in contiguous do
            c.Dispose()
