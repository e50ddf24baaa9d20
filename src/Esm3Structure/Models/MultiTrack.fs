namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Nn
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// The inputs of the multi-track model, one tensor per track, BOS/EOS included (ESM's `ESM3.forward` arguments).
/// `MultiTrackInput.absent` gives ESM's defaults for every track (§8.7); fill in what you have with `{ … with }`.
type MultiTrackInput =
    {
        /// Sequence ids (`SequenceTokenizer`). Shapes: [B, L] int64
        Sequence: torch.Tensor
        /// Structure tokens 0 … 4100 (−1 is read as MASK); overridden at BOS/EOS/PAD/chain-break positions of the
        /// sequence (`MultiTrack.overrideStructureTokens`). Shapes: [B, L] int64
        Structure: torch.Tensor
        /// SS8 ids 0 … 10. Shapes: [B, L] int64
        Ss8: torch.Tensor
        /// SASA ids 0 … 18. Shapes: [B, L] int64
        Sasa: torch.Tensor
        /// Function ids 0 … 259. Shapes: [B, L, 8] int64
        Function: torch.Tensor
        /// Residue annotation ids 0 … 1477, 0 = empty slot. Shapes: [B, L, 16] int64
        ResidueAnnotations: torch.Tensor
        /// Backbone N, CA, C (atom14/atom37 layouts allowed: atoms 0–2 are read); NaN or ±inf rows have no frame.
        /// Shapes: [B, L, ≥3, 3] float
        Coordinates: torch.Tensor
        /// Mean pLDDT of the chain in [0, 1]. Shapes: [B, L] or [B, 1] float
        AveragePlddt: torch.Tensor
        /// Per-residue pLDDT in [0, 1]. Shapes: [B, L] float
        PerResiduePlddt: torch.Tensor
        /// Packed-sequence ids: attention only within equal ids (e.g. 0 for tokens, 1 for padding). null = all one
        /// sequence (ESM's inference default: padding is attended to). Shapes: [B, L] int64 | null
        SequenceId: torch.Tensor
    }

/// Constructors of `MultiTrackInput`.
module MultiTrackInput =

    /// ESM's defaults for absent tracks (ESM3-REFERENCE.md §8.7): sequence all MASK (32), structure all MASK (4096),
    /// SS8/SASA/function/residue all 0, coordinates NaN, average pLDDT 1, per-residue pLDDT 0, no sequence id.
    /// Shapes: -> tracks [B, L], coordinates [B, L, 3, 3] float32
    let absent (b: int64) (l: int64) (device: torch.Device) : MultiTrackInput =
        let full (shape: int64[]) (value: int64) =
            torch.full (shape, value.ToScalar(), dtype = torch.int64, device = device)

        {
            Sequence = full [| b; l |] SequenceTokenizer.Mask
            Structure = full [| b; l |] StructureTokens.Mask
            Ss8 = full [| b; l |] Tracks.Absent
            Sasa = full [| b; l |] Tracks.Absent
            Function = full [| b; l; Tracks.FunctionSlots |] Tracks.Absent
            ResidueAnnotations = full [| b; l; Tracks.ResidueSlots |] Tracks.Absent
            Coordinates = torch.full ([| b; l; 3L; 3L |], Double.NaN.ToScalar(), dtype = torch.float32, device = device)
            AveragePlddt = torch.ones ([| b; l |], dtype = torch.float32, device = device)
            PerResiduePlddt = torch.zeros ([| b; l |], dtype = torch.float32, device = device)
            SequenceId = null
        }

    /// Every tensor moved to `device` (dtypes kept).
    let toDevice (device: torch.Device) (x: MultiTrackInput) =
        let m (t: torch.Tensor) = if isNull t then t else t.``to`` device

        {
            Sequence = m x.Sequence
            Structure = m x.Structure
            Ss8 = m x.Ss8
            Sasa = m x.Sasa
            Function = m x.Function
            ResidueAnnotations = m x.ResidueAnnotations
            Coordinates = m x.Coordinates
            AveragePlddt = m x.AveragePlddt
            PerResiduePlddt = m x.PerResiduePlddt
            SequenceId = m x.SequenceId
        }

    /// Checks every track's shape against the sequence's [B, L]; an `ArgumentException` names the track.
    let checkShapes (x: MultiTrackInput) =
        Shape.expect "Sequence" [| -1L; -1L |] x.Sequence
        let b, l = x.Sequence.shape.[0], x.Sequence.shape.[1]
        Shape.expect "Structure" [| b; l |] x.Structure
        Shape.expect "Ss8" [| b; l |] x.Ss8
        Shape.expect "Sasa" [| b; l |] x.Sasa
        Shape.expect "Function" [| b; l; Tracks.FunctionSlots |] x.Function
        Shape.expect "ResidueAnnotations" [| b; l; Tracks.ResidueSlots |] x.ResidueAnnotations

        if
            x.Coordinates.dim () <> 4L
            || x.Coordinates.shape.[0] <> b
            || x.Coordinates.shape.[1] <> l
            || x.Coordinates.shape.[2] < 3L
            || x.Coordinates.shape.[3] <> 3L
        then
            Shape.mismatch "Coordinates" (sprintf "[%d, %d, ≥3, 3]" b l) x.Coordinates

        if
            x.AveragePlddt.dim () <> 2L
            || x.AveragePlddt.shape.[0] <> b
            || (x.AveragePlddt.shape.[1] <> l && x.AveragePlddt.shape.[1] <> 1L)
        then
            Shape.mismatch "AveragePlddt" (sprintf "[%d, %d] or [%d, 1]" b l b) x.AveragePlddt

        Shape.expect "PerResiduePlddt" [| b; l |] x.PerResiduePlddt

        if not (isNull x.SequenceId) then
            Shape.expect "SequenceId" [| b; l |] x.SequenceId

