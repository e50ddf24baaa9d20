module Esm3Structure.Tests.Models.StructureModuleTests

open System
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tests

/// Small sizes, all different: d 24, 3 heads, 8/2 query-key and 6/3 value channels, offsets ±4.
let private attention =
    {
        DModel = 24L
        Heads = 3L
        ScalarQk = 8L
        ScalarV = 6L
        PointQk = 2L
        PointV = 3L
        MaxOffset = 4L
    }

let private ipa (dtype: torch.ScalarType) (seed: uint64) =
    let m = new InvariantPointAttention(attention)
    m.``to`` dtype |> ignore
    let g = new torch.Generator(seed)
    Init.initialise g m
    // AlphaFold2 starts `out` at zero (the layer adds nothing); these tests need an output that depends on the input.
    Init.linear g m.OutputProjection
    m

/// Every parameter moved by N(0, 0.1²) noise from `seed`: the final layers that AlphaFold2 starts at zero (which make
/// every round the identity update) then move the frames too.
let private perturb (seed: uint64) (m: torch.nn.Module) =
    use _ = torch.no_grad ()
    let g = new torch.Generator(seed)

    for p in m.parameters () do
        p.add_ (0.1 * torch.randn (p.shape, dtype = p.dtype, generator = g)) |> ignore

/// Every frame of `f` moved by one rigid motion g: g ∘ T_i. Shapes: Frame [B, L] -> Frame [B, L]
let private movedBy (g: Frame) (f: Frame) = Frame.compose (Frame.unsqueeze 1L g) f

