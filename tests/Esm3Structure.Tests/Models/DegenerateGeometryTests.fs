module Esm3Structure.Tests.Models.DegenerateGeometryTests

open System
open Expecto
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure
open Esm3Structure.Tests
open Esm3Structure.Tokenizers
open Esm3Structure.App

/// A real chain (1ubq_A) with some residues' N, CA, C made degenerate, and which residues those are.
module private Degenerate =

    let private original = lazy (StructureFile.read (Data.small "1ubq_A") None)

    /// Residue → how its backbone is broken.
    type Kind =
        /// N on the line through C and CA (beyond CA), so N, CA, C are collinear.
        | Collinear
        /// N placed exactly on CA (a duplicated atom).
        | DuplicatedN
        /// N, CA and C all at CA (zero-length bonds).
        | AllIdentical

    /// The residues made degenerate (0-based) and how.
    let cases =
        [|
            5, Collinear
            17, DuplicatedN
            18, AllIdentical
            40, Collinear
            41, AllIdentical
            70, DuplicatedN
        |]

    /// Moves atom `a` (atom37 slot = atom14 slot for N 0, CA 1, C 2) of residue `i` to `p`, in both layouts.
    let private set (a37: float32[,,]) (a14: float32[,,]) (i: int) (a: int) (p: float32[]) =
        for k in 0..2 do
            a37.[i, a, k] <- p.[k]
            a14.[i, a, k] <- p.[k]

    /// The chain with `cases` applied.
    let chain =
        lazy
            (let c = original.Force()
             let a37: float32[,,] = c.Atom37.Clone() :?> float32[,,]
             let a14: float32[,,] = c.Atom14.Clone() :?> float32[,,]

             for (i, kind) in cases do
                 let at a = Array.init 3 (fun k -> a37.[i, a, k])
                 let ca, cc = at 1, at 2

                 match kind with
                 | Collinear ->
                     // N = CA + 1.1 (CA − C): on the C–CA line, at a plausible distance
                     let n = Array.init 3 (fun k -> ca.[k] + 1.1f * (ca.[k] - cc.[k]))
                     set a37 a14 i 0 n
                 | DuplicatedN -> set a37 a14 i 0 ca
                 | AllIdentical ->
                     set a37 a14 i 0 ca
                     set a37 a14 i 2 ca

             { c with Atom37 = a37; Atom14 = a14 })

    /// The degenerate residues.
    let indices = cases |> Array.map fst |> Set.ofArray

let private allFinite (t: torch.Tensor) = t.isfinite().all().ToBoolean()

let private boolsOf (t: torch.Tensor) =
    t.cpu().contiguous().data<bool>().ToArray()

let private smallDecoder (seed: uint64) =
    let g = new torch.Generator(seed)
    let m = new StructureDecoder(StructureDecoderConfig.small)
    Init.initialise g m
    m.eval ()
    m

