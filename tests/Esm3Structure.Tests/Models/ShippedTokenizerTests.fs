module Esm3Structure.Tests.Models.ShippedTokenizerTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Geometry
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tests

/// The repository root (holding Research.sln), above the test binary.
let private root = Cli.repositoryRoot AppContext.BaseDirectory

let private shipped (relative: string) = Path.Combine(root, relative)

let private encoder =
    lazy (StructureEncoderCheckpoint.load (shipped ModelFiles.DefaultEncoderPath))

let private decoder =
    lazy (StructureDecoderCheckpoint.load (shipped ModelFiles.DefaultDecoderPath))

let private chain name =
    StructureFile.read (Data.small name) None

[<Tests>]
let tests =
    testList
        "Models/ShippedTokenizer"
        [
            test "the shipped model: encoder and decoder ≤ 50 MB together, with config, training log and validation" {
                let dir = Path.GetDirectoryName(shipped ModelFiles.DefaultEncoderPath)

                let size =
                    [ ModelFiles.DefaultEncoderPath; ModelFiles.DefaultDecoderPath ]
                    |> List.sumBy (fun f -> FileInfo(shipped f).Length)

                Expect.isLessThanOrEqual size (50L * 1024L * 1024L) "≤ 50 MB"

                for f in [ "config.json"; "metrics.jsonl"; "train.log"; "validation.json" ] do
                    Expect.isTrue (File.Exists(Path.Combine(dir, f))) (sprintf "%s beside the model" f)

                use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "validation.json")))
                let v = doc.RootElement
                Expect.isGreaterThan (v.GetProperty("chains").GetInt32()) 0 "validation chains"

                Expect.equal
                    (v.GetProperty("codes").GetInt64())
                    encoder.Value.Config.Quantizer.Codes
                    "validation is of this model's codebook"

                // Its confidence heads were trained (train.fsx --model confidence); the validation found pLDDT
                // informative (r ≥ 0.5 per residue, the bar set for pLDDT) and pTM not, and the scripts must know it.
                Expect.isTrue decoder.Value.ConfidenceTrained "confidence heads flagged trained"
                Expect.isFalse decoder.Value.PtmInformative "pTM flagged uninformative"
                Expect.isTrue (v.GetProperty("confidence_heads_trained").GetBoolean()) "validation with trained heads"

                Expect.isGreaterThanOrEqual
                    (v.GetProperty("plddt_pearson").GetDouble())
                    0.5
                    "the recorded per-residue pLDDT correlation meets the bar"
            }

            test "tokens of real chains are identical after random rigid motions (float32)" {
                let m = encoder.Value

                for name in Data.smallNames.Value do
                    use _ = torch.NewDisposeScope()
                    let bb = (ProteinChain.backbone torch.float32 (chain name)).unsqueeze 0L
                    let tokens = m.Encode(bb, null, null, null).Tokens
                    let distinct = tokens.data<int64>().ToArray() |> Array.distinct |> Array.length
                    Expect.isGreaterThan distinct 5 (sprintf "%s: tokens are not trivially constant" name)
                    let g = new torch.Generator(StableHash.fnv1a64 name &&& 0xffffUL)

                    for motion in 1..4 do
                        let rigid = Frame.random [||] 50.0 torch.float32 torch.CPU g
                        let moved = m.Encode(Frame.apply rigid bb, null, null, null).Tokens
                        let differing = tokens.ne(moved).sum().ToInt64()
                        Expect.equal differing 0L (sprintf "%s, motion %d: tokens that changed" name motion)
            }

            test "round trips of real chains: finite coordinates, pLDDT and pTM in [0, 1], a faithful backbone" {
                let trips =
                    Data.smallNames.Value
                    |> Array.map (fun n -> RoundTrip.ofChain encoder.Value decoder.Value (chain n))

                for t in trips do
                    let name = t.Tokenized.File
                    let atoms = t.Decoded.Chain.Atom37
                    let mask = t.Decoded.Chain.Atom37Mask

                    for i in 0 .. Array3D.length1 atoms - 1 do
                        for a in 0..2 do
                            Expect.isTrue mask.[i, a] (sprintf "%s: residue %d backbone atom %d decoded" name i a)

                            for x in 0..2 do
                                Expect.isTrue
                                    (Single.IsFinite atoms.[i, a, x])
                                    (sprintf "%s: residue %d atom %d finite" name i a)

                    for p in t.Decoded.Plddt do
                        Expect.isTrue (p >= 0.0f && p <= 1.0f) (sprintf "%s: pLDDT %g in [0, 1]" name p)

                    Expect.isTrue (t.Decoded.Ptm >= 0.0 && t.Decoded.Ptm <= 1.0) (sprintf "%s: pTM in [0, 1]" name)

                // The trained pLDDT head carries information on these chains too: per residue it correlates with the
                // reconstruction's LDDT-CA (a deterministic figure; printed, and required well above chance).
                let summary = RoundTrip.summarize encoder.Value.Config.Quantizer.Codes trips

                printfn
                    "shipped tokenizer, small chains: per-residue pLDDT against LDDT-CA, r = %.3f"
                    summary.PlddtPearson

                Expect.isGreaterThan summary.PlddtPearson 0.3 "pLDDT tracks the reconstruction's local quality"

                // A trained tokenizer, not noise: the chain's own tokens decode to a better structure than the same
                // tokens in a shuffled order, on most chains.
                let rng = Random 5

                let better =
                    trips
                    |> Array.filter (fun t ->
                        let shuffled =
                            { t.Tokenized with
                                Tokens = t.Tokenized.Tokens |> Array.sortBy (fun _ -> rng.Next())
                            }

                        let d = StructureTokenizer.decode decoder.Value shuffled
                        use _ = torch.NewDisposeScope()

                        let reference =
                            ProteinChain.ca torch.float64 (chain (Path.GetFileNameWithoutExtension t.Tokenized.File))

                        let model = ProteinChain.ca torch.float64 d.Chain
                        let lddt = (Metrics.lddtCa model reference None).Protein.ToDouble()
                        t.LddtCa > lddt)

                Expect.isGreaterThanOrEqual better.Length (trips.Length - 1) "chains whose own tokens decode better"
            }
        ]
