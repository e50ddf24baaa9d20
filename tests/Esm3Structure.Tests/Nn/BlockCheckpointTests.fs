module Esm3Structure.Tests.Nn.BlockCheckpointTests

open System.IO
open Expecto
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tests

/// Every block of the attention family, small, with a factory for fresh instances and a forward to compare.
let private cases: (string * (unit -> torch.nn.Module) * (torch.nn.Module -> torch.Tensor)) list =
    let x () =
        torch.randn ([| 2L; 5L; 24L |], generator = new torch.Generator(8UL))

    let attention =
        { AttentionConfig.esm3 with
            DModel = 24L
            Heads = 3L
        }

    let geometric =
        { GeometricAttentionConfig.esm3Encoder with
            DModel = 24L
            VHeads = 4L
        }

    let stack =
        { TransformerStackConfig.esm3 with
            DModel = 24L
            Heads = 3L
            VHeads = 4L
            Layers = 2
        }

    let frames () =
        let bb = Draw.backbone (new torch.Generator(2UL)) [| 2L |] 5L torch.float32
        Esm3Structure.Geometry.Frame.ofBackbone bb

    let context () =
        let f = frames ()

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

    [
        "MultiHeadAttention",
        (fun () -> new MultiHeadAttention(attention) :> torch.nn.Module),
        (fun m -> (m :?> MultiHeadAttention).forward(x (), AttentionMask.None))
        "FeedForward (SwiGLU, biased)",
        (fun () ->
            FeedForward.create
                { FeedForwardConfig.esm3 with
                    DModel = 24L
                    Bias = true
                }
            :> torch.nn.Module),
        (fun m -> (m :?> torch.nn.Module<torch.Tensor, torch.Tensor>).forward(x ()))
        "GeometricAttention (encoder preset)",
        (fun () -> new GeometricAttention(geometric) :> torch.nn.Module),
        (fun m -> let f = frames () in (m :?> GeometricAttention).Forward(x (), f.Frames, f.Mask))
        "TransformerBlock (attn + geom_attn + ffn)",
        (fun () -> new TransformerBlock(TransformerStackConfig.Block(stack, 0)) :> torch.nn.Module),
        (fun m -> (m :?> TransformerBlock).forward(x (), context ()))
        "TransformerStack",
        (fun () -> new TransformerStack(stack) :> torch.nn.Module),
        (fun m -> (m :?> TransformerStack).forward(x (), context ()))
        "CausalLm",
        (fun () ->
            new CausalLm(
                { CausalLmConfig.small with
                    DModel = 24L
                    Heads = 3L
                }
            )
            :> torch.nn.Module),
        (fun m -> (m :?> CausalLm).forward(torch.tensor([| 0L; 5L; 9L; 2L |]).unsqueeze 0L))
    ]

/// A block's own rules: `IInitialise`, or `FeedForward.initialise` for the feed-forward network (a `Sequential`).
let private initialise (generator: torch.Generator) (m: torch.nn.Module) =
    match box m with
    | :? IInitialise as i -> i.Initialise generator
    | :? torch.nn.Module<torch.Tensor, torch.Tensor> as ffn -> FeedForward.initialise generator ffn
    | _ -> failwithf "no initialisation rules for %s" (m.GetType().Name)

[<Tests>]
let tests =
    testList
        "Nn/BlockCheckpoints"
        [
            for name, create, run in cases ->
                test (
                    name
                    + ": ESM-named checkpoint → fresh block → saved again gives the same bytes and outputs"
                ) {
                    use _ = torch.NewDisposeScope()
                    use dir = new TempDir()
                    let source = create ()
                    initialise (new torch.Generator(17UL)) source
                    // Non-default values everywhere, including the geometric per-head scales.
                    for struct (_, p) in source.named_parameters () do
                        use _ = torch.no_grad ()

                        p.add_ (
                            0.01
                            * torch.randn (p.shape, generator = new torch.Generator(uint64 (p.numel ())))
                        )
                        |> ignore

                    let first = dir.File "first.safetensors"
                    Checkpoint.save first source null
                    let target = create ()
                    Checkpoint.load first target
                    let second = dir.File "second.safetensors"
                    Checkpoint.save second target null
                    Expect.equal (File.ReadAllBytes second) (File.ReadAllBytes first) "same bytes"
                    Tol.close "same outputs" 0.0 (run target) (run source)
                }
        ]
