module Esm3Structure.Tests.Models.StructureDecoderSequenceTests

open System
open Expecto
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Tests
open Esm3Structure.Tokenizers

/// d 32 with 2 heads (d_head 16, not ESM's 64), 2 layers, pairwise 8 → 12.
let private tiny =
    {
        DModel = 32L
        Heads = 2L
        Layers = 2
        PairwiseDownproject = 8L
        PairwiseHidden = 12L
        StructureModule = None
        ChainFrames = false
    }

let private decoder (sequenceInput: bool) (seed: uint64) =
    let m = new StructureDecoder(tiny, sequenceInput)
    use g = new torch.Generator(seed)
    Init.initialise g m
    m.eval ()
    m

/// Two rows: BOS, 6 codes, EOS; BOS, 4 codes, EOS, PAD, PAD. Shapes: -> [2, 8]
let private tokens (g: torch.Generator) =
    let codes =
        torch.randint(4096L, [| 2L; 6L |], dtype = torch.int64, generator = g).data<int64>().ToArray()

    let row0 = StructureTokens.wrap "test" codes.[0..5]

    let row1 =
        Array.append (StructureTokens.wrap "test" codes.[6..9]) [| StructureTokens.Pad; StructureTokens.Pad |]

    torch.tensor (Array.append row0 row1, ReadOnlySpan<int64> [| 2L; 8L |])

/// Residue types aligned with `tokens`: −1 at BOS, EOS and PAD.
let private restypes (g: torch.Generator) =
    let r = torch.randint (21L, [| 2L; 8L |], dtype = torch.int64, generator = g)
    let ends = torch.tensor ([| 0L; 7L |])
    r.index_fill_ (1L, ends, (-1L).ToScalar()) |> ignore
    r.select(0L, 1L).narrow(0L, 5L, 3L).fill_((-1L).ToScalar()) |> ignore
    r

let private keys (m: torch.nn.Module) = Checkpoint.keyShapes m

