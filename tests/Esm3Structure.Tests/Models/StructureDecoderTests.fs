module Esm3Structure.Tests.Models.StructureDecoderTests

open System
open System.IO
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

let private cpu = torch.CPU

/// Small and with all sizes different: d 48, 3 heads (d_head 16), 2 layers, pairwise 16 → 24.
let private tiny = TokenizerFixtures.tinyDecoderConfig

/// Loadable with ESM's d_head 64 (so `StructureDecoderCheckpoint.load` infers it back).
let private loadable = { tiny with DModel = 64L; Heads = 1L }

let private decoder (config: StructureDecoderConfig) (dtype: torch.ScalarType) (seed: uint64) =
    let m = new StructureDecoder(config)
    m.``to`` dtype |> ignore
    Init.initialise (new torch.Generator(seed)) m
    m

/// BOS, codes drawn from the generator, EOS. Shapes: -> [n + 2]
let private wrappedCodes (g: torch.Generator) (n: int) =
    let codes =
        torch.randint(4096L, [| int64 n |], dtype = torch.int64, generator = g).data<int64>().ToArray()

    StructureTokens.wrap "test" codes

/// Two rows: 7 codes, and 5 codes padded to the same length. Shapes: -> [2, 9]
let private batch (g: torch.Generator) =
    let a = wrappedCodes g 7

    let b =
        Array.append (wrappedCodes g 5) [| StructureTokens.Pad; StructureTokens.Pad |]

    torch.tensor (Array.append a b, ReadOnlySpan<int64> [| 2L; 9L |])

/// A checkpoint whose tensors were edited, written next to `source`.
let private edited
    (dir: TempDir)
    (source: string)
    (edit: (string * torch.Tensor) list -> (string * torch.Tensor) list)
    =
    let file = Safetensors.read source
    let path = dir.File(Guid.NewGuid().ToString("N") + ".safetensors")
    Safetensors.write path (edit file.Tensors) null
    path

/// ESM's local oxygen v (ProteinChain.infer_oxygen): O = C + R v, so ‖O − C‖ = ‖v‖.
let private oxygenLocal = [| 0.6240; -1.0613; 0.0103 |]

let private backboneLocal = Math.Sqrt(Array.sumBy (fun x -> x * x) oxygenLocal)

/// The bound on |‖O − C‖ − ‖v‖| for O from `inferOxygen` in `dtype`, per residue 0 … L−2.
/// Shapes: o [*, L−1, 3] (the inferred O), aa, uu, sin [*, L−1] (`oxygenConditioning`) -> [*, L−1]
///
/// Rounding (u = the dtype's unit roundoff, first order): O = fl(fl(R v) + C) rounds once at the magnitude ‖O‖;
/// the rotation part, at magnitude ‖v‖, takes about 16 operations (x̂: a 3-term norm, sqrt, divide; ê₂ = x̂ × ê₁;
/// R v: 3-term dot products; the check's own subtraction and norm) plus 8 in ê₁ (3-term dot, multiply-subtract,
/// norm, sqrt, divide) whose error is relative to |b⊥| = |b| sin θ, so amplified by 1/sin θ (θ = ∠(C − CA,
/// N_{i+1} − C)). Hence u·(‖O‖ + ‖v‖·(16 + 8/sin θ)).
///
/// ESM's ε = 1e-10 inside the square roots (a bias, not rounding; exact to first order in ε): x̂ is shortened by
/// α = ε/(2‖a‖²), ê₁ by β = ε/(2‖b⊥‖²), and the shortened x̂ leaves 2α·cot θ of x̂ in ê₁, so
/// ‖R v‖ − ‖v‖ ≈ (−(v₀² + v₂²)α + 2v₀v₁α·cot θ − (v₁² + v₂²)β)/‖v‖, bounded by its terms' magnitudes: tight (all
/// three shorten when cot θ > 0, and random backbones reach 0.999999 of it in float64), yet an upper bound, as the
/// higher orders only shorten less (1/√(1 + x) ≥ 1 − x/2; the leftover x̂ in ê₁ adds length). (An earlier
/// bound ε(1/‖a‖² + 1/‖b⊥‖²) missed the cot θ term and fails by up to 1.35× for |b| ≈ 7 Å, θ ≈ 0.3 in float64.)
let private oxygenLengthTolerance
    (dtype: torch.ScalarType)
    (o: torch.Tensor)
    (aa: torch.Tensor)
    (uu: torch.Tensor)
    (sin: torch.Tensor)
    =
    let v0, v1, v2 = oxygenLocal.[0], oxygenLocal.[1], oxygenLocal.[2]
    let u = Tol.unitRoundoff dtype
    let rounding = u * (o.norm (-1, false) + backboneLocal * (16.0 + 8.0 / sin))
    let cot = (1.0 - sin * sin).clamp_min(0.0.ToScalar()).sqrt() / sin
    let eps = Rotation.EsmFrameEps

    let bias =
        (eps / backboneLocal)
        * ((v0 * v0 + v2 * v2) / (2.0 * aa)
           + abs (v0 * v1) * cot / aa
           + (v1 * v1 + v2 * v2) / (2.0 * uu))

    rounding + bias

