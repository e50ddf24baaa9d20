module Esm3Structure.Tests.Tools.App.ChainTracksTests

open System
open System.Text.Json
open Expecto
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Training
open Esm3Structure.Tokenizers
open Esm3Structure.App

[<Tests>]
let tests =
    testList
        "App/ChainTracks"
        [
            test "every track of a real chain: lengths, BOS/EOS, values from DSSP, SASA and the encoder; JSON" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                let c = StructureFile.read (Data.small "1ubq_A") None
                let t = ChainTracks.ofChain enc c
                let l = ProteinChain.length c
                Expect.equal t.Ss8 (Dssp.ss8String c) "SS8 from DSSP"
                Expect.equal t.Sasa (Sasa.perResidue c) "SASA"
                Expect.equal t.Ss8Tokens.Length (l + 2) "SS8 tokens"
                // SS8 ids 3 … 10 are G H I T E B S C (ESM3-REFERENCE §8.3), BOS/EOS 0
                Expect.equal t.Ss8Tokens.[0] 0L "SS8 BOS"
                Expect.equal t.Ss8Tokens.[1] (int64 ("GHITEBSC".IndexOf t.Ss8.[0]) + 3L) "SS8 first residue"
                Expect.equal t.StructureTokens.[0] 4098L "structure BOS"
                Expect.equal t.StructureTokens.[l + 1] 4097L "structure EOS"

                Expect.equal t.StructureTokens.[1..l] (StructureTokenizer.tokenize enc c).Tokens "the encoder's tokens"

                Expect.equal t.SequenceTokens.[0] 0L "sequence <cls>"
                Expect.equal t.SequenceTokens.[l + 1] 2L "sequence <eos>"
                Expect.isTrue (t.SasaTokens.[1..l] |> Array.forall (fun id -> id >= 3L && id <= 18L)) "SASA bins"
                Expect.equal (Array2D.length1 t.FunctionTokens, Array2D.length2 t.FunctionTokens) (l + 2, 8) "function"
                Expect.isTrue (Seq.cast<int64> t.FunctionTokens |> Seq.forall ((=) 0L)) "no annotations: all <pad>"
                Expect.equal t.PerResiduePlddt (Array.create l 1.0) "experimental: pLDDT 1"
                use doc = JsonDocument.Parse(ChainTracks.toJson t)
                let root = doc.RootElement
                Expect.equal (root.GetProperty("ss8").GetString()) t.Ss8 "JSON ss8"

                Expect.equal
                    (root.GetProperty("tokens").GetProperty("sasa").EnumerateArray()
                     |> Seq.map (fun e -> e.GetInt64())
                     |> Array.ofSeq)
                    t.SasaTokens
                    "JSON SASA tokens"
            }

            test "the multi-track model's data: TrackProviders.computed gives ChainTracks' tracks without BOS/EOS" {
                use enc = TokenizerFixtures.smallEncoder 3UL
                let c = StructureFile.read (Data.small "1lcd_A") None
                let t = ChainTracks.ofChain enc c
                let p = TrackProviders.computed enc
                let body (ids: int64[]) = ids.[1 .. ids.Length - 2]
                Expect.equal (p.Ss8.Invoke c) (body t.Ss8Tokens) "SS8 ids"
                Expect.equal (p.Sasa.Invoke c) (body t.SasaTokens) "SASA ids"
                Expect.equal (p.StructureTokens.Invoke c) (body t.StructureTokens) "structure tokens"
                Expect.isTrue (p.Ss8.Invoke c |> Array.exists (fun id -> id >= 3L)) "SS8 present, not the absent id"
            }
        ]
