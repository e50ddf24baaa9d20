module Esm3Structure.Tests.Scripts.ScriptTests

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp
open Esm3Structure.Models
open Esm3Structure.App
open Esm3Structure.Tests

/// The repository root (holding Research.sln), above the test binary.
let private root = Esm3Structure.App.Cli.repositoryRoot AppContext.BaseDirectory

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

/// A temporary folder with small random encoder and decoder files for the tokenize/decode scripts (deleted when
/// the test process exits).
let private tokenizerFiles =
    lazy
        (let dir = (new TempDir()).Path

         AppDomain.CurrentDomain.ProcessExit.Add(fun _ ->
             try
                 Directory.Delete(dir, true)
             with _ ->
                 ())

         let enc = Path.Combine(dir, "encoder.safetensors")
         let dec = Path.Combine(dir, "decoder.safetensors")
         Esm3Structure.Tests.TokenizerFixtures.writeEncoder enc 11UL
         Esm3Structure.Tests.TokenizerFixtures.writeDecoder dec 12UL
         dir, enc, dec)

/// Expects exit code 1 and exactly one stderr line, equal to `expected`.
let private oneLineError (what: string) (expected: string) (code: int, _out: string, err: string) =
    Expect.equal code 1 (what + ": exit code; stderr: " + err)
    Expect.equal (err.Trim().Split('\n').Length) 1 (what + ": one line")
    Expect.equal (err.Trim()) expected what

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

            test "tokenize.fsx --usage and decode.fsx -- --help print usage and exit 0" {
                let code, out, _ = runScript "tokenize.fsx" [ "--usage" ]
                Expect.equal code 0 "tokenize exit code"
                Expect.stringContains out "--pdb" "tokenize usage lists the flags"
                let code, out, _ = runScript "decode.fsx" [ "--"; "--help" ]
                Expect.equal code 0 "decode exit code"
                Expect.stringContains out "--tokens" "decode usage lists the flags"
            }

            test
                "tokenize.fsx and decode.fsx on ESM's own .pth files: real chains to JSON with ESM's tokens, and ESM's tokens back to a PDB with ESM's coordinates (decode.fsx --heads 4 on a 24-wide decoder)" {
                let dir, _, _ = tokenizerFiles.Value
                let esm = TokenizerParity.file
                let json = Path.Combine(dir, "tokens.json")
                let ubq = Esm3Structure.Tests.Data.small "1ubq_A"
                let other = Esm3Structure.Tests.Data.small "1mvo_A"

                let code, _, err =
                    runScript
                        "tokenize.fsx"
                        [ "--pdb"; ubq; "--pdb"; other; "--weights"; esm "encoder.pth"; "--out"; json ]

                Expect.equal code 0 err
                let chains = TokensJson.readJson json
                Expect.equal chains.Length 2 "two --pdb: an array of two"
                let ubqChain = Esm3Structure.Structure.StructureFile.read ubq None
                Expect.equal chains.[0].File ubq "file"
                Expect.equal chains.[0].Sequence ubqChain.Sequence "sequence"
                Expect.equal chains.[0].Tokens.Length ubqChain.Sequence.Length "one token per residue"

                use _ = TorchSharp.torch.NewDisposeScope()
                let io = TokenizerParity.readIo ()
                use encoder = StructureEncoderCheckpoint.load (esm "encoder.pth")

                let clear, wrong =
                    TokenizerParity.esmTokenMismatches
                        io
                        ""
                        TokenizerParity.u32
                        encoder
                        (TorchSharp.torch.tensor(chains.[0].Tokens).unsqueeze 0L)

                Expect.isGreaterThan clear 50 "tokens clear of a tie (beyond the derived bound)"
                Expect.equal wrong 0 "ESM's encoder's tokens"

                // ESM's tokens (the fixture's), decoded by ESM's 24-wide decoder: its coordinates, to the PDB's 3 decimals.
                let esmTokens =
                    io.["enc.tokens"].select(0L, 0L).contiguous().data<int64>().ToArray()

                let one = Path.Combine(dir, "one.json")
                TokensJson.writeJson one [| { chains.[0] with Tokens = esmTokens } |]
                let pdb = Path.Combine(dir, "decoded.pdb")

                let code, _, err =
                    runScript
                        "decode.fsx"
                        [
                            "--tokens"
                            one
                            "--weights"
                            esm "decoder-d96-h4.pth"
                            "--heads"
                            "4"
                            "--out"
                            pdb
                        ]

                Expect.equal code 0 err
                let text = File.ReadAllText pdb
                Expect.isMatch (text.Split('\n').[0]) @"^REMARK 250 PTM: \d\.\d{4}$" "PTM remark, four decimals"
                let back = Esm3Structure.Structure.Pdb.parse "decoded" text None
                Expect.equal back.Sequence ubqChain.Sequence "residues"
                Expect.equal back.ResidueIndex ubqChain.ResidueIndex "numbering"
                let bb = io.["decoder-d96-h4.bb"]
                let scale = bb.abs().max().ToDouble()
                // ESM's float32 coordinates and ours differ by rounding (TokenizerParity.tolerance), then the PDB
                // rounds to 0.0005 Å.
                let tol = 0.0005 + TokenizerParity.tolerance 96L TokenizerParity.u32 scale

                for i in 0 .. back.Sequence.Length - 1 do
                    for a in 0..2 do
                        Expect.isTrue back.Atom37Mask.[i, a] "N, CA, C present"

                        for x in 0..2 do
                            let ours = back.Atom37.[i, a, x]
                            let theirs = bb.[0L, int64 i + 1L, int64 a, int64 x].ToDouble()

                            if abs (float ours - theirs) > tol then
                                failtestf
                                    "residue %d atom %d axis %d: PDB %.3f, ESM %.4f (tolerance %.4f)"
                                    i
                                    a
                                    x
                                    ours
                                    theirs
                                    tol

                        let b = back.BFactors.[i, a]
                        Expect.isTrue (b >= 0.0f && b <= 100.0f) (sprintf "B-factor %g in [0, 100]" b)
            }

            test
                "convert.fsx: a .pth written by PyTorch (float32, float16, bfloat16, ...) to safetensors and back, every tensor bit for bit" {
                let dir, _, _ = tokenizerFiles.Value

                let source =
                    Path.Combine(AppContext.BaseDirectory, "Reference", "pth", "dtypes.pth")

                let st = Path.Combine(dir, "dtypes.safetensors")
                let back = Path.Combine(dir, "dtypes-back.pth")
                let code, out, err = runScript "convert.fsx" [ "--in"; source; "--out"; st ]
                Expect.equal code 0 err
                Expect.stringContains out "(PyTorch) -> " "says what it converted"
                let code, _, err = runScript "convert.fsx" [ "--in"; st; "--out"; back ]
                Expect.equal code 0 err
                Expect.isTrue (Esm3Structure.Io.TensorFile.isPyTorch back) "a PyTorch checkpoint"

                use _ = torch.NewDisposeScope()

                // In name order: safetensors stores its tensors sorted by name.
                let bits (path: string) =
                    [
                        for name, t in (Esm3Structure.Io.TensorFile.read path).Tensors ->
                            name, t.dtype, t.shape, t.bytes.ToArray()
                    ]
                    |> List.sortBy (fun (name, _, _, _) -> name)

                let original = bits source
                Expect.isGreaterThan original.Length 2 "several tensors"
                Expect.equal (bits st) original "safetensors: names, dtypes, shapes, bytes"
                Expect.equal (bits back) original "and back to .pth"
            }

            test "bench.fsx --quick, section tokenize: a real chain through a random and a given encoder" {
                let _, enc, _ = tokenizerFiles.Value

                let code, out, err =
                    runScript
                        "bench.fsx"
                        [
                            "--quick"
                            "--sections"
                            "tokenize"
                            "--chain-lengths"
                            "40"
                            "--repeats"
                            "1"
                            "--weights"
                            enc
                        ]

                Expect.equal code 0 err
                Expect.stringContains out "| encoder | L | chains |" "table header"

                Expect.isMatch
                    out
                    @"\| d 64, V 8 \(random init\) \| 40 \| \w+ 1–40 \| [0-9.]+ \|"
                    "the random encoder's row"

                Expect.isMatch out @"\| encoder\.safetensors \| 40 \| \w+ 1–40 \| [0-9.]+ \|" "the given encoder's row"
                Expect.stringContains out "of the matmul ceiling" "summary"
            }

            test
                "tokenize.fsx: a missing file and an absent chain are one-line errors; no --weights means the shipped model" {
                let _, enc, _ = tokenizerFiles.Value
                let ubq = Esm3Structure.Tests.Data.small "1ubq_A"

                runScript "tokenize.fsx" [ "--pdb"; "/nonexistent/x.pdb"; "--weights"; enc ]
                |> oneLineError
                    "missing file"
                    "tokenize.fsx: /nonexistent/x.pdb: cannot read the file (Could not find a part of the path '/nonexistent/x.pdb'.)"

                runScript "tokenize.fsx" [ "--pdb"; ubq; "--chain"; "Z"; "--weights"; enc ]
                |> oneLineError
                    "absent chain"
                    (sprintf "tokenize.fsx: %s, field 'chain': chain 'Z' not found; chains present: 'A'" ubq)

                // no --weights: the shipped model
                let code, out, err = runScript "tokenize.fsx" [ "--pdb"; ubq ]
                Expect.equal code 0 ("default weights: exit code; stderr: " + err)
                use doc = System.Text.Json.JsonDocument.Parse out
                let tokens = doc.RootElement.GetProperty("structure_tokens")
                Expect.equal (tokens.GetArrayLength()) 76 "one token per residue"

                let codes =
                    use shipped =
                        StructureEncoderCheckpoint.load (Path.Combine(root, ModelFiles.DefaultEncoderPath))

                    shipped.Config.Quantizer.Codes

                for t in tokens.EnumerateArray() do
                    Expect.isTrue (t.GetInt64() >= 0L && t.GetInt64() < codes) "a code of the shipped codebook"
            }

            test
                "tokenize.fsx and decode.fsx: wrong format, empty chain, bad checkpoint, bad tokens and an unwritable output are one-line errors; --verbose adds the stack trace" {
                let dir, enc, dec = tokenizerFiles.Value

                let file name (text: string) =
                    let p = Path.Combine(dir, name)
                    File.WriteAllText(p, text)
                    p

                // wrong format: a text file that is neither PDB nor mmCIF
                let notStructure = file "notes.txt" "hello, this is not a structure\n"

                runScript "tokenize.fsx" [ "--pdb"; notStructure; "--weights"; enc ]
                |> oneLineError
                    "wrong format"
                    (sprintf
                        "tokenize.fsx: %s: not a PDB or mmCIF file (no line starts with a PDB record name, none with 'data_')"
                        notStructure)

                // empty chain: a PDB without ATOM records
                let empty = file "empty.pdb" "HEADER    EMPTY\nEND\n"

                runScript "tokenize.fsx" [ "--pdb"; empty; "--weights"; enc ]
                |> oneLineError "empty chain" (sprintf "tokenize.fsx: %s: no ATOM or HETATM records" empty)

                // checkpoint: one tensor removed, one tensor mis-shaped
                let ubq = Esm3Structure.Tests.Data.small "1ubq_A"

                let missingName, reshapedName, reshapedSize, missing, reshaped =
                    use _ = TorchSharp.torch.NewDisposeScope()
                    let f = Esm3Structure.Io.Safetensors.read enc
                    let missingName = fst f.Tensors.Head

                    let reshapedName = f.Tensors |> List.find (fun (_, t) -> t.dim () >= 2L) |> fst

                    let missing = Path.Combine(dir, "encoder-missing.safetensors")
                    Esm3Structure.Io.Safetensors.write missing f.Tensors.Tail null
                    let reshaped = Path.Combine(dir, "encoder-reshaped.safetensors")

                    Esm3Structure.Io.Safetensors.write
                        reshaped
                        (f.Tensors
                         |> List.map (fun (n, t) -> n, (if n = reshapedName then t.flatten () else t)))
                        null

                    let reshapedSize =
                        f.Tensors
                        |> List.find (fun (n, _) -> n = reshapedName)
                        |> snd
                        |> fun t -> t.numel ()

                    missingName, reshapedName, reshapedSize, missing, reshaped

                runScript "tokenize.fsx" [ "--pdb"; ubq; "--weights"; missing ]
                |> oneLineError
                    "missing tensor"
                    (sprintf
                        "tokenize.fsx: %s: not a structure encoder with the inferred sizes (d 24, 4 vector heads, 2 layers, 64 × 8 codes): '%s' is missing"
                        missing
                        missingName)

                runScript "tokenize.fsx" [ "--pdb"; ubq; "--weights"; reshaped ]
                |> oneLineError
                    "mis-shaped tensor"
                    (sprintf
                        "tokenize.fsx: %s, field '%s': expected a non-empty 2-D tensor, got shape [%d]"
                        reshaped
                        reshapedName
                        reshapedSize)

                // tokens: a token out of range, sequence and token lengths that disagree
                let tokensJson (tokens: string) (sequence: string) =
                    sprintf
                        "{\"file\": \"x.pdb\", \"chain\": \"A\", \"sequence\": \"%s\", \"residue_index\": [1, 2, 3], \"structure_tokens\": [%s]}"
                        sequence
                        tokens

                let outOfRange = file "range.json" (tokensJson "1, 5000, 2" "MKV")
                let pdb = Path.Combine(dir, "out.pdb")

                let rangeLine =
                    sprintf
                        "decode.fsx: %s, field 'structure_tokens[1]': 5000 is not a structure token (expected a code 0 … 4095, or 4096 for a residue without backbone)"
                        outOfRange

                runScript "decode.fsx" [ "--tokens"; outOfRange; "--weights"; dec; "--out"; pdb ]
                |> oneLineError "token out of range" rangeLine

                let lengths = file "lengths.json" (tokensJson "1, 2, 3" "MKVL")

                runScript "decode.fsx" [ "--tokens"; lengths; "--weights"; dec; "--out"; pdb ]
                |> oneLineError
                    "lengths disagree"
                    (sprintf "decode.fsx: %s, field 'sequence': has 4 letters but structure_tokens has 3" lengths)

                // an output path that cannot be written
                let good = file "good.json" (tokensJson "1, 2, 3" "MKV")

                runScript "decode.fsx" [ "--tokens"; good; "--weights"; dec; "--out"; "/nonexistent-dir/x.pdb" ]
                |> oneLineError
                    "unwritable output"
                    "decode.fsx: /nonexistent-dir/x.pdb: cannot write: no folder /nonexistent-dir"

                // --verbose: the same line first, then the stack trace
                let code, _, err =
                    runScript "decode.fsx" [ "--tokens"; outOfRange; "--weights"; dec; "--out"; pdb; "--verbose" ]

                Expect.equal code 1 "--verbose: exit code"
                let lines = err.Trim().Split('\n')
                Expect.equal lines.[0] rangeLine "--verbose: the one line first"
                Expect.isTrue (lines.Length > 2) "--verbose: more lines follow"

                Expect.isTrue
                    (lines |> Array.exists (fun l -> l.TrimStart().StartsWith "at "))
                    "--verbose: a stack trace"
            }

            test
                "roundtrip.fsx (the README's main command) prints the tokens and the round trip's RMSD, LDDT-CA and TM-score" {
                let code, out, err = runScript "roundtrip.fsx" []
                Expect.equal code 0 ("exit code; stderr: " + err)
                let lines = out.Trim().Split('\n')
                let first = lines |> Array.find (fun l -> l.StartsWith "1ubq_A")
                Expect.stringContains first "76 residues" "the chain"

                let m =
                    Text.RegularExpressions.Regex.Match(
                        first,
                        @"backbone RMSD\s+([0-9.]+) Å\s+LDDT-CA ([0-9.]+)\s+TM-score ([0-9.]+)"
                    )

                Expect.isTrue m.Success ("RMSD, LDDT-CA and TM-score printed: " + first)

                let rmsd, lddt, tm =
                    float m.Groups.[1].Value, float m.Groups.[2].Value, float m.Groups.[3].Value

                Expect.isTrue (rmsd > 0.0 && Double.IsFinite rmsd) "a finite RMSD"
                Expect.isTrue (lddt >= 0.0 && lddt <= 1.0) "LDDT-CA in [0, 1]"
                Expect.isTrue (tm > 0.0 && tm <= 1.0) "TM-score in (0, 1]"
                let tokens = lines |> Array.find (fun l -> l.StartsWith "structure tokens:")
                Expect.equal (tokens.Substring(17).Trim().Split(' ').Length) 76 "76 tokens"
            }

            test "tracks.fsx prints every track of a real chain as one JSON object" {
                let code, out, err =
                    runScript "tracks.fsx" [ "--pdb"; Esm3Structure.Tests.Data.small "1ubq_A" ]

                Expect.equal code 0 ("exit code; stderr: " + err)
                use doc = System.Text.Json.JsonDocument.Parse out
                let root = doc.RootElement
                Expect.equal (root.GetProperty("ss8").GetString().Length) 76 "SS8 per residue"
                Expect.equal (root.GetProperty("sasa").GetArrayLength()) 76 "SASA per residue"
                let tokens = root.GetProperty "tokens"

                for track in [ "sequence"; "structure"; "ss8"; "sasa"; "function"; "residue_annotations" ] do
                    Expect.equal (tokens.GetProperty(track).GetArrayLength()) 78 (track + ": L + 2 rows")

                Expect.equal (tokens.GetProperty("structure").[0].GetInt64()) 4098L "structure BOS"
                Expect.equal (tokens.GetProperty("sequence").[0].GetInt64()) 0L "sequence BOS (<cls>)"
            }

            test "train.fsx --model multitrack: a 2-step smoke run on 2 chains writes multitrack.safetensors" {
                let out =
                    Path.Combine(Path.GetTempPath(), "esm3tests-train-" + Guid.NewGuid().ToString("N"))

                try
                    let code, stdout, err =
                        runScript
                            "train.fsx"
                            [
                                "--"
                                "--model"
                                "multitrack"
                                "--encoder"
                                "random"
                                "--preset"
                                "smoke"
                                "--steps"
                                "2"
                                "--chains"
                                "2"
                                "--geometric-layers"
                                "2"
                                "--crop"
                                "40"
                                "--keep-checkpoints"
                                "0"
                                "--checkpoint-every"
                                "1"
                                "--data"
                                Esm3Structure.Tests.Data.root.Value
                                "--out"
                                out
                            ]

                    Expect.equal code 0 ("exit code; stderr: " + err)
                    Expect.stringContains stdout "done: 2 steps" "report"

                    do
                        use config =
                            System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "config.json")))

                        let root = config.RootElement

                        Expect.equal
                            (root.GetProperty("Model").GetProperty("GeometricLayers").GetInt32())
                            2
                            "--geometric-layers in config.json"

                        Expect.equal (root.GetProperty("CropLength").GetInt32()) 40 "--crop in config.json"

                        Expect.equal
                            (root.GetProperty("Trainer").GetProperty("KeepCheckpoints").GetInt32())
                            0
                            "--keep-checkpoints in config.json"

                    Expect.isTrue
                        (File.Exists(Path.Combine(out, "checkpoints", "step-000001", "multitrack.safetensors")))
                        "--keep-checkpoints 0 keeps the first checkpoint"

                    Expect.isTrue
                        (File.Exists(Path.Combine(out, "checkpoints", "step-000002", "multitrack.safetensors")))
                        "export"

                    // Each bad flag: (arguments, what, the one line expected).
                    let multitrack = [ "--model"; "multitrack"; "--preset"; "smoke" ]

                    for flags, what, expected in
                        [
                            [ "--model"; "bogus" ],
                            "unknown model",
                            "unknown --model 'bogus' (expected tokenizer, multitrack, confidence or causal-lm)"
                            multitrack @ [ "--geometric-layers"; "3" ],
                            "geometric layers beyond the blocks",
                            "--geometric-layers: GeometricLayers must lie in 0 … Layers (2), got 3"
                            multitrack @ [ "--crop"; "0" ],
                            "an empty crop",
                            "--crop: CropLength must be at least 1 (got 0)"
                            [ "--keep-checkpoints"; "-1" ],
                            "a negative checkpoint count",
                            "--keep-checkpoints: KeepCheckpoints must be ≥ 0 (0: keep every checkpoint) (got -1)"
                            [ "--crop"; "128" ],
                            "--crop for the tokenizer",
                            "--crop is for --model multitrack (the tokenizer has --crop-curriculum)"
                            [ "--codes"; "5000" ],
                            "more codes than the decoder's rows",
                            "--codes must be 2 … 4096, the decoder's code rows (got 5000)"
                            [ "--codes"; "1024"; "--fsq"; "8,8,4,4" ],
                            "--codes beside --fsq",
                            "--codes is for a learned codebook; --fsq sets its codes by its levels"
                            multitrack @ [ "--principal-position" ],
                            "a tokenizer flag for the multi-track model",
                            "--principal-position is for --model tokenizer --stage 1"
                            [ "--restart"; "sometimes" ],
                            "an unknown restart policy",
                            "--restart: 'sometimes' is not none, below:THRESHOLD or unused:STEPS[/ROWS]"
                            [ "--restart"; "unused:50"; "--fsq"; "8,8,4,4" ],
                            "--restart beside --fsq",
                            "--restart is for a learned codebook; --fsq has a fixed grid of codes"
                            [ "--freeze-encoder" ],
                            "a frozen encoder from nowhere",
                            "--freeze-encoder needs --init DIR (the tokenizer whose encoder is kept)"
                            [ "--reflect" ],
                            "a reflection of nothing",
                            "--reflect needs --init DIR (the tokenizer whose decoder is reflected)"
                            [ "--refine"; "4" ],
                            "a refinement of nothing",
                            "--refine needs --init DIR (the tokenizer whose decoder is refined)"
                            [ "--refine"; "4"; "--structure-module"; "2" ],
                            "two structure modules",
                            "--refine adds its own structure module (starting from the affine head's frames); leave out --structure-module"
                            [ "--local-distance"; "-1" ],
                            "a negative loss weight",
                            "--local-distance must be ≥ 0 and finite (got -1)"
                            [ "--principal-grid"; "4" ],
                            "a grid for no position",
                            "--principal-grid rounds the principal-axes position: it needs --principal-position"
                            [ "--codes"; "2048"; "--code-groups"; "2" ],
                            "a product of codebooks that 2,048 codes cannot be",
                            "--code-groups: Groups: Codes (2048) must be a 2-th power (k codes per group, K = k^2)"
                            [ "--code-dim"; "0" ], "codes of no width", "--code-dim must be at least 1 (got 0)"
                            [ "--principal-position"; "--principal-grid"; "4"; "--pth" ],
                            "a grid a .pth file cannot hold",
                            "--pth cannot carry --principal-grid (a .pth file has no metadata, and the encoder would load with exact positions): use the .safetensors files"
                            [ "--local-shape"; "-1" ],
                            "a negative local shape weight",
                            "--local-shape must be ≥ 0 and finite (got -1)"
                        ] do
                        runScript "train.fsx" ("--" :: flags @ [ "--out"; out ])
                        |> oneLineError what ("train.fsx: " + expected)
                finally
                    if Directory.Exists out then
                        Directory.Delete(out, true)
            }

            test "causal-lm.fsx: a 2-step smoke run writes causal-lm.safetensors and resumes from its checkpoint" {
                let out =
                    Path.Combine(Path.GetTempPath(), "esm3tests-causal-lm-" + Guid.NewGuid().ToString("N"))

                try
                    let args =
                        [
                            "--preset"
                            "smoke"
                            "--steps"
                            "2"
                            "--data"
                            Esm3Structure.Tests.Data.root.Value
                            "--out"
                            out
                        ]

                    // Two steps of warm-up leave the model short of the unigram baseline: the script says so and
                    // exits 1.
                    let code, stdout, err = runScript "causal-lm.fsx" args
                    Expect.equal (code, err) (1, "") "exit code 1, nothing on stderr"
                    Expect.stringContains stdout "vs unigram baseline" "report"

                    Expect.isTrue
                        (File.Exists(Path.Combine(out, "checkpoints", "step-000002", "causal-lm.safetensors")))
                        "export"

                    let code, stdout, err = runScript "causal-lm.fsx" (args @ [ "--resume" ])
                    Expect.equal (code, err) (1, "") "resumed: exit code 1, nothing on stderr"
                    Expect.stringContains stdout "resuming from" "resumed"
                finally
                    if Directory.Exists out then
                        Directory.Delete(out, true)
            }

            test
                "generate.fsx: SS8 for a sequence prompt as JSON, inverse folding as FASTA, PDB of a generated structure; bad flags in one line" {
                let dir, enc, dec = tokenizerFiles.Value
                let model = Path.Combine(dir, "multitrack.safetensors")

                do
                    use g = new torch.Generator(21UL)

                    use m = new MultiTrackModel(MultiTrackFixtures.tiny, g)

                    MultiTrackCheckpoint.save model m

                let pdb = Esm3Structure.Tests.Data.small "1ubq_A"
                let common = [ "--"; "--weights"; model; "--encoder"; enc; "--decoder"; dec ]
                let json = Path.Combine(dir, "ss8.json")

                let code, out, err =
                    runScript
                        "generate.fsx"
                        (common
                         @ [
                             "--sequence"
                             "MKVLAAGG"
                             "--track"
                             "ss8"
                             "--num"
                             "2"
                             "--seed"
                             "3"
                             "--out"
                             json
                         ])

                Expect.equal code 0 ("exit code; stderr: " + err)
                Expect.stringContains out "wrote" "reports the file"
                let samples = Esm3Structure.Design.Protein.readJson json
                Expect.equal samples.Length 2 "two samples"

                for s in samples do
                    Expect.equal s.Sequence "MKVLAAGG" "the prompt's sequence"
                    Expect.isTrue (s.SecondaryStructure |> Seq.forall (fun c -> "GHITEBSC".Contains c)) "SS8 letters"

                let fasta = Path.Combine(dir, "inverse.fasta")

                let code, _, err =
                    runScript
                        "generate.fsx"
                        (common
                         @ [
                             "--pdb"
                             pdb
                             "--track"
                             "sequence"
                             "--steps"
                             "8"
                             "--temperature"
                             "0"
                             "--out"
                             fasta
                         ])

                Expect.equal code 0 ("inverse folding; stderr: " + err)
                let designed = Esm3Structure.Design.Protein.readFasta fasta
                Expect.equal designed.[0].Sequence.Length 76 "one letter per residue of 1UBQ"

                let pdbOut = Path.Combine(dir, "folded.pdb")

                let code, _, err =
                    runScript
                        "generate.fsx"
                        (common
                         @ [
                             "--sequence"
                             "MKVLAAGGHE"
                             "--track"
                             "structure"
                             "--steps"
                             "4"
                             "--out"
                             pdbOut
                         ])

                Expect.equal code 0 ("structure; stderr: " + err)
                let folded = Esm3Structure.Structure.Pdb.read pdbOut None
                Expect.equal folded.Sequence "MKVLAAGGHE" "a residue per position"

                runScript
                    "generate.fsx"
                    (common
                     @ [ "--sequence"; "MK__"; "--track"; "sequence"; "--top-p"; "2"; "--out"; json ])
                |> oneLineError "top-p" "generate.fsx: --top-p must be in (0, 1] (got 2)"

                runScript
                    "generate.fsx"
                    (common
                     @ [ "--sequence"; "MK__"; "--ss8"; "HHH"; "--track"; "sequence"; "--out"; json ])
                |> oneLineError "lengths" "generate.fsx: --ss8 has 3 positions but --sequence has 4"

                runScript
                    "generate.fsx"
                    (common
                     @ [ "--sequence"; "MK__"; "--track"; "sequence"; "--steps"; "3"; "--out"; json ])
                |> oneLineError
                    "steps"
                    "generate.fsx: --steps 3 is larger than the 2 masked positions of the Sequence track"
            }

            test
                "compare.fsx: a chain against itself scores 0 Å, TM-score 1 and LDDT-CA 1; chains of other lengths, one line" {
                let ubq = Esm3Structure.Tests.Data.small "1ubq_A"
                let lcd = Esm3Structure.Tests.Data.small "1lcd_A"

                let code, out, err =
                    runScript "compare.fsx" [ "--"; "--model"; ubq; "--native"; ubq ]

                Expect.equal code 0 ("exit code; stderr: " + err)

                Expect.equal
                    (out.Trim())
                    "76 residues compared  backbone RMSD 0.00 Å  TM-score 1.000  LDDT-CA 1.000"
                    "itself"

                runScript "compare.fsx" [ "--"; "--model"; lcd; "--native"; ubq ]
                |> oneLineError
                    "lengths"
                    "compare.fsx: --model has 51 residues but --native has 76 (residues are compared in order)"
            }
        ]
