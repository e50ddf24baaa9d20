// The one entry for chores:  dotnet fsi build.fsx <target> [<target> ...]
// Targets: restore, build, test, format, format-check, clean, bench (see `dotnet fsi build.fsx help`).
// Plain F# with Process calls: no build dependencies of its own, so it runs on a fresh clone.

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions

let root = __SOURCE_DIRECTORY__
let configuration = "Release"
let testProject = Path.Combine(root, "tests", "Esm3Structure.Tests")
let csharpProject = Path.Combine(root, "tests", "Esm3Structure.CSharp")
let formatted = [ "src"; "tests"; "scripts"; "build.fsx" ]

/// Runs a command in the repository root, streaming its output; returns the exit code and the output lines.
let run (exe: string) (args: string list) =
    printfn "> %s %s" exe (String.Join(" ", args))

    let psi =
        ProcessStartInfo(exe, args, WorkingDirectory = root, UseShellExecute = false, RedirectStandardOutput = true)

    use p = Process.Start psi
    let lines = Collections.Generic.List<string>()

    let rec pump () =
        match p.StandardOutput.ReadLine() with
        | null -> ()
        | line ->
            Console.WriteLine line
            lines.Add line
            pump ()

    pump ()
    p.WaitForExit()
    p.ExitCode, List.ofSeq lines

let check (exe: string) (args: string list) =
    let code, _ = run exe args

    if code <> 0 then
        eprintfn "build.fsx: '%s %s' failed with exit code %d" exe (String.Join(" ", args)) code
        exit code

let restore () =
    check "dotnet" [ "tool"; "restore" ]
    check "dotnet" [ "paket"; "restore" ]

let build () =
    restore ()
    check "dotnet" [ "build"; "Research.sln"; "-c"; configuration; "--nologo"; "-v"; "minimal" ]

/// Runs the Expecto suite and the C# consumer check; prints one closing line `N passed, N failed` for both.
let test (extra: string list) =
    build ()

    let csCode, _ =
        run "dotnet" [ "run"; "--project"; csharpProject; "-c"; configuration; "--no-build" ]

    let testCode, lines =
        run
            "dotnet"
            ([ "run"; "--project"; testProject; "-c"; configuration; "--no-build"; "--" ]
             @ extra)

    let summary = Regex(@"^(\d+) passed, (\d+) failed$")

    let passed, failed =
        match
            lines
            |> List.rev
            |> List.tryPick (fun l -> let m = summary.Match(l.Trim()) in if m.Success then Some m else None)
        with
        | Some m -> int m.Groups.[1].Value, int m.Groups.[2].Value
        | None -> 0, 1

    let csPassed, csFailed = if csCode = 0 then 1, 0 else 0, 1
    printfn ""
    printfn "%d passed, %d failed" (passed + csPassed) (failed + csFailed)

    if testCode <> 0 || csCode <> 0 || failed + csFailed > 0 then
        exit 1

let fantomas (checkOnly: bool) =
    restore ()
    let args = [ "fantomas" ] @ (if checkOnly then [ "--check" ] else []) @ formatted
    let code, _ = run "dotnet" args

    if code <> 0 then
        if checkOnly then
            eprintfn "build.fsx: files are not formatted; run `dotnet fsi build.fsx format`"

        exit code

let clean () =
    for dir in
        Directory.EnumerateDirectories(root, "*", SearchOption.AllDirectories)
        |> Seq.toList do
        let name = Path.GetFileName dir

        if
            (name = "bin" || name = "obj")
            && Directory.Exists dir
            && not (dir.Contains "/.git/")
        then
            Directory.Delete(dir, true)

let help () =
    printfn
        """usage: dotnet fsi build.fsx <target> [<target> ...] [-- <test runner arguments>]
  restore        local tools (paket, fantomas) and packages
  build          restore, then build Research.sln (Release)
  test           build, then the C# consumer check and the Expecto suite; ends with `N passed, N failed`
  format         format F# sources with fantomas
  format-check   fail if any F# source is not formatted
  clean          delete bin/ and obj/ folders
  bench          build, then run scripts/bench.fsx"""

let argv = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray

let targets, passThrough =
    match List.tryFindIndex ((=) "--") argv with
    | Some i -> List.take i argv, List.skip (i + 1) argv
    | None -> argv, []

if targets.IsEmpty then
    help ()

for target in targets do
    match target with
    | "restore" -> restore ()
    | "build" -> build ()
    | "test" -> test passThrough
    | "format" -> fantomas false
    | "format-check" -> fantomas true
    | "clean" -> clean ()
    | "bench" ->
        build ()
        check "dotnet" ([ "fsi"; Path.Combine("scripts", "bench.fsx") ] @ passThrough)
    | "help"
    | "--help"
    | "-h" -> help ()
    | other ->
        eprintfn "build.fsx: unknown target '%s'" other
        help ()
        exit 2
