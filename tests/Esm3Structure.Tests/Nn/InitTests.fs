module Esm3Structure.Tests.Nn.InitTests

open System
open Expecto
open TorchSharp
open TorchSharp.Modules
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tests
open Esm3Structure.Training

/// The values a constant rule may set: 0, 1 and IPA's softplus⁻¹(1).
let private constants = [ 0.0; 1.0; InvariantPointAttention.HeadWeightStart ]

let private named (m: torch.nn.Module) =
    [ for struct (n, p) in m.named_parameters () -> n, p :> torch.Tensor ]

let private snapshot (m: torch.nn.Module) =
    named m |> List.map (fun (n, p) -> n, p.detach().clone())

let private allEqual (a: torch.Tensor) (b: torch.Tensor) = a.eq(b).all().ToBoolean()

/// Checks two initialisations of one model from different seeds: a parameter either is a constant of `constants`
/// both times (a constant rule), or most of its elements moved with the seed (a random rule: a padding row may
/// stay 0).
let private checkSeeds (family: string) (first: (string * torch.Tensor) list) (second: (string * torch.Tensor) list) =
    Expect.equal (List.map fst second) (List.map fst first) (family + ": the same keys")

    for (name, a), (_, b) in List.zip first second do
        let what = sprintf "%s: %s" family name
        Expect.isFalse (a.isnan().any().ToBoolean()) (what + " is set by no rule (still NaN)")

        if allEqual a b then
            let v = a.flatten().[0L].to_type(torch.float64).item<float>()
            Expect.isTrue (a.eq(v.ToScalar()).all().ToBoolean()) (what + " ignores the seed but is not a constant")

            // A constant rule stores the double c rounded to the parameter's dtype: within u·|c|.
            Expect.isTrue
                (constants
                 |> List.exists (fun c -> abs (c - v) <= Tol.unitRoundoff a.dtype * abs c))
                (sprintf "%s holds %g, not one of the constant rules' values" what v)
        else
            let moved = a.ne(b).to_type(torch.float64).mean().item<float>()
            Expect.isGreaterThan moved 0.9 (what + ": a random rule moves (nearly) every element with the seed")

/// Every parameter NaN, then `Initialise` from seed 1, then from seed 2: no parameter keeps a value it had before
/// (TorchSharp's constructor default, here NaN), and each follows a constant or a random rule (`checkSeeds`).
let private checkCovered (family: string) (m: torch.nn.Module) =
    let initialise (seed: uint64) =
        Init.initialise (new torch.Generator(seed)) (box m :?> IInitialise)

    do
        use _ = torch.no_grad ()

        for p in m.parameters () do
            p.fill_ (Double.NaN.ToScalar()) |> ignore

    initialise 1UL
    let first = snapshot m
    initialise 2UL
    checkSeeds family first (snapshot m)

/// The name heuristic these explicit rules replaced (`Init.reset`, until December 2026): by `named_parameters`
/// order, ≥ 2-D parameters with "embed" in the name N(0, 1), other ≥ 2-D uniform in ±1/sqrt(fan_in), 1-D "…weight"
/// 1, other 1-D 0. Kept as the oracle that pins the draws: the explicit rules give the same values from the same
/// generator, so training trajectories did not move.
let private legacyReset (generator: torch.Generator) (m: torch.nn.Module) =
    use _ = torch.no_grad ()

    for struct (name, p) in m.named_parameters () do
        use _ = torch.NewDisposeScope()
        let shape = p.shape

        let value =
            if shape.Length >= 2 && name.Contains "embed" then
                torch.randn (shape, dtype = p.dtype, device = p.device, generator = generator)
            elif shape.Length >= 2 then
                let bound = 1.0 / Math.Sqrt(float (Array.fold (*) 1L shape.[1..]))

                (torch.rand (shape, dtype = p.dtype, device = p.device, generator = generator)
                 * 2.0
                 - 1.0)
                * bound
            elif name.EndsWith "weight" then
                torch.ones (shape, dtype = p.dtype, device = p.device)
            else
                torch.zeros (shape, dtype = p.dtype, device = p.device)

        p.copy_ value |> ignore

/// The keys whose values differ between two models.
let private differing (a: torch.nn.Module) (b: torch.nn.Module) =
    List.zip (named a) (named b)
    |> List.filter (fun ((_, x), (_, y)) -> not (allEqual x y))
    |> List.map (fst >> fst)

