module Esm3Structure.Tests.Models.MultiTrackTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Training
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

let private tiny = MultiTrackFixtures.tiny

/// The sizes ESM's reference script (Reference/esm3/generate.py) wrote its weights and outputs at: d 64, 1 head,
/// 4 vector heads, 2 layers.
let private esmSmall =
    { MultiTrackConfig.esm3 with
        DModel = 64L
        Heads = 1L
        VHeads = 4L
        Layers = 2
    }

let private chain = lazy (StructureFile.read (Data.small "1ubq_A") None)

/// A batch of two crops of 1ubq (11 and 9 residues) with random ids on every track (inside each vocabulary).
let private randomBatch (seed: uint64) =
    use g = new torch.Generator(seed)
    let example = MultiTrackData.ofChain TrackProviders.absent chain.Value

    let b =
        MultiTrackData.batch [| MultiTrackData.crop 3 11 example; MultiTrackData.crop 40 9 example |]

    let t = b.Tracks
    let shape (x: torch.Tensor) = x.shape

    let ids (hi: int64) (like: torch.Tensor) =
        torch.randint (hi, shape like, dtype = torch.int64, generator = g)

    let residues = b.Residues

    let onResidues (x: torch.Tensor) (r: torch.Tensor) =
        let m = if x.dim () > 2L then residues.unsqueeze -1L else residues
        torch.where (m, r, x)

    let tracks =
        { t with
            Structure = onResidues t.Structure (ids StructureTokens.CodebookSize t.Structure)
            Ss8 = onResidues t.Ss8 (ids Tracks.Ss8Vocabulary t.Ss8)
            Sasa = onResidues t.Sasa (ids Tracks.SasaVocabulary t.Sasa)
            Function = onResidues t.Function (ids Tracks.FunctionVocabulary t.Function)
            ResidueAnnotations = onResidues t.ResidueAnnotations (ids Tracks.ResidueVocabulary t.ResidueAnnotations)
            PerResiduePlddt = torch.rand (shape t.PerResiduePlddt, generator = g)
        }

    { b with Tracks = tracks }

let private allLogits (o: MultiTrackOutput) =
    [
        "sequence", o.SequenceLogits
        "structure", o.StructureLogits
        "ss8", o.Ss8Logits
        "sasa", o.SasaLogits
        "function", o.FunctionLogits
        "residue", o.ResidueLogits
        "embeddings", o.Embeddings
    ]

let private toFloat (dtype: torch.ScalarType) (x: MultiTrackInput) =
    { x with
        Coordinates = x.Coordinates.to_type dtype
        AveragePlddt = x.AveragePlddt.to_type dtype
        PerResiduePlddt = x.PerResiduePlddt.to_type dtype
    }

/// The summed lengths of the reductions along the multi-track model's longest path for L positions: the input
/// sum (eight terms, the pLDDT projections' 16-term products); per block the attention's LayerNorm (d), qkv (d), q
/// and k LayerNorms (2d), q·k (d/heads), softmax and A·V (2L), out_proj (d), the feed-forward's LayerNorm (d), its
/// input (d) and output (hidden) products; the geometric sub-layer's LayerNorm and proj (2d), rotations and scores
/// (3 + 3), softmax and mean (2L), back-rotation (3) and out_proj (3V); the final LayerNorm and a head's dense,
/// LayerNorm and output (4d). The standard first-order model of a layered computation: each reduction of n terms
/// rounds ≤ n·u relative to the magnitude of its terms, and the layers pass errors on with unit gain.
let private reductions (c: MultiTrackConfig) (l: int64) =
    let d = float c.DModel
    let hidden = float (FeedForward.swigluHidden c.ExpansionRatio c.DModel)
    let l = float l
    let block = 6.0 * d + d / float c.Heads + 2.0 * l + 2.0 * d + hidden
    let geometric = 2.0 * d + 6.0 + 2.0 * l + 3.0 + 3.0 * float c.VHeads
    24.0 + float c.Layers * block + float c.GeometricLayers * geometric + 4.0 * d

