namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure

/// Settings of a confidence-head run: the pLDDT head and the pairwise head of a trained stage-1 tokenizer learn on
/// the tokenizer's own reconstructions, everything else frozen (ESM trains these heads in its stage 2, with a new
/// decoder; this stage keeps the stage-1 decoder and its reconstructions unchanged).
type ConfidenceTrainConfig =
    {
        /// The tokenizer folder (`encoder.safetensors`, `decoder.safetensors`) whose heads are trained.
        Tokenizer: string
        /// Random contiguous crops of at most this many residues (longer than stage 1's: the heads are read on whole
        /// chains, where reconstructions are worse than on short crops).
        CropLength: int
        /// Validation chains (the first of the valid split), each cut to `ValidLength` residues.
        ValidChains: int
        ValidLength: int
        Trainer: TrainerConfig
    }

/// The presets of the confidence stage and its `config.json`.
module ConfidenceTrainConfig =

    /// "small": crops of 256, batch 4, AdamW 1e-3 (no weight decay), warm-up 50, cosine to 10 % over 800 steps;
    /// validation on 32 valid chains of up to 1,024 residues every 200 steps.
    let small =
        {
            Tokenizer = ""
            CropLength = 256
            ValidChains = 32
            ValidLength = 1024
            Trainer =
                { TrainerConfig.small with
                    Steps = 800
                    BatchSize = 4
                    LearningRate = 1e-3
                    WeightDecay = 0.0
                    WarmupSteps = 50
                    EvalEvery = 200
                    CheckpointEvery = 200
                }
        }

    /// "smoke": crops of 64, 8 valid chains of up to 128 residues, `TrainerConfig.smokeOf`.
    let smoke =
        { small with
            CropLength = 64
            ValidChains = 8
            ValidLength = 128
            Trainer = TrainerConfig.smokeOf small.Trainer
        }

    /// A preset by name ("small" or "smoke").
    let preset (name: string) =
        TrainerConfig.pickPreset [ "small", small; "smoke", smoke ] name

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: ConfidenceTrainConfig) =
        [
            if String.IsNullOrWhiteSpace c.Tokenizer then
                "Tokenizer: the folder of a trained tokenizer is required (--init)"
            yield! Validation.within "Trainer" (TrainerConfig.validate c.Trainer)
            yield! TrainerConfig.validateData 2 c.CropLength c.ValidChains c.ValidLength
        ]
        |> Validation.ofErrors c

    /// The config as JSON (`Json.ofRecord`), led by "Stage": "confidence".
    let toJson (c: ConfidenceTrainConfig) =
        Json.ofRecord [ "Stage", box "confidence" ] (box c)