let private smoke = TokenizerTrainConfig.smoke

let private encoderWith (quantizer: QuantizerConfig) (neighbours: bool) =
    { smoke.Encoder with
        Quantizer = quantizer
        NeighbourGeometry = neighbours
    }

let private smallQuantizer = smoke.Encoder.Quantizer

let private gradientQuantizer =
    { smallQuantizer with
        Kind = QuantizerKind.Gradient
        Restart = NoRestart
    }

let private reparameterisedQuantizer =
    { QuantizerConfig.aminoAseed with
        Codes = smallQuantizer.Codes
        Dim = smallQuantizer.Dim
    }

let private ipaConfig =
    {
        DModel = 24L
        Heads = 3L
        ScalarQk = 8L
        ScalarV = 6L
        PointQk = 2L
        PointV = 3L
        MaxOffset = 4L
    }

let private decoderWithModule =
    { smoke.Decoder with
        StructureModule =
            Some
                {
                    Iterations = 2
                    Attention = InvariantPointAttentionConfig.alphaFold2 smoke.Decoder.DModel
                    Start = StructureModuleStart.Identity
                }
    }

let private multiTrack =
    { MultiTrackConfig.small with
        Layers = 2
    }

let private stack =
    { TransformerStackConfig.esm3 with
        DModel = 24L
        Heads = 3L
        VHeads = 4L
        Layers = 2
        Bias = true
    }

/// Every model family with explicit rules, built fresh (float32, CPU).
let private families: (string * (unit -> torch.nn.Module)) list =
    [
        "MultiHeadAttention",
        (fun () ->
            new MultiHeadAttention(
                { AttentionConfig.esm3 with
                    DModel = 24L
                    Heads = 3L
                    Bias = true
                }
            ))
        "MultiHeadAttention (no QK LayerNorm)",
        (fun () ->
            new MultiHeadAttention(
                { AttentionConfig.esm3 with
                    DModel = 24L
                    Heads = 3L
                    QkLayerNorm = false
                }
            ))
        "GeometricAttention",
        (fun () ->
            new GeometricAttention(
                { GeometricAttentionConfig.esm3Encoder with
                    DModel = 24L
                    VHeads = 4L
                }
            ))
        "InvariantPointAttention", (fun () -> new InvariantPointAttention(ipaConfig))
        "TransformerStack", (fun () -> new TransformerStack(stack))
        "TransformerStack (GELU, no final norm)",
        (fun () ->
            new TransformerStack(
                { stack with
                    FeedForward = FeedForwardKind.Gelu
                    FinalNorm = false
                    PlainAttention = false
                }
            ))
        "GradientCodebook", (fun () -> Quantizer.create gradientQuantizer (new torch.Generator(1UL)))
        "ReparameterisedCodebook", (fun () -> Quantizer.create reparameterisedQuantizer (new torch.Generator(1UL)))
        "StructureModule",
        (fun () ->
            new StructureModule(
                {
                    Iterations = 2
                    Attention = ipaConfig
                    Start = StructureModuleStart.Identity
                }
            ))
        "Dim6RotStructureHead", (fun () -> new Dim6RotStructureHead(24L))
        "PairwisePredictionHead", (fun () -> new PairwisePredictionHead(24L, 8L, 12L, 10L, true))
        "RegressionHead", (fun () -> new RegressionHead(24L, 7L))
        "StructureEncoder (EMA, neighbour geometry)",
        (fun () -> new StructureEncoder(encoderWith smallQuantizer true, new torch.Generator(1UL)))
        "StructureEncoder (gradient codebook)",
        (fun () -> new StructureEncoder(encoderWith gradientQuantizer false, new torch.Generator(1UL)))
        "StructureEncoder (reparameterised codebook)",
        (fun () -> new StructureEncoder(encoderWith reparameterisedQuantizer false, new torch.Generator(1UL)))
        "StructureEncoder (global layers)",
        (fun () -> new StructureEncoder({ smoke.Encoder with GlobalLayers = 2 }, new torch.Generator(1UL)))
        "StructureDecoder", (fun () -> new StructureDecoder(smoke.Decoder))
        "StructureDecoder (structure module, sequence input)", (fun () -> new StructureDecoder(decoderWithModule, true))
        "MultiTrackModel", (fun () -> new MultiTrackModel(multiTrack, null))
        "CausalLm",
        (fun () ->
            new CausalLm(
                { CausalLmConfig.small with
                    DModel = 24L
                    Heads = 3L
                }
            ))
    ]

