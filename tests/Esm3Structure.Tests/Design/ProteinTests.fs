module Esm3Structure.Tests.Design.ProteinTests

open System
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Design
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Training
open Esm3Structure.Tests

let private chain = lazy (StructureFile.read (Data.small "1ubq_A") None)

/// Every track of 1UBQ filled: DSSP, SASA, structure tokens of a small random encoder, a pLDDT ramp, a pTM, one
/// function annotation.
let private full =
    lazy
        (use encoder = TokenizerFixtures.smallEncoder 5UL
         let p = Protein.ofChainWithTracks chain.Value
         let l = Protein.length p

         { p with
             StructureTokens = (StructureTokenizer.tokenize encoder chain.Value).Tokens
             Plddt = Array.init l (fun i -> float32 i / float32 l)
             Ptm = Nullable 0.6125
             FunctionAnnotations =
                 [|
                     {
                         Label = "ubiquitin"
                         Start = 2
                         End = 70
                     }
                 |]
         })

/// Coordinates equal element by element, NaN where the other is NaN.
let private sameCoordinates (a: float32[,,]) (b: float32[,,]) =
    Array3D.length1 a = Array3D.length1 b
    && Seq.forall
        (fun i ->
            Seq.forall
                (fun at ->
                    Seq.forall
                        (fun k ->
                            let x, y = a.[i, at, k], b.[i, at, k]
                            (Single.IsNaN x && Single.IsNaN y) || x = y)
                        [ 0..2 ])
                [ 0..36 ])
        [ 0 .. Array3D.length1 a - 1 ]

/// The largest |a − b| over atoms present in `a`, and whether the two have the same atoms.
let private maxCoordinateError (a: float32[,,]) (b: float32[,,]) =
    let mutable worst, sameAtoms = 0.0f, Array3D.length1 a = Array3D.length1 b

    if sameAtoms then
        for i in 0 .. Array3D.length1 a - 1 do
            for at in 0..36 do
                if Single.IsNaN a.[i, at, 0] <> Single.IsNaN b.[i, at, 0] then
                    sameAtoms <- false
                elif not (Single.IsNaN a.[i, at, 0]) then
                    for k in 0..2 do
                        worst <- max worst (abs (a.[i, at, k] - b.[i, at, k]))

    worst, sameAtoms

