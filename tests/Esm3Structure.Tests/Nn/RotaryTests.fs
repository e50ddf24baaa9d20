module Esm3Structure.Tests.Nn.RotaryTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

/// q·k scores between every pair of positions when every position carries the same q and k vectors.
let private scores (config: RotaryConfig) (q: torch.Tensor) (k: torch.Tensor) (length: int64) =
    let tile (v: torch.Tensor) =
        v.expand(1L, length, v.shape.[0], v.shape.[1]).contiguous() // [1, L, H, D]

    let qr = Rotary.apply config (tile q)
    let kr = Rotary.apply config (tile k)
    torch.einsum ("blhd,bmhd->hlm", qr, kr) // [H, L, L]

let private properties (style: RotaryStyle) (dtype: torch.ScalarType) (name: string) =
    let config = { RotaryConfig.esm3 with Style = style }
    let u = Tol.unitRoundoff dtype
    // Rounding of the rotation at position m (frequencies f ≤ 1, computed once, so exactly linear positions m·f̂ keep
    // every identity below exact): the angle m·f̂ rounds ≤ u·m, cos and sin ≤ 2u more (≤ 1 ulp), and each rotated
    // entry x_i c − x_j s rounds 3u on |x_i| + |x_j|: a pair moves by ≤ 2·(5u + u·m)·|pair| in 2-norm, a vector by
    // ≤ 2·(5u + u·m)·|x|.
    let vectorError (m: float) = 2.0 * (5.0 * u + u * m)

    testList
        name
        [
            Props.property "q·k after RoPE depends only on the offset m − n" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let g = c.Generator()
                let heads, dim, length = 3L, 8L, 40L
                let q = torch.randn ([| heads; dim |], dtype = dtype, generator = g)
                let k = torch.randn ([| heads; dim |], dtype = dtype, generator = g)
                let s = scores config q k length
                let shift = 1L + int64 (c.Seed % 20UL)
                let a = s.narrow(1L, 0L, length - shift).narrow(2L, 0L, length - shift)
                let b = s.narrow(1L, shift, length - shift).narrow(2L, shift, length - shift)
                // Each score q_m·k_n: the rotated vectors' errors (vectorError at m, n < L) through the other's norm,
                // and the D-term product D·u·|q||k|; both sides.
                let qk = (q.norm (-1, false) * k.norm (-1, false)).max().ToDouble()
                let perScore = (2.0 * vectorError (float (length - 1L)) + float dim * u) * qk
                Tol.close "scores(m+c, n+c) = scores(m, n)" (2.0 * perScore) b a)

            Props.property "RoPE is an isometry per head" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()

                let x =
                    torch.randn ([| 2L; 13L; 3L; 8L |], dtype = dtype, generator = c.Generator())
                // vectorError at each position, plus both 8-term norms (squares, sum, square root: 6u relative each).
                let norms = x.norm(-1, false).to_type torch.float64
                let positions = torch.arange(13L, dtype = torch.float64).reshape(1L, 13L, 1L)
                let tol = norms * (2.0 * (5.0 * u + u * positions) + 12.0 * u)

                Tol.within "norms" ((Rotary.apply config x).norm(-1, false).to_type torch.float64 - norms) tol)

            Props.property "position 0 is the identity" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()
                let x = torch.randn ([| 2L; 5L; 3L; 8L |], dtype = dtype, generator = c.Generator())
                Tol.close "row 0" 0.0 ((Rotary.apply config x).select(1L, 0L)) (x.select (1L, 0L)))
        ]

[<Tests>]
let tests =
    testList
        "Nn/Rotary"
        [
            testList
                "properties"
                [
                    for style in [ RotaryStyle.HalfSplit; RotaryStyle.Interleaved ] do
                        for dtype, name in Props.dtypes -> properties style dtype (sprintf "%O.%s" style name)
                ]

            test "NeoX pairing: dim k rotates with dim k + D/2 by m·θ_k (hand-computed)" {
                use _ = torch.NewDisposeScope()
                // D = 4: θ₀ = 1, θ₁ = 10000^(−1/2) = 0.01. Position 2 rotates the pair (x₀, x₂) by 2 rad and (x₁, x₃) by 0.02 rad.
                let x = torch.zeros ([| 1L; 3L; 1L; 4L |], dtype = torch.float64)

                x.[torch.TensorIndex.Single 0L,
                   torch.TensorIndex.Single 2L,
                   torch.TensorIndex.Single 0L,
                   torch.TensorIndex.Single 0L] <- torch.tensor (1.0, dtype = torch.float64)

                x.[torch.TensorIndex.Single 0L,
                   torch.TensorIndex.Single 2L,
                   torch.TensorIndex.Single 0L,
                   torch.TensorIndex.Single 1L] <- torch.tensor (1.0, dtype = torch.float64)

                let y = (Rotary.apply RotaryConfig.esm3 x).select(1L, 2L).reshape(-1L)

                let expected =
                    torch.tensor ([| Math.Cos 2.0; Math.Cos 0.02; Math.Sin 2.0; Math.Sin 0.02 |], dtype = torch.float64)

                Tol.close "rotated" 1e-15 y expected
            }

            test "float32 tables equal ESM's float32 recipe" {
                use _ = torch.NewDisposeScope()
                let cos, sin = Rotary.tables RotaryConfig.esm3 7L 64L torch.float32 torch.CPU

                let inv =
                    1.0f
                    / torch.pow (torch.tensor (10000.0f), torch.arange (0L, 64L, 2L, dtype = torch.float32) / 64.0f)

                let ang = torch.outer (torch.arange (7L, dtype = torch.float32), inv)
                Tol.close "cos" 0.0 cos (torch.cat ([| ang.cos (); ang.cos () |], -1L))
                Tol.close "sin" 0.0 sin (torch.cat ([| ang.sin (); ang.sin () |], -1L))
            }

            test "odd head width is rejected with a clear error" {
                Expect.throwsC
                    (fun () -> Rotary.tables RotaryConfig.esm3 3L 5L torch.float32 torch.CPU |> ignore)
                    (fun e -> Expect.stringContains e.Message "even" "message")
            }
        ]