/// A first-order bound on |computed − exact| for every entry of `m.Attend(s, frames, allowed)` [B, L, d], the
/// exact result being the layer's function of the given inputs in real arithmetic, from the actual tensors'
/// magnitudes (float64; u the input's unit roundoff); `eR`, `eT` bound the frames' own entries' distance from the
/// exact input's. As the layer computes:
/// - the six projections, fan-in d: (d + 1)·u·(|s| |W|ᵀ + |b|) (Higham §3.5);
/// - points placed by their frame, R x + T: 3u·|R||x| + u·|y|, the projection's error through |R|, e_R·Σ|x| + e_T;
/// - q·k/√C over C channels: (C + 2)·u·Σ|q||k| and each side's error through the other;
/// - Σ_p ‖q_p − k_p‖² in the expanded form ‖q‖² + ‖k‖² − 2q·k over 3P coordinates: (3P + 3)·u·(|q| + |k|)², and
///   the points' errors through its gradient 2(q − k): 2·|q − k|·(|e_q| + |e_k|) (2-norms);
/// - the logit w_L·(scalar + bias − γ·w_C/2·squared): 4u on each term's magnitude, γ (a softplus) 4u relative;
/// - the softmax and the weighted means as in Nn/GeometricAttentionTests: with logit errors Δ, the weights move by
///   ≤ P·(exp(Δ + log M) − 1) against v − ō, the normalisation and the L-term products (2L + 2)·u·Σ P|v|, the values'
///   errors Σ P e_v; masked keys weigh exactly 0 (their Δ set to 0);
/// - back into the query's frame, Rᵀ(o − T): u·|o − T| for the subtraction, 3u·|R||o − T|, the errors of o and T
///   through |R| and e_R·Σ|o − T|; the points' norms √(Σ x² + 1e-8) move by the points' 2-norm error plus 3u·norm;
/// - out, fan-in H·(C_v + 4P_v): as the projections.
/// Products of two error terms are left out; callers double the bound.
let private attendBound
    (m: InvariantPointAttention)
    (s: torch.Tensor)
    (frames: Frame)
    (allowed: torch.Tensor)
    (eR: float)
    (eT: float)
    =
    let cfg = m.Config
    let u = Tol.unitRoundoff s.dtype
    let sd = m.state_dict ()
    let f64 (t: torch.Tensor) = t.detach().to_type torch.float64
    let w (k: string) = f64 sd.[k]
    let s = f64 s
    let b, l = s.shape.[0], s.shape.[1]
    let h, d = cfg.Heads, float cfg.DModel
    let r, t = f64 frames.R, f64 frames.T
    let absR = r.abs ()

    let project (name: string) =
        let weight, bias = w (name + ".weight"), w (name + ".bias")
        let y = torch.nn.functional.linear (s, weight, bias)

        let e =
            (d + 1.0)
            * u
            * (torch.nn.functional.linear (s.abs (), weight.abs ()) + bias.abs ())

        y, e

    let heads (x: torch.Tensor) (c: int64) =
        x.reshape(b, l, h, c).permute(0L, 2L, 1L, 3L)

    // Points [B, L, H·P·3] placed: [B, H, L, 3P] values and errors.
    let placed (name: string) (p: int64) =
        let x, ex = project name
        let x, ex = x.reshape (b, l, h * p, 3L), ex.reshape (b, l, h * p, 3L)
        let rx = x.matmul (r.transpose (-1L, -2L))
        let y = rx + t.unsqueeze -2L

        let ey =
            3.0 * u * x.abs().matmul(absR.transpose (-1L, -2L))
            + u * y.abs ()
            + ex.matmul (absR.transpose (-1L, -2L))
            + eR * x.abs().sum(-1L, true)
            + eT

        heads (y.reshape (b, l, -1L)) (p * 3L), heads (ey.reshape (b, l, -1L)) (p * 3L)

    let qS, eqS = project "q"
    let kS, ekS = project "k"
    let vS, evS = project "v"

    let qS, eqS, kS, ekS =
        heads qS cfg.ScalarQk, heads eqS cfg.ScalarQk, heads kS cfg.ScalarQk, heads ekS cfg.ScalarQk

    let vS, evS = heads vS cfg.ScalarV, heads evS cfg.ScalarV
    let qP, eqP = placed "q_points" cfg.PointQk
    let kP, ekP = placed "k_points" cfg.PointQk
    let vP, evP = placed "v_points" cfg.PointV
    let tr (x: torch.Tensor) = x.transpose (-1L, -2L)
    let c = float cfg.ScalarQk
    let scalar = qS.matmul (tr kS) / sqrt c

    let eScalar =
        ((c + 2.0) * u * qS.abs().matmul(tr (kS.abs ()))
         + eqS.matmul (tr (kS.abs ()))
         + qS.abs().matmul(tr ekS))
        / sqrt c

    let diff = qP.unsqueeze -2L - kP.unsqueeze -3L // [B, H, L, L, 3P]
    let squared = diff.square().sum(-1L)
    let n2 (x: torch.Tensor) = x.norm (-1, false)
    let qn, kn = n2 qP, n2 kP // [B, H, L]
    let pairSum = qn.unsqueeze -1L + kn.unsqueeze -2L

    let eSquared =
        (3.0 * float cfg.PointQk + 3.0) * u * pairSum.square ()
        + 2.0 * n2 diff * ((n2 eqP).unsqueeze -1L + (n2 ekP).unsqueeze -2L)

    let gamma = torch.nn.functional.softplus(w "head_weights").reshape(1L, h, 1L, 1L)
    let wL = sqrt (1.0 / 3.0)
    let wC = sqrt (2.0 / (9.0 * float cfg.PointQk))

    let offsets =
        (torch.arange(l).unsqueeze 0L - torch.arange(l).unsqueeze 1L)
            .clamp((-cfg.MaxOffset).ToScalar(), cfg.MaxOffset.ToScalar())
        + cfg.MaxOffset

    let bias =
        (w "relative_position.weight")
            .index_select(0L, offsets.flatten ())
            .reshape(l, l, h)
            .permute(2L, 0L, 1L)
            .unsqueeze
            0L

    let pointTerm = gamma * (wC / 2.0) * squared
    let logits = wL * (scalar + bias - pointTerm)

    let delta =
        wL
        * (eScalar
           + gamma * (wC / 2.0) * eSquared
           + 4.0 * u * (scalar.abs () + bias.abs () + pointTerm.abs ())
           + 4.0 * u * pointTerm.abs ())
        + u * logits.abs ()

    let keys = allowed.reshape (b, 1L, 1L, l)

    let masked =
        logits.masked_fill (keys.logical_not (), Double.NegativeInfinity.ToScalar())

    let rowMax = masked.amax ([| -1L |], true)

    let delta =
        torch.where (keys, delta + u * (logits - rowMax).abs() + 2.0 * u, torch.zeros_like delta)

    let a = masked.softmax (-1L)
    let logM = (a * delta.exp ()).sum(-1L, true).log()
    let factor = (delta + logM).exp() - 1.0

    let mean (v: torch.Tensor) (ev: torch.Tensor) =
        let o = a.matmul v
        let spread = (v.unsqueeze -3L - o.unsqueeze -2L).abs()

        o,
        torch.einsum ("bhij,bhijx->bhix", a * factor, spread)
        + (2.0 * float l + 2.0) * u * a.matmul (v.abs ())
        + a.matmul ev

    let oS, eoS = mean vS evS
    let oG, eoG = mean vP evP

    let flat (x: torch.Tensor) =
        x.permute(0L, 2L, 1L, 3L).reshape(b, l, -1L)

    let oG, eoG = (flat oG).reshape(b, l, -1L, 3L), (flat eoG).reshape(b, l, -1L, 3L)
    let centred = oG - t.unsqueeze -2L
    let local = centred.matmul r
    let eCentred = eoG + eT + u * centred.abs ()

    let eLocal =
        3.0 * u * centred.abs().matmul absR
        + eCentred.matmul absR
        + eR * centred.abs().sum(-1L, true)

    let norms = (local.square().sum(-1L) + 1e-8).sqrt()
    let eNorms = eLocal.norm (-1, false) + 3.0 * u * norms
    let x = torch.cat ([| flat oS; local.reshape (b, l, -1L); norms |], -1L)
    let ex = torch.cat ([| flat eoS; eLocal.reshape (b, l, -1L); eNorms |], -1L)
    let weight, biasOut = w "out.weight", w "out.bias"
    let fanIn = float x.shape.[2]

    (fanIn + 1.0)
    * u
    * (torch.nn.functional.linear (x.abs (), weight.abs ()) + biasOut.abs ())
    + torch.nn.functional.linear (ex, weight.abs ())


