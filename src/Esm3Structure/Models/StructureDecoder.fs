namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// Everything the decoder computes for a batch of structure tokens (ESM3-REFERENCE.md §7.2–7.5).
type StructureDecoderOutput =
    {
        /// The trunk's output (after the final LayerNorm). [B, L, d]
        Hidden: torch.Tensor
        /// Residue frames (ESM's `tensor7_affine`, which is the 12-float layout: `Frame.toTensor12`). [B, L]
        Frames: Frame
        /// N, CA, C in Å (ESM's `bb_pred`). [B, L, 3, 3]
        Backbone: torch.Tensor
        /// With a structure module, the backbone after every round, the last equal to `Backbone` (AlphaFold2
        /// averages its FAPE over them); empty for ESM's affine head. [B, L, 3, 3] each
        RoundBackbones: torch.Tensor list
        /// The backbone head's 14 unused channels as 7 torsions × (sin, cos), unnormalised. [B, L, 7, 2]
        TorsionLogits: torch.Tensor
        /// pLDDT bin logits; null when decoded without confidence (`DecodeEmbeddings`, stage-1 training). [B, L, 50]
        PlddtLogits: torch.Tensor
        /// pLDDT in [0.01, 0.99] (float32, or float64 for a float64 model); null without confidence. [B, L]
        Plddt: torch.Tensor
        /// Distogram logits (pairwise channels 0–63). [B, L, L, 64]
        DistogramLogits: torch.Tensor
        /// Direction logits, 6 × 16 bins (pairwise channels 64–159). [B, L, L, 96]
        DirectionLogits: torch.Tensor
        /// pAE logits (pairwise channels 160–223); null without confidence. [B, L, L, 64]
        PaeLogits: torch.Tensor
        /// Predicted aligned error in Å; entries involving a special token hold the uniform 16 Å; no gradient; null
        /// without confidence. [B, L, L]
        Pae: torch.Tensor
        /// pTM over the real (code) tokens; no gradient; null without confidence. [B]
        Ptm: torch.Tensor
    }

