// Where a tokenizer's LDDT-CA is lost: over the valid chains at full length, the LDDT score (the mean of the four
// thresholds 0.5, 1, 2, 4 Å) and the mean signed distance error of every CA pair within 15 Å in the chain, by the
// pair's distance in sequence; and the median LDDT-CA once the decodings' CA(i)–CA(i+1) distances are restored to
// 3.8 Å (a least-squares nudge of the CAs: Σ|x − x₀|² + 10·Σ(|x_{i+1} − x_i| − 3.8)², 300 gradient steps, links
// between residues numbered consecutively), to see what the decoder's local shrinking costs.
//
//     dotnet fsi results/token-ceiling/lddt-by-separation.fsx [FOLDER [ROUNDS]]
//
// FOLDER holds encoder.safetensors and decoder.safetensors (default: models/structure-tokenizer). ROUNDS > 0 chooses
// the tokens with the decoder in the loop (`TokenSearch`, at most that many rounds; about 18 minutes for 60); the
// default, 0, gives each residue its nearest code (about 25 s).
#load "../../scripts/_load.fsx"

open System
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure

let root = Cli.repositoryRoot __SOURCE_DIRECTORY__
let data = Cli.sharedData __SOURCE_DIRECTORY__

let folder =
    fsi.CommandLineArgs
    |> Array.skip 1
    |> Array.tryItem 0
    |> Option.defaultValue (IO.Path.Combine(root, "models", "structure-tokenizer"))

let rounds =
    fsi.CommandLineArgs
    |> Array.skip 1
    |> Array.tryItem 1
    |> Option.map int
    |> Option.defaultValue 0

let encoder =
    StructureEncoderCheckpoint.load (IO.Path.Combine(folder, "encoder.safetensors"))

let decoder =
    StructureDecoderCheckpoint.load (IO.Path.Combine(folder, "decoder.safetensors"))

// Sequence separations [lower, upper).
let bins = [| 1, 2; 2, 3; 3, 5; 5, 11; 11, Int32.MaxValue |]
let score = Array.zeroCreate<float> bins.Length
let pairs = Array.zeroCreate<float> bins.Length
let signed = Array.zeroCreate<float> bins.Length
let before = ResizeArray<float>()
let after = ResizeArray<float>()

/// Nudges CAs [L, 3] (float64) towards linked CA(i)–CA(i+1) distances of 3.8 Å, staying near where they were: 300
/// gradient steps on Σ|x − x₀|² + 10·Σ(|x_{i+1} − x_i| − 3.8)² from x₀. Shapes: [L, 3], links [N] -> [L, 3]
let restoreSteps (ca: torch.Tensor) (links: int64[]) =
    let i = torch.tensor links
    let mutable x = ca.clone ()

    for _ in 1..300 do
        let v = x.detach().requires_grad_ true
        let d = (v.index_select (0L, i + 1L) - v.index_select (0L, i)).norm(-1, false)
        let loss = (v - ca).square().sum() + (d - 3.8).square().sum() * 10.0
        loss.backward ()
        x <- (v - v.grad * 0.02).detach()

    x

for entry in Corpus.entriesOf data "valid" 0 do
    use _ = torch.NewDisposeScope()
    let chain = Corpus.readEntry data entry

    let trip =
        RoundTrip.ofSearch
            { TokenSearchConfig.Default with
                Rounds = rounds
            }
            encoder
            decoder
            chain

    let missing = Collections.Generic.HashSet<int>(trip.Tokenized.MissingBackbone)

    let keep =
        [| 0 .. trip.Tokenized.Tokens.Length - 1 |]
        |> Array.filter (missing.Contains >> not)

    let reference =
        (ProteinChain.ca torch.float64 chain).index_select(0L, torch.tensor (keep |> Array.map int64))

    let model = ProteinChain.ca torch.float64 trip.Decoded.Chain
    let r = reference.data<float>().ToArray() |> Array.chunkBySize 3
    let m = model.data<float>().ToArray() |> Array.chunkBySize 3

    let dist (a: float[]) (b: float[]) =
        sqrt (Array.fold2 (fun s u v -> s + (u - v) ** 2.0) 0.0 a b)

    for i in 0 .. r.Length - 1 do
        for j in i + 1 .. r.Length - 1 do
            let d = dist r.[i] r.[j]

            if d < 15.0 then
                let e = dist m.[i] m.[j] - d
                let k = bins |> Array.findIndex (fun (lo, hi) -> j - i >= lo && j - i < hi)

                score.[k] <-
                    score.[k]
                    + ([ 0.5; 1.0; 2.0; 4.0 ] |> List.sumBy (fun t -> if abs e < t then 0.25 else 0.0))

                pairs.[k] <- pairs.[k] + 1.0
                signed.[k] <- signed.[k] + e

    let number = keep |> Array.map (fun i -> trip.Tokenized.ResidueIndex.[i])

    let links =
        [|
            for i in 0 .. keep.Length - 2 do
                if number.[i + 1] - number.[i] = 1 then
                    int64 i
        |]

    before.Add trip.LddtCa
    after.Add((Metrics.lddtCa (restoreSteps model links) reference None).Protein.ToDouble())

let median (xs: ResizeArray<float>) =
    let s = Seq.sort xs |> Seq.toArray

    if s.Length % 2 = 1 then
        s.[s.Length / 2]
    else
        (s.[s.Length / 2 - 1] + s.[s.Length / 2]) / 2.0

printfn
    "%d valid chains (%s); CA pairs within 15 Å by sequence separation"
    before.Count
    (if rounds = 0 then
         "nearest codes"
     else
         sprintf "tokens searched, %d rounds at most" rounds)

printfn "%-12s %9s %11s %16s" "|i - j|" "pairs" "LDDT score" "mean error (Å)"

for k in 0 .. bins.Length - 1 do
    let lo, hi = bins.[k]

    let name =
        if hi = Int32.MaxValue then sprintf "%d+" lo
        elif hi = lo + 1 then string lo
        else sprintf "%d-%d" lo (hi - 1)

    printfn "%-12s %9.0f %11.3f %+16.3f" name pairs.[k] (score.[k] / pairs.[k]) (signed.[k] / pairs.[k])

printfn "median LDDT-CA %.4f as decoded, %.4f with CA(i)-CA(i+1) restored to 3.8 Å" (median before) (median after)
