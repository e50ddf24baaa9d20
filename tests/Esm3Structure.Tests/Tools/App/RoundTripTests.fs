module Esm3Structure.Tests.Tools.App.RoundTripTests

open System
open System.Text.Json
open Expecto
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.App

let private decoder (seed: uint64) =
    let g = new torch.Generator(seed)
    let m = new StructureDecoder(StructureDecoderConfig.small)
    Init.initialise g m
    m.eval ()
    m

/// The chain with residue `i`'s CA removed (no frame there).
let private withoutCa (i: int) (c: ProteinChain) =
    let atom37: float32[,,] = c.Atom37.Clone() :?> float32[,,]

    for x in 0..2 do
        atom37.[i, ResidueConstants.caIndex, x] <- nanf

    ProteinChain.ofAtom37 c.Name c.ChainId c.Sequence c.ResidueIndex atom37

[<Tests>]
let tests =
    testList
        "App/RoundTrip"
        [
            test "a round trip decodes exactly the residues with a backbone and measures them against the chain" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                use dec = decoder 4UL
                let c = StructureFile.read (Data.small "1ubq_A") None
                let holed = withoutCa 10 c
                let t = RoundTrip.ofChain enc dec holed
                let l = ProteinChain.length c
                Expect.equal t.Residues (l - 1) "one residue has no frame"
                Expect.equal t.Tokenized.MissingBackbone [| 10 |] "reported"
                Expect.equal (ProteinChain.length t.Decoded.Chain) (l - 1) "decoded residues"

                Expect.equal
                    t.Decoded.Chain.ResidueIndex
                    (Array.append c.ResidueIndex.[..9] c.ResidueIndex.[11..])
                    "numbering kept"

                // The figures are those of the metrics on the decoded residues.
                use _ = torch.NewDisposeScope()
                let keep = torch.tensor (Array.append [| 0L .. 9L |] [| 11L .. int64 l - 1L |])
                let reference = (ProteinChain.backbone torch.float64 c).index_select(0L, keep)
                let model = ProteinChain.backbone torch.float64 t.Decoded.Chain
                let mask = torch.ones ([| int64 (l - 1) |], dtype = torch.ScalarType.Bool)
                let rmsd = (Metrics.backboneRmsd model reference mask).ToDouble()
                Expect.floatClose Accuracy.veryHigh t.BackboneRmsd rmsd "RMSD"
                Expect.isGreaterThan t.BackboneRmsd 1.0 "random weights reconstruct nothing"
                Expect.isTrue (t.LddtCa >= 0.0 && t.LddtCa <= 1.0) "LDDT-CA in [0, 1]"

                Expect.equal
                    t.CaStepErrors
                    (Metrics.caStepErrors (model.select (1L, 1L)) (reference.select (1L, 1L)))
                    "CA step errors of the decoded residues"

                Expect.equal
                    t.TmScore
                    (Metrics.tmScore (model.select (1L, 1L)) (reference.select (1L, 1L)) (Some mask))
                    "TM-score of the decoded residues' CAs"
            }

            test "a reflected decoder's RMSD to the chain is the plain one's to the mirror, and the other way round" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                use dec = decoder 5UL
                let c = StructureFile.read (Data.small "1ubq_A") None
                let plain = RoundTrip.ofChain enc dec c
                dec.ReflectStructures()
                let reflected = RoundTrip.ofChain enc dec c
                // RMSD(M d, M c) = RMSD(d, c) for the reflection M: M R M is a proper rotation whenever R is.
                Expect.floatClose Accuracy.veryHigh reflected.MirrorRmsd plain.BackboneRmsd "mirror of the reflected"

                Expect.floatClose
                    Accuracy.veryHigh
                    reflected.BackboneRmsd
                    plain.MirrorRmsd
                    "reflected against the chain"

                Expect.floatClose Accuracy.veryHigh reflected.LddtCa plain.LddtCa "LDDT-CA cannot see the mirror"
                Expect.isFalse (plain.BackboneRmsd = plain.MirrorRmsd) "a chiral decoding"
                let summary = RoundTrip.summarize 4096L [| plain; reflected |]
                Expect.equal summary.CloserToMirror 1 "one of the two lies closer to the mirror"
            }

            test "CA step errors: a chain shrunk by 10 % is 0.38 Å short on every link; breaks and NaN CAs are skipped" {
                use _ = torch.NewDisposeScope()

                let line (spacing: float) =
                    torch
                        .tensor([| for i in 0..4 -> [| spacing * float i; 0.0; 0.0 |] |] |> Array.concat)
                        .reshape(5L, 3L)

                let errors = Metrics.caStepErrors (line (3.8 * 0.9)) (line 3.8)
                Expect.equal errors.Length 4 "four links"

                for e in errors do
                    Expect.floatClose Accuracy.high e -0.38 "0.9 × 3.8 − 3.8"

                // A reference whose residues 2 and 3 lie 9 Å apart (a break), and a model with a NaN CA at 0.
                let broken = line 3.8

                broken.narrow(0L, 3L, 2L).add_(torch.tensor ([| 5.2; 0.0; 0.0 |], dtype = torch.float64))
                |> ignore

                let model = line 3.8
                model.[0L, 0L] <- torch.tensor nan
                let kept = Metrics.caStepErrors model broken
                Expect.equal kept.Length 2 "links 1–2 and 3–4 only"
                Expect.floatClose Accuracy.high kept.[0] 0.0 "an exact link"
            }

            test "summary: medians, means and codebook usage by hand; JSON carries them" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                use dec = decoder 4UL

                let trips =
                    [| "1ubq_A"; "1a8o_A"; "2erl_A"; "1lcd_A" |]
                    |> Array.map (fun n -> RoundTrip.ofChain enc dec (StructureFile.read (Data.small n) None))

                let s = RoundTrip.summarize 64L trips
                let rmsd = trips |> Array.map (fun t -> t.BackboneRmsd) |> Array.sort
                Expect.floatClose Accuracy.veryHigh s.MedianBackboneRmsd (0.5 * (rmsd.[1] + rmsd.[2])) "even median"
                Expect.floatClose Accuracy.veryHigh s.MeanBackboneRmsd (Array.average rmsd) "mean"
                let used = trips |> Array.collect (fun t -> t.Tokenized.Tokens) |> Array.distinct
                Expect.equal s.Usage.LiveCodes (int64 used.Length) "live codes"
                Expect.equal s.Residues (trips |> Array.sumBy (fun t -> t.Residues)) "residues"
                let odd = RoundTrip.summarize 64L trips.[..2]
                let r3 = trips.[..2] |> Array.map (fun t -> t.BackboneRmsd) |> Array.sort
                Expect.equal odd.MedianBackboneRmsd r3.[1] "odd median"

                use doc = JsonDocument.Parse(RoundTrip.toJson true true 0 s trips)
                let root = doc.RootElement
                Expect.equal (root.GetProperty("chains").GetInt32()) 4 "chains"
                Expect.equal (root.GetProperty("per_chain").GetArrayLength()) 4 "per-chain rows"

                Expect.floatClose
                    Accuracy.veryHigh
                    (root.GetProperty("median_backbone_rmsd").GetDouble())
                    s.MedianBackboneRmsd
                    "median in JSON"

                let tms = trips |> Array.map (fun t -> t.TmScore)

                Expect.equal
                    s.PtmPearson
                    (Metrics.pearson (trips |> Array.map (fun t -> t.Decoded.Ptm)) tms)
                    "pTM against the decodings' TM-scores"

                Expect.equal s.MedianTmScore (Metrics.median tms) "median TM-score"

                Expect.floatClose
                    Accuracy.veryHigh
                    (root.GetProperty("ptm_tm_pearson").GetDouble())
                    s.PtmPearson
                    "pTM correlation in JSON"

                Expect.floatClose
                    Accuracy.veryHigh
                    (root.GetProperty("per_chain").[0].GetProperty("tm_score").GetDouble())
                    tms.[0]
                    "per-chain TM-score in JSON"

                use untrained = JsonDocument.Parse(RoundTrip.toJson false false 0 s trips)

                Expect.equal
                    (untrained.RootElement.GetProperty("ptm_tm_pearson").ValueKind)
                    JsonValueKind.Null
                    "no pTM correlation from untrained heads"
            }

            test "a chain without any backbone is a clear error" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                use dec = decoder 4UL
                let c = StructureFile.read (Data.small "1ubq_A") None

                let none =
                    [ 0 .. ProteinChain.length c - 1 ] |> List.fold (fun acc i -> withoutCa i acc) c

                Expect.throwsT<ArgumentException> (fun () -> RoundTrip.ofChain enc dec none |> ignore) "raises"
            }
        ]
