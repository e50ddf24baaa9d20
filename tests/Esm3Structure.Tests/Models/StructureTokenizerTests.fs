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

/// Small encoder and decoder files with random weights (what the script tests also use).
module TokenizerFixtures =

    /// d 24, 4 vector heads, 2 blocks, 64 × 8 codes, 10 position bins; ESM's k = 16 (a file cannot say k, so a
    /// loaded encoder has ESM's).
    let smallEncoderConfig =
        { StructureEncoderConfig.Esm3 with
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
        Init.reset g m

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
        Init.reset g m
        Checkpoint.save path m null

    /// A fresh temporary folder.
    let tempDir () =
        let d = Path.Combine(Path.GetTempPath(), "esm3-tok-" + Guid.NewGuid().ToString("N"))
        Directory.CreateDirectory d |> ignore
        d

let private sample =
    {
        File = "data/ünïcode \"quoted\".pdb"
        Chain = "A"
        Sequence = "MKTX"
        ResidueIndex = [| -3; 1; 2; 100 |]
        Tokens = [| 0L; 4095L; StructureTokens.Mask; 17L |]
        MissingBackbone = [| 2 |]
    }

/// Parses `json` and expects an `InputException` at `field`.
let private expectField (what: string) (field: string) (json: string) =
    try
        TokensJson.ofJson "t.json" json |> ignore
        failtestf "%s: accepted" what
    with :? InputException as e ->
        Expect.equal e.Error.File "t.json" (what + ": names the file")
        Expect.equal e.Error.Location (InputLocation.Field field) (what + ": names the field: " + e.Message)

/// Runs `f` and returns the exception of type 'E it raises (fails the test otherwise).
let private raises<'E when 'E :> exn> (what: string) (f: unit -> unit) : 'E =
    try
        f ()
        failtestf "%s: no exception" what
    with :? 'E as e ->
        e

let private replace (field: string) (value: string) =
    let good = TokensJson.toJson [| sample |]
    let doc = Text.Json.Nodes.JsonNode.Parse good
    doc.[field] <- Text.Json.Nodes.JsonNode.Parse value
    doc.ToJsonString()

let private remove (field: string) =
    let doc = Text.Json.Nodes.JsonNode.Parse(TokensJson.toJson [| sample |]).AsObject()

    doc.Remove field |> ignore
    doc.ToJsonString()

[<Tests>]
let tests =
    testList
        "Models/StructureTokenizer"
        [
            test "JSON round trip: one object, an array of several, an empty chain" {
                let empty =
                    {
                        File = "e.cif"
                        Chain = ""
                        Sequence = ""
                        ResidueIndex = [||]
                        Tokens = [||]
                        MissingBackbone = [||]
                    }

                let one = TokensJson.toJson [| sample |]
                Expect.isTrue (one.TrimStart().StartsWith "{") "one chain: an object"
                Expect.equal (TokensJson.ofJson "x" one) [| sample |] "one"
                let many = [| sample; empty; { sample with Sequence = "" } |]
                let text = TokensJson.toJson many
                Expect.isTrue (text.TrimStart().StartsWith "[") "several: an array"
                Expect.equal (TokensJson.ofJson "x" text) many "several"
            }

            test "JSON without sequence and missing_backbone: the MASK positions are the missing backbone" {
                let json =
                    remove "sequence" |> fun j -> (Text.Json.Nodes.JsonNode.Parse j).AsObject()

                json.Remove "missing_backbone" |> ignore
                let read = TokensJson.ofJson "x" (json.ToJsonString())
                Expect.equal read.[0].Sequence "" "no sequence"
                Expect.equal read.[0].MissingBackbone [| 2 |] "from MASK"
            }

            test "bad JSON names the file and the field" {
                expectField "missing tokens" "structure_tokens" (remove "structure_tokens")
                expectField "missing residue_index" "residue_index" (remove "residue_index")
                expectField "missing chain" "chain" (remove "chain")
                expectField "token 5000" "structure_tokens[1]" (replace "structure_tokens" "[1, 5000, 4096, 3]")
                expectField "negative token" "structure_tokens[0]" (replace "structure_tokens" "[-1, 2, 4096, 3]")
                expectField "BOS inside" "structure_tokens[3]" (replace "structure_tokens" "[1, 2, 4096, 4098]")
                expectField "fractional token" "structure_tokens[0]" (replace "structure_tokens" "[1.5, 2, 4096, 3]")
                expectField "string token" "structure_tokens[3]" (replace "structure_tokens" "[1, 2, 4096, \"3\"]")
                expectField "sequence too short" "sequence" (replace "sequence" "\"MKT\"")
                expectField "sequence with digits" "sequence" (replace "sequence" "\"MK1X\"")
                expectField "residue_index too long" "residue_index" (replace "residue_index" "[1, 2, 3, 4, 5]")
                expectField "tokens too short" "residue_index" (replace "structure_tokens" "[1, 2, 4096]")
                expectField "missing_backbone disagrees" "missing_backbone" (replace "missing_backbone" "[1]")
                expectField "missing_backbone out of range" "missing_backbone[0]" (replace "missing_backbone" "[9]")
                expectField "file not a string" "file" (replace "file" "3")
                expectField "array element" "[1].chain" ("[" + remove "sequence" + "," + remove "chain" + "]")

                for text in [ "{\"file\": "; "not json"; "" ] do
                    try
                        TokensJson.ofJson "t.json" text |> ignore
                        failtestf "accepted %A" text
                    with :? InputException as e ->
                        Expect.equal e.Error.File "t.json" "names the file"
                        Expect.stringContains e.Message "not JSON" "says so"

                try
                    TokensJson.ofJson "t.json" "[1]" |> ignore
                    failtest "accepted [1]"
                with :? InputException as e ->
                    Expect.equal e.Error.Location (InputLocation.Field "[0]") "names the element"
            }

            test "encoder load infers the config of a saved small encoder and gives the same tokens" {
                use _ = torch.NewDisposeScope()
                let dir = TokenizerFixtures.tempDir ()

                try
                    let path = Path.Combine(dir, "enc.safetensors")
                    TokenizerFixtures.writeEncoder path 5UL
                    use loaded = StructureEncoder.load path
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
                finally
                    Directory.Delete(dir, true)
            }

            test "encoder load names a mis-shaped tensor, and a decoder file is not an encoder" {
                use _ = torch.NewDisposeScope()
                let dir = TokenizerFixtures.tempDir ()

                try
                    use m = TokenizerFixtures.smallEncoder 2UL

                    let tensors =
                        Checkpoint.stateDict m
                        |> List.map (fun (n, t) ->
                            if n = "pre_vq_proj.weight" then
                                n, torch.zeros (8L, 25L)
                            else
                                n, t)

                    let bad = Path.Combine(dir, "bad.safetensors")
                    Safetensors.write bad tensors null

                    let e =
                        raises<InputException> "mis-shaped" (fun () -> StructureEncoder.load bad |> ignore)

                    Expect.stringContains e.Message "pre_vq_proj.weight" "names the tensor"
                    Expect.equal e.Error.File bad "names the file"

                    let ratio =
                        Checkpoint.stateDict m
                        |> List.map (fun (n, t) ->
                            if n = "transformer.blocks.0.geom_attn.distance_scale_per_head" then
                                n, torch.zeros (4L, 2L)
                            else
                                n, t)

                    Safetensors.write bad ratio null

                    let e =
                        raises<InputException> "2-D scale" (fun () -> StructureEncoder.load bad |> ignore)

                    Expect.equal
                        e.Error.Location
                        (InputLocation.Field "transformer.blocks.0.geom_attn.distance_scale_per_head")
                        "names the tensor the inference reads"

                    let dec = Path.Combine(dir, "dec.safetensors")
                    TokenizerFixtures.writeDecoder dec 1UL

                    let e =
                        raises<InputException> "decoder" (fun () -> StructureEncoder.load dec |> ignore)

                    Expect.stringContains e.Message "not a structure encoder" "says what is wrong"
                finally
                    Directory.Delete(dir, true)
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
                Init.reset g decoder
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

            test "the default weights: the shipped files under the root; missing, one clear error; a given path is kept" {
                let e =
                    raises<ArgumentException> "no model" (fun () ->
                        ModelFiles.resolveWeights "/nonexistent-root" ModelFiles.DefaultEncoderPath ""
                        |> ignore)

                Expect.stringContains
                    e.Message
                    "the shipped model models/structure-tokenizer/encoder.safetensors is missing"
                    "says so"

                Expect.stringContains e.Message "--weights" "says what to do"

                Expect.equal
                    (ModelFiles.resolveWeights "/r" ModelFiles.DefaultDecoderPath "my.safetensors")
                    "my.safetensors"
                    "given"
            }

            test "the scripts' loaders: device first, then the weights (given or shipped), loaded on the device" {
                let dir = TokenizerFixtures.tempDir ()

                try
                    let enc = Path.Combine(dir, "e.safetensors")
                    let dec = Path.Combine(dir, "d.safetensors")
                    TokenizerFixtures.writeEncoder enc 3UL
                    TokenizerFixtures.writeDecoder dec 4UL
                    // The repository root is found above the script folder (tests run inside the checkout).
                    let scriptDir = AppContext.BaseDirectory
                    use e = ModelFiles.loadEncoderFor scriptDir enc "cpu"
                    Expect.equal e.Config.DModel TokenizerFixtures.smallEncoderConfig.DModel "the given encoder"
                    Expect.equal (e.parameters () |> Seq.head).device_type DeviceType.CPU "on the device"
                    use d = ModelFiles.loadDecoderFor scriptDir dec 0 "CPU"
                    Expect.isGreaterThan (d.parameters () |> Seq.length) 0 "the given decoder"

                    let bad =
                        raises<exn> "bad device" (fun () ->
                            ModelFiles.loadEncoderFor scriptDir "/nonexistent.safetensors" "tpu" |> ignore)

                    Expect.stringContains bad.Message "unknown device 'tpu'" "the device is checked before the file"

                    let missing =
                        raises<exn> "missing file" (fun () ->
                            ModelFiles.loadEncoderFor scriptDir "/nonexistent.safetensors" "cpu" |> ignore)

                    Expect.stringContains missing.Message "/nonexistent.safetensors" "names the file"

                    let root = Cli.repositoryRoot scriptDir

                    Expect.isTrue (File.Exists(Path.Combine(root, ModelFiles.DefaultDecoderPath))) "shipped"
                    // no weights given: the shipped decoder (d 128, 4 heads of 32)
                    use shipped = ModelFiles.loadDecoderFor scriptDir null 0 "cpu"
                    Expect.equal shipped.Config.DModel 128L "the shipped decoder's width"
                    Expect.equal shipped.Config.Heads 4L "its head count, from the metadata"

                    Expect.stringContains
                        (ModelFiles.weightsUsage "encoder" ModelFiles.DefaultEncoderPath)
                        ModelFiles.DefaultEncoderPath
                        "usage names the default"
                finally
                    Directory.Delete(dir, true)
            }
        ]
