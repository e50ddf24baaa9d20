module Esm3Structure.Tests.Core.AtomicFileTests

open System
open System.IO
open System.Text
open Expecto
open Esm3Structure
open Esm3Structure.Tests

/// A stream that passes writes on to `inner` until `limit` bytes have gone through, then fails like a full disk.
type FailingStream(inner: Stream, limit: int64) =
    inherit Stream()
    let mutable written = 0L
    override _.CanRead = false
    override _.CanSeek = false
    override _.CanWrite = true
    override _.Length = written

    override _.Position
        with get () = written
        and set _ = raise (NotSupportedException())

    override _.Flush() = inner.Flush()
    override _.Read(_: byte[], _: int, _: int) : int = raise (NotSupportedException())
    override _.Seek(_: int64, _: SeekOrigin) : int64 = raise (NotSupportedException())
    override _.SetLength(_: int64) = raise (NotSupportedException())

    override _.Write(buffer: byte[], offset: int, count: int) =
        let room = int (max 0L (min (int64 count) (limit - written)))
        inner.Write(buffer, offset, room)
        written <- written + int64 room

        if room < count then
            raise (IOException "No space left on device (simulated)")

[<Tests>]
let tests =
    testList
        "Core/AtomicFile"
        [
            test "a write that fails half way leaves the old file whole and no temporary file behind" {
                use dir = new TempDir()
                let path = dir.File "state.json"
                let old = String.replicate 100 "old contents\n"
                AtomicFile.write path (fun s -> s.Write(Encoding.ASCII.GetBytes old))

                let e =
                    Expect.throwsT<IOException>
                        (fun () ->
                            AtomicFile.write path (fun s ->
                                use failing = new FailingStream(s, 1000L)
                                let chunk = Encoding.ASCII.GetBytes(String.replicate 100 "NEW CONTENTS\n")
                                failing.Write(chunk, 0, chunk.Length)))
                        "the failure surfaces"

                ignore e
                Expect.equal (File.ReadAllText path) old "the old file is intact"
                Expect.sequenceEqual (Directory.GetFiles dir.Path) [| path |] "no temporary file left"
                Expect.isFalse (File.Exists(AtomicFile.tempPath path)) "the temp path is gone"
            }

            test "the failure names the target, not the temporary file" {
                use dir = new TempDir()
                let path = dir.File "x.bin"

                let message =
                    try
                        AtomicFile.write path (fun s ->
                            use failing = new FailingStream(s, 10L)
                            failing.Write(Array.zeroCreate 100, 0, 100))

                        ""
                    with :? IOException as e ->
                        e.Message

                Expect.stringContains message path "names the path"
                Expect.isFalse (message.Contains ".tmp-") "not the temporary file"
                Expect.isFalse (File.Exists path) "nothing written"
            }

            test "a complete write replaces the file whole" {
                use dir = new TempDir()
                let path = dir.File "y.txt"
                File.WriteAllText(path, "before")
                AtomicFile.write path (fun s -> s.Write(Encoding.ASCII.GetBytes "after"))
                Expect.equal (File.ReadAllText path) "after" "replaced"
                Expect.sequenceEqual (Directory.GetFiles dir.Path) [| path |] "only the file"
            }
        ]
