module Esm3Structure.Tests.Nn.AttentionTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

let private small rotary =
    {
        DModel = 24L
        Heads = 3L
        Bias = false
        QkLayerNorm = true
        Rotary = rotary
    }

/// A module in float64 with random (seeded) weights, including the LayerNorm affine parameters.
let private randomModule (config: AttentionConfig) (seed: uint64) =
    let m = new MultiHeadAttention(config)
    m.``to`` (torch.float64) |> ignore
    let g = new torch.Generator(seed)

    use _ = torch.no_grad ()

    for p in m.parameters () do
        p.copy_ (0.3 * torch.randn (p.shape, dtype = torch.float64, generator = g))
        |> ignore

    m

let private properties =
    testList
        "properties"
        [
            Props.property "causal: the output at i does not change when any token after i changes" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let m = randomModule (small (Some RotaryConfig.esm3)) c.Seed
                let l = 9L
                let x = torch.randn ([| 2L; l; 24L |], dtype = torch.float64, generator = g)
                let i = int64 (c.Seed % uint64 (l - 1L))
                let changed = x.clone ()

                changed
                    .narrow(1L, i + 1L, l - i - 1L)
                    .copy_(torch.randn ([| 2L; l - i - 1L; 24L |], dtype = torch.float64, generator = g))
                |> ignore

                let mask = AttentionMask.Allowed(AttentionMask.causal l l torch.CPU)
                let a = m.forward (x, mask)
                let b = m.forward (changed, mask)
                Tol.close "positions ≤ i" 0.0 (a.narrow (1L, 0L, i + 1L)) (b.narrow (1L, 0L, i + 1L))

                Expect.isGreaterThan
                    (Tol.maxAbsDiff (a.narrow (1L, i + 1L, l - i - 1L)) (b.narrow (1L, i + 1L, l - i - 1L)))
                    1e-6
                    "later positions do change")

            Props.property
                "padding: padded keys get zero weight, and padded inputs change no real output"
                (fun (c: GeoCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let l = 8L
                    let real = 1L + int64 (c.Seed % uint64 l)
                    let valid = torch.arange(l).lt(real.ToScalar()).unsqueeze(0L).expand(2L, l)
                    let mask = AttentionMask.Allowed(AttentionMask.keyPadding valid)
                    let q = torch.randn ([| 2L; 3L; l; 5L |], dtype = torch.float64, generator = g)
                    let k = torch.randn ([| 2L; 3L; l; 5L |], dtype = torch.float64, generator = g)
                    let w = Attention.weights mask None q k

                    Expect.equal
                        (w.narrow(-1L, real, l - real).abs().sum().ToDouble())
                        0.0
                        "zero weight on padded keys"

                    Tol.close "rows sum to 1" 1e-12 (w.sum (-1L)) (torch.ones ([| 2L; 3L; l |], dtype = torch.float64))
                    let m = randomModule (small (Some RotaryConfig.esm3)) c.Seed
                    let x = torch.randn ([| 2L; l; 24L |], dtype = torch.float64, generator = g)
                    let junk = x.clone ()

                    junk
                        .narrow(1L, real, l - real)
                        .copy_(
                            torch.randn ([| 2L; l - real; 24L |], dtype = torch.float64, generator = g)
                            * 100.0
                        )
                    |> ignore

                    Tol.close
                        "real outputs"
                        1e-12
                        (m.forward(x, mask).narrow(1L, 0L, real))
                        (m.forward(junk, mask).narrow(1L, 0L, real)))

            Props.property "without positions, permuting residues permutes outputs" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let m = randomModule (small None) c.Seed
                let x = torch.randn ([| 2L; 7L; 24L |], dtype = torch.float64, generator = g)
                let perm = torch.randperm (7L, generator = g)

                Tol.close
                    "permuted"
                    1e-12
                    (m.forward (x.index_select (1L, perm), AttentionMask.None))
                    (m.forward(x, AttentionMask.None).index_select(1L, perm)))

            Props.property "packed sequences (ESM's seq_id mask) do not see each other" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let m = randomModule (small (Some RotaryConfig.esm3)) c.Seed
                let l, cut = 10L, 3L + int64 (c.Seed % 5UL)
                let seqId = torch.arange(l).ge(cut.ToScalar()).to_type(torch.int64).unsqueeze(0L)
                let mask = AttentionMask.Allowed(AttentionMask.sameSequence seqId)
                let x = torch.randn ([| 1L; l; 24L |], dtype = torch.float64, generator = g)
                let other = x.clone ()

                other
                    .narrow(1L, cut, l - cut)
                    .copy_(torch.randn ([| 1L; l - cut; 24L |], dtype = torch.float64, generator = g))
                |> ignore

                Tol.close
                    "first sequence"
                    0.0
                    (m.forward(x, mask).narrow(1L, 0L, cut))
                    (m.forward(other, mask).narrow(1L, 0L, cut)))
        ]

