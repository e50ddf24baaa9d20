namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tokenizers

/// Settings of a causal language-model run.
type CausalLmTrainConfig =
    {
        Model: CausalLmConfig
        /// Validation sequences: the first this many of the valid split (0: the whole split), each scored whole
        /// (every target token once, in windows of `Model.Context`).
        ValidSequences: int
        /// Windows per validation batch.
        ValidBatchSize: int
        Trainer: TrainerConfig
    }

/// The presets of the causal language model and the run's `config.json`.
module CausalLmTrainConfig =

    /// "small" (about 2–3 minutes here): the small model (d 128, 2 layers, 4 heads, context 256); 400 steps of 16
    /// windows, AdamW 2e-3, β (0.9, 0.999), wd 0.01, clip 1, warm-up 40, cosine to 10 %; validation on the whole
    /// valid split every 100 steps, a checkpoint every 100.
    let small =
        {
            Model = CausalLmConfig.small
            ValidSequences = 0
            ValidBatchSize = 64
            Trainer =
                { TrainerConfig.small with
                    Steps = 400
                    BatchSize = 16
                    LearningRate = 2e-3
                    Beta2 = 0.999
                    WarmupSteps = 40
                    EvalEvery = 100
                    CheckpointEvery = 100
                }
        }

    /// "smoke": d 64, 2 layers, 4 heads, context 64; 16 validation sequences; `TrainerConfig.smokeOf`.
    let smoke =
        { small with
            Model =
                { small.Model with
                    DModel = 64L
                    Context = 64L
                }
            ValidSequences = 16
            Trainer = TrainerConfig.smokeOf small.Trainer
        }

    /// A preset by name ("small" or "smoke").
    let preset (name: string) =
        TrainerConfig.pickPreset [ "small", small; "smoke", smoke ] name

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: CausalLmTrainConfig) =
        [
            yield! Validation.within "Model" (CausalLmConfig.validate c.Model)
            yield! Validation.within "Trainer" (TrainerConfig.validate c.Trainer)
            if c.ValidSequences < 0 then
                sprintf "ValidSequences must be ≥ 0 (0: the whole valid split) (got %d)" c.ValidSequences
            if c.ValidBatchSize < 1 then
                sprintf "ValidBatchSize must be at least 1 (got %d)" c.ValidBatchSize
        ]
        |> Validation.ofErrors c

    /// The config as JSON (`Json.ofRecord`).
    let toJson (c: CausalLmTrainConfig) = Json.ofRecord [] (box c)

/// The outcome of a causal-LM run: the trainer's report, and held-out perplexity of the final model and of the
/// unigram baseline (fitted on the train split) on the same tokens.
type CausalLmReport =
    {
        Training: TrainReport
        ValidPerplexity: float
        UnigramPerplexity: float
        /// Target tokens scored.
        ValidTokens: int
    }