/// The geometric attention's score error from the frames the model builds of `input`'s coordinates when those carry
/// per-entry rounding errors `rounding` and a linear map's error `linear` (relative, in 2-norm: x ↦ M x with M off
/// an exact rotation): Gram–Schmidt of the bond vectors (differences of coordinates, which round ≤ u·|b| like any
/// subtraction, plus `rounding` on each end, and turn by ≤ 2·`linear`; bonds ≥ 1.2 Å ≤ 1.6 Å at an N-CA-C angle whose
/// sine is ≥ 0.9 on real chains) gives rotation entries within ρ = (56/0.9 + 18)·u + 2√3·(1.6u + rounding)/1.2 +
/// 2·linear (Geometry/RotationTests' count and the inputs' turn), translations (CA itself) within `rounding`, their
/// differences within 2·max|x|·linear more. Block 0's projected 3-vectors p (measured: s_norm and proj of the summed
/// input embedding) turn into q = R p within 3ρ·|p| (‖E‖₂ ≤ 3·max|E| for 3 × 3), so a rotation score moves by
/// ≤ w_r·6ρ·|p|², a distance score by ≤ w_d·(6ρ·|p| + 2√3·rounding + 2·max|x|·linear) (w = softplus(scale)/√3 of the
/// largest head); the attention's weights then move by ≤ 2·δA relative (first order), and so does its output.
let private coordinateTerm
    (model: MultiTrackModel)
    (input: MultiTrackInput)
    (rounding: float)
    (linear: float)
    (u: float)
    =
    use _ = torch.NewDisposeScope()
    let sd = dict (Checkpoint.stateDict model)

    let w (k: string) =
        sd.["transformer.blocks.0.geom_attn." + k].detach().to_type torch.float64

    let gamma = w "s_norm.weight"
    let d = gamma.shape.[0]
    let s = (model.EmbedInputs input).detach().to_type torch.float64
    let n = torch.nn.functional.layer_norm (s, [| d |], gamma, null, 1e-5)
    let p = torch.nn.functional.linear (n, w "proj.weight")
    let pv = p.reshape(-1L, 3L).norm(-1, false).max().ToDouble()

    let weight (k: string) =
        torch.nn.functional.softplus(w k).max().ToDouble() / sqrt 3.0

    let xMax =
        input.Coordinates.nan_to_num(0.0, 0.0, 0.0).to_type(torch.float64).abs().max().ToDouble()

    let rho =
        (56.0 / 0.9 + 18.0) * u
        + 2.0 * sqrt 3.0 * (1.6 * u + rounding) / 1.2
        + 2.0 * linear

    let delta =
        weight "rotation_scale_per_head" * 6.0 * rho * pv * pv
        + weight "distance_scale_per_head"
          * (6.0 * rho * pv + 2.0 * sqrt 3.0 * rounding + 2.0 * xMax * linear)

    2.0 * delta

let private invariance (dtype: torch.ScalarType) =
    use _ = torch.NewDisposeScope()
    use g = new torch.Generator(11UL)
    use model = new MultiTrackModel(tiny, g)
    model.``to`` dtype |> ignore
    model.eval ()
    use _ = torch.no_grad ()
    let x = (randomBatch 3UL).Tracks |> toFloat dtype
    let motion = Frame.random [||] 30.0 dtype torch.CPU g
    let c = x.Coordinates
    let moved = torch.where (c.isfinite (), Frame.apply motion c, c)
    let a = model.forward x
    let b = model.forward { x with Coordinates = moved }
    // Exactly invariant in exact arithmetic under a rotation; the motion's matrix M is within GeoTol.quatMatrixEntry
    // e of one per entry (3e in 2-norm), and moving a coordinate rounds 3u·Σ|M||x| ≤ 3√3u·|x| plus u·|Mx + t|. Each
    // side within the reduction count's rounding and the coordinates' term, relative to max(1 (post-LayerNorm
    // activations), the output's largest value).
    let u = Tol.unitRoundoff dtype

    let finiteMax (t: torch.Tensor) =
        t.nan_to_num(0.0, 0.0, 0.0).to_type(torch.float64).abs().max().ToDouble()

    let movedRounding = 9.0 * u * finiteMax c + u * finiteMax moved
    let n = reductions tiny x.Sequence.shape.[1]

    let relTol =
        2.0 * n * u
        + coordinateTerm model x 0.0 0.0 u
        + coordinateTerm model { x with Coordinates = moved } movedRounding (3.0 * GeoTol.quatMatrixEntry dtype) u

    let none =
        model.forward
            { x with
                Coordinates = torch.full_like (c, Double.NaN.ToScalar())
            }

    // The frames must actually matter, beyond what rounding could explain: a model without coordinates gives
    // logits further off than the bound.
    let structureScale = max 1.0 (a.StructureLogits.abs().max().ToDouble())

    Expect.isGreaterThan
        (Tol.maxAbsDiff a.StructureLogits none.StructureLogits)
        (relTol * structureScale)
        "coordinates matter"

    for (name, p), (_, q) in List.zip (allLogits a) (allLogits b) do
        let scale = max 1.0 (p.abs().max().ToDouble())
        Tol.close name (relTol * scale) p q

