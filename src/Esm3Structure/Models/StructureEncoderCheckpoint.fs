namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Tensors

/// The encoder's checkpoint files: sizes from the tensors' shapes (`ofKeyShapes`), strict loading and saving
/// with our metadata.
module StructureEncoderCheckpoint =

    /// Metadata key of our exports giving a finite scalar quantizer's levels ("8,5,5,5"; absent for codebooks).
    [<Literal>]
    let FiniteLevelsMetadataKey = "fsq_levels"

    /// Infers an encoder's sizes from the (name, shape) list of an ESM-format state dict: d from
    /// `relative_positional_embedding.embedding.weight` [2·bins + 2, d] (which gives the bins too), Layers from the
    /// highest `transformer.blocks.{i}` + 1, VHeads from `transformer.blocks.0.geom_attn.distance_scale_per_head`
    /// [V], codes K and DOut from `codebook.embeddings` [K, DOut], the SwiGLU ratio from
    /// `transformer.blocks.0.ffn.3.weight` [d, F] (F / d, checked to give F back). Knn and the rest keep ESM's
    /// defaults (`StructureEncoderConfig.esm3`). A missing or mis-shaped tensor raises an `InputException` naming
    /// `file` and the tensor; a file with none of the encoder's tensors is reported as not an encoder.
    let ofKeyShapes (file: string) (shapes: seq<string * int64[]>) : StructureEncoderConfig =
        let keys = KeyShapes(file, "encoder", shapes)
        let fail (name: string) message = keys.Fail(name, message)

        let embeddingKey = "relative_positional_embedding.embedding.weight"

        if not (keys.Contains embeddingKey) && not (keys.Contains "codebook.embeddings") then
            InputError.raise
                file
                InputLocation.Whole
                (sprintf
                    "not a structure encoder: it has neither '%s' nor 'codebook.embeddings' (%d tensors)"
                    embeddingKey
                    keys.Count)

        let shapeOf (name: string) (rank: int) = keys.Require(name, rank)

        let embedding = shapeOf embeddingKey 2

        if embedding.[0] < 4L || embedding.[0] % 2L <> 0L then
            fail embeddingKey (sprintf "expected 2·bins + 2 rows (bins ≥ 1), got shape %s" (Shape.show embedding))

        let d = embedding.[1]
        let bins = (embedding.[0] - 2L) / 2L

        let layers =
            match Checkpoint.blockCount "transformer.blocks" keys.Names with
            | Ok n -> n
            | Error key -> fail key "block index out of range"

        if layers = 0 then
            fail "transformer.blocks.0.geom_attn.distance_scale_per_head" "missing: the file holds no encoder block"

        let scaleKey = "transformer.blocks.0.geom_attn.distance_scale_per_head"
        let vHeads = (shapeOf scaleKey 1).[0]
        let codebook = shapeOf "codebook.embeddings" 2
        let ffnKey = "transformer.blocks.0.ffn.3.weight"
        let ffn = shapeOf ffnKey 2

        if ffn.[0] <> d then
            fail ffnKey (sprintf "expected [d = %d, F], got shape %s" d (Shape.show ffn))

        let ratio = float ffn.[1] / float d

        if FeedForward.swigluHidden ratio d <> ffn.[1] then
            fail ffnKey (sprintf "hidden width %d is not a multiple of 256 (ESM's SwiGLU rounding)" ffn.[1])

        // Our residue-level blocks (not ESM's keys): their count from the highest `global_transformer.blocks.{i}`.
        let globalLayers =
            match Checkpoint.blockCount "global_transformer.blocks" keys.Names with
            | Ok n -> n
            | Error key -> fail key "block index out of range"

        let config =
            { StructureEncoderConfig.esm3 with
                DModel = d
                VHeads = vHeads
                Layers = layers
                DOut = codebook.[1]
                ExpansionRatio = ratio
                PositionBins = bins
                NeighbourGeometry = keys.Contains "neighbour_geometry_proj.weight"
                GlobalLayers = globalLayers
                Quantizer =
                    { StructureEncoderConfig.esm3.Quantizer with
                        Codes = codebook.[0]
                        Dim = codebook.[1]
                    }
            }

        match StructureEncoderConfig.validate config with
        | Ok config -> config
        | Error errors ->
            InputError.raise
                file
                InputLocation.Whole
                ("the tensors' shapes give an invalid encoder: " + String.Join("; ", errors))

    /// Loads an ESM-format encoder (`StructureTokenEncoder`'s keys, no prefix) from a safetensors file or a PyTorch
    /// checkpoint such as ESM's `esm3_structure_encoder_v0.pth` (`TensorFile`, told apart by content): sizes from
    /// `ofKeyShapes`, every key and shape checked against the built module, then a strict load. Any problem
    /// raises an `InputException` naming `path` and the tensors concerned. The model is float32 on the CPU, in eval
    /// mode.
    let load (path: string) : StructureEncoder =
        let header = TensorFile.readHeader path
        let shapes = header.Shapes
        let config = ofKeyShapes path shapes

        // A finite scalar quantizer's grid is stored as `codebook.embeddings`; its levels come from our metadata.
        let config =
            let levelsOf (text: string) =
                let parts = text.Split(',') |> Array.map (fun p -> Int32.TryParse(p.Trim()))

                if parts |> Array.forall fst then
                    Some(parts |> Array.map snd |> List.ofArray)
                else
                    None

            match
                CheckpointMetadata.read path header.Metadata FiniteLevelsMetadataKey "levels like 8,5,5,5" levelsOf []
            with
            | [] -> config
            | levels ->
                let field = CheckpointMetadata.field FiniteLevelsMetadataKey
                let text = String.Join(",", levels)
                let quantizer = QuantizerConfig.finite levels

                if quantizer.Codes <> config.Quantizer.Codes || quantizer.Dim <> config.DOut then
                    InputError.raise
                        path
                        field
                        (sprintf
                            "levels %s give %d × %d codes, but 'codebook.embeddings' is %d × %d"
                            text
                            quantizer.Codes
                            quantizer.Dim
                            config.Quantizer.Codes
                            config.DOut)

                match QuantizerConfig.validate quantizer with
                | Error errors -> InputError.raise path field (String.Join("; ", errors))
                | Ok q -> { config with Quantizer = q }

        let model = new StructureEncoder(config, new torch.Generator(0UL))

        try
            let mismatch = Checkpoint.mismatchesOfShapes (Checkpoint.keyShapes model) shapes

            let problems =
                [
                    for w in mismatch.WrongShape ->
                        sprintf "'%s' has shape %s, expected %s" w.Name (Shape.show w.Got) (Shape.show w.Expected)
                    for name in mismatch.Missing -> sprintf "'%s' is missing" name
                    for name in mismatch.Unexpected -> sprintf "'%s' is not an encoder tensor" name
                    for name in mismatch.Duplicated -> sprintf "'%s' appears more than once" name
                ]

            if not problems.IsEmpty then
                InputError.raise
                    path
                    InputLocation.Whole
                    (sprintf
                        "not a structure encoder with the inferred sizes (d %d, %d vector heads, %d layers, %d × %d codes): %s"
                        config.DModel
                        config.VHeads
                        config.Layers
                        config.Quantizer.Codes
                        config.DOut
                        (String.Join("; ", problems)))

            Checkpoint.load path model
            model.eval ()
            model
        with _ ->
            model.Dispose()
            reraise ()

    /// Writes an encoder as safetensors with ESM's keys (no prefix); the metadata records what the shapes do not
    /// say: "v_heads", "layers" and, for a finite scalar quantizer, its levels (`FiniteLevelsMetadataKey`).
    let save (path: string) (model: StructureEncoder) =
        let c = model.Config

        Checkpoint.save
            path
            model
            (readOnlyDict
                [
                    "v_heads", string c.VHeads
                    "layers", string c.Layers
                    if c.Quantizer.Kind = QuantizerKind.Finite then
                        FiniteLevelsMetadataKey, String.Join(",", c.Quantizer.Levels)
                ])
