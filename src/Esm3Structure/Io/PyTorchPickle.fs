namespace Esm3Structure.Io

open System
open System.Collections.Generic
open System.IO
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

/// The pickle `data.pkl` of a PyTorch checkpoint, both ways: a restricted unpickler that interprets only the opcodes
/// and globals a tensor checkpoint uses (see `PyTorchCheckpoint`), and the writer of the pickle `torch.save` writes
/// for an OrderedDict of tensors.
module internal PyTorchPickle =

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

    /// The pickle's tensors as (name, view) in its order, nested dicts flattened with ".", non-tensor leaves left out.
    let describe (path: string) (data: byte[]) (prefix: string) : (string * StoredTensor) list =
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

    /// The storage type `torch.save` names for a dtype.
    let storageTypeOf (dtype: torch.ScalarType) =
        storageTypes
        |> Seq.tryFind (fun kv -> kv.Value = dtype)
        |> Option.map (fun kv -> kv.Key.Substring "torch.".Length)

    /// The pickle `torch.save` writes for an OrderedDict of `(name, key, tensor)` (protocol 2): an OrderedDict of
    /// `torch._utils._rebuild_tensor_v2` calls, each tensor a C-order view of its own typed storage `key`. The
    /// tensors are contiguous, of dtypes `storageTypeOf` knows.
    let stateDict (tensors: (string * string * torch.Tensor) list) : byte[] =
        use pickle = new MemoryStream()
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

        for name, key, c in tensors do
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
            str key
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

        op 'u'B
        op '.'B
        pickle.ToArray()
