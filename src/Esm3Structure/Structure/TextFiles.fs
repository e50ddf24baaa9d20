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

    /// CRC-32 (the gzip / zlib polynomial) of a byte array.
    let crc32 (data: byte[]) : uint32 =
        let mutable c = 0xFFFFFFFFu

        for b in data do
            c <- crcTable.[int ((c ^^^ uint32 b) &&& 0xFFu)] ^^^ (c >>> 8)

        c ^^^ 0xFFFFFFFFu

    /// True when the bytes start with the gzip magic number 1f 8b.
    let isGzip (bytes: byte[]) : bool =
        bytes.Length >= 2 && bytes.[0] = 0x1fuy && bytes.[1] = 0x8buy

    let private u32 (b: byte[]) (o: int) = BitConverter.ToUInt32(b, o)

    /// Decompresses a gzip file (one or more members), checking each member's CRC-32 and length trailer, so that a
    /// stream cut short is an error rather than silently shorter text (.NET's GZipStream accepts truncated input).
    let gunzip (file: string) (bytes: byte[]) : byte[] =
        let fail (offset: int) msg : 'a =
            InputError.raise file (InputLocation.Offset(int64 offset)) msg

        let output = new MemoryStream()
        let mutable pos = 0
        let mutable fin = false

        while not fin do
            // Member header (RFC 1952 §2.3).
            if bytes.Length - pos < 10 then
                fail bytes.Length "gzip stream is truncated (incomplete header)"

            if bytes.[pos + 2] <> 8uy then
                fail (pos + 2) "gzip stream uses an unknown compression method"

            let flags = int bytes.[pos + 3]
            let mutable p = pos + 10

            let need k =
                if p + k > bytes.Length then
                    fail bytes.Length "gzip stream is truncated (incomplete header)"

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

            let data =
                try
                    use input = new MemoryStream(bytes, p, bytes.Length - p, false)
                    use inflate = new DeflateStream(input, CompressionMode.Decompress)
                    use out = new MemoryStream()
                    inflate.CopyTo out
                    out.ToArray()
                with
                | :? InvalidDataException
                | :? IOException as e -> fail p (sprintf "gzip stream is corrupt (%s)" e.Message)

            // The trailer holds CRC-32 and length mod 2^32 of the member's data. The deflate stream does not report
            // where it ended, so look for the trailer: at the very end (one member) or the first match after `p`.
            let crc = crc32 data
            let size = uint32 data.LongLength

            let matches q =
                q >= p && q + 8 <= bytes.Length && u32 bytes q = crc && u32 bytes (q + 4) = size

            let trailer =
                if matches (bytes.Length - 8) then
                    Some(bytes.Length - 8)
                else
                    seq { p .. bytes.Length - 8 } |> Seq.tryFind matches

            match trailer with
            | None -> fail bytes.Length "gzip stream is truncated or corrupt (CRC-32/length trailer does not match)"
            | Some q ->
                output.Write(data, 0, data.Length)
                pos <- q + 8
                // Further members follow only when the next bytes are a gzip header; anything else is ignored,
                // as gzip itself does with trailing zero padding.
                fin <- not (bytes.Length - pos >= 2 && bytes.[pos] = 0x1fuy && bytes.[pos + 1] = 0x8buy)

        output.ToArray()

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
