module Esm3Structure.Tests.Scripts.ScriptTests

open System
open System.Diagnostics
open System.IO
open Expecto

/// The repository root (holding Research.sln), above the test binary.
let private root =
    let rec up (d: DirectoryInfo) =
        if isNull d then
            failwith "Research.sln not found"
        elif File.Exists(Path.Combine(d.FullName, "Research.sln")) then
            d.FullName
        else
            up d.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// Runs `dotnet fsi scripts/<script> args`; returns exit code, stdout, stderr.
let runScript (script: string) (args: string list) =
    let psi =
        ProcessStartInfo(
            "dotnet",
            [ "fsi"; Path.Combine(root, "scripts", script) ] @ args,
            WorkingDirectory = root,
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    p.ExitCode, out.Result, err.Result

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Scripts"
        [
            test "invariance.fsx --usage and -- --help print usage and exit 0" {
                for args in [ [ "--usage" ]; [ "--"; "--help" ] ] do
                    let code, out, _ = runScript "invariance.fsx" args
                    Expect.equal code 0 (sprintf "exit code for %A" args)
                    Expect.stringContains out "--motions" "usage lists the flags"
            }

            test "invariance.fsx: a bad flag and a missing folder each end with one line and a non-zero code" {
                let code, _, err = runScript "invariance.fsx" [ "--motions"; "many" ]
                Expect.equal code 2 "bad argument"
                Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
                let code, _, err = runScript "invariance.fsx" [ "--data"; "/nonexistent/folder" ]
                Expect.equal code 1 "missing folder"
                Expect.equal (err.Trim()) "invariance.fsx: /nonexistent/folder: no such folder" "names the folder"
            }

            test "invariance.fsx prints the table for the real small set" {
                let code, out, err = runScript "invariance.fsx" [ "--motions"; "2" ]
                Expect.equal code 0 err
                Expect.stringContains out "on 9 chains" "all nine small chains"
                Expect.stringContains out "max error (float64)" "table header"
            }
        ]
