// What a structure token says about its residue: over the valid chains at full length, the spread within a code
// (pooled over codes with at least 3 residues) of the residue's place (its CA in its chain's principal-axes frame)
// and of its local shape (the CA trace's virtual bond angle and torsion, as `StructureLosses.localShapeLabels`
// defines them), against the spread over all residues. A ratio near 1: the code says nothing about that quantity.
//
//     dotnet fsi results/token-ceiling/token-content.fsx [ENCODER] [CHAINS]
//
// ENCODER defaults to models/structure-tokenizer/encoder.safetensors, CHAINS (the first of the valid split) to 67.
#load "../../scripts/_load.fsx"

open System
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Geometry
open Esm3Structure.Models
open Esm3Structure.Structure

let root = Cli.repositoryRoot __SOURCE_DIRECTORY__
let data = Cli.sharedData __SOURCE_DIRECTORY__
let args = fsi.CommandLineArgs |> Array.skip 1

let encoderPath =
    args
    |> Array.tryItem 0
    |> Option.defaultValue (IO.Path.Combine(root, "models", "structure-tokenizer", "encoder.safetensors"))

let chains = args |> Array.tryItem 1 |> Option.map int |> Option.defaultValue 67
let encoder = StructureEncoderCheckpoint.load encoderPath

// Per residue with a full four-residue window: (code, [x; y; z] principal, angle °, torsion °).
let rows = ResizeArray<int64 * float[] * float * float>()

for entry in Corpus.entriesOf data "valid" chains do
    let chain = Corpus.readEntry data entry
    use _ = torch.NewDisposeScope()
    let backbone = ProteinChain.backbone torch.float32 chain
    let tokens = (encoder.forward (backbone.unsqueeze 0L)).Tokens.squeeze(0L).data<int64>().ToArray()
    let ca = backbone.select(1L, 1L).to_type torch.float64
    let present = ca.isfinite().all (-1L)
    let place = (PrincipalFrame.coordinates (ca.nan_to_num ()) present).data<float>().ToArray()
    let x = ca.nan_to_num().data<float>().ToArray() |> Array.chunkBySize 3
    let ok = present.data<bool>().ToArray()
    let sub (a: float[]) (b: float[]) = Array.map2 (-) a b
    let dot (a: float[]) (b: float[]) = Array.fold2 (fun s u v -> s + u * v) 0.0 a b

    let cross (a: float[]) (b: float[]) =
        [| a.[1] * b.[2] - a.[2] * b.[1]; a.[2] * b.[0] - a.[0] * b.[2]; a.[0] * b.[1] - a.[1] * b.[0] |]

    for i in 1 .. tokens.Length - 3 do
        if ok.[i - 1] && ok.[i] && ok.[i + 1] && ok.[i + 2] then
            let u, v = sub x.[i - 1] x.[i], sub x.[i + 1] x.[i]
            let angle = acos (dot u v / sqrt (dot u u * dot v v)) * 180.0 / Math.PI
            let b1, b2, b3 = sub x.[i] x.[i - 1], sub x.[i + 1] x.[i], sub x.[i + 2] x.[i + 1]
            let n1, n2 = cross b1 b2, cross b2 b3
            let torsion = atan2 (sqrt (dot b2 b2) * dot b1 n2) (dot n1 n2) * 180.0 / Math.PI
            rows.Add(tokens.[i], place.[3 * i .. 3 * i + 2], angle, torsion)

let all = rows.ToArray()
let codes = all |> Array.groupBy (fun (t, _, _, _) -> t) |> Array.filter (fun (_, g) -> g.Length >= 3)

/// Pooled within-code standard deviation and the overall one.
let spread (f: int64 * float[] * float * float -> float) =
    let within =
        codes
        |> Array.sumBy (fun (_, g) ->
            let m = g |> Array.averageBy f
            g |> Array.sumBy (fun r -> (f r - m) ** 2.0))

    let dof = codes |> Array.sumBy (fun (_, g) -> g.Length - 1)
    let mean = all |> Array.averageBy f
    sqrt (within / float dof), sqrt (all |> Array.averageBy (fun r -> (f r - mean) ** 2.0))

printfn "%s: %d residues of %d valid chains, %d codes used by at least 3" encoderPath all.Length chains codes.Length
printfn ""
printfn "| quantity | within a code (sd) | over all residues (sd) | ratio |"
printfn "|---|---:|---:|---:|"

for name, f in
    [
        "principal x (Å)", (fun (_, p: float[], _, _) -> p.[0])
        "principal y (Å)", (fun (_, p: float[], _, _) -> p.[1])
        "principal z (Å)", (fun (_, p: float[], _, _) -> p.[2])
        "CA angle (°)", (fun (_, _, a, _) -> a)
        "cos CA torsion", (fun (_, _, _, t) -> cos (t * Math.PI / 180.0))
        "sin CA torsion", (fun (_, _, _, t) -> sin (t * Math.PI / 180.0))
    ] do
    let w, t = spread f
    printfn "| %s | %.3f | %.3f | %.2f |" name w t (w / t)
