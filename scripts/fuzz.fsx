// Fuzzes the readers (issue 8): mutates real PDB, mmCIF, safetensors and tokens-JSON inputs and checks that each
// case ends as a valid result or a typed InputException within the time limit and the allocation bound. Prints cases
// run, outcomes by kind, the slowest case and every failing case; exits 1 when any case fails.
//   dotnet fsi scripts/fuzz.fsx [--format pdb|mmcif|safetensors|tokens|all] [--cases N] [--seed N]
//       [--max-bytes N] [--time-limit MS] [--data DIR] [--million]
// --max-bytes bounds the inputs that mutations grow (repeated lines, huge chains). --million adds, per format, generated
// inputs of a million residues (PDB CA-only with hybrid-36 numbers, and one whose numbers wrap after 9999, which must
// be a typed error naming the line; mmCIF CA-only; safetensors [1e6, 3, 3]; a 1e6-token JSON), each under the
// allocation bound and a time limit of --time-limit plus 1 ms per kB, with time and allocation printed per case.
// --data is the shared data folder (default: ../shared/data beside the checkout).
#load "_load.fsx"

open System
open System.IO
open Argu
open Esm3Structure.App
open Esm3Structure.Checks

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Unique>] Format of name: string
    | [<Unique>] Cases of count: int
    | [<Unique>] Seed of seed: int
    | [<Unique>] Max_Bytes of bytes: int
    | [<Unique>] Time_Limit of ms: int
    | [<Unique>] Data of dir: string
    | Million

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Format _ -> "pdb, mmcif, safetensors, tokens or all (default all)"
            | Cases _ -> "cases per format (default 500)"
            | Seed _ -> "seed of the mutators (default 1)"
            | Max_Bytes _ -> "largest input the growing mutations make (default 262144)"
            | Time_Limit _ -> "time limit per case in milliseconds (default 2000)"
            | Data _ -> "the shared data folder with small/*.pdb and mmcif/*.cif (default ../shared/data)"
            | Million -> "also read generated inputs of a million residues per format (time and allocation per case)"

Cli.run<Args> "fuzz.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let formats =
        match args.GetResult(Format, defaultValue = "all") with
        | "all" -> FuzzMutators.formats
        | name ->
            match FuzzMutators.tryParseFormat name with
            | Some f -> [ f ]
            | None -> raise (ArgumentException(sprintf "--format: unknown format '%s'" name))

    let config =
        { FuzzConfig.defaults with
            Cases = args.GetResult(Cases, defaultValue = FuzzConfig.defaults.Cases)
            Seed = args.GetResult(Seed, defaultValue = FuzzConfig.defaults.Seed)
            MaxInputBytes = args.GetResult(Max_Bytes, defaultValue = FuzzConfig.defaults.MaxInputBytes)
            TimeLimitMs = args.GetResult(Time_Limit, defaultValue = FuzzConfig.defaults.TimeLimitMs)
        }

    let data =
        args.GetResult(Data, defaultValue = Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "shared", "data"))

    let scratch =
        Path.Combine(Path.GetTempPath(), "esm3-fuzz-" + Guid.NewGuid().ToString("N"))

    Directory.CreateDirectory scratch |> ignore

    let files (dir: string) (pattern: string) =
        if not (Directory.Exists dir) then
            raise (ArgumentException(sprintf "--data: no folder %s" dir))

        Directory.GetFiles(dir, pattern)
        |> Array.sort
        |> Array.map (fun p ->
            {
                Name = Path.GetFileName p
                Bytes = File.ReadAllBytes p
            })

    try
        let cases =
            [|
                for format in formats do
                    let seeds =
                        match format with
                        | FuzzFormat.Pdb -> files (Path.Combine(data, "small")) "*.pdb"
                        | FuzzFormat.Mmcif -> files (Path.Combine(data, "mmcif")) "*.cif"
                        | FuzzFormat.Safetensors -> [| FuzzMutators.safetensorsSeed scratch |]
                        | FuzzFormat.Tokens -> [| FuzzMutators.tokensSeed () |]

                    yield! Fuzz.run config format seeds scratch
            |]

        printf "%s" (Fuzz.summary cases)
        printfn "%d cases run" cases.Length

        let largeOk =
            if args.Contains Million then
                [
                    for format in formats do
                        for i, input in List.indexed (FuzzLarge.largeInputs format FuzzLarge.MillionResidues scratch) do
                            let case = Fuzz.runLarge config scratch i input
                            printfn "%s" (Fuzz.largeLine config input case)
                            Fuzz.largeOk input case
                ]
                |> List.forall id
            else
                true

        if largeOk && cases |> Array.forall (fun c -> Fuzz.isAcceptable c.Outcome) then
            0
        else
            1
    finally
        Directory.Delete(scratch, true))
|> exit
