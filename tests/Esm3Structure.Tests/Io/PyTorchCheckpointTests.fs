module Esm3Structure.Tests.Io.PyTorchCheckpointTests

open System
open System.IO
open System.IO.Compression
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tests

/// The fixtures written by torch.save 1.13 (`Reference/pth/generate.py`), next to the test executable.
let private fixture (name: string) =
    Path.Combine(AppContext.BaseDirectory, "Reference", "pth", name)

/// PyTorch's dtype names (`str(t.dtype)` without "torch."), as the fixtures' metadata records them.
let private torchName (t: torch.Tensor) =
    match t.dtype with
    | torch.ScalarType.Float32 -> "float32"
    | torch.ScalarType.Float16 -> "float16"
    | torch.ScalarType.BFloat16 -> "bfloat16"
    | torch.ScalarType.Float64 -> "float64"
    | torch.ScalarType.Int64 -> "int64"
    | torch.ScalarType.Int32 -> "int32"
    | torch.ScalarType.Int16 -> "int16"
    | torch.ScalarType.Int8 -> "int8"
    | torch.ScalarType.Byte -> "uint8"
    | torch.ScalarType.Bool -> "bool"
    | other -> string other

/// Every tensor of NAME.pth equals NAME.expected.safetensors (float32 copies, exact for these dtypes) in shape,
/// dtype and value; the names come in the pickle's order.
let private matchesExpected (name: string) (order: string list) =
    use _ = torch.NewDisposeScope()
    let tensors = PyTorchCheckpoint.read (fixture (name + ".pth"))
    let expected = Safetensors.read (fixture (name + ".expected.safetensors"))
    Expect.sequenceEqual (tensors |> List.map fst) order "names, in the pickle's order"

    for n, t in tensors do
        let e = expected.Tensors |> List.find (fun (k, _) -> k = n) |> snd
        Expect.sequenceEqual t.shape e.shape (n + ": shape")
        Expect.equal (torchName t) expected.Metadata.[n] (n + ": dtype")
        Expect.isTrue (t.is_contiguous ()) (n + ": contiguous")

        Expect.isTrue
            (t.to_type(torch.float32).eq(e).all().ToBoolean())
            (sprintf "%s: values bit for bit (%O against %O)" n t e)

/// A zip holding these records (stored, as torch.save writes them), in a temporary file.
let private zipOf (dir: TempDir) (records: (string * byte[]) list) =
    let path =
        Path.Combine(dir.Path, sprintf "hand-%d.pth" (Directory.GetFiles dir.Path).Length)

    (use archive = ZipFile.Open(path, ZipArchiveMode.Create)

     for name, bytes in records do
         let entry = archive.CreateEntry(name, CompressionLevel.NoCompression)
         use s = entry.Open()
         s.Write(bytes, 0, bytes.Length))

    path

let private ascii (s: string) = Text.Encoding.ASCII.GetBytes s

let private unicode (s: string) =
    Array.concat [ [| 'X'B |]; BitConverter.GetBytes(uint32 s.Length); ascii s ]

let private globalOf (m: string) (n: string) =
    Array.append [| 'c'B |] (ascii (m + "\n" + n + "\n"))

/// {"w": _rebuild_tensor_v2(FloatStorage "0" of `count` elements, 0, (size,), (1,), False, ())}, by hand.
let private tensorPickle (count: byte) (size: byte) =
    Array.concat
        [
            [| 0x80uy; 2uy; '}'B; '('B |]
            unicode "w"
            globalOf "torch._utils" "_rebuild_tensor_v2"
            [| '('B; '('B |]
            unicode "storage"
            globalOf "torch" "FloatStorage"
            unicode "0"
            unicode "cpu"
            [|
                'K'B
                count
                't'B
                'Q'B
                'K'B
                0uy
                'K'B
                size
                0x85uy
                'K'B
                1uy
                0x85uy
                0x89uy
                ')'B
                't'B
                'R'B
            |]
            [| 'u'B; '.'B |]
        ]

let private floats (xs: float32[]) =
    xs |> Array.collect (fun (x: float32) -> BitConverter.GetBytes x)

