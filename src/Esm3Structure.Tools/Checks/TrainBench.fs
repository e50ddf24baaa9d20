namespace Esm3Structure.Checks

open System
open System.Diagnostics
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Native
open Esm3Structure.Nn
open Esm3Structure.Training

/// One row of the training-step benchmark: one preset's stage-1 step (forward, losses, backward, AdamW).
type TrainStepBenchRow =
    {
        Preset: string
        Batch: int
        Crop: int
        /// Median milliseconds per step.
        Milliseconds: float
        /// Median seconds of each stage (`TrainingStep.Stages`, then backward and optimizer).
        Stages: (string * float)[]
        StepsPerSecond: float
        ResiduesPerSecond: float
        /// The counted matrix products of one step (forward and backward, `TrainBench.gflop`).
        GFlop: float
        GFlops: float
    }

/// The stage-1 training-step benchmark of `scripts/bench.fsx --sections train`.
module TrainBench =

    /// Floating-point operations (GFLOP) of the matrix products of one stage-1 training step of `config` on a batch
    /// of `batch` crops of `length` residues: every linear layer and attention product, 2 per multiply-add, the
    /// backward counted as twice the forward. Normalisations, activations, gathers and losses are not counted, so
    /// the share of the matmul ceiling derived from it is a lower bound.
    let gflop (config: TokenizerTrainConfig) (batch: int) (length: int) =
        let b, l = float batch, float length
        let e = float (min config.Encoder.Knn length)
        let enc = config.Encoder
        let d, v = float enc.DModel, float enc.VHeads
        let f = float (FeedForward.swigluHidden enc.ExpansionRatio enc.DModel)
        let neighbourhoods = b * l
        let tokens = neighbourhoods * e
        // Geometric attention per block: the 15·V projection channels and the 3·V output, then rotation and
        // distance scores and value sums over each neighbourhood's E × E pairs (as `GeometricAttentionBenchmark.flops`).
        let attention =
            2.0 * tokens * d * 15.0 * v
            + 2.0 * tokens * 3.0 * v * d
            + neighbourhoods * 2.0 * v * e * e * 9.0

        let swiglu (rows: float) (width: float) (hidden: float) = 6.0 * rows * width * hidden
        let layers = float enc.Layers
        // The last block's feed-forward runs on the query slot only.
        let encoder =
            layers * attention
            + (layers - 1.0) * swiglu tokens d f
            + swiglu neighbourhoods d f
            + 2.0 * neighbourhoods * d * float enc.DOut

        let dec = config.Decoder
        let dd = float dec.DModel

        let fd =
            float (FeedForward.swigluHidden (StructureDecoderConfig.stack dec).ExpansionRatio dec.DModel)

        let n = b * l
        let block = 2.0 * n * 4.0 * dd * dd + 2.0 * 2.0 * b * l * l * dd + swiglu n dd fd
        let p, h = float dec.PairwiseDownproject, float dec.PairwiseHidden
        let bins = float StructureDecoderConfig.PairwiseBins

        let heads =
            2.0 * n * (dd * dd + dd * 23.0) // affine head
            + 2.0 * n * (dd * dd + dd * 50.0) // pLDDT head
            + 2.0 * n * dd * p
            + 2.0 * b * l * l * (p * h + h * bins) // pairwise head

        let decoder = 2.0 * n * float enc.DOut * dd + float dec.Layers * block + heads

        3.0 * (encoder + decoder) / 1e9

    /// Times the stage-1 training step of each preset: `warmup` steps, then the median of `repeats`, each step the
    /// trainer's sequence (the task's step with its stage clock, backward with clipping, AdamW). The batches are
    /// the presets' own random crops of `chains`.
    let steps
        (presets: (string * TokenizerTrainConfig) list)
        (chains: TokenizerExample[])
        (warmup: int)
        (repeats: int)
        (progress: string -> unit)
        =
        // As `Trainer.run` does: freed tensor memory is reused, not mapped anew each step (NativeHeap).
        use _heap = NativeHeap.retainFreedMemory ()

        [
            for name, config in presets do
                progress (sprintf "train step: %s" name)
                use task = new TokenizerTraining.Task(config, torch.CPU, chains, [||])
                let model = task.Model
                model.train ()

                use optimizer =
                    torch.optim.AdamW(
                        model.parameters (),
                        lr = config.Trainer.LearningRate,
                        beta1 = config.Trainer.Beta1,
                        beta2 = config.Trainer.Beta2,
                        weight_decay = config.Trainer.WeightDecay
                    )

                let runs =
                    [|
                        for i in 0 .. warmup + repeats - 1 do
                            use _ = torch.NewDisposeScope()
                            let watch = Stopwatch.StartNew()
                            optimizer.zero_grad ()
                            let out = task.Step i
                            let clock = StageClock()
                            out.Loss.backward ()

                            torch.nn.utils.clip_grad_norm_ (model.parameters (), config.Trainer.ClipNorm)
                            |> ignore

                            clock.Lap "backward"
                            optimizer.step () |> ignore
                            clock.Lap "optimizer"

                            if i >= warmup then
                                watch.Elapsed.TotalMilliseconds, Array.append out.Stages clock.Laps
                    |]

                let median (xs: float[]) = (Array.sort xs).[xs.Length / 2]
                let ms = runs |> Array.map fst |> median

                let stages =
                    (snd runs.[0])
                    |> Array.map (fun (stage, _) ->
                        stage,
                        runs
                        |> Array.map (fun (_, laps) -> laps |> Array.find (fst >> (=) stage) |> snd)
                        |> median)

                let crop = config.CropLength
                let gflop = gflop config config.Trainer.BatchSize crop

                {
                    Preset = name
                    Batch = config.Trainer.BatchSize
                    Crop = crop
                    Milliseconds = ms
                    Stages = stages
                    StepsPerSecond = 1000.0 / ms
                    ResiduesPerSecond = float (config.Trainer.BatchSize * crop) * 1000.0 / ms
                    GFlop = gflop
                    GFlops = gflop * 1000.0 / ms
                }
        ]

    /// A Markdown table of training-step rows with each row's share of the matmul ceiling, and a second table of
    /// the stage times.
    let format (ceilingGFlops: float) (rows: TrainStepBenchRow list) =
        let header =
            "| preset | batch × crop | ms/step | steps/s | residues/s | GFLOP/step (counted) | GFLOP/s | % of matmul |"

        let rule = "|---|---|---:|---:|---:|---:|---:|---:|"

        let line (r: TrainStepBenchRow) =
            sprintf
                "| %s | %d × %d | %.0f | %.2f | %.0f | %.1f | %.1f | %.0f%% |"
                r.Preset
                r.Batch
                r.Crop
                r.Milliseconds
                r.StepsPerSecond
                r.ResiduesPerSecond
                r.GFlop
                r.GFlops
                (100.0 * r.GFlops / ceilingGFlops)

        let stages =
            match rows with
            | [] -> []
            | first :: _ ->
                let names = first.Stages |> Array.map fst

                [
                    ""
                    "| preset | "
                    + String.Join(" | ", names |> Array.map (fun n -> n + " ms"))
                    + " |"
                    "|---|" + String.Join("", names |> Array.map (fun _ -> "---:|"))
                    for r in rows do
                        "| "
                        + r.Preset
                        + " | "
                        + String.Join(" | ", r.Stages |> Array.map (fun (_, t) -> sprintf "%.0f" (t * 1000.0)))
                        + " |"
                ]

        String.Join("\n", header :: rule :: (rows |> List.map line) @ stages)
