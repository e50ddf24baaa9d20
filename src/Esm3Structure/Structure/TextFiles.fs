namespace Esm3Structure.Structure

open System
open System.IO
open System.IO.Compression
open System.Text
open Esm3Structure

/// Reading and writing the text files that hold structures: plain or gzip (detected by the magic bytes 1f 8b),
/// with every failure reported as an `InputException` naming the file.
[<RequireQualifiedAccess>]
module TextFiles =

    let private crcTable =
        Array.init 256 (fun n ->
            let mutable c = uint32 n

            for _ in 1..8 do
                c <-
                    if c &&& 1u <> 0u then
                        0xEDB88320u ^^^ (c >>> 1)
                    else
                        c >>> 1

            c)

    /// Continues a CRC-32 register (pre-inverted, as `crc32` starts it) over `count` bytes of `data` from `offset`.
    let private crcUpdate (crc: uint32) (data: byte[]) (offset: int) (count: int) : uint32 =
        let mutable c = crc

        for i in offset .. offset + count - 1 do
            c <- crcTable.[int ((c ^^^ uint32 data.[i]) &&& 0xFFu)] ^^^ (c >>> 8)

        c

    /// CRC-32 (the gzip / zlib polynomial) of a byte array.
    let crc32 (data: byte[]) : uint32 =
        crcUpdate 0xFFFFFFFFu data 0 data.Length ^^^ 0xFFFFFFFFu

    /// True when the bytes start with the gzip magic number 1f 8b.
    let isGzip (bytes: byte[]) : bool =
        bytes.Length >= 2 && bytes.[0] = 0x1fuy && bytes.[1] = 0x8buy

    let private u32 (b: byte[]) (o: int) = BitConverter.ToUInt32(b, o)

    /// Deflate's largest compression ratio: a 258-byte match costs at least 2 bits (RFC 1951 §3.2.5), about 1032:1.
    /// No valid member inflates to more than this many times its compressed bytes.
    [<Literal>]
    let MaxDeflateRatio = 1032L

    /// Decompresses a gzip file (one or more members), checking each member's CRC-32 and length trailer, so that a
    /// stream cut short is an error rather than silently shorter text (.NET's GZipStream accepts truncated input).
    /// Memory: the output is inflated straight into one buffer, and a member is stored only up to the size the
    /// file's last trailer declares (the whole output of the usual one-member file; clamped to `MaxDeflateRatio` ×
    /// the compressed bytes). Output beyond that is only counted and CRC-checked, at most `MaxDeflateRatio` × the
    /// compressed bytes; such a member is stored (inflated a second time) only once its own trailer has matched.
    /// So a member whose trailer lies, a corrupt stream or a zip bomb costs no more memory than its trailer declares.
    let gunzip (file: string) (bytes: byte[]) : byte[] =
        let fail (offset: int) msg : 'a =
            InputError.raise file (InputLocation.Offset(int64 offset)) msg

        let n = bytes.Length
        // What the last trailer declares (mod 2^32): the size of the last member.
        let declared = if n >= 18 then int64 (u32 bytes (n - 4)) else 0L
        let output = ref Array.empty<byte>
        let size = ref 0
        let scratch = ref Array.empty<byte>
        let mutable pos = 0
        let mutable fin = false

        // Room for `total` bytes of output, keeping the first `keep`: grows by doubling, never beyond `cap`.
        let ensure (keep: int) (total: int64) (cap: int64) =
            if total > int64 output.Value.Length then
                let grown =
                    Array.zeroCreate<byte>(int (min cap (max total (2L * int64 output.Value.Length))))

                Buffer.BlockCopy(output.Value, 0, grown, 0, keep)
                output.Value <- grown

        // Inflates the deflate data at `p` to its end, storing the first `store` bytes at output.[size ..] and only
        // counting the rest; fails beyond `limit` bytes. Returns the byte count and the CRC-32.
        let inflate (p: int) (store: int64) (limit: int64) : int64 * uint32 =
            try
                use input = new MemoryStream(bytes, p, n - p, false)
                use inflater = new DeflateStream(input, CompressionMode.Decompress)
                let mutable count = 0L
                let mutable crc = 0xFFFFFFFFu
                let mutable more = true

                while more do
                    let read =
                        if count < store then
                            // Room for all `store` bytes at once: one buffer of the declared size.
                            ensure (size.Value + int count) (int64 size.Value + store) (int64 size.Value + store)

                            let at = size.Value + int count

                            let k =
                                inflater.Read(
                                    output.Value,
                                    at,
                                    int (min (int64 (output.Value.Length - at)) (store - count))
                                )

                            crc <- crcUpdate crc output.Value at k
                            k
                        else
                            if scratch.Value.Length = 0 then
                                scratch.Value <- Array.zeroCreate 65536

                            let k = inflater.Read(scratch.Value, 0, scratch.Value.Length)
                            crc <- crcUpdate crc scratch.Value 0 k
                            k

                    if read = 0 then
                        more <- false
                    else
                        count <- count + int64 read

                        if count > limit then
                            if limit < MaxDeflateRatio * int64 (n - p) then
                                fail p "gzip stream is too large to read (its output would exceed 2 GB)"
                            else
                                fail
                                    p
                                    (sprintf
                                        "gzip stream is corrupt (inflates to more than %d times its compressed size)"
                                        MaxDeflateRatio)

                count, crc ^^^ 0xFFFFFFFFu
            with
            | :? InvalidDataException
            | :? IOException as e -> fail p (sprintf "gzip stream is corrupt (%s)" e.Message)

        while not fin do
            // Member header (RFC 1952 §2.3).
            if n - pos < 10 then
                fail n "gzip stream is truncated (incomplete header)"

            if bytes.[pos + 2] <> 8uy then
                fail (pos + 2) "gzip stream uses an unknown compression method"

            let flags = int bytes.[pos + 3]
            let mutable p = pos + 10

            let need k =
                if p + k > n then
                    fail n "gzip stream is truncated (incomplete header)"

            if flags &&& 4 <> 0 then
                need 2
                p <- p + 2 + int (BitConverter.ToUInt16(bytes, p))
                need 0

            for bit in [ 8; 16 ] do
                if flags &&& bit <> 0 then
                    while (need 1
                           bytes.[p] <> 0uy) do
                        p <- p + 1

                    p <- p + 1

            if flags &&& 2 <> 0 then
                p <- p + 2
                need 0

            let limit =
                min (MaxDeflateRatio * int64 (n - p)) (int64 Array.MaxLength - int64 size.Value)

            let store = min declared limit
            let count, crc = inflate p store limit

            // The trailer holds CRC-32 and length mod 2^32 of the member's data. The deflate stream does not report
            // where it ended, so take the first place after `p` where the trailer matches.
            let matches q =
                q + 8 <= n && u32 bytes q = crc && u32 bytes (q + 4) = uint32 count

            let crcBytes = BitConverter.GetBytes crc
            let mutable trailer = -1
            let mutable from = p

            while trailer < 0 && from <= n - 8 do
                match ReadOnlySpan(bytes, from, n - from).IndexOf(ReadOnlySpan crcBytes) with
                | -1 -> from <- n
                | i when matches (from + i) -> trailer <- from + i
                | i -> from <- from + i + 1

            if trailer < 0 then
                fail n "gzip stream is truncated or corrupt (CRC-32/length trailer does not match)"

            if count > store then
                // Verified now: store the member (inflated again, into exactly the room it needs).
                ensure size.Value (int64 size.Value + count) (int64 size.Value + count)
                inflate p count count |> ignore

            size.Value <- size.Value + int count
            pos <- trailer + 8
            // Further members follow only when the next bytes are a gzip header; anything else is ignored,
            // as gzip itself does with trailing zero padding.
            fin <- not (n - pos >= 2 && bytes.[pos] = 0x1fuy && bytes.[pos + 1] = 0x8buy)

        if size.Value = output.Value.Length then
            output.Value
        else
            output.Value.AsSpan(0, size.Value).ToArray()

    /// Decodes bytes as UTF-8 text (a leading BOM is dropped; bytes that are not UTF-8 become U+FFFD).
    let decode (bytes: byte[]) : string =
        let text = Encoding.UTF8.GetString bytes

        if text.Length > 0 && text.[0] = '\uFEFF' then
            text.Substring 1
        else
            text

    /// Reads a file as text, decompressing it when it starts with the gzip magic bytes.
    /// Raises `InputException` when the file cannot be read or the gzip stream is corrupt or truncated.
    let read (path: string) : string =
        let bytes =
            try
                File.ReadAllBytes path
            with
            | :? IOException
            | :? UnauthorizedAccessException
            | :? ArgumentException
            | :? NotSupportedException as e ->
                InputError.raise path InputLocation.Whole (sprintf "cannot read the file (%s)" e.Message)

        decode (if isGzip bytes then gunzip path bytes else bytes)

    /// Checks that text is not empty and holds no binary data (control characters other than tab, CR, LF, FF, VT).
    /// Raises `InputException` naming the file and the first offending line.
    let check (file: string) (text: string) : unit =
        if String.IsNullOrWhiteSpace text then
            InputError.raise file InputLocation.Whole "empty file"

        let mutable line = 1

        for i in 0 .. text.Length - 1 do
            let c = text.[i]

            if c = '\n' then
                line <- line + 1
            elif c < ' ' && c <> '\t' && c <> '\r' && c <> '\f' && c <> '\v' then
                InputError.raise
                    file
                    (InputLocation.Line line)
                    (sprintf "binary or non-text data (character 0x%02x)" (int c))

    /// The path without a trailing ".gz" (any case): the name the content's format is read from.
    let withoutGz (path: string) : string =
        if path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) then
            path.Substring(0, path.Length - 3)
        else
            path

    /// The file name without folders and without the extensions .gz, .pdb, .ent, .cif, .mmcif (e.g. "1ubq_A").
    let stem (path: string) : string =
        let mutable name = Path.GetFileName path

        let strip (ext: string) =
            if
                name.EndsWith(ext, StringComparison.OrdinalIgnoreCase)
                && name.Length > ext.Length
            then
                name <- name.Substring(0, name.Length - ext.Length)

        strip ".gz"

        for ext in [ ".pdb"; ".ent"; ".cif"; ".mmcif" ] do
            strip ext

        name

    /// Writes text atomically: to a temporary file in the same folder, then renamed over `path`.
    /// A path ending in ".gz" is written gzip-compressed.
    let writeAtomic (path: string) (text: string) : unit =
        AtomicFile.write path (fun file ->
            let bytes = Encoding.ASCII.GetBytes text

            if path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) then
                use gz = new GZipStream(file, CompressionLevel.Optimal, true)
                gz.Write(bytes, 0, bytes.Length)
            else
                file.Write(bytes, 0, bytes.Length))