[<Tests>]
let tests =
    testList
        "Models/StructureDecoderSequence"
        [
            test "without sequence input the keys are ESM's; with it, ESM's then sequence_embed.weight [21, d]" {
                use _ = torch.NewDisposeScope()
                use plain = decoder false 1UL
                use withSeq = decoder true 1UL
                let esm = StructureDecoderCheckpoint.expectedKeys tiny
                Expect.equal (keys plain |> List.map fst) (esm |> List.map fst) "plain keys"
                Expect.isFalse plain.SequenceInput "plain"
                Expect.isTrue withSeq.SequenceInput "conditioned"
                let expected = StructureDecoderCheckpoint.expectedKeysWith true tiny
                Expect.equal (keys withSeq |> List.map fst) (expected |> List.map fst) "conditioned keys"

                Expect.equal
                    (List.last expected)
                    (StructureDecoderCheckpoint.SequenceEmbedKey, [| 21L; 32L |])
                    "last key"

                for (n, s), (_, e) in List.zip (keys withSeq) expected do
                    Expect.sequenceEqual s e n

                // Without sequence input the module's own state dict (names and shapes) is the table; with it, the
                // table grows by 21 × 1280 = 26,880 on ESM's released sizes, whose count is 618,552,905
                // (ESM3-REFERENCE.md §1, from the shapes of esm3_structure_decoder_v0.pth).
                for (n, s), (_, e) in List.zip (keys plain) (StructureDecoderCheckpoint.expectedKeysWith false tiny) do
                    Expect.sequenceEqual s e ("plain " + n)

                let count (table: (string * int64[]) list) =
                    table |> List.sumBy (fun (_, s) -> Array.fold (*) 1L s)

                let esm3 = StructureDecoderConfig.esm3
                Expect.equal (count (StructureDecoderCheckpoint.expectedKeysWith false esm3)) 618_552_905L "ESM's count"

                Expect.equal
                    (count (StructureDecoderCheckpoint.expectedKeysWith true esm3))
                    (618_552_905L + 21L * 1280L)
                    "ESM's count + 21 × 1280"
            }

            test "DecodeTokens without sequence and padding equals forward; a −1 sequence adds nothing" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                use g = new torch.Generator(3UL)
                let t = tokens g
                use withSeq = decoder true 4UL
                use plain = decoder false 4UL
                let f = withSeq.forward t
                // Exact: without a sequence DecodeTokens runs forward's operations (the embedding, the stack with no
                // mask, the heads) on the same values; all −1 adds sequence_embed rows times 0, exactly 0; a plain
                // decoder never reads the sequence.
                Tol.close "conditioned: null sequence" 0.0 (withSeq.DecodeTokens(t, null, null).Hidden) f.Hidden
                let none = torch.full_like (t, -1L)
                Tol.close "conditioned: all −1" 0.0 (withSeq.DecodeTokens(t, none, null).Hidden) f.Hidden
                let r = restypes g

                Tol.close
                    "plain ignores the sequence"
                    0.0
                    (plain.DecodeTokens(t, r, null).Hidden)
                    (plain.forward t).Hidden

                let conditioned = withSeq.DecodeTokens(t, r, null)
                Expect.isGreaterThan (Tol.maxAbsDiff conditioned.Hidden f.Hidden) 1e-3 "the sequence changes the output"
                let other = r.clone ()
                other.[0L, 2L] <- torch.tensor ((r.[0L, 2L].ToInt64() + 1L) % 21L)
                let changed = withSeq.DecodeTokens(t, other, null)

                Expect.isGreaterThan
                    (Tol.maxAbsDiff changed.Backbone conditioned.Backbone)
                    1e-6
                    "one residue type changes coordinates"
            }

            test "with padding, the real rows do not depend on what the padded rows hold" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                use g = new torch.Generator(5UL)
                let t = tokens g
                let r = restypes g
                use m = decoder true 6UL
                let padding = t.eq (StructureTokens.Pad.ToScalar())
                let a = m.DecodeTokens(t, r, padding)
                let t2 = t.clone ()
                t2.[1L, 6L] <- torch.tensor 17L
                t2.[1L, 7L] <- torch.tensor 99L
                let r2 = r.clone ()
                r2.[1L, 6L] <- torch.tensor 3L
                let b = m.DecodeTokens(t2, r2, padding)

                // Exact: padded keys get weight exp(finfo.min − max) = 0 and contribute 0·v = 0 to every sum, and each
                // position's other operations (embedding, LayerNorm, feed-forward) read its own row only; so the
                // real rows see the same values in the same operations.
                Tol.close
                    "row 1, positions 0..5"
                    0.0
                    (b.Hidden.[1L].narrow(0L, 0L, 6L))
                    (a.Hidden.[1L].narrow(0L, 0L, 6L))

                Tol.close "row 0" 0.0 b.Hidden.[0L] a.Hidden.[0L]
            }

            test "allAtom places 14 finite slots per residue with the residue type's mask" {
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad ()
                use g = new torch.Generator(7UL)
                let t = tokens g
                use m = decoder true 8UL
                let r = restypes g
                let out = m.DecodeTokens(t, r, null)
                let atoms = StructureDecoder.allAtom out (r.clamp_min ((0L).ToScalar()))
                Expect.sequenceEqual atoms.Positions.shape [| 2L; 8L; 14L; 3L |] "shape"
                Expect.isTrue (atoms.Positions.isfinite().all().ToBoolean()) "finite"
                // The CA slot is the frame origin, exactly: CA's reference position is (−0, 0, −0), so R·0 adds zeros
                // to T.
                Tol.close "CA = frame origin" 0.0 (atoms.Positions.select (2L, 1L)) out.Frames.T
            }

            test
                "load: ESM files load as ESM's decoder; our files with head_width metadata and sequence_embed load back" {
                use _ = torch.NewDisposeScope()
                use dir = new TempDir()
                use withSeq = decoder true 9UL
                let path = dir.File "seq.safetensors"
                Checkpoint.save path withSeq (readOnlyDict [ "head_width", "16" ])
                use loaded = StructureDecoderCheckpoint.load path
                Expect.isTrue loaded.SequenceInput "sequence input"
                Expect.equal loaded.Config tiny "sizes, heads from head_width"
                use g = new torch.Generator(10UL)
                let t = tokens g
                let r = restypes g
                use _ = torch.no_grad ()

                // The same weights (safetensors stores float32 bit for bit) in the same operations.
                Tol.close
                    "same outputs"
                    0.0
                    (loaded.DecodeTokens(t, r, null).Backbone)
                    (withSeq.DecodeTokens(t, r, null).Backbone)
                // an ESM-format file (no metadata, d_head 64) still loads, without sequence input
                let esmLike = { tiny with DModel = 64L; Heads = 1L }
                use plain = new StructureDecoder(esmLike)
                let esmPath = dir.File "esm.safetensors"
                Checkpoint.save esmPath plain null
                use plainLoaded = StructureDecoderCheckpoint.load esmPath
                Expect.isFalse plainLoaded.SequenceInput "ESM's decoder"
                Expect.equal plainLoaded.Config esmLike "ESM sizes"
                // a bad head_width is a named error
                let bad = dir.File "bad.safetensors"
                Checkpoint.save bad withSeq (readOnlyDict [ "head_width", "x" ])

                match InputError.catch (fun () -> StructureDecoderCheckpoint.load bad |> ignore) with
                | Ok() -> failtest "expected an InputException"
                | Error e -> Expect.stringContains (string e.Location) "head_width" "names the metadata field"
            }
        ]
