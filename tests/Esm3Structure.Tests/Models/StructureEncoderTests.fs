module Esm3Structure.Tests.Models.StructureEncoderTests

open System
open Expecto
open Esm3Structure
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests

let private chain name =
    StructureFile.read (Data.small name) None

/// `loaded` gives `m`'s tokens for `backbone`, and they take more than `distinct` values (so the check can fail).
let private tokenizesAlike (m: StructureEncoder) (loaded: StructureEncoder) (backbone: torch.Tensor) (distinct: int) =
    let tokens = (m.forward backbone).Tokens
    let values = tokens.data<int64>().ToArray()
    Expect.isGreaterThan (values |> Array.distinct |> Array.length) distinct "varied tokens"
    Expect.equal ((loaded.forward backbone).Tokens.data<int64>().ToArray()) values "the loaded encoder's tokens"

/// A small encoder (d 24, 4 vector heads, 2 blocks, 64 × 8 codes, k 6; with `GlobalLayers`, d 32) with
/// deterministic random weights, its codebook initialised from the encoder outputs of a real chain (ESM's
/// data-dependent init, one training step on 1mvo_A), in `dtype`; options: neighbour geometry, global layers,
/// principal position.
let private smallOf
    (neighbourGeometry: bool, globalLayers: int, principalPosition: bool)
    (dtype: torch.ScalarType)
    (seed: uint64)
    =
    let config =
        { StructureEncoderConfig.esm3 with
            NeighbourGeometry = neighbourGeometry
            GlobalLayers = globalLayers
            PrincipalPosition = principalPosition
            DModel = (if globalLayers > 0 then 32L else 24L)
            VHeads = 4L
            DOut = 8L
            Knn = 6
            Quantizer =
                { QuantizerConfig.esm3 with
                    Codes = 64L
                    Dim = 8L
                }
        }

    let g = new torch.Generator(seed)
    let m = new StructureEncoder(config, g)
    Init.initialise g m

    do
        use _ = torch.no_grad ()
        // Non-zero geometric scales, so both score terms matter.
        for struct (name, p) in m.named_parameters () do
            if name.EndsWith "_per_head" then
                p.copy_ (torch.randn (p.shape, generator = g)) |> ignore

    m.``to`` dtype |> ignore

    do
        use _ = torch.NewDisposeScope()
        use _ = torch.no_grad ()
        m.train ()

        m.forward ((ProteinChain.backbone dtype (chain "1mvo_A")).unsqueeze 0L)
        |> ignore

    m.eval ()
    m

let private smallWith (neighbourGeometry: bool) = smallOf (neighbourGeometry, 0, false)
let private small = smallWith false