/// Training the confidence heads of a stage-1 tokenizer on `Trainer`.
module ConfidenceTraining =

    /// Parameter names of the decoder that this stage trains: the pLDDT head and the pairwise head (distogram,
    /// direction and pAE channels share its hidden layer, so the stage-1 pair terms keep training beside pAE).
    let trainedPrefixes = [| "plddt_head."; "pairwise_classification_head." |]

    /// The loss terms of a batch and their sum: pLDDT against the reconstruction's per-residue LDDT-CA, pAE against
    /// its aligned errors, and the stage-1 distogram and binned-direction terms.
    /// Shapes: out over [B, L] (with confidence outputs), batch [B, L, …] -> scalar, named terms
    let losses (out: StructureDecoderOutput) (batch: TokenizerBatch) =
        let target = batch.Backbone
        let mask = batch.Mask

        let lddt, scored =
            use _ = torch.no_grad ()
            let clean = target.nan_to_num (0.0, 0.0, 0.0)

            let l =
                Metrics.lddtCa (out.Backbone.detach().select(2L, 1L)) (clean.select (2L, 1L)) (Some mask)

            l.PerResidue.nan_to_num(0.0, 0.0, 0.0).to_type out.Backbone.dtype, l.Scored.logical_and mask

        let plddt = StructureLosses.plddt out.PlddtLogits lddt scored
        let pae = StructureLosses.pae out.PaeLogits (out.Backbone.detach ()) target mask
        let distogram = StructureLosses.distogram out.DistogramLogits target mask
        let binned = StructureLosses.binnedDirection out.DirectionLogits target mask

        plddt + pae + distogram + binned,
        [|
            "plddt", plddt
            "pae", pae
            "distogram", distogram
            "binned_direction", binned
        |]

    /// Decodes a batch with the frozen encoder and trunk (no gradient), then the heads (with gradient for the
    /// trainable ones). Shapes: batch [B, L, …] -> StructureDecoderOutput over [B, L] with confidence outputs
    let decode (encoder: StructureEncoder) (decoder: StructureDecoder) (batch: TokenizerBatch) =
        let states, real =
            use _ = torch.no_grad ()

            let tokens =
                encoder.Encode(batch.Backbone, batch.ResidueIndex, batch.Padding, null).Tokens

            let h, real = decoder.ResidueTrunk(decoder.Embed tokens, batch.Padding)
            h.detach (), real

        decoder.HeadsWith(states, real, true)

    /// Validation on whole examples one at a time: Pearson's r of per-residue pLDDT with per-residue LDDT-CA over
    /// all residues (`plddt_pearson`), mean |pLDDT − LDDT-CA| (`plddt_error`), Pearson's r of each chain's pTM with
    /// the TM-score of its reconstruction (`ptm_tm_pearson`: pTM predicts that score, ESM3 §A.1.7.3.4; records of
    /// sessions up to 14 have `ptm_pearson`, against LDDT-CA, which falls with length where TM-score's d0 grows), and
    /// the frozen model's mean backbone RMSD, LDDT-CA and TM-score (unchanged by this stage).
    let evaluate
        (encoder: StructureEncoder)
        (decoder: StructureDecoder)
        (device: torch.Device)
        (examples: TokenizerExample[])
        =
        let predicted = Collections.Generic.List<float>()
        let observed = Collections.Generic.List<float>()
        let mutable rmsd, lddtSum = 0.0, 0.0
        let ptms = Collections.Generic.List<float>()
        let chainTms = Collections.Generic.List<float>()

        for e in examples do
            use _ = torch.NewDisposeScope()
            let b = TokenizerData.toDevice device (TokenizerData.batch [| e |])
            let out = decode encoder decoder b
            let target = b.Backbone.nan_to_num (0.0, 0.0, 0.0)
            rmsd <- rmsd + (Metrics.backboneRmsd out.Backbone target b.Mask).ToDouble()

            let l =
                Metrics.lddtCa (out.Backbone.select (2L, 1L)) (target.select (2L, 1L)) (Some b.Mask)

            lddtSum <- lddtSum + l.Protein.ToDouble()
            ptms.Add(out.Ptm.select(0L, 0L).ToDouble())

            chainTms.Add(
                Metrics.tmScore
                    (out.Backbone.select(0L, 0L).select(1L, 1L))
                    (target.select(0L, 0L).select(1L, 1L))
                    (Some(b.Mask.select (0L, 0L)))
            )

            let per =
                l.PerResidue.select(0L, 0L).to_type(torch.float64).cpu().data<float>().ToArray()

            let plddt =
                out.Plddt.select(0L, 0L).to_type(torch.float64).cpu().data<float>().ToArray()

            let real = b.Mask.select(0L, 0L).cpu().data<bool>().ToArray()

            for i in 0 .. per.Length - 1 do
                if real.[i] then
                    predicted.Add plddt.[i]
                    observed.Add per.[i]

        let p, o = predicted.ToArray(), observed.ToArray()
        let n = float (max 1 examples.Length)

        let error =
            Array.zip p o
            |> Array.filter (fun (_, y) -> Double.IsFinite y)
            |> fun pairs ->
                if pairs.Length = 0 then
                    nan
                else
                    pairs |> Array.averageBy (fun (x, y) -> abs (x - y))

        [|
            "plddt_pearson", Metrics.pearson p o
            "plddt_error", error
            "ptm_tm_pearson", Metrics.pearson (ptms.ToArray()) (chainTms.ToArray())
            "rmsd", rmsd / n
            "lddt_ca", lddtSum / n
            "tm_score", (if chainTms.Count = 0 then nan else Seq.average chainTms)
        |]

    /// The confidence stage for `Trainer`: the tokenizer of `config.Tokenizer` loaded, frozen but for
    /// `trainedPrefixes`; batches from `train`, validation on `valid` (already cut). `Model` is the decoder (its
    /// frozen weights ride along in the checkpoints).
    type Task(config: ConfidenceTrainConfig, device: torch.Device, train: TokenizerExample[], valid: TokenizerExample[])
        =
        inherit TrainingTask()

        let fileOf (stem: string) =
            match TensorFile.inFolder config.Tokenizer stem with
            | Some file -> file
            | None ->
                InputError.raise
                    (Path.Combine(config.Tokenizer, stem + ".safetensors"))
                    InputLocation.Whole
                    "--init: no such file (a tokenizer folder holds encoder and decoder, .safetensors or .pth)"

        let encoderFile = fileOf "encoder"
        let decoderFile = fileOf "decoder"

        let encoder = StructureEncoderCheckpoint.load encoderFile
        let decoder = StructureDecoderCheckpoint.load decoderFile
        let metadata = (TensorFile.readHeader decoderFile).Metadata
        // Pearson's r of pTM with LDDT-CA at the last validation (NaN before one): the export's pTM verdict.
        let mutable ptmPearson = nan

        do
            encoder.``to`` device |> ignore
            decoder.``to`` device |> ignore
            encoder.eval ()

            for p in encoder.parameters () do
                p.requires_grad <- false

            for struct (name, p) in decoder.named_parameters () do
                p.requires_grad <- trainedPrefixes |> Array.exists (fun prefix -> name.StartsWith prefix)

        /// The frozen encoder.
        member _.Encoder = encoder
        /// The decoder whose heads train.
        member _.Decoder = decoder

        override _.Model = decoder
        override _.Generators = [||]

        override _.Step(step: int) =
            let clock = StageClock()

            let crops =
                TokenizerData.sample config.Trainer.Seed step config.Trainer.BatchSize config.CropLength train

            let b = TokenizerData.toDevice device (TokenizerData.batch crops)
            clock.Lap "data"
            let out = decode encoder decoder b
            clock.Lap "decoder"
            let total, terms = losses out b
            clock.Lap "losses"

            {
                Loss = total
                Terms = terms
                Stages = clock.Laps
            }

        override _.Evaluate() =
            let metrics = evaluate encoder decoder device valid
            ptmPearson <- metrics |> Array.find (fst >> (=) "ptm_tm_pearson") |> snd
            metrics

        /// Writes the encoder's tensors unchanged and the decoder with its metadata, now marked as having trained
        /// confidence heads (`StructureDecoderCheckpoint.ConfidenceMetadataKey` = "trained") and with the last
        /// validation's verdict on pTM (`PtmMetadataKey`), both as safetensors.
        override _.Export(folder: string) =
            (use _ = torch.NewDisposeScope()
             let e = TensorFile.read encoderFile

             Safetensors.write
                 (Path.Combine(folder, "encoder.safetensors"))
                 e.Tensors
                 (readOnlyDict (Map.toList e.Metadata)))

            // pTM counts as informative when its validated correlation with the reconstructions' TM-scores reaches
            // 0.5 (the bar set for pLDDT); otherwise the scripts leave it out.
            use _ = torch.NewDisposeScope()

            StructureDecoderCheckpoint.save
                (Path.Combine(folder, "decoder.safetensors"))
                (Checkpoint.stateDict decoder)
                decoder.Config
                [
                    yield! Map.toList metadata
                    StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained"
                    StructureDecoderCheckpoint.PtmMetadataKey,
                    (if ptmPearson >= 0.5 then "informative" else "uninformative")
                ]

        interface IDisposable with
            member _.Dispose() =
                encoder.Dispose()
                decoder.Dispose()

    /// Trains the confidence heads on chains; writes `config.json`, `metrics.jsonl` and checkpoints (each with
    /// `encoder.safetensors` and `decoder.safetensors`) under `out`.
    let trainOn
        (config: ConfidenceTrainConfig)
        (device: torch.Device)
        (train: ProteinChain[])
        (valid: ProteinChain[])
        (out: string)
        (resume: bool)
        =
        Validation.check "confidence" (ConfidenceTrainConfig.validate config) |> ignore

        let trainExamples, validExamples =
            TokenizerData.examples config.ValidChains config.ValidLength train valid

        use task = new Task(config, device, trainExamples, validExamples)
        Trainer.run config.Trainer task out resume (ConfidenceTrainConfig.toJson config)

    /// Reads the train and valid splits of the corpus under `dataDir` and trains (see `trainOn`).
    let train (config: ConfidenceTrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train, valid = Corpus.readTrainValid dataDir 0 config.ValidChains
        trainOn config device train valid out resume
