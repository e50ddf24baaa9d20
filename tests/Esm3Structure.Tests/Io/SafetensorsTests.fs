module Esm3Structure.Tests.Io.SafetensorsTests

open System
open System.IO
open System.Text
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tests

// ---- helpers ----

/// A safetensors file built from a header text and data bytes, with N = the header's UTF-8 length.
let fileBytes (header: string) (data: byte[]) : byte[] =
    let h = Encoding.UTF8.GetBytes header
    Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; data ]

/// Asserts that reading `bytes` raises an InputException at `location` whose message contains `fragment`.
let expectRejected (dir: string) (location: InputLocation) (fragment: string) (bytes: byte[]) =
    let path = Path.Combine(dir, "bad.safetensors")
    File.WriteAllBytes(path, bytes)

    for what, f in
        [
            "readHeader", (fun () -> Safetensors.readHeader path |> ignore)
            "read", (fun () -> Safetensors.read path |> ignore)
        ] do
        try
            f ()
            failtestf "%s accepted a bad file (expected: %s)" what fragment
        with :? InputException as e ->
            Expect.equal e.Error.File path (what + ": names the file")
            Expect.equal e.Error.Location location (sprintf "%s: location (%s)" what e.Message)
            Expect.stringContains e.Error.Message fragment (what + ": message")

let zeros n = Array.zeroCreate<byte> n

/// An F32 header entry with the given shape text and offsets.
let inline entry (shape: string) b e =
    sprintf """{"dtype":"F32","shape":[%s],"data_offsets":[%d,%d]}""" shape b e

// ---- generators ----

/// Tensor specs: distinct names (including ones that need JSON escaping), dtype, shape (0-d and zero-size included).
let specsGen: Gen<(string * torch.ScalarType * int64[]) list> =
    gen {
        let pool =
            [
                "a"
                "b.weight"
                "blocks.10.x"
                "blocks.9.x"
                "é"
                "Ω"
                "q\"uote"
                "back\\slash"
                "tab\tn"
                "\u0001ctl"
                "z"
            ]

        let! names = Gen.subListOf pool
        let! dtypes = Gen.listOfLength names.Length (Gen.elements allDtypes)
        let! rank = Gen.listOfLength names.Length (Gen.choose (0, 3))

        let! shapes =
            rank
            |> List.map (fun r -> Gen.arrayOfLength r (Gen.choose (0, 4) |> Gen.map int64))
            |> Gen.sequenceToList

        return List.zip3 (List.ofSeq names) dtypes shapes
    }

let metadataGen: Gen<Map<string, string>> =
    gen {
        let! keys = Gen.subListOf [ "format"; "config"; "é\"k"; "" ]

        let! values =
            Gen.listOfLength keys.Length (Gen.elements [ "pt"; "{\"d_model\": 1024}"; ""; "line\nbreak" ])

        return Map.ofList (List.zip (List.ofSeq keys) values)
    }

let caseGen = Gen.zip3 specsGen metadataGen (Gen.choose (0, 1_000_000))

let config = { Props.baseConfig with maxTest = 60 }

/// Writes tensors built from specs, reads them back, checks names, dtypes, shapes, bytes and metadata.
let roundTrip (specs, metadata: Map<string, string>, seed) =
    use _ = torch.NewDisposeScope()
    use g = new torch.Generator(uint64 seed)
    let tensors = [ for name, dt, shape in specs -> name, randomTensor g dt shape ]

    withTempDir (fun dir ->
        let path = Path.Combine(dir, "t.safetensors")
        Safetensors.write path tensors metadata
        let back = Safetensors.read path
        Expect.equal back.Metadata metadata "metadata"
        Expect.equal (back.Tensors |> List.map fst |> set) (tensors |> List.map fst |> set) "names"
        let byName = Map.ofList back.Tensors

        for name, t in tensors do
            let b = byName.[name]
            Expect.equal b.dtype t.dtype (name + ": dtype")
            Expect.equal b.shape t.shape (name + ": shape")
            Expect.equal b.device.``type`` DeviceType.CPU (name + ": on the CPU")
            Expect.equal (rawBytes b) (rawBytes t) (name + ": bytes"))

