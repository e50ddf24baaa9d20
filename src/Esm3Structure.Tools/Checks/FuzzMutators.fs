namespace Esm3Structure.Checks

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Tokenizers
open Esm3Structure.App

/// The fuzzer's inputs: the formats, seed inputs, and per-format mutators driven by a seeded `Random` that turn real
/// inputs into broken ones (text through `FuzzTextMutation`; gzip-wrapped structures; lying safetensors header
/// lengths; token JSON with values of the wrong kind).
module FuzzMutators =

    /// The formats, in a fixed order.
    let formats: FuzzFormat list =
        [ FuzzFormat.Pdb; FuzzFormat.Mmcif; FuzzFormat.Safetensors; FuzzFormat.Tokens ]

    /// The lower-case name of a format (pdb, mmcif, safetensors, tokens).
    let formatName (format: FuzzFormat) : string =
        match format with
        | FuzzFormat.Pdb -> "pdb"
        | FuzzFormat.Mmcif -> "mmcif"
        | FuzzFormat.Safetensors -> "safetensors"
        | FuzzFormat.Tokens -> "tokens"

    /// The format named `name` (as `formatName` writes it), or None.
    let tryParseFormat (name: string) : FuzzFormat option =
        formats |> List.tryFind (fun f -> formatName f = name.ToLowerInvariant())

    /// The file extension a format's scratch file gets.
    let extension (format: FuzzFormat) =
        match format with
        | FuzzFormat.Pdb -> ".pdb"
        | FuzzFormat.Mmcif -> ".cif"
        | FuzzFormat.Safetensors -> ".safetensors"
        | FuzzFormat.Tokens -> ".json"

    /// A small safetensors file (written by `Safetensors.write` to `scratchDir`): F32, I64, BOOL, F16 and a 0-d F64
    /// tensor, plus metadata.
    let safetensorsSeed (scratchDir: string) : FuzzSeed =
        use _ = torch.NewDisposeScope()
        let path = Path.Combine(scratchDir, "seed.safetensors")

        let tensors =
            [
                "coords", torch.arange(6L, dtype = torch.float32).reshape(2L, 3L)
                "ids", torch.tensor ([| 4L; 0L; 4095L; 4096L |])
                "mask", torch.tensor ([| true; false; true |])
                "half", torch.ones (2L, dtype = torch.float16)
                "scale", torch.tensor 0.5
            ]

        Safetensors.write path tensors (readOnlyDict [ "format", "pt"; "note", "fuzz seed" ])
        let bytes = File.ReadAllBytes path
        File.Delete path

        {
            Name = "seed.safetensors"
            Bytes = bytes
        }

    /// A tokenized chain of `n` random codes (no missing backbone), for seed and large token inputs.
    let tokenChain (random: Random) (file: string) (chain: string) (n: int) : TokenizedChain =
        let letters = "ACDEFGHIKLMNPQRSTVWY"
        let missing = if n > 3 then [| n / 3 |] else [||]

        {
            File = file
            Chain = chain
            Sequence = String(Array.init n (fun _ -> letters.[random.Next letters.Length]))
            ResidueIndex = Array.init n (fun i -> i + 1)
            Tokens =
                Array.init n (fun i ->
                    if Array.contains i missing then
                        StructureTokens.Mask
                    else
                        int64 (random.Next 4096))
            MissingBackbone = missing
        }

    /// A tokens JSON (`TokensJson.toJson`) of two short chains, made from a fixed random stream.
    let tokensSeed () : FuzzSeed =
        let random = Random 8

        let chains =
            [|
                tokenChain random "1ubq_A.pdb" "A" 12
                tokenChain random "1ctf_A.pdb.gz" "" 7
            |]

        {
            Name = "seed.json"
            Bytes = Encoding.UTF8.GetBytes(TokensJson.toJson chains)
        }

    let private gzip (bytes: byte[]) =
        use output = new MemoryStream()

        do
            use z = new GZipStream(output, CompressionLevel.Fastest, true)
            z.Write(bytes, 0, bytes.Length)

        output.ToArray()

    /// Structure text: text mutations, sometimes gzipped afterwards (and then sometimes truncated or flipped).
    let private structureMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        let name, m = FuzzTextMutation.mutate random maxBytes bytes

        // (GZipStream writes nothing at all for an empty input.)
        if random.Next 6 = 0 && m.Length > 0 then
            let z = gzip m

            match random.Next 3 with
            | 0 -> name + "+gzip", z
            | 1 -> name + "+gzip-truncate", z.[.. random.Next z.Length - 1]
            | _ ->
                let c = Array.copy z
                let i = random.Next c.Length
                c.[i] <- c.[i] ^^^ (1uy <<< random.Next 8)
                name + "+gzip-flip", c
        else
            name, m

    let private headerLength (bytes: byte[]) =
        if bytes.Length >= 8 then
            let n = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8))
            if n <= uint64 (bytes.Length - 8) then int n else -1
        else
            -1

    let private withLength (length: uint64) (bytes: byte[]) =
        let c = Array.copy bytes
        BinaryPrimitives.WriteUInt64LittleEndian(Span(c, 0, 8), length)
        c

    /// safetensors: lying header lengths, truncation at the format's boundaries, header JSON mutations (with the
    /// length prefix kept consistent or not), data-region flips.
    let private safetensorsMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        let n = headerLength bytes

        if n < 0 || bytes.Length < 8 then
            FuzzTextMutation.mutate random maxBytes bytes
        else
            let fileLength = bytes.Length

            match random.Next 6 with
            | 0 ->
                let lie =
                    [|
                        0UL
                        1UL
                        uint64 n - 1UL
                        uint64 n + 1UL
                        uint64 n + 8UL
                        uint64 (fileLength - 8)
                        uint64 (fileLength - 7)
                        uint64 fileLength
                        100_000_000UL
                        100_000_001UL
                        (1UL <<< 31)
                        (1UL <<< 32) + uint64 n
                        (1UL <<< 63)
                        UInt64.MaxValue
                        uint64 (random.NextInt64())
                    |]

                "header-length", withLength lie.[random.Next lie.Length] bytes
            | 1 ->
                let boundaries =
                    [|
                        0
                        1
                        7
                        8
                        9
                        8 + n / 2
                        8 + n - 1
                        8 + n
                        8 + n + 1
                        fileLength - 1
                        fileLength - 4
                    |]

                let cut = boundaries.[random.Next boundaries.Length] |> max 0 |> min fileLength
                "truncate-boundary", bytes.[.. cut - 1]
            | 2 when fileLength > 8 + n ->
                let c = Array.copy bytes

                for _ in 1 .. 1 + random.Next 3 do
                    let i = 8 + n + random.Next(fileLength - 8 - n)
                    c.[i] <- byte (random.Next 256)

                "data-bytes", c
            | 3 ->
                // Extra bytes after the data (a region that belongs to no tensor), or a data region cut short.
                if random.Next 2 = 0 then
                    "append", Array.append bytes (Array.create (1 + random.Next 16) 0uy)
                else
                    "truncate-data", bytes.[.. fileLength - 1 - random.Next(max 1 (fileLength - 8 - n))]
            | _ ->
                let header = bytes.[8 .. 8 + n - 1]
                let data = bytes.[8 + n ..]
                let name, mutated = FuzzTextMutation.mutate random maxBytes header
                // Half the time the length prefix follows the new header; otherwise it now lies.
                let consistent = random.Next 2 = 0

                let length = if consistent then uint64 mutated.Length else uint64 n

                let prefix = Array.zeroCreate<byte> 8
                BinaryPrimitives.WriteUInt64LittleEndian(Span prefix, length)

                ("header-" + name + (if consistent then "" else "(stale-length)")),
                Array.concat [ prefix; mutated; data ]

    /// tokens JSON: text mutations, or a fresh valid JSON of a huge chain (as many residues as maxBytes allows).
    let private tokensMutation (random: Random) (maxBytes: int) (bytes: byte[]) =
        if random.Next 20 = 0 then
            // About 20 bytes of JSON per residue.
            let residues = max 1 (maxBytes / 20)
            let chain = tokenChain random "huge.pdb" "A" (1 + random.Next residues)
            "huge-chain", Encoding.UTF8.GetBytes(TokensJson.toJson [| chain |])
        else
            FuzzTextMutation.mutate random maxBytes bytes

    /// One mutation (sometimes two in a row) of `bytes` for `format`, drawn from `random`: the mutation's name and
    /// the new bytes.
    let mutate (format: FuzzFormat) (random: Random) (maxInputBytes: int) (bytes: byte[]) : string * byte[] =
        let once (b: byte[]) =
            match format with
            | FuzzFormat.Pdb
            | FuzzFormat.Mmcif -> structureMutation random maxInputBytes b
            | FuzzFormat.Safetensors -> safetensorsMutation random maxInputBytes b
            | FuzzFormat.Tokens -> tokensMutation random maxInputBytes b

        let name, first = once bytes

        if random.Next 4 = 0 && first.Length < maxInputBytes then
            let name2, second = once first
            name + "+" + name2, second
        else
            name, first