/// What the multi-track model returns (ESM's `ESMOutput`).
type MultiTrackOutput =
    {
        /// Shapes: [B, L, 64]
        SequenceLogits: torch.Tensor
        /// Shapes: [B, L, 4096]
        StructureLogits: torch.Tensor
        /// Shapes: [B, L, 11]
        Ss8Logits: torch.Tensor
        /// Shapes: [B, L, 19]
        SasaLogits: torch.Tensor
        /// Slot-major (ESM's `(k v) -> k v`). Shapes: [B, L, 8, 260]
        FunctionLogits: torch.Tensor
        /// Multi-label logits. Shapes: [B, L, 1478]
        ResidueLogits: torch.Tensor
        /// ESM's `embeddings`: the trunk's stream before its final LayerNorm (`TransformerStack.forward` returns
        /// `(self.norm(x), x, hiddens)` and `ESM3.forward` keeps the second; checked against ESM's own forward pass
        /// by the parity test). Shapes: [B, L, d]
        Embeddings: torch.Tensor
        /// The stream after the final LayerNorm, which the heads read. Shapes: [B, L, d]
        PostNorm: torch.Tensor
    }

/// Pure pieces of ESM3's forward pass.
module MultiTrack =

    /// ESM's structure-token overrides, in its order: −1 → MASK; then where the sequence is BOS → 4098, PAD → 4099,
    /// EOS → 4097, chain break → 4100 (whatever the structure input says there).
    /// Shapes: sequence [B, L], structure [B, L] int64 -> [B, L] int64
    let overrideStructureTokens (sequence: torch.Tensor) (structure: torch.Tensor) =
        let fill (id: int64) (where: torch.Tensor) (t: torch.Tensor) = t.masked_fill (where, id.ToScalar())

        let sequenceIs (id: int64) = sequence.eq (id.ToScalar())

        structure
        |> fill StructureTokens.Mask (structure.eq ((-1L).ToScalar()))
        |> fill StructureTokens.Bos (sequenceIs SequenceTokenizer.Bos)
        |> fill StructureTokens.Pad (sequenceIs SequenceTokenizer.Pad)
        |> fill StructureTokens.Eos (sequenceIs SequenceTokenizer.Eos)
        |> fill StructureTokens.ChainBreak (sequenceIs SequenceTokenizer.ChainBreak)

    /// ESM's `rbf(v, 0, 1, 16)`: exp(−((v − c_k)/σ)²) with centres c_k = k/15 and σ = 1/16.
    /// Shapes: v [*] -> [*, 16]
    let plddtRbf (v: torch.Tensor) =
        let centres =
            torch.linspace (0.0, 1.0, Tracks.PlddtBins, dtype = v.dtype, device = v.device)

        let z = (v.unsqueeze (-1L) - centres) / (1.0 / float Tracks.PlddtBins)
        (-(z * z)).exp()

