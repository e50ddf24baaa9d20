namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// Stage-2 training of the structure tokenizer (ESM3-TRAINING.md §1.4) on `Trainer`: the frozen stage-1 encoder
/// turns whole chains into tokens; a new decoder (token + residue embeddings) predicts frames, torsions and
/// confidences; all atoms are placed by `AllAtom.decodeAllAtom`.
module Stage2Training =

    /// Structure tokens of one chain from the frozen encoder (eval mode, no gradient): codes, and MASK where the
    /// residue has no backbone frame (as `StructureTokenizer`). Shapes: -> [L]
    let encodeTokens (encoder: StructureEncoder) (device: torch.Device) (e: TokenizerExample) : int64[] =
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad ()
        let b = TokenizerData.batch [| e |]

        let encoding =
            encoder.Encode(b.Backbone.``to`` device, b.ResidueIndex.``to`` device, null, null)

        let tokens =
            torch.where (
                encoding.Framed,
                encoding.Tokens,
                torch.full_like (encoding.Tokens, StructureTokens.Mask.ToScalar())
            )

        tokens.select(0L, 0L).cpu().contiguous().data<int64>().ToArray()

    /// The decoder's outputs without the BOS and EOS rows: rows (and pairs) 1 … L; pTM is kept as computed.
    /// Shapes: out over [B, L + 2] -> out over [B, L]
    let residues (out: StructureDecoderOutput) (l: int64) : StructureDecoderOutput =
        let rows (x: torch.Tensor) = x.narrow (1L, 1L, l)
        let pairs (x: torch.Tensor) = x.narrow(1L, 1L, l).narrow(2L, 1L, l)

        {
            Hidden = rows out.Hidden
            Frames =
                {
                    R = rows out.Frames.R
                    T = rows out.Frames.T
                }
            Backbone = rows out.Backbone
            RoundBackbones = out.RoundBackbones |> List.map rows
            TorsionLogits = rows out.TorsionLogits
            PlddtLogits = rows out.PlddtLogits
            Plddt = rows out.Plddt
            DistogramLogits = pairs out.DistogramLogits
            DirectionLogits = pairs out.DirectionLogits
            PaeLogits = pairs out.PaeLogits
            Pae = pairs out.Pae
            Ptm = out.Ptm
        }

    /// Decodes a batch: the residues' outputs and their atom14 coordinates (`StructureDecoder.allAtom`).
    /// Shapes: batch [B, L, …] -> StructureDecoderOutput over [B, L], Positions [B, L, 14, 3], Mask [B, L, 14]
    let run (decoder: StructureDecoder) (batch: Stage2Batch) =
        let padding = batch.Tokens.eq (StructureTokens.Pad.ToScalar())
        let full = decoder.DecodeTokens(batch.Tokens, batch.SequenceInput, padding)
        let out = residues full batch.Restypes.shape.[1]
        out, StructureDecoder.allAtom out batch.Restypes

    /// The atoms the all-atom terms use: the example's mask, on real residues, in slots the residue type has.
    /// Shapes: -> [B, L, 14] bool
    let atomMask (batch: Stage2Batch) (atoms: AtomPositions) =
        batch.Atom14Mask.logical_and(batch.Structure.Mask.unsqueeze -1L).logical_and atoms.Mask

    /// Per-residue LDDT-CA of the decoded backbone against the truth (detached, the pLDDT target) and where it is
    /// defined. Shapes: -> [B, L] (0 where undefined), [B, L] bool
    let lddtTarget (out: StructureDecoderOutput) (batch: Stage2Batch) =
        use _ = torch.no_grad ()
        let s = batch.Structure

        let lddt =
            Metrics.lddtCa (out.Backbone.detach().select(2L, 1L)) (s.Backbone.select (2L, 1L)) (Some s.Mask)

        lddt.PerResidue.nan_to_num(0.0, 0.0, 0.0).to_type out.Backbone.dtype, lddt.Scored.logical_and s.Mask

    /// The loss terms of a batch and their weighted sum: the stage-1 backbone terms (distance, direction, binned
    /// direction, distogram), all-atom distance and direction (over `atomMask`; the direction loss subsamples from
    /// `generator`), pLDDT and pAE.
    /// Shapes: out over [B, L] (`residues`), atoms Positions [B, L, 14, 3], batch [B, L, …]
    ///         -> total scalar, named scalar terms
    let losses
        (config: Stage2TrainConfig)
        (generator: torch.Generator)
        (out: StructureDecoderOutput)
        (atoms: AtomPositions)
        (batch: Stage2Batch)
        =
        let w = config.Weights
        let target = batch.Structure.Backbone
        let mask = batch.Structure.Mask
        let predicted = out.Backbone

        let distance =
            StructureLosses.backboneDistanceWith w.SquaredDistance false predicted target mask

        let direction = StructureLosses.backboneDirection predicted target mask
        let binned = StructureLosses.binnedDirection out.DirectionLogits target mask
        let distogram = StructureLosses.distogram out.DistogramLogits target mask
        let allMask = atomMask batch atoms

        let allDistance =
            AllAtomLosses.allAtomDistanceWith w.SquaredDistance atoms.Positions batch.Atom14 allMask

        let allDirection =
            AllAtomLosses.allAtomDirectionWith config.MaxDirectionVectors generator atoms.Positions batch.Atom14 allMask

        let lddt, scored = lddtTarget out batch
        let plddt = StructureLosses.plddt out.PlddtLogits lddt scored
        let pae = StructureLosses.pae out.PaeLogits predicted target mask

        let total =
            distance * w.Distance
            + direction * w.Direction
            + binned * w.BinnedDirection
            + distogram * w.Distogram
            + allDistance * w.AllAtomDistance
            + allDirection * w.AllAtomDirection
            + plddt * w.Plddt
            + pae * w.Pae

        total,
        [|
            "distance", distance
            "direction", direction
            "binned_direction", binned
            "distogram", distogram
            "allatom_distance", allDistance
            "allatom_direction", allDirection
            "plddt", plddt
            "pae", pae
        |]

    /// Validation on examples one at a time (with their tokens): mean backbone RMSD after Kabsch, mean LDDT-CA
    /// (pooled per chain), mean all-atom RMSD (the prediction moved by the Kabsch fit of its CA onto the true CA,
    /// then over the atoms of `atomMask`), and pLDDT calibration: the mean over scored residues of
    /// |pLDDT − LDDT-CA|. Shapes: examples of L residues with L tokens each -> named floats
    let evaluate (decoder: StructureDecoder) (device: torch.Device) (examples: (Stage2Example * int64[])[]) =
        let mutable rmsd, lddtCa, allRmsd, calibration, n, scoredResidues =
            0.0, 0.0, 0.0, 0.0, 0, 0.0

        for e, tokens in examples do
            use _ = torch.NewDisposeScope()
            let b = Stage2Data.batch [| e |] [| tokens |] |> Stage2Data.toDevice device
            let out, atoms = run decoder b
            let s = b.Structure
            let target = s.Backbone.nan_to_num (0.0, 0.0, 0.0)
            rmsd <- rmsd + (Metrics.backboneRmsd out.Backbone target s.Mask).ToDouble()

            let l =
                Metrics.lddtCa (out.Backbone.select (2L, 1L)) (target.select (2L, 1L)) (Some s.Mask)

            lddtCa <- lddtCa + l.Protein.ToDouble()

            let fit =
                Superpose.kabsch (out.Backbone.select (2L, 1L)) (s.Backbone.select (2L, 1L)) (Some s.Mask)

            let moved = Frame.applyEach fit (atoms.Positions.reshape (1L, -1L, 3L))
            let used = (atomMask b atoms).reshape(1L, -1L)

            allRmsd <-
                allRmsd
                + (Superpose.rmsdNoSuperpose moved (b.Atom14.reshape (1L, -1L, 3L)) (Some used)).ToDouble()

            let lddt, scored = lddtTarget out b
            let gap = (out.Plddt.to_type lddt.dtype - lddt).abs()
            let w = scored.to_type lddt.dtype
            calibration <- calibration + (gap * w).sum().ToDouble()
            scoredResidues <- scoredResidues + w.sum().ToDouble()
            n <- n + 1

        let mean total = if n > 0 then total / float n else nan

        [|
            "rmsd", mean rmsd
            "lddt_ca", mean lddtCa
            "allatom_rmsd", mean allRmsd
            "plddt_error",
            (if scoredResidues > 0.0 then
                 calibration / scoredResidues
             else
                 nan)
        |]

    /// The stage-2 task for `Trainer`. `encoder` (the caller's; frozen, never in the trained state) makes the tokens
    /// of each whole chain once, when first drawn. The trained state is the decoder alone.
    type Task
        (
            config: Stage2TrainConfig,
            encoder: StructureEncoder,
            device: torch.Device,
            train: Stage2Example[],
            valid: Stage2Example[]
        ) =
        inherit TrainingTask()
        let generator = new torch.Generator(uint64 config.Trainer.Seed)
        let decoder = new StructureDecoder(config.Decoder, config.SequenceInput)

        do
            if encoder.Config.Quantizer.Codes > StructureTokens.CodebookSize then
                raise (
                    ArgumentException(
                        sprintf
                            "the encoder's codebook (%d codes) must fit the decoder's %d code rows"
                            encoder.Config.Quantizer.Codes
                            StructureTokens.CodebookSize
                    )
                )

            Init.initialise generator decoder
            decoder.``to`` device |> ignore
            encoder.``to`` device |> ignore
            encoder.eval ()

        let trainTokens: int64[][] = Array.zeroCreate train.Length

        let tokensOf (i: int) =
            if isNull trainTokens.[i] then
                trainTokens.[i] <- encodeTokens encoder device train.[i].Backbone

            trainTokens.[i]

        let validSet =
            lazy (valid |> Array.map (fun e -> e, encodeTokens encoder device e.Backbone))

        /// The decoder being trained.
        member _.Decoder = decoder

        /// The frozen encoder.
        member _.Encoder = encoder

        override _.Model = decoder :> torch.nn.Module
        override _.Generators = [| generator |]

        override _.Step(step: int) =
            let picks =
                Crops.draws
                    config.Trainer.Seed
                    step
                    config.Trainer.BatchSize
                    config.CropLength
                    (train |> Array.map _.Length)

            let examples =
                picks
                |> Array.map (fun (i, start) ->
                    Stage2Data.crop start (min train.[i].Length config.CropLength) train.[i])

            let tokens =
                picks
                |> Array.map (fun (i, start) -> Array.sub (tokensOf i) start (min train.[i].Length config.CropLength))

            let b = Stage2Data.batch examples tokens |> Stage2Data.toDevice device
            let out, atoms = run decoder b
            let total, terms = losses config generator out atoms b

            {
                Loss = total
                Terms = terms
                Stages = [||]
            }

        override _.Evaluate() = evaluate decoder device validSet.Value

        /// Writes `encoder.safetensors` (the frozen encoder, ESM's keys) and `decoder.safetensors` (ESM's keys, plus
        /// `sequence_embed.weight` with sequence input). The decoder's metadata records "heads", "head_width" (read
        /// back by `StructureDecoderCheckpoint.load`) and "sequence_input".
        override _.Export(folder: string) =
            StructureEncoderCheckpoint.save (Path.Combine(folder, "encoder.safetensors")) encoder

            StructureDecoderCheckpoint.save
                (Path.Combine(folder, "decoder.safetensors"))
                (Checkpoint.stateDict decoder)
                config.Decoder
                [
                    "sequence_input", (if config.SequenceInput then "true" else "false")
                    StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained"
                ]

        interface IDisposable with
            member _.Dispose() =
                decoder.Dispose()
                generator.Dispose()

    /// Trains a stage-2 decoder on chains (each with its "full atoms" flag); the frozen encoder is loaded from
    /// `config.Encoder`. Writes `config.json` ("Stage": 2), `metrics.jsonl` and checkpoints (each with ESM-format
    /// `encoder.safetensors` and `decoder.safetensors`) under `out`.
    let trainOn
        (config: Stage2TrainConfig)
        (device: torch.Device)
        (train: (ProteinChain * bool)[])
        (valid: (ProteinChain * bool)[])
        (out: string)
        (resume: bool)
        =
        Validation.check "stage-2" (Stage2TrainConfig.validate config) |> ignore

        let trainExamples =
            train
            |> Array.map (fun (c, full) -> Stage2Data.ofChain full c)
            |> Crops.trainable 2 (fun (e: Stage2Example) -> e.Length)

        let validExamples =
            valid
            |> Array.truncate config.ValidChains
            |> Array.map (fun (c, full) -> Stage2Data.ofChain full c)
            |> Crops.firstWindows
                (fun (e: Stage2Example) -> e.Length)
                Stage2Data.crop
                config.ValidChains
                config.ValidLength

        use encoder = StructureEncoderCheckpoint.load config.Encoder
        use task = new Task(config, encoder, device, trainExamples, validExamples)
        Trainer.run config.Trainer task out resume (Stage2TrainConfig.toJson config)

    /// Reads the train and valid splits of the corpus under `dataDir` and trains (see `trainOn`).
    let train (config: Stage2TrainConfig) (device: torch.Device) (dataDir: string) (out: string) (resume: bool) =
        let train = Stage2Data.readSplit dataDir "train" 0
        let valid = Stage2Data.readSplit dataDir "valid" config.ValidChains
        trainOn config device train valid out resume
