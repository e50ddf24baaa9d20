module Esm3Structure.Tests.Nn.TransformerTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

let private tiny =
    { TransformerStackConfig.esm3 with
        DModel = 24L
        Heads = 3L
        Layers = 3
        GeometricLayers = 0
    }

/// The same stack with geometric attention in block 0 (4 vector heads).
let private tinyGeometric =
    { tiny with
        GeometricLayers = 1
        VHeads = 4L
    }

/// A float64 stack with random weights (`Init.initialise`) and non-zero geometric scales, so both score terms matter.
let private randomStack (config: TransformerStackConfig) (g: torch.Generator) =
    let m = new TransformerStack(config)
    m.``to`` (torch.float64) |> ignore
    Init.initialise g m

    for struct (name, p) in m.named_parameters () do
        if name.EndsWith "_per_head" then
            use _ = torch.no_grad ()
            p.copy_ (torch.randn (p.shape, dtype = torch.float64, generator = g)) |> ignore

    m

/// A block context with the frames of a backbone (one sequence, one chain).
let private framesContext (f: Esm3Structure.Geometry.BackboneFrames) =
    {
        Mask = AttentionMask.None
        Geometry =
            Some
                {
                    Frames = f.Frames
                    Framed = f.Mask
                    SequenceId = None
                    ChainId = None
                }
    }

