module Esm3Structure.Tests.Tensors.PairDistanceTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Tensors
open Esm3Structure.Tests

/// One random case: seed, batch and point counts, how far the sets sit from the origin, and whether one query
/// point is copied onto a key (distance exactly 0).
type DistanceCase =
    {
        Seed: uint64
        Batch: int64
        Queries: int64
        Keys: int64
        Offset: float
        Coincide: bool
    }

let private distanceCase =
    gen {
        let! seed = Gens.seed
        let! b = Gen.choose (1, 3)
        let! p = Gen.choose (1, 17)
        let! r = Gen.choose (1, 17)
        let! offset = Gen.elements [ 0.0; 5.0; 30.0 ]
        let! coincide = Gen.elements [ true; false ]

        return
            {
                Seed = seed
                Batch = int64 b
                Queries = int64 p
                Keys = int64 r
                Offset = offset
                Coincide = coincide
            }
    }

let private property name (body: DistanceCase -> unit) =
    testPropertyWithConfig Props.config name (Prop.forAll (Arb.fromGen distanceCase) body)

/// Points a [B, 2, P, 3] and b [B, 2, R, 3] (σ 5 Å around a common offset), leaves that require gradients.
let private draw (c: DistanceCase) (dtype: torch.ScalarType) =
    let g = new torch.Generator(c.Seed)
    let shift = c.Offset * torch.ones ([| 3L |], dtype = dtype)

    let a =
        5.0
        * torch.randn ([| c.Batch; 2L; c.Queries; 3L |], dtype = dtype, generator = g)
        + shift

    let b =
        5.0 * torch.randn ([| c.Batch; 2L; c.Keys; 3L |], dtype = dtype, generator = g)
        + shift

    if c.Coincide then
        b.narrow(2L, 0L, 1L).copy_(a.narrow (2L, 0L, 1L)) |> ignore

    let upstream =
        torch.randn ([| c.Batch; 2L; c.Queries; c.Keys |], dtype = dtype, generator = g)

    a.requires_grad_ true, b.requires_grad_ true, upstream

let private gradients
    (f: torch.Tensor -> torch.Tensor -> torch.Tensor)
    (a: torch.Tensor)
    (b: torch.Tensor)
    (upstream: torch.Tensor)
    =
    let d: torch.Tensor = f a b
    let grads = torch.autograd.grad ([| (d * upstream).sum() |], [| a; b |])
    d.detach (), grads.[0], grads.[1]

[<Tests>]
let tests =
    testList
        "Tensors/PairDistance"
        [
            for dtype, name in Props.dtypes do
                property (sprintf "values are torch.cdist's bit for bit; gradients are cdist's (%s)" name) (fun c ->
                    use _ = torch.NewDisposeScope()
                    let a, b, upstream = draw c dtype
                    let d, ga, gb = gradients PairDistance.euclidean a b upstream
                    let d0, ga0, gb0 = gradients (fun x y -> torch.cdist (x, y)) a b upstream
                    Expect.isTrue (d.eq(d0).all().item<bool>()) "values bit-identical to torch.cdist"
                    Expect.isTrue (ga.isfinite().all().item<bool>()) "finite ∂a (also at distance 0)"
                    Expect.isTrue (gb.isfinite().all().item<bool>()) "finite ∂b"
                    // cdist's backward forms (a_i − b_j)/d_ij per pair; ours a_i Σ_j W_ij − Σ_j W_ij b_j with
                    // W = G/D. Both round each of the R (or P) terms once (unit roundoff u): the differences
                    // come from ours cancelling terms of size |x|·|W| to leave one of size |a_i − b_j|·|W|, so
                    // they are bounded by 4·u·n·max|x|·Σ|W| with n = max(P, R) terms.
                    let u = if dtype = torch.float64 then 1.1e-16 else 6e-8
                    let size = max (a.abs().max().ToDouble()) (b.abs().max().ToDouble())

                    let dmin =
                        d.masked_fill(d.eq (0.0.ToScalar()), infinity.ToScalar()).min().ToDouble()

                    let w = upstream.abs().max().ToDouble() / dmin
                    let n = float (max c.Queries c.Keys)
                    let tol = 4.0 * u * n * n * size * w
                    Tol.close "∂a" tol ga0 ga
                    Tol.close "∂b" tol gb0 gb)

            test "a gradient of 0 where two points coincide (cdist's subgradient), float64" {
                use _ = torch.NewDisposeScope()

                let a =
                    torch.tensor([| 1.0; 2.0; 3.0 |], dtype = torch.float64).reshape(1L, 1L, 3L).requires_grad_ true

                let b =
                    torch
                        .tensor([| 1.0; 2.0; 3.0; 4.0; 2.0; 3.0 |], dtype = torch.float64)
                        .reshape(1L, 2L, 3L)
                        .requires_grad_
                        true

                let d = PairDistance.euclidean a b
                Tol.close "distances" 0.0 d (torch.tensor([| 0.0; 3.0 |], dtype = torch.float64).reshape(1L, 1L, 2L))
                let grads = torch.autograd.grad ([| d.sum () |], [| a; b |])
                // Only the pair at distance 3 contributes: ∂a = (a − b₁)/3 = (−1, 0, 0), ∂b₁ = (1, 0, 0), ∂b₀ = 0.
                Tol.close
                    "∂a"
                    1e-15
                    grads.[0]
                    (torch.tensor([| -1.0; 0.0; 0.0 |], dtype = torch.float64).reshape(1L, 1L, 3L))

                Tol.close
                    "∂b"
                    1e-15
                    grads.[1]
                    (torch.tensor([| 0.0; 0.0; 0.0; 1.0; 0.0; 0.0 |], dtype = torch.float64).reshape(1L, 2L, 3L))
            }

            test "sets with other batch dims or widths are an ArgumentException naming b" {
                let a = torch.zeros (2L, 4L, 3L)

                for b in [ torch.zeros (3L, 4L, 3L); torch.zeros (2L, 4L, 2L); torch.zeros (4L, 3L) ] do
                    Expect.throwsC (fun () -> PairDistance.euclidean a b |> ignore) (fun e ->
                        Expect.isTrue (e :? ArgumentException) "an ArgumentException"
                        Expect.equal (e :?> ArgumentException).ParamName "b" "names b")
            }
        ]
