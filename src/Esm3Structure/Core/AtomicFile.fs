namespace Esm3Structure

open System
open System.IO

/// Writing a file so that readers see either the old file or the complete new one, never a partial file.
module AtomicFile =

    /// The temporary file `write` uses for `path`: `path + ".tmp-<pid>"` (same folder, so the rename stays on one
    /// file system).
    let tempPath (path: string) =
        Path.GetFullPath path + ".tmp-" + string Environment.ProcessId

    /// Writes `path` atomically: `body` writes into `path + ".tmp-<pid>"`, which is flushed to disk and then renamed
    /// over `path` (rename(2) on Linux replaces the target atomically). If anything fails, the temporary file is
    /// deleted, `path` is left as it was, and an `IOException` naming `path` is raised (the cause as inner exception; a
    /// missing folder is reported as such before anything is written).
    /// Two writers of the same path in one process must not run at the same time (they share the temp name).
    let write (path: string) (body: Stream -> unit) : unit =
        let target =
            try
                Path.GetFullPath path
            with e ->
                raise (IOException(sprintf "%s: cannot write: not a valid path (%s)" path e.Message, e))

        let temp = tempPath target
        let folder = Path.GetDirectoryName target

        if not (isNull folder || Directory.Exists folder) then
            raise (IOException(sprintf "%s: cannot write: no folder %s" path folder))

        try
            do
                use stream =
                    new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 <<< 20)

                body stream
                stream.Flush true

            File.Move(temp, target, true)
        with e ->
            try
                if File.Exists temp then
                    File.Delete temp
            with _ ->
                ()

            raise (IOException(sprintf "%s: cannot write: %s" path (e.Message.Replace(temp, target)), e))

    /// Writes `text` to `path` atomically as UTF-8 without a byte-order mark (see `write`; the folder must exist).
    let writeText (path: string) (text: string) : unit =
        write path (fun s ->
            let bytes = Text.UTF8Encoding(false).GetBytes text
            s.Write(bytes, 0, bytes.Length))
