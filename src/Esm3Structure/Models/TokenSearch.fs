namespace Esm3Structure.Models

open System
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Native
open Esm3Structure.Structure
open Esm3Structure.Tensors
open Esm3Structure.Tokenizers

/// Options of `TokenSearch.search`.
type TokenSearchConfig =
    {
        /// Codes a residue may take: the encoder's nearest this many to its vector (the nearest, ESM's token, first).
        Candidates: int
        /// Single-residue changes decoded together, in one batch, per round.
        Batch: int
        /// Rounds at most; 0 keeps the nearest-code tokens (ESM's).
        Rounds: int
        /// Rounds in a row without an improvement before the search stops.
        Patience: int
    }

    /// 16 candidates, batches of 16, at most 60 rounds, patience 4.
    static member Default =
        {
            Candidates = 16
            Batch = 16
            Rounds = 60
            Patience = 4
        }

    /// Errors naming the option.
    static member validate(c: TokenSearchConfig) : Result<TokenSearchConfig, string list> =
        let errors =
            [
                if c.Candidates < 1 then
                    sprintf "Candidates must be ≥ 1 (got %d)" c.Candidates
                if c.Batch < 1 then
                    sprintf "Batch must be ≥ 1 (got %d)" c.Batch
                if c.Rounds < 0 then
                    sprintf "Rounds must be ≥ 0 (got %d)" c.Rounds
                if c.Patience < 1 then
                    sprintf "Patience must be ≥ 1 (got %d)" c.Patience
            ]

        if errors.IsEmpty then Ok c else Error errors

/// A chain's tokens chosen by `TokenSearch.search`, with the LDDT-CA its own decodings gave.
type TokenSearchResult =
    {
        /// The chosen tokens (`MissingBackbone` and everything but `Tokens` as `StructureTokenizer.tokenize` gives).
        Tokenized: TokenizedChain
        /// LDDT-CA of the decoded nearest-code tokens (the search's start), over the residues with a token.
        NearestLddtCa: float
        /// LDDT-CA of the decoded chosen tokens; never below `NearestLddtCa`.
        LddtCa: float
        /// Rounds run.
        Rounds: int
        /// Residues whose token differs from the nearest code.
        Changed: int
    }

