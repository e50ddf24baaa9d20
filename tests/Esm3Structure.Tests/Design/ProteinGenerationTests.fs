module Esm3Structure.Tests.Design.ProteinGenerationTests

open System
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Design
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

let private tinyConfig = MultiTrackFixtures.tiny

let private chain = lazy (StructureFile.read (Data.small "1ubq_A") None)

/// A designer over a seeded tiny model, a small random encoder and decoder (the caller disposes the modules).
let private designer () =
    use g = new torch.Generator(21UL)
    let model = new MultiTrackModel(tinyConfig, g)
    let encoder = TokenizerFixtures.smallEncoder 5UL
    let decoder = new StructureDecoder(StructureDecoderConfig.small)
    Esm3Structure.Nn.Init.initialise g decoder
    decoder.ConfidenceTrained <- false

    {
        Model = model
        Encoder = Some encoder
        Decoder = Some decoder
        FunctionTokenizer = None
    },
    (fun () ->
        model.Dispose()
        encoder.Dispose()
        decoder.Dispose())

let private sampled (config: GenerationConfig) =
    { config with
        Temperature = 1.0
        Steps = 4
    }

let private message (f: unit -> unit) =
    try
        f ()
        ""
    with :? ArgumentException as e ->
        e.Message

[<Tests>]
let tests =
    testList
        "Design/ProteinGeneration"
        [
            test "generate: only the masked positions change, every track but the generated one as given" {
                let d, dispose = designer ()

                try
                    let native = Protein.ofChainWithTracks chain.Value
                    let s = native.Sequence

                    let prompt =
                        { native with
                            Sequence = s.Substring(0, 10) + String('_', 30) + s.Substring 40
                        }

                    let config = sampled (GenerationConfig.esm3 GenerationTrack.Sequence)
                    let out = (ProteinGeneration.generate d config 0 null [| prompt |]).[0]
                    Expect.equal out.Sequence.Length s.Length "length"
                    Expect.equal (out.Sequence.Substring(0, 10)) (s.Substring(0, 10)) "prefix kept"
                    Expect.equal (out.Sequence.Substring 40) (s.Substring 40) "suffix kept"
                    Expect.isFalse (out.Sequence.Contains '_') "every mask filled"

                    Expect.isTrue
                        (out.Sequence.Substring(10, 30)
                         |> Seq.forall (fun c -> GenerationPrompt.SequenceLetters.Contains c || c = '-' || c = '.'))
                        "residue letters (or ESM's gap letters, which its vocabulary can draw)"

                    Expect.equal out.SecondaryStructure native.SecondaryStructure "SS8 as given"
                    Expect.isTrue (obj.ReferenceEquals(out.Coordinates, native.Coordinates)) "coordinates as given"
                finally
                    dispose ()
            }

            test "generate: deterministic under a seed, and a sample does not depend on the other prompts of its batch" {
                let d, dispose = designer ()

                try
                    let a = Protein.ofSequence "a" (String('_', 30))
                    let b = Protein.ofSequence "b" ("MKV" + String('_', 20))
                    let config = sampled (GenerationConfig.esm3 GenerationTrack.Sequence)

                    let run seed prompts =
                        ProteinGeneration.generate d config seed null prompts
                        |> Array.map (fun p -> p.Sequence)

                    let first = run 7 [| a; b |]
                    Expect.equal (run 7 [| a; b |]) first "same seed, same samples"
                    Expect.equal (run 7 [| b; b |]).[1] first.[1] "sample 1 does not depend on prompt 0"
                    Expect.notEqual (run 8 [| a; b |]) first "another seed, other samples"
                    let many = run 7 [| a; a; a |]
                    Expect.isTrue (many |> Array.distinct |> Array.length > 1) "samples of one prompt differ"
                finally
                    dispose ()
            }

            test "generate structure: tokens decoded to coordinates; progress reaches every step of every prompt" {
                let d, dispose = designer ()

                try
                    let prompt = Protein.ofSequence "s" chain.Value.Sequence
                    let config = sampled (GenerationConfig.esm3 GenerationTrack.Structure)
                    let calls = Collections.Generic.List<int * int * int>()

                    let out =
                        ProteinGeneration.generate
                            d
                            config
                            1
                            (Action<_, _, _>(fun i k n -> calls.Add((i, k, n))))
                            [| prompt; prompt |]

                    for p in out do
                        Expect.isTrue (p.StructureTokens |> Array.forall StructureTokens.isCode) "codes only"
                        Expect.isNotNull p.Coordinates "decoded"
                        Expect.equal (Array3D.length1 p.Coordinates) prompt.Sequence.Length "one residue per token"
                        Expect.isNull p.Plddt "the decoder's confidence heads are untrained: no pLDDT"

                    Expect.equal
                        (List.ofSeq calls)
                        [
                            for i in 0..1 do
                                for k in 1..4 -> i, k, 4
                        ]
                        "progress"
                finally
                    dispose ()
            }

            test
                "maskedPositions counts the track's masks; checkSteps refuses --steps beyond them and a prompt with none" {
                let d, dispose = designer ()

                try
                    let p = Protein.ofSequence "p" "MK___L"
                    Expect.equal (ProteinGeneration.maskedPositions d GenerationTrack.Sequence p) 3 "three masks"
                    Expect.equal (ProteinGeneration.maskedPositions d GenerationTrack.Ss8 p) 6 "absent SS8: all masked"

                    Expect.equal
                        (ProteinGeneration.maskedPositions d GenerationTrack.Structure p)
                        6
                        "no coordinates: all masked"

                    let withChain = Protein.ofChain chain.Value

                    Expect.equal
                        (ProteinGeneration.maskedPositions d GenerationTrack.Structure withChain)
                        0
                        "coordinates tokenized"

                    Expect.stringStarts
                        (message (fun () -> GenerationPrompt.checkSteps GenerationTrack.Sequence 4 3))
                        "--steps 4"
                        "names --steps"

                    Expect.stringStarts
                        (message (fun () -> GenerationPrompt.checkSteps GenerationTrack.Sequence 1 0))
                        "--sequence"
                        "names --sequence"

                    GenerationPrompt.checkSteps GenerationTrack.Sequence 3 3
                finally
                    dispose ()
            }

            test "GenerationPrompt: each bad input is one line naming its flag" {
                let pdb = Some(Protein.ofChain chain.Value)

                let build track seq ss8 =
                    GenerationPrompt.build track pdb "1ubq_A.pdb" seq ss8 |> ignore

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.parseTrack "function" |> ignore))
                    "--track"
                    "unknown track"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkSettings 20 1.0 1.5 1))
                    "--top-p"
                    "top-p above 1"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkSettings 20 1.0 0.0 1))
                    "--top-p"
                    "top-p 0"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkSettings 20 -0.5 1.0 1))
                    "--temperature"
                    "negative temperature"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkSettings 0 1.0 1.0 1))
                    "--steps"
                    "no steps"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkSettings 20 1.0 1.0 0))
                    "--num"
                    "no samples"

                Expect.equal
                    (message (fun () -> GenerationPrompt.checkSettings 20 0.0 1.0 1))
                    ""
                    "temperature 0 is argmax, allowed"

                Expect.stringStarts
                    (message (fun () -> build GenerationTrack.Sequence "MK1" ""))
                    "--sequence"
                    "a digit in the sequence"

                Expect.stringStarts (message (fun () -> build GenerationTrack.Ss8 "" "HHQ")) "--ss8" "Q is no SS8 class"

                Expect.stringStarts
                    (message (fun () -> build GenerationTrack.Sequence "MKV" ""))
                    "--sequence has 3"
                    "lengths across flags"

                Expect.stringContains
                    (message (fun () -> GenerationPrompt.build GenerationTrack.Sequence None "" "" "" |> ignore))
                    "--pdb"
                    "no prompt at all"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkOutput "x.pdb" GenerationTrack.Sequence false))
                    "--out"
                    "no structure to write"

                Expect.stringStarts
                    (message (fun () -> GenerationPrompt.checkOutput "x.txt" GenerationTrack.Sequence true))
                    "--out"
                    "unknown format"

                GenerationPrompt.checkOutput "x.pdb" GenerationTrack.Structure false
            }

            test "GenerationPrompt.build: the generated track is masked unless given; structure hides the coordinates" {
                let native = Protein.ofChain chain.Value
                let l = native.Sequence.Length
                let pdb = Some native
                let inverse = GenerationPrompt.build GenerationTrack.Sequence pdb "f" "" ""
                Expect.equal inverse.Sequence (String('_', l)) "inverse folding: sequence all masked"
                Expect.isNotNull inverse.Coordinates "coordinates kept"
                let partial = "M" + String('_', l - 1)

                Expect.equal
                    (GenerationPrompt.build GenerationTrack.Sequence pdb "f" partial "").Sequence
                    partial
                    "given sequence kept"

                let folding = GenerationPrompt.build GenerationTrack.Structure pdb "f" "" ""
                Expect.isNull folding.Coordinates "structure: coordinates left out"
                Expect.equal folding.Sequence native.Sequence "structure: sequence kept"

                Expect.equal
                    (GenerationPrompt.build GenerationTrack.Ss8 None "" "MKV" "").SecondaryStructure
                    "___"
                    "SS8 masked"
            }

            test "GenerationEvaluation on two real chains: figures in range, tasks left out NaN, baselines by hand" {
                let d, dispose = designer ()

                try
                    let chains = [| chain.Value; StructureFile.read (Data.small "1lcd_A") None |]

                    let config =
                        { GenerationConfig.esm3 GenerationTrack.Sequence with
                            Steps = 3
                        }

                    let all =
                        GenerationEvaluation.run
                            d
                            config
                            [| GenerationTrack.Sequence; GenerationTrack.Ss8; GenerationTrack.Structure |]
                            0
                            null
                            chains

                    for x in [ all.Recovery; all.Ss8Accuracy; all.MedianTmScore ] do
                        Expect.isTrue (x >= 0.0 && x <= 1.0) "a fraction"

                    Expect.isTrue (all.MedianRmsd > 0.0 && Double.IsFinite all.MedianRmsd) "an RMSD"
                    let one = GenerationEvaluation.run d config [| GenerationTrack.Ss8 |] 0 null chains
                    Expect.isTrue (Double.IsNaN one.Recovery && Double.IsNaN one.MedianRmsd) "left out"
                    Expect.equal one.Ss8Accuracy all.Ss8Accuracy "a task does not depend on the others"

                    let b =
                        GenerationEvaluation.baselines
                            d.Encoder.Value
                            d.Decoder.Value
                            [| GenerationTrack.Sequence; GenerationTrack.Structure |]
                            chains

                    Expect.isTrue
                        (b.ShuffledTokensMedianRmsd > 0.0 && Double.IsFinite b.TrueTokensMedianRmsd)
                        "structure baselines with the structure task"

                    let sequenceOnly =
                        GenerationEvaluation.baselines
                            d.Encoder.Value
                            d.Decoder.Value
                            [| GenerationTrack.Sequence |]
                            chains

                    Expect.isTrue
                        (Double.IsNaN sequenceOnly.TrueTokensMedianRmsd
                         && Double.IsNaN sequenceOnly.ShuffledTokensMedianTmScore)
                        "no structure baselines without the structure task"

                    Expect.equal sequenceOnly.UnigramRecovery b.UnigramRecovery "the unigram baseline either way"
                    let letters = chains |> Array.collect (fun c -> c.Sequence.ToCharArray())
                    let count = letters |> Array.filter (fun c -> c = b.UnigramLetter) |> Array.length

                    Expect.floatClose
                        Accuracy.veryHigh
                        b.UnigramRecovery
                        (float count / float letters.Length)
                        "unigram by hand"

                    Expect.isTrue
                        (letters |> Array.countBy id |> Array.forall (fun (_, n) -> n <= count))
                        "the commonest letter"
                finally
                    dispose ()
            }
        ]