[<Tests>]
let tests =
    testList
        "Models/DegenerateGeometry"
        [
            test "the fixture really is degenerate: collinear or coincident N, CA, C" {
                let c = Degenerate.chain.Force()

                for (i, _) in Degenerate.cases do
                    let v a =
                        Array.init 3 (fun k -> float c.Atom37.[i, a, k])

                    let n, ca, cc = v 0, v 1, v 2
                    let u = Array.map2 (-) n ca
                    let w = Array.map2 (-) cc ca

                    let cross =
                        [|
                            u.[1] * w.[2] - u.[2] * w.[1]
                            u.[2] * w.[0] - u.[0] * w.[2]
                            u.[0] * w.[1] - u.[1] * w.[0]
                        |]

                    let area = cross |> Array.sumBy (fun x -> x * x) |> sqrt

                    let norm (x: float[]) =
                        x |> Array.sumBy (fun y -> y * y) |> sqrt
                    // Exactly 0 for N or C placed on CA; a collinear N = CA + 1.1 (CA − C) is rounded in float32 (the
                    // difference, the product and the sum: ≤ u·(2.2·|CA − C| + |N|) per coordinate), which moves
                    // (N − CA) × (C − CA) by ≤ √3 times that times |C − CA|; the cross product here rounds ≤ 8u₆₄.
                    let nMax = n |> Array.map abs |> Array.max
                    let placement = Tol.derived torch.float32 1.0 (2.2 * norm w + nMax)

                    let tol =
                        sqrt 3.0 * placement * norm w + Tol.derived torch.float64 8.0 (norm u * norm w)

                    Expect.isLessThanOrEqual area tol (sprintf "residue %d: |(N-CA)x(C-CA)|" i)
            }

            test "Strict framing masks exactly the degenerate residues, with finite frames" {
                use _ = torch.NewDisposeScope()

                for dtype in [ torch.float32; torch.float64 ] do
                    let clean =
                        Frame.ofBackboneWith
                            BackboneFrameOptions.strict
                            (ProteinChain.backbone dtype (StructureFile.read (Data.small "1ubq_A") None))

                    let bb = ProteinChain.backbone dtype (Degenerate.chain.Force())
                    let strict = Frame.ofBackboneWith BackboneFrameOptions.strict bb
                    let before = boolsOf clean.Mask
                    let after = boolsOf strict.Mask
                    Expect.isTrue (Array.forall id before) "1ubq_A: every residue framed before the damage"

                    for i in 0 .. after.Length - 1 do
                        Expect.equal after.[i] (not (Degenerate.indices.Contains i)) (sprintf "%O: mask of %d" dtype i)

                    Expect.isTrue (allFinite strict.Frames.R) "R finite"
                    Expect.isTrue (allFinite strict.Frames.T) "T finite"
                    // Every frame (masked ones hold the black-hole frame, built the same way from the means of the
                    // framed atoms) is a proper rotation: Gram–Schmidt's entries are within (56/sin + 18)·u of a
                    // rotation (Geometry/RotationTests; sin of its inputs, the smallest here), so det R within
                    // GeoTol.properError of 1, less ESM's ε, which shortens x̂ by ε/(2|a|²) and ê₁ by ε/(2|c|² sin²),
                    // so det = (|x̂||ê₁|)² by ≤ ε/|a|² + ε/(|c| sin)².
                    let bb64 = bb.to_type torch.float64
                    let framed = strict.Mask
                    let pick (x: torch.Tensor) = x.index framed
                    let atom k = bb64.select (-2L, k)

                    // Per frame, the Gram–Schmidt inputs a = CA − C and c = N − CA: the framed residues', then the
                    // black hole's (of the framed atoms' means).
                    let inputs k =
                        let x = atom k
                        torch.cat ([| pick x; (pick x).mean([| 0L |], true) |], 0L)

                    let a, c = inputs 1L - inputs 2L, inputs 0L - inputs 1L
                    let sin = (BackboneChecks.sinAngle a c).squeeze(-1L)
                    let u = Tol.unitRoundoff dtype
                    let eps = Rotation.EsmFrameEps
                    let na, nc = a.norm (-1, false), c.norm (-1, false)
                    let rounding = GeoTol.properError dtype ((56.0 / sin.min().ToDouble() + 18.0) * u)
                    let shortening = (eps / (na * na) + eps / (nc * nc * sin * sin)).max().ToDouble()
                    let tol = rounding + shortening
                    let det = torch.linalg.det strict.Frames.R
                    Tol.atMost "det R = 1 everywhere" tol ((det - 1.0).abs().max().ToDouble())

                    // The ESM preset keeps them framed, but its frames are finite too (det-0 rotations).
                    let esm = Frame.ofBackbone bb
                    Expect.isTrue (Array.forall id (boolsOf esm.Mask)) "ESM preset: all framed"
                    Expect.isTrue (allFinite esm.Frames.R && allFinite esm.Frames.T) "ESM preset: finite"
            }

            test "the structure encoder gives finite Z and valid tokens on degenerate residues" {
                use _ = torch.NewDisposeScope()
                use _ng = torch.no_grad ()
                use encoder = TokenizerFixtures.smallEncoder 11UL
                let chain = Degenerate.chain.Force()
                let bb = (ProteinChain.backbone torch.float32 chain).unsqueeze 0L
                let ri = (ProteinChain.residueIndex chain).unsqueeze 0L
                let out = encoder.Encode(bb, ri, null, null)
                Expect.isTrue (allFinite out.Z) "Z (pre-quantization) finite"
                Expect.isTrue (allFinite out.Quantized) "quantized finite"
                Expect.isTrue (allFinite out.QuantizerLoss) "quantizer loss finite"
                let codes = TokenizerFixtures.smallEncoderConfig.Quantizer.Codes
                let ids = out.Tokens.to_type(torch.int64).contiguous().data<int64>().ToArray()

                for t in ids do
                    Expect.isTrue (t >= 0L && t < codes) (sprintf "token %d in [0, %d)" t codes)

                let tok = StructureTokenizer.tokenize encoder chain
                Expect.equal tok.Tokens.Length (ProteinChain.length chain) "one token per residue"

                for i in 0 .. tok.Tokens.Length - 1 do
                    let t = tok.Tokens.[i]

                    Expect.isTrue
                        ((t >= 0L && t < codes) || t = StructureTokens.Mask)
                        (sprintf "residue %d: token %d" i t)

                    if not (Degenerate.indices.Contains i) then
                        Expect.isTrue (t >= 0L && t < codes) (sprintf "healthy residue %d has a code" i)
            }

            test "encoder gradients stay finite with degenerate residues in the batch" {
                use _ = torch.NewDisposeScope()
                use encoder = TokenizerFixtures.smallEncoder 14UL
                encoder.train ()
                let chain = Degenerate.chain.Force()
                let bb = (ProteinChain.backbone torch.float32 chain).unsqueeze 0L
                let out = encoder.Encode(bb, null, null, null)
                let loss = out.Z.square().mean() + out.QuantizerLoss
                loss.backward ()
                let mutable any = false

                for struct (name, p) in encoder.named_parameters () do
                    let g = p.grad

                    if not (isNull g) then
                        any <- true
                        Expect.isTrue (allFinite g) (sprintf "gradient of %s finite" name)

                Expect.isTrue any "some parameter has a gradient"
            }

            test "DSSP and SASA stay defined on degenerate residues" {
                let chain = Degenerate.chain.Force()
                let d = Dssp.compute chain
                Expect.equal d.Ss8.Length (ProteinChain.length chain) "one letter per residue"

                for c in d.Ss8 do
                    Expect.stringContains "GHITEBSC" (string c) "an SS8 letter"

                for i in 0 .. d.Used.Length - 1 do
                    if d.Used.[i] then
                        for k in 0..2 do
                            Expect.isFalse (Single.IsNaN d.Hydrogens.[i, k]) (sprintf "H of used residue %d" i)

                for h in d.HBonds do
                    Expect.isTrue (Double.IsFinite(float h.Energy)) "finite H-bond energy"

                for i, k in Array.indexed d.Kappa do
                    if i >= 2 && i < d.Kappa.Length - 2 then
                        Expect.isFalse (Single.IsNaN k) (sprintf "kappa %d (CA atoms all present)" i)

                let sasa = Sasa.perResidue chain

                for i, s in Array.indexed sasa do
                    Expect.isTrue (Double.IsFinite s && s >= 0.0) (sprintf "SASA of residue %d = %g" i s)
            }

            test "RoundTrip.ofChain gives finite metrics on a chain with degenerate residues" {
                use encoder = TokenizerFixtures.smallEncoder 12UL
                use decoder = smallDecoder 13UL
                let trip = RoundTrip.ofChain encoder decoder (Degenerate.chain.Force())
                Expect.isGreaterThan trip.Residues 0 "decoded some residues"
                Expect.isTrue (Double.IsFinite trip.BackboneRmsd) (sprintf "RMSD %g" trip.BackboneRmsd)
                Expect.isTrue (Double.IsFinite trip.LddtCa) (sprintf "LDDT %g" trip.LddtCa)

                let decoded = ProteinChain.length trip.Decoded.Chain
                Expect.equal decoded trip.Residues "decoded length"

                for i in 0 .. decoded - 1 do
                    for a in 0..2 do
                        for k in 0..2 do
                            Expect.isTrue
                                (Single.IsFinite trip.Decoded.Chain.Atom37.[i, a, k])
                                (sprintf "decoded backbone %d/%d" i a)
            }
        ]
