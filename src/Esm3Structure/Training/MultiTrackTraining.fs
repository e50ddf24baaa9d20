namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure.Io
open Esm3Structure
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// Masked-LM training of the multi-track model (ESM3-TRAINING.md §3, §4.3) on `Trainer`.
module MultiTrackTraining =

    let private toDevice (device: torch.Device) (b: MultiTrackBatch) =
        {
            Tracks = MultiTrackInput.toDevice device b.Tracks
            Residues = b.Residues.``to`` device
        }

    /// Validation: examples in batches of `batchSize`, masked with `masking` from a generator seeded `seed` (the
    /// same masks at every call); per-track perplexity and accuracy (`MaskedLm.metrics`) and the weighted loss.
    let evaluate
        (model: MultiTrackModel)
        (device: torch.Device)
        (masking: MaskingConfig)
        (weights: TrackWeights)
        (seed: int)
        (batchSize: int)
        (examples: MultiTrackExample[])
        =
        use generator = new torch.Generator(uint64 seed)
        let mutable stats: TrackStatistics[] = [||]
        let mutable loss, batches = 0.0, 0

        for chunk in Array.chunkBySize batchSize examples do
            use _ = torch.NewDisposeScope()
            let b = MultiTrackData.batch chunk |> toDevice device
            let masked = MaskedLm.mask masking generator b.Tracks b.Residues
            let out = model.forward masked.Inputs
            let s = MaskedLm.statistics out masked

            stats <-
                if stats.Length = 0 then
                    s
                else
                    MaskedLm.addStatistics stats s

            let total, _ = MaskedLm.losses weights out masked
            loss <- loss + total.ToDouble()
            batches <- batches + 1

        Array.append [| "loss", (if batches > 0 then loss / float batches else nan) |] (MaskedLm.metrics stats)

    /// Copies the weights of the multi-track model at `source` (a folder holding `multitrack.safetensors` or `.pth`,
    /// or the file) into `model`; a missing file or different sizes raise an `InputException` naming the file and
    /// the `--init` option.
    let initialiseFrom (source: string) (model: MultiTrackModel) =
        let file =
            if File.Exists source then
                source
            else
                TrainerCheckpoint.initFile
                    source
                    "multitrack"
                    "a multi-track model folder holds multitrack.safetensors or .pth"

        TrainerCheckpoint.initialise file model

    /// The masked-LM task for `Trainer`: batches from `train`, validation on `valid` (already cut). Exports
    /// `multitrack.safetensors` (ESM3's keys) into every checkpoint.
    type Task
        (config: MultiTrackTrainConfig, device: torch.Device, train: MultiTrackExample[], valid: MultiTrackExample[]) =
        inherit TrainingTask()
        let generator = new torch.Generator(uint64 config.Trainer.Seed)
        let model = new MultiTrackModel(config.Model, generator)

        do
            if config.InitFrom <> "" then
                initialiseFrom config.InitFrom model

            model.``to`` device |> ignore

        /// The model being trained.
        member _.MultiTrack = model

        /// The masked batch of step `step` (on the task's device).
        member _.Batch(step: int) =
            let crops =
                MultiTrackData.sample config.Trainer.Seed step config.Trainer.BatchSize config.CropLength train

            let b = MultiTrackData.batch crops |> toDevice device
            use g = MultiTrackData.maskGenerator config.Trainer.Seed step
            MaskedLm.mask config.Masking g b.Tracks b.Residues

        override _.Model = model :> torch.nn.Module
        override _.Generators = [| generator |]

        override this.Step(step: int) =
            let masked = this.Batch step
            let out = model.forward masked.Inputs
            let total, terms = MaskedLm.losses config.Weights out masked

            {
                Loss = total
                Terms = terms
                Stages = [||]
            }

        override _.Evaluate() =
            evaluate model device config.ValidMasking config.Weights config.ValidSeed config.ValidBatchSize valid

        override _.Export(folder: string) =
            MultiTrackCheckpoint.save (Path.Combine(folder, "multitrack.safetensors")) model

        interface IDisposable with
            member _.Dispose() =
                model.Dispose()
                generator.Dispose()

    /// Trains on examples; writes `config.json`, `metrics.jsonl` and checkpoints (each with
    /// `multitrack.safetensors`) under `out`. Validation examples are cut to `ValidLength` residues.
    let trainOn
        (config: MultiTrackTrainConfig)
        (device: torch.Device)
        (train: MultiTrackExample[])
        (valid: MultiTrackExample[])
        (out: string)
        (resume: bool)
        =
        Validation.check "multi-track" (MultiTrackTrainConfig.validate config) |> ignore

        let train = train |> Crops.trainable 1 (fun (e: MultiTrackExample) -> e.Length)

        let valid =
            valid
            |> Crops.firstWindows
                (fun (e: MultiTrackExample) -> e.Length)
                MultiTrackData.crop
                config.ValidChains
                config.ValidLength

        use task = new Task(config, device, train, valid)
        Trainer.run config.Trainer task out resume (MultiTrackTrainConfig.toJson config)

    /// Reads the train split (at most `trainLimit` chains, ≤ 0: all) and the valid split of the corpus under
    /// `dataDir`, builds examples with `providers`, and trains (see `trainOn`).
    let train
        (config: MultiTrackTrainConfig)
        (device: torch.Device)
        (dataDir: string)
        (providers: TrackProviders)
        (trainLimit: int)
        (out: string)
        (resume: bool)
        =
        let examples (chains: ProteinChain[]) =
            chains |> Array.map (MultiTrackData.ofChain providers)

        let train, valid = Corpus.readTrainValid dataDir trainLimit config.ValidChains
        trainOn config device (examples train) (examples valid) out resume
