namespace Esm3Structure.Tokenizers

open System
open System.Globalization
open TorchSharp
open Esm3Structure

/// ESM3's solvent-accessible surface area (SASA) track: three specials then 16 bins (evolutionaryscale/esm
/// `esm/tokenization/sasa_tokenizer.py`; boundaries `SASA_DISCRETIZATION_BOUNDARIES` in
/// `esm/utils/constants/esm3.py`; ESM3-REFERENCE.md §8.4). Bins are right-closed, `(boundary[b-1], boundary[b]]`,
/// as `torch.bucketize` with `right = False`: a value equal to a boundary falls into the lower bin. A missing value
/// (NaN) is the mask, id 0 (`<pad>`), which is also BOS, EOS, PAD and chain break.
module SasaTokenizer =

    /// The 15 bin boundaries, Å² (ESM's `SASA_DISCRETIZATION_BOUNDARIES`).
    let boundaries =
        [|
            0.8
            4.0
            9.6
            16.4
            24.5
            32.9
            42.0
            51.5
            61.2
            70.9
            81.6
            93.3
            107.2
            125.4
            151.4
        |]

    /// Number of bins (ids 3 … 18).
    [<Literal>]
    let BinCount = 16

    /// `<pad>`: padding and missing values.
    [<Literal>]
    let Pad = SpecialIds.Pad

    /// BOS (the `<pad>` id).
    [<Literal>]
    let Bos = SpecialIds.Bos

    /// EOS (the `<pad>` id).
    [<Literal>]
    let Eos = SpecialIds.Eos

    /// Mask (the `<pad>` id).
    [<Literal>]
    let Mask = SpecialIds.Mask

    /// Chain break (the `<pad>` id).
    [<Literal>]
    let ChainBreak = SpecialIds.ChainBreak

    /// `<motif>`.
    [<Literal>]
    let Motif = SpecialIds.Motif

    /// `<unk>`.
    [<Literal>]
    let Unk = SpecialIds.Unk

    /// Id of bin 0, the first after the special ids; bin b has id `BinOffset + b`.
    [<Literal>]
    let BinOffset = SpecialIds.Unk + 1L

    /// Embedding and logit width of the track (ESM3's `sasa_embed`, `sasa_head`).
    [<Literal>]
    let VocabularySize = 19L

    /// Bin midpoints, Å²: `(low + high) / 2` with the first bin starting at 0 and the top bin closed at
    /// 2 × 151.4, as ESM's `midpoints_tensor`.
    let midpoints =
        let edges =
            Array.concat [ [| 0.0 |]; boundaries; [| 2.0 * boundaries.[boundaries.Length - 1] |] ]

        Array.init BinCount (fun b -> (edges.[b] + edges.[b + 1]) / 2.0)

    /// Python's `str(float)` for the boundaries (always with a decimal point).
    let private pythonFloat (v: float) =
        let s = v.ToString("R", CultureInfo.InvariantCulture)
        if s.Contains "." then s else s + ".0"

    /// The 19 token strings in id order: `<pad> <motif> <unk>` then `<0-0.8>`, `<0.8-4.0>`, …, `<151.4-inf>`.
    let vocabulary =
        let edges =
            Array.concat [ [| "0" |]; Array.map pythonFloat boundaries; [| "inf" |] ]

        Array.append
            [| "<pad>"; "<motif>"; "<unk>" |]
            (Array.init BinCount (fun b -> sprintf "<%s-%s>" edges.[b] edges.[b + 1]))

    /// The bin (0 … 15) of a value: the smallest b with `v ≤ boundary[b]`, else 15. NaN raises an
    /// `ArgumentException` (use `tokenId`, which maps NaN to the mask).
    let bin (value: float) : int =
        if Double.IsNaN value then
            raise (ArgumentException("a NaN SASA value has no bin (it is encoded as the mask)", "value"))

        let mutable b = 0

        while b < boundaries.Length && value > boundaries.[b] do
            b <- b + 1

        b

    /// The id of one value: NaN → `<pad>` (0), otherwise `BinOffset + bin value`.
    let tokenId (value: float) : int64 =
        if Double.IsNaN value then
            Pad
        else
            BinOffset + int64 (bin value)

    /// Ids of per-residue SASA values (Å², NaN where missing), optionally wrapped as ESM does: `<pad>` … `<pad>`.
    let encode (addSpecialTokens: bool) (values: float[]) : int64[] =
        let body = Array.map tokenId values

        if addSpecialTokens then
            Array.concat [ [| Bos |]; body; [| Eos |] ]
        else
            body

    /// The ids of a tensor of values, as `tokenId` (NaN → 0), compared in the values' own float dtype (so a float32
    /// 0.8f is a boundary); any device. A non-float tensor raises an `ArgumentException`.
    /// Shapes: values [*] -> [*] int64
    let encodeTensor (values: torch.Tensor) : torch.Tensor =
        if not (values.is_floating_point ()) then
            raise (ArgumentException(sprintf "expected float SASA values, got %O" values.dtype, "values"))

        use edges = torch.tensor (boundaries, dtype = values.dtype, device = values.device)
        use bins = torch.bucketize (values, edges, false, false)
        use nan = values.isnan ()
        use offset = BinOffset.ToScalar()
        use ids = bins.add offset
        use pad = torch.zeros_like ids
        torch.where (nan, pad, ids)

    let private check (ids: int64[]) =
        ids
        |> Array.iteri (fun i id ->
            if id < 0L || id >= VocabularySize then
                InputError.raise
                    "SASA tokens"
                    (InputLocation.Field(sprintf "token %d" i))
                    (sprintf "id %d is outside the SASA vocabulary (0–18)" id))

    let private body (hasSpecialTokens: bool) (ids: int64[]) =
        check ids

        if hasSpecialTokens then
            let at i =
                InputLocation.Field(sprintf "token %d" i)

            if ids.Length < 2 then
                InputError.raise
                    "SASA tokens"
                    InputLocation.Whole
                    (sprintf "a wrapped SASA track needs BOS and EOS, got %d ids" ids.Length)

            if ids.[0] <> Bos then
                InputError.raise "SASA tokens" (at 0) (sprintf "expected BOS (0), got %d" ids.[0])

            if ids.[ids.Length - 1] <> Eos then
                InputError.raise
                    "SASA tokens"
                    (at (ids.Length - 1))
                    (sprintf "expected EOS (0), got %d" ids.[ids.Length - 1])

            ids.[1 .. ids.Length - 2]
        else
            ids

    /// Ids back to values: each bin's midpoint, NaN for the specials (`<pad>`, `<motif>`, `<unk>`), as ESM's
    /// `decode_float`. With `hasSpecialTokens` the first and last ids must be 0 and are dropped. A bad id or a missing
    /// BOS/EOS raises an `InputException` naming the position.
    let decode (hasSpecialTokens: bool) (ids: int64[]) : float[] =
        body hasSpecialTokens ids
        |> Array.map (fun id ->
            if id < BinOffset then
                Double.NaN
            else
                midpoints.[int (id - BinOffset)])

    /// Ids back to their token strings (`<pad>`, `<0.8-4.0>`, …), as ESM's `decode_list`; BOS/EOS handled as in
    /// `decode`.
    let decodeStrings (hasSpecialTokens: bool) (ids: int64[]) : string[] =
        body hasSpecialTokens ids |> Array.map (fun id -> vocabulary.[int id])
