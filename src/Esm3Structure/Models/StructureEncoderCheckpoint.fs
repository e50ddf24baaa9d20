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

    /// Metadata key of our exports giving `PrincipalGrid` in Å (absent: exact positions).
    [<Literal>]
    let PrincipalGridMetadataKey = "principal_grid"

    /// Every state-dict key with its shape, in PyTorch's order, computed without building the model: per block
    /// `transformer.blocks.{i}.geom_attn.*` and `.ffn.*` (biased, ESM3-REFERENCE.md §5), `pre_vq_proj.*`, the
    /// codebook's (by kind: ESM's EMA `embeddings`, `N`, `z_avg`; a gradient codebook's `codebook.weight`, plus
    /// `linear_proj.*` when reparameterised; a finite quantizer's grid as `embeddings`),
    /// `relative_positional_embedding.embedding.weight`, then our options' (`neighbour_geometry_proj.*`,
    /// `sequence_step_proj.*`, `principal_position_proj.*`, `global_transformer.blocks.{i}.*`).
    let expectedKeys (c: StructureEncoderConfig) : (string * int64[]) list =
        let d, v = c.DModel, c.VHeads
        let f = FeedForward.swigluHidden c.ExpansionRatio d
        let k, dim = c.Quantizer.Codes, c.DOut

        // ESM's geometric attention: 15 V projected channels (rotation and distance queries, keys, values), 3 V out.
        let geometric (b: string) =
            [
                b + "geom_attn.distance_scale_per_head", [| v |]
                b + "geom_attn.rotation_scale_per_head", [| v |]
                b + "geom_attn.s_norm.weight", [| d |]
                b + "geom_attn.s_norm.bias", [| d |]
                b + "geom_attn.proj.weight", [| 15L * v; d |]
                b + "geom_attn.proj.bias", [| 15L * v |]
                b + "geom_attn.out_proj.weight", [| d; 3L * v |]
                b + "geom_attn.out_proj.bias", [| d |]
            ]

        let feedForward (b: string) =
            [
                b + "ffn.0.weight", [| d |]
                b + "ffn.0.bias", [| d |]
                b + "ffn.1.weight", [| 2L * f; d |]
                b + "ffn.1.bias", [| 2L * f |]
                b + "ffn.3.weight", [| d; f |]
                b + "ffn.3.bias", [| d |]
            ]

        [
            for i in 0 .. c.Layers - 1 do
                let b = sprintf "transformer.blocks.%d." i
                yield! geometric b
                yield! feedForward b
            "pre_vq_proj.weight", [| dim; d |]
            "pre_vq_proj.bias", [| dim |]
            match c.Quantizer.Kind with
            | QuantizerKind.Ema ->
                "codebook.embeddings", [| k; dim |]
                "codebook.N", [| k |]
                "codebook.z_avg", [| k; dim |]
            | QuantizerKind.Gradient -> "codebook.codebook.weight", [| k; dim |]
            | QuantizerKind.Reparameterised ->
                "codebook.codebook.weight", [| k; dim |]
                "codebook.linear_proj.weight", [| dim; dim |]
                "codebook.linear_proj.bias", [| dim |]
            | _ -> "codebook.embeddings", [| k; dim |] // Finite: its grid
            "relative_positional_embedding.embedding.weight", [| 2L * c.PositionBins + 2L; d |]
            if c.NeighbourGeometry then
                "neighbour_geometry_proj.weight", [| d; NeighbourGeometry.Width |]
                "neighbour_geometry_proj.bias", [| d |]
                "sequence_step_proj.weight", [| d; NeighbourGeometry.StepWidth |]
                "sequence_step_proj.bias", [| d |]
            if c.PrincipalPosition then
                "principal_position_proj.weight", [| d; 3L |]
                "principal_position_proj.bias", [| d |]
            for i in 0 .. c.GlobalLayers - 1 do
                let b = sprintf "global_transformer.blocks.%d." i
                b + "attn.layernorm_qkv.0.weight", [| d |]
                b + "attn.layernorm_qkv.0.bias", [| d |]
                b + "attn.layernorm_qkv.1.weight", [| 3L * d; d |]
                b + "attn.layernorm_qkv.1.bias", [| 3L * d |]
                b + "attn.out_proj.weight", [| d; d |]
                b + "attn.out_proj.bias", [| d |]
                b + "attn.q_ln.weight", [| d |]
                b + "attn.q_ln.bias", [| d |]
                b + "attn.k_ln.weight", [| d |]
                b + "attn.k_ln.bias", [| d |]
                yield! geometric b
                yield! feedForward b
        ]

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
                PrincipalPosition = keys.Contains "principal_position_proj.weight"
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

        let config =
            let grid =
                CheckpointMetadata.read
                    path
                    header.Metadata
                    PrincipalGridMetadataKey
                    "a grid in Å ≥ 0"
                    (CheckpointMetadata.finite >> Option.filter (fun g -> g >= 0.0))
                    0.0

            if grid > 0.0 && not config.PrincipalPosition then
                InputError.raise
                    path
                    (CheckpointMetadata.field PrincipalGridMetadataKey)
                    "a principal-position grid without 'principal_position_proj.*'"

            { config with PrincipalGrid = grid }

        let model = new StructureEncoder(config, new torch.Generator(0UL))

        try
            let mismatch = Checkpoint.mismatchesOfShapes (expectedKeys config) shapes

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
    /// say: "v_heads", "layers", for a finite scalar quantizer its levels (`FiniteLevelsMetadataKey`), and a
    /// principal-position grid (`PrincipalGridMetadataKey`).
    /// A product codebook (`ProductCodebook`) is written as the ordinary EMA codebook it equals: `codebook.embeddings`
    /// its Cartesian table [K, D] (whose nearest row is the product's token), `codebook.N` the joint counts and
    /// `codebook.z_avg` = N · embeddings, so the file loads as ESM's `EMACodebook` and tokenizes alike.
    let save (path: string) (model: StructureEncoder) =
        let c = model.Config
        use _ = torch.no_grad ()

        let tensors =
            match model.Codebook with
            | :? ProductCodebook as product ->
                let table = product.Codes
                let n = product.JointCounts
                let mutable written = false

                [
                    for name, t in Checkpoint.stateDict model do
                        if name.StartsWith "codebook.groups." then
                            if not written then
                                written <- true
                                "codebook.embeddings", table
                                "codebook.N", n
                                "codebook.z_avg", table * n.unsqueeze 1L
                        else
                            name, t
                ]
            | _ -> Checkpoint.stateDict model

        Safetensors.write
            path
            tensors
            (readOnlyDict
                [
                    "v_heads", string c.VHeads
                    "layers", string c.Layers
                    if c.Quantizer.Kind = QuantizerKind.Finite then
                        FiniteLevelsMetadataKey, String.Join(",", c.Quantizer.Levels)
                    if c.PrincipalGrid > 0.0 then
                        PrincipalGridMetadataKey,
                        c.PrincipalGrid.ToString("R", Globalization.CultureInfo.InvariantCulture)
                ])
