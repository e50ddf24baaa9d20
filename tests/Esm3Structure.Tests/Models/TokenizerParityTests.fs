module Esm3Structure.Tests.Models.TokenizerParityTests

open System
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Tests
open Esm3Structure.Tests.TokenizerParity
open Esm3Structure.Tokenizers

let private decoders =
    [
        "decoder-d64-h1", None, 64L
        "decoder-d64-h4", Some 4L, 64L
        "decoder-d96-h4", Some 4L, 96L
    ]

[<Tests>]
let tests =
    testList
        "Models/TokenizerParity"
        [
            test
                "ESM's encoder (.pth, d 64, 2 blocks) on 1UBQ: ESM's pre-quantization vectors and tokens (float32, float64)" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                let io = readIo ()
                use encoder = StructureEncoderCheckpoint.load (file "encoder.pth")

                let check (prefix: string) (dtype: torch.ScalarType) (u: float) =
                    let out =
                        encoder.Encode(io.["in.backbone"].to_type dtype, io.["in.residue_index"], null, null)

                    let esmZ = io.[prefix + "enc.z"]
                    let scale = esmZ.abs().max().ToDouble()
                    let tolZ = tolerance 64L u scale

                    printfn
                        "encoder %s: max |z − ESM| %.3g (max |z| %.3g)"
                        (string dtype)
                        (Tol.maxAbsDiff out.Z esmZ)
                        scale

                    Tol.close ("z " + string dtype) tolZ out.Z esmZ
                    let clear, wrong = esmTokenMismatches io prefix u encoder out.Tokens
                    Expect.isGreaterThan clear 50 "tokens clear of a tie (beyond the derived bound): two thirds of 76"
                    Expect.equal wrong 0 "ESM's token wherever the nearest two codes are clearly apart"

                check "" torch.float32 u32
                encoder.``to`` torch.float64 |> ignore
                check "64." torch.float64 u64
            }

            test
                "ESM's decoders (.pth) at 64-, 16- and 24-wide heads, loaded with --heads: ESM's backbone, pLDDT, pTM and pAE (float32, float64)" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                let io = readIo ()
                let tokens = wrapped io

                for name, heads, d in decoders do
                    use decoder = StructureDecoderCheckpoint.loadWith heads (file (name + ".pth"))
                    Expect.equal decoder.Config.Heads (defaultArg heads 1L) (name + ": heads")

                    let check (prefix: string) (dtype: torch.ScalarType) (u: float) =
                        let out = decoder.forward tokens

                        for what, ours in [ "bb", out.Backbone; "plddt", out.Plddt; "ptm", out.Ptm; "pae", out.Pae ] do
                            let esm = io.[prefix + name + "." + what]
                            Expect.equal ours.dtype dtype (name + " " + what + ": dtype")
                            let scale = esm.abs().max().ToDouble()

                            printfn
                                "%s %s %s: max |ours − ESM| %.3g (max |ESM| %.3g)"
                                name
                                (string dtype)
                                what
                                (Tol.maxAbsDiff ours esm)
                                scale

                            Tol.close (name + " " + what + " " + string dtype) (tolerance d u scale) ours esm

                    check "" torch.float32 u32
                    decoder.``to`` torch.float64 |> ignore
                    check "64." torch.float64 u64
            }

            test
                "ESM's 16-wide decoder read as 64-wide decodes wrong; the 24-wide one without --heads is refused naming --heads" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                let io = readIo ()
                let tokens = wrapped io

                use wrong = StructureDecoderCheckpoint.load (file "decoder-d64-h4.pth")
                let off = Tol.maxAbsDiff (wrong.forward tokens).Backbone io.["decoder-d64-h4.bb"]
                Expect.isGreaterThan off 1.0 "64-wide heads on a 16-wide decoder: more than 1 Å off ESM"

                try
                    StructureDecoderCheckpoint.load (file "decoder-d96-h4.pth") |> ignore
                    failtest "a d 96 decoder without head metadata loaded with no --heads"
                with :? InputException as e ->
                    Expect.stringContains e.Message "--heads" "the error names --heads"
                    Expect.stringContains e.Message "decoder-d96-h4.pth" "and the file"
            }
        ]
