module Esm3Structure.Tests.Models.StructureTokenizerTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

[<Tests>]
let tests =
    testList
        "Models/StructureTokenizer"
        [
            test "encoder load infers the config of a saved small encoder and gives the same tokens" {
                use _ = torch.NewDisposeScope()
                use scratch = new TempDir()
                let dir = scratch.Path

                let path = Path.Combine(dir, "enc.safetensors")
                TokenizerFixtures.writeEncoder path 5UL
                use loaded = StructureEncoderCheckpoint.load path
                let c, e = loaded.Config, TokenizerFixtures.smallEncoderConfig
                Expect.equal c.DModel e.DModel "d"
                Expect.equal c.VHeads e.VHeads "vector heads"
                Expect.equal c.Layers e.Layers "layers"
                Expect.equal c.DOut e.DOut "DOut"
                Expect.equal c.Quantizer.Codes e.Quantizer.Codes "codes"
                Expect.equal c.PositionBins e.PositionBins "bins"

                Expect.equal
                    { c with
                        ExpansionRatio = e.ExpansionRatio
                    }
                    e
                    "the rest: ESM's defaults"

                Expect.equal
                    (FeedForward.swigluHidden c.ExpansionRatio c.DModel)
                    (FeedForward.swigluHidden e.ExpansionRatio e.DModel)
                    "SwiGLU width"

                use original = TokenizerFixtures.smallEncoder 5UL
                let chain = StructureFile.read (Data.small "1ubq_A") None
                let a = StructureTokenizer.tokenize original chain
                let b = StructureTokenizer.tokenize loaded chain
                Expect.equal b.Tokens a.Tokens "same tokens"
                Expect.equal a.Tokens.Length (ProteinChain.length chain) "one token per residue"
                Expect.isEmpty a.MissingBackbone "1ubq_A has every backbone atom"
                Expect.isTrue (a.Tokens |> Array.forall (fun t -> t >= 0L && t < 64L)) "codes of the codebook"
                Expect.equal a.Sequence chain.Sequence "sequence"
                Expect.equal a.ResidueIndex chain.ResidueIndex "numbering"
            }

            test "encoder load names a mis-shaped tensor, and a decoder file is not an encoder" {
                use _ = torch.NewDisposeScope()
                use scratch = new TempDir()
                let dir = scratch.Path

                use m = TokenizerFixtures.smallEncoder 2UL

                // The encoder's state dict with one tensor replaced.
                let replaced (name: string) (value: torch.Tensor) =
                    Checkpoint.stateDict m
                    |> List.map (fun (n, t) -> if n = name then n, value else n, t)

                let tensors = replaced "pre_vq_proj.weight" (torch.zeros (8L, 25L))

                let bad = Path.Combine(dir, "bad.safetensors")
                Safetensors.write bad tensors null

                let e =
                    raises<InputException> "mis-shaped" (fun () -> StructureEncoderCheckpoint.load bad |> ignore)

                Expect.stringContains e.Message "pre_vq_proj.weight" "names the tensor"
                Expect.equal e.Error.File bad "names the file"

                let ratio =
                    replaced "transformer.blocks.0.geom_attn.distance_scale_per_head" (torch.zeros (4L, 2L))

                Safetensors.write bad ratio null

                let e =
                    raises<InputException> "2-D scale" (fun () -> StructureEncoderCheckpoint.load bad |> ignore)

                Expect.equal
                    e.Error.Location
                    (InputLocation.Field "transformer.blocks.0.geom_attn.distance_scale_per_head")
                    "names the tensor the inference reads"

                let dec = Path.Combine(dir, "dec.safetensors")
                TokenizerFixtures.writeDecoder dec 1UL

                let e =
                    raises<InputException> "decoder" (fun () -> StructureEncoderCheckpoint.load dec |> ignore)

                Expect.stringContains e.Message "not a structure encoder" "says what is wrong"
            }

            test "a residue without backbone gets MASK, is listed, and decoding refuses it" {
                use _ = torch.NewDisposeScope()
                use encoder = TokenizerFixtures.smallEncoder 3UL
                let chain = StructureFile.read (Data.small "1ubq_A") None
                let atoms = chain.Atom37.Clone() :?> float32[,,]

                for c in 0..2 do
                    atoms.[10, ResidueConstants.caIndex, c] <- nanf

                let broken =
                    ProteinChain.ofAtom37 chain.Name chain.ChainId chain.Sequence chain.ResidueIndex atoms

                let t = StructureTokenizer.tokenize encoder broken
                Expect.equal t.MissingBackbone [| 10 |] "listed"
                Expect.equal t.Tokens.[10] StructureTokens.Mask "MASK"
                Expect.equal (t.Tokens |> Array.filter ((=) StructureTokens.Mask)).Length 1 "only there"
                let back = TokensJson.ofJson "x" (TokensJson.toJson [| t |])
                Expect.equal back [| t |] "round trip"
                use decoder = new StructureDecoder(StructureDecoderConfig.small)

                let e =
                    raises<InputException> "MASK" (fun () -> StructureTokenizer.decode decoder t |> ignore)

                Expect.equal e.Error.Location (InputLocation.Field "structure_tokens[10]") "names the position"
            }

            test "decode writes a PDB with the PTM remark, the numbering and B-factors 100 · pLDDT" {
                use _ = torch.NewDisposeScope()
                use encoder = TokenizerFixtures.smallEncoder 4UL
                let chain = StructureFile.read (Data.small "1ubq_A") None
                let t = StructureTokenizer.tokenize encoder chain
                let g = new torch.Generator(9UL)
                use decoder = new StructureDecoder(StructureDecoderConfig.small)
                Init.initialise g decoder
                decoder.eval ()

                let d =
                    StructureTokenizer.decode
                        decoder
                        { t with
                            ResidueIndex = Array.map ((+) 10) t.ResidueIndex
                        }

                let text = StructureTokenizer.toPdb d
                let first = text.Split('\n').[0]
                Expect.isMatch first @"^REMARK 250 PTM: \d\.\d{4}$" "PTM remark, four decimals"

                Expect.floatClose
                    Accuracy.high
                    (Double.Parse(first.Substring 16, Globalization.CultureInfo.InvariantCulture))
                    (Math.Round(d.Ptm, 4))
                    "the pTM"

                let back = Pdb.parse "decoded" text None
                Expect.equal (ProteinChain.length back) (ProteinChain.length chain) "residue count"
                Expect.equal back.Sequence chain.Sequence "sequence"
                Expect.equal back.ResidueIndex (chain.ResidueIndex |> Array.map ((+) 10)) "numbering"

                for i in 0 .. ProteinChain.length back - 1 do
                    Expect.floatClose
                        { absolute = 0.006; relative = 0.0 }
                        (float back.BFactors.[i, ResidueConstants.caIndex])
                        (100.0 * float d.Plddt.[i])
                        "B-factor = 100 · pLDDT"
            }
        ]
