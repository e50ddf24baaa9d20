module Esm3Structure.Tests.Structure.TextFilesTests

open System
open System.Buffers.Binary
open System.Text
open Expecto
open Esm3Structure
open Esm3Structure.Structure
open Esm3Structure.Tests.StructureFixtures

/// Runs `f` and returns its result (or exception) with the managed bytes it allocated on this thread.
let private measured (f: unit -> 'a) : Result<'a, exn> * int64 =
    let before = GC.GetAllocatedBytesForCurrentThread()

    let result =
        try
            Ok(f ())
        with e ->
            Error e

    result, GC.GetAllocatedBytesForCurrentThread() - before

/// The bytes with the last trailer's ISIZE (the final four bytes) replaced.
let private withIsize (size: uint32) (gz: byte[]) =
    let c = Array.copy gz
    BinaryPrimitives.WriteUInt32LittleEndian(Span(c, c.Length - 4, 4), size)
    c

/// Expects an `InputException` naming `file` at a byte offset whose message contains `text`.
let private expectGzipError (what: string) (file: string) (text: string) (result: Result<byte[], exn>) =
    match result with
    | Error(:? InputException as e) ->
        Expect.equal e.Error.File file (what + ": names the file")

        match e.Error.Location with
        | InputLocation.Offset _ -> ()
        | l -> failtestf "%s: error at %O, expected a byte offset" what l

        Expect.stringContains e.Message text what
    | Error e -> failtestf "%s: expected an InputException, got %s: %s" what (e.GetType().Name) e.Message
    | Ok b -> failtestf "%s: expected an error, read %d bytes" what b.Length

/// An empty gzip member as bgzip ends its files with (header, an empty final deflate block, CRC 0, ISIZE 0); .NET's
/// GZipStream writes nothing at all for empty input.
let private emptyMember =
    [|
        0x1fuy
        0x8buy
        8uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0xffuy
        3uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0uy
        0uy
    |]

/// 16 MiB of one repeated PDB-like line: compresses about 160:1.
let private bomb =
    lazy
        (let line =
            Encoding.ASCII.GetBytes "ATOM      1  CA  GLY A   1       0.000   0.000   0.000  1.00  0.00           C  \n"

         Array.init (16 <<< 20) (fun i -> line.[i % line.Length]))

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Structure/TextFiles"
        [
            test "a member whose trailer understates its size is an error and is never stored beyond that size" {
                let data = bomb.Value
                let gz = gzip data
                let lying = withIsize 100u gz
                let result, allocated = measured (fun () -> TextFiles.gunzip "lying.gz" lying)
                expectGzipError "ISIZE 100 for 16 MiB" "lying.gz" "trailer does not match" result
                // The old reader inflated the whole member, then copied it twice (about 50 MB here).
                let bound = 64L * int64 lying.Length + (1L <<< 20)

                Expect.isLessThan
                    allocated
                    bound
                    (sprintf "allocated %d bytes for a %d-byte file" allocated lying.Length)
            }

            test "a member whose trailer overstates its size is an error and allocates in proportion to the input" {
                let data = Encoding.ASCII.GetBytes(String.replicate 40 "HELLO WORLD\n")
                let gz = withIsize 0xFFFFFFF0u (gzip data)
                let result, allocated = measured (fun () -> TextFiles.gunzip "over.gz" gz)
                expectGzipError "ISIZE 4 GB for 480 bytes" "over.gz" "trailer does not match" result
                Expect.isLessThan allocated (1L <<< 20) (sprintf "allocated %d bytes" allocated)
            }

            test "a zip bomb with an honest trailer inflates into exactly one buffer of its size" {
                let data = bomb.Value
                let gz = gzip data
                Expect.isLessThan gz.Length (data.Length / 100) "compresses more than 100:1"
                let result, allocated = measured (fun () -> TextFiles.gunzip "bomb.gz" gz)

                match result with
                | Ok out -> Expect.isTrue (out.AsSpan().SequenceEqual(ReadOnlySpan data)) "the data"
                | Error e -> failtestf "expected the data, got %s" e.Message

                Expect.isLessThan
                    allocated
                    (int64 data.Length + (1L <<< 20))
                    (sprintf "allocated %d bytes for %d bytes of output" allocated data.Length)
            }

            test "members read in order: identical members, a larger first member, and bgzip's empty end member" {
                let a = Encoding.ASCII.GetBytes(String.replicate 300 "first member line\n")
                let b = Encoding.ASCII.GetBytes "second\n"
                let file = Array.concat [ gzip a; gzip a; gzip b; emptyMember ]
                let out = TextFiles.gunzip "multi.gz" file
                Expect.equal out (Array.concat [ a; a; b ]) "a, a, b"
                // Trailing zero padding after the last member is ignored, as gzip does.
                let padded = Array.append (gzip a) (Array.zeroCreate 37)
                Expect.equal (TextFiles.gunzip "padded.gz" padded) a "padding ignored"
            }

            test "a flipped CRC, a flipped data byte and a cut stream are errors at byte offsets" {
                let data =
                    Encoding.ASCII.GetBytes(String.replicate 200 "ATOM line with some text 12345\n")

                let gz = gzip data
                let crcFlipped = Array.copy gz
                crcFlipped.[gz.Length - 8] <- crcFlipped.[gz.Length - 8] ^^^ 1uy

                let check what (bytes: byte[]) text =
                    measured (fun () -> TextFiles.gunzip (what + ".gz") bytes)
                    |> fst
                    |> expectGzipError what (what + ".gz") text

                check "crc" crcFlipped "trailer does not match"
                check "cut" gz.[.. gz.Length - 5] "trailer does not match"
                check "header" gz.[..6] "incomplete header"
                let dataFlipped = Array.copy gz
                dataFlipped.[gz.Length / 2] <- dataFlipped.[gz.Length / 2] ^^^ 0x10uy
                check "data" dataFlipped "gzip stream is"
                let method = Array.copy gz
                method.[2] <- 7uy
                check "method" method "unknown compression method"
            }
        ]
