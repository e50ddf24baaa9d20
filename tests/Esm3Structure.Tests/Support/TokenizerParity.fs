namespace Esm3Structure.Tests

open System
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Tokenizers

/// The ESM tokenizer parity fixture (`Reference/tokenizer/generate.py`) and its rounding bounds, shared by the
/// parity tests and the script tests that compare with ESM.
module TokenizerParity =

    /// ESM's own `StructureTokenEncoder` and `StructureTokenDecoder` (seeded random weights, saved by torch.save) and
    /// their outputs on 1UBQ chain A, float32 and float64 (`Reference/tokenizer/generate.py`).
    let file name =
        IO.Path.Combine(AppContext.BaseDirectory, "Reference", "tokenizer", name)

    /// The fixture's tensors, in the caller's dispose scope.
    let readIo () =
        (Safetensors.read (file "io.safetensors")).Tensors |> Map.ofList

    /// The summed lengths of the reductions along the longest path of a 2-block tokenizer part of width d over the
    /// fixture's L = 78 positions (1UBQ's 76 residues with BOS and EOS): per block the attention's LayerNorm, qkv,
    /// q·k (≤ d), out_proj (4d) and its softmax and A·V (2L), the feed-forward's LayerNorm and input (2d) and
    /// output (its SwiGLU width, 256·⌈(8d/3)/256⌉; the encoder's ratio 4 gives the same 256 at d 64, and its
    /// geometric sub-layer over 16 neighbours reduces less than the plain attention counted here); then the heads:
    /// the pairwise head's down-projection, hidden layers and bins (≤ 4d + 64) and pAE's and pTM's 64-bin and L-term
    /// sums. The standard first-order model of a layered computation: each reduction of n terms rounds ≤ n·u relative
    /// to its terms' magnitude, and the layers pass errors on with unit gain.
    let reductions (d: int64) =
        let l = 78.0
        let hidden = float (Esm3Structure.Nn.FeedForward.swigluHidden (8.0 / 3.0) d)
        let block = 6.0 * float d + 2.0 * l + hidden
        2.0 * block + 4.0 * float d + 64.0 + 64.0 + l

    /// Both sides (ESM's and ours, summed in different orders) within the reduction count's rounding, relative to
    /// max(1 (post-LayerNorm activations), the output's largest value); u the dtype's unit roundoff.
    let tolerance (d: int64) (u: float) (scale: float) = 2.0 * reductions d * u * max 1.0 scale

    /// Unit roundoffs of float32 and float64.
    let u32, u64 = Tol.unitRoundoff torch.float32, Tol.unitRoundoff torch.float64

    /// Compares `tokens` [1, L] with ESM's (`prefix` "" for float32, "64." for float64) where ESM's nearest two codes
    /// are further apart than rounding can move them: z may differ from ESM's by `tolerance 64 u max|z|`, and then
    /// ‖z − e‖² by at most 2 · Σ_c |z_c − e_c| · tol_z ≤ 2 · 16 · 2 (max|z| + max|e|) · tol_z. Returns (residues clear of
    /// a tie, those among them whose token differs).
    let esmTokenMismatches
        (io: Map<string, torch.Tensor>)
        (prefix: string)
        (u: float)
        (encoder: StructureEncoder)
        (tokens: torch.Tensor)
        =
        let scale = io.[prefix + "enc.z"].abs().max().ToDouble()
        let tolZ = tolerance 64L u scale

        let bound =
            2.0
            * 16.0
            * 2.0
            * (scale + encoder.Codebook.Codes.abs().max().ToDouble())
            * tolZ

        let clear = io.[prefix + "enc.gap"].gt(bound.ToScalar())
        let differ = tokens.ne(io.[prefix + "enc.tokens"]).logical_and clear
        int (clear.sum().ToInt64()), int (differ.sum().ToInt64())

    /// ESM's tokens of the chain between BOS and EOS. [1, L + 2]
    let wrapped (io: Map<string, torch.Tensor>) =
        let special (id: int64) =
            torch.full ([| 1L; 1L |], id.ToScalar(), dtype = torch.int64)

        torch.cat (
            [|
                special StructureTokens.Bos
                io.["enc.tokens"]
                special StructureTokens.Eos
            |],
            1L
        )