[<Tests>]
let tests =
    testList
        "Io/Safetensors"
        [
            testPropertyWithConfig
                config
                "round trip: every dtype, 0-d and zero-size shapes, metadata"
                (Prop.forAll (Arb.fromGen caseGen) roundTrip)

            test "round trip of every dtype with a 0-d scalar and a zero-size tensor" {
                use _ = torch.NewDisposeScope()

                let specs =
                    [
                        for i, dt in List.indexed allDtypes do
                            yield sprintf "s%02d" i, dt, [||]
                            yield sprintf "e%02d" i, dt, [| 3L; 0L; 2L |]
                            yield sprintf "m%02d" i, dt, [| 2L; 5L; 3L |]
                    ]

                roundTrip (specs, Map.ofList [ "format", "pt" ], 11)
            }

            test "F16 and BF16 round trip bitwise for all 65536 bit patterns (NaN payloads, infinities, -0, subnormals)" {
                use _ = torch.NewDisposeScope()
                let patterns = Array.init 65536 (fun i -> uint16 i)
                let bytes = Array.zeroCreate<byte>(2 * patterns.Length)
                Buffer.BlockCopy(patterns, 0, bytes, 0, bytes.Length)

                let make (dt: torch.ScalarType) =
                    let t = torch.empty ([| 256L; 256L |], dtype = dt)
                    t.bytes <- Span bytes
                    t

                let tensors =
                    [
                        "half", make torch.ScalarType.Float16
                        "brain", make torch.ScalarType.BFloat16
                    ]

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "h.safetensors")
                    Safetensors.write path tensors null
                    let back = Map.ofList (Safetensors.read path).Tensors
                    Expect.equal (rawBytes back.["half"]) bytes "F16 bits"
                    Expect.equal (rawBytes back.["brain"]) bytes "BF16 bits")
            }

            test "a file built byte by byte from the published format is read correctly" {
                use _ = torch.NewDisposeScope()

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "hand.safetensors")
                    // Hand-written header: the I64 tensor comes first in the JSON but second in the data.
                    let header =
                        """{"idx":{"dtype":"I64","shape":[3],"data_offsets":[24,48]},"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"""

                    let h = Encoding.UTF8.GetBytes header

                    do
                        use fs = File.Create path
                        use w = new BinaryWriter(fs)
                        w.Write(uint64 h.Length) // BinaryWriter is little-endian on every platform
                        w.Write h

                        for v in [ 1.5f; -2.0f; 0.25f; 1e-3f; 3.0e7f; -0.0f ] do
                            w.Write(v: float32)

                        for v in [ 7L; -1L; Int64.MaxValue ] do
                            w.Write(v: int64)

                    let hd = Safetensors.readHeader path
                    Expect.equal hd.HeaderLength (int64 h.Length) "N"

                    Expect.equal
                        (hd.Entries |> List.map (fun e -> e.Name, e.Dtype, e.Shape, e.Begin, e.End))
                        [ "w", "F32", [| 2L; 3L |], 0L, 24L; "idx", "I64", [| 3L |], 24L, 48L ]
                        "entries in data order"

                    let f = Safetensors.read path
                    Expect.equal f.Metadata (Map.ofList [ "format", "pt" ]) "metadata"
                    Expect.equal (f.Tensors |> List.map fst) [ "w"; "idx" ] "names in data order"
                    let w = Map.ofList f.Tensors |> Map.find "w"
                    let idx = Map.ofList f.Tensors |> Map.find "idx"
                    Expect.equal w.dtype torch.ScalarType.Float32 "w dtype"
                    Expect.equal w.shape [| 2L; 3L |] "w shape"

                    Expect.equal
                        (w.data<float32>().ToArray())
                        [| 1.5f; -2.0f; 0.25f; 1e-3f; 3.0e7f; -0.0f |]
                        "w values"

                    Expect.equal (w.[1L, 0L].ToSingle()) 1e-3f "w is row-major"
                    Expect.equal idx.dtype torch.ScalarType.Int64 "idx dtype"
                    Expect.equal (idx.data<int64>().ToArray()) [| 7L; -1L; Int64.MaxValue |] "idx values")
            }

            test "the writer reproduces the bytes of safetensors' own serialization tests" {
                // Expected bytes are those asserted in huggingface/safetensors safetensors/src/tensor.rs
                // (test_serialization, test_serialization_forced_alignement, test_empty), rebuilt here from the format.
                use _ = torch.NewDisposeScope()

                let expected (header: string) (data: float32[]) =
                    let h = Encoding.UTF8.GetBytes header
                    let padded = Array.append h (Array.create ((8 - h.Length % 8) % 8) (byte ' '))

                    Array.concat
                        [
                            BitConverter.GetBytes(uint64 padded.Length)
                            padded
                            data |> Array.collect BitConverter.GetBytes
                        ]

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "x.safetensors")
                    let values = [| 0.0f; 1.0f; 2.0f; 3.0f; 4.0f; 5.0f |]
                    Safetensors.write path [ "attn.0", torch.tensor(values).reshape(1L, 2L, 3L) ] null

                    let e1 =
                        expected """{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}""" values

                    Expect.equal e1.Length (8 + 64 + 24) "no padding needed (64-byte header)"
                    Expect.equal (File.ReadAllBytes path) e1 "attn.0"
                    Safetensors.write path [ "attn0", torch.tensor(values).reshape(1L, 1L, 2L, 3L) ] null

                    let e2 =
                        expected """{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}""" values

                    Expect.equal e2.Length (8 + 72 + 24) "7 spaces of padding"
                    Expect.equal (File.ReadAllBytes path) e2 "attn0 (padded)"
                    Safetensors.write path [] null
                    Expect.equal (File.ReadAllBytes path) (expected "{}" [||]) "empty"
                    Safetensors.write path [] (Map.ofList [ "framework", "pt" ])

                    Expect.equal
                        (File.ReadAllBytes path)
                        (expected """{"__metadata__":{"framework":"pt"}}""" [||])
                        "empty with metadata")
            }

            test "tensors are laid out as safetensors' writer does: dtype alignment (largest first), then name" {
                use _ = torch.NewDisposeScope()

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "o.safetensors")

                    Safetensors.write
                        path
                        [
                            "b", torch.zeros (2L, dtype = torch.ScalarType.Float32)
                            "flag", torch.zeros (3L, dtype = torch.ScalarType.Bool)
                            "a", torch.zeros (1L, dtype = torch.ScalarType.Float32)
                            "n", torch.zeros (1L, dtype = torch.ScalarType.Int64)
                        ]
                        null

                    let names = (Safetensors.readHeader path).Entries |> List.map (fun e -> e.Name)
                    Expect.equal names [ "n"; "a"; "b"; "flag" ] "I64, then F32 by name, then BOOL"
                    let offsets = (Safetensors.readHeader path).Entries |> List.map (fun e -> e.Begin)
                    Expect.equal offsets [ 0L; 8L; 12L; 20L ] "offsets")
            }

            testList
                "lying headers are rejected"
                [
                    let field = InputLocation.Field
                    let hl = field "header length"

                    let reject name location fragment bytes =
                        test name { withTempDir (fun dir -> expectRejected dir location fragment bytes) }

                    reject
                        "header length larger than the file"
                        hl
                        "larger than the 20 bytes"
                        (Array.append (BitConverter.GetBytes 1000UL) (zeros 20))

                    reject
                        "header length 2^63"
                        hl
                        "9223372036854775808"
                        (Array.append (BitConverter.GetBytes(1UL <<< 63)) (Encoding.ASCII.GetBytes "{}"))

                    reject "empty file" hl "0 bytes long" [||]
                    reject "file shorter than 8 bytes" hl "5 bytes long" (zeros 5)

                    reject
                        "truncated data region"
                        (field "w")
                        "past the end"
                        (fileBytes ("{\"w\":" + entry "2,3" 0 24 + "}") (zeros 16))

                    reject
                        "offsets past the end"
                        (field "w")
                        "past the end"
                        (fileBytes ("{\"w\":" + entry "6" 24 48 + "}") (zeros 24))

                    reject
                        "offsets beyond 2^62"
                        (field "w")
                        "past the end"
                        (fileBytes ("{\"w\":" + entry "0" (1L <<< 62) (1L <<< 62) + "}") (zeros 0))

                    reject
                        "size differs from shape x item size"
                        (field "w")
                        "needs 24 bytes"
                        (fileBytes ("{\"w\":" + entry "2,3" 0 20 + "}") (zeros 20))

                    reject
                        "a shape whose size overflows 64 bits"
                        (field "w")
                        (sprintf "needs %O bytes" (Numerics.BigInteger.Pow(Numerics.BigInteger 2, 126)))
                        (fileBytes ("{\"w\":" + entry "4611686018427387904,4611686018427387904" 0 0 + "}") (zeros 0))

                    reject
                        "overlapping tensors"
                        (field "b")
                        "overlap tensor 'a'"
                        (fileBytes ("{\"a\":" + entry "4" 0 16 + ",\"b\":" + entry "4" 8 24 + "}") (zeros 24))

                    reject
                        "a zero-size tensor inside another"
                        (field "z")
                        "overlap"
                        (fileBytes ("{\"a\":" + entry "4" 0 16 + ",\"z\":" + entry "0" 4 4 + "}") (zeros 16))

                    reject
                        "a hole in the data region"
                        (field "b")
                        "hole"
                        (fileBytes ("{\"a\":" + entry "2" 0 8 + ",\"b\":" + entry "2" 16 24 + "}") (zeros 24))

                    let oneTensor = "{\"a\":" + entry "2" 0 8 + "}"

                    reject
                        "uncovered bytes after the last tensor"
                        (InputLocation.Offset(8L + int64 oneTensor.Length + 8L))
                        "last 4 bytes"
                        (fileBytes oneTensor (zeros 12))

                    reject
                        "unknown dtype"
                        (field "w")
                        "unknown dtype \"F31\""
                        (fileBytes """{"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}""" (zeros 4))

                    reject
                        "negative shape"
                        (field "w")
                        "got -1"
                        (fileBytes ("{\"w\":" + entry "-1,3" 0 0 + "}") (zeros 0))

                    reject
                        "non-integer shape"
                        (field "w")
                        "got 2.5"
                        (fileBytes ("{\"w\":" + entry "2.5" 0 10 + "}") (zeros 10))

                    reject
                        "string shape"
                        (field "w")
                        "got a string"
                        (fileBytes ("{\"w\":" + entry "\"3\"" 0 12 + "}") (zeros 12))

                    reject
                        "begin after end"
                        (field "w")
                        "begin is after end"
                        (fileBytes ("{\"w\":" + entry "0" 8 0 + "}") (zeros 8))

                    reject
                        "missing data_offsets"
                        (field "w")
                        "missing \"data_offsets\""
                        (fileBytes """{"w":{"dtype":"F32","shape":[1]}}""" (zeros 4))

                    reject "invalid JSON" (field "header") "not valid JSON" (fileBytes """{"w": {"dtype": """ (zeros 0))

                    reject
                        "header not an object"
                        (field "header")
                        "must be a JSON object, got an array"
                        (fileBytes "[1, 2]" (zeros 0))

                    reject
                        "header not UTF-8"
                        (InputLocation.Offset 10L)
                        "not valid UTF-8"
                        (Array.append (BitConverter.GetBytes 4UL) [| byte '{'; byte '"'; 0xFFuy; byte '}' |])

                    reject
                        "metadata value not a string"
                        (field "__metadata__")
                        "\"a\" must be a string, got a number"
                        (fileBytes """{"__metadata__":{"a":1}}""" (zeros 0))

                    reject
                        "metadata not an object"
                        (field "__metadata__")
                        "must be an object"
                        (fileBytes """{"__metadata__":"pt"}""" (zeros 0))

                    reject
                        "a key given twice"
                        (field "w")
                        "twice"
                        (fileBytes ("{\"w\":" + entry "1" 0 4 + ",\"w\":" + entry "1" 0 4 + "}") (zeros 4))

                    test "a header length beyond safetensors' 100 MB limit (sparse file)" {
                        withTempDir (fun dir ->
                            let path = Path.Combine(dir, "big.safetensors")

                            do
                                use fs = File.Create path
                                fs.Write(BitConverter.GetBytes 150_000_000UL, 0, 8)
                                fs.SetLength 200_000_000L

                            let e =
                                raises<InputException> "rejected" (fun () -> Safetensors.readHeader path |> ignore)

                            Expect.equal e.Error.Location hl "location"
                            Expect.stringContains e.Error.Message "limit" "message")
                    }
                ]

            test "a dtype TorchSharp lacks passes readHeader but read names it" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "u16.safetensors")

                    File.WriteAllBytes(
                        path,
                        fileBytes """{"u":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}""" (zeros 4)
                    )

                    Expect.equal
                        ((Safetensors.readHeader path).Entries |> List.map (fun e -> e.Dtype))
                        [ "U16" ]
                        "header ok"

                    let e =
                        raises<InputException> "read rejects" (fun () -> Safetensors.read path |> ignore)

                    Expect.equal e.Error.Location (InputLocation.Field "u") "names the tensor"
                    Expect.stringContains e.Error.Message "U16" "names the dtype")
            }

            test "a BOOL byte other than 0 or 1 is rejected at its offset" {
                withTempDir (fun dir ->
                    let header = """{"f":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"""
                    let path = Path.Combine(dir, "bool.safetensors")
                    File.WriteAllBytes(path, fileBytes header [| 1uy; 0uy; 2uy |])
                    Expect.equal (Safetensors.readHeader path).Entries.Length 1 "the header itself is fine"

                    let e =
                        raises<InputException> "read rejects" (fun () -> Safetensors.read path |> ignore)

                    Expect.equal
                        e.Error.Location
                        (InputLocation.Offset(8L + int64 header.Length + 2L))
                        "the offending byte"

                    Expect.stringContains e.Error.Message "holds the byte 2" "message")
            }

            test "a missing file is an InputException naming it" {
                let path =
                    Path.Combine(Path.GetTempPath(), "no-such-" + Guid.NewGuid().ToString("N") + ".safetensors")

                let e =
                    raises<InputException> "rejected" (fun () -> Safetensors.read path |> ignore)

                Expect.equal e.Error.File path "file"
            }

            test "deterministic bytes: write twice, input order, read then write" {
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(3UL)

                let tensors =
                    [
                        for i, dt in List.indexed allDtypes ->
                            sprintf "t%d" (i * 7 % 11), randomTensor g dt [| 2L; (int64 i % 3L) + 1L |]
                    ]

                let meta = Map.ofList [ "format", "pt"; "b", "2"; "a", "1" ]

                withTempDir (fun dir ->
                    let p1 = Path.Combine(dir, "1.safetensors")
                    let p2 = Path.Combine(dir, "2.safetensors")
                    let p3 = Path.Combine(dir, "3.safetensors")
                    let p4 = Path.Combine(dir, "4.safetensors")
                    Safetensors.write p1 tensors meta
                    Safetensors.write p2 tensors meta

                    Safetensors.write
                        p3
                        (List.rev tensors)
                        (Map.toList meta
                         |> List.rev
                         |> dict
                         |> Collections.ObjectModel.ReadOnlyDictionary)

                    let back = Safetensors.read p1
                    Safetensors.write p4 back.Tensors back.Metadata
                    let b1 = File.ReadAllBytes p1
                    Expect.equal (File.ReadAllBytes p2) b1 "write twice"
                    Expect.equal (File.ReadAllBytes p3) b1 "input order does not matter"
                    Expect.equal (File.ReadAllBytes p4) b1 "read then write"
                    let n = BitConverter.ToUInt64(b1, 0)
                    Expect.equal (n % 8UL) 0UL "header padded to a multiple of 8")
            }

            test "non-contiguous views, tensors requiring grad and narrowed views are written by value" {
                use _ = torch.NewDisposeScope()
                let base' = torch.arange(24L, dtype = torch.ScalarType.Float32).reshape(4L, 6L)
                let transposed = base'.t ()
                let narrowed = base'.narrow (1L, 2L, 3L)
                let p = torch.nn.Parameter(torch.ones (2L, 2L))

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "v.safetensors")
                    Safetensors.write path [ "t", transposed; "n", narrowed; "p", p :> torch.Tensor ] null
                    let back = Map.ofList (Safetensors.read path).Tensors
                    Tol.close "transposed" 0.0 back.["t"] transposed
                    Tol.close "narrowed" 0.0 back.["n"] narrowed
                    Tol.close "parameter" 0.0 back.["p"] p)
            }

            testList
                "atomic writes"
                [
                    test "writing over an existing file replaces it and leaves no temp file" {
                        use _ = torch.NewDisposeScope()

                        withTempDir (fun dir ->
                            let path = Path.Combine(dir, "w.safetensors")
                            Safetensors.write path [ "x", torch.zeros (3L) ] null
                            Safetensors.write path [ "y", torch.ones (2L) ] null

                            Expect.equal
                                (Directory.GetFiles dir |> Array.map Path.GetFileName)
                                [| "w.safetensors" |]
                                "only the file"

                            Expect.equal ((Safetensors.read path).Tensors |> List.map fst) [ "y" ] "new content")
                    }

                    test "a tensor that cannot be written leaves the previous file intact" {
                        use _ = torch.NewDisposeScope()

                        withTempDir (fun dir ->
                            let path = Path.Combine(dir, "w.safetensors")
                            Safetensors.write path [ "x", torch.zeros (3L) ] null
                            let before = File.ReadAllBytes path
                            let bad = torch.zeros (2L, dtype = torch.ScalarType.ComplexFloat64)

                            let e =
                                raises<ArgumentException> "rejected" (fun () ->
                                    Safetensors.write path [ "ok", torch.ones (1L); "c", bad ] null)

                            Expect.stringContains e.Message path "names the path"
                            Expect.stringContains e.Message "'c'" "names the tensor"
                            Expect.equal (File.ReadAllBytes path) before "previous file intact"
                            Expect.equal (Directory.GetFiles dir).Length 1 "no temp file")
                    }

                    test "a nonexistent directory raises an IOException naming the path" {
                        use _ = torch.NewDisposeScope()

                        withTempDir (fun dir ->
                            let path = Path.Combine(dir, "missing", "w.safetensors")

                            let e =
                                raises<IOException> "rejected" (fun () ->
                                    Safetensors.write path [ "x", torch.zeros (3L) ] null)

                            Expect.stringContains e.Message path "names the path"
                            Expect.isEmpty (Directory.GetFileSystemEntries dir) "nothing created")
                    }

                    test "a failure after the data is written (target is a directory) removes the temp file" {
                        use _ = torch.NewDisposeScope()

                        withTempDir (fun dir ->
                            let path = Path.Combine(dir, "taken")
                            Directory.CreateDirectory path |> ignore
                            File.WriteAllText(Path.Combine(path, "keep.txt"), "keep")

                            let e =
                                raises<IOException> "rejected" (fun () ->
                                    Safetensors.write path [ "x", torch.zeros (3L) ] null)

                            Expect.stringContains e.Message path "names the path"

                            Expect.equal
                                (Directory.GetFileSystemEntries dir |> Array.map Path.GetFileName)
                                [| "taken" |]
                                "no temp file left"

                            Expect.equal (File.ReadAllText(Path.Combine(path, "keep.txt"))) "keep" "directory intact")
                    }
                ]
        ]