/// The data of causal-LM training: sequences as ids `<cls> … <eos>`, windows of `context + 1` ids split into
/// inputs and next-token targets, the unigram baseline.
module CausalLmData =

    /// The target of padding positions (skipped by the loss).
    [<Literal>]
    let IgnoreIndex = -100L

    /// Every sequence as ids `<cls> … <eos>`.
    let encodeAll (sequences: string seq) =
        sequences |> Seq.map (SequenceTokenizer.encode true) |> Array.ofSeq

    /// Unigram log-probabilities of target tokens (every id after the first of each sequence), add-one smoothed
    /// over the 33 real ids; −∞ for the rest of the 64-wide vocabulary. Shapes: -> float[64]
    let unigramLogProbs (encoded: int64[][]) =
        let counts = Array.create (int SequenceTokenizer.EmbeddingWidth) 0.0

        for ids in encoded do
            for i in 1 .. ids.Length - 1 do
                counts.[int ids.[i]] <- counts.[int ids.[i]] + 1.0

        let real = SequenceTokenizer.vocabulary.Length
        let total = Array.sum counts + float real

        Array.init counts.Length (fun i ->
            if i < real then
                Math.Log((counts.[i] + 1.0) / total)
            else
                Double.NegativeInfinity)

    /// Perplexity of the unigram model on the targets of `encoded`.
    let unigramPerplexity (logProbs: float[]) (encoded: int64[][]) =
        let mutable nll, n = 0.0, 0

        for ids in encoded do
            for i in 1 .. ids.Length - 1 do
                nll <- nll - logProbs.[int ids.[i]]
                n <- n + 1

        Math.Exp(nll / float n)

    /// A window of at most `context + 1` ids as one row: inputs (all ids but the last, PAD after) and targets (all
    /// but the first, `IgnoreIndex` after), each `context` long.
    let row (context: int) (window: int64[]) =
        let n = window.Length - 1

        Array.init context (fun i -> if i < n then window.[i] else SequenceTokenizer.Pad),
        Array.init context (fun i -> if i < n then window.[i + 1] else IgnoreIndex)

    /// Rows (`row`) covering every target of each sequence exactly once: consecutive windows of `context + 1` ids
    /// that overlap by one.
    let evaluationRows (context: int) (encoded: int64[][]) =
        [|
            for ids in encoded do
                for start in 0..context .. ids.Length - 2 do
                    yield row context ids.[start .. min (ids.Length - 1) (start + context)]
        |]

    /// Rows (at least one) as tensors. Shapes: -> inputs [N, context], targets [N, context] int64 on the CPU
    let batch (rows: (int64[] * int64[])[]) =
        let n = int64 rows.Length
        let context = int64 (fst rows.[0]).Length

        torch.tensor(Array.collect fst rows).reshape(n, context),
        torch.tensor(Array.collect snd rows).reshape(n, context)

    /// The training batch of step `step`: `batchSize` windows of up to `context + 1` ids (`Crops.sample`: a
    /// sequence uniformly with replacement, the window at random; a pure function of (seed, step), so a resumed run
    /// draws the same batches). Shapes: -> inputs [batchSize, context], targets [batchSize, context]
    let sample (seed: int) (step: int) (batchSize: int) (context: int) (encoded: int64[][]) =
        Crops.sample
            Array.length
            (fun start length ids -> Array.sub ids start length)
            seed
            step
            batchSize
            (context + 1)
            encoded
        |> Array.map (row context)
        |> batch