[<Tests>]
let tests =
    testList
        "Models/MultiTrack"
        [
            test
                "ESM3 parity: ESM's own .pth (d 64, 2 layers) on 1UBQ with every track gives ESM3's outputs (float32, float64)" {
                use _ = torch.NewDisposeScope()
                let dir = IO.Path.Combine(AppContext.BaseDirectory, "Reference", "esm3")
                use model = MultiTrackCheckpoint.load (IO.Path.Combine(dir, "esm3-small.pth"))

                let io =
                    (Safetensors.read (IO.Path.Combine(dir, "esm3-small.io.safetensors"))).Tensors
                    |> Map.ofList

                let input =
                    {
                        Sequence = io.["in.sequence"]
                        Structure = io.["in.structure"]
                        Ss8 = io.["in.ss8"]
                        Sasa = io.["in.sasa"]
                        Function = io.["in.function"]
                        ResidueAnnotations = io.["in.residue_annotations"]
                        Coordinates = io.["in.coordinates"]
                        AveragePlddt = io.["in.average_plddt"]
                        PerResiduePlddt = io.["in.per_residue_plddt"]
                        SequenceId = null
                    }

                use _ = torch.no_grad ()
                // Every output against ESM's `prefix.*` tensors, a different implementation of the same function: both
                // sides round the model's reductions (`reductions`: d 64, 1 head, 4 vector heads, 2 blocks, L = 78 for
                // 1UBQ with BOS and EOS, summed in different orders, torch 1.13's attention written out by the shim),
                // each ≤ n·u relative to max(1 (post-LayerNorm activations), the output's largest value); the
                // coordinates are the same on both sides, so only the frames' own rounding adds (float32:
                // measured 1–4e-6 relative, the bound 7e-4).

                let n = reductions esmSmall input.Sequence.shape.[1]

                let matches (prefix: string) (dtype: torch.ScalarType) (out: MultiTrackOutput) =
                    let u = Tol.unitRoundoff dtype
                    let relTol = 2.0 * (n * u + coordinateTerm model input 0.0 0.0 u)

                    for name, ours in
                        [
                            "sequence_logits", out.SequenceLogits
                            "structure_logits", out.StructureLogits
                            "ss8_logits", out.Ss8Logits
                            "sasa_logits", out.SasaLogits
                            "function_logits", out.FunctionLogits
                            "residue_logits", out.ResidueLogits
                            "embeddings", out.Embeddings
                        ] do
                        let esm = io.[prefix + "." + name]
                        Expect.equal ours.dtype dtype (name + ": dtype")
                        let scale = esm.abs().max().ToDouble()
                        let diff = Tol.maxAbsDiff ours esm
                        printfn "ESM3 parity %s %s: max |ours − ESM| %.3g (max |ESM| %.3g)" prefix name diff scale
                        Tol.close ("ESM3 " + prefix + " " + name) (relTol * max 1.0 scale) ours esm

                model.forward input |> matches "out" torch.float32

                // The same weights and inputs upcast exactly, in float64 on both sides (ESM through esm_env's
                // float64 patch set).
                model.``to`` torch.float64 |> ignore

                model.forward
                    { input with
                        Coordinates = input.Coordinates.to_type torch.float64
                        AveragePlddt = input.AveragePlddt.to_type torch.float64
                        PerResiduePlddt = input.PerResiduePlddt.to_type torch.float64
                    }
                |> matches "out64" torch.float64
            }

            test "ESM3-open's key table has §9.4's shapes and 1,401,735,748 parameters" {
                let table = dict (MultiTrackCheckpoint.expectedKeys MultiTrackConfig.esm3)
                let shape k = table.[k]
                Expect.equal (shape "encoder.sequence_embed.weight") [| 64L; 1536L |] "sequence"
                Expect.equal (shape "encoder.structure_tokens_embed.weight") [| 4101L; 1536L |] "structure"
                Expect.equal (shape "encoder.function_embed.7.weight") [| 260L; 192L |] "function"
                Expect.equal (shape "encoder.residue_embed.weight") [| 1478L; 1536L |] "residue"
                Expect.equal (shape "transformer.blocks.47.attn.layernorm_qkv.1.weight") [| 4608L; 1536L |] "qkv"
                Expect.equal (shape "transformer.blocks.0.geom_attn.proj.weight") [| 3840L; 1536L |] "geom proj"
                Expect.equal (shape "transformer.blocks.0.geom_attn.out_proj.weight") [| 1536L; 768L |] "geom out"
                Expect.equal (shape "transformer.blocks.5.ffn.1.weight") [| 8192L; 1536L |] "ffn 1"
                Expect.equal (shape "transformer.blocks.5.ffn.3.weight") [| 1536L; 4096L |] "ffn 3"
                Expect.equal (shape "output_heads.function_head.3.weight") [| 2080L; 1536L |] "function head"
                Expect.isFalse (table.ContainsKey "transformer.blocks.1.geom_attn.proj.weight") "block 1: plain"
                Expect.equal (MultiTrackCheckpoint.parameterCount MultiTrackConfig.esm3) 1_401_735_748L "parameters"
                Expect.equal table.Count (MultiTrackCheckpoint.expectedKeys MultiTrackConfig.esm3).Length "no duplicate"
            }

            test "the module's state_dict is exactly ESM3's key table (T8)" {
                use g = new torch.Generator(1UL)

                // ESM's own: the state dict ESM's `ESM3` class wrote at d 64, 1 head, 4 vector heads, 2 layers
                // (Reference/esm3/generate.py; torch.save, read here without loading a tensor), in its order.
                let pth =
                    IO.Path.Combine(AppContext.BaseDirectory, "Reference", "esm3", "esm3-small.pth")

                let esm =
                    PyTorchCheckpoint.entries pth
                    |> List.map (fun (name, stored) -> name, stored.Shape)


                use esmSized = new MultiTrackModel(esmSmall, g)
                let ours = Checkpoint.keyShapes esmSized
                Expect.equal (ours |> List.map fst |> List.sort) (esm |> List.map fst |> List.sort) "ESM's keys"

                for (k, a), (_, b) in List.zip (List.sortBy fst ours) (List.sortBy fst esm) do
                    Expect.equal a b ("ESM's shape of " + k)

                Expect.equal (MultiTrackCheckpoint.expectedKeys esmSmall) esm "the table: ESM's keys in ESM's order"

                // Other sizes: the module against the table (checked against ESM's file just above).
                for config in [ tiny; { tiny with GeometricLayers = 2 }; MultiTrackConfig.small ] do
                    use model = new MultiTrackModel(config, g)
                    let ours = Checkpoint.keyShapes model |> List.sortBy fst
                    let table = MultiTrackCheckpoint.expectedKeys config |> List.sortBy fst
                    Expect.equal (ours |> List.map fst) (table |> List.map fst) "keys"

                    for (k, a), (_, b) in List.zip ours table do
                        Expect.equal a b k
            }

            test "the small preset caps the residual scale at 1; ESM3's is sqrt(48/36)" {
                Expect.equal (MultiTrackConfig.residualScale MultiTrackConfig.small) 1.0 "small"

                Expect.floatClose
                    Accuracy.veryHigh
                    (MultiTrackConfig.residualScale MultiTrackConfig.esm3)
                    (sqrt (48.0 / 36.0))
                    "esm3"

                Expect.isFalse (MultiTrackConfig.stack MultiTrackConfig.small).ScaleResidue "stack: small"
                Expect.isTrue (MultiTrackConfig.stack MultiTrackConfig.esm3).ScaleResidue "stack: esm3"

                Expect.isNonEmpty
                    (Validation.errors (MultiTrackConfig.validate { tiny with DModel = 20L }))
                    "d must split into 8"
            }

            test "a checkpoint round trip restores the logits; missing, extra and mis-shaped tensors are named (T8)" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use g = new torch.Generator(2UL)

                use model =
                    new MultiTrackModel(
                        { tiny with
                            Heads = 2L
                            CapResidualScale = true
                        },
                        g
                    )

                model.eval ()
                let path = dir.File "m.safetensors"
                MultiTrackCheckpoint.save path model
                use loaded = MultiTrackCheckpoint.load path
                Expect.equal loaded.Config model.Config "config from shapes and metadata"
                use _ = torch.no_grad ()
                let x = (randomBatch 4UL).Tracks

                for (name, a), (_, b) in List.zip (allLogits (model.forward x)) (allLogits (loaded.forward x)) do
                    Tol.close name 0.0 a b

                let tensors = Checkpoint.stateDict model

                let rewrite (file: string) (items: (string * torch.Tensor) list) =
                    Safetensors.write (dir.File file) items null
                    dir.File file

                let failsWith (file: string) (fragments: string list) =
                    let e =
                        raises<InputException> "input" (fun () -> MultiTrackCheckpoint.load file |> ignore)

                    for f in fragments do
                        Expect.stringContains e.Message f "names the problem"

                    Expect.equal e.Error.File file "names the file"

                failsWith
                    (rewrite
                        "missing.safetensors"
                        (tensors |> List.filter (fun (k, _) -> k <> "output_heads.ss8_head.2.bias")))
                    [ "missing keys"; "output_heads.ss8_head.2.bias" ]

                failsWith
                    (rewrite "extra.safetensors" (tensors @ [ "encoder.extra.weight", torch.zeros (3L) ]))
                    [ "unexpected keys"; "encoder.extra.weight" ]

                failsWith
                    (rewrite
                        "shape.safetensors"
                        (tensors
                         |> List.map (fun (k, t) ->
                             if k = "transformer.blocks.1.ffn.0.bias" then
                                 k, torch.zeros (5L)
                             else
                                 k, t)))
                    [ "wrong shapes"; "transformer.blocks.1.ffn.0.bias" ]

                failsWith (rewrite "other.safetensors" [ "weight", torch.zeros (2L) ]) [ "not an ESM3" ]
            }

            test "structure tokens are overridden at BOS, EOS, PAD and chain breaks, and −1 reads as MASK (T7)" {
                use _ = torch.NewDisposeScope()
                let seq = torch.tensor([| 0L; 5L; 31L; 7L; 2L; 1L; 1L |]).unsqueeze(0L)
                let str = torch.tensor([| 17L; -1L; 9L; 4096L; 3L; 4098L; 55L |]).unsqueeze(0L)
                let out = MultiTrack.overrideStructureTokens seq str

                Expect.equal
                    (out.data<int64>().ToArray())
                    [| 4098L; 4096L; 4100L; 4096L; 4097L; 4099L; 4099L |]
                    "overridden ids"

                use g = new torch.Generator(5UL)
                use model = new MultiTrackModel(tiny, g)
                model.eval ()
                use _ = torch.no_grad ()
                let x = (randomBatch 6UL).Tracks
                let special = (randomBatch 6UL).Residues.logical_not()

                let scrambled =
                    torch.where (special, torch.randint (4101L, x.Structure.shape, generator = g), x.Structure)

                Expect.isTrue (scrambled.ne(x.Structure).any().ToBoolean()) "the scramble changed something"
                let a = model.forward x
                let b = model.forward { x with Structure = scrambled }

                for (name, u), (_, v) in List.zip (allLogits a) (allLogits b) do
                    Tol.close name 0.0 u v
            }

            test "the input embedding is the plain sum of ESM's eight terms; padding ids add exactly zero (T5)" {
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(7UL)
                use model = new MultiTrackModel(tiny, g)
                model.``to`` torch.float64 |> ignore
                use _ = torch.no_grad ()
                let x = (randomBatch 8UL).Tracks |> toFloat torch.float64
                let sd = dict (Checkpoint.stateDict model)
                let w (k: string) = sd.["encoder." + k]

                let rows (k: string) (ids: torch.Tensor) =
                    w(k).index_select(0L, ids.flatten ()).reshape(Array.append ids.shape [| -1L |])

                let rbf (v: torch.Tensor) =
                    let c = torch.linspace (0.0, 1.0, 16L, dtype = torch.float64)
                    (-(((v.unsqueeze -1L - c) * 16.0).pow(2.0.ToScalar()))).exp()

                let linear (k: string) (v: torch.Tensor) =
                    (rbf v).matmul(w(k + ".weight").t()) + w (k + ".bias")

                let structure = MultiTrack.overrideStructureTokens x.Sequence x.Structure

                let functionSum =
                    torch.cat (
                        [|
                            for t in 0..7 ->
                                rows (sprintf "function_embed.%d.weight" t) (x.Function.select (-1L, int64 t))
                        |],
                        -1L
                    )

                let residueSum =
                    (rows "residue_embed.weight" x.ResidueAnnotations
                     * x.ResidueAnnotations.ne(0L.ToScalar()).unsqueeze(-1L).to_type(torch.float64))
                        .sum(-2L)

                let expected =
                    rows "sequence_embed.weight" x.Sequence
                    + linear "plddt_projection" x.AveragePlddt
                    + linear "structure_per_res_plddt_projection" x.PerResiduePlddt
                    + rows "structure_tokens_embed.weight" structure
                    + rows "ss8_embed.weight" x.Ss8
                    + rows "sasa_embed.weight" x.Sasa
                    + functionSum
                    + residueSum

                Tol.close "sum of eight terms" 1e-12 (model.EmbedInputs x) expected
                // Padding rows are zero at initialisation …
                for t in 0..7 do
                    Expect.equal
                        (w(sprintf "function_embed.%d.weight" t).[0L].abs().sum().ToDouble())
                        0.0
                        "function row 0"

                // … and residue slots holding 0 are skipped whatever row 0 holds (EmbeddingBag's padding_idx).
                w("residue_embed.weight").[0L].fill_(3.0.ToScalar()) |> ignore

                let noAnnotation =
                    { x with
                        ResidueAnnotations = torch.zeros_like x.ResidueAnnotations
                        Function = torch.zeros_like x.Function
                    }

                let base_ = model.EmbedInputs noAnnotation
                Tol.close "no annotation = the other six terms" 1e-12 base_ (expected - functionSum - residueSum)
                // One label in slot 5 adds exactly its row; the slot order does not matter.
                let ids = torch.zeros_like x.ResidueAnnotations
                ids.[torch.TensorIndex.Ellipsis, torch.TensorIndex.Single 5L] <- torch.tensor 42L
                let ids2 = torch.zeros_like x.ResidueAnnotations
                ids2.[torch.TensorIndex.Ellipsis, torch.TensorIndex.Single 0L] <- torch.tensor 42L

                let one =
                    model.EmbedInputs
                        { noAnnotation with
                            ResidueAnnotations = ids
                        }

                let other =
                    model.EmbedInputs
                        { noAnnotation with
                            ResidueAnnotations = ids2
                        }

                Tol.close "one label adds its row" 1e-12 (one - base_) (w("residue_embed.weight").[42L].expand_as base_)
                Tol.close "slot order" 1e-12 one other
            }

            test "logits are invariant to a rigid motion of the coordinates, float64 (T6)" { invariance torch.float64 }

            test "logits are invariant to a rigid motion of the coordinates, float32 (T6)" { invariance torch.float32 }

            test "padding separated by SequenceId leaves the real positions' logits unchanged" {
                use _ = torch.NewDisposeScope()
                use g = new torch.Generator(9UL)
                use model = new MultiTrackModel(tiny, g)
                model.eval ()
                use _ = torch.no_grad ()
                let x = (randomBatch 10UL).Tracks
                // Row 1 holds 9 residues + BOS/EOS = 11 positions, then 2 padding positions.
                let row (t: torch.Tensor) =
                    t.narrow(0L, 1L, 1L).narrow(1L, 0L, 11L)

                let alone =
                    model.forward
                        {
                            Sequence = row x.Sequence
                            Structure = row x.Structure
                            Ss8 = row x.Ss8
                            Sasa = row x.Sasa
                            Function = row x.Function
                            ResidueAnnotations = row x.ResidueAnnotations
                            Coordinates = row x.Coordinates
                            AveragePlddt = x.AveragePlddt.narrow (0L, 1L, 1L)
                            PerResiduePlddt = row x.PerResiduePlddt
                            SequenceId = row x.SequenceId
                        }

                let batched = model.forward x
                // The same values in the same per-position operations (the same frames, bit for bit), and the keys of
                // the other sequence weigh exactly 0: only the reductions over positions may sum in another order
                // (products of other shapes), each side within the reduction count's rounding (see `reductions`).
                let u = Tol.unitRoundoff torch.float32
                let relTol = 2.0 * reductions tiny x.Sequence.shape.[1] * u

                for (name, a), (_, b) in List.zip (allLogits alone) (allLogits batched) do
                    Tol.close name (relTol * max 1.0 (a.abs().max().ToDouble())) a (row b)
            }
        ]
