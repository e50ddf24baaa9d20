namespace Esm3Structure.Tensors

open System
open System.Collections.Generic
open TorchSharp

/// `torch.cdist` (p = 2) as an autograd function whose backward is a few batched products instead of cdist's own
/// backward, which runs on one thread and took a tenth of a tokenizer training step. The forward is
/// `torch.cdist` itself, so values are bit-identical; the backward is cdist's gradient, written out:
/// with W = G / D (0 where D = 0, cdist's subgradient there),
/// ∂a_i = a_i Σ_j W_ij − Σ_j W_ij b_j and ∂b_j = b_j Σ_i W_ij − Σ_i W_ij a_i.
/// Use `PairDistance.euclidean`; the type is public only because TorchSharp instantiates it.
type PairDistanceFunction() =
    inherit torch.autograd.SingleTensorFunction<PairDistanceFunction>()

    override _.Name = "PairDistance"

    override _.forward(ctx, vars) =
        let a = vars.[0] :?> torch.Tensor
        let b = vars.[1] :?> torch.Tensor
        let d = torch.cdist (a, b)
        ctx.save_for_backward (List<torch.Tensor>([ a; b; d ]))
        d

    override _.backward(ctx, gradient) =
        let saved = ctx.get_saved_variables ()
        let a, b, d = saved.[0], saved.[1], saved.[2]
        let zero = d.eq (0.0.ToScalar())

        let w =
            (gradient / d.masked_fill (zero, 1.0.ToScalar())).masked_fill(zero, 0.0.ToScalar()) // [*, P, R]

        let ga = a * w.sum (-1L, true) - w.matmul b
        let gb = b * w.sum(-2L).unsqueeze(-1L) - w.transpose(-1L, -2L).matmul a
        List<torch.Tensor>([ ga; gb ])

/// Euclidean distances between two point sets.
module PairDistance =

    /// All distances ‖a_i − b_j‖ (torch.cdist's values, with a multi-threaded backward).
    /// Shapes: a [*, P, M], b [*, R, M] (the same batch dims, same dtype) -> [*, P, R]
    let euclidean (a: torch.Tensor) (b: torch.Tensor) : torch.Tensor =
        if a.dim () < 2L || b.dim () <> a.dim () then
            raise (
                ArgumentException(
                    sprintf
                        "b: expected [*, R, M] with a's batch dims %s, got %s"
                        (Shape.show a.shape)
                        (Shape.show b.shape),
                    "b"
                )
            )

        let n = a.shape.Length

        if a.shape.[.. n - 3] <> b.shape.[.. n - 3] || a.shape.[n - 1] <> b.shape.[n - 1] then
            raise (
                ArgumentException(
                    sprintf
                        "b: expected [*, R, M] with a's batch dims and M, a is %s, b is %s"
                        (Shape.show a.shape)
                        (Shape.show b.shape),
                    "b"
                )
            )

        if a.requires_grad || b.requires_grad then
            PairDistanceFunction.apply (a, b)
        else
            torch.cdist (a, b)
