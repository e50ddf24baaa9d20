module Esm3Structure.Tests.Nn.TransformerTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

let private tiny =
    { TransformerStackConfig.Esm3 with
        DModel = 24L
        Heads = 3L
        Layers = 3
    }

[<Tests>]
let tests =
    testList
        "Nn/Transformer"
        [
            test "ESM3's residual scale is sqrt(48/36)" {
                Expect.floatClose
                    Accuracy.veryHigh
                    (TransformerStackConfig.ResidualScaleOf TransformerStackConfig.Esm3)
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
                    { TransformerStackConfig.Block tiny with
                        ResidualScale = 2.5
                    }

                use block = new TransformerBlock(config)
                block.``to`` (torch.float64) |> ignore
                Init.reset (new torch.Generator(4UL)) block

                let x =
                    torch.randn ([| 2L; 5L; 24L |], dtype = torch.float64, generator = new torch.Generator(1UL))

                let children = dict [ for struct (n, c) in block.named_children () -> n, c ]
                let attn = children.["attn"] :?> MultiHeadAttention
                let ffn = children.["ffn"] :?> torch.nn.Module<torch.Tensor, torch.Tensor>
                let h = x + attn.forward (x, AttentionMask.None) / 2.5
                Tol.close "block" 1e-12 (block.forward (x, AttentionMask.None)) (h + ffn.forward h / 2.5)
            }

            test "Init.reset is deterministic for a seed and differs across seeds" {
                use a = new TransformerStack(tiny)
                use b = new TransformerStack(tiny)
                Init.reset (new torch.Generator(3UL)) a
                Init.reset (new torch.Generator(3UL)) b

                let same =
                    Seq.forall2
                        (fun (x: TorchSharp.Modules.Parameter) (y: TorchSharp.Modules.Parameter) ->
                            x.eq(y).all().ToBoolean())
                        (a.parameters ())
                        (b.parameters ())

                Expect.isTrue same "same seed, same parameters"
                Init.reset (new torch.Generator(4UL)) b

                Expect.isFalse
                    (a
                        .state_dict()
                        .["blocks.0.attn.out_proj.weight"].eq(b.state_dict().["blocks.0.attn.out_proj.weight"])
                        .all()
                        .ToBoolean())
                    "other seed differs"
            }
        ]