/// The tokenizer model initialised the old way: the encoder's constructor draws (its codebook) from the generator,
/// then the name heuristic over every parameter (no structure module: nothing to zero).
let private legacyTokenizer (config: TokenizerTrainConfig) (seed: uint64) =
    let g = new torch.Generator(seed)
    use _drawsOfTheEncoderConstructor = new StructureEncoder(config.Encoder, g)
    let m = new TokenizerModel(config, new torch.Generator(seed + 1000UL))
    legacyReset g m
    m

[<Tests>]
let tests =
    testList
        "Nn/Init"
        [
            test "the rules: uniform in ±1/sqrt(fan_in), N(0, 1), constants, zero padding rows, LayerNorm 1 and 0" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(3UL)
                use linear = torch.nn.Linear(400L, 300L)
                Init.linear g linear
                let bound = 1.0 / Math.Sqrt 400.0
                let w = linear.weight.to_type torch.float64
                Expect.isLessThanOrEqual (w.abs().max().item<float>()) bound "inside ±1/sqrt(fan_in)"
                Expect.isGreaterThan (w.abs().max().item<float>()) (0.99 * bound) "reaches the bound"
                Expect.isLessThan (abs (w.std().item<float>() * Math.Sqrt 3.0 / bound - 1.0)) 0.02 "uniform's std"
                Expect.isTrue (linear.bias.eq(0.0.ToScalar()).all().ToBoolean()) "bias 0"

                use embedding = torch.nn.Embedding(300L, 400L)
                Init.embeddingPadded g 2L embedding
                let e = embedding.weight.to_type torch.float64
                Expect.isTrue (e.[2L].eq(0.0.ToScalar()).all().ToBoolean()) "padding row 0"
                let rest = torch.cat ([| e.narrow (0L, 0L, 2L); e.narrow (0L, 3L, 297L) |], 0L)
                Expect.isLessThan (abs (rest.std().item<float>() - 1.0)) 0.02 "N(0, 1)"
                Expect.isLessThan (abs (rest.mean().item<float>())) 0.01 "mean 0"

                use norm = torch.nn.LayerNorm([| 5L |], 1e-5)
                Init.normal g norm.weight
                Init.normal g norm.bias
                Init.layerNorm norm
                Expect.isTrue (norm.weight.eq(1.0.ToScalar()).all().ToBoolean()) "LayerNorm weight 1"
                Expect.isTrue (norm.bias.eq(0.0.ToScalar()).all().ToBoolean()) "LayerNorm bias 0"
                Init.zeroLinear linear
                Expect.isTrue (linear.weight.eq(0.0.ToScalar()).all().ToBoolean()) "final layer 0"

                Expect.throwsT<ArgumentException>
                    (fun () -> Init.uniformFanIn g (torch.zeros 3L))
                    "a 1-D tensor has no fan-in"
            }

            test "the same seed gives the same values; the tokenizer model's constructor initialises every parameter" {
                use _ = torch.NewDisposeScope()
                use a = new TokenizerModel(smoke, new torch.Generator(5UL))
                use b = new TokenizerModel(smoke, new torch.Generator(5UL))
                Expect.isEmpty (differing a b) "same seed, same values"
                use c = new TokenizerModel(smoke, new torch.Generator(6UL))
                checkSeeds "TokenizerModel" (snapshot a) (snapshot c)
            }

            test "ESM3's padding rows (function and residue-annotation tables) are zero; other rows are drawn" {
                use _ = torch.NewDisposeScope()
                use m = new MultiTrackModel(multiTrack, new torch.Generator(4UL))
                let state = m.state_dict ()

                let padded =
                    [ for i in 0..7 -> sprintf "encoder.function_embed.%d.weight" i ]
                    @ [ "encoder.residue_embed.weight" ]

                for key in padded do
                    let w = state.[key]
                    Expect.isTrue (w.[0L].eq(0.0.ToScalar()).all().ToBoolean()) (key + ": row 0 is zero")
                    Expect.isTrue (w.[1L].ne(0.0.ToScalar()).all().ToBoolean()) (key + ": row 1 is drawn")
            }

            test "AlphaFold2's rules in the structure module: final layers 0, head weights softplus⁻¹(1)" {
                use _ = torch.NewDisposeScope()
                use m = new StructureDecoder(decoderWithModule, true)
                Init.initialise (new torch.Generator(9UL)) m
                let state = m.state_dict ()

                for key in
                    [
                        "structure_module.ipa.out.weight"
                        "structure_module.ipa.out.bias"
                        "structure_module.transition.4.weight"
                        "structure_module.transition.4.bias"
                        "structure_module.backbone_update.weight"
                        "structure_module.backbone_update.bias"
                    ] do
                    Expect.isTrue (state.[key].eq(0.0.ToScalar()).all().ToBoolean()) (key + " is zero")

                let gamma =
                    torch.nn.functional.softplus (state.["structure_module.ipa.head_weights"])

                // softplus(ln(e − 1)) = 1: the stored float32 start is within u·0.54 of ln(e − 1), which softplus'
                // slope 1 − 1/e passes on (0.35u), and exp and log1p round ≤ 1 ulp each (2u relative, the first
                // at e − 1 ≈ 1.72 reaching the result through 1.72/e ≈ 0.63): ≤ 0.35u + 1.27u + 2u + u, 5u.
                Tol.atMost "γ_h = 1" (Tol.derived torch.float32 5.0 1.0) ((gamma - 1.0).abs().max().ToDouble())
            }

            test "the explicit rules draw exactly what the name heuristic drew (tokenizer, multi-track, causal LM)" {
                use _ = torch.NewDisposeScope()

                let tokenizers =
                    [
                        "smoke", smoke
                        "small", TokenizerTrainConfig.small
                        "gradient codebook, neighbour geometry",
                        { smoke with
                            Encoder = encoderWith gradientQuantizer true
                        }
                        "reparameterised codebook",
                        { smoke with
                            Encoder = encoderWith reparameterisedQuantizer false
                        }
                        "global layers",
                        { smoke with
                            Encoder = { smoke.Encoder with GlobalLayers = 2 }
                        }
                    ]

                for name, config in tokenizers do
                    use explicitRules = new TokenizerModel(config, new torch.Generator(42UL))
                    use heuristic = legacyTokenizer config 42UL
                    Expect.isEmpty (differing explicitRules heuristic) ("tokenizer " + name)

                use multi = new MultiTrackModel(multiTrack, new torch.Generator(42UL))
                use multiHeuristic = new MultiTrackModel(multiTrack, null)
                legacyReset (new torch.Generator(42UL)) multiHeuristic

                do
                    use _ = torch.no_grad ()

                    for struct (key, p) in multiHeuristic.named_parameters () do
                        if key.Contains "function_embed" || key.Contains "residue_embed" then
                            p.[0L].zero_() |> ignore // the old ZeroPaddingRows

                Expect.isEmpty (differing multi multiHeuristic) "multi-track"

                use causal = new CausalLm(CausalLmConfig.small)
                Init.initialise (new torch.Generator(8UL)) causal
                use causalHeuristic = new CausalLm(CausalLmConfig.small)
                legacyReset (new torch.Generator(8UL)) causalHeuristic
                Expect.isEmpty (differing causal causalHeuristic) "causal LM"
            }

            test "a decoder with a structure module differs from the heuristic only where AlphaFold2's rules say" {
                use _ = torch.NewDisposeScope()
                use explicitRules = new StructureDecoder(decoderWithModule, true)
                Init.initialise (new torch.Generator(42UL)) explicitRules
                use heuristic = new StructureDecoder(decoderWithModule, true)
                legacyReset (new torch.Generator(42UL)) heuristic

                // The zero layers no longer draw, so the draws after them (transition.0/.2, sequence_embed) moved.
                Expect.sequenceEqual
                    (differing explicitRules heuristic)
                    [
                        "structure_module.ipa.head_weights"
                        "structure_module.ipa.out.weight"
                        "structure_module.transition.0.weight"
                        "structure_module.transition.2.weight"
                        "structure_module.transition.4.weight"
                        "structure_module.backbone_update.weight"
                        "sequence_embed.weight"
                    ]
                    "only AlphaFold2's rules and the draws after them"
            }

            for family, create in families do
                test (sprintf "%s: every parameter follows one explicit rule" family) {
                    use _ = torch.NewDisposeScope()
                    use m = create ()
                    checkCovered family m
                }
        ]
