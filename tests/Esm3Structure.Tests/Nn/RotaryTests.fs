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
    let relTol = if dtype = torch.float64 then 1e-10 else 1e-5

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
                Tol.close "scores(m+c, n+c) = scores(m, n)" (relTol * (1.0 + s.abs().max().ToDouble())) b a)

            Props.property "RoPE is an isometry per head" (fun (c: GeoCase) ->
                use _ = torch.NewDisposeScope()

                let x =
                    torch.randn ([| 2L; 13L; 3L; 8L |], dtype = dtype, generator = c.Generator())

                Tol.close "norms" (relTol * 10.0) ((Rotary.apply config x).norm(-1, false)) (x.norm (-1, false)))

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
