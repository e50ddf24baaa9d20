module Esm3Structure.Tests.Io.CheckpointTests

open System
open System.IO
open Expecto
open TorchSharp
open type TorchSharp.torch
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tests

/// Shaped like ESM's attention block: `layernorm_qkv = Sequential(LayerNorm, Linear)` and `out_proj`.
type Attention(d: int64) as this =
    inherit nn.Module<Tensor, Tensor>("Attention")

    let layernorm_qkv =
        nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 3L * d, hasBias = false))

    let out_proj = nn.Linear(d, d, hasBias = false)
    do this.RegisterComponents()

    override _.forward x =
        out_proj.forward ((layernorm_qkv.forward x).narrow(-1L, 0L, d))

/// A small tree: an own buffer, an embedding, a ModuleList of blocks, a batch norm (nested buffers, a 0-d Int64
/// counter) and a final norm.
type Tiny(d: int64, layers: int) as this =
    inherit nn.Module<Tensor, Tensor>("Tiny")
    let counts = torch.zeros (3L, dtype = torch.ScalarType.Int64)
    let embed = nn.Embedding(11L, d)

    let blocks =
        nn.ModuleList<nn.Module<Tensor, Tensor>>(
            [| for _ in 1..layers -> new Attention(d) :> nn.Module<Tensor, Tensor> |]
        )

    let bn = nn.BatchNorm1d(d)
    let norm = nn.LayerNorm(d)
    do this.RegisterComponents()

    override _.forward x =
        let mutable h = embed.forward x

        for b in blocks do
            h <- b.forward h

        norm.forward (bn.forward h) + counts.sum().``to``(h.dtype)

/// Fills every parameter and buffer with generator-drawn values (so two instances differ deterministically).
let randomize (seed: uint64) (m: nn.Module) =
    use _ = torch.NewDisposeScope()
    use g = new torch.Generator(seed)
    use _noGrad = torch.no_grad ()

    for name, t in Checkpoint.stateDict m do
        let r = randomTensor g t.dtype t.shape
        // A variance must be positive for the module's outputs to be comparable.
        t.copy_ (if name.EndsWith "running_var" then r.abs () + 0.5 else r) |> ignore

let expectSameState (a: nn.Module) (b: nn.Module) =
    let sa = Checkpoint.stateDict a
    let sb = Checkpoint.stateDict b
    Expect.equal (sb |> List.map fst) (sa |> List.map fst) "keys"

    for (name, x), (_, y) in List.zip sa sb do
        Expect.equal y.dtype x.dtype (name + ": dtype")
        Expect.equal (rawBytes y) (rawBytes x) (name + ": bits")

