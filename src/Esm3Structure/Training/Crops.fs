namespace Esm3Structure.Training

open System

/// The one crop sampler of every trainer (stage 1, stage 2, confidence heads, multi-track model, causal LM): which
/// examples a step draws and where each is cut, as a pure function of (seed, step), so a resumed run draws the same
/// batches. Each trainer supplies its example type's length and crop.
module Crops =

    /// The random source of step `step` of a run seeded `seed` (independent of every earlier step).
    let stepRandom (seed: int) (step: int) =
        Random(int ((int64 seed * 1_000_003L + int64 step) % int64 Int32.MaxValue))

    /// The crops of step `step`: `batchSize` pairs (example index, first residue), the example drawn uniformly with
    /// replacement from examples of lengths `lengths`, the window of at most `cropLength` residues at random (0 when
    /// the example fits).
    let draws (seed: int) (step: int) (batchSize: int) (cropLength: int) (lengths: int[]) : (int * int)[] =
        let random = stepRandom seed step

        Array.init batchSize (fun _ ->
            let i = random.Next lengths.Length

            if lengths.[i] <= cropLength then
                i, 0
            else
                i, random.Next(lengths.[i] - cropLength + 1))

    /// The examples of step `step` (`draws`), each cut to its window: `crop start length example` cuts residues
    /// [start, start + length); an example that fits is used whole.
    let sample
        (lengthOf: 'E -> int)
        (crop: int -> int -> 'E -> 'E)
        (seed: int)
        (step: int)
        (batchSize: int)
        (cropLength: int)
        (examples: 'E[])
        : 'E[] =
        draws seed step batchSize cropLength (examples |> Array.map lengthOf)
        |> Array.map (fun (i, start) ->
            let e = examples.[i]

            if lengthOf e <= cropLength then
                e
            else
                crop start cropLength e)

    /// The validation examples: the first `count`, each cut to its first `length` residues.
    let firstWindows (lengthOf: 'E -> int) (crop: int -> int -> 'E -> 'E) (count: int) (length: int) (examples: 'E[]) =
        examples
        |> Array.truncate count
        |> Array.map (fun e -> crop 0 (min (lengthOf e) length) e)

    /// The crop length at step `step` (0-based) under a curriculum of (first step, length) stages, ascending:
    /// `cropLength` before the first stage (see `TokenizerTrainConfig.CropCurriculum`).
    let lengthAt (cropLength: int) (curriculum: (int * int) list) (step: int) =
        curriculum
        |> List.fold (fun length (from, l) -> if step >= from then l else length) cropLength

    /// The examples with at least `minLength` residues; none at all raises an `ArgumentException` ("no training
    /// chain with at least …").
    let trainable (minLength: int) (lengthOf: 'E -> int) (examples: 'E[]) : 'E[] =
        let kept = examples |> Array.filter (fun e -> lengthOf e >= minLength)

        if kept.Length = 0 then
            raise (
                ArgumentException(
                    sprintf
                        "no training chain with at least %s"
                        (if minLength = 1 then
                             "one residue"
                         else
                             sprintf "%d residues" minLength)
                )
            )

        kept
