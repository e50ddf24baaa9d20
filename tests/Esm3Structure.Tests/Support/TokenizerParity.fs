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

    /// Both sides run 2 blocks of width d, summed in different orders: rounding ~ d · blocks · 2 · u relative to the
    /// largest value, u the dtype's unit roundoff (the bound the ESM3 parity test uses).
    let tolerance (d: int64) (u: float) (scale: float) = float d * 2.0 * 2.0 * u * max 1.0 scale

    /// Unit roundoffs of float32 and float64.
    let u32, u64 = 6e-8, 1.1e-16

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
