module Esm3Structure.Tests.Training.MaskedLmTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.Training
open Esm3Structure.Tests

let private chain = lazy (StructureFile.read (Data.small "1ubq_A") None)

/// Two crops of 1ubq with labels on every track (random, inside each vocabulary's label range).
let private cleanBatch (seed: uint64) =
    use g = new torch.Generator(seed)
    let n (c: ProteinChain) = ProteinChain.length c

    let random (count: int) (lo: int64) (hi: int64) =
        torch.randint(lo, hi, [| int64 count |], generator = g).data<int64>().ToArray()

    let providers =
        {
            StructureTokens = Func<_, _>(fun c -> random (n c) 0L 4096L)
            Ss8 = Func<_, _>(fun c -> random (n c) 3L 11L)
            Sasa = Func<_, _>(fun c -> random (n c) 3L 19L)
            Function = Func<_, _>(fun c -> random (n c * 8) 3L 260L)
            ResidueAnnotations = Func<_, _>(fun c -> random (n c * 16) 0L 1478L)
            Plddt = Func<_, _>(fun c -> Array.create (n c) 0.9f)
        }

    let e = MultiTrackData.ofChain providers chain.Value
    MultiTrackData.batch [| MultiTrackData.crop 0 30 e; MultiTrackData.crop 30 23 e |]

let private masksOf (m: TrackMasks) =
    [
        "sequence", m.Sequence
        "structure", m.Structure
        "coordinates", m.Coordinates
        "ss8", m.Ss8
        "sasa", m.Sasa
        "function", m.Function
        "residue", m.ResidueAnnotations
    ]

