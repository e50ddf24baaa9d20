namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// The decoder's checkpoint files: ESM's state-dict layout (`expectedKeys`), sizes from the tensors' shapes
/// (`ofKeyShapes`), our exports' metadata, and strict loading.
module StructureDecoderCheckpoint =

    /// Metadata key of our exports saying whether the pLDDT and pAE heads were trained ("trained" after stage 2,
    /// "untrained" after stage 1).
    [<Literal>]
    let ConfidenceMetadataKey = "confidence_heads"

    /// Whether a decoder file's pLDDT and pAE heads carry information, from its metadata: `ConfidenceMetadataKey`
    /// when present; else our older exports tell by their keys (stage 2 wrote "sequence_input" and trained the
    /// heads, stage 1 wrote only "head_width" and did not); a file without metadata (ESM's) was trained.
    let confidenceTrainedOf (metadata: Map<string, string>) =
        match metadata.TryFind ConfidenceMetadataKey with
        | Some value -> value = "trained"
        | None -> metadata.ContainsKey "sequence_input" || not (metadata.ContainsKey "head_width")

    /// Metadata key of our confidence-stage exports: "uninformative" when the validated pTM did not track the
    /// reconstructions' quality (`ConfidenceTraining`), so scripts do not print it.
    [<Literal>]
    let PtmMetadataKey = "ptm"

    /// Whether a decoder file's pTM carries information: its confidence heads were trained
    /// (`confidenceTrainedOf`) and `PtmMetadataKey` does not say "uninformative".
    let ptmInformativeOf (metadata: Map<string, string>) =
        confidenceTrainedOf metadata
        && metadata.TryFind PtmMetadataKey <> Some "uninformative"

    /// Metadata key of our exports recording `ChainFrames` ("true" when set; absent in ESM's files).
    [<Literal>]
    let ChainFramesMetadataKey = "chain_frames"

    /// Key prefix of the optional structure module.
    [<Literal>]
    let StructureModulePrefix = "structure_module."

    /// Every state-dict key with its shape, in ESM's (PyTorch's) order, computed without building the model:
    /// `embed`, `decoder_stack.blocks.{i}.attn.*`/`.ffn.*`, `decoder_stack.norm`, `affine_output_projection.*`,
    /// `pairwise_classification_head.*`, `plddt_head.*` (ESM3-REFERENCE.md §7.7).
    let expectedKeys (c: StructureDecoderConfig) : (string * int64[]) list =
        let d = c.DModel
        let f = StructureDecoderConfig.ffnHidden c
        let p, h = c.PairwiseDownproject, c.PairwiseHidden

        [
            "embed.weight", [| StructureTokens.VocabularySize; d |]
            for i in 0 .. c.Layers - 1 do
                let b = sprintf "decoder_stack.blocks.%d." i
                b + "attn.layernorm_qkv.0.weight", [| d |]
                b + "attn.layernorm_qkv.0.bias", [| d |]
                b + "attn.layernorm_qkv.1.weight", [| 3L * d; d |]
                b + "attn.out_proj.weight", [| d; d |]
                b + "attn.q_ln.weight", [| d |]
                b + "attn.k_ln.weight", [| d |]
                b + "ffn.0.weight", [| d |]
                b + "ffn.0.bias", [| d |]
                b + "ffn.1.weight", [| 2L * f; d |]
                b + "ffn.3.weight", [| d; f |]
            "decoder_stack.norm.weight", [| d |]
            "affine_output_projection.ffn1.weight", [| d; d |]
            "affine_output_projection.ffn1.bias", [| d |]
            "affine_output_projection.norm.weight", [| d |]
            "affine_output_projection.norm.bias", [| d |]
            "affine_output_projection.proj.weight", [| BackboneHead.ProjectionWidth; d |]
            "affine_output_projection.proj.bias", [| BackboneHead.ProjectionWidth |]
            "pairwise_classification_head.downproject.weight", [| p; d |]
            "pairwise_classification_head.linear1.weight", [| h; p |]
            "pairwise_classification_head.norm.weight", [| h |]
            "pairwise_classification_head.norm.bias", [| h |]
            "pairwise_classification_head.linear2.weight", [| StructureDecoderConfig.PairwiseBins; h |]
            "plddt_head.dense.weight", [| d; d |]
            "plddt_head.dense.bias", [| d |]
            "plddt_head.norm.weight", [| d |]
            "plddt_head.norm.bias", [| d |]
            "plddt_head.output.weight", [| Plddt.Bins; d |]
            "plddt_head.output.bias", [| Plddt.Bins |]
            match c.StructureModule with
            | Some m -> yield! StructureModuleConfig.expectedKeys StructureModulePrefix m
            | None -> ()
        ]

    /// The number of parameters (sum over `expectedKeys`).
    let parameterCount (c: StructureDecoderConfig) : int64 =
        expectedKeys c |> List.sumBy (fun (_, s) -> Array.fold (*) 1L s)

    /// The one key a sequence-conditioned decoder adds to ESM's (ESM3-TRAINING.md §1.4; not in ESM's release):
    /// `sequence_embed.weight` [21, d], the learned residue embedding summed with the token embedding.
    [<Literal>]
    let SequenceEmbedKey = "sequence_embed.weight"

    /// `expectedKeys`, followed by `SequenceEmbedKey` [21, d] when `sequenceInput`.
    let expectedKeysWith (sequenceInput: bool) (c: StructureDecoderConfig) : (string * int64[]) list =
        if sequenceInput then
            expectedKeys c
            @ [ SequenceEmbedKey, [| StructureDecoderConfig.SequenceRows; c.DModel |] ]
        else
            expectedKeys c

    /// Infers the sizes from the tensors' shapes of an ESM-format state dict, with `headWidth` channels per head
    /// (the one size the shapes do not determine): d from `embed.weight` [4101, d], Layers from the highest
    /// `decoder_stack.blocks.{i}` + 1, the pairwise widths from `pairwise_classification_head.downproject.weight`
    /// [P, d] and `.linear1.weight` [H, P]. A missing or mis-shaped tensor, or a d that is not a multiple of
    /// `headWidth`, raises an `InputException` naming `file` and the tensor. Shapes are not checked beyond what
    /// the inference reads (a strict load does that).
    let ofKeyShapesWith (headWidth: int64) (file: string) (shapes: seq<string * int64[]>) : StructureDecoderConfig =
        let keys = KeyShapes(file, "decoder", shapes)
        let fail (name: string) message = keys.Fail(name, message)
        let shapeOf (name: string) (rank: int) = keys.Require(name, rank)

        let embed = shapeOf "embed.weight" 2

        if embed.[0] <> StructureTokens.VocabularySize then
            fail
                "embed.weight"
                (sprintf
                    "expected %d rows (4096 codes + 5 special tokens), got shape %s"
                    StructureTokens.VocabularySize
                    (Shape.show embed))

        let d = embed.[1]

        if headWidth <= 0L || d % headWidth <> 0L then
            fail "embed.weight" (sprintf "d = %d is not a multiple of the head width %d" d headWidth)

        let layers =
            match Checkpoint.blockCount "decoder_stack.blocks" keys.Names with
            | Ok n -> n
            | Error key -> fail key "block index does not fit an int"

        if layers = 0 then
            fail "decoder_stack.blocks.0.attn.layernorm_qkv.1.weight" "missing: the file holds no decoder block"

        let down = shapeOf "pairwise_classification_head.downproject.weight" 2
        let linear1 = shapeOf "pairwise_classification_head.linear1.weight" 2

        // The structure module's sizes from its tensors (its round count is not in any shape: AlphaFold2's here;
        // `StructureDecoderCheckpoint.load` reads our export's metadata).
        let structureModule =
            if keys.Names |> Seq.exists (fun n -> n.StartsWith StructureModulePrefix) then
                let rows (name: string) =
                    (shapeOf (StructureModulePrefix + name) 2).[0]

                let h = (shapeOf (StructureModulePrefix + "ipa.head_weights") 1).[0]

                let per (name: string) (by: int64) =
                    let r = rows name

                    if h < 1L || r % (h * by) <> 0L then
                        fail (StructureModulePrefix + name) (sprintf "%d rows do not split into %d heads" r h)

                    r / (h * by)

                Some
                    {
                        Iterations = StructureModuleConfig.AlphaFold2Rounds
                        Attention =
                            {
                                DModel = d
                                Heads = h
                                ScalarQk = per "ipa.q.weight" 1L
                                ScalarV = per "ipa.v.weight" 1L
                                PointQk = per "ipa.q_points.weight" 3L
                                PointV = per "ipa.v_points.weight" 3L
                                MaxOffset = (rows "ipa.relative_position.weight" - 1L) / 2L
                            }
                        Start = StructureModuleStart.Identity
                    }
            else
                None

        let config =
            {
                DModel = d
                Heads = d / headWidth
                Layers = layers
                PairwiseDownproject = down.[0]
                PairwiseHidden = linear1.[0]
                StructureModule = structureModule
                ChainFrames = false
            }

        match StructureDecoderConfig.validate config with
        | Ok c -> c
        | Error errors ->
            InputError.raise
                file
                InputLocation.Whole
                ("the tensors' shapes give an invalid decoder: " + String.Join("; ", errors))

    /// `ofKeyShapesWith 64` (ESM's d_head). Shapes: any.
    let ofKeyShapes (file: string) (shapes: seq<string * int64[]>) = ofKeyShapesWith 64L file shapes

    /// Infers the sizes from a state dict's tensors (see `ofKeyShapesWith`; heads = d / 64, ESM's d_head).
    /// Shapes: any.
    let ofStateDict (file: string) (tensors: seq<string * torch.Tensor>) =
        ofKeyShapes file (tensors |> Seq.map (fun (n, t) -> n, t.shape))

    /// Compares a state dict's (name, shape) list with `expectedKeys`: missing, unexpected, duplicated and
    /// mis-shaped keys, without building the model. Shapes: any.
    let mismatches (c: StructureDecoderConfig) (shapes: seq<string * int64[]>) : CheckpointMismatch =
        Checkpoint.mismatchesOfShapes (expectedKeys c) shapes

    /// The attention head width a decoder file declares in its metadata ("head_width", written by our training
    /// export: shapes cannot tell it), else ESM's 64. A value that is not a positive integer raises an
    /// `InputException` naming `path` and the field.
    let headWidthOf (path: string) (metadata: Map<string, string>) : int64 =
        CheckpointMetadata.read path metadata "head_width" "a positive integer" CheckpointMetadata.positiveInt64 64L

    /// The structure module's round count from a file's metadata (`StructureModuleConfig.RoundsMetadataKey`, which
    /// our export writes), else AlphaFold2's 8. A value that is not a positive integer raises an `InputException`
    /// naming `path` and the field.
    let structureModuleIterationsOf (path: string) (metadata: Map<string, string>) : int =
        CheckpointMetadata.read
            path
            metadata
            StructureModuleConfig.RoundsMetadataKey
            "a positive integer"
            CheckpointMetadata.positiveInt
            StructureModuleConfig.AlphaFold2Rounds

    /// Where the structure module starts, from a file's metadata (`StructureModuleConfig.StartMetadataKey`, which
    /// our export writes for a module refining the affine head's frames), else AlphaFold2's identity. Any other value
    /// raises an `InputException` naming `path` and the field.
    let structureModuleStartOf (path: string) (metadata: Map<string, string>) : StructureModuleStart =
        CheckpointMetadata.read
            path
            metadata
            StructureModuleConfig.StartMetadataKey
            "identity or affine_head"
            StructureModuleConfig.tryStart
            StructureModuleStart.Identity

    /// Loads an ESM-format decoder from a safetensors file or a PyTorch checkpoint such as ESM's
    /// `esm3_structure_decoder_v0.pth` (`TensorFile`, told apart by content): the sizes are inferred from the
    /// tensors' shapes (`ofKeyShapesWith`, heads = d / head width, the head width read from the file's
    /// "head_width" metadata when present (our exports write it), else ESM's 64), every key and shape is checked
    /// against `expectedKeysWith` before the model is built, then the tensors are loaded
    /// strictly. A file holding `sequence_embed.weight` gives a decoder with sequence input; ESM's files give
    /// ESM's decoder. Any problem raises an `InputException` naming `path` and the tensors concerned. The model is
    /// float32 on the CPU, in eval mode. `heads` (a script's `--heads`) states the attention head count, which no
    /// state dict records: Some n overrides the metadata (n must divide d); None reads "head_width" from our metadata,
    /// else takes ESM's 64-wide heads, and a file without that metadata whose d is not a multiple of 64 (no ESM
    /// decoder) is refused with an error that names --heads rather than guessed.
    let loadWith (heads: int64 option) (path: string) : StructureDecoder =
        let header = TensorFile.readHeader path
        let shapes = header.Shapes

        let width =
            shapes
            |> List.tryFind (fun (n, _) -> n = "embed.weight")
            |> Option.bind (fun (_, s) -> if s.Length = 2 then Some s.[1] else None)

        let headWidth =
            match heads, width with
            | Some h, Some d when h > 0L && d % h = 0L -> d / h
            | Some h, Some d ->
                InputError.raise
                    path
                    (InputLocation.Field "embed.weight")
                    (sprintf "--heads %d does not divide the decoder's width d = %d" h d)
            | Some h, None when h <= 0L ->
                InputError.raise path InputLocation.Whole (sprintf "--heads must be positive (got %d)" h)
            | None, Some d when not (header.Metadata.ContainsKey "head_width") && d % 64L <> 0L ->
                InputError.raise
                    path
                    (InputLocation.Field "embed.weight")
                    (sprintf
                        "the file does not say how many attention heads its decoder has, and d = %d is not a multiple of ESM's 64-wide heads: pass --heads N"
                        d)
            | _ -> headWidthOf path header.Metadata

        let sequenceInput = shapes |> List.exists (fun (n, _) -> n = SequenceEmbedKey)

        let config =
            match ofKeyShapesWith headWidth path shapes with
            | { StructureModule = Some m } as c ->
                { c with
                    StructureModule =
                        Some
                            { m with
                                Iterations = structureModuleIterationsOf path header.Metadata
                                Start = structureModuleStartOf path header.Metadata
                            }
                }
            | c -> c

        let config =
            let chainFrames =
                CheckpointMetadata.read
                    path
                    header.Metadata
                    ChainFramesMetadataKey
                    "true or false"
                    (function
                    | "true" -> Some true
                    | "false" -> Some false
                    | _ -> None)
                    false

            { config with
                ChainFrames = chainFrames
            }

        let mismatch =
            Checkpoint.mismatchesOfShapes (expectedKeysWith sequenceInput config) shapes

        if not (Checkpoint.isEmpty mismatch) then
            InputError.raise
                path
                InputLocation.Whole
                (sprintf
                    "not a structure decoder with the inferred sizes (d %d, %d heads, %d layers, pairwise %d/%d): %s"
                    config.DModel
                    config.Heads
                    config.Layers
                    config.PairwiseDownproject
                    config.PairwiseHidden
                    (Checkpoint.describe mismatch))

        let model = new StructureDecoder(config, sequenceInput)

        try
            Checkpoint.load path model
            model.ConfidenceTrained <- confidenceTrainedOf header.Metadata
            model.PtmInformative <- ptmInformativeOf header.Metadata
            model.eval ()
            model
        with _ ->
            model.Dispose()
            reraise ()

    /// `loadWith None`: the head count from our metadata, else ESM's 64-wide heads.
    let load (path: string) : StructureDecoder = loadWith None path

    /// What a decoder file records beyond its tensors: "heads" and "head_width" (no state dict records them), the
    /// structure module's rounds (and its start, when not AlphaFold2's identity) and `ChainFramesMetadataKey` when
    /// `config` has them, then `status` (confidence heads, the pTM verdict, sequence input, or a file's own
    /// metadata), which wins on a repeated key.
    let metadataOf (config: StructureDecoderConfig) (status: (string * string) list) : Map<string, string> =
        [
            "heads", string config.Heads
            "head_width", string (config.DModel / config.Heads)
            match config.StructureModule with
            | Some m ->
                StructureModuleConfig.RoundsMetadataKey, string m.Iterations

                if m.Start <> StructureModuleStart.Identity then
                    StructureModuleConfig.StartMetadataKey, StructureModuleConfig.startName m.Start
            | None -> ()
            if config.ChainFrames then
                ChainFramesMetadataKey, "true"
        ]
        @ status
        |> Map.ofList

    /// Writes a decoder's tensors (ESM's keys, no prefix) as safetensors with `metadataOf config status`: the one
    /// writer of decoder files, for every training stage.
    let save
        (path: string)
        (tensors: seq<string * torch.Tensor>)
        (config: StructureDecoderConfig)
        (status: (string * string) list)
        =
        Safetensors.write path tensors (readOnlyDict (Map.toList (metadataOf config status)))
