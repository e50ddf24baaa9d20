namespace Esm3Structure.Tests

open System
open TorchSharp

/// Tensors of every dtype and their raw bytes, for bitwise round-trip tests of the tensor files.
[<AutoOpen>]
module TensorFixtures =

    /// The raw bytes of a tensor's elements (bitwise comparison).
    let rawBytes (t: torch.Tensor) : byte[] =
        use c = t.contiguous ()
        c.bytes.ToArray()

    let allDtypes =
        [
            torch.ScalarType.Bool
            torch.ScalarType.Byte
            torch.ScalarType.Int8
            torch.ScalarType.Int16
            torch.ScalarType.Int32
            torch.ScalarType.Int64
            torch.ScalarType.Float16
            torch.ScalarType.BFloat16
            torch.ScalarType.Float32
            torch.ScalarType.Float64
            torch.ScalarType.ComplexFloat32
        ]

    /// Random values of a dtype over (most of) its range.
    let randomTensor (g: torch.Generator) (dt: torch.ScalarType) (shape: int64[]) : torch.Tensor =
        let ints lo hi =
            torch.randint(lo, hi, shape, dtype = Nullable torch.ScalarType.Int64, generator = g).``to``(dt)

        match dt with
        | torch.ScalarType.Bool -> ints 0L 2L
        | torch.ScalarType.Byte -> ints 0L 256L
        | torch.ScalarType.Int8 -> ints -128L 128L
        | torch.ScalarType.Int16 -> ints -32768L 32768L
        | torch.ScalarType.Int32 -> ints (int64 Int32.MinValue) (int64 Int32.MaxValue + 1L)
        | torch.ScalarType.Int64 -> torch.randint (-(1L <<< 62), 1L <<< 62, shape, dtype = Nullable dt, generator = g)
        | _ -> torch.randn (shape, dtype = dt, generator = g) * 100.0