[<Tests>]
let tests =
    testList
        "Io/Checkpoint"
        [
            test
                "state_dict keys, shapes and order follow PyTorch (Sequential children 0, 1; ModuleList indices; buffers in place)" {
                use _ = torch.NewDisposeScope()
                use m = new Tiny(6L, 2)

                let block i =
                    [
                        sprintf "blocks.%d.layernorm_qkv.0.weight" i, [| 6L |]
                        sprintf "blocks.%d.layernorm_qkv.0.bias" i, [| 6L |]
                        sprintf "blocks.%d.layernorm_qkv.1.weight" i, [| 18L; 6L |]
                        sprintf "blocks.%d.out_proj.weight" i, [| 6L; 6L |]
                    ]

                let expected =
                    [ "counts", [| 3L |]; "embed.weight", [| 11L; 6L |] ]
                    @ block 0
                    @ block 1
                    @ [
                        "bn.weight", [| 6L |]
                        "bn.bias", [| 6L |]
                        "bn.running_mean", [| 6L |]
                        "bn.running_var", [| 6L |]
                        "bn.num_batches_tracked", [||]
                        "norm.weight", [| 6L |]
                        "norm.bias", [| 6L |]
                    ]

                Expect.equal (Checkpoint.keyShapes m) expected "keys, shapes and order"
                let torchSharpKeys = [ for kv in m.state_dict () -> kv.Key ]

                Expect.equal
                    (set torchSharpKeys)
                    (expected |> List.map fst |> set)
                    "the same entries as TorchSharp's state_dict"
            }

            test "save then load into a fresh instance gives identical parameters and buffers (bitwise)" {
                use _ = torch.NewDisposeScope()
                use a = new Tiny(6L, 2)
                use b = new Tiny(6L, 2)
                randomize 1UL a
                randomize 2UL b
                let paramsBefore = b.parameters () |> Array.ofSeq

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "tiny.safetensors")
                    Checkpoint.save path a (Map.ofList [ "format", "pt" ])

                    let names =
                        (Safetensors.readHeader path).Entries |> List.map (fun e -> e.Name) |> set

                    Expect.equal
                        names
                        (Checkpoint.keyShapes a |> List.map fst |> set)
                        "the file holds exactly the state_dict names"

                    Checkpoint.load path b
                    expectSameState a b
                    let paramsAfter = b.parameters () |> Array.ofSeq

                    Expect.isTrue
                        (Array.forall2
                            (fun (x: Modules.Parameter) (y: Modules.Parameter) -> obj.ReferenceEquals(x, y))
                            paramsBefore
                            paramsAfter)
                        "same Parameter objects"

                    Expect.isTrue
                        (paramsAfter |> Array.forall (fun p -> p.requires_grad))
                        "parameters still require grad"

                    a.eval ()
                    b.eval ()
                    use x = torch.tensor ([| 1L; 4L; 9L |])
                    Tol.close "same outputs" 0.0 (b.forward x) (a.forward x))
            }

            test "save, load, save gives identical bytes" {
                use _ = torch.NewDisposeScope()
                use a = new Tiny(5L, 3)
                use b = new Tiny(5L, 3)
                randomize 3UL a

                withTempDir (fun dir ->
                    let p1 = Path.Combine(dir, "1.safetensors")
                    let p2 = Path.Combine(dir, "2.safetensors")
                    Checkpoint.save p1 a null
                    Checkpoint.load p1 b
                    Checkpoint.save p2 b null
                    Expect.equal (File.ReadAllBytes p2) (File.ReadAllBytes p1) "bytes")
            }

            test "a missing key, an extra key and a mis-shaped tensor are all named, and nothing is loaded" {
                use _ = torch.NewDisposeScope()
                use a = new Tiny(6L, 2)
                use b = new Tiny(6L, 2)
                randomize 4UL a
                randomize 5UL b

                let tensors =
                    [
                        for name, t in Checkpoint.stateDict a do
                            if name = "blocks.1.layernorm_qkv.1.weight" then
                                yield name, torch.zeros (18L, 5L)
                            elif name <> "norm.bias" then
                                yield name, t
                    ]
                    @ [ "extra.weight", torch.zeros (2L) ]

                let mismatch = Checkpoint.mismatches tensors b

                Expect.equal
                    mismatch
                    {
                        Missing = [ "norm.bias" ]
                        Unexpected = [ "extra.weight" ]
                        WrongShape =
                            [
                                {
                                    Name = "blocks.1.layernorm_qkv.1.weight"
                                    Expected = [| 18L; 6L |]
                                    Got = [| 18L; 5L |]
                                }
                            ]
                        Duplicated = []
                    }
                    "structured mismatch"

                let snapshot = Checkpoint.stateDict b |> List.map (fun (n, t) -> n, rawBytes t)

                let e =
                    raises<InputException> "strict" (fun () ->
                        Checkpoint.loadInto "tiny.safetensors" tensors b |> ignore)

                Expect.equal e.Error.File "tiny.safetensors" "names the file"
                let msg = e.Error.Message
                Expect.stringContains msg "missing keys: norm.bias;" "missing"
                Expect.stringContains msg "unexpected keys: extra.weight;" "unexpected"
                Expect.stringContains msg "blocks.1.layernorm_qkv.1.weight: expected [18, 6], got [18, 5]" "shape"

                for name, _ in Checkpoint.stateDict b do
                    if name <> "norm.bias" && name <> "blocks.1.layernorm_qkv.1.weight" then
                        Expect.isFalse
                            (msg.Contains(name + ":")
                             || msg.Contains(name + ",")
                             || msg.Contains(name + ";")
                             || msg.EndsWith name)
                            (name + " is not named")

                Expect.equal
                    (Checkpoint.stateDict b |> List.map (fun (n, t) -> n, rawBytes t))
                    snapshot
                    "module unchanged"
            }

            test "loading a file with the wrong keys names them, through the file path" {
                use _ = torch.NewDisposeScope()
                use small = new Tiny(6L, 1)
                use big = new Tiny(6L, 2)

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "small.safetensors")
                    Checkpoint.save path small null

                    let e =
                        raises<InputException> "strict" (fun () -> Checkpoint.load path big |> ignore)

                    Expect.equal e.Error.File path "file"

                    Expect.stringContains
                        e.Error.Message
                        "missing keys: blocks.1.layernorm_qkv.0.weight, blocks.1.layernorm_qkv.0.bias, blocks.1.layernorm_qkv.1.weight, blocks.1.out_proj.weight"
                        "the four keys of block 1"

                    Expect.isFalse (e.Error.Message.Contains "unexpected") "no unexpected keys"
                    Expect.isFalse (e.Error.Message.Contains "wrong shapes") "no shape problems")
            }

            test "a duplicated key is named" {
                use _ = torch.NewDisposeScope()
                use m = new Tiny(4L, 1)
                let sd = Checkpoint.stateDict m

                let e =
                    raises<InputException> "strict" (fun () ->
                        Checkpoint.loadInto "x" (sd @ [ List.head sd ]) m |> ignore)

                Expect.stringContains e.Error.Message ("duplicated keys: " + fst (List.head sd)) "named"
            }

            test "save and load leave no live tensors behind" {
                use m = new Tiny(4L, 2)

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "leak.safetensors")
                    Checkpoint.save path m null
                    Checkpoint.load path m
                    let before = DisposeScopeManager.Statistics.ThreadTotalLiveCount

                    for _ in 1..3 do
                        Checkpoint.save path m null
                        Checkpoint.load path m

                    Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount before "live tensors")
            }

            test "a float64 checkpoint loads into a float32 module by conversion" {
                use _ = torch.NewDisposeScope()
                use a = new Tiny(4L, 1)
                use b = new Tiny(4L, 1)
                randomize 6UL a
                a.``to`` (torch.ScalarType.Float64) |> ignore

                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "f64.safetensors")
                    Checkpoint.save path a null

                    Expect.contains
                        ((Safetensors.readHeader path).Entries |> List.map (fun e -> e.Dtype))
                        "F64"
                        "saved as F64"

                    Checkpoint.load path b

                    for (name, x), (_, y) in List.zip (Checkpoint.stateDict a) (Checkpoint.stateDict b) do
                        if x.is_floating_point () then
                            Expect.equal y.dtype torch.ScalarType.Float32 (name + ": kept float32")

                        Tol.close name 0.0 (y.``to`` (x.dtype)) (x.``to``(y.dtype).``to``(x.dtype)))
            }
        ]