let private eq (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.eq(b).all().ToBoolean()

/// Random logits for every head. Shapes: [B, L, …]
let private randomOutput (g: torch.Generator) (b: int64) (l: int64) =
    let r (shape: int64[]) = torch.randn (shape, generator = g)

    {
        SequenceLogits = r [| b; l; 64L |]
        StructureLogits = r [| b; l; 4096L |]
        Ss8Logits = r [| b; l; 11L |]
        SasaLogits = r [| b; l; 19L |]
        FunctionLogits = r [| b; l; 8L; 260L |]
        ResidueLogits = r [| b; l; 1478L |]
        Embeddings = r [| b; l; 4L |]
        PostNorm = r [| b; l; 4L |]
    }

[<Tests>]
let tests =
    testList
        "Training/MaskedLm"
        [
            test "masking replaces exactly the hidden positions by each track's mask id; the rest passes unchanged" {
                use _ = torch.NewDisposeScope()
                let b = cleanBatch 1UL
                use g = new torch.Generator(3UL)
                let m = MaskedLm.mask (MaskingConfig.fixedRate 0.5) g b.Tracks b.Residues
                let x, t = m.Inputs, m.Targets

                for name, mask in masksOf m.Masked do
                    Expect.isFalse
                        (mask.logical_and(b.Residues.logical_not ()).any().ToBoolean())
                        (name + ": only residues")

                    let share =
                        mask.to_type(torch.float64).sum().ToDouble()
                        / b.Residues.to_type(torch.float64).sum().ToDouble()

                    Expect.isTrue (share > 0.25 && share < 0.9) (sprintf "%s: about half hidden (%.2f)" name share)

                let keep (mask: torch.Tensor) (input: torch.Tensor) (target: torch.Tensor) (id: int64) name =
                    let mask =
                        if input.dim () > 2L then
                            mask.unsqueeze(-1L).expand_as input
                        else
                            mask

                    Expect.isTrue
                        (eq (input.masked_select (mask.logical_not ())) (target.masked_select (mask.logical_not ())))
                        (name + ": unmasked unchanged")

                    Expect.isTrue (input.masked_select(mask).eq(id.ToScalar()).all().ToBoolean()) (name + ": mask id")

                keep m.Masked.Sequence x.Sequence t.Sequence SequenceTokenizer.Mask "sequence"
                keep m.Masked.Structure x.Structure t.Structure StructureTokens.Mask "structure"
                keep m.Masked.Ss8 x.Ss8 t.Ss8 0L "ss8"
                keep m.Masked.Sasa x.Sasa t.Sasa 0L "sasa"
                keep m.Masked.Function x.Function t.Function 0L "function"
                keep m.Masked.ResidueAnnotations x.ResidueAnnotations t.ResidueAnnotations 0L "residue"

                let hidden =
                    m.Masked.Coordinates.unsqueeze(-1L).unsqueeze(-1L).expand_as x.Coordinates

                Expect.isTrue (x.Coordinates.masked_select(hidden).isnan().all().ToBoolean()) "coordinates: NaN"
                let shown = hidden.logical_not ()

                Expect.isTrue
                    (eq (x.Coordinates.masked_select shown) (t.Coordinates.masked_select shown))
                    "coordinates: unchanged (σ = 0)"

                Expect.isTrue
                    (x.PerResiduePlddt.masked_select(m.Masked.Coordinates).eq(0.0.ToScalar()).all().ToBoolean())
                    "pLDDT 0 where hidden"

                Expect.isTrue (eq x.AveragePlddt t.AveragePlddt) "average pLDDT unchanged"
                Expect.isTrue (eq x.SequenceId t.SequenceId) "sequence id unchanged"

                Expect.isFalse
                    (m.Masked.Structure.logical_and(m.Masked.Coordinates.logical_not ()).any().ToBoolean())
                    "coordinates nested in structure"

                for (name, lm), (_, hm) in List.zip (masksOf m.LossMasks) (masksOf m.Masked) do
                    Expect.isFalse
                        (lm.logical_and(hm.logical_not ()).any().ToBoolean())
                        (name + ": loss only where hidden")
            }

            test "Table S6: dropout hides whole tracks, schedules set the rate, coordinate noise has σ" {
                use _ = torch.NewDisposeScope()
                let b = cleanBatch 2UL

                let none =
                    {
                        Schedule = NoiseSchedule.Fixed 0.0
                        Dropout = 0.0
                    }

                let all =
                    {
                        Schedule = NoiseSchedule.Fixed 0.0
                        Dropout = 1.0
                    }

                let config =
                    { MaskingConfig.fixedRate 0.0 with
                        Sequence = all
                        Structure = none
                        Coordinates = none
                        Ss8 = all
                        CoordinateNoise = 0.1
                        NestCoordinates = false
                    }

                use g = new torch.Generator(4UL)
                let m = MaskedLm.mask config g b.Tracks b.Residues
                Expect.isTrue (eq m.Masked.Sequence b.Residues) "dropped track: every residue hidden"
                Expect.isTrue (eq m.Masked.Ss8 b.Residues) "dropped SS8"
                Expect.isFalse (m.Masked.Structure.any().ToBoolean()) "rate 0: nothing hidden"
                let real = b.Tracks.Coordinates.isfinite ()
                let d = (m.Inputs.Coordinates - b.Tracks.Coordinates).masked_select real
                Expect.floatClose { absolute = 0.015; relative = 0.0 } (d.std().ToDouble()) 0.1 "σ = 0.1 Å"
                let inf = real.logical_not ()

                Expect.isTrue
                    (eq (m.Inputs.Coordinates.masked_select inf) (b.Tracks.Coordinates.masked_select inf))
                    "BOS/EOS rows stay +∞"
                // A span: one contiguous run of hidden coordinates per example.
                let spans =
                    { config with
                        Coordinates =
                            {
                                Schedule = NoiseSchedule.Fixed 0.4
                                Dropout = 0.0
                            }
                        CoordinateSpanFraction = 1.0
                    }

                let s = MaskedLm.drawMasks spans g b.Residues

                for row in 0L .. 1L do
                    let hidden = s.Coordinates.[row].data<bool>().ToArray()

                    let starts =
                        [
                            for i in 1 .. hidden.Length - 1 do
                                if hidden.[i] && not hidden.[i - 1] then
                                    i
                        ]

                    let n = b.Residues.[row].sum().ToInt64()
                    Expect.equal starts.Length 1 "one run"

                    Expect.equal
                        (hidden |> Array.filter id |> Array.length)
                        (int (Math.Round(0.4 * float n)))
                        "run length r·n"
            }

            test "only hidden positions with a label contribute to the loss; changing any other target changes nothing" {
                use _ = torch.NewDisposeScope()
                let b = cleanBatch 5UL
                use g = new torch.Generator(6UL)
                let m = MaskedLm.mask (MaskingConfig.fixedRate 0.4) g b.Tracks b.Residues
                let bt, l = b.Tracks.Sequence.shape.[0], b.Tracks.Sequence.shape.[1]
                let out = randomOutput g bt l
                let total, terms = MaskedLm.losses TrackWeights.Unit out m

                for name, t in terms do
                    Expect.isTrue (Double.IsFinite(t.ToDouble()) && t.ToDouble() > 0.0) (name + " loss")

                let scramble (lossMask: torch.Tensor) (t: torch.Tensor) (hi: int64) =
                    let mask =
                        if t.dim () > 2L then
                            lossMask.unsqueeze(-1L).expand_as t
                        else
                            lossMask

                    torch.where (mask, t, torch.randint (hi, t.shape, generator = g))

                let lm = m.LossMasks
                let t = m.Targets

                let perturbed =
                    { m with
                        Targets =
                            { t with
                                Sequence = scramble lm.Sequence t.Sequence 64L
                                Structure = scramble lm.Structure t.Structure 4101L
                                Ss8 = scramble lm.Ss8 t.Ss8 11L
                                Sasa = scramble lm.Sasa t.Sasa 19L
                                Function = scramble lm.Function t.Function 260L
                                ResidueAnnotations = scramble lm.ResidueAnnotations t.ResidueAnnotations 1478L
                            }
                    }

                // Logits elsewhere may be anything, even non-finite.
                let wild (mask: torch.Tensor) (x: torch.Tensor) =
                    let mask =
                        if x.dim () = 4L then
                            mask.unsqueeze(-1L).unsqueeze(-1L)
                        else
                            mask.unsqueeze -1L

                    torch.where (mask, x, torch.full_like (x, Double.NaN.ToScalar()))

                let wildOut =
                    { out with
                        SequenceLogits = wild lm.Sequence out.SequenceLogits
                        StructureLogits = wild lm.Structure out.StructureLogits
                        Ss8Logits = wild lm.Ss8 out.Ss8Logits
                        SasaLogits = wild lm.Sasa out.SasaLogits
                        FunctionLogits = wild lm.Function out.FunctionLogits
                        ResidueLogits = wild lm.ResidueAnnotations out.ResidueLogits
                    }

                let total2, terms2 = MaskedLm.losses TrackWeights.Unit wildOut perturbed
                Expect.equal (total2.ToDouble()) (total.ToDouble()) "same total"

                for (name, a), (_, c) in Array.zip terms terms2 do
                    Expect.equal (c.ToDouble()) (a.ToDouble()) name

                // Changing a counted target does change the loss.
                let i = lm.Sequence.nonzero().[0L]
                let changed = t.Sequence.clone ()
                let b0, p0 = i.[0L].ToInt64(), i.[1L].ToInt64()
                changed.[b0, p0] <- torch.tensor ((t.Sequence.[b0, p0].ToInt64() - 4L + 1L) % 25L + 4L)

                let _, terms3 =
                    MaskedLm.losses
                        TrackWeights.Unit
                        out
                        { m with
                            Targets = { t with Sequence = changed }
                        }

                Expect.notEqual ((snd terms3.[0]).ToDouble()) ((snd terms.[0]).ToDouble()) "a counted target matters"
            }

            test "cross-entropy and BCE match hand computations; perplexity and accuracy behave at the extremes" {
                use _ = torch.NewDisposeScope()

                let logits =
                    torch.tensor([| 1.0; 2.0; 0.5; -1.0; 0.0; 3.0 |], dtype = torch.float64).reshape(2L, 3L)

                let targets = torch.tensor [| 2L; 0L |]
                let mask = torch.tensor [| true; false |]
                let expected = -(0.5 - Math.Log(Math.Exp 1.0 + Math.Exp 2.0 + Math.Exp 0.5))

                Expect.floatClose
                    Accuracy.veryHigh
                    ((MaskedLm.maskedCrossEntropy logits targets mask).ToDouble())
                    expected
                    "CE"

                let rl = torch.full ([| 1L; 1478L |], 0.3.ToScalar(), dtype = torch.float64)
                rl.[0L, 7L] <- torch.tensor (1.5, dtype = torch.float64)
                let ids = torch.zeros ([| 1L; 16L |], dtype = torch.int64)
                ids.[0L, 3L] <- torch.tensor 7L
                let sp (x: float) = Math.Log(1.0 + Math.Exp x)
                let got = (MaskedLm.maskedBce rl ids (torch.tensor [| true |])).ToDouble()
                // 1477 labels at logit 0.3 with target 0, label 7 at logit 1.5 with target 1
                let exact = ((sp 0.3) * 1477.0 + (sp 1.5 - 1.5)) / 1478.0
                Expect.floatClose Accuracy.veryHigh got exact "BCE"
                // uniform logits: perplexity = vocabulary; perfect logits: accuracy 1
                let b = cleanBatch 7UL
                use g = new torch.Generator(8UL)
                let m = MaskedLm.mask (MaskingConfig.fixedRate 0.5) g b.Tracks b.Residues
                let bt, l = b.Tracks.Sequence.shape.[0], b.Tracks.Sequence.shape.[1]
                let zero = randomOutput g bt l

                let zero =
                    { zero with
                        SequenceLogits = torch.zeros_like zero.SequenceLogits
                        Ss8Logits = torch.zeros_like zero.Ss8Logits
                    }

                let metrics = dict (MaskedLm.metrics (MaskedLm.statistics zero m))
                Expect.floatClose Accuracy.medium metrics.["sequence_perplexity"] 64.0 "uniform: 64"
                Expect.floatClose Accuracy.medium metrics.["ss8_perplexity"] 11.0 "uniform: 11"

                let perfect =
                    torch.nn.functional
                        .one_hot(m.Targets.Structure.clamp (0L.ToScalar(), 4095L.ToScalar()), 4096L)
                        .to_type(torch.float32)
                    * 50.0

                let metrics2 =
                    dict (MaskedLm.metrics (MaskedLm.statistics { zero with StructureLogits = perfect } m))

                Expect.equal metrics2.["structure_accuracy"] 1.0 "perfect: accuracy 1"
                Expect.floatClose Accuracy.medium metrics2.["structure_perplexity"] 1.0 "perfect: perplexity 1"

                Expect.isTrue
                    (metrics2.ContainsKey "residue_bce" && metrics2.ContainsKey "function_accuracy")
                    "all tracks"
            }
        ]