/// ESM's `EncodeInputs`: the sum of eight embeddings (ESM3-REFERENCE.md §9.2). Keys `sequence_embed`,
/// `plddt_projection`, `structure_per_res_plddt_projection`, `structure_tokens_embed`, `ss8_embed`, `sasa_embed`,
/// `function_embed.{0..7}` (padding index 0), `residue_embed` (summed like an `EmbeddingBag` with padding index 0:
/// slots holding 0 are skipped whatever row 0 holds).
type MultiTrackInputEncoder(dModel: int64) as this =
    inherit torch.nn.Module<MultiTrackInput, torch.Tensor>("EncodeInputs")

    let sequence_embed = torch.nn.Embedding(Tracks.SequenceWidth, dModel)
    let plddt_projection = torch.nn.Linear(Tracks.PlddtBins, dModel)
    let structure_per_res_plddt_projection = torch.nn.Linear(Tracks.PlddtBins, dModel)

    let structure_tokens_embed =
        torch.nn.Embedding(StructureTokens.VocabularySize, dModel)

    let ss8_embed = torch.nn.Embedding(Tracks.Ss8Vocabulary, dModel)
    let sasa_embed = torch.nn.Embedding(Tracks.SasaVocabulary, dModel)

    let function_embed =
        torch.nn.ModuleList<torch.nn.Module<torch.Tensor, torch.Tensor>>(
            [|
                for _ in 1L .. Tracks.FunctionSlots ->
                    torch.nn.Embedding(Tracks.FunctionVocabulary, dModel / Tracks.FunctionSlots, padding_idx = 0L)
                    :> torch.nn.Module<torch.Tensor, torch.Tensor>
            |]
        )

    let residue_embed =
        torch.nn.Embedding(Tracks.ResidueVocabulary, dModel, padding_idx = 0L)

    do this.RegisterComponents()

    /// PyTorch's defaults, in key order: embeddings N(0, 1), the function and residue-annotation tables with their
    /// padding row 0 (`padding_idx` 0: the absent annotation adds nothing), the pLDDT projections uniform in
    /// ±1/sqrt(16) (biases 0).
    interface IInitialise with
        member _.Initialise generator =
            Init.embedding generator sequence_embed
            Init.linear generator plddt_projection
            Init.linear generator structure_per_res_plddt_projection
            Init.embedding generator structure_tokens_embed
            Init.embedding generator ss8_embed
            Init.embedding generator sasa_embed

            for m in function_embed do
                Init.embeddingPadded generator 0L (m :?> Modules.Embedding)

            Init.embeddingPadded generator 0L residue_embed

    /// The summed input embedding. Coordinates are not read (they feed the geometric attention).
    /// Shapes: input tracks [B, L, …] -> [B, L, d], in the parameters' dtype
    override _.forward(x: MultiTrackInput) =
        let dtype = sequence_embed.weight.dtype
        let rbf (v: torch.Tensor) = MultiTrack.plddtRbf (v.to_type dtype)

        let functionEmbed =
            torch.cat (
                [|
                    for t in 0 .. int Tracks.FunctionSlots - 1 ->
                        function_embed.[t].forward(x.Function.select (-1L, int64 t))
                |],
                -1L
            )

        // EmbeddingBag(sum, padding_idx 0): slots holding 0 are skipped.
        let residueEmbed =
            (residue_embed.forward x.ResidueAnnotations
             * x.ResidueAnnotations.ne(Tracks.Absent.ToScalar()).unsqueeze(-1L).to_type(dtype))
                .sum(-2L)

        sequence_embed.forward x.Sequence
        + plddt_projection.forward (rbf x.AveragePlddt)
        + structure_per_res_plddt_projection.forward (rbf x.PerResiduePlddt)
        + structure_tokens_embed.forward x.Structure
        + ss8_embed.forward x.Ss8
        + sasa_embed.forward x.Sasa
        + functionEmbed
        + residueEmbed

