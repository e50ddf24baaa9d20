namespace Esm3Structure.Tests

open System
open System.IO

/// Locates `../shared/data` (beside the checkout) for golden tests. Override with ESM3_SHARED_DATA.
module Data =
    let private find () =
        match Environment.GetEnvironmentVariable "ESM3_SHARED_DATA" with
        | null
        | "" ->
            let rec up (dir: DirectoryInfo) =
                if isNull dir then
                    failwith "shared/data not found: set ESM3_SHARED_DATA or put ../shared beside the checkout"
                else
                    let candidate = Path.Combine(dir.FullName, "shared", "data")

                    if Directory.Exists candidate then
                        candidate
                    else
                        up dir.Parent

            up (DirectoryInfo AppContext.BaseDirectory)
        | d -> d

    /// The shared data folder.
    let root = lazy (find ())

    /// A path inside the shared data folder.
    let path (parts: string list) =
        Path.Combine(Array.ofList (root.Value :: parts))

    /// `small/<name>.pdb`
    let small (name: string) = path [ "small"; name + ".pdb" ]

    /// The names of the small full-atom chains (from small/index.tsv).
    let smallNames =
        lazy
            (File.ReadAllLines(path [ "small"; "index.tsv" ])
             |> Array.skip 1
             |> Array.filter (fun l -> l.Trim() <> "")
             |> Array.map (fun l -> l.Split('\t').[0].Replace(".pdb", "")))

/// Scratch files for a test, deleted at dispose.
type TempDir() =
    let dir =
        Path.Combine(Path.GetTempPath(), "esm3tests-" + Guid.NewGuid().ToString("N"))

    do Directory.CreateDirectory dir |> ignore
    member _.Path = dir
    member _.File(name: string) = Path.Combine(dir, name)

    interface IDisposable with
        member _.Dispose() =
            try
                Directory.Delete(dir, true)
            with _ ->
                ()

/// Scratch folders for tests.
[<AutoOpen>]
module Scratch =

    /// Runs `f` with a fresh temporary folder (a `TempDir`), deleted afterwards.
    let withTempDir (f: string -> 'a) : 'a =
        use dir = new TempDir()
        f dir.Path
