namespace Esm3Structure.Io

open System
open System.Collections.Generic
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp
open Esm3Structure

/// A tensor of a PyTorch checkpoint as its pickle describes it: a view (offset, shape, strides, in elements) of a
/// typed storage, the record `ARCHIVE/data/<Storage>` of `StorageCount` elements. Bounds are checked when read.
type StoredTensor =
    {
        /// The storage's key in the archive.
        Storage: string
        Dtype: torch.ScalarType
        /// The storage's element count.
        StorageCount: int64
        Offset: int64
        Shape: int64[]
        Stride: int64[]
    }

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

    /// A value on the unpickler's stack.
    type private Value =
        | Mark
        | PyNone
        | PyBool of bool
        | PyInt of int64
        | PyFloat of float
        | PyString of string
        | PyBytes of byte[]
        | PyTuple of Value[]
        | PyList of List<Value>
        /// A dict, in insertion order (OrderedDict and dict alike).
        | PyDict of List<Value * Value>
        /// An allowed global, by "module.name".
        | Global of string
        /// A typed storage: key in the archive, element type, element count.
        | Storage of key: string * dtype: torch.ScalarType * count: int64
        | TensorRef of StoredTensor

    /// The storage types `torch.save` names in its persistent ids, with their element types.
    let private storageTypes =
        dict
            [
                "torch.DoubleStorage", torch.ScalarType.Float64
                "torch.FloatStorage", torch.ScalarType.Float32
                "torch.HalfStorage", torch.ScalarType.Float16
                "torch.BFloat16Storage", torch.ScalarType.BFloat16
                "torch.LongStorage", torch.ScalarType.Int64
                "torch.IntStorage", torch.ScalarType.Int32
                "torch.ShortStorage", torch.ScalarType.Int16
                "torch.CharStorage", torch.ScalarType.Int8
                "torch.ByteStorage", torch.ScalarType.Byte
                "torch.BoolStorage", torch.ScalarType.Bool
            ]

    let private orderedDict = "collections.OrderedDict"
    let private rebuildTensorV2 = "torch._utils._rebuild_tensor_v2"
    let private rebuildTensor = "torch._utils._rebuild_tensor"
    let private rebuildParameter = "torch._utils._rebuild_parameter"

    let private allowedGlobals =
        HashSet<string>(Seq.append [ orderedDict; rebuildTensorV2; rebuildTensor; rebuildParameter ] storageTypes.Keys)

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

    /// The view `size`, `stride` at `offset` of storage `key` (`count` elements of `dtype`), after checking that
    /// every element it reads lies inside the storage.
    let private view (fail: string -> Value) key dtype count offset (size: int64[]) (stride: int64[]) =
        if size.Length <> stride.Length then
            fail (sprintf "a tensor with %d sizes and %d strides" size.Length stride.Length)
        elif
            size |> Array.exists (fun n -> n < 0L)
            || stride |> Array.exists (fun s -> s < 0L)
            || offset < 0L
        then
            fail "a tensor with a negative size, stride or offset"
        else
            let last =
                if Array.contains 0L size then
                    offset - 1L
                else
                    offset + Array.fold2 (fun acc n s -> acc + (n - 1L) * s) 0L size stride

            if last >= count then
                fail (sprintf "a tensor reads element %d of a storage of %d" last count)
            else
                TensorRef
                    {
                        Storage = key
                        Dtype = dtype
                        StorageCount = count
                        Offset = offset
                        Shape = size
                        Stride = stride
                    }

    /// Runs the restricted unpickler over `data`; returns the pickle's top value.
    let private unpickle (path: string) (data: byte[]) =
        let stack = Stack<Value>()
        let memo = Dictionary<int64, Value>()
        let cursor = ref 0
        let mutable result = None

        let fail (message: string) : 'a =
            InputError.raise path (InputLocation.Field "data.pkl") (sprintf "at byte %d: %s" cursor.Value message)

        // The index of the next n bytes, which are consumed.
        let take (n: int) =
            if n < 0 || cursor.Value + n > data.Length then
                fail "the pickle ends early"

            let start = cursor.Value
            cursor.Value <- start + n
            start

        let bytes (n: int) = Array.sub data (take n) n
        let u8 () = int64 data.[take 1]

        let u16 () =
            int64 (BitConverter.ToUInt16(data, take 2))

        let u32 () =
            int64 (BitConverter.ToUInt32(data, take 4))

        let u64 () =
            let v = BitConverter.ToUInt64(data, take 8)

            if v > uint64 Int32.MaxValue then
                fail "a length beyond 2 GiB"

            int64 v

        let line () =
            let start = cursor.Value

            while cursor.Value < data.Length && data.[cursor.Value] <> 10uy do
                cursor.Value <- cursor.Value + 1

            if cursor.Value >= data.Length then
                fail "the pickle ends inside a GLOBAL"

            let s = Encoding.UTF8.GetString(data, start, cursor.Value - start)
            cursor.Value <- cursor.Value + 1
            s

        let text (n: int64) =
            let start = take (int n)
            Encoding.UTF8.GetString(data, start, int n)

        let pop () =
            if stack.Count = 0 then
                fail "the stack is empty"
            else
                stack.Pop()

        let popMark () =
            let items = List<Value>()
            let mutable go = true

            while go do
                match pop () with
                | Mark -> go <- false
                | v -> items.Add v

            items.Reverse()
            items.ToArray()

        let top () =
            if stack.Count = 0 then
                fail "the stack is empty"
            else
                stack.Peek()

        let globalOf (modul: string) (name: string) =
            let full = modul + "." + name

            if allowedGlobals.Contains full then
                Global full
            else
                fail (
                    sprintf
                        "global '%s' refused: a tensor checkpoint needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch's typed storages (a pickle can run code; nothing else is imported or called)"
                        full
                )

        let integer (v: Value) =
            match v with
            | PyInt i -> i
            | PyBool b -> if b then 1L else 0L
            | other -> fail (sprintf "expected an integer, found %A" other)

        let ints (v: Value) =
            match v with
            | PyTuple items -> items |> Array.map integer
            | other -> fail (sprintf "expected a tuple of integers, found %A" other)

        let tensorOf (args: Value[]) =
            match args.[0] with
            | Storage(key, dtype, count) -> view fail key dtype count (integer args.[1]) (ints args.[2]) (ints args.[3])
            | other -> fail (sprintf "a tensor rebuilt from %A, not a storage" other)

        let reduce (callable: Value) (args: Value[]) =
            match callable with
            | Global g when g = orderedDict ->
                if args.Length = 0 then
                    PyDict(List())
                else
                    fail "OrderedDict with arguments"
            | Global g when g = rebuildTensorV2 && args.Length >= 6 -> tensorOf args
            | Global g when g = rebuildTensor && args.Length = 4 -> tensorOf args
            | Global g when g = rebuildParameter && args.Length >= 2 ->
                match args.[0] with
                | TensorRef _ as t -> t
                | other -> fail (sprintf "a parameter of %A" other)
            | Global g -> fail (sprintf "%s called with %d arguments" g args.Length)
            | other -> fail (sprintf "a call of %A" other)

        let setItems (target: Value) (items: Value[]) =
            match target with
            | PyDict d ->
                for i in 0..2 .. items.Length - 2 do
                    d.Add((items.[i], items.[i + 1]))
            | _ -> fail "SETITEMS on something that is not a dict"

        while result.IsNone do
            if cursor.Value >= data.Length then
                fail "the pickle ends without STOP"

            let opcode = data.[cursor.Value]
            cursor.Value <- cursor.Value + 1

            match char opcode with
            | '\x80' ->
                let version = u8 ()

                if version > 5L then
                    fail (sprintf "pickle protocol %d (this reader knows 2 to 5)" version)
            | '\x95' -> take 8 |> ignore // FRAME: a length hint
            | '(' -> stack.Push Mark
            | ')' -> stack.Push(PyTuple [||])
            | '}' -> stack.Push(PyDict(List()))
            | ']' -> stack.Push(PyList(List()))
            | 't' -> stack.Push(PyTuple(popMark ()))
            | '\x85' -> stack.Push(PyTuple [| pop () |])
            | '\x86' ->
                let b = pop ()
                let a = pop ()
                stack.Push(PyTuple [| a; b |])
            | '\x87' ->
                let c = pop ()
                let b = pop ()
                let a = pop ()
                stack.Push(PyTuple [| a; b; c |])
            | 'l' -> stack.Push(PyList(List(popMark ())))
            | 'd' ->
                let d = PyDict(List())
                setItems d (popMark ())
                stack.Push d
            | 'a' ->
                let v = pop ()

                match top () with
                | PyList l -> l.Add v
                | _ -> fail "APPEND to something that is not a list"
            | 'e' ->
                let items = popMark ()

                match top () with
                | PyList l -> l.AddRange items
                | _ -> fail "APPENDS to something that is not a list"
            | 's' ->
                let v = pop ()
                let k = pop ()
                setItems (top ()) [| k; v |]
            | 'u' ->
                let items = popMark ()
                setItems (top ()) items
            | 'N' -> stack.Push PyNone
            | '\x88' -> stack.Push(PyBool true)
            | '\x89' -> stack.Push(PyBool false)
            | 'K' -> stack.Push(PyInt(u8 ()))
            | 'M' -> stack.Push(PyInt(u16 ()))
            | 'J' -> stack.Push(PyInt(int64 (BitConverter.ToInt32(data, take 4))))
            | '\x8a' ->
                let n = int (u8 ())

                if n > 8 then
                    fail (sprintf "an integer of %d bytes" n)

                let digits = bytes n
                let mutable v = 0L

                for i in n - 1 .. -1 .. 0 do
                    v <- (v <<< 8) ||| int64 digits.[i]

                // sign-extend from n bytes
                if n > 0 && n < 8 && digits.[n - 1] >= 0x80uy then
                    v <- v - (1L <<< (8 * n))

                stack.Push(PyInt v)
            | 'G' ->
                let big = bytes 8
                Array.Reverse big // big-endian
                stack.Push(PyFloat(BitConverter.ToDouble(big, 0)))
            | 'X' -> stack.Push(PyString(text (u32 ())))
            | '\x8c' -> stack.Push(PyString(text (u8 ())))
            | '\x8d' -> stack.Push(PyString(text (u64 ())))
            | 'C' -> stack.Push(PyBytes(bytes (int (u8 ()))))
            | 'B' -> stack.Push(PyBytes(bytes (int (u32 ()))))
            | '\x8e' -> stack.Push(PyBytes(bytes (int (u64 ()))))
            | 'q' -> memo.[u8 ()] <- top ()
            | 'r' -> memo.[u32 ()] <- top ()
            | '\x94' -> memo.[int64 memo.Count] <- top ()
            | 'h'
            | 'j' ->
                let key = if char opcode = 'h' then u8 () else u32 ()

                match memo.TryGetValue key with
                | true, v -> stack.Push v
                | _ -> fail (sprintf "memo %d read before it was written" key)
            | 'c' ->
                let modul = line ()
                let name = line ()
                stack.Push(globalOf modul name)
            | '\x93' ->
                let name = pop ()
                let modul = pop ()

                match modul, name with
                | PyString m, PyString n -> stack.Push(globalOf m n)
                | _ -> fail "STACK_GLOBAL without two strings"
            | 'Q' ->
                match pop () with
                | PyTuple [| PyString "storage"; Global kind; PyString key; _location; count |] when
                    storageTypes.ContainsKey kind
                    ->
                    stack.Push(Storage(key, storageTypes.[kind], integer count))
                | other -> fail (sprintf "a persistent id that is not a typed storage: %A" other)
            | 'R' ->
                let args =
                    match pop () with
                    | PyTuple items -> items
                    | other -> fail (sprintf "REDUCE with arguments %A" other)

                let callable = pop ()
                stack.Push(reduce callable args)
            | 'b' ->
                // BUILD: a state_dict's `_metadata` (module versions) lands here; a dict keeps its items.
                let _state = pop ()

                match top () with
                | PyDict _ -> ()
                | other -> fail (sprintf "BUILD on %A" other)
            | '.' -> result <- Some(pop ())
            | _ ->
                cursor.Value <- cursor.Value - 1
                fail (sprintf "pickle opcode 0x%02x is not one a tensor checkpoint uses" opcode)

        result.Value

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

    /// The pickle's tensors as (name, view) in its order, nested dicts flattened with ".", non-tensor leaves left out.
    let private describe (path: string) (data: byte[]) (prefix: string) : (string * StoredTensor) list =
        let top = unpickle path data
        let names = HashSet<string>()
        let storages = Dictionary<string, torch.ScalarType * int64>()
        let out = List<string * StoredTensor>()

        let rec flatten (prefix: string) (value: Value) =
            match value with
            | PyDict items ->
                for k, v in items do
                    match k with
                    | PyString name ->
                        match v with
                        | PyDict _ -> flatten (prefix + name + ".") v
                        | TensorRef t ->
                            let full = prefix + name

                            if not (names.Add full) then
                                InputError.raise path (InputLocation.Field full) "two tensors of this name"

                            out.Add((full, t))
                        | _ -> ()
                    | other ->
                        InputError.raise path InputLocation.Whole (sprintf "a dict key that is not a string: %A" other)
            | _ -> InputError.raise path InputLocation.Whole "the checkpoint is not a dict of tensors"

        flatten "" top

        for _, t in out do
            match storages.TryGetValue t.Storage with
            | true, (dtype, count) when dtype <> t.Dtype || count <> t.StorageCount ->
                InputError.raise
                    path
                    (InputLocation.Field(prefix + "/data/" + t.Storage))
                    "one storage read with two element types or sizes"
            | _ -> storages.[t.Storage] <- (t.Dtype, t.StorageCount)

        List.ofSeq out

    /// Each tensor's name and stored view, in the pickle's order, from the pickle alone: no tensor data is read
    /// (the shapes of a checkpoint of any size, at once). Errors as `read`.
    let entries (path: string) : (string * StoredTensor) list =
        let archive, data, prefix = openArchive path
        use _ = archive
        describe path data prefix

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
            for name, t in describe path data prefix do
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

        for name, t in describe path data prefix do
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

    // ---- writing ----

    /// The storage type `torch.save` names for a dtype.
    let private storageTypeOf (dtype: torch.ScalarType) =
        storageTypes
        |> Seq.tryFind (fun kv -> kv.Value = dtype)
        |> Option.map (fun kv -> kv.Key.Substring "torch.".Length)

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

            if (storageTypeOf t.dtype).IsNone then
                bad (sprintf "tensor '%s' has dtype %O, which has no typed storage here" name t.dtype)

        let archive =
            let stem = Path.GetFileNameWithoutExtension path
            if String.IsNullOrEmpty stem then "archive" else stem

        let pickle = new MemoryStream()
        let op (b: byte) = pickle.WriteByte b
        let raw (bytes: byte[]) = pickle.Write(bytes, 0, bytes.Length)

        let str (s: string) =
            let bytes = Encoding.UTF8.GetBytes s
            op 'X'B
            raw (BitConverter.GetBytes(uint32 bytes.Length))
            raw bytes

        let glob (m: string) (n: string) =
            op 'c'B
            raw (Encoding.ASCII.GetBytes(m + "\n" + n + "\n"))

        let integer (v: int64) =
            if v >= 0L && v < 256L then
                op 'K'B
                op (byte v)
            elif v >= int64 Int32.MinValue && v <= int64 Int32.MaxValue then
                op 'J'B
                raw (BitConverter.GetBytes(int32 v))
            else
                op 0x8auy
                op 8uy
                raw (BitConverter.GetBytes v)

        let tuple (values: int64[]) =
            if values.Length = 0 then
                op ')'B
            else
                op '('B
                Array.iter integer values
                op 't'B

        let emptyOrderedDict () =
            glob "collections" "OrderedDict"
            op ')'B
            op 'R'B

        op 0x80uy
        op 2uy
        emptyOrderedDict ()
        op '('B

        let contiguous =
            items
            |> List.mapi (fun i (name, t) ->
                let c = t.detach().cpu().contiguous()
                let shape = c.shape
                // C-order strides of the copy (0-size dimensions included, as torch's contiguous strides)
                let strides = Array.zeroCreate<int64> shape.Length
                let mutable s = 1L

                for d in shape.Length - 1 .. -1 .. 0 do
                    strides.[d] <- s
                    s <- s * max 1L shape.[d]

                str name
                glob "torch._utils" "_rebuild_tensor_v2"
                op '('B
                op '('B
                str "storage"
                glob "torch" (storageTypeOf c.dtype).Value
                str (string i)
                str "cpu"
                integer (c.numel ())
                op 't'B
                op 'Q'B
                integer 0L
                tuple shape
                tuple strides
                op 0x89uy // requires_grad False
                emptyOrderedDict () // backward hooks
                op 't'B
                op 'R'B
                string i, c)

        op 'u'B
        op '.'B

        Esm3Structure.AtomicFile.write path (fun stream ->
            use zip = new ZipArchive(stream, ZipArchiveMode.Create, true)

            let record (name: string) (write: Stream -> unit) =
                let entry = zip.CreateEntry(archive + "/" + name, CompressionLevel.NoCompression)
                // A fixed time stamp (zip's earliest, as torch.save writes): the same tensors give the same bytes.
                entry.LastWriteTime <- DateTimeOffset(1980, 1, 1, 0, 0, 0, TimeSpan.Zero)
                use s = entry.Open()
                write s

            record "data.pkl" (fun s -> pickle.WriteTo s)
            record "byteorder" (fun s -> s.Write(Encoding.ASCII.GetBytes "little"))

            for key, c in contiguous do
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

        for _, c in contiguous do
            c.Dispose()