[<Tests>]
let tests =
    testList
        "Design/Protein"
        [
            test "JSON round trip of every track of a real chain is exact" {
                let p = full.Value
                let back = Protein.ofJson "mem.json" (Protein.toJson [| p |])
                Expect.equal back.Length 1 "one protein"
                let q = back.[0]
                Expect.equal q.Name p.Name "name"
                Expect.equal q.Sequence p.Sequence "sequence"
                Expect.equal q.SecondaryStructure p.SecondaryStructure "ss8"
                Expect.sequenceEqual q.StructureTokens p.StructureTokens "structure tokens"
                Expect.sequenceEqual q.Plddt p.Plddt "pLDDT (float32 shortest form)"
                Expect.equal q.Ptm p.Ptm "pTM"
                Expect.sequenceEqual q.FunctionAnnotations p.FunctionAnnotations "annotations"

                Expect.isTrue
                    (Array.forall2 (fun (x: float) y -> x = y || (Double.IsNaN x && Double.IsNaN y)) q.Sasa p.Sasa)
                    "SASA"

                Expect.isTrue (sameCoordinates q.Coordinates p.Coordinates) "coordinates, NaN where missing"
            }

            test "JSON: absent tracks are null and stay absent; a bad field is named with its entry" {
                let p = Protein.ofSequence "s" "MK_L"
                let json = Protein.toJson [| p |]
                Expect.stringContains json "\"coordinates\": null" "absent coordinates written as null"
                let q = (Protein.ofJson "mem.json" json).[0]
                Expect.isNull q.Coordinates "no coordinates"
                Expect.isNull q.Sasa "no SASA"
                Expect.isFalse q.Ptm.HasValue "no pTM"
                Expect.equal q.Sequence "MK_L" "mask kept"

                let bad = json.Replace("\"ss8\": null", "\"ss8\": \"HHH\"")

                Expect.throwsT<InputException> (fun () -> Protein.ofJson "bad.json" bad |> ignore) "length mismatch"
            }

            test "JSON errors name the file and field" {
                let message (json: string) =
                    try
                        Protein.ofJson "p.json" json |> ignore
                        ""
                    with :? InputException as e ->
                        e.Message

                Expect.stringContains (message "[{\"sasa\": [1, \"x\"]}]") "[0].sasa[1]" "names sasa[1]"
                Expect.stringContains (message "[{\"sequence\": \"MK\", \"ss8\": \"HHH\"}]") "[0]" "names the entry"
                Expect.stringContains (message "[{\"sequence\": \"MK\", \"ss8\": \"HHH\"}]") "ss8" "names the track"
                Expect.stringContains (message "{") "p.json" "names the file for bad JSON"
            }

            test "FASTA: written and read back through the corpus reader" {
                use scratch = new TempDir()
                let dir = scratch.Path
                let path = IO.Path.Combine(dir, "p.fasta")
                let long = String.replicate 3 chain.Value.Sequence // 228 letters: three lines of at most 80
                Protein.write path [| Protein.ofSequence "a" long; Protein.ofSequence "b" "MK__L" |]
                let back = Protein.readFasta path
                Expect.equal (back |> Array.map (fun p -> p.Name, p.Sequence)) [| "a", long; "b", "MK__L" |] "records"
                let lines = IO.File.ReadAllLines path
                Expect.isTrue (lines |> Array.forall (fun l -> l.Length <= 80)) "lines of at most 80"
                IO.File.WriteAllText(path, ">x\nMK1L\n")
                Expect.throwsT<InputException> (fun () -> Protein.readFasta path |> ignore) "a digit is refused"
                IO.Directory.Delete(dir, true)
            }

            test
                "PDB and mmCIF: coordinates to the file's 3 decimals, B = 100 pLDDT, pTM remark, read back by our readers" {
                let p = full.Value

                for text, parse in
                    [
                        Protein.toPdb [| p |], (fun t -> Pdb.parse "p" t None)
                        Protein.toMmcif [| p |], (fun t -> Mmcif.parse "p" t None)
                    ] do
                    let back: ProteinChain = parse text
                    let worst, sameAtoms = maxCoordinateError p.Coordinates back.Atom37
                    // 3 decimals: rounding moves a coordinate by at most 5e-4 Å (+ float32 representation).
                    Expect.isTrue sameAtoms "the same atoms"
                    Expect.isLessThanOrEqual worst 5.01e-4f "coordinates to 3 decimals"
                    Expect.equal back.Sequence p.Sequence "sequence"

                    for i in 0 .. back.Sequence.Length - 1 do
                        Expect.floatClose
                            { absolute = 0.005; relative = 0.0 }
                            (float back.BFactors.[i, 1])
                            (float (100.0f * p.Plddt.[i]))
                            "B = 100 pLDDT to 2 decimals"

                Expect.stringStarts (Protein.toPdb [| p |]) "REMARK 250 PTM: 0.6125\n" "pTM remark"
                Expect.isFalse ((Protein.toPdb [| { p with Ptm = Nullable() } |]).Contains "PTM") "no pTM, no remark"
            }

            test "several proteins: PDB MODELs and mmCIF model numbers; the readers take the first" {
                let p = full.Value
                let moved = Array3D.map (fun x -> x + 10.0f) p.Coordinates
                let two = [| p; { p with Coordinates = moved } |]
                let pdb = Protein.toPdb two
                Expect.equal (pdb.Split('\n') |> Array.filter (fun l -> l.StartsWith "MODEL")).Length 2 "two MODELs"
                Expect.equal (pdb.Split('\n') |> Array.filter (fun l -> l.StartsWith "ENDMDL")).Length 2 "two ENDMDLs"

                for back in [ Pdb.parse "p" pdb None; Mmcif.parse "p" (Protein.toMmcif two) None ] do
                    let worst, _ = maxCoordinateError p.Coordinates back.Atom37
                    Expect.isLessThanOrEqual worst 5.01e-4f "the first model"
            }

            test "toExample is what training sees: equal to MultiTrackData.ofChain with the computed providers" {
                use encoder = TokenizerFixtures.smallEncoder 5UL

                let ours =
                    Protein.toExample (Some encoder) None (Protein.ofChainWithTracks chain.Value)

                let training = MultiTrackData.ofChain (TrackProviders.computed encoder) chain.Value
                Expect.sequenceEqual ours.Sequence training.Sequence "sequence"
                Expect.sequenceEqual ours.Structure training.Structure "structure tokens"
                Expect.sequenceEqual ours.Ss8 training.Ss8 "SS8"
                Expect.sequenceEqual ours.Sasa training.Sasa "SASA"
                Expect.sequenceEqual ours.Function training.Function "function"
                Expect.sequenceEqual ours.ResidueAnnotations training.ResidueAnnotations "residue annotations"
                Expect.sequenceEqual ours.Plddt training.Plddt "pLDDT"

                Expect.isTrue
                    (Array.forall2
                        (fun (a: float32) b -> a = b || (Single.IsNaN a && Single.IsNaN b))
                        ours.Coordinates
                        training.Coordinates)
                    "coordinates"
            }

            test "tokens and back: sequence, SS8, structure tokens exact; SASA as its bins' midpoints; masks stay masks" {
                let p =
                    { full.Value with
                        Sequence = "__" + full.Value.Sequence.Substring 2
                        FunctionAnnotations = null
                    }

                use _ = torch.NewDisposeScope()
                let x = Protein.toInput None None p
                Expect.equal x.Sequence.shape [| 1L; int64 p.Sequence.Length + 2L |] "BOS/EOS added"
                let q = Protein.ofInput None false p x
                Expect.equal q.Sequence p.Sequence "sequence with masks"
                Expect.equal q.SecondaryStructure p.SecondaryStructure "SS8"
                Expect.sequenceEqual q.StructureTokens p.StructureTokens "structure tokens"
                let expected = SasaTokenizer.decode false (SasaTokenizer.encode false p.Sasa)
                Expect.sequenceEqual q.Sasa expected "SASA midpoints"
                Expect.isTrue (obj.ReferenceEquals(q.Coordinates, p.Coordinates)) "coordinates kept as given"
            }

            test
                "a structure decoded from tokens: the decoder's backbone, pLDDT and pTM only as the decoder's metadata allows" {
                use decoder = new StructureDecoder(StructureDecoderConfig.small)
                use g = new torch.Generator(3UL)
                Esm3Structure.Nn.Init.initialise g decoder
                decoder.eval ()

                let p =
                    { full.Value with
                        FunctionAnnotations = null
                    }

                use _ = torch.NewDisposeScope()
                let x = Protein.toInput None None p

                for trained, informative in [ true, true; true, false; false, false ] do
                    decoder.ConfidenceTrained <- trained
                    decoder.PtmInformative <- informative
                    let q = Protein.ofInput (Some decoder) true p x

                    let d =
                        StructureDecoder.decodeWithSequence
                            decoder
                            p.Sequence
                            (StructureTokens.wrap p.Name p.StructureTokens)

                    Expect.isTrue (sameCoordinates q.Coordinates d.Chain.Atom37) "the decoder's atoms"
                    Expect.equal (isNull q.Plddt) (not trained) "pLDDT only from trained heads"
                    Expect.equal q.Ptm.HasValue (trained && informative) "pTM only when informative"
            }

            test "lengths that disagree, or no track, are named" {
                let message (p: Protein) =
                    try
                        Protein.length p |> ignore
                        ""
                    with :? InputException as e ->
                        e.Message

                Expect.stringContains
                    (message
                        { Protein.ofSequence "x" "MKL" with
                            SecondaryStructure = "HH"
                        })
                    "ss8"
                    "names SS8"

                Expect.stringContains (message (Protein.empty "x")) "no track" "no track"

                Expect.throwsT<InputException>
                    (fun () -> Protein.toChain (Protein.ofSequence "x" "MK") |> ignore)
                    "no coordinates to write"

                Expect.throwsT<InputException>
                    (fun () ->
                        Protein.toExample
                            None
                            None
                            { Protein.ofSequence "x" "MKL" with
                                FunctionAnnotations = [| { Label = "kinase"; Start = 1; End = 2 } |]
                            }
                        |> ignore)
                    "annotations need a function tokenizer"
            }

            test "a designed sequence on a native backbone: only the atoms of each new residue type are written" {
                let p = Protein.ofChain chain.Value

                let designed =
                    { p with
                        Sequence = String('G', p.Sequence.Length)
                    }

                let written = Pdb.parse "d" (Protein.toPdb [| designed |]) None

                for i in 0 .. written.Sequence.Length - 1 do
                    for a in 0..36 do
                        let expected =
                            (a <= 2 || a = ResidueConstants.oIndex || a = ResidueConstants.oxtIndex)
                            && chain.Value.Atom37Mask.[i, a]

                        Expect.equal
                            written.Atom37Mask.[i, a]
                            expected
                            (sprintf "residue %d atom %s" i ResidueConstants.atomTypes.[a])
            }
        ]