[<Tests>]
let tests =
    testList
        "Models/StructureModule"
        [
            for dtype, name in Props.dtypes do
                test (sprintf "IPA is invariant to one rigid motion of every frame (%s)" name) {
                    use _ = torch.NewDisposeScope()

                    for seed in 1UL .. 6UL do
                        use m = ipa dtype seed
                        let g = new torch.Generator(seed + 50UL)
                        let b, l = 2L, 7L + int64 seed
                        let s = torch.randn ([| b; l; attention.DModel |], dtype = dtype, generator = g)
                        let frames = Frame.random [| b; l |] 1.0 dtype torch.CPU g
                        let motion = Frame.random [| b |] 3.0 dtype torch.CPU g
                        let allowed = torch.ones ([| b; l |], dtype = torch.ScalarType.Bool)
                        allowed.[1L, 2L] <- torch.tensor false
                        let moved = movedBy motion frames
                        let a = m.Attend(s, frames, allowed)
                        let c = m.Attend(s, moved, allowed)
                        // Exactly invariant under an exact rigid motion Q (within GeoTol.quatMatrixEntry e of the
                        // motion's matrix M): the moved frames are Q's images up to M's error through |R|'s columns
                        // and |T|, plus the products' rounding (3u·|M||x|, and u·|T'| for + t). Each side within
                        // attendBound, doubled for second order.
                        let e = GeoTol.quatMatrixEntry dtype
                        let u = Tol.unitRoundoff dtype
                        let abs64 (x: torch.Tensor) = x.abs().to_type torch.float64
                        let absM = abs64 motion.R |> fun x -> x.unsqueeze 1L

                        let eR =
                            e * (abs64 frames.R).sum(-2L).max().ToDouble()
                            + 3.0 * u * absM.matmul(abs64 frames.R).max().ToDouble()

                        let eT =
                            (e + 3.0 * u) * (abs64 frames.T).sum(-1L).max().ToDouble()
                            + u * moved.T.abs().max().ToDouble()

                        let bound =
                            attendBound m s frames allowed 0.0 0.0 + attendBound m s moved allowed eR eT

                        Tol.within "IPA output" (c.to_type torch.float64 - a.to_type torch.float64) (2.0 * bound)
                }

            test "IPA: a key that is not allowed changes nothing; the point term does (it can fail)" {
                use _ = torch.NewDisposeScope()
                use m = ipa torch.float64 3UL
                let g = new torch.Generator(4UL)

                let s =
                    torch.randn ([| 1L; 6L; attention.DModel |], dtype = torch.float64, generator = g)

                let frames = Frame.random [| 1L; 6L |] 1.0 torch.float64 torch.CPU g
                let allowed = torch.ones ([| 1L; 6L |], dtype = torch.ScalarType.Bool)
                allowed.[0L, 5L] <- torch.tensor false
                let a = m.Attend(s, frames, allowed)
                let spoiled = s.clone ()

                spoiled.narrow(1L, 5L, 1L).add_(torch.ones ([| 1L; 1L; attention.DModel |], dtype = torch.float64))
                |> ignore

                let b = m.Attend(spoiled, frames, allowed)
                Tol.close "rows 0–4 ignore residue 5" 1e-12 (b.narrow (1L, 0L, 5L)) (a.narrow (1L, 0L, 5L))
                // moving one frame alone (not a global motion) must change the output
                let shift = torch.zeros ([| 1L; 6L; 3L |], dtype = torch.float64)
                shift.[0L, 2L, 2L] <- torch.tensor 2.0
                let moved = { frames with T = frames.T + shift }

                Expect.isGreaterThan (Tol.maxAbsDiff (m.Attend(s, moved, allowed)) a) 1e-6 "one frame moved"
            }

            test "structure module: proper rotations, Å translations, every round's frames; decoder keys load back" {
                use _ = torch.NewDisposeScope()

                let config =
                    {
                        Iterations = 3
                        Attention = attention
                        Start = StructureModuleStart.Identity
                    }

                use m = new StructureModule(config)
                Init.initialise (new torch.Generator(5UL)) m
                perturb 15UL m

                let s =
                    torch.randn ([| 2L; 9L; attention.DModel |], generator = new torch.Generator(6UL))

                let rounds = m.Rounds(s, torch.ones ([| 2L; 9L |], dtype = torch.ScalarType.Bool))
                Expect.equal rounds.Length 3 "one frame set per round"
                let last = List.last rounds
                // Round 1 is the identity times a quaternion's matrix (exact times GeoTol.quatMatrixEntry); each later
                // round composes one more (GeoTol.productEntry), then GeoTol.properError of that entry bound.
                let f32 = torch.float32
                let q = GeoTol.quatMatrixEntry f32

                let entry =
                    List.fold (fun e _ -> GeoTol.productEntry f32 e q) q [ 2 .. config.Iterations ]

                Tol.atMost "proper rotations" (GeoTol.properError f32 entry) (Rotation.properError last.R)
                Tol.close "forward = last round" 0.0 (m.forward(s).T) last.T

                // a decoder with the module: keys after ESM's, round count through the export metadata
                let decoderConfig =
                    {
                        DModel = 24L
                        Heads = 2L
                        Layers = 1
                        PairwiseDownproject = 8L
                        PairwiseHidden = 8L
                        StructureModule = Some config
                        ChainFrames = false
                    }

                use decoder = new StructureDecoder(decoderConfig)
                Init.initialise (new torch.Generator(7UL)) decoder
                perturb 17UL decoder
                let keys = Checkpoint.stateDict decoder |> List.map (fun (k, t) -> k, t.shape)
                Expect.sequenceEqual keys (StructureDecoderCheckpoint.expectedKeys decoderConfig) "keys in order"
                use dir = new TempDir()
                let path = dir.File "decoder.safetensors"

                Checkpoint.save
                    path
                    decoder
                    (readOnlyDict [ "head_width", "12"; StructureModuleConfig.RoundsMetadataKey, "3" ])

                use loaded = StructureDecoderCheckpoint.load path
                Expect.equal loaded.Config decoderConfig "inferred config"
                let tokens = torch.tensor([| 4098L; 5L; 77L; 300L; 9L; 4097L |]).unsqueeze 0L
                Tol.close "backbone" 0.0 (loaded.forward(tokens).Backbone) (decoder.forward(tokens).Backbone)
            }

            test "AlphaFold2's final initialisation: zero updates keep every round's frames at the identity" {
                use _ = torch.NewDisposeScope()
                let attention = InvariantPointAttentionConfig.alphaFold2 24L

                use m =
                    new StructureModule(
                        {
                            Iterations = 3
                            Attention = attention
                            Start = StructureModuleStart.Identity
                        }
                    )

                Init.initialise (new torch.Generator(2UL)) m
                let s = torch.randn ([| 2L; 7L; 24L |], generator = new torch.Generator(3UL))
                let rounds = m.Rounds(s, torch.ones ([| 2L; 7L |], dtype = torch.ScalarType.Bool))
                let identity = Frame.identity [| 2L; 7L |] torch.float32 torch.CPU

                for f in rounds do
                    Tol.close "R" 0.0 f.R identity.R
                    Tol.close "T" 0.0 f.T identity.T
            }

            test "a decoder with ChainFrames composes the affine head's frames; its flag travels in the metadata" {
                use _ = torch.NewDisposeScope()

                let config =
                    {
                        DModel = 64L
                        Heads = 1L
                        Layers = 1
                        PairwiseDownproject = 8L
                        PairwiseHidden = 8L
                        StructureModule = None
                        ChainFrames = true
                    }

                use chained = new StructureDecoder(config)
                Init.initialise (new torch.Generator(5UL)) chained
                use absolute = new StructureDecoder({ config with ChainFrames = false })
                use dir = new TempDir()
                let path = dir.File "decoder.safetensors"

                Checkpoint.save
                    path
                    chained
                    (readOnlyDict [ StructureDecoderCheckpoint.ChainFramesMetadataKey, "true" ])

                Checkpoint.load path absolute
                let tokens = torch.tensor([| 4098L; 5L; 77L; 300L; 9L; 4097L |]).unsqueeze 0L
                let steps = absolute.forward(tokens).Frames
                let frames = chained.forward(tokens).Frames
                let expected = Frame.chain steps
                Tol.close "R" 0.0 frames.R expected.R
                Tol.close "T" 0.0 frames.T expected.T

                use loaded = StructureDecoderCheckpoint.load path
                Expect.equal loaded.Config config "ChainFrames read from the metadata"

                refusesMetadata
                    (dir.File "bad.safetensors")
                    chained
                    StructureDecoderCheckpoint.ChainFramesMetadataKey
                    "yes"
                    (StructureDecoderCheckpoint.load >> ignore)

                let both =
                    { config with
                        StructureModule = Some(StructureModuleConfig.alphaFold2 64L)
                    }

                match StructureDecoderConfig.validate both with
                | Ok _ -> failtest "ChainFrames with a structure module must be refused"
                | Error errors -> Expect.exists errors (fun e -> e.Contains "ChainFrames") "named"
            }

            test
                "a new module started at the affine head's frames returns them; trained it moves them; the start is kept in its file" {
                use _ = torch.NewDisposeScope()
                let d = StructureDecoderConfig.smoke.DModel

                let config =
                    { StructureDecoderConfig.smoke with
                        StructureModule =
                            Some
                                { StructureModuleConfig.alphaFold2 d with
                                    Iterations = 2
                                    Start = StructureModuleStart.AffineHead
                                }
                    }

                use refining = new StructureDecoder(config)
                Init.initialise (new torch.Generator(3UL)) refining

                use plain = new StructureDecoder({ config with StructureModule = None })

                let own = dict (Checkpoint.stateDict refining)

                do
                    use _ = torch.no_grad ()

                    for name, t in Checkpoint.stateDict plain do
                        t.copy_ own.[name] |> ignore

                refining.eval ()
                plain.eval ()
                use _ = torch.no_grad ()
                let tokens = torch.tensor([| 4098L; 5L; 77L; 300L; 9L; 1500L; 4097L |]).unsqueeze 0L
                let affine = plain.forward(tokens).Backbone
                let refined = refining.forward tokens
                // AlphaFold2's zero update layers make every round the identity update, which composes exactly
                // (R·I and R·0 + T involve no rounding); only T / 10 into the module's nanometres and × 10 back out
                // round, each by u relative, so the atoms R·x + T move by at most 2u·|T| ≤ 2u·max|atom| + 2u·|R x|,
                // bounded by 4u·max|atom| + 4u·(ideal backbone's 1.5 Å) with room.
                let bound = Tol.derived torch.float32 4.0 (affine.abs().max().ToDouble() + 1.5)

                Tol.close "a new module: the affine head's backbone" bound refined.Backbone affine
                Expect.equal refined.RoundBackbones.Length 2 "one backbone per round"

                perturb 15UL refining
                let moved = refining.forward(tokens).Backbone

                Expect.isGreaterThan
                    (Tol.maxAbsDiff moved affine)
                    0.1
                    "a trained module moves the frames (so the first check could fail)"

                use dir = new TempDir()
                let path = dir.File "decoder.safetensors"
                StructureDecoderCheckpoint.save path (Checkpoint.stateDict refining) config []
                use loaded = StructureDecoderCheckpoint.load path
                Expect.equal loaded.Config config "the start and the rounds read back from the metadata"
                Tol.close "the loaded decoder draws the same backbone" 0.0 (loaded.forward(tokens).Backbone) moved

                refusesMetadata
                    (dir.File "bad.safetensors")
                    refining
                    StructureModuleConfig.StartMetadataKey
                    "sideways"
                    (StructureDecoderCheckpoint.load >> ignore)
            }
        ]
