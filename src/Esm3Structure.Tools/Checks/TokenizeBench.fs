namespace Esm3Structure.Checks

open System
open System.IO
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Structure

/// A chain of a chosen length cut from, or joined from, real structures of the shared corpus
/// (`TokenizeBench.benchChain`).
type BenchChain =
    {
        Chain: ProteinChain
        /// Where the residues come from, e.g. "1abc_A 1–100" or "4n4j_A 1–334 + 5ioj_B 1–333 + 1ecf_A 1–333".
        Source: string
    }

/// An encoder to benchmark: a label and the model, or the reason there is none.
type TokenizeBenchEncoder =
    {
        Label: string
        /// The model (in eval mode); null when unavailable.
        Encoder: StructureEncoder
        /// Why `Encoder` is null (e.g. no shipped model yet); "" when there is one.
        Unavailable: string
    }

    /// An available encoder.
    static member Of(label: string, encoder: StructureEncoder) =
        {
            Label = label
            Encoder = encoder
            Unavailable = ""
        }

    /// An encoder that could not be had, and why: the benchmark prints the reason in its row and goes on.
    static member Missing(label: string, reason: string) =
        {
            Label = label
            Encoder = Unchecked.defaultof<StructureEncoder>
            Unavailable = reason
        }

    /// True when there is a model to measure.
    member e.IsAvailable = not (isNull (box e.Encoder))

/// One row of the tokenization benchmark: one encoder on one chain, or one unavailable encoder.
type TokenizeBenchRow =
    {
        Encoder: string
        /// "" when measured; otherwise why not (the figures are then 0 or NaN).
        Note: string
        /// Residues of the chain.
        Length: int
        /// `BenchChain.Source`.
        Source: string
        /// Median time of `StructureTokenizer.tokenize` and its peak memory.
        Measurement: Measurement
        ResiduesPerSecond: float
        /// FLOPs of one tokenization as this implementation runs it (`TokenizeBench.encoderFlops`).
        Flops: float
        /// ESM's dense count, every block on every neighbourhood slot (`TokenizeBench.denseEncoderFlops`).
        DenseFlops: float
        /// `Flops` per second.
        GFlops: float
        /// The ceiling's matmul [M, K] × [K, N] as [| M; K; N |]: the encoder's dominant product
        /// (`TokenizeBench.dominantShape`).
        CeilingShape: int64[]
        /// The float32 matmul rate of `CeilingShape`, measured in the same run.
        CeilingGFlops: float
    }

