module Esm3Structure.Tests.Nn.FeedForwardTests

open Expecto
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

[<Tests>]
let tests =
    testList
        "Nn/FeedForward"
        [
            test "SwiGLU hidden width rounds r·d up to a multiple of 256 (ESM's table)" {
                Expect.equal (FeedForward.swigluHidden (8.0 / 3.0) 1536L) 4096L "ESM3 trunk"
                Expect.equal (FeedForward.swigluHidden (8.0 / 3.0) 1280L) 3584L "decoder"
                Expect.equal (FeedForward.swigluHidden 4.0 1024L) 4096L "encoder"
                Expect.equal (FeedForward.swigluHidden 1.0 256L) 256L "exact multiple"
                Expect.equal (FeedForward.swigluHidden 0.5 513L) 256L "256.5 rounds down"
            }

            test "SwiGLU forward equals SiLU(first half) ⊙ second half through ESM's layers" {
                use _ = torch.NewDisposeScope()

                let config =
                    { FeedForwardConfig.esm3 with
                        DModel = 16L
                        ExpansionRatio = 4.0
                        Bias = true
                    }

                use ffn = FeedForward.create config
                ffn.``to`` (torch.float64) |> ignore
                let sd = ffn.state_dict ()

                let x =
                    torch.randn ([| 2L; 5L; 16L |], dtype = torch.float64, generator = new torch.Generator(5UL))

                let h =
                    torch.nn.functional.layer_norm (x, [| 16L |], sd.["0.weight"], sd.["0.bias"], 1e-5)

                let gu = h.matmul (sd.["1.weight"].t()) + sd.["1.bias"]
                let f = FeedForward.hidden config

                let y =
                    (torch.nn.functional.silu (gu.narrow (-1L, 0L, f)) * gu.narrow (-1L, f, f))
                        .matmul(sd.["3.weight"].t())
                    + sd.["3.bias"]

                Tol.close "ffn" 1e-12 (ffn.forward x) y
            }

            test "state_dict keys are ESM's (0 LayerNorm, 1 and 3 linear)" {
                use ffn =
                    FeedForward.create
                        { FeedForwardConfig.esm3 with
                            DModel = 32L
                        }

                let keys = [ for kv in ffn.state_dict () -> kv.Key, List.ofArray kv.Value.shape ]

                Expect.equal
                    keys
                    [
                        "0.weight", [ 32L ]
                        "0.bias", [ 32L ]
                        "1.weight", [ 512L; 32L ]
                        "3.weight", [ 32L; 256L ]
                    ]
                    "no biases in the linear layers"
            }

            test "LayerNorm with unit weight gives rows of mean 0 and variance σ²/(σ² + 1e-5)" {
                use _ = torch.NewDisposeScope()

                let x =
                    0.01
                    * torch.randn ([| 4L; 32L |], dtype = torch.float64, generator = new torch.Generator(9UL))

                let y = torch.nn.functional.layer_norm (x, [| 32L |], eps = 1e-5)
                let var = x.var (-1L, false, false)
                Tol.close "mean" 1e-12 (y.mean ([| -1L |])) (torch.zeros (4L, dtype = torch.float64))
                Tol.close "variance" 1e-12 (y.var (-1L, false, false)) (var / (var + 1e-5))
            }
        ]
