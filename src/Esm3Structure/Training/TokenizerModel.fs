namespace Esm3Structure.Training

open System
open System.IO
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure

/// Encoder, straight-through codes mapped to the decoder's width, and decoder: the stage-1 model. Keys: `encoder.*`
/// (ESM's `StructureTokenEncoder`), `decoder.*` (ESM's `StructureTokenDecoder`) and the training-only
/// `post_quant_proj.{weight,bias}` [d, DOut] (folded into the decoder's code embeddings on export).
type TokenizerModel(config: TokenizerTrainConfig, generator: torch.Generator) as this =
    inherit torch.nn.Module<TokenizerBatch, StructureDecoderOutput>("TokenizerModel")

    // A frozen encoder's codebook takes no EMA update either (`FreezeEncoder`, `RefineOnly`).
    let encoder =
        new StructureEncoder(
            (if config.FreezeEncoder || config.RefineOnly then
                 { config.Encoder with
                     Quantizer =
                         { config.Encoder.Quantizer with
                             FreezeCodebook = true
                         }
                 }
             else
                 config.Encoder),
            generator
        )

    let decoder = new StructureDecoder(config.Decoder)
    let post_quant_proj = torch.nn.Linear(config.Encoder.DOut, config.Decoder.DModel)

    // Training-only, as post_quant_proj: the local shape classes from each token's vector (`Weights.LocalShape`).
    let localShapeHead =
        if config.Weights.LocalShape > 0.0 then
            Some(
                torch.nn.Linear(
                    config.Encoder.DOut,
                    StructureLosses.LocalShapeAngleBins + StructureLosses.LocalShapeTorsionBins
                )
            )
        else
            None

    do
        this.RegisterComponents()
        Init.initialise generator encoder
        Init.initialise generator decoder
        Init.linear generator post_quant_proj

        localShapeHead
        |> Option.iter (fun head ->
            this.register_module ("local_shape_head", head) |> ignore
            Init.linear generator head)

        if config.FreezeEncoder then
            for p in encoder.parameters () do
                p.requires_grad <- false

        // Only the structure module learns (`RefineOnly`).
        if config.RefineOnly then
            for name, p in this.named_parameters () do
                if not (name.StartsWith("decoder." + StructureDecoderCheckpoint.StructureModulePrefix)) then
                    p.requires_grad <- false

    member _.Encoder = encoder
    member _.Decoder = decoder

    /// The local shape logits of each token's straight-through vector (`StructureLosses.localShape`), when the run
    /// trains that term. Shapes: encoding.Quantized [B, L, DOut] -> [B, L, angle + torsion classes] option
    member _.LocalShapeLogits(encoding: StructureEncoding) =
        localShapeHead |> Option.map (fun head -> head.forward encoding.Quantized)

    /// Encodes, quantizes (straight-through) and decodes a batch. Shapes: batch [B, L, …] -> encoding, decoder output
    member this.Run(batch: TokenizerBatch) = this.RunTimed(batch, ignore, true)

    /// `Run`, calling `lap` after the encoder ("encoder"), the codebook ("quantizer") and the decoder ("decoder");
    /// without `confidence` the decoder leaves out pLDDT, pAE and pTM (null; `StructureDecoder.DecodeResidues`).
    member _.RunTimed(batch: TokenizerBatch, lap: string -> unit, confidence: bool) =
        let encoding =
            encoder.EncodeTimed(batch.Backbone, batch.ResidueIndex, batch.Padding, null, lap)

        let latent =
            if config.BypassQuantizer then
                encoding.Z
            else
                encoding.Quantized

        let x = post_quant_proj.forward latent
        let decoded = decoder.DecodeResidues(x, batch.Padding, confidence)
        lap "decoder"
        encoding, decoded

    /// Shapes: batch -> StructureDecoderOutput
    override this.forward(batch: TokenizerBatch) = snd (this.Run batch)

    /// Loads an exported tokenizer (`folder`/encoder.safetensors and decoder.safetensors, strictly: every key and
    /// shape must fit this model's config) and recovers `post_quant_proj`, which the export folded into the
    /// decoder's code embeddings, by least squares from the codes to those rows (exact up to rounding: the rows
    /// are an affine map of the codes). An EMA codebook keeps its loaded counts, so it is not re-initialised. With
    /// `RefineOnly` the decoder file holds no structure module, which keeps its fresh initialisation. A
    /// missing file or a model of other sizes raises an `InputException` naming the file and "--init".
    member _.InitialiseFrom(folder: string) =
        let holds = "a tokenizer folder holds encoder and decoder, .safetensors or .pth"
        let encoderFile = TrainerCheckpoint.initFile folder "encoder" holds
        let decoderFile = TrainerCheckpoint.initFile folder "decoder" holds

        match encoder.Codebook with
        | :? ProductCodebook as product ->
            // The file holds the product's Cartesian table as one EMA codebook: load it into the same encoder with
            // one codebook, copy the rest, and cut the table back into the groups.
            use plain =
                new StructureEncoder(
                    { config.Encoder with
                        Quantizer =
                            { config.Encoder.Quantizer with
                                Groups = 1
                            }
                    },
                    new torch.Generator(0UL)
                )

            TrainerCheckpoint.initialise encoderFile plain
            let loaded = dict (Checkpoint.stateDict plain)
            use _ = torch.no_grad ()

            for name, target in Checkpoint.stateDict encoder do
                if not (name.StartsWith "codebook.") then
                    target.copy_ loaded.[name] |> ignore

            try
                product.LoadTable(plain.Codebook.Codes, "codebook.embeddings")
            with :? ArgumentException as e ->
                InputError.raise encoderFile (InputLocation.Field "codebook.embeddings") ("--init: " + e.Message)
        | _ -> TrainerCheckpoint.initialise encoderFile encoder

        if config.RefineOnly then
            // The files hold no structure module: load them into the same decoder without one, then copy.
            use plain =
                new StructureDecoder(
                    { config.Decoder with
                        StructureModule = None
                    }
                )

            TrainerCheckpoint.initialise decoderFile plain
            let loaded = dict (Checkpoint.stateDict plain)
            use _ = torch.no_grad ()

            for name, target in Checkpoint.stateDict decoder do
                if not (name.StartsWith StructureDecoderCheckpoint.StructureModulePrefix) then
                    target.copy_ loaded.[name] |> ignore
        else
            TrainerCheckpoint.initialise decoderFile decoder

        encoder.Codebook.MarkLoaded()

        use _ = torch.no_grad ()
        use _scope = torch.NewDisposeScope()
        let codes = encoder.Codebook.Codes.detach ()
        let k, dOut = codes.shape.[0], codes.shape.[1]

        let rows =
            Checkpoint.stateDict decoder
            |> List.find (fun (name, _) -> name = "embed.weight")
            |> snd
            |> fun embed -> embed.narrow(0L, 0L, k).to_type torch.float64

        let x =
            torch.cat (
                [|
                    codes.to_type torch.float64
                    torch.ones ([| k; 1L |], dtype = torch.float64, device = codes.device)
                |],
                1L
            )

        let struct (solution, _, _, _) = torch.linalg.lstsq (x, rows) // [DOut + 1, d]

        post_quant_proj.weight.copy_ (solution.narrow(0L, 0L, dOut).t()) |> ignore
        post_quant_proj.bias.copy_ (solution.select (0L, dOut)) |> ignore

    /// The decoder's state_dict with the code rows of `embed.weight` replaced by post_quant_proj(codes), so that
    /// decoding token ids reproduces the training path (with `RefineOnly`, the rows as loaded); ESM's key set.
    member _.ExportDecoderState() =
        use _ = torch.no_grad ()

        // A refining run trained neither the codes nor the map: the decoder's rows are still its file's own,
        // which the least-squares recovery of the map reproduces only up to rounding.
        if config.RefineOnly then
            Checkpoint.stateDict decoder
        else
            let codes = encoder.Codebook.Codes.detach ()
            let rows = post_quant_proj.forward codes // [K, d]

            Checkpoint.stateDict decoder
            |> List.map (fun (name, t) ->
                if name = "embed.weight" then
                    let folded = t.detach().clone()
                    folded.narrow(0L, 0L, rows.shape.[0]).copy_ rows |> ignore
                    name, folded
                else
                    name, t)