[<Tests>]
let tests =
    testList
        "Nn/Transformer"
        [
            test "ESM3's residual scale is sqrt(48/36)" {
                Expect.floatClose
                    Accuracy.veryHigh
                    (TransformerStackConfig.ResidualScaleOf TransformerStackConfig.esm3)
                    1.1547005383792515
                    "s"

                Expect.equal (TransformerStackConfig.ResidualScaleOf { tiny with ScaleResidue = false }) 1.0 "off"
            }

            test "stack keys are blocks.{i}.attn.*, blocks.{i}.ffn.*, then norm.weight (no bias)" {
                use m = new TransformerStack(tiny)
                let keys = [ for kv in m.state_dict () -> kv.Key ]

                let block i =
                    [
                        "attn.layernorm_qkv.0.weight"
                        "attn.layernorm_qkv.0.bias"
                        "attn.layernorm_qkv.1.weight"
                        "attn.out_proj.weight"
                        "attn.q_ln.weight"
                        "attn.k_ln.weight"
                        "ffn.0.weight"
                        "ffn.0.bias"
                        "ffn.1.weight"
                        "ffn.3.weight"
                    ]
                    |> List.map (fun k -> sprintf "blocks.%d.%s" i k)

                Expect.equal keys (List.concat [ block 0; block 1; block 2; [ "norm.weight" ] ]) "keys"

                Expect.sequenceEqual
                    (m.state_dict().["blocks.1.ffn.1.weight"].shape)
                    [| 2L * 256L; 24L |]
                    "SwiGLU hidden 256"
            }

            test "a block adds each branch divided by the residual scale" {
                use _ = torch.NewDisposeScope()

                let config =
                    { TransformerStackConfig.Block(tiny, 5) with
                        ResidualScale = 2.5
                    }

                use block = new TransformerBlock(config)
                block.``to`` (torch.float64) |> ignore
                Init.initialise (new torch.Generator(4UL)) block

                let x =
                    torch.randn ([| 2L; 5L; 24L |], dtype = torch.float64, generator = new torch.Generator(1UL))

                let children = dict [ for struct (n, c) in block.named_children () -> n, c ]
                let attn = children.["attn"] :?> MultiHeadAttention
                let ffn = children.["ffn"] :?> torch.nn.Module<torch.Tensor, torch.Tensor>
                let h = x + attn.forward (x, AttentionMask.None) / 2.5

                Tol.close
                    "block"
                    1e-12
                    (block.forward (x, BlockContext.Plain AttentionMask.None))
                    (h + ffn.forward h / 2.5)
            }

            test "Init.initialise is deterministic for a seed and differs across seeds" {
                use a = new TransformerStack(tiny)
                use b = new TransformerStack(tiny)
                Init.initialise (new torch.Generator(3UL)) a
                Init.initialise (new torch.Generator(3UL)) b

                let same =
                    Seq.forall2
                        (fun (x: TorchSharp.Modules.Parameter) (y: TorchSharp.Modules.Parameter) ->
                            x.eq(y).all().ToBoolean())
                        (a.parameters ())
                        (b.parameters ())

                Expect.isTrue same "same seed, same parameters"
                Init.initialise (new torch.Generator(4UL)) b

                Expect.isFalse
                    (a
                        .state_dict()
                        .["blocks.0.attn.out_proj.weight"].eq(b.state_dict().["blocks.0.attn.out_proj.weight"])
                        .all()
                        .ToBoolean())
                    "other seed differs"
            }

            test "block 0 of a geometric stack carries geom_attn between attn and ffn, with ESM's keys" {
                use m = new TransformerStack(tinyGeometric)
                let keys = [ for kv in m.state_dict () -> kv.Key ]

                let block0 =
                    keys
                    |> List.filter (fun k -> k.StartsWith "blocks.0.")
                    |> List.map (fun k -> k.Substring 9)

                Expect.equal
                    block0.[6..10]
                    [
                        "geom_attn.distance_scale_per_head"
                        "geom_attn.rotation_scale_per_head"
                        "geom_attn.s_norm.weight"
                        "geom_attn.proj.weight"
                        "geom_attn.out_proj.weight"
                    ]
                    "geometric keys after attn"

                Expect.isFalse (keys |> List.exists (fun k -> k.StartsWith "blocks.1.geom_attn")) "only block 0"
            }

            testPropertyWithConfig
                Props.config
                "a geometric stack's output is invariant to a global rigid motion of the frames"
                (fun (c: GeoCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    use m = randomStack tinyGeometric g
                    let l = 9L
                    let backbone = Draw.backbone g [| 2L |] l torch.float64
                    let frames = Esm3Structure.Geometry.Frame.ofBackbone backbone
                    let motion = Esm3Structure.Geometry.Frame.random [||] 50.0 torch.float64 torch.CPU g

                    let moved =
                        Esm3Structure.Geometry.Frame.ofBackbone (Esm3Structure.Geometry.Frame.apply motion backbone)

                    let x = torch.randn ([| 2L; l; 24L |], dtype = torch.float64, generator = g)
                    let a = m.forward (x, framesContext frames)
                    let b = m.forward (x, framesContext moved)
                    Tol.close "output" (1e-9 * (1.0 + a.abs().max().ToDouble())) b a)

            test "ForwardAt (position) = forward's output at that position, the last FFN run on it alone" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(17UL)

                for config in
                    [
                        { tinyGeometric with
                            GeometricLayers = 3
                        }
                        tiny
                    ] do
                    use m = randomStack config g
                    let l = 7L

                    let context =
                        framesContext (
                            Esm3Structure.Geometry.Frame.ofBackbone (Draw.backbone g [| 5L |] l torch.float64)
                        )

                    let x = torch.randn ([| 5L; l; 24L |], dtype = torch.float64, generator = g)
                    let full = m.forward (x, context)

                    for position in [ 0L; 4L; l - 1L ] do
                        let at = m.ForwardAt(x, context, position)
                        Expect.sequenceEqual at.shape [| 5L; 24L |] "shape [B, d]"
                        Tol.close (sprintf "position %d" position) 1e-12 at (full.select (1L, position))

                    Expect.throwsT<ArgumentOutOfRangeException>
                        (fun () -> m.ForwardAt(x, context, l) |> ignore)
                        "a position outside the sequence"
            }

            test "a geometric block without frames is a clear error" {
                use m = new TransformerStack(tinyGeometric)

                Expect.throwsC
                    (fun () ->
                        m.forward (torch.zeros (1L, 3L, 24L), BlockContext.Plain AttentionMask.None)
                        |> ignore)
                    (fun e -> Expect.stringContains e.Message "needs Geometry" "message")
            }

            test "an encoder-style stack (geometric only, biased, no final norm) has ESM's encoder keys" {
                let config =
                    { tinyGeometric with
                        Layers = 2
                        GeometricLayers = 2
                        PlainAttention = false
                        FinalNorm = false
                        Bias = true
                        ExpansionRatio = 4.0
                        ScaleResidue = false
                    }

                use m = new TransformerStack(config)
                let keys = [ for kv in m.state_dict () -> kv.Key ]

                let block i =
                    [
                        "geom_attn.distance_scale_per_head"
                        "geom_attn.rotation_scale_per_head"
                        "geom_attn.s_norm.weight"
                        "geom_attn.s_norm.bias"
                        "geom_attn.proj.weight"
                        "geom_attn.proj.bias"
                        "geom_attn.out_proj.weight"
                        "geom_attn.out_proj.bias"
                        "ffn.0.weight"
                        "ffn.0.bias"
                        "ffn.1.weight"
                        "ffn.1.bias"
                        "ffn.3.weight"
                        "ffn.3.bias"
                    ]
                    |> List.map (fun k -> sprintf "blocks.%d.%s" i k)

                Expect.equal keys (block 0 @ block 1) "keys (ESM3-REFERENCE.md §5.6)"
            }
        ]
