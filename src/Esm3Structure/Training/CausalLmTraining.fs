namespace Esm3Structure.Training

open System
open System.Diagnostics
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tokenizers

/// Settings of a causal language-model run.
type CausalLmTrainConfig =
    {
        Model: CausalLmConfig
        Steps: int
        BatchSize: int
        LearningRate: float
        WarmupSteps: int
        WeightDecay: float
        Seed: int
        /// Evaluate held-out perplexity every this many steps (and at the end).
        EvalEvery: int
    }

    /// A few hundred CPU steps of the small model (about two minutes on 2 cores).
    static member Default =
        {
            Model = CausalLmConfig.Small
            Steps = 400
            BatchSize = 16
            LearningRate = 2e-3
            WarmupSteps = 40
            WeightDecay = 0.01
            Seed = 0
            EvalEvery = 100
        }

/// One evaluation point of a run.
type CausalLmPoint =
    {
        Step: int
        TrainLoss: float
        ValidPerplexity: float
    }

/// The outcome of a run: held-out perplexity of the model and of the unigram baseline on the same tokens.
type CausalLmReport =
    {
        History: CausalLmPoint list
        ValidPerplexity: float
        UnigramPerplexity: float
        ValidTokens: int
        Seconds: float
    }

/// Training and evaluation of `CausalLm` on protein sequences.
module CausalLmTraining =

    let private ignoreIndex = -100L

    /// Every sequence as ids `<cls> … <eos>`.
    let encodeAll (sequences: string seq) =
        sequences |> Seq.map (SequenceTokenizer.encode true) |> Array.ofSeq

    /// Unigram log-probabilities of target tokens (every id after the first of each sequence), add-one smoothed
    /// over the 33 real ids. Shapes: -> float[64]
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

    /// Windows of `context + 1` ids covering every target of each sequence once: (inputs, targets) rows padded
    /// with PAD / ignore. Shapes: -> [N, context], [N, context]
    let evaluationWindows (context: int64) (encoded: int64[][]) =
        let c = int context

        let rows =
            [|
                for ids in encoded do
                    let mutable start = 0

                    while start < ids.Length - 1 do
                        let stop = min (ids.Length - 1) (start + c)

                        let input =
                            Array.init c (fun i ->
                                if start + i < stop then
                                    ids.[start + i]
                                else
                                    SequenceTokenizer.Pad)

                        let target =
                            Array.init c (fun i ->
                                if start + i < stop then
                                    ids.[start + i + 1]
                                else
                                    ignoreIndex)

                        yield input, target
                        start <- stop
            |]

        rows

    /// A random training batch: per row a random sequence and a random window of up to `context + 1` ids.
    let sampleBatch (random: Random) (context: int64) (batch: int) (encoded: int64[][]) =
        let c = int context
        let inputs = Array.zeroCreate<int64>(batch * c)
        let targets = Array.zeroCreate<int64>(batch * c)

        for b in 0 .. batch - 1 do
            let ids = encoded.[random.Next encoded.Length]

            let start =
                if ids.Length - 1 > c then
                    random.Next(ids.Length - 1 - c + 1)
                else
                    0

            let stop = min (ids.Length - 1) (start + c)

            for i in 0 .. c - 1 do
                inputs.[b * c + i] <-
                    if start + i < stop then
                        ids.[start + i]
                    else
                        SequenceTokenizer.Pad

                targets.[b * c + i] <-
                    if start + i < stop then
                        ids.[start + i + 1]
                    else
                        ignoreIndex

        torch.tensor(inputs).reshape(int64 batch, context), torch.tensor(targets).reshape(int64 batch, context)

    let private loss (model: CausalLm) (inputs: torch.Tensor) (targets: torch.Tensor) =
        let logits = model.forward inputs

        torch.nn.functional.cross_entropy (
            logits.flatten (0L, 1L),
            targets.flatten (),
            ignore_index = ignoreIndex,
            reduction = torch.nn.Reduction.Sum
        )

    /// Held-out perplexity exp(mean NLL) over every target token of `windows`.
    let perplexity (model: CausalLm) (device: torch.Device) (windows: (int64[] * int64[])[]) =
        use _ = torch.no_grad ()
        model.eval ()
        let mutable nll, count = 0.0, 0L

        for chunk in Array.chunkBySize 64 windows do
            use _ = torch.NewDisposeScope()
            let c = int64 (fst chunk.[0]).Length
            let inputs = torch.tensor(Array.collect fst chunk).reshape(-1L, c).``to`` device
            let targets = torch.tensor(Array.collect snd chunk).reshape(-1L, c).``to`` device
            nll <- nll + (loss model inputs targets).ToDouble()
            count <- count + targets.ne(ignoreIndex.ToScalar()).sum().ToInt64()

        model.train ()
        Math.Exp(nll / float count)

    /// Trains a fresh model on `train` and reports held-out perplexity on `valid` next to the unigram baseline
    /// (fitted on `train`). `progress` receives each evaluation point. Deterministic for a seed on one machine.
    let train
        (config: CausalLmTrainConfig)
        (device: torch.Device)
        (trainSeqs: string seq)
        (validSeqs: string seq)
        (progress: CausalLmPoint -> unit)
        =
        let clock = Stopwatch.StartNew()
        let trainIds = encodeAll trainSeqs
        let validIds = encodeAll validSeqs
        let unigramLogProbs = unigramLogProbs trainIds
        let unigram = unigramPerplexity unigramLogProbs validIds
        let windows = evaluationWindows config.Model.Context validIds
        use model = new CausalLm(config.Model)
        Init.reset (new torch.Generator(uint64 config.Seed)) model
        // Start from the unigram model: the output bias holds its log-probabilities.
        model.SetOutputBias unigramLogProbs
        model.``to`` device |> ignore

        use optimizer =
            torch.optim.AdamW(model.parameters (), lr = config.LearningRate, weight_decay = config.WeightDecay)

        let random = Random config.Seed
        let history = Collections.Generic.List<CausalLmPoint>()
        let mutable running = nan

        for step in 0 .. config.Steps - 1 do
            use _ = torch.NewDisposeScope()

            let lr =
                Schedule.warmupCosine config.LearningRate config.WarmupSteps config.Steps 0.1 step

            for group in optimizer.ParamGroups do
                group.LearningRate <- lr

            let inputs, targets =
                sampleBatch random config.Model.Context config.BatchSize trainIds

            let inputs, targets = inputs.``to`` device, targets.``to`` device
            optimizer.zero_grad ()
            let tokens = targets.ne(ignoreIndex.ToScalar()).sum().ToDouble()
            let l = loss model inputs targets / tokens
            l.backward ()
            torch.nn.utils.clip_grad_norm_ (model.parameters (), 1.0) |> ignore
            optimizer.step () |> ignore
            let value = l.ToDouble()

            running <-
                if Double.IsNaN running then
                    value
                else
                    0.95 * running + 0.05 * value

            if (step + 1) % config.EvalEvery = 0 || step = config.Steps - 1 then
                let point =
                    {
                        Step = step + 1
                        TrainLoss = running
                        ValidPerplexity = perplexity model device windows
                    }

                history.Add point
                progress point

        {
            History = List.ofSeq history
            ValidPerplexity = (Seq.last history).ValidPerplexity
            UnigramPerplexity = unigram
            ValidTokens =
                windows
                |> Array.sumBy (fun (_, t) -> t |> Array.filter (fun x -> x <> ignoreIndex) |> Array.length)
            Seconds = clock.Elapsed.TotalSeconds
        }
