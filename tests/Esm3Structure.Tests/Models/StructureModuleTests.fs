module Esm3Structure.Tests.Models.StructureModuleTests

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

let private tolerance (dtype: torch.ScalarType) =
    // float32: frame translations and points up to ~10 (nm) carry ~1e-6 of rounding; the squared point distances
    // (up to ~10²) carry ~1e-5 into the logits, and the output (|out| ≲ 2 here) moves by about as much. 1e-4 bounds
    // it with a margin (observed ≤ 1.1e-6 on these seeds). float64: 1e-9.
    if dtype = torch.float64 then 1e-9 else 1e-4

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
                        let a = m.Attend(s, frames, allowed)
                        let c = m.Attend(s, movedBy motion frames, allowed)
                        Tol.close "IPA output" (tolerance dtype) c a
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
                    }

                use m = new StructureModule(config)
                Init.initialise (new torch.Generator(5UL)) m
                perturb 15UL m

                let s =
                    torch.randn ([| 2L; 9L; attention.DModel |], generator = new torch.Generator(6UL))

                let rounds = m.Rounds(s, torch.ones ([| 2L; 9L |], dtype = torch.ScalarType.Bool))
                Expect.equal rounds.Length 3 "one frame set per round"
                let last = List.last rounds
                Expect.isLessThan (Rotation.properError last.R) 1e-5 "proper rotations"
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

                let bad = dir.File "bad.safetensors"
                Checkpoint.save bad chained (readOnlyDict [ StructureDecoderCheckpoint.ChainFramesMetadataKey, "yes" ])

                match InputError.catch (fun () -> StructureDecoderCheckpoint.load bad |> ignore) with
                | Ok() -> failtest "expected an InputException"
                | Error e ->
                    Expect.equal
                        e.Location
                        (InputLocation.Field("__metadata__." + StructureDecoderCheckpoint.ChainFramesMetadataKey))
                        e.Message

                let both =
                    { config with
                        StructureModule = Some(StructureModuleConfig.alphaFold2 64L)
                    }

                match StructureDecoderConfig.validate both with
                | Ok _ -> failtest "ChainFrames with a structure module must be refused"
                | Error errors -> Expect.exists errors (fun e -> e.Contains "ChainFrames") "named"
            }
        ]