/// Choosing structure tokens with the decoder in the loop (analysis by synthesis, as CELP speech coders and
/// rate–distortion-optimised video encoders choose their codes): the tokens are still one code per residue from the
/// same codebook, decoded by the unchanged decoder, but instead of each residue's nearest code (ESM's encoder) the
/// search keeps, among each residue's nearest few codes, the choice whose decoding scores the best LDDT-CA against
/// the chain it encodes. Greedy and deterministic: each round ranks every residue's best change by the first-order
/// change of a smooth LDDT-CA (the gradient at the decoder's input embeddings), decodes the next `Batch` of those
/// changes one at a time in one batch, and keeps the best of the improving ones applied together in the order of
/// their gains (1, 2, 4, … of them); a round without an improvement moves on to the next `Batch` in the ranking.
module TokenSearch =

    /// LDDT-CA's thresholds (Å), ESM's (`LddtConfig.esm`).
    let private thresholds = [| 0.5; 1.0; 2.0; 4.0 |]

    /// A smooth LDDT-CA for gradients: each threshold's step |e| < τ replaced by σ(4(τ − |e|)/τ), over the pairs
    /// `pairs` marks (1 for scored, 0 otherwise). Distances are √(|xᵢ − xⱼ|² + 10⁻¹²) on both sides, so the
    /// diagonal has a zero gradient rather than NaN and a structure scored against itself has e = 0 exactly.
    /// Shapes: model [*, L, 3], reference [L, 3], pairs [L, L] -> [*]
    let smoothLddtCa (model: torch.Tensor) (reference: torch.Tensor) (pairs: torch.Tensor) =
        Shape.expectTrailing "model" [| 3L |] model
        Shape.expect "reference" [| model.shape.[model.shape.Length - 2]; 3L |] reference

        let distances (x: torch.Tensor) =
            ((x.unsqueeze -2L - x.unsqueeze -3L).square().sum(-1L) + 1e-12).sqrt()

        let dm = distances model
        let dr = distances reference
        let e = (dm - dr).abs()

        let s =
            thresholds
            |> Array.map (fun t -> ((-e + t) * (4.0 / t)).sigmoid())
            |> Array.reduce (+)

        (s * pairs).sum([| -1L; -2L |]) / (pairs.sum () * float thresholds.Length)

    /// Searches the tokens of `chain` (as `StructureTokenizer.tokenize` reads it) that `decoder` draws closest to
    /// it in LDDT-CA, starting from `encoder`'s nearest codes. With `config.Rounds` = 0 the tokens are the nearest
    /// codes. Runs without touching either model's parameters or gradients.
    let search
        (config: TokenSearchConfig)
        (encoder: StructureEncoder)
        (decoder: StructureDecoder)
        (chain: ProteinChain)
        : TokenSearchResult =
        Validation.check "token search" (TokenSearchConfig.validate config) |> ignore
        let tokenized = StructureTokenizer.tokenize encoder chain
        let keep = StructureTokenizer.decodable chain.Name tokenized

        use _scope = torch.NewDisposeScope()
        // Each round decodes and differentiates tensors of the same sizes again: reuse their pages (NativeHeap).
        use _heap = NativeHeap.retainFreedMemory ()
        let device = Checkpoint.deviceOf decoder
        let l = int64 keep.Length
        let kept = torch.tensor(keep |> Array.map int64).``to`` device

        let backbone = (ProteinChain.backbone torch.float32 chain).``to`` device

        let reference = backbone.index_select(0L, kept).select(1L, 1L) // [L, 3]

        // Each kept residue's candidate codes, nearest first: [L, C]. Computed on the first round only (none when
        // `Rounds` is 0). The encoder runs a second time here for its vectors, which `tokenize` does not return; at
        // the shipped size that pass costs milliseconds against seconds of decoding.
        let candidates =
            lazy
                use _ = torch.no_grad ()

                let z =
                    encoder
                        .Encode(
                            backbone.unsqueeze(0L).``to``(Checkpoint.deviceOf encoder),
                            (ProteinChain.residueIndex chain).unsqueeze(0L).``to``(Checkpoint.deviceOf encoder),
                            null,
                            null
                        )
                        .Z.squeeze(0L)
                        .index_select(0L, kept.``to`` (Checkpoint.deviceOf encoder))

                let codes = encoder.Codebook.Codes.detach ()
                let c = min (int64 config.Candidates) codes.shape.[0]
                let struct (_, nearest) = torch.cdist(z, codes).topk(int c, -1, false, true)
                nearest.cpu().contiguous().data<int64>().ToArray() |> Array.chunkBySize (int c)

        let table =
            use _ = torch.no_grad ()

            decoder
                .Embed(torch.arange (StructureTokens.VocabularySize.ToScalar(), dtype = torch.int64, device = device))
                .detach()

        let pairs =
            let dr = (reference.unsqueeze 1L - reference.unsqueeze 0L).norm(-1, false)

            dr
                .lt(torch.full_like (dr, 15.0))
                .logical_and(torch.eye(l, dtype = torch.ScalarType.Bool, device = device).logical_not())
                .to_type
                torch.float32

        // The decoder's input rows of token rows: BOS, codes, EOS. [B, L] -> [B, L + 2, d]
        let embed (rows: int64[][]) =
            let wrapped = rows |> Array.collect (fun r -> StructureTokens.wrap chain.Name r)

            table.index_select(0L, torch.tensor(wrapped).``to`` device).reshape(int64 rows.Length, l + 2L, -1L)

        let caOf (x: torch.Tensor) =
            decoder.DecodeBackbone(x).narrow(1L, 1L, l).select(2L, 1L) // [B, L, 3]

        let lddtOf (rows: int64[][]) =
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            let ca = caOf (embed rows)

            (Metrics.lddtCa ca (reference.expand (ca.shape.[0], l, 3L)) None)
                .Protein.cpu()
                .to_type(torch.float64)
                .data<float>()
                .ToArray()

        let start = keep |> Array.map (fun i -> tokenized.Tokens.[i])
        let nearestLddt = (lddtOf [| start |]).[0]
        let mutable current = Array.copy start
        let mutable best = nearestLddt
        let mutable rounds = 0
        let mutable misses = 0
        let mutable offset = 0

        while rounds < config.Rounds && misses < config.Patience && offset < keep.Length do
            rounds <- rounds + 1
            use _ = torch.NewDisposeScope()

            // Every residue's most promising change, by the first-order change of the smooth LDDT-CA.
            let ranked =
                let x = (embed [| current |]).detach().requires_grad_ true
                let score = smoothLddtCa (caOf x) reference pairs

                let g =
                    torch.autograd.grad([| score.sum () |], [| x |]).[0].squeeze(0L).narrow(0L, 1L, l) // [L, d]

                use _ = torch.no_grad ()

                let cand =
                    torch.tensor(Array.concat candidates.Value).``to``(device).reshape(l, -1L) // [L, C]

                let at =
                    (table.index_select(0L, cand.reshape -1L).reshape(l, cand.shape.[1], -1L)
                     * g.unsqueeze 1L)
                        .sum
                        -1L

                let now = torch.tensor(current).``to`` device
                let gain = at - (table.index_select (0L, now) * g).sum(-1L, true)

                let gain =
                    gain.masked_fill (cand.eq (now.unsqueeze 1L), Double.NegativeInfinity.ToScalar())

                let struct (g, pick) = gain.max (-1L)
                let g = g.cpu().to_type(torch.float64).data<float>().ToArray()
                let pick = pick.cpu().data<int64>().ToArray()

                [| 0 .. keep.Length - 1 |]
                |> Array.filter (fun i -> Double.IsFinite g.[i])
                |> Array.sortBy (fun i -> -g.[i], i)
                |> Array.map (fun i -> i, candidates.Value.[i].[int pick.[i]])

            let tried =
                ranked |> Array.skip (min offset ranked.Length) |> Array.truncate config.Batch

            let changed (moves: (int * int64)[]) =
                let t = Array.copy current

                for i, code in moves do
                    t.[i] <- code

                t

            let singles = lddtOf (tried |> Array.map (fun m -> changed [| m |]))

            let improving =
                Array.zip tried singles
                |> Array.filter (fun (_, v) -> v > best)
                |> Array.sortBy (fun ((i, _), v) -> -v, i)
                |> Array.map fst

            if improving.Length = 0 then
                misses <- misses + 1
                offset <- offset + config.Batch
            else
                misses <- 0
                offset <- 0

                let sets =
                    Seq.initInfinite (fun k -> 1 <<< k)
                    |> Seq.takeWhile (fun n -> n <= improving.Length)
                    |> Seq.map (fun n -> changed improving.[.. n - 1])
                    |> Seq.toArray

                let scores = lddtOf sets
                let k = [| 0 .. sets.Length - 1 |] |> Array.maxBy (fun k -> scores.[k], -k)

                if scores.[k] > best then
                    best <- scores.[k]
                    current <- sets.[k]

        let tokens = Array.copy tokenized.Tokens

        keep |> Array.iteri (fun j i -> tokens.[i] <- current.[j])

        {
            Tokenized = { tokenized with Tokens = tokens }
            NearestLddtCa = nearestLddt
            LddtCa = best
            Rounds = rounds
            Changed = Array.fold2 (fun n a b -> if a <> b then n + 1 else n) 0 start current
        }