/// ESM's `StructureTokenDecoder` (evolutionaryscale/esm `esm/models/vqvae.py`): token embedding, a plain
/// transformer stack, and three heads. State-dict keys and order as ESM
/// (`StructureDecoderCheckpoint.expectedKeys`): `embed`, `decoder_stack`, `affine_output_projection`,
/// `pairwise_classification_head`, `plddt_head`.
///
/// With `sequenceInput` (stage 2, ESM3-TRAINING.md §1.4) the decoder also owns a learned residue embedding
/// `sequence_embed` [21, d] (key `StructureDecoderCheckpoint.SequenceEmbedKey`, after ESM's keys) that
/// `DecodeTokens` adds to the token embedding where a residue type is given. Without it (the default) the key set
/// and every output are ESM's.
type StructureDecoder(config: StructureDecoderConfig, sequenceInput: bool) as this =
    inherit torch.nn.Module<torch.Tensor, StructureDecoderOutput>("StructureTokenDecoder")

    do
        Validation.check "structure decoder" (StructureDecoderConfig.validate config)
        |> ignore

    let embed = torch.nn.Embedding(StructureTokens.VocabularySize, config.DModel)

    let decoder_stack = new TransformerStack(StructureDecoderConfig.stack config)

    let affine_output_projection = new Dim6RotStructureHead(config.DModel)

    let pairwise_classification_head =
        new PairwisePredictionHead(
            config.DModel,
            config.PairwiseDownproject,
            config.PairwiseHidden,
            StructureDecoderConfig.PairwiseBins,
            false
        )

    let plddt_head = new RegressionHead(config.DModel, Plddt.Bins)

    // Optional parts are not Module-typed fields, so RegisterComponents skips them; registered by name below.
    let structureModule =
        config.StructureModule |> Option.map (fun c -> new StructureModule(c))

    let sequenceEmbed =
        if sequenceInput then
            Some(torch.nn.Embedding(StructureDecoderConfig.SequenceRows, config.DModel))
        else
            None

    do
        this.RegisterComponents()

        match structureModule with
        | Some m -> this.register_module ("structure_module", m)
        | None -> ()

        match sequenceEmbed with
        | Some m -> this.register_module ("sequence_embed", m)
        | None -> ()

    /// ESM's decoder (no sequence input).
    new(config: StructureDecoderConfig) = new StructureDecoder(config, false)

    /// The sizes.
    member _.Config = config

    /// False when the pLDDT and pAE heads were never trained (a stage-1 export), so that pLDDT, pAE and pTM carry
    /// no information: `StructureDecoderCheckpoint.load` sets it from the file
    /// (`StructureDecoderCheckpoint.confidenceTrainedOf`); true for a decoder built in code.
    member val ConfidenceTrained = true with get, set

    /// False when pTM carries no information (untrained heads, or a confidence stage whose validated pTM did not
    /// track quality): `StructureDecoderCheckpoint.load` sets it (`StructureDecoderCheckpoint.ptmInformativeOf`);
    /// true in code.
    member val PtmInformative = true with get, set

    /// True when the decoder owns the residue embedding `sequence_embed` (stage-2 sequence conditioning).
    member _.SequenceInput = sequenceInput

    /// Embeddings N(0, 1) (`embed`, `sequence_embed`), then the trunk's, the heads' and the structure module's own
    /// rules (its AlphaFold2 zero final layers included), in key order.
    interface IInitialise with
        member _.Initialise generator =
            Init.embedding generator embed
            Init.initialise generator decoder_stack
            Init.initialise generator affine_output_projection
            Init.initialise generator pairwise_classification_head
            Init.initialise generator plddt_head
            structureModule |> Option.iter (fun m -> Init.initialise generator m)
            sequenceEmbed |> Option.iter (Init.embedding generator)

    /// Reflects every backbone the decoder outputs through the plane z = 0 (`Dim6RotStructureHead.Reflect`), in
    /// place, for a decoder that learned the mirror images of its chains: ESM's distance losses and the distogram
    /// cannot tell a fold from its mirror, and a run can settle on the mirror (RMSD near that of a wrong fold at a
    /// good LDDT-CA; `RoundTrip` counts the chains closer to their mirror image). Composed chain frames are reflected
    /// too (conjugation by a reflection preserves composition); the pairwise and pLDDT heads see no coordinates and
    /// are unchanged. A structure module's frames are not the affine head's, so it is refused.
    member _.ReflectStructures() =
        match structureModule with
        | Some _ ->
            invalidOp
                "ReflectStructures: this decoder builds its frames with a structure module, which cannot be reflected by the affine head"
        | None -> affine_output_projection.Reflect()

    /// The token embeddings (`embed`). Shapes: tokens [B, L] int64 -> [B, L, d]
    member _.Embed(tokens: torch.Tensor) = embed.forward tokens

    /// The trunk only: embedding then the transformer stack (no attention mask: ESM's `sequence_id` is all zeros).
    /// Tokens are not checked here. Shapes: tokens [B, L] int64 -> [B, L, d]
    member _.Trunk(tokens: torch.Tensor) =
        decoder_stack.forward (embed.forward tokens, BlockContext.Plain AttentionMask.None)

    /// The backbone heads alone over trunk states `x` (ESM's affine head, or the structure module that starts from
    /// it): the frames, placed N, CA, C, the torsion channels and, with a structure module, every round's backbone.
    /// Shapes: x [B, L, d], real [B, L] bool -> BackboneHeadOutput (Frames [B, L], Backbone [B, L, 3, 3]), rounds
    member _.BackboneOf(x: torch.Tensor, real: torch.Tensor) =
        let projection = affine_output_projection.forward x

        // With a structure module its frames replace the affine head's, which are built only as its start
        // (`StructureModuleStart.AffineHead`).
        match structureModule with
        | None when config.ChainFrames ->
            let steps = BackboneHead.ofProjection projection
            let frames = Frame.chain steps.Frames

            {
                Frames = frames
                Backbone = BackboneHead.place frames
                TorsionLogits = steps.TorsionLogits
            },
            []
        | None -> BackboneHead.ofProjection projection, []
        | Some m ->
            let frames =
                match m.Config.Start with
                | StructureModuleStart.Identity -> m.Rounds(x, real)
                | StructureModuleStart.AffineHead ->
                    m.RoundsFrom(x, real, (BackboneHead.ofProjection projection).Frames)

            let rounds = frames |> List.map BackboneHead.place

            {
                Frames = List.last frames
                Backbone = List.last rounds
                TorsionLogits = BackboneHead.torsionLogits projection
            },
            rounds

    /// The heads over trunk states `x`; `real` marks the residues pAE and pTM average over. Without `confidence`
    /// the pLDDT, pAE and pTM outputs are not computed (null), nor the pairwise head's pAE channels.
    /// Shapes: x [B, L, d], real [B, L] bool -> StructureDecoderOutput
    member this.HeadsWith(x: torch.Tensor, real: torch.Tensor, confidence: bool) =
        let backbone, rounds = this.BackboneOf(x, real)

        let pairGroups =
            [|
                StructureDecoderConfig.DistogramBins
                StructureDecoderConfig.DirectionBins
                if confidence then
                    AlignedError.Bins
            |]

        let pairwise = pairwise_classification_head.ForwardGroups(x, pairGroups)
        let distogram, direction = pairwise.[0], pairwise.[1]

        let plddtLogits, plddt, paeLogits, pae, ptm =
            if confidence then
                let paeLogits = pairwise.[2]
                let plddtLogits = plddt_head.forward x

                // pAE and pTM are read-outs, never trained through (the pAE loss uses the logits): computing them
                // without autograd keeps two [B, L, L, 64] softmaxes out of every training step's graph.
                let pae, ptm =
                    use _ = torch.no_grad ()
                    let logits = paeLogits.detach ()
                    AlignedError.pae logits real, AlignedError.ptm logits real

                plddtLogits, Plddt.ofLogits plddtLogits, paeLogits, pae, ptm
            else
                null, null, null, null, null

        {
            Hidden = x
            Frames = backbone.Frames
            Backbone = backbone.Backbone
            RoundBackbones = rounds
            TorsionLogits = backbone.TorsionLogits
            PlddtLogits = plddtLogits
            Plddt = plddt
            DistogramLogits = distogram
            DirectionLogits = direction
            PaeLogits = paeLogits
            Pae = pae
            Ptm = ptm
        }

    /// `HeadsWith` with every output. Shapes: x [B, L, d], real [B, L] bool -> StructureDecoderOutput
    member this.Heads(x: torch.Tensor, real: torch.Tensor) = this.HeadsWith(x, real, true)

    /// Decodes input vectors given in place of the token embeddings (e.g. the encoder's straight-through quantized
    /// vectors mapped to width d, so gradients reach the encoder), with no BOS or EOS around them: the trunk on the
    /// residues alone (stage-1 training uses `DecodeResidues`, the layout inference reads). Padded rows are not
    /// attended to and count as not real. Uses no extra parameters (the key set stays
    /// ESM's). `confidence` false (stage-1 training, whose losses read none of them) leaves out pLDDT, pAE and pTM
    /// (null) and the pairwise head's pAE channels: a quarter of that head's work and two [B, L, L, 64] softmaxes.
    /// Shapes: embeddings [B, L, d], padding [B, L] bool | null -> StructureDecoderOutput
    member this.DecodeEmbeddings
        (
            embeddings: torch.Tensor,
            padding: torch.Tensor,
            [<Runtime.InteropServices.Optional; Runtime.InteropServices.DefaultParameterValue(true)>] confidence: bool
        ) =
        Shape.expect "embeddings" [| -1L; -1L; config.DModel |] embeddings

        let real =
            if isNull padding then
                torch.ones (
                    [| embeddings.shape.[0]; embeddings.shape.[1] |],
                    dtype = torch.ScalarType.Bool,
                    device = embeddings.device
                )
            else
                Shape.expect "padding" [| embeddings.shape.[0]; embeddings.shape.[1] |] padding
                padding.logical_not ()

        let mask =
            if isNull padding then
                AttentionMask.None
            else
                AttentionMask.Allowed(AttentionMask.keyPadding real)

        let x = decoder_stack.forward (embeddings, BlockContext.Plain mask)
        this.HeadsWith(x, real, confidence)

    /// The backbone alone of input vectors given in place of the token embeddings, in `DecodeEmbeddings`'s layout
    /// (the trunk on them as given, every position attended to, as `forward` on the tokens whose embeddings they
    /// are): the trunk and the backbone heads, without the pairwise and confidence heads, which cost the most at
    /// inference. What a token search evaluates many times (`TokenSearch`). Every position counts as real.
    /// Shapes: embeddings [B, L, d] -> [B, L, 3 (N, CA, C), 3]
    member this.DecodeBackbone(embeddings: torch.Tensor) =
        Shape.expect "embeddings" [| -1L; -1L; config.DModel |] embeddings

        let real =
            torch.ones (
                [| embeddings.shape.[0]; embeddings.shape.[1] |],
                dtype = torch.ScalarType.Bool,
                device = embeddings.device
            )

        let x = decoder_stack.forward (embeddings, BlockContext.Plain AttentionMask.None)
        (fst (this.BackboneOf(x, real))).Backbone

    /// The stage-1 training path in the layout ESM's decoder reads at inference: each row BOS, the residues'
    /// embeddings (e.g. the encoder's straight-through quantized vectors mapped to width d, so gradients reach the
    /// encoder), EOS, then its padding; BOS and EOS are the `embed` rows of those tokens, so they train with the rest
    /// and a decoder exported from training meets at inference (`StructureTokens.wrap`) what it was trained on.
    /// Padding must follow each row's residues (true from its first padded position on); padded positions are not
    /// attended to. The outputs cover the residue positions only (BOS and EOS dropped before the heads, which work
    /// per residue and per pair); `real` for pAE/pTM is the unpadded residues. This is the trunk of that path: its
    /// states at the residue positions and `real`, for `HeadsWith` (`DecodeResidues`) or for heads trained alone.
    /// Shapes: embeddings [B, L, d], padding [B, L] bool | null -> states [B, L, d], real [B, L] bool
    member _.ResidueTrunk(embeddings: torch.Tensor, padding: torch.Tensor) =
        Shape.expect "embeddings" [| -1L; -1L; config.DModel |] embeddings
        let b, l = embeddings.shape.[0], embeddings.shape.[1]

        let real =
            if isNull padding then
                torch.ones ([| b; l |], dtype = torch.ScalarType.Bool, device = embeddings.device)
            else
                Shape.expect "padding" [| b; l |] padding
                padding.logical_not ()

        let row (token: int64) =
            embed.weight.select(0L, token).to_type(embeddings.dtype).expand(b, 1L, config.DModel)

        let lengths = real.to_type(torch.int64).sum(1L, true) // [B, 1]

        let positions =
            torch.arange((l + 2L).ToScalar(), device = embeddings.device).unsqueeze 0L // [1, L + 2]

        let eos = positions.eq (lengths + 1L) // [B, L + 2]
        let kept = positions.le (lengths + 1L) // BOS, residues, EOS

        let x =
            torch.cat (
                [|
                    row StructureTokens.Bos
                    embeddings
                    torch.zeros_like (row StructureTokens.Eos)
                |],
                1L
            )

        let x = torch.where (eos.unsqueeze -1L, row(StructureTokens.Eos).expand_as x, x)

        let h =
            decoder_stack.forward (x, BlockContext.Plain(AttentionMask.Allowed(AttentionMask.keyPadding kept)))

        h.narrow (1L, 1L, l), real

    /// `ResidueTrunk` then the heads. Shapes: embeddings [B, L, d], padding [B, L] bool | null
    /// -> StructureDecoderOutput over the L residues
    member this.DecodeResidues(embeddings: torch.Tensor, padding: torch.Tensor, confidence: bool) =
        let h, real = this.ResidueTrunk(embeddings, padding)
        this.HeadsWith(h, real, confidence)

    /// Decodes token ids with an optional sequence and padding (the stage-2 training path, ESM3-TRAINING.md §1.4):
    /// x = embed(tokens) + sequence_embed(restypes) where restypes ≥ 0 (rows with −1, e.g. BOS/EOS/PAD, add
    /// nothing; `restypes` is ignored by a decoder without sequence input and may be null). Padded rows are not
    /// attended to and count as not real; real residues for pAE/pTM are the code tokens (< 4096) that are not
    /// padding. Tokens are not checked here. With both null this equals `forward` on the same tokens.
    /// Shapes: tokens [B, L] int64, restypes [B, L] int64 (−1 … 20) | null, padding [B, L] bool | null
    ///         -> StructureDecoderOutput
    member this.DecodeTokens(tokens: torch.Tensor, restypes: torch.Tensor, padding: torch.Tensor) =
        if tokens.dim () <> 2L then
            Shape.mismatch "tokens" "[B, L]" tokens

        let x = embed.forward tokens

        let x =
            match sequenceEmbed with
            | Some m when not (isNull restypes) ->
                Shape.expect "restypes" tokens.shape restypes

                let given = restypes.ge ((0L).ToScalar())

                let rows =
                    restypes.clamp ((0L).ToScalar(), (StructureDecoderConfig.SequenceRows - 1L).ToScalar())

                x + m.forward rows * given.unsqueeze(-1L).to_type x.dtype
            | _ -> x

        let codes = tokens.lt (StructureTokens.CodebookSize.ToScalar())

        let real, mask =
            if isNull padding then
                codes, AttentionMask.None
            else
                Shape.expect "padding" tokens.shape padding
                let kept = padding.logical_not ()
                codes.logical_and kept, AttentionMask.Allowed(AttentionMask.keyPadding kept)

        this.Heads(decoder_stack.forward (x, BlockContext.Plain mask), real)

    /// Decodes a batch of structure tokens: each row BOS, tokens, EOS, then optionally PAD (checked by
    /// `StructureTokens.checkBatch`; a bad token raises an `InputException` naming its row and position).
    /// Real residues for pAE/pTM are the code tokens (< 4096). Padding is attended to, as in ESM.
    /// Shapes: tokens [B, L] int64 -> StructureDecoderOutput (see its fields)
    override this.forward(tokens: torch.Tensor) =
        StructureTokens.checkBatch "structure tokens" tokens
        let x = this.Trunk tokens
        let real = tokens.lt (StructureTokens.CodebookSize.ToScalar())
        this.Heads(x, real)

