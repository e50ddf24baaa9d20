module Esm3Structure.Tests.Models.GenerationTests

open System
open Expecto
open FsCheck
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Tests

/// ESM's own decoding helpers on seeded inputs (`Reference/generation/generate.py`), in the caller's dispose scope.
let private fixture () =
    (Safetensors.read (IO.Path.Combine(AppContext.BaseDirectory, "Reference", "generation", "decoding.safetensors")))
        .Tensors
    |> Map.ofList

/// Same shape, dtype and every element equal.
let private same (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.dtype = b.dtype && a.eq(b).all().ToBoolean()

let private rows (t: torch.Tensor) =
    let n, k = int t.shape.[0], int t.shape.[1]
    Array.init n (fun i -> Array.init k (fun j -> t.[int64 i, int64 j]))

/// ESM's whole decodes (`iterative.safetensors`) on the small seeded ESM3 of `Reference/esm3`.
let private esm3Dir = IO.Path.Combine(AppContext.BaseDirectory, "Reference", "esm3")

/// The prompt `name` of the fixture as our input (tracks ESM left out: absent).
let private promptOf (io: Map<string, torch.Tensor>) (name: string) =
    let l = io.[name + ".in.sequence"].shape.[0]
    let absent = MultiTrackInput.absent 1L l torch.CPU

    let given (track: string) (fallback: torch.Tensor) =
        match io.TryFind(name + ".in." + track) with
        | Some t -> t.unsqueeze 0L
        | None -> fallback

    { absent with
        Sequence = given "sequence" absent.Sequence
        Structure = given "structure" absent.Structure
        Ss8 = given "secondary_structure" absent.Ss8
        Sasa = given "sasa" absent.Sasa
        Function = given "function" absent.Function
        ResidueAnnotations = given "residue_annotations" absent.ResidueAnnotations
        Coordinates = given "coordinates" absent.Coordinates
    }

[<Tests>]
let tests =
    testList
        "Models/Generation"
        [
            test
                "unmaskCount: ESM's count at every step of every decode of 1–40 positions in 1–20 steps (cosine, linear)" {
                use _ = torch.NewDisposeScope()
                let io = fixture ()

                for schedule, name in
                    [
                        UnmaskSchedule.Cosine, "schedule.cosine"
                        UnmaskSchedule.Linear, "schedule.linear"
                    ] do
                    let table = rows io.[name] |> Array.map (Array.map (fun v -> int (v.ToInt64())))
                    Expect.isGreaterThan table.Length 5000 "every (total, steps, step)"
                    let mutable still = 0

                    for r in table do
                        let total, steps, step, esm = r.[0], r.[1], r.[2], r.[3]

                        if step = 0 then
                            still <- total

                        let ours = Generation.unmaskCount schedule still total step steps

                        if ours <> esm then
                            failtestf
                                "%s: total %d, %d steps, step %d (%d still masked): ours %d, ESM %d"
                                name
                                total
                                steps
                                step
                                still
                                ours
                                esm

                        still <- still - esm
            }

            test "annealedTemperature: ESM's values" {
                use _ = torch.NewDisposeScope()

                for r in rows (fixture ()).["annealed"] do
                    let step, steps, t0, esm =
                        int (r.[0].ToDouble()), int (r.[1].ToDouble()), r.[2].ToDouble(), r.[3].ToDouble()

                    Expect.equal
                        (Generation.annealedTemperature step steps t0)
                        esm
                        (sprintf "step %d of %d from %g" step steps t0)
            }

            test "topP: ESM's filtered logits, bit for bit (p of 0, 0.5, 0.999, 1 and random)" {
                use _ = torch.NewDisposeScope()
                let io = fixture ()
                let ours = Generation.topP io.["top_p.logits"] io.["top_p.p"]
                Expect.isTrue (same ours io.["top_p.out"]) "every logit"
            }

            test "lowestEntropy with unmaskCount: the positions ESM's entropy strategy unmasks (a tie included)" {
                use _ = torch.NewDisposeScope()
                let io = fixture ()
                let candidates = io.["entropy.mask"]
                let total = int (candidates.sum().ToInt64())
                let count = Generation.unmaskCount UnmaskSchedule.Cosine total total 2 8
                let ours = Generation.lowestEntropy io.["entropy.entropy"] candidates count
                Expect.isTrue (same ours io.["entropy.where"]) "the same positions"
                Expect.equal (int (ours.sum().ToInt64())) count "count positions"
            }

            test "sample at temperature 0: ESM's argmax among the valid ids" {
                use _ = torch.NewDisposeScope()
                let io = fixture ()
                let valid = io.["argmax.valid"].data<int64>().ToArray()
                use g = new torch.Generator(1UL)
                let ours = Generation.sample io.["argmax.logits"] 0.0 valid 1.0 g
                Expect.isTrue (same ours io.["argmax.out"]) "the same ids"
            }

            Props.property
                "unmaskCount: a decode of T positions in S ≤ T steps unmasks each step ≥ 0 positions, all T in the end"
            <| fun (total: PositiveInt, steps: PositiveInt, linear: bool) ->
                let total = 1 + total.Get % 3000
                let steps = 1 + (steps.Get - 1) % total

                let schedule =
                    if linear then
                        UnmaskSchedule.Linear
                    else
                        UnmaskSchedule.Cosine

                let mutable still = total

                for step in 0 .. steps - 1 do
                    let n = Generation.unmaskCount schedule still total step steps
                    Expect.isGreaterThanOrEqual n 0 (sprintf "step %d of %d, total %d" step steps total)
                    still <- still - n

                Expect.equal still 0 "nothing masked after the last step"

            Props.property "sample: never an invalid id; with p → 0 or temperature 0 the best valid id"
            <| fun (seed: uint64) ->
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(seed)
                let logits = torch.randn ([| 3L; 7L; 20L |], generator = g) * 2.0
                let valid = [| 1L; 4L; 5L; 9L; 13L; 19L |]
                let drawn = Generation.sample logits 1.3 valid 0.9 g
                let ids = drawn.reshape(-1L).data<int64>().ToArray()
                Expect.all ids (fun i -> Array.contains i valid) "valid ids only"
                let best = Generation.sample logits 0.0 valid 1.0 g
                let masked = Generation.maskInvalid logits valid
                Expect.isTrue (same best (masked.argmax -1L)) "temperature 0: argmax of the valid logits"
                // p tiny: only the largest logit survives top-p, drawn whatever the temperature (when it is valid).
                let nucleus = Generation.sample logits 1.0 (Array.init 20 int64) 1e-9 g
                Expect.isTrue (same nucleus (logits.argmax -1L)) "p → 0: the argmax"

            test
                "generate: ESM's own iterative_sampling_tokens on the small ESM3 (entropy, argmax): the same tokens for sequence, structure, SS8 and inverse folding" {
                use _ = torch.NewDisposeScope()
                use model = MultiTrackCheckpoint.load (IO.Path.Combine(esm3Dir, "esm3-small.pth"))

                let io =
                    (Safetensors.read (
                        IO.Path.Combine(AppContext.BaseDirectory, "Reference", "generation", "iterative.safetensors")
                    ))
                        .Tensors
                    |> Map.ofList

                for name, track in
                    [
                        "sequence", GenerationTrack.Sequence
                        "structure", GenerationTrack.Structure
                        "ss8", GenerationTrack.Ss8
                        "inverse", GenerationTrack.Sequence
                    ] do
                    let prompt = promptOf io name

                    let config =
                        { GenerationConfig.esm3 track with
                            Steps = int (io.[name + ".steps"].[0L].ToInt64())
                            Strategy = UnmaskStrategy.Entropy
                            Temperature = 0.0
                            TemperatureAnnealing = false
                        }

                    use g = new torch.Generator(0UL)
                    let out = IterativeDecoding.generate model prompt config g

                    let ours =
                        match track with
                        | GenerationTrack.Sequence -> out.Sequence
                        | GenerationTrack.Structure -> out.Structure
                        | GenerationTrack.Ss8 -> out.Ss8
                        | GenerationTrack.Sasa -> out.Sasa

                    let esm = io.[name + ".out"].unsqueeze 0L
                    Expect.equal (ours.data<int64>().ToArray()) (esm.data<int64>().ToArray()) (name + ": ESM's tokens")

                    Expect.isTrue
                        (same out.Sequence prompt.Sequence || track = GenerationTrack.Sequence)
                        (name + ": the sequence as given")
            }

            test
                "generate: no MASK left, given positions and other tracks kept, the same draws from the same seed (random strategy, annealed temperature)" {
                use _ = torch.NewDisposeScope()
                use model = MultiTrackCheckpoint.load (IO.Path.Combine(esm3Dir, "esm3-small.pth"))
                let l = 22L
                let prompt = MultiTrackInput.absent 1L l torch.CPU
                let sequence = prompt.Sequence.clone ()
                sequence.[0L, 0L] <- torch.tensor 0L
                sequence.[0L, l - 1L] <- torch.tensor 2L
                sequence.[0L, 5L] <- torch.tensor 9L
                let prompt = { prompt with Sequence = sequence }

                let config =
                    { GenerationConfig.esm3 GenerationTrack.Sequence with
                        Steps = 7
                        TopP = 0.9
                    }

                let run () =
                    use g = new torch.Generator(42UL)
                    IterativeDecoding.generate model prompt config g

                let a, b = run (), run ()
                Expect.isTrue (same a.Sequence b.Sequence) "deterministic under a seed"
                let ids = a.Sequence.data<int64>().ToArray()
                let _, valid = IterativeDecoding.trackIds GenerationTrack.Sequence [||]
                Expect.equal ids.[0] 0L "BOS kept"
                Expect.equal ids.[int l - 1] 2L "EOS kept"
                Expect.equal ids.[5] 9L "a given residue kept"

                Expect.all
                    ids.[1 .. int l - 2]
                    (fun i -> Array.contains i valid)
                    "every masked position filled with a residue id"

                Expect.isTrue (same a.Structure prompt.Structure) "other tracks as given"

                let filled = { prompt with Sequence = a.Sequence }

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        IterativeDecoding.generate model filled config (new torch.Generator(1UL))
                        |> ignore)
                    "nothing masked: refused"
            }
        ]