let private refused (path: string) (fragment: string) =
    match InputError.catch (fun () -> PyTorchCheckpoint.read path |> ignore) with
    | Ok() -> failtestf "expected a refusal mentioning '%s'" fragment
    | Error e ->
        Expect.equal e.File path "names the file"
        Expect.stringContains e.Message fragment "says why"

[<Tests>]
let tests =
    testList
        "Io/PyTorchCheckpoint"
        [
            test "torch.save's dtypes read bit for bit: float32, float16, bfloat16, float64, integers, bool, a scalar" {
                matchesExpected
                    "dtypes"
                    [
                        "layer.weight"
                        "layer.half"
                        "layer.bf16"
                        "layer.double"
                        "counts.long"
                        "counts.int"
                        "counts.int8"
                        "counts.uint8"
                        "mask"
                        "scalar"
                    ]
            }

            test "views of one storage (a row, a strided column, an offset block, a transpose) become their values" {
                matchesExpected "views" [ "base"; "row"; "column"; "block"; "transposed" ]
            }

            test "a nested dict is flattened with '.', non-tensor leaves are left out" {
                matchesExpected "nested" [ "model.encoder.weight"; "model.encoder.bias" ]
            }

            test "a pickle that reduces to posix.system is refused by name, before anything is called" {
                refused (fixture "evil.pth") "global 'posix.system' refused"
            }

            test "the pre-1.6 format and non-checkpoints are refused with what they are" {
                refused (fixture "legacy.pth") "pre-1.6"
                refused (fixture "dtypes.expected.safetensors") "not a PyTorch checkpoint"
            }

            test "hand-made pickles: a tensor reads; other globals, STACK_GLOBAL, unknown opcodes, overruns refused" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let data = floats [| 1.5f; -2.0f |]

                let good = zipOf dir [ "t/data.pkl", tensorPickle 2uy 2uy; "t/data/0", data ]
                let tensors = PyTorchCheckpoint.read good
                Expect.equal (tensors |> List.map fst) [ "w" ] "one tensor"
                Expect.sequenceEqual ((snd tensors.[0]).data<float32>().ToArray()) [| 1.5f; -2.0f |] "its values"

                let over = zipOf dir [ "t/data.pkl", tensorPickle 2uy 3uy; "t/data/0", data ]
                refused over "reads element 2 of a storage of 2"

                let short = zipOf dir [ "t/data.pkl", tensorPickle 3uy 2uy; "t/data/0", data ]
                refused short "needs 12 bytes, the record holds 8"

                let eval =
                    Array.concat [ [| 0x80uy; 2uy |]; globalOf "builtins" "eval"; [| '.'B |] ]

                refused (zipOf dir [ "t/data.pkl", eval ]) "global 'builtins.eval' refused"

                let stackGlobal =
                    Array.concat
                        [
                            [| 0x80uy; 4uy; 0x8cuy; 2uy |]
                            ascii "os"
                            [| 0x8cuy; 6uy |]
                            ascii "system"
                            [| 0x93uy; '.'B |]
                        ]

                refused (zipOf dir [ "t/data.pkl", stackGlobal ]) "global 'os.system' refused"

                let inst =
                    Array.concat [ [| 0x80uy; 2uy; '('B; 'i'B |]; ascii "os\nsystem\n"; [| '.'B |] ]

                refused (zipOf dir [ "t/data.pkl", inst ]) "opcode 0x69"

                let truncated = (tensorPickle 2uy 2uy).[..20]
                refused (zipOf dir [ "t/data.pkl", truncated; "t/data/0", data ]) "ends"
                refused (zipOf dir [ "t/other.bin", data ]) "without NAME/data.pkl"
            }

            test "write then read: every dtype, views, a scalar and an empty tensor come back bit for bit, in order" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let g = new torch.Generator(3UL)
                let grid = torch.randn ([| 4L; 6L |], generator = g)

                let tensors =
                    [
                        "a.float32", torch.randn ([| 2L; 3L |], generator = g)
                        "a.float16", torch.randn([| 5L |], generator = g).to_type torch.float16
                        "a.bfloat16", torch.randn([| 3L; 2L |], generator = g).to_type torch.bfloat16
                        "a.float64", torch.randn ([| 2L |], dtype = torch.float64, generator = g)
                        "b.int64", torch.tensor [| 0L; -3L; 1L <<< 40; Int64.MinValue |]
                        "b.int32", torch.tensor [| 1; -2; Int32.MaxValue |]
                        "b.uint8", torch.tensor [| 0uy; 255uy |]
                        "b.bool", torch.tensor [| true; false |]
                        "view.transposed", grid.t ()
                        "view.column", grid.select (1L, 2L)
                        "scalar", torch.tensor 2.5f
                        "empty", torch.zeros ([| 0L; 3L |])
                    ]

                let path = Path.Combine(dir.Path, "out.pth")
                PyTorchCheckpoint.write path tensors
                Expect.isTrue (TensorFile.isPyTorch path) "a zip, told apart by content"
                let back = PyTorchCheckpoint.read path
                Expect.sequenceEqual (back |> List.map fst) (tensors |> List.map fst) "names in order"

                for (n, t), (_, r) in List.zip tensors back do
                    Expect.equal r.dtype t.dtype (n + ": dtype")
                    Expect.sequenceEqual r.shape t.shape (n + ": shape")
                    Expect.isTrue (r.eq(t).all().ToBoolean()) (n + ": values")

                // TensorFile reads either format with the same names
                Expect.sequenceEqual
                    ((TensorFile.readHeader path).Shapes |> List.map fst)
                    (tensors |> List.map fst)
                    "TensorFile.readHeader"

                let complex = torch.zeros ([| 2L |], dtype = torch.complex64)

                Expect.throwsT<ArgumentException>
                    (fun () -> PyTorchCheckpoint.write path [ "c", complex ])
                    "a dtype without a typed storage"

                Expect.throwsT<ArgumentException>
                    (fun () -> PyTorchCheckpoint.write path [ "x", complex.real; "x", complex.real ])
                    "a duplicate name"

                Expect.equal (PyTorchCheckpoint.read path |> List.length) tensors.Length "the earlier file intact"
            }

            test "PyTorch's .pth → ours → .pth → ours: the same tensors, and our writer gives the same bytes twice" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                for name in [ "dtypes"; "views"; "nested" ] do
                    let first = PyTorchCheckpoint.read (fixture (name + ".pth"))
                    // the same file name in two folders: the archive's folder name is the file's stem
                    let a =
                        Path.Combine(Directory.CreateDirectory(Path.Combine(dir.Path, "a")).FullName, name + ".pth")

                    let b =
                        Path.Combine(Directory.CreateDirectory(Path.Combine(dir.Path, "b")).FullName, name + ".pth")

                    PyTorchCheckpoint.write a first
                    let second = PyTorchCheckpoint.read a
                    PyTorchCheckpoint.write b second
                    Expect.sequenceEqual (second |> List.map fst) (first |> List.map fst) (name + ": names")

                    for (n, x), (_, y) in List.zip first second do
                        Expect.equal y.dtype x.dtype (n + ": dtype")
                        Expect.sequenceEqual y.shape x.shape (n + ": shape")
                        Expect.isTrue (x.eq(y).all().ToBoolean()) (n + ": values")

                    Expect.equal (File.ReadAllBytes b) (File.ReadAllBytes a) (name + ": the same bytes")
            }

            test "a truncated .pth is refused with the file named, at every cut" {
                use dir = new TempDir()
                let whole = File.ReadAllBytes(fixture "views.pth")

                for cut in [ 4; 30; 200; whole.Length / 2; whole.Length - 30; whole.Length - 1 ] do
                    let path = Path.Combine(dir.Path, sprintf "cut-%d.pth" cut)
                    File.WriteAllBytes(path, whole.[.. cut - 1])

                    match InputError.catch (fun () -> PyTorchCheckpoint.read path |> ignore) with
                    | Ok() -> failtestf "cut at %d bytes: expected a refusal" cut
                    | Error e -> Expect.equal e.File path (sprintf "cut at %d: names the file (%s)" cut e.Message)
            }
        ]
