namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// Stage-1 training of the structure tokenizer (ESM3-TRAINING.md §1.3) on `Trainer`.
module TokenizerTraining =

    /// The loss terms of a batch: distance, direction, binned direction, distogram, FAPE, local CA distance,
    /// commitment; and their
    /// weighted sum. The four pairwise terms read only the residues at `pairPositions` (ascending, int64; null:
    /// all, ESM's); FAPE and the commitment read every residue.
    let lossesOn
        (weights: TokenizerLossWeights)
        (encoding: StructureEncoding)
        (out: StructureDecoderOutput)
        (batch: TokenizerBatch)
        (pairPositions: torch.Tensor)
        =
        let target = batch.Backbone
        let mask = batch.Mask
        let predicted = out.Backbone

        let rows (x: torch.Tensor) =
            if isNull pairPositions then
                x
            else
                x.index_select (1L, pairPositions)

        let pairs (x: torch.Tensor) =
            if isNull pairPositions then
                x
            else
                x.index_select(1L, pairPositions).index_select(2L, pairPositions)

        let distance =
            StructureLosses.backboneDistanceWith
                weights.SquaredDistance
                weights.LinearBeyondClamp
                (rows predicted)
                (rows target)
                (rows mask)

        let direction =
            StructureLosses.backboneDirectionWith weights.LinearBeyondClamp (rows predicted) (rows target) (rows mask)

        let binned =
            StructureLosses.binnedDirection (pairs out.DirectionLogits) (rows target) (rows mask)

        let distogram =
            StructureLosses.distogram (pairs out.DistogramLogits) (rows target) (rows mask)

        let commitment = encoding.QuantizerLoss

        // AlphaFold2 averages FAPE over the structure module's rounds; the affine head has one.
        let fape =
            if weights.Fape > 0.0 then
                match out.RoundBackbones with
                | [] -> StructureLosses.backboneFape predicted target mask
                | rounds ->
                    rounds
                    |> List.map (fun r -> StructureLosses.backboneFape r target mask)
                    |> List.reduce (+)
                    |> fun sum -> sum / float rounds.Length
            else
                torch.zeros_like distance

        let local =
            if weights.LocalDistance > 0.0 then
                StructureLosses.localCaDistance LddtConfig.esm.Cutoff predicted target mask
            else
                torch.zeros_like distance

        let total =
            distance * weights.Distance
            + direction * weights.Direction
            + binned * weights.BinnedDirection
            + distogram * weights.Distogram
            + fape * weights.Fape
            + local * weights.LocalDistance
            + commitment

        total,
        [|
            "distance", distance
            "direction", direction
            "binned_direction", binned
            "distogram", distogram
            "fape", fape
            "local_distance", local
            "commitment", commitment
        |]

    /// `lossesOn` every residue. Shapes: batch [B, L, …] -> scalar, named terms
    let losses weights encoding out batch =
        lossesOn weights encoding out batch null

    /// Validation of `model` on examples one at a time: mean backbone RMSD after Kabsch, mean LDDT-CA (pooled per
    /// chain), code usage over all residues (live fraction, perplexity), and the fraction of chains whose decoding
    /// lies closer to the chain's mirror image (z → −z) than to the chain (`mirrored`: a run that settled on the
    /// mirrored folds, which LDDT-CA and ESM's distance terms cannot see; `StructureDecoder.ReflectStructures`).
    let evaluate (model: TokenizerModel) (device: torch.Device) (examples: TokenizerExample[]) =
        let codes = model.Encoder.Config.Quantizer.Codes
        let dim = model.Encoder.Config.DOut
        let mutable usage = CodebookUsage.empty codes dim
        let mutable rmsd, lddt, n, mirrored = 0.0, 0.0, 0, 0

        for e in examples do
            use _ = torch.NewDisposeScope()
            let b = TokenizerData.toDevice device (TokenizerData.batch [| e |])

            let encoding, out = model.RunTimed(b, ignore, false)
            let target = b.Backbone.nan_to_num (0.0, 0.0, 0.0)
            let chainRmsd = (Metrics.backboneRmsd out.Backbone target b.Mask).ToDouble()
            rmsd <- rmsd + chainRmsd

            let reflection =
                torch.tensor ([| 1.0; 1.0; -1.0 |], dtype = target.dtype, device = target.device)

            if (Metrics.backboneRmsd out.Backbone (target * reflection) b.Mask).ToDouble() < chainRmsd then
                mirrored <- mirrored + 1

            let l =
                Metrics.lddtCa (out.Backbone.select (2L, 1L)) (target.select (2L, 1L)) (Some b.Mask)

            lddt <- lddt + l.Protein.ToDouble()
            n <- n + 1
            let real = encoding.Framed.logical_and b.Mask
            usage <- CodebookUsage.merge usage (CodebookUsage.ofIndices codes dim encoding.Tokens (Some real))

        let m = CodebookUsage.metrics usage

        [|
            "rmsd", (if n > 0 then rmsd / float n else nan)
            "lddt_ca", (if n > 0 then lddt / float n else nan)
            "code_usage", m.LiveFraction
            "perplexity", m.Perplexity
            "mirrored", (if n > 0 then float mirrored / float n else nan)
        |]

    /// The stage-1 task for `Trainer`: batches from `train`, validation on `valid` (already cut).
    type Task(config: TokenizerTrainConfig, device: torch.Device, train: TokenizerExample[], valid: TokenizerExample[])
        =
        inherit TrainingTask()
        let generator = new torch.Generator(uint64 config.Trainer.Seed)
        let model = new TokenizerModel(config, generator)

        do
            if config.InitFrom <> "" then
                model.InitialiseFrom config.InitFrom

                if config.ReflectInit then
                    model.Decoder.ReflectStructures()

            model.``to`` device |> ignore

        // What the exported decoder says of its confidence heads: a stage-1 run's are untrained; a refining run
        // keeps `InitFrom`'s heads, and with them its file's word on them (and the rest of its metadata).
        let decoderStatus =
            if config.RefineOnly then
                let file =
                    TrainerCheckpoint.initFile config.InitFrom "decoder" "a tokenizer folder holds encoder and decoder"

                let metadata = (TensorFile.readHeader file).Metadata

                [
                    for key, value in Map.toList metadata do
                        if key <> "heads" && key <> "head_width" then
                            key, value
                    StructureDecoderCheckpoint.ConfidenceMetadataKey,
                    (if StructureDecoderCheckpoint.confidenceTrainedOf metadata then
                         "trained"
                     else
                         "untrained")
                ]
            else
                [ StructureDecoderCheckpoint.ConfidenceMetadataKey, "untrained" ]

        /// The model being trained.
        member _.Tokenizer = model

        override _.Model = model :> torch.nn.Module
        override _.Generators = [| generator |]

        /// The codebook's (`VectorQuantizer.TrainingState`) under "codebook.".
        override _.TrainingState() =
            model.Encoder.Codebook.TrainingState()
            |> List.map (fun (k, v) -> "codebook." + k, v)

        override _.RestoreTrainingState lookup =
            model.Encoder.Codebook.RestoreTrainingState(fun k -> lookup ("codebook." + k))

        override _.Step(step: int) =
            let clock = StageClock()

            let cropLength = Crops.lengthAt config.CropLength config.CropCurriculum step

            let crops =
                TokenizerData.sample config.Trainer.Seed step config.Trainer.BatchSize cropLength train

            let b = TokenizerData.toDevice device (TokenizerData.batch crops)

            clock.Lap "data"
            // Stage 1's losses read no confidence output.
            let encoding, out = model.RunTimed(b, clock.Lap, false)
            let l = int b.Mask.shape.[1]

            let positions =
                if config.PairResidues > 0 && config.PairResidues < l then
                    torch.tensor(TokenizerData.pairPositions config.Trainer.Seed step config.PairResidues l).``to``
                        device
                else
                    null

            let total, terms = lossesOn config.Weights encoding out b positions

            let total, terms =
                match model.LocalShapeLogits encoding with
                | Some logits ->
                    let shape = StructureLosses.localShape logits b.Backbone b.Mask
                    total + shape * config.Weights.LocalShape, Array.append terms [| "local_shape", shape |]
                | None -> total, terms

            clock.Lap "losses"

            {
                Loss = total
                Terms = terms
                Stages = clock.Laps
            }

        override _.Evaluate() = evaluate model device valid

        /// Writes `encoder.safetensors` and `decoder.safetensors` (ESM's keys, no prefix). Head counts cannot be
        /// read from tensor shapes, so each file's metadata records them ("v_heads"; "heads", "head_width": pass the
        /// latter to `StructureDecoderCheckpoint.ofKeyShapesWith`).
        override _.Export(folder: string) =
            StructureEncoderCheckpoint.save (Path.Combine(folder, "encoder.safetensors")) model.Encoder

            use _ = torch.NewDisposeScope()

            StructureDecoderCheckpoint.save
                (Path.Combine(folder, "decoder.safetensors"))
                (model.ExportDecoderState())
                config.Decoder
                decoderStatus

        interface IDisposable with
            member _.Dispose() =
                model.Dispose()
                generator.Dispose()

    /// Trains a tokenizer on chains; writes `config.json`, `metrics.jsonl` and checkpoints (each with
    /// `encoder.safetensors` and `decoder.safetensors` in ESM's key format) under `out`.
    let trainOn
        (config: TokenizerTrainConfig)
        (device: torch.Device)
        (train: ProteinChain[])
        (valid: ProteinChain[])
        (out: string)
        (resume: bool)
        =
        Validation.check "tokenizer" (TokenizerTrainConfig.validate config) |> ignore

        let trainExamples, validExamples =
            TokenizerData.examples config.ValidChains config.ValidLength train valid

        use task = new Task(config, device, trainExamples, validExamples)
        Trainer.run config.Trainer task out resume (TokenizerTrainConfig.toJson config)

    /// Reads the train and valid splits of the corpus under `dataDir` and trains (see `trainOn`).
    let train (config: TokenizerTrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train, valid = Corpus.readTrainValid dataDir 0 config.ValidChains
        trainOn config device train valid out resume
