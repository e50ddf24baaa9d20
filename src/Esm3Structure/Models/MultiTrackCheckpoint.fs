namespace Esm3Structure.Models

open System
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// Saving and loading `MultiTrackModel`s as ESM-format safetensors (ESM3's keys, no prefix): the key table
/// (`expectedKeys`), sizes from the tensors' shapes (`ofKeyShapes`), `save` and `load`.
module MultiTrackCheckpoint =

    /// Logit widths of the six heads, in ESM's order: sequence 64, structure 4096, SS8 11, SASA 19,
    /// function 8 × 260, residue annotations 1478.
    let headWidths =
        [
            "sequence", Tracks.SequenceWidth
            "structure", StructureTokens.CodebookSize
            "ss8", Tracks.Ss8Vocabulary
            "sasa", Tracks.SasaVocabulary
            "function", Tracks.FunctionSlots * Tracks.FunctionVocabulary
            "residue", Tracks.ResidueVocabulary
        ]

    /// ESM3's state-dict keys and shapes for this configuration, written from ESM3-REFERENCE.md §9.4 (the table a
    /// checkpoint must match; for `esm3` it is `esm3_sm_open_v1.pth`'s). Order: encoder, transformer, heads.
    let expectedKeys (c: MultiTrackConfig) : (string * int64[]) list =
        let d = c.DModel
        let f = FeedForward.swigluHidden c.ExpansionRatio d
        let v = c.VHeads

        [
            "encoder.sequence_embed.weight", [| Tracks.SequenceWidth; d |]
            "encoder.plddt_projection.weight", [| d; Tracks.PlddtBins |]
            "encoder.plddt_projection.bias", [| d |]
            "encoder.structure_per_res_plddt_projection.weight", [| d; Tracks.PlddtBins |]
            "encoder.structure_per_res_plddt_projection.bias", [| d |]
            "encoder.structure_tokens_embed.weight", [| StructureTokens.VocabularySize; d |]
            "encoder.ss8_embed.weight", [| Tracks.Ss8Vocabulary; d |]
            "encoder.sasa_embed.weight", [| Tracks.SasaVocabulary; d |]
            for t in 0 .. int Tracks.FunctionSlots - 1 do
                sprintf "encoder.function_embed.%d.weight" t, [| Tracks.FunctionVocabulary; d / Tracks.FunctionSlots |]
            "encoder.residue_embed.weight", [| Tracks.ResidueVocabulary; d |]
            for i in 0 .. c.Layers - 1 do
                let p = sprintf "transformer.blocks.%d." i
                p + "attn.layernorm_qkv.0.weight", [| d |]
                p + "attn.layernorm_qkv.0.bias", [| d |]
                p + "attn.layernorm_qkv.1.weight", [| 3L * d; d |]
                p + "attn.out_proj.weight", [| d; d |]
                p + "attn.q_ln.weight", [| d |]
                p + "attn.k_ln.weight", [| d |]

                if i < c.GeometricLayers then
                    p + "geom_attn.distance_scale_per_head", [| v |]
                    p + "geom_attn.rotation_scale_per_head", [| v |]
                    p + "geom_attn.s_norm.weight", [| d |]
                    p + "geom_attn.proj.weight", [| 15L * v; d |]
                    p + "geom_attn.out_proj.weight", [| d; 3L * v |]

                p + "ffn.0.weight", [| d |]
                p + "ffn.0.bias", [| d |]
                p + "ffn.1.weight", [| 2L * f; d |]
                p + "ffn.3.weight", [| d; f |]
            "transformer.norm.weight", [| d |]
            for name, width in headWidths do
                let p = sprintf "output_heads.%s_head." name
                p + "0.weight", [| d; d |]
                p + "0.bias", [| d |]
                p + "2.weight", [| d |]
                p + "2.bias", [| d |]
                p + "3.weight", [| width; d |]
                p + "3.bias", [| width |]
        ]

    /// Number of parameters of the model (the sum over `expectedKeys`; ESM3-open: 1,401,735,748).
    let parameterCount (c: MultiTrackConfig) =
        expectedKeys c |> List.sumBy (fun (_, shape) -> Array.fold (*) 1L shape)

    let private meta (c: MultiTrackConfig) =
        readOnlyDict
            [
                "format", "esm3"
                "heads", string c.Heads
                "expansion_ratio", c.ExpansionRatio.ToString("R", Globalization.CultureInfo.InvariantCulture)
                "scale_residue", string c.ScaleResidue
                "cap_residual_scale", string c.CapResidualScale
            ]

    /// Saves the state dict (ESM's keys) atomically; the metadata records what shapes cannot tell (heads, the
    /// SwiGLU ratio, the residual-scale switches).
    let save (path: string) (model: MultiTrackModel) =
        Checkpoint.save path model (meta model.Config)

    /// A config from an ESM-format key table: d from `encoder.sequence_embed.weight` [64, d], layers from the
    /// highest `transformer.blocks.{i}` + 1, geometric layers from the blocks holding `geom_attn`, VHeads from
    /// `transformer.blocks.0.geom_attn.distance_scale_per_head`, the SwiGLU ratio from
    /// `transformer.blocks.0.ffn.3.weight` [d, F] (the metadata's "expansion_ratio", else 8/3 when that gives F, else F/d).
    /// Heads come from the metadata ("heads"; default d/64, ESM3's head width) and the residual switches likewise
    /// (default ESM3's: scaled, not capped). Problems raise an
    /// `InputException` naming `file` and the tensor or field.
    let ofKeyShapes (file: string) (metadata: Map<string, string>) (shapes: seq<string * int64[]>) : MultiTrackConfig =
        let keys = KeyShapes(file, "model", shapes)
        let fail (name: string) message = keys.Fail(name, message)
        let shapeOf (name: string) (rank: int) = keys.Require(name, rank)

        let embedKey = "encoder.sequence_embed.weight"

        if not (keys.Contains embedKey) then
            InputError.raise
                file
                InputLocation.Whole
                (sprintf "not an ESM3 multi-track checkpoint: no '%s' among its %d tensors" embedKey keys.Count)

        let d = (shapeOf embedKey 2).[1]

        let layers =
            match Checkpoint.blockCount "transformer.blocks" keys.Names with
            | Ok n when n > 0 -> n
            | Ok _ -> fail "transformer.blocks.0.attn.layernorm_qkv.1.weight" "missing: the file holds no block"
            | Error key -> fail key "block index out of range"

        let geometric =
            Seq.initInfinite id
            |> Seq.takeWhile (fun i -> keys.Contains(sprintf "transformer.blocks.%d.geom_attn.s_norm.weight" i))
            |> Seq.length

        let vHeads =
            if geometric > 0 then
                (shapeOf "transformer.blocks.0.geom_attn.distance_scale_per_head" 1).[0]
            else
                1L

        let ffnKey = "transformer.blocks.0.ffn.3.weight"
        let ffn = shapeOf ffnKey 2

        if ffn.[0] <> d then
            fail ffnKey (sprintf "expected [d = %d, F], got shape %s" d (Shape.show ffn))

        let metaValue (key: string) (expected: string) (parse: string -> 'a option) (fallback: 'a) =
            CheckpointMetadata.read file metadata key expected parse fallback

        // The ratio is not recoverable from F (SwiGLU rounds up to 256): the metadata's, else ESM3's 8/3 when it
        // gives F, else F/d.
        let ratio =
            let esm = MultiTrackConfig.esm3.ExpansionRatio

            let fallback =
                if FeedForward.swigluHidden esm d = ffn.[1] then
                    esm
                else
                    float ffn.[1] / float d

            metaValue "expansion_ratio" "a number" CheckpointMetadata.finite fallback

        let config =
            { MultiTrackConfig.esm3 with
                DModel = d
                Heads = metaValue "heads" "a positive integer" CheckpointMetadata.positiveInt64 (max 1L (d / 64L))
                VHeads = vHeads
                Layers = layers
                GeometricLayers = geometric
                ExpansionRatio = ratio
                ScaleResidue = metaValue "scale_residue" "true or false" CheckpointMetadata.boolean true
                CapResidualScale = metaValue "cap_residual_scale" "true or false" CheckpointMetadata.boolean false
            }

        if FeedForward.swigluHidden ratio d <> ffn.[1] then
            fail
                ffnKey
                (sprintf
                    "hidden width %d does not follow from d %d and ratio %g (ESM's SwiGLU rounding)"
                    ffn.[1]
                    d
                    ratio)

        match MultiTrackConfig.validate config with
        | Ok _ -> ()
        | Error errors ->
            InputError.raise
                file
                InputLocation.Whole
                ("the tensors' shapes give an invalid model: " + String.Join("; ", errors))

        let mismatch = Checkpoint.mismatchesOfShapes (expectedKeys config) shapes

        if not (Checkpoint.isEmpty mismatch) then
            InputError.raise
                file
                InputLocation.Whole
                (sprintf
                    "not an ESM3 multi-track model with the inferred sizes (d %d, %d layers, %d geometric, %d vector heads): %s"
                    d
                    layers
                    geometric
                    vHeads
                    (Checkpoint.describe mismatch))

        config

    /// Loads an ESM-format multi-track checkpoint: sizes from `ofKeyShapes` (every key and shape checked
    /// against ESM3's table first), then a strict load. float32, CPU, eval mode.
    let load (path: string) : MultiTrackModel =
        let header = TensorFile.readHeader path
        let shapes = header.Shapes

        let config = ofKeyShapes path header.Metadata shapes

        let model = new MultiTrackModel(config, null)

        try
            Checkpoint.load path model
            model.eval ()
            model
        with _ ->
            model.Dispose()
            reraise ()