/// ESM's `OutputHeads`: six sequential regression heads (Linear → GELU → LayerNorm → Linear, biases on; keys
/// `{sequence,structure,ss8,sasa,function,residue}_head.{0,2,3}.*`).
type MultiTrackOutputHeads(dModel: int64) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor, MultiTrackOutput>("OutputHeads")

    // evolutionaryscale/esm `esm/layers/regression_head.py`: hidden width = d.
    let head (width: int64) =
        let m (x: torch.nn.Module<torch.Tensor, torch.Tensor>) = x

        torch.nn.Sequential(
            ("0", m (torch.nn.Linear(dModel, dModel))),
            ("1", m (torch.nn.GELU())),
            ("2", m (torch.nn.LayerNorm([| dModel |], 1e-5))),
            ("3", m (torch.nn.Linear(dModel, width)))
        )

    let sequence_head = head Tracks.SequenceWidth
    let structure_head = head StructureTokens.CodebookSize
    let ss8_head = head Tracks.Ss8Vocabulary
    let sasa_head = head Tracks.SasaVocabulary
    let function_head = head (Tracks.FunctionSlots * Tracks.FunctionVocabulary)
    let residue_head = head Tracks.ResidueVocabulary

    do this.RegisterComponents()

    /// Each head's PyTorch defaults, in key order: `0` and `3` uniform in ±1/sqrt(d) (biases 0), `2` (LayerNorm)
    /// weight 1, bias 0.
    interface IInitialise with
        member _.Initialise generator =
            for h in
                [
                    sequence_head
                    structure_head
                    ss8_head
                    sasa_head
                    function_head
                    residue_head
                ] do
                Init.linear generator (h.[0] :?> Modules.Linear)
                Init.layerNorm (h.[2] :?> Modules.LayerNorm)
                Init.linear generator (h.[3] :?> Modules.Linear)

    /// Shapes: x [B, L, d] (post-norm), preNorm [B, L, d] -> MultiTrackOutput
    override _.forward(x: torch.Tensor, preNorm: torch.Tensor) =
        {
            SequenceLogits = sequence_head.forward x
            StructureLogits = structure_head.forward x
            Ss8Logits = ss8_head.forward x
            SasaLogits = sasa_head.forward x
            FunctionLogits =
                Shape.unflattenLast [| Tracks.FunctionSlots; Tracks.FunctionVocabulary |] (function_head.forward x)
            ResidueLogits = residue_head.forward x
            Embeddings = preNorm
            PostNorm = x
        }

/// ESM3's multi-track model (`esm/models/esm3.py`; ESM3-REFERENCE.md §9): structure-token overrides, backbone
/// frames from the coordinates, the input sum (`encoder`), the trunk (`transformer`, geometric attention in its
/// first `GeometricLayers` blocks, unframed rows zeroed) and six heads (`output_heads`). Keys exactly
/// `MultiTrackCheckpoint.expectedKeys`. Parameters are initialised from `generator` (PyTorch-style defaults, padding
/// rows zero); a null `generator` leaves TorchSharp's own initialisation, for a model whose values are loaded next.
type MultiTrackModel(config: MultiTrackConfig, generator: torch.Generator) as this =
    inherit torch.nn.Module<MultiTrackInput, MultiTrackOutput>("ESM3")

    do Validation.check "multi-track" (MultiTrackConfig.validate config) |> ignore

    let encoder = new MultiTrackInputEncoder(config.DModel)
    let transformer = new TransformerStack(MultiTrackConfig.stack config)
    let output_heads = new MultiTrackOutputHeads(config.DModel)

    // Each part's own rules, in key order.
    let initialise (generator: torch.Generator) =
        Init.initialise generator encoder
        Init.initialise generator transformer
        Init.initialise generator output_heads

    do
        this.RegisterComponents()

        // A null generator: every value is about to be loaded (`MultiTrackCheckpoint.load`), so the
        // initialisation (a pass over every parameter, 30 s at ESM3-open's size here) is skipped.
        if not (isNull generator) then
            initialise generator

    member _.Config = config

    /// The encoder's, the trunk's and the heads' own rules, in key order (the constructor applies them unless
    /// its generator is null).
    interface IInitialise with
        member _.Initialise generator = initialise generator

    /// The summed input embedding of `input` after the structure overrides. Shapes: -> [B, L, d]
    member _.EmbedInputs(input: MultiTrackInput) =
        MultiTrackInput.checkShapes input

        encoder.forward
            { input with
                Structure = MultiTrack.overrideStructureTokens input.Sequence input.Structure
            }

    /// ESM3's forward pass. Shapes: input tracks [B, L, …] -> MultiTrackOutput (logits [B, L, …])
    override this.forward(input: MultiTrackInput) =
        let x = this.EmbedInputs input
        let coordinates = input.Coordinates.narrow(2L, 0L, 3L).to_type x.dtype
        let bf = Frame.ofBackbone coordinates
        let sequenceId = Option.ofObj input.SequenceId

        let mask =
            match sequenceId with
            | Some ids -> AttentionMask.Allowed(AttentionMask.sameSequence ids)
            | None -> AttentionMask.None

        let context =
            {
                Mask = mask
                Geometry =
                    Some
                        {
                            Frames = bf.Frames
                            Framed = bf.Mask
                            SequenceId = sequenceId
                            ChainId = None
                        }
            }

        let post, pre = transformer.ForwardWithPreNorm(x, context)
        output_heads.forward (post, pre)