/// Training and evaluation of `CausalLm` on protein sequences, on `Trainer`.
module CausalLmTraining =

    /// Summed next-token negative log-likelihood over the targets that are not `IgnoreIndex`, and their count.
    /// Shapes: logits [B, L, 64], targets [B, L] -> scalar, scalar int64
    let nll (logits: torch.Tensor) (targets: torch.Tensor) =
        torch.nn.functional.cross_entropy (
            logits.flatten (0L, 1L),
            targets.flatten (),
            ignore_index = CausalLmData.IgnoreIndex,
            reduction = torch.nn.Reduction.Sum
        ),
        targets.ne(CausalLmData.IgnoreIndex.ToScalar()).sum()

    /// Validation: every target of `rows` once, in batches of `batchSize`: mean NLL per token (`loss`) and its
    /// exponential (`perplexity`).
    let evaluate (model: CausalLm) (device: torch.Device) (batchSize: int) (rows: (int64[] * int64[])[]) =
        let mutable total, count = 0.0, 0L

        for chunk in Array.chunkBySize batchSize rows do
            use _ = torch.NewDisposeScope()
            let inputs, targets = CausalLmData.batch chunk
            let sum, n = nll (model.forward (inputs.``to`` device)) (targets.``to`` device)
            total <- total + sum.ToDouble()
            count <- count + n.ToInt64()

        let mean = total / float count
        [| "loss", mean; "perplexity", Math.Exp mean |]

    /// The causal-LM task for `Trainer`: a fresh model (initialised from the trainer's seed, its output bias the
    /// unigram log-probabilities of `train`, so that training starts from the unigram model), batches from `train`
    /// (encoded sequences), validation on `valid`. Exports `causal-lm.safetensors` into every checkpoint.
    type Task(config: CausalLmTrainConfig, device: torch.Device, train: int64[][], valid: int64[][]) =
        inherit TrainingTask()
        let context = int config.Model.Context
        let rows = CausalLmData.evaluationRows context valid
        let model = new CausalLm(config.Model)

        do
            use generator = new torch.Generator(uint64 config.Trainer.Seed)
            Init.initialise generator model
            model.SetOutputBias(CausalLmData.unigramLogProbs train)
            model.``to`` device |> ignore

        /// The model being trained.
        member _.CausalLm = model

        /// The validation rows (every target of the valid sequences once).
        member _.ValidRows = rows

        override _.Model = model :> torch.nn.Module
        override _.Generators = [||]

        override _.Step(step: int) =
            let clock = StageClock()

            let inputs, targets =
                CausalLmData.sample config.Trainer.Seed step config.Trainer.BatchSize context train

            clock.Lap "data"
            let sum, n = nll (model.forward (inputs.``to`` device)) (targets.``to`` device)
            clock.Lap "forward"

            {
                Loss = sum / n
                Terms = [||]
                Stages = clock.Laps
            }

        override _.Evaluate() =
            evaluate model device config.ValidBatchSize rows

        override _.Export(folder: string) =
            CausalLmCheckpoint.save (Path.Combine(folder, "causal-lm.safetensors")) model

        interface IDisposable with
            member _.Dispose() = model.Dispose()

    /// Trains on sequences; writes `config.json`, `metrics.jsonl` and checkpoints (each with
    /// `causal-lm.safetensors`) under `out`, and reports the final model's held-out perplexity on `valid` (all of
    /// it) next to the unigram baseline fitted on `train`. With `resume`, continues from the last checkpoint of
    /// `out`.
    let trainOn
        (config: CausalLmTrainConfig)
        (device: torch.Device)
        (train: string[])
        (valid: string[])
        (out: string)
        (resume: bool)
        =
        Validation.check "causal LM" (CausalLmTrainConfig.validate config) |> ignore

        let trainIds =
            train
            |> Crops.trainable 1 (fun (s: string) -> s.Length)
            |> CausalLmData.encodeAll

        let validIds = CausalLmData.encodeAll valid
        use task = new Task(config, device, trainIds, validIds)

        let training =
            Trainer.run config.Trainer task out resume (CausalLmTrainConfig.toJson config)

        let final =
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            task.CausalLm.eval ()
            task.Evaluate() |> dict

        {
            Training = training
            ValidPerplexity = final.["perplexity"]
            UnigramPerplexity = CausalLmData.unigramPerplexity (CausalLmData.unigramLogProbs trainIds) validIds
            ValidTokens =
                task.ValidRows
                |> Array.sumBy (fun (_, t) -> t |> Array.filter ((<>) CausalLmData.IgnoreIndex) |> Array.length)
        }

    /// Reads the sequences of the train split and the first `ValidSequences` of the valid split (0: all) of the
    /// corpus under `dataDir` and trains (see `trainOn`).
    let train (config: CausalLmTrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train = Corpus.sequences dataDir "train" |> Array.map snd
        let valid = Corpus.sequences dataDir "valid" |> Array.map snd

        let valid =
            if config.ValidSequences > 0 then
                Array.truncate config.ValidSequences valid
            else
                valid

        trainOn config device train valid out resume

    /// The report's closing line: "held-out perplexity P vs unigram baseline U on N valid tokens (S s of training)".
    let summary (report: CausalLmReport) =
        sprintf
            "held-out perplexity %.3f vs unigram baseline %.3f on %d valid tokens (%.0f s of training)"
            report.ValidPerplexity
            report.UnigramPerplexity
            report.ValidTokens
            report.Training.ElapsedSeconds
