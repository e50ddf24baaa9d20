namespace Esm3Structure.Tests

open System
open System.IO
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn

/// Small encoder and decoder files with random weights (what the script tests also use).
module TokenizerFixtures =

    /// d 24, 4 vector heads, 2 blocks, 64 × 8 codes, 10 position bins; ESM's k = 16 (a file cannot say k, so a
    /// loaded encoder has ESM's).
    let smallEncoderConfig =
        { StructureEncoderConfig.esm3 with
            DModel = 24L
            VHeads = 4L
            DOut = 8L
            PositionBins = 10L
            Quantizer =
                { QuantizerConfig.esm3 with
                    Codes = 64L
                    Dim = 8L
                }
        }

    /// A small encoder with random weights (codes spread by N(0, 1), geometric scales random).
    let smallEncoder (seed: uint64) =
        let g = new torch.Generator(seed)
        let m = new StructureEncoder(smallEncoderConfig, g)
        Init.initialise g m

        do
            use _ = torch.no_grad ()

            for struct (name, p) in m.named_parameters () do
                if name.EndsWith "_per_head" then
                    p.copy_ (torch.randn (p.shape, generator = g)) |> ignore

        m.eval ()
        m

    /// Writes a small random encoder to `path`.
    let writeEncoder (path: string) (seed: uint64) =
        use m = smallEncoder seed
        Checkpoint.save path m null

    /// Writes a small random decoder (`StructureDecoderConfig.small`) to `path`.
    let writeDecoder (path: string) (seed: uint64) =
        let g = new torch.Generator(seed)
        use m = new StructureDecoder(StructureDecoderConfig.small)
        Init.initialise g m
        Checkpoint.save path m null