/// Tokenization throughput (`StructureTokenizer.tokenize`: kNN graph, encoder, codebook search) on real chains,
/// beside the dense matmul rate of the encoder's dominant shape measured in the same run. Figures are printed by
/// `scripts/bench.fsx` (section `tokenize`), never asserted.
module TokenizeBench =

    /// Distance (Å) between the CA centroids of joined pieces: far beyond any chain's extent, so no 16-residue
    /// neighbourhood spans two pieces.
    [<Literal>]
    let PieceSpacing = 1000.0

    /// Residue-number gap between joined pieces: beyond ESM's ±32 relative-position bins, so the join reads as a
    /// chain break (as between the chains of a complex).
    [<Literal>]
    let PieceNumberGap = 100

    /// The configuration of the encoder's geometric attention layers.
    let private geometric (c: StructureEncoderConfig) =
        (TransformerStackConfig.Block(StructureEncoderConfig.stack c, 0)).Geometric.Value

    let private ffnHidden (c: StructureEncoderConfig) =
        FeedForward.swigluHidden c.ExpansionRatio c.DModel

    /// FLOPs of the matrix products for one chain, with the last block's feed-forward on `lastFfnSlots` slots.
    let private flops (c: StructureEncoderConfig) (length: int64) (lastFfnSlots: int64) =
        let e = min (int64 c.Knn) length
        let l, d, f = float length, float c.DModel, float (ffnHidden c)
        // Per neighbourhood: geometric attention on E slots (projections and the three E² pair terms).
        let attention = GeometricAttentionBenchmark.flops (geometric c) 1L e false
        let ffn slots = 6.0 * d * f * float slots // [d → 2F] and [F → d]: 2·d·2F + 2·F·d per slot

        let blocks =
            float c.Layers * attention + float (c.Layers - 1) * ffn e + ffn lastFfnSlots

        let head = 2.0 * d * float c.DOut + 2.0 * float c.Quantizer.Codes * float c.DOut // pre_vq_proj, codebook
        l * (blocks + head)

    /// FLOPs of one tokenization of a chain of `length` residues as `StructureEncoder.Encode` runs it, counting
    /// matrix products only (2 per multiply-add). With E = min(Knn, length), d, V vector heads, F = SwiGLU width,
    /// D = DOut and K codes, per residue:
    /// every block runs geometric attention on its neighbourhood's E slots, 2·E·d·15V (proj) + 2·E·3V·d (out_proj)
    /// + 18·V·E² (rotation scores, distances, value sums; `GeometricAttentionBenchmark.flops`); the SwiGLU, 6·d·F per
    /// slot (2·d·2F in, 2·F·d out), runs on all E slots in blocks 1 … n−1 but on the query slot alone in the last
    /// block (only slot 0 is read: `TransformerStack.ForwardAt`); then pre_vq_proj 2·d·D and the codebook search
    /// 2·K·D. Not counted: LayerNorms, softmax, activations, gathers, the kNN graph (9·L² in all).
    let encoderFlops (config: StructureEncoderConfig) (length: int64) : float = flops config length 1L

    /// ESM's dense count: `encoderFlops` with the last block's SwiGLU on all E slots too (what ESM's
    /// `StructureTokenEncoder` computes).
    let denseEncoderFlops (config: StructureEncoderConfig) (length: int64) : float =
        flops config length (min (int64 config.Knn) length)

    /// The encoder's dominant matrix product for a chain of `length` residues, [M, K] × [K, N] as [| M; K; N |]:
    /// the first SwiGLU projection over all neighbourhood slots, [L·E, d] × [d, 2F].
    let dominantShape (config: StructureEncoderConfig) (length: int64) : int64[] =
        [|
            length * min (int64 config.Knn) length
            config.DModel
            2L * ffnHidden config
        |]

    /// An encoder of `config` with deterministic random weights (`IInitialise` from `seed`; random codes), in eval
    /// mode: ESM's real sizes without its weights.
    let randomEncoder (config: StructureEncoderConfig) (seed: uint64) : StructureEncoder =
        let g = new torch.Generator(seed)
        let m = new StructureEncoder(config, g)
        Init.initialise g m
        m.eval ()
        m

    /// The CA centroid of the first `count` residues (zero when none has a CA).
    let private caCentroid (c: ProteinChain) (count: int) =
        let present =
            [|
                for i in 0 .. count - 1 do
                    if c.Atom37Mask.[i, ResidueConstants.caIndex] then
                        i
            |]

        Array.init 3 (fun x ->
            if present.Length = 0 then
                0.0f
            else
                present |> Array.averageBy (fun i -> c.Atom37.[i, ResidueConstants.caIndex, x]))

    /// The first `count` residues of each piece as one chain named `name`. Piece 0 is copied as is; piece k ≥ 1 is
    /// translated so that its CA centroid sits k · PieceSpacing Å from piece 0's along x, and renumbered to start
    /// PieceNumberGap after the previous piece's last number (its own gaps kept).
    let private join (name: string) (pieces: (ProteinChain * int) list) : ProteinChain =
        let total = pieces |> List.sumBy snd
        let names = Array.zeroCreate total
        let numbers = Array.zeroCreate total
        let insertions = Array.zeroCreate total
        let sequence = Text.StringBuilder()
        let atom37 = Array3D.zeroCreate total 37 3
        let bfactors = Array2D.zeroCreate total 37
        let first, _ = pieces.Head
        let origin = caCentroid first (snd pieces.Head)
        let mutable row = 0

        pieces
        |> List.iteri (fun k (c, count) ->
            let centre = caCentroid c count

            let shift =
                if k = 0 then
                    [| 0.0f; 0.0f; 0.0f |]
                else
                    Array.init 3 (fun x ->
                        origin.[x] - centre.[x]
                        + (if x = 0 then float32 k * float32 PieceSpacing else 0.0f))

            let renumber =
                if k = 0 then
                    0
                else
                    numbers.[row - 1] + PieceNumberGap - c.ResidueIndex.[0]

            sequence.Append(c.Sequence, 0, count) |> ignore

            for i in 0 .. count - 1 do
                names.[row + i] <- c.ResidueNames.[i]
                numbers.[row + i] <- c.ResidueIndex.[i] + renumber
                insertions.[row + i] <- c.InsertionCodes.[i]

                for a in 0..36 do
                    bfactors.[row + i, a] <- c.BFactors.[i, a]

                    for x in 0..2 do
                        atom37.[row + i, a, x] <- c.Atom37.[i, a, x] + shift.[x]

            row <- row + count)

        ProteinChain.create name first.ChainId names (sequence.ToString()) numbers insertions atom37 bfactors

    /// A chain of exactly `length` residues from the real structures of the shared corpus `dataDir` (its
    /// `index.tsv` and `structures/`), chosen deterministically: the fewest pieces k such that k corpus chains of at
    /// least ⌈length / k⌉ residues exist; the k shortest such chains (by index length, then name) each give their
    /// first length / k residues (the first ones one more when it does not divide). One piece is the chain itself,
    /// cut (coordinates and numbering as in the file); several are joined (`PieceSpacing` Å apart, residue numbers
    /// `PieceNumberGap` apart: see `join`), since the corpus holds no chain above ~500 residues (1000 residues =
    /// three pieces of 334, 333 and 333). A `length` below 1 raises an ArgumentOutOfRangeException; one the corpus
    /// cannot supply, an InputException naming the index.
    let benchChain (dataDir: string) (length: int) : BenchChain =
        if length < 1 then
            raise (ArgumentOutOfRangeException("length", length, "a benchmark chain needs at least one residue"))

        let indexPath = Path.Combine(dataDir, "index.tsv")

        let entries = Corpus.readIndex indexPath |> Array.sortBy (fun e -> e.Length, e.Name)

        let read (e: CorpusEntry) =
            StructureFile.read (Path.Combine(dataDir, "structures", e.File)) None

        let rec attempt (k: int) =
            if k > length || k > entries.Length then
                Esm3Structure.InputError.raise
                    indexPath
                    Esm3Structure.InputLocation.Whole
                    (sprintf "the corpus cannot supply a chain of %d residues" length)

            let size = (length + k - 1) / k

            let picked =
                entries
                |> Seq.filter (fun e -> e.Length >= size)
                |> Seq.map (fun e -> e, read e)
                |> Seq.filter (fun (_, c) -> ProteinChain.length c >= size)
                |> Seq.truncate k
                |> List.ofSeq

            if picked.Length < k then
                attempt (k + 1)
            else
                let counts = List.init k (fun i -> length / k + (if i < length % k then 1 else 0))

                let source =
                    List.zip picked counts
                    |> List.map (fun ((e, _), n) -> sprintf "%s 1–%d" e.Name n)
                    |> String.concat " + "

                let name =
                    match picked with
                    | [ (e, _) ] -> e.Name
                    | _ -> "joined"

                let chain = join name (List.zip (List.map snd picked) counts)

                { Chain = chain; Source = source }

        attempt 1

    /// Times `StructureTokenizer.tokenize` (one warm-up, the median of `repeats`) for every available encoder on
    /// every chain, with the matmul ceiling of each cell's `dominantShape` (measured once per shape, right after
    /// the first cell that needs it); then, with `measurePeaks`, measures every cell's peak memory in a second sweep
    /// (after all timings: `Bench.peakBytes` fixes glibc's mmap threshold for the rest of the process, which slows
    /// later allocations — training by a quarter here — so a test passes false and gets peaks of 0). An unavailable
    /// encoder gives one row carrying its reason.
    let run
        (measurePeaks: bool)
        (encoders: TokenizeBenchEncoder list)
        (chains: BenchChain list)
        (repeats: int)
        (progress: string -> unit)
        =
        let cells =
            [
                for enc in encoders do
                    if enc.IsAvailable then
                        for c in chains -> enc, c
            ]

        let tokenize (enc: TokenizeBenchEncoder) (c: BenchChain) () =
            StructureTokenizer.tokenize enc.Encoder c.Chain |> ignore

        let ceilings = Collections.Generic.Dictionary<string, float>()

        let timed =
            cells
            |> List.map (fun (enc, c) ->
                let ms = Bench.time 1 repeats (tokenize enc c)
                let l = int64 (ProteinChain.length c.Chain)
                let shape = dominantShape enc.Encoder.Config l
                let key = String.Join("x", shape)

                if not (ceilings.ContainsKey key) then
                    ceilings.[key] <- Bench.matmulShapeGFlops shape.[0] shape.[1] shape.[2] repeats

                progress (
                    sprintf
                        "%s L=%d: %.1f ms; matmul %s: %.1f GFLOP/s"
                        enc.Label
                        l
                        ms
                        (Esm3Structure.Tensors.Shape.show shape)
                        ceilings.[key]
                )

                ms, shape, ceilings.[key])

        let peaks =
            cells
            |> List.map (fun (enc, c) ->
                if measurePeaks then
                    Bench.peakBytes (tokenize enc c)
                else
                    0L)

        let measured =
            List.zip3 cells timed peaks
            |> List.map (fun ((enc, c), (ms, shape, ceiling), peak) ->
                let l = ProteinChain.length c.Chain
                let f = encoderFlops enc.Encoder.Config (int64 l)

                enc.Label,
                {
                    Encoder = enc.Label
                    Note = ""
                    Length = l
                    Source = c.Source
                    Measurement = { Milliseconds = ms; PeakBytes = peak }
                    ResiduesPerSecond = float l / (ms / 1000.0)
                    Flops = f
                    DenseFlops = denseEncoderFlops enc.Encoder.Config (int64 l)
                    GFlops = f / (ms * 1e6)
                    CeilingShape = shape
                    CeilingGFlops = ceiling
                })

        [
            for enc in encoders do
                if not enc.IsAvailable then
                    {
                        Encoder = enc.Label
                        Note = enc.Unavailable
                        Length = 0
                        Source = ""
                        Measurement = { Milliseconds = nan; PeakBytes = 0L }
                        ResiduesPerSecond = nan
                        Flops = nan
                        DenseFlops = nan
                        GFlops = nan
                        CeilingShape = [||]
                        CeilingGFlops = nan
                    }
                else
                    yield! measured |> List.filter (fun (label, _) -> label = enc.Label) |> List.map snd
        ]

    /// A Markdown table of tokenization rows: time, throughput, peak memory, FLOPs as run (ESM's dense count in
    /// brackets), the achieved rate (in brackets ESM's dense count per second: the rate a dense implementation
    /// would need for the same time), and the share of the same run's matmul ceiling for the encoder's dominant
    /// shape (FLOPs as run: how well the hardware is used).
    let format (rows: TokenizeBenchRow list) =
        let header =
            "| encoder | L | chains | ms | residues/s | peak MB | GFLOP (ESM dense) | GFLOP/s (ESM-equivalent) | matmul M × K × N | matmul GFLOP/s | % of matmul |"

        let rule = "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"

        let line (r: TokenizeBenchRow) =
            if r.Note <> "" then
                sprintf "| %s | — | not measured: %s | | | | | | | | |" r.Encoder r.Note
            else
                sprintf
                    "| %s | %d | %s | %.1f | %.0f | %.0f | %.1f (%.1f) | %.1f (%.1f) | %s | %.1f | %.0f%% |"
                    r.Encoder
                    r.Length
                    r.Source
                    r.Measurement.Milliseconds
                    r.ResiduesPerSecond
                    (float r.Measurement.PeakBytes / 1048576.0)
                    (r.Flops / 1e9)
                    (r.DenseFlops / 1e9)
                    r.GFlops
                    (r.DenseFlops / (r.Measurement.Milliseconds * 1e6))
                    (String.Join(" × ", r.CeilingShape))
                    r.CeilingGFlops
                    (100.0 * r.GFlops / r.CeilingGFlops)

        String.Join("\n", header :: rule :: (rows |> List.map line))