/// A decoded chain with its confidences (BOS and EOS stripped).
type DecodedStructure =
    {
        /// N, CA, C from the decoder, O inferred (none on the last residue); B-factors = 100 · pLDDT.
        Chain: ProteinChain
        /// pLDDT per residue, in [0.01, 0.99]. [L]
        Plddt: float32[]
        /// pTM of the chain.
        Ptm: float
        /// Predicted aligned error in Å between residues (ESM returns it with the BOS/EOS rows; here they are
        /// stripped). [L, L]
        Pae: float32[,]
    }

/// Decoding and oxygen inference of `StructureDecoder`s (loading: `StructureDecoderCheckpoint`).
module StructureDecoder =

    /// The local position of the backbone oxygen in the frame (origin C, x̂ ∝ C − CA, N_{i+1} in the xy-plane):
    /// (0.6240, −1.0613, 0.0103) Å (evolutionaryscale/esm `ProteinChain.infer_oxygen`).
    let private oxygenLocal = [| 0.6240; -1.0613; 0.0103 |]

    /// ESM's `infer_oxygen`: O_i = T_i(0.6240, −1.0613, 0.0103) with
    /// T_i = `Frame.ofGramSchmidt 1e-10 CA_i C_i N_{i+1}`. O_i depends only on CA_i, C_i and N_{i+1}; the last
    /// residue has no N_{i+1}, so its O is NaN (as is any O whose inputs are not finite).
    /// Shapes: backbone [*, L, 3 (N, CA, C), 3] -> [*, L, 3]
    let inferOxygen (backbone: torch.Tensor) =
        Shape.expectTrailing "backbone" [| 3L; 3L |] backbone

        if backbone.dim () < 3L then
            Shape.mismatch "backbone" "[*, L, 3 (N, CA, C), 3]" backbone

        let l = backbone.shape.[backbone.shape.Length - 3]
        let n = backbone.select (-2L, 0L) // [*, L, 3]
        let ca = backbone.select (-2L, 1L)
        let c = backbone.select (-2L, 2L)

        let missing =
            torch.full (
                Array.append (Shape.batchDims 3 backbone) [| 1L; 3L |],
                Double.NaN.ToScalar(),
                dtype = backbone.dtype,
                device = backbone.device
            )

        let nNext = torch.cat ([| n.narrow (-2L, 1L, max 0L (l - 1L)); missing |], -2L)
        let frames = Frame.ofGramSchmidt Rotation.EsmFrameEps ca c nNext

        let local =
            torch.tensor(oxygenLocal, dtype = torch.float64).``to``(backbone.dtype, backbone.device)

        Frame.apply frames local

    /// All-atom coordinates of a decoder output (ESM3 Alg. 8; ESM3-REFERENCE.md §7.8): `AllAtom.decodeAllAtom` of
    /// the predicted backbone frames and the 7 torsion (sin, cos) pairs in the backbone head's channels 9–22.
    /// Shapes: out.Frames [B, L], out.TorsionLogits [B, L, 7, 2], restypes [B, L] (0 … 20)
    ///         -> Positions [B, L, 14, 3], Mask [B, L, 14]
    let allAtom (out: StructureDecoderOutput) (restypes: torch.Tensor) : AtomPositions =
        AllAtom.decodeAllAtom out.Frames restypes out.TorsionLogits

    /// Decodes one structure (ESM's `decode_structure`): `tokens` = BOS, codes, EOS, with no MASK (checked; an
    /// `InputException` names the position). The chain holds N, CA, C of residues 1 … L (BOS/EOS stripped) and
    /// the inferred O; `sequence` (length L) names the residues, chain id "A", residue numbers 1 … L, and every
    /// atom's B-factor is 100 · pLDDT. A decoder with sequence input also reads `sequence` (`DecodeTokens`).
    /// Runs without gradients in its own dispose scope.
    /// Shapes: tokens [L + 2], sequence length L.
    let decodeWithSequence (model: StructureDecoder) (sequence: string) (tokens: int64[]) : DecodedStructure =
        let source = "structure tokens"
        StructureTokens.checkWrapped source tokens

        tokens
        |> Array.iteri (fun i id ->
            if id = StructureTokens.Mask then
                InputError.raise
                    source
                    (InputLocation.Field(sprintf "position %d" i))
                    "MASK: only fully unmasked structure tokens can be decoded")

        let l = tokens.Length - 2

        if isNull sequence || sequence.Length <> l then
            raise (
                ArgumentException(
                    sprintf
                        "sequence has length %d but the tokens hold %d residues"
                        (if isNull sequence then 0 else sequence.Length)
                        l,
                    "sequence"
                )
            )

        use _scope = torch.NewDisposeScope()
        use _noGrad = torch.no_grad ()

        let input =
            torch.tensor(tokens, ReadOnlySpan<int64> [| 1L; int64 tokens.Length |]).``to``(Checkpoint.deviceOf model)

        let out =
            if model.SequenceInput then
                let restypes =
                    Array.concat
                        [
                            [| -1L |]
                            sequence.ToCharArray() |> Array.map (ResidueConstants.restypeIndex >> int64)
                            [| -1L |]
                        ]

                let r =
                    torch
                        .tensor(restypes, ReadOnlySpan<int64> [| 1L; int64 restypes.Length |])
                        .``to``(Checkpoint.deviceOf model)

                model.DecodeTokens(input, r, null)
            else
                model.forward input

        let bb = out.Backbone.select(0L, 0L).narrow(0L, 1L, int64 l) // [L, 3, 3]
        let oxygen = inferOxygen bb // [L, 3]

        let atom37 =
            torch.full ([| int64 l; 37L; 3L |], Double.NaN.ToScalar(), dtype = bb.dtype, device = bb.device)

        atom37.narrow(1L, 0L, 3L).copy_ bb |> ignore
        atom37.select(1L, int64 ResidueConstants.oIndex).copy_ oxygen |> ignore

        let chain =
            ProteinChain.ofAtom37Tensor "decoded" "A" sequence (Array.init l (fun i -> i + 1)) atom37

        let toArray (t: torch.Tensor) =
            t.detach().cpu().to_type(torch.float32).contiguous().data<float32>().ToArray()

        let plddt = toArray (out.Plddt.select(0L, 0L).narrow(0L, 1L, int64 l))

        let paeFlat =
            toArray (out.Pae.select(0L, 0L).narrow(0L, 1L, int64 l).narrow(1L, 1L, int64 l))

        let bfactors =
            Array2D.init l 37 (fun i a -> if chain.Atom37Mask.[i, a] then 100.0f * plddt.[i] else 0.0f)

        {
            Chain = { chain with BFactors = bfactors }
            Plddt = plddt
            Ptm = out.Ptm.select(0L, 0L).ToDouble()
            Pae = Array2D.init l l (fun i j -> paeFlat.[i * l + j])
        }

    /// `decodeWithSequence` with ESM's default sequence, all alanine. Shapes: tokens [L + 2].
    let decode (model: StructureDecoder) (tokens: int64[]) : DecodedStructure =
        decodeWithSequence model (String('A', max 0 (tokens.Length - 2))) tokens