[<Tests>]
let tests =
    testList
        "Models/StructureEncoder"
        [
            test "kNN: slot 0 is the query, E = min(k, L), framed neighbours precede unframed ones" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(3UL)
                let bb = Draw.backbone g [| 2L |] 9L torch.float64
                let framed = torch.ones ([| 2L; 9L |], dtype = torch.ScalarType.Bool)
                framed.[torch.TensorIndex.Single 0L, torch.TensorIndex.Single 4L] <- torch.tensor false
                let padding = torch.zeros ([| 2L; 9L |], dtype = torch.ScalarType.Bool)
                let nbr = Knn.graph 16 (bb.select (2L, 1L)) framed padding None
                Expect.sequenceEqual nbr.shape [| 2L; 9L; 9L |] "E = L when L < k"

                Tol.close
                    "slot 0"
                    0.0
                    (nbr.select(2L, 0L).to_type torch.float64)
                    (torch.arange(9L, dtype = torch.float64).expand(2L, 9L))
                // Residue 0 of row 0: the unframed residue 4 comes last among its neighbours.
                Expect.equal
                    (nbr.[torch.TensorIndex.Single 0L, torch.TensorIndex.Single 0L, torch.TensorIndex.Single 8L].ToInt64())
                    4L
                    "unframed last"

                let nbr4 = Knn.graph 4 (bb.select (2L, 1L)) framed padding None
                Expect.sequenceEqual nbr4.shape [| 2L; 9L; 4L |] "E = k"
            }

            test "kNN picks the nearest CA atoms (brute force on a real chain)" {
                use _ = torch.NewDisposeScope()
                let c = chain "1ubq_A"
                let ca = ProteinChain.ca torch.float64 c |> fun t -> t.unsqueeze 0L
                let l = ca.shape.[1]
                let framed = torch.ones ([| 1L; l |], dtype = torch.ScalarType.Bool)

                let nbr =
                    Knn.graph 16 ca framed (torch.zeros ([| 1L; l |], dtype = torch.ScalarType.Bool)) None

                let d = (ca.unsqueeze -2L - ca.unsqueeze -3L).norm(-1, false).squeeze 0L

                for i in [ 0L; 17L; 40L; l - 1L ] do
                    let expected =
                        d.select(0L, i).argsort().narrow(0L, 0L, 16L).data<int64>().ToArray()
                        |> Array.sort

                    let got =
                        nbr.[torch.TensorIndex.Single 0L, torch.TensorIndex.Single i].data<int64>().ToArray()
                        |> Array.sort

                    Expect.sequenceEqual got expected (sprintf "residue %d" i)
            }

            test "StructureEncoderCheckpoint.expectedKeys is the built encoder's state dict, in order, for every option" {
                let q = StructureEncoderConfig.smoke.Quantizer

                let configs =
                    [
                        "esm3", StructureEncoderConfig.esm3
                        "small", StructureEncoderConfig.small
                        "smoke with neighbour geometry and 2 global layers",
                        { StructureEncoderConfig.smoke with
                            NeighbourGeometry = true
                            GlobalLayers = 2
                        }
                        "gradient codebook",
                        { StructureEncoderConfig.smoke with
                            Quantizer =
                                { q with
                                    Kind = QuantizerKind.Gradient
                                    Restart = NoRestart
                                }
                        }
                        "reparameterised codebook",
                        { StructureEncoderConfig.smoke with
                            Quantizer =
                                { q with
                                    Kind = QuantizerKind.Reparameterised
                                    Restart = NoRestart
                                }
                        }
                        "finite scalar quantizer",
                        { StructureEncoderConfig.smoke with
                            Quantizer = QuantizerConfig.finite [ 8; 5; 5; 5 ]
                            DOut = 4L
                        }
                    ]

                for name, config in configs do
                    use m = new StructureEncoder(config, null)
                    let built = Checkpoint.keyShapes m |> List.map (fun (n, s) -> n, List.ofArray s)

                    let expected =
                        StructureEncoderCheckpoint.expectedKeys config
                        |> List.map (fun (n, s) -> n, List.ofArray s)

                    Expect.equal expected built name
            }

            test "state_dict keys are ESM's (order and shapes)" {
                use m = small torch.float32 1UL
                let keys = Checkpoint.keyShapes m |> List.map fst
                Expect.equal keys.[0] "transformer.blocks.0.geom_attn.distance_scale_per_head" "first key"
                Expect.isTrue (keys |> List.contains "pre_vq_proj.weight") "pre_vq_proj"

                Expect.equal
                    (keys |> List.filter (fun k -> k.StartsWith "codebook."))
                    [ "codebook.embeddings"; "codebook.N"; "codebook.z_avg" ]
                    "codebook buffers"

                Expect.equal (List.last keys) "relative_positional_embedding.embedding.weight" "last key"

                Expect.isFalse
                    (keys
                     |> List.exists (fun k -> k.Contains ".attn." || k.StartsWith "transformer.norm"))
                    "no plain attention, no final norm"

                let shapes = dict (Checkpoint.keyShapes m)

                Expect.sequenceEqual
                    shapes.["relative_positional_embedding.embedding.weight"]
                    [| 66L; 24L |]
                    "66 position rows"
            }

            test "tokens of real chains do not change under random rigid motions (float64 and float32)" {
                for dtype in [ torch.float64; torch.float32 ] do
                    use m = small dtype 7UL

                    for name in [ "1ubq_A"; "1a8o_A"; "2erl_A" ] do
                        use _ = torch.NewDisposeScope()
                        let bb = (ProteinChain.backbone dtype (chain name)).unsqueeze 0L
                        let tokens = (m.forward bb).Tokens
                        let distinct = tokens.data<int64>().ToArray() |> Array.distinct |> Array.length
                        Expect.isGreaterThan distinct 5 (sprintf "%s: the tokens are not trivially constant" name)
                        let g = new torch.Generator(11UL)

                        for _ in 1..3 do
                            let motion = Frame.random [||] 50.0 dtype torch.CPU g
                            let moved = (m.forward (Frame.apply motion bb)).Tokens
                            let same = tokens.eq(moved).to_type(torch.float64).mean().ToDouble()
                            Expect.equal same 1.0 (sprintf "%s, %O: fraction of identical tokens" name dtype)
            }

            test "pre-quantization vectors are invariant (E2) and do not depend on residue numbering offsets (E5)" {
                for options in [ (false, 0, false); (true, 0, false); (false, 2, false); (false, 0, true) ] do
                    use _ = torch.NewDisposeScope()
                    use m = smallOf options torch.float64 5UL
                    let c = chain "1ubq_A"
                    let bb = (ProteinChain.backbone torch.float64 c).unsqueeze 0L
                    let l = bb.shape.[1]
                    let a = m.Encode(bb, null, null, null).Z

                    let motion =
                        Frame.random [||] 80.0 torch.float64 torch.CPU (new torch.Generator(2UL))

                    let b = m.Encode(Frame.apply motion bb, null, null, null).Z
                    Tol.close "E2" (1e-10 * (1.0 + a.abs().max().ToDouble())) b a
                    let shifted = m.Encode(bb, (torch.arange (l) + 1000L).unsqueeze 0L, null, null).Z
                    Tol.close "E5" 0.0 shifted a
            }

            test "unframed residues all receive the same token (E6) and tokens ignore the amino acids (E7)" {
                use _ = torch.NewDisposeScope()
                use m = small torch.float64 9UL
                let bb = (ProteinChain.backbone torch.float64 (chain "1ctf_A")).unsqueeze 0L
                let holes = bb.clone ()

                for i in [ 3L; 20L; 41L ] do
                    holes.[torch.TensorIndex.Single 0L, torch.TensorIndex.Single i] <-
                        torch.full ([| 3L; 3L |], (Double.NaN).ToScalar(), dtype = torch.float64)

                let enc = m.forward holes
                let t = enc.Tokens.squeeze 0L

                Expect.isFalse
                    (enc.Framed.[torch.TensorIndex.Single 0L, torch.TensorIndex.Single 20L].ToBoolean())
                    "unframed"

                Expect.equal (t.[3L].ToInt64()) (t.[20L].ToInt64()) "same token"
                Expect.equal (t.[20L].ToInt64()) (t.[41L].ToInt64()) "same token"
                Expect.isTrue (enc.Z.isfinite().all().ToBoolean()) "finite"
            }

            test "a checkpoint round trip gives identical tokens and bytes" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use m = small torch.float32 4UL
                let path = dir.File "encoder.safetensors"
                Checkpoint.save path m null
                use fresh = small torch.float32 99UL
                Checkpoint.load path fresh
                let bb = (ProteinChain.backbone torch.float32 (chain "1ptf_A")).unsqueeze 0L

                Tol.close
                    "tokens"
                    0.0
                    ((fresh.forward bb).Tokens.to_type torch.float64)
                    ((m.forward bb).Tokens.to_type torch.float64)

                let again = dir.File "again.safetensors"
                Checkpoint.save again fresh null
                Expect.equal (IO.File.ReadAllBytes again) (IO.File.ReadAllBytes path) "bytes"
            }

            test
                "NeighbourGeometry: the sequence steps of a real chain compose back to its frames; a chain break zeroes them" {
                use _ = torch.NewDisposeScope()
                let bb = (ProteinChain.backbone torch.float64 (chain "1ubq_A")).unsqueeze 0L
                let frames = (Frame.ofBackbone bb).Frames
                let l = bb.shape.[1]
                let usable = torch.ones ([| 1L; l |], dtype = torch.ScalarType.Bool)
                let index = torch.arange(l).unsqueeze 0L
                let steps = NeighbourGeometry.steps frames usable index // [1, L, 24]
                // Channels 0–11: residue i − 1 in residue i's frame (translation / 10 Å, rotation); its inverse is
                // residue i in residue i − 1's frame, the step that Frame.chain composes.
                let previous = steps.narrow (-1L, 0L, 12L)

                let pose =
                    {
                        R = previous.narrow(-1L, 3L, 9L).reshape(1L, l, 3L, 3L)
                        T = previous.narrow (-1L, 0L, 3L) * NeighbourGeometry.TranslationScale
                    }

                let forward = Frame.invert pose

                let chainSteps =
                    {
                        R = torch.cat ([| frames.R.narrow (1L, 0L, 1L); forward.R.narrow (1L, 1L, l - 1L) |], 1L)
                        T = torch.cat ([| frames.T.narrow (1L, 0L, 1L); forward.T.narrow (1L, 1L, l - 1L) |], 1L)
                    }

                let rebuilt = Frame.chain chainSteps
                // The frames are orthonormal only to their construction's rounding, so each of the L − 1 inverse
                // poses carries that error into the composition; positions carry it times their size.
                let perStep = 10.0 * (Rotation.properError frames.R + 1e-15)
                let depth = float (l - 1L)
                Tol.close "rotations" (perStep * depth) rebuilt.R frames.R
                Tol.close "positions" (perStep * depth * (1.0 + frames.T.abs().max().ToDouble())) rebuilt.T frames.T

                Tol.close
                    "no residue before the first"
                    0.0
                    (previous.select (1L, 0L))
                    (torch.zeros (1L, 12L, dtype = torch.float64))

                // A gap in the numbering between residues 29 and 30: residue 30 has no i − 1 step, 29 no i + 1.
                let broken = torch.where (index.ge ((30L).ToScalar()), index + 5L, index)
                let cut = NeighbourGeometry.steps frames usable broken
                Expect.equal (cut.[0L, 30L].narrow(0L, 0L, 12L).abs().max().ToDouble()) 0.0 "30: no previous"
                Expect.equal (cut.[0L, 29L].narrow(0L, 12L, 12L).abs().max().ToDouble()) 0.0 "29: no next"
                Expect.isGreaterThan (cut.[0L, 31L].abs().max().ToDouble()) 0.1 "31 keeps both"
            }

            test "an encoder with NeighbourGeometry saves its two projections and loads back with the option" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use m = smallWith true torch.float32 4UL
                let path = dir.File "encoder.safetensors"
                Checkpoint.save path m null
                let names = Checkpoint.keyShapes m |> List.map fst

                for key in [ "neighbour_geometry_proj.weight"; "sequence_step_proj.weight" ] do
                    Expect.contains names key key

                use loaded = StructureEncoderCheckpoint.load path
                // Knn is not in the file (the loader gives ESM's 16), and the SwiGLU ratio is read back as hidden / d
                // (the same hidden width after ESM's rounding to 256).
                let expected =
                    { m.Config with
                        Knn = StructureEncoderConfig.esm3.Knn
                        ExpansionRatio = loaded.Config.ExpansionRatio
                    }

                Expect.equal loaded.Config expected "NeighbourGeometry inferred from the keys"
                use same = new StructureEncoder(expected, new torch.Generator(1UL))
                Checkpoint.load path same
                same.eval ()
                let bb = (ProteinChain.backbone torch.float32 (chain "1ptf_A")).unsqueeze 0L
                Tol.close "Z" 0.0 (loaded.forward bb).Z (same.forward bb).Z
            }

            for options, name, key in
                [
                    (false, 2, false), "GlobalLayers", "global_transformer.blocks.1.attn.layernorm_qkv.1.weight"
                    (false, 0, true), "PrincipalPosition", "principal_position_proj.weight"
                ] do
                test (
                    name
                    + ": padding rows and a second packed chain leave a chain's vectors unchanged; it round-trips"
                ) {
                    use _ = torch.NewDisposeScope()
                    use m = smallOf options torch.float64 6UL
                    let a = ProteinChain.backbone torch.float64 (chain "1ubq_A")
                    let b = ProteinChain.backbone torch.float64 (chain "1ptf_A")
                    let la, lb = a.shape.[0], b.shape.[0]
                    let alone = m.Encode(a.unsqueeze 0L, null, null, null).Z.squeeze 0L
                    // Padded by 7 rows of zeros (marked as padding).
                    let padded =
                        torch.cat ([| a; torch.zeros ([| 7L; a.shape.[1]; 3L |], dtype = torch.float64) |], 0L)

                    let padding = torch.arange(0L, la + 7L, 1L).ge(la.ToScalar()).unsqueeze 0L

                    let z = m.Encode(padded.unsqueeze 0L, null, padding, null).Z.squeeze 0L
                    // The same sums in a different order of masked keys: a few float64 roundings of the vectors' size.
                    let tol = 1e-12 * (1.0 + alone.abs().max().ToDouble())
                    Tol.close "padded" tol (z.narrow (0L, 0L, la)) alone
                    // Packed after another chain in one row: its own sequence id and its own residue numbering.
                    let packed = torch.cat([| b; a |], 0L).unsqueeze 0L

                    let ids =
                        torch
                            .cat(
                                [|
                                    torch.zeros (lb, dtype = torch.int64)
                                    torch.ones (la, dtype = torch.int64)
                                |],
                                0L
                            )
                            .unsqueeze
                            0L

                    let index =
                        torch.cat([| torch.arange (0L, lb, 1L); torch.arange (0L, la, 1L) |], 0L).unsqueeze 0L

                    let z = m.Encode(packed, index, null, ids).Z.squeeze 0L
                    // Rotary positions are the rows' (lb later), which rotary attention sees only as differences.
                    Tol.close "packed" tol (z.narrow (0L, lb, la)) alone
                    use dir = new TempDir()
                    let path = dir.File "encoder.safetensors"
                    StructureEncoderCheckpoint.save path m

                    Expect.contains (Checkpoint.keyShapes m |> List.map fst) key "keys"

                    use loaded = StructureEncoderCheckpoint.load path
                    // Knn is not in the file (the loader gives ESM's 16); the SwiGLU ratio is read back as hidden / d.
                    let expected =
                        { m.Config with
                            Knn = StructureEncoderConfig.esm3.Knn
                            ExpansionRatio = loaded.Config.ExpansionRatio
                        }

                    Expect.equal loaded.Config expected (name + " inferred from the keys")
                    use same = smallOf options torch.float64 99UL
                    Checkpoint.load path same
                    Tol.close "loaded" 0.0 (same.Encode(a.unsqueeze 0L, null, null, null).Z.squeeze 0L) alone
                }

            test "an encoder with finite scalar quantization loads back from its levels metadata; bad levels are named" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                let quantizer = QuantizerConfig.finite [ 8; 5; 5; 5 ]

                let config =
                    { StructureEncoderConfig.esm3 with
                        DModel = 24L
                        VHeads = 4L
                        DOut = quantizer.Dim
                        Quantizer = quantizer
                    }

                let g = new torch.Generator(3UL)
                use m = new StructureEncoder(config, g)
                Init.initialise g m
                m.eval ()
                let path = dir.File "encoder.safetensors"
                Checkpoint.save path m (readOnlyDict [ StructureEncoderCheckpoint.FiniteLevelsMetadataKey, "8,5,5,5" ])
                use loaded = StructureEncoderCheckpoint.load path
                Expect.equal loaded.Config.Quantizer quantizer "levels read back"
                let bb = (ProteinChain.backbone torch.float32 (chain "1ptf_A")).unsqueeze 0L
                tokenizesAlike m loaded bb 3

                refusesMetadata
                    (dir.File "bad.safetensors")
                    m
                    StructureEncoderCheckpoint.FiniteLevelsMetadataKey
                    "8,5"
                    (StructureEncoderCheckpoint.load >> ignore)
            }

            test
                "a product-quantized encoder with a principal grid saves as ESM's EMA codebook plus the grid; loaded, it tokenizes alike" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()

                let config =
                    { StructureEncoderConfig.esm3 with
                        DModel = 24L
                        VHeads = 4L
                        DOut = 8L
                        PrincipalPosition = true
                        PrincipalGrid = 3.0
                        Quantizer =
                            { QuantizerConfig.esm3 with
                                Codes = 64L
                                Dim = 8L
                                Groups = 2
                            }
                    }

                let g = new torch.Generator(5UL)
                use m = new StructureEncoder(config, g)
                Init.initialise g m
                let bb = (ProteinChain.backbone torch.float32 (chain "1ptf_A")).unsqueeze 0L

                do
                    // One training call: each group's codes from the chain's own vectors (data-dependent init).
                    use _ = torch.no_grad ()
                    m.train ()
                    m.forward bb |> ignore

                m.eval ()
                let path = dir.File "encoder.safetensors"
                StructureEncoderCheckpoint.save path m
                let header = TensorFile.readHeader path
                let names = header.Shapes |> Seq.map fst |> Set.ofSeq
                Expect.isTrue (names.Contains "codebook.embeddings" && names.Contains "codebook.z_avg") "ESM's keys"
                Expect.isFalse (names |> Set.exists (fun n -> n.Contains "groups")) "no group keys"
                use loaded = StructureEncoderCheckpoint.load path
                Expect.equal loaded.Config.PrincipalGrid 3.0 "grid read back"
                Expect.equal loaded.Config.Quantizer.Groups 1 "one table"
                Expect.equal loaded.Config.Quantizer.Codes 64L "K = 8²"
                tokenizesAlike m loaded bb 8 // more than one group's 8 codes: both groups vary

                refusesMetadata
                    (dir.File "bad.safetensors")
                    loaded
                    StructureEncoderCheckpoint.PrincipalGridMetadataKey
                    "-1"
                    (StructureEncoderCheckpoint.load >> ignore)
            }

            test
                "a principal grid rounds the position input: a grid larger than the chain gives the encoder with the position zeroed" {
                use _ = torch.NewDisposeScope()
                use coarse = smallOf (false, 0, true) torch.float64 8UL
                use exact = smallOf (false, 0, true) torch.float64 8UL
                let bb = (ProteinChain.backbone torch.float64 (chain "1ptf_A")).unsqueeze 0L
                coarse.eval ()
                exact.eval ()
                let z0 = (exact.forward bb).Z

                // The same weights with every position rounded to 0 (a 10⁶ Å grid), against the weight of the
                // position input zeroed: equal to the bit, and both unlike the exact encoder's.
                use huge =
                    new StructureEncoder(
                        { coarse.Config with
                            PrincipalGrid = 1e6
                        },
                        new torch.Generator(0UL)
                    )

                huge.``to`` torch.float64 |> ignore
                huge.load_state_dict (coarse.state_dict ()) |> ignore
                huge.eval ()

                do
                    use _ = torch.no_grad ()

                    for struct (name, p) in exact.named_parameters () do
                        if name = "principal_position_proj.weight" then
                            p.zero_ () |> ignore

                let rounded = (huge.forward bb).Z
                Tol.close "grid 10⁶ Å = position zeroed" 0.0 rounded (exact.forward bb).Z

                Expect.isGreaterThan
                    ((rounded - z0).abs().max().ToDouble())
                    1e-3
                    "the exact position mattered (the check can fail)"
            }
        ]