/// For residues 0 … L−2 of a backbone: ‖C−CA‖², ‖u‖² (the part of N_{i+1} − C orthogonal to C − CA, i.e. the
/// second Gram–Schmidt axis before normalisation) and the sine of the angle between C − CA and N_{i+1} − C.
/// Shapes: [*, L, 3, 3] -> [*, L−1] each
let private oxygenConditioning (bb: torch.Tensor) =
    let l = bb.shape.[bb.shape.Length - 3]
    let early = bb.narrow (-3L, 0L, l - 1L)
    let a = early.select (-2L, 2L) - early.select (-2L, 1L)
    let w = bb.narrow(-3L, 1L, l - 1L).select(-2L, 0L) - early.select (-2L, 2L)
    let cross = torch.linalg.cross(a, w, -1L).norm(-1, false)
    let aa = (a * a).sum(-1L)
    aa, cross * cross / aa, cross / (a.norm (-1, false) * w.norm (-1, false))

let private oxygenTests =
    testList
        "D8 oxygen"
        [
            for dtype, name in Props.dtypes do
                Props.property (name + ": O_i depends only on CA_i, C_i and N_{i+1}; the last residue has none")
                <| fun (c: BackboneCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let bb = Draw.backbone g c.Batch c.Length dtype
                    let o = StructureDecoder.inferOxygen bb
                    let l = c.Length
                    Expect.sequenceEqual o.shape (Array.append c.Batch [| l; 3L |]) "shape"
                    Expect.isTrue (o.select(-2L, l - 1L).isnan().all().item<bool>()) "last O is NaN"

                    if l > 1L then
                        let early = o.narrow (-2L, 0L, l - 1L)
                        Expect.isTrue (early.isfinite().all().item<bool>()) "other O finite"
                        let oc = (early - bb.narrow(-3L, 0L, l - 1L).select(-2L, 2L)).norm(-1, false)
                        let aa, uu, sin = oxygenConditioning bb
                        Tol.within "‖O − C‖" (oc - backboneLocal) (oxygenLengthTolerance dtype early aa uu sin)
                        // Replace every atom except CA_i, C_i, N_{i+1} of one residue i: O_i is unchanged.
                        let i = (c.Seed % uint64 (l - 1L)) |> int64
                        let noise = Draw.backbone g c.Batch l dtype
                        let keep = torch.zeros ([| l; 3L |], dtype = torch.ScalarType.Bool)
                        keep.[i, 1L] <- torch.tensor true
                        keep.[i, 2L] <- torch.tensor true
                        keep.[i + 1L, 0L] <- torch.tensor true
                        let mixed = torch.where (keep.unsqueeze (-1L), bb, noise)
                        let oi = StructureDecoder.inferOxygen(mixed).select(-2L, i)
                        Tol.close "O_i with other atoms replaced" 0.0 oi (o.select (-2L, i))
                        // Moving N_{i+1} out of the CA_i-C_i-N_{i+1} plane moves O_i.
                        let moved = bb.clone ()
                        let atom r k = bb.select(-3L, r).select(-2L, k)

                        let normal =
                            torch.linalg.cross (atom i 2L - atom i 1L, atom (i + 1L) 0L - atom i 2L, -1L)

                        moved.select(-3L, i + 1L).select(-2L, 0L).add_(0.3 * normal / normal.norm (-1, true))
                        |> ignore

                        let om = StructureDecoder.inferOxygen(moved).select(-2L, i)
                        Expect.isGreaterThan (Tol.maxAbsDiff om (o.select (-2L, i))) 1e-3 "N_{i+1} matters"

                Props.property (name + ": O is rigid-motion equivariant")
                <| fun (c: BackboneCase) ->
                    use _ = torch.NewDisposeScope()
                    let g = c.Generator()
                    let bb = Draw.backbone g c.Batch c.Length dtype
                    let motion = Frame.random [||] 30.0 dtype cpu g
                    let o = StructureDecoder.inferOxygen bb
                    let moved = StructureDecoder.inferOxygen (Frame.apply motion bb)
                    let expected = Frame.apply motion o
                    let l = c.Length
                    Expect.isTrue (moved.select(-2L, l - 1L).isnan().all().item<bool>()) "last O is NaN"

                    if l > 1L then
                        let early (t: torch.Tensor) = t.narrow (-2L, 0L, l - 1L)
                        // Exactly equivariant under a rotation Q (ε's bias too: it depends on lengths and angles
                        // only); the motion's matrix M is within e = GeoTol.quatMatrixEntry of Q per entry (3e in
                        // 2-norm), which shifts every atom by E x: a common E·C plus ≤ 3e·1.6 Å on the bonds to C.
                        // Left, O of the moved atoms: each moved atom rounds ≤ 3u·√3|x| + u·|Mx + t| per entry (√3
                        // times in 2-norm), which with E's distortion turns x̂ by p_a = 2δ/|a| and ê₁ by
                        // (p_b + 2p_a)/sin (a = C − CA, b = N_{i+1} − C), so R v by ≤ 3·(p_a + (p_b + 2p_a)/sin)·|v|;
                        // C itself moves by δ; inferOxygen's own rounding u·(|O| + |v|·(16 + 8/sin)) (above).
                        // Right, M o + t: o's own rounding (the same count at the original magnitudes), E on
                        // O − C = R v (3e·|v|), and the product's rounding as for an atom. Doubled for second order.
                        let u = Tol.unitRoundoff dtype
                        let e = GeoTol.quatMatrixEntry dtype
                        let aa, _, sin = oxygenConditioning bb
                        let x = bb.to_type(torch.float64).abs().max().ToDouble()
                        let x' = (Frame.apply motion bb).to_type(torch.float64).abs().max().ToDouble()
                        let v = backboneLocal
                        let delta = sqrt 3.0 * (3.0 * sqrt 3.0 * u * x + u * x') + 3.0 * e * 1.6
                        let lengthB = (oxygenConditioning bb |> fun (_, uu, s) -> (uu / (s * s)).sqrt())
                        let pa = 2.0 * delta / aa.sqrt ()
                        let pb = 2.0 * delta / lengthB
                        let own (mag: float) = u * (mag + v * (16.0 + 8.0 / sin))
                        let left = delta + 3.0 * (pa + (pb + 2.0 * pa) / sin) * v + own x'
                        let right = own x * (1.0 + 3.0 * e) + 3.0 * e * v + delta
                        Tol.within "O" (early moved - early expected) (2.0 * (left + right).unsqueeze(-1L))

            test "on 1ubq_A the inferred O lies close to the deposited O" {
                use _ = torch.NewDisposeScope()
                let chain = Pdb.read (Data.small "1ubq_A") None
                let bb = ProteinChain.backbone torch.float64 chain

                let observed =
                    (ProteinChain.atom37 torch.float64 chain).select(1L, int64 ResidueConstants.oIndex)

                let l = bb.shape.[0]
                let o = StructureDecoder.inferOxygen bb
                let d = (o - observed).narrow(0L, 0L, l - 1L).norm(-1, false)
                let struct (sorted, _) = d.sort ()
                let median = sorted.[(l - 1L) / 2L].ToDouble()
                Expect.isLessThan median 0.1 "median |O − O_deposited| (Å)"
                Expect.isLessThan (sorted.[l - 2L].ToDouble()) 0.3 "max over residues 1 … L−1 (Å)"
            }
        ]

[<Tests>]
let tests =
    testList
        "Models/StructureDecoder"
        [
            test "file metadata: head counts and optional parts from the config, the caller's status wins" {
                let plain = StructureDecoderCheckpoint.metadataOf StructureDecoderConfig.small []

                Expect.equal
                    plain
                    (Map.ofList
                        [
                            "heads", string StructureDecoderConfig.small.Heads
                            "head_width",
                            string (StructureDecoderConfig.small.DModel / StructureDecoderConfig.small.Heads)
                        ])
                    "no structure module, no chain frames: head counts only"

                let module3 =
                    { StructureDecoderConfig.small with
                        StructureModule =
                            Some
                                { StructureModuleConfig.alphaFold2 StructureDecoderConfig.small.DModel with
                                    Iterations = 3
                                }
                        ChainFrames = true
                    }

                let full =
                    StructureDecoderCheckpoint.metadataOf
                        module3
                        [
                            "head_width", "12"
                            StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained"
                        ]

                Expect.equal full.[StructureModuleConfig.RoundsMetadataKey] "3" "rounds"
                Expect.equal full.[StructureDecoderCheckpoint.ChainFramesMetadataKey] "true" "chain frames"
                Expect.equal full.["head_width"] "12" "status wins"
                Expect.equal full.[StructureDecoderCheckpoint.ConfidenceMetadataKey] "trained" "status"
            }

            test "esm3 preset: ESM's key/shape table (§7.7) and 618,552,905 parameters, computed without allocating" {
                let keys = StructureDecoderCheckpoint.expectedKeys StructureDecoderConfig.esm3
                Expect.equal keys.Length (1 + 30 * 10 + 1 + 6 + 5 + 6) "key count"

                Expect.equal
                    (StructureDecoderCheckpoint.parameterCount StructureDecoderConfig.esm3)
                    618_552_905L
                    "params"

                let table = dict keys

                let expected =
                    [
                        "embed.weight", [| 4101L; 1280L |]
                        "decoder_stack.blocks.0.attn.layernorm_qkv.0.bias", [| 1280L |]
                        "decoder_stack.blocks.29.attn.layernorm_qkv.1.weight", [| 3840L; 1280L |]
                        "decoder_stack.blocks.29.attn.out_proj.weight", [| 1280L; 1280L |]
                        "decoder_stack.blocks.29.attn.k_ln.weight", [| 1280L |]
                        "decoder_stack.blocks.17.ffn.1.weight", [| 7168L; 1280L |]
                        "decoder_stack.blocks.17.ffn.3.weight", [| 1280L; 3584L |]
                        "decoder_stack.norm.weight", [| 1280L |]
                        "affine_output_projection.ffn1.weight", [| 1280L; 1280L |]
                        "affine_output_projection.proj.weight", [| 23L; 1280L |]
                        "affine_output_projection.proj.bias", [| 23L |]
                        "pairwise_classification_head.downproject.weight", [| 128L; 1280L |]
                        "pairwise_classification_head.linear1.weight", [| 128L; 128L |]
                        "pairwise_classification_head.norm.bias", [| 128L |]
                        "pairwise_classification_head.linear2.weight", [| 224L; 128L |]
                        "plddt_head.dense.bias", [| 1280L |]
                        "plddt_head.output.weight", [| 50L; 1280L |]
                        "plddt_head.output.bias", [| 50L |]
                    ]

                for name, shape in expected do
                    Expect.isTrue (table.ContainsKey name) name
                    Expect.sequenceEqual table.[name] shape name

                for absent in
                    [
                        "decoder_stack.norm.bias"
                        "pairwise_classification_head.downproject.bias"
                        "decoder_stack.blocks.0.attn.out_proj.bias"
                        "decoder_stack.blocks.30.ffn.0.weight"
                    ] do
                    Expect.isFalse (table.ContainsKey absent) absent

                let prefixes = keys |> List.map (fun (k, _) -> k.Split('.').[0]) |> List.distinct

                Expect.equal
                    prefixes
                    [
                        "embed"
                        "decoder_stack"
                        "affine_output_projection"
                        "pairwise_classification_head"
                        "plddt_head"
                    ]
                    "module order"
            }

            test "a built decoder's state_dict is expectedKeys: same names, order and shapes" {
                use m = decoder tiny torch.float32 1UL
                let actual = Checkpoint.keyShapes m |> List.map (fun (k, s) -> k, List.ofArray s)

                let expected =
                    StructureDecoderCheckpoint.expectedKeys tiny
                    |> List.map (fun (k, s) -> k, List.ofArray s)

                Expect.equal actual expected "keys and shapes"
                let counted = m.parameters () |> Seq.sumBy (fun p -> p.numel ())
                Expect.equal counted (StructureDecoderCheckpoint.parameterCount tiny) "parameter count"
            }

            test "validate names each bad field" {
                match
                    StructureDecoderConfig.validate
                        { tiny with
                            Heads = 5L
                            Layers = 0
                            PairwiseDownproject = 15L
                        }
                with
                | Ok _ -> failtest "expected errors"
                | Error errors ->
                    Expect.equal errors.Length 3 (String.Join("; ", errors))
                    Expect.stringContains errors.[0] "Heads" "heads"
                    Expect.stringContains errors.[1] "Layers" "layers"
                    Expect.stringContains errors.[2] "PairwiseDownproject" "pairwise"

                Expect.isOk (StructureDecoderConfig.validate StructureDecoderConfig.esm3) "esm3"
                Expect.isOk (StructureDecoderConfig.validate StructureDecoderConfig.small) "small"
            }

            test "forward: shapes, finite values and ranges on a padded batch (float32)" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float32 2UL
                let tokens = batch (new torch.Generator(3UL))
                let out = m.forward tokens
                let b, l = 2L, 9L

                for name, t, shape in
                    [
                        "Hidden", out.Hidden, [| b; l; 48L |]
                        "Frames.R", out.Frames.R, [| b; l; 3L; 3L |]
                        "Frames.T", out.Frames.T, [| b; l; 3L |]
                        "Backbone", out.Backbone, [| b; l; 3L; 3L |]
                        "TorsionLogits", out.TorsionLogits, [| b; l; 7L; 2L |]
                        "PlddtLogits", out.PlddtLogits, [| b; l; 50L |]
                        "Plddt", out.Plddt, [| b; l |]
                        "DistogramLogits", out.DistogramLogits, [| b; l; l; 64L |]
                        "DirectionLogits", out.DirectionLogits, [| b; l; l; 96L |]
                        "PaeLogits", out.PaeLogits, [| b; l; l; 64L |]
                        "Pae", out.Pae, [| b; l; l |]
                        "Ptm", out.Ptm, [| b |]
                    ] do
                    Expect.sequenceEqual t.shape shape name
                    Expect.isTrue (t.isfinite().all().item<bool>()) (name + " finite")

                Expect.isTrue (out.Plddt.ge(0.0099999.ToScalar()).all().item<bool>()) "pLDDT ≥ 0.01"
                Expect.isTrue (out.Plddt.le(0.9900001.ToScalar()).all().item<bool>()) "pLDDT ≤ 0.99"
                Expect.isTrue (out.Pae.ge(0.25.ToScalar()).all().item<bool>()) "pAE ≥ 0.25"
                Expect.isTrue (out.Pae.le(31.75.ToScalar()).all().item<bool>()) "pAE ≤ 31.75"
                Expect.isTrue (out.Ptm.gt(0.0.ToScalar()).all().item<bool>()) "pTM > 0"
                Expect.isTrue (out.Ptm.le(1.0.ToScalar()).all().item<bool>()) "pTM ≤ 1"
                // BOS row of the pAE map is a special-token row: uniform, exactly 16 Å (weights exp(0)/64 = 1/64 on the
                // exact binary centres 0.25 + 0.5k, whose partial sums never round).
                Tol.close "BOS row" 0.0 (out.Pae.select (1L, 0L)) (torch.full ([| b; l |], (16.0).ToScalar()))
                // The frames are the head's: backbone = frames applied to the ideal residue.
                Tol.close "backbone = place frames" 0.0 out.Backbone (BackboneHead.place out.Frames)
                // pAE/pTM from the logits with real = code tokens.
                let real = tokens.lt (4096L.ToScalar())
                Tol.close "pTM" 0.0 out.Ptm (AlignedError.ptm out.PaeLogits real)
            }

            test "ReflectStructures draws the mirror image (z → −z) of every backbone, exactly; pair logits unchanged" {
                // Negation is exact and every operation after the projection (Gram–Schmidt's norms, dot and cross
                // products, placing the ideal residue whose z are 0) is symmetric under the sign of z, so the mirror
                // holds bit for bit, with chain frames too (conjugation by the reflection preserves composition).
                for config in [ tiny; { tiny with ChainFrames = true } ] do
                    for dtype in [ torch.float64; torch.float32 ] do
                        use _ = torch.NewDisposeScope()
                        use m = decoder config dtype 12UL
                        let tokens = batch (new torch.Generator(13UL))
                        let before = m.forward tokens
                        m.ReflectStructures()
                        let after = m.forward tokens
                        let what = sprintf "chain frames %b, %A" config.ChainFrames dtype
                        let z = torch.tensor ([| 1.0; 1.0; -1.0 |], dtype = dtype)
                        Tol.close (what + ": backbone") 0.0 after.Backbone (before.Backbone * z)
                        Tol.close (what + ": translations") 0.0 after.Frames.T (before.Frames.T * z)
                        Tol.close (what + ": distogram logits") 0.0 after.DistogramLogits before.DistogramLogits
                        Tol.close (what + ": pLDDT") 0.0 after.Plddt before.Plddt
                        // Twice is the identity.
                        m.ReflectStructures()
                        Tol.close (what + ": reflected twice") 0.0 (m.forward tokens).Backbone before.Backbone

                let withModule =
                    { tiny with
                        StructureModule = Some(StructureModuleConfig.alphaFold2 48L)
                    }

                use m = decoder withModule torch.float32 14UL

                Expect.throwsC (fun () -> m.ReflectStructures()) (fun e ->
                    Expect.stringContains e.Message "structure module" "names the structure module")
            }

            test "DecodeEmbeddings without confidence: the same structure and pair logits, no pLDDT, pAE or pTM" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float64 4UL
                let g = new torch.Generator(5UL)
                let x = torch.randn ([| 2L; 6L; 48L |], dtype = torch.float64, generator = g)

                let padding =
                    torch.tensor([| false; false; false; false; true; true |]).expand(2L, 6L).contiguous()

                let full = m.DecodeEmbeddings(x, padding)
                let lean = m.DecodeEmbeddings(x, padding, false)

                for name, a, b in
                    [
                        "Backbone", full.Backbone, lean.Backbone
                        "DistogramLogits", full.DistogramLogits, lean.DistogramLogits
                        "DirectionLogits", full.DirectionLogits, lean.DirectionLogits
                    ] do
                    Tol.close name 1e-12 a b

                for name, t in
                    [
                        "PlddtLogits", lean.PlddtLogits
                        "Plddt", lean.Plddt
                        "PaeLogits", lean.PaeLogits
                        "Pae", lean.Pae
                        "Ptm", lean.Ptm
                    ] do
                    Expect.isNull t (name + " is not computed")
            }

            test "DecodeResidues = forward on BOS, the codes, EOS (residue positions); a padded row = that row alone" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float64 6UL
                let g = new torch.Generator(7UL)
                let codes = torch.randint (4096L, [| 2L; 7L |], dtype = torch.int64, generator = g)
                let embeddings = m.state_dict().["embed.weight"].index_select(0L, codes.reshape -1L)
                let embeddings = embeddings.reshape (2L, 7L, 48L)
                let residues = m.DecodeResidues(embeddings, null, true)

                let full = m.forward (StructureTokens.wrapRows codes)
                let inner (t: torch.Tensor) = t.narrow (1L, 1L, 7L)
                let pairs (t: torch.Tensor) = t.narrow(1L, 1L, 7L).narrow(2L, 1L, 7L)

                for name, a, b in
                    [
                        "Backbone", inner full.Backbone, residues.Backbone
                        "DistogramLogits", pairs full.DistogramLogits, residues.DistogramLogits
                        "DirectionLogits", pairs full.DirectionLogits, residues.DirectionLogits
                        "Plddt", inner full.Plddt, residues.Plddt
                        "Pae", pairs full.Pae, residues.Pae
                        "Ptm", full.Ptm, residues.Ptm
                    ] do
                    Tol.close name 1e-12 a b

                // Row 1 cut to 4 residues and padded to 7: EOS goes right after its 4th residue.
                let padding =
                    torch.tensor([| false; false; false; false; true; true; true |]).unsqueeze 0L

                let padded = m.DecodeResidues(embeddings.narrow (0L, 1L, 1L), padding, true)

                let alone =
                    m.DecodeResidues(embeddings.narrow(0L, 1L, 1L).narrow(1L, 0L, 4L), null, true)

                Tol.close "padded row, backbone" 1e-12 (padded.Backbone.narrow (1L, 0L, 4L)) alone.Backbone
                Tol.close "padded row, pTM" 1e-12 padded.Ptm alone.Ptm
            }

            test "forward rejects a batch without EOS, naming the row and position" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float32 2UL
                let tokens = batch (new torch.Generator(3UL))
                tokens.[1L, 6L] <- torch.tensor 17L

                let e =
                    (raises<InputException> "decoder input" (fun () -> m.forward tokens |> ignore)).Error

                Expect.equal e.Location (InputLocation.Field "row 1, position 6") e.Message
            }

            test "a float64 decoder places every residue with ESM's ideal geometry (D2 through the model)" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float64 4UL
                let out = m.forward (batch (new torch.Generator(5UL)))

                let head =
                    m.named_children ()
                    |> Seq.pick (fun struct (name, child) ->
                        if name = "affine_output_projection" then
                            Some(child :?> torch.nn.Module<torch.Tensor, torch.Tensor>)
                        else
                            None)

                let projection = head.forward out.Hidden
                let expected = BackboneHead.ofProjection projection
                Tol.close "frames = head(trunk)" 0.0 out.Frames.R expected.Frames.R
                Tol.close "backbone = head(trunk)" 0.0 out.Backbone expected.Backbone
                BackboneChecks.checkIdealGeometry torch.float64 projection out.Backbone
            }

            test "decode: N, CA, C and inferred O (none on the last residue), B = 100·pLDDT, finite" {
                use m = decoder tiny torch.float32 6UL
                let tokens = wrappedCodes (new torch.Generator(7UL)) 8
                let decoded = StructureDecoder.decodeWithSequence m "MKTAYIAK" tokens
                let chain = decoded.Chain
                Expect.equal (ProteinChain.length chain) 8 "length"
                Expect.equal chain.Sequence "MKTAYIAK" "sequence"
                Expect.equal chain.ResidueIndex [| 1..8 |] "numbering"

                for i in 0..7 do
                    for a in 0..36 do
                        let expected = a = 0 || a = 1 || a = 2 || (a = ResidueConstants.oIndex && i < 7)

                        Expect.equal chain.Atom37Mask.[i, a] expected (sprintf "residue %d atom %d" i a)

                        if expected then
                            for k in 0..2 do
                                Expect.isTrue (Single.IsFinite chain.Atom37.[i, a, k]) "finite"

                            Expect.floatClose
                                Accuracy.high
                                (float chain.BFactors.[i, a])
                                (100.0 * float decoded.Plddt.[i])
                                "B = 100 pLDDT"

                use _ = torch.NewDisposeScope()
                let out = m.forward (torch.tensor (tokens, ReadOnlySpan<int64> [| 1L; 10L |]))
                let plddt = out.Plddt.select(0L, 0L).narrow(0L, 1L, 8L)
                Tol.close "pLDDT stripped of BOS/EOS" 0.0 (torch.tensor decoded.Plddt) plddt
                Expect.equal decoded.Ptm (out.Ptm.[0L].ToDouble()) "pTM"
                let pae = out.Pae.select(0L, 0L).narrow(0L, 1L, 8L).narrow(1L, 1L, 8L)
                Expect.equal decoded.Pae.[2, 5] (pae.[2L, 5L].ToSingle()) "pAE [2, 5]"
                let bb = out.Backbone.select(0L, 0L).narrow(0L, 1L, 8L)
                Expect.equal chain.Atom37.[3, 1, 2] (bb.[3L, 1L, 2L].ToSingle()) "CA of residue 3"
                Expect.equal (StructureDecoder.decode m tokens).Chain.Sequence "AAAAAAAA" "ESM's default sequence"
            }

            test "decode names a MASK or out-of-range token and rejects a sequence of the wrong length" {
                use m = decoder tiny torch.float32 6UL
                let tokens = wrappedCodes (new torch.Generator(7UL)) 5
                let masked = Array.copy tokens
                masked.[3] <- StructureTokens.Mask

                let e =
                    (raises<InputException> "decoder input" (fun () -> StructureDecoder.decode m masked |> ignore))
                        .Error

                Expect.equal e.Location (InputLocation.Field "position 3") e.Message
                let wild = Array.copy tokens
                wild.[2] <- 5000L

                let e =
                    (raises<InputException> "decoder input" (fun () -> StructureDecoder.decode m wild |> ignore)).Error

                Expect.equal e.Location (InputLocation.Field "position 2") e.Message

                Expect.throwsT<ArgumentException>
                    (fun () -> StructureDecoder.decodeWithSequence m "MK" tokens |> ignore)
                    "sequence length"
            }

            test "checkpoint: save → load infers the sizes → save gives the same bytes and the same outputs" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use source = decoder loadable torch.float32 8UL
                let first = dir.File "first.safetensors"
                Checkpoint.save first source null
                use loaded = StructureDecoderCheckpoint.load first
                Expect.equal loaded.Config loadable "inferred config"
                let second = dir.File "second.safetensors"
                Checkpoint.save second loaded null
                Expect.equal (File.ReadAllBytes second) (File.ReadAllBytes first) "same bytes"
                let tokens = batch (new torch.Generator(9UL))
                let a, b = source.forward tokens, loaded.forward tokens
                Tol.close "backbone" 0.0 b.Backbone a.Backbone
                Tol.close "pLDDT" 0.0 b.Plddt a.Plddt
                Tol.close "pAE" 0.0 b.Pae a.Pae
                Tol.close "pTM" 0.0 b.Ptm a.Ptm
            }

            test "a PyTorch .pth decoder (no metadata): --heads gives its head count; without it d 48 is refused" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use source = decoder tiny torch.float32 11UL // d 48, 3 heads of 16
                let pth = dir.File "decoder.pth"
                PyTorchCheckpoint.write pth (Checkpoint.stateDict source)
                use loaded = StructureDecoderCheckpoint.loadWith (Some 3L) pth
                Expect.equal loaded.Config tiny "sizes from the shapes, heads from --heads"
                let tokens = batch (new torch.Generator(12UL))
                let a, b = source.forward tokens, loaded.forward tokens
                Tol.close "backbone" 0.0 b.Backbone a.Backbone
                Tol.close "pLDDT" 0.0 b.Plddt a.Plddt

                let e =
                    (raises<InputException> "decoder input" (fun () -> StructureDecoderCheckpoint.load pth |> ignore))
                        .Error

                Expect.stringContains e.Message "--heads" "the error names the option"
                Expect.equal e.File pth "and the file"

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.loadWith (Some 5L) pth |> ignore))
                        .Error

                Expect.stringContains e.Message "--heads 5 does not divide" e.Message
            }

            test "ofStateDict infers d, layers and the pairwise widths; heads from the head width" {
                use _ = torch.NewDisposeScope()
                use m = decoder tiny torch.float32 10UL
                let sd = Checkpoint.stateDict m
                let shapes = sd |> List.map (fun (k, t) -> k, t.shape)
                Expect.equal (StructureDecoderCheckpoint.ofKeyShapesWith 16L "m" shapes) tiny "d_head 16"

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.ofStateDict "m" sd |> ignore))
                        .Error

                Expect.equal e.Location (InputLocation.Field "embed.weight") ("48 is no multiple of 64: " + e.Message)

                let noPair =
                    shapes
                    |> List.filter (fun (k, _) -> k <> "pairwise_classification_head.linear1.weight")

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.ofKeyShapesWith 16L "m" noPair |> ignore))
                        .Error

                Expect.equal e.Location (InputLocation.Field "pairwise_classification_head.linear1.weight") e.Message
            }

            test "load names a mis-shaped, a missing and an unexpected tensor" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use source = decoder loadable torch.float32 12UL
                let path = dir.File "source.safetensors"
                Checkpoint.save path source null

                let misShaped =
                    edited dir path (fun ts ->
                        ts
                        |> List.map (fun (k, t) ->
                            if k = "plddt_head.output.weight" then
                                k, t.narrow (0L, 0L, 49L)
                            else
                                k, t))

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.load misShaped |> ignore))
                        .Error

                Expect.stringContains e.Message "plddt_head.output.weight: expected [50, 64], got [49, 64]" "mis-shaped"
                Expect.equal e.File misShaped "file"

                let missing =
                    edited dir path (List.filter (fun (k, _) -> k <> "affine_output_projection.proj.bias"))

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.load missing |> ignore))
                        .Error

                Expect.stringContains e.Message "missing keys: affine_output_projection.proj.bias" "missing"

                let extra =
                    edited dir path (fun ts -> ts @ [ "plddt_head.extra", torch.zeros ([| 2L |]) ])

                let e =
                    (raises<InputException> "decoder input" (fun () -> StructureDecoderCheckpoint.load extra |> ignore))
                        .Error

                Expect.stringContains e.Message "unexpected keys: plddt_head.extra" "unexpected"

                let noEmbed = edited dir path (List.filter (fun (k, _) -> k <> "embed.weight"))

                let e =
                    (raises<InputException> "decoder input" (fun () ->
                        StructureDecoderCheckpoint.load noEmbed |> ignore))
                        .Error

                Expect.equal e.Location (InputLocation.Field "embed.weight") e.Message
            }

            oxygenTests

            test "confidence heads: trained unless the file says otherwise or is one of our stage-1 exports" {
                let trained (pairs: (string * string) list) =
                    StructureDecoderCheckpoint.confidenceTrainedOf (Map.ofList pairs)

                Expect.isTrue (trained []) "ESM's files carry no metadata"
                Expect.isFalse (trained [ "heads", "4"; "head_width", "32" ]) "an older stage-1 export"
                Expect.isTrue (trained [ "head_width", "32"; "sequence_input", "true" ]) "an older stage-2 export"

                Expect.isFalse
                    (trained
                        [
                            StructureDecoderCheckpoint.ConfidenceMetadataKey, "untrained"
                            "sequence_input", "true"
                        ])
                    "the key decides"

                Expect.isTrue (trained [ StructureDecoderCheckpoint.ConfidenceMetadataKey, "trained" ]) "trained"
            }
        ]