[<Tests>]
let tests =
    testList
        "Nn/Attention"
        [
            properties

            test "scaled dot-product, hand-computed: d = 4, two keys" {
                use _ = torch.NewDisposeScope()
                // scores = q·k / sqrt(4): q·k₀ = 2 → 1, q·k₁ = 0 → 0; weights = (e, 1)/(e + 1)
                let q =
                    torch.tensor([| 1.0; 1.0; 0.0; 0.0 |], dtype = torch.float64).reshape(1L, 4L)

                let k =
                    torch.tensor([| 1.0; 1.0; 0.0; 0.0; 0.0; 0.0; 1.0; 1.0 |], dtype = torch.float64).reshape(2L, 4L)

                let v = torch.tensor([| 10.0; 20.0 |], dtype = torch.float64).reshape(2L, 1L)
                let e = Math.E
                let expected = (10.0 * e + 20.0) / (e + 1.0)

                Tol.close
                    "output"
                    1e-12
                    (Attention.scaledDotProduct AttentionMask.None None q k v)
                    (torch.tensor([| expected |], dtype = torch.float64).reshape(1L, 1L))
            }

            test "a fully masked row is a uniform average, never NaN (ESM's finfo.min fill)" {
                use _ = torch.NewDisposeScope()
                let q = torch.randn (1L, 3L, 4L)
                let k = torch.randn (1L, 5L, 4L)
                let v = torch.randn (1L, 5L, 2L)
                let nothing = torch.zeros ([| 1L; 3L; 5L |], dtype = torch.ScalarType.Bool)
                let out = Attention.scaledDotProduct (AttentionMask.Allowed nothing) None q k v
                // Every score is finfo.min exactly, so the weights are 1/5 (rounded: u) and the 5-term weighted sum
                // rounds ≤ 5u on Σ|v|/5; the mean's sum and division ≤ 5u likewise (float32, u = 2⁻²⁴).
                let tol = Tol.derived torch.float32 11.0 (v.abs().max().ToDouble())
                Tol.close "uniform" tol out (v.mean([| 1L |], true).expand(1L, 3L, 2L))
            }

            test "causal mask shape and content" {
                use _ = torch.NewDisposeScope()
                let m = AttentionMask.causal 3L 3L torch.CPU

                Expect.sequenceEqual
                    (m.data<bool>().ToArray())
                    [| true; false; false; true; true; false; true; true; true |]
                    "lower triangle"
            }

            test "state_dict keys and shapes are ESM's" {
                use m =
                    new MultiHeadAttention(
                        { AttentionConfig.esm3 with
                            DModel = 64L
                            Heads = 4L
                        }
                    )

                let keys = [ for kv in m.state_dict () -> kv.Key, List.ofArray kv.Value.shape ]

                Expect.equal
                    keys
                    [
                        "layernorm_qkv.0.weight", [ 64L ]
                        "layernorm_qkv.0.bias", [ 64L ]
                        "layernorm_qkv.1.weight", [ 192L; 64L ]
                        "out_proj.weight", [ 64L; 64L ]
                        "q_ln.weight", [ 64L ]
                        "k_ln.weight", [ 64L ]
                    ]
                    "keys"

                use plain =
                    new MultiHeadAttention(
                        { AttentionConfig.esm3 with
                            DModel = 64L
                            Heads = 4L
                            QkLayerNorm = false
                            Bias = true
                        }
                    )

                let keys = [ for kv in plain.state_dict () -> kv.Key ]

                Expect.equal
                    keys
                    [
                        "layernorm_qkv.0.weight"
                        "layernorm_qkv.0.bias"
                        "layernorm_qkv.1.weight"
                        "layernorm_qkv.1.bias"
                        "out_proj.weight"
                        "out_proj.bias"
                    ]
                    "biased, no qk-LN"
            }

            test "invalid configs are rejected with named errors" {
                Expect.throwsC
                    (fun () ->
                        new MultiHeadAttention(
                            { AttentionConfig.esm3 with
                                DModel = 10L
                                Heads = 3L
                            }
                        )
                        |> ignore)
                    (fun e -> Expect.stringContains e.Message "divisible" "message")
            }
        ]
