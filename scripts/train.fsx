// Training on the train split of the corpus, validating on the valid split; writes config.json, metrics.jsonl and
// checkpoints/step-NNNNNN/ into --out. Four models, one trainer:
//   --model tokenizer (default): the structure tokenizer. Stage 1 (default): encoder + codebook + small decoder
//     (ESM3-TRAINING.md §1.3, §4.2). Stage 2 (--stage 2 --encoder PATH): the stage-1 encoder and codebook frozen, a
//     new decoder with sequence input, all-atom, pLDDT and pAE losses (§1.4). Checkpoints hold
//     {encoder,decoder}.safetensors (ESM key format).
//   --model multitrack: the ESM3 multi-track masked LM (ESM3-TRAINING.md §3, §4.3) on every track our code computes
//     (sequence, structure tokens from --encoder, SS8 from our DSSP, SASA from our Shrake–Rupley); checkpoints hold
//     multitrack.safetensors (ESM3's keys). --encoder defaults to the shipped tokenizer; `random` = a freshly
//     initialised small encoder, for smoke runs only.
//   --model confidence --init DIR: the pLDDT head and the pairwise head (pAE beside the distogram and direction) of
//     the stage-1 tokenizer in DIR, on its own reconstructions of train crops (256 residues); everything else frozen.
//     Checkpoints hold the encoder unchanged and the decoder marked as having trained confidence heads.
//   --model causal-lm: the small causal language model on the train split's sequences (as scripts/causal-lm.fsx);
//     reports held-out perplexity next to the unigram baseline; checkpoints hold causal-lm.safetensors.
//   dotnet fsi scripts/train.fsx -- [--model tokenizer|multitrack|confidence|causal-lm] [--stage 1|2]
//                                   [--encoder FILE|random] [--chains N] [--data DIR] [--out DIR]
//                                   [--preset small|smoke|esm3-open] [--steps N]
//                                   [--minutes M] [--learning-rate LR] [--warmup N] [--fape W] [--local-distance W] [--local-shape W] [--losses esm|linear|fape-pair-heads|fape-alone]
//                                   [--heads N]
//                                   [--structure-module ROUNDS] [--refine ROUNDS]
//                                   [--bypass-quantizer]
//                                   [--neighbour-geometry] [--global-layers N] [--principal-position [--principal-grid Å]] [--chain-frames] [--crop-curriculum STEP:LEN,…]
//                                   [--pair-residues N] [--fsq LEVELS] [--codes K] [--code-dim D] [--code-groups G] [--restart POLICY] [--init DIR] [--freeze-encoder] [--separate-coordinates]
//                                   [--seed N] [--checkpoint-every N] [--keep-checkpoints N] [--resume] [--pth] [--device cpu|cuda] [--usage]
// --resume continues a run from the last complete checkpoint in --out (a run killed at any moment, even while writing
// a checkpoint, resumes from the checkpoint before; the result equals the uninterrupted run's for the same seed).
// (`dotnet fsi script.fsx --help` shows F# Interactive's help; put `--` before the script's arguments.)
#load "_load.fsx"

open System
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Models
open Esm3Structure.Nn
open Esm3Structure.Training

[<HelpFlags("--usage", "--help")>]
type Args =
    | Model of name: string
    | Stage of int
    | Encoder of file: string
    | Chains of int
    | Data of dir: string
    | Out of dir: string
    | Preset of name: string
    | Steps of int
    | Minutes of float
    | Fape of weight: float
    | Local_Distance of weight: float
    | Local_Shape of weight: float
    | Losses of recipe: string
    | Structure_Module of rounds: int
    | Refine of rounds: int
    | Heads of int
    | Bypass_Quantizer
    | Learning_Rate of float
    | Warmup of steps: int
    | Neighbour_Geometry
    | Global_Layers of int
    | Principal_Position
    | Principal_Grid of angstroms: float
    | Chain_Frames
    | Crop_Curriculum of stages: string
    | Pair_Residues of int
    | Fsq of levels: string
    | Codes of int
    | Code_Dim of int
    | Code_Groups of int
    | Restart of policy: string
    | Init of dir: string
    | Freeze_Encoder
    | Reflect
    | Separate_Coordinates
    | Mask of spec: string
    | Geometric_Layers of int
    | Crop of residues: int
    | Seed of int
    | Checkpoint_Every of int
    | Keep_Checkpoints of int
    | Pth
    | Resume
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ ->
                "tokenizer (default), multitrack, confidence (the pLDDT and pairwise heads of the tokenizer in --init, all else frozen), or causal-lm"
            | Stage _ ->
                "tokenizer: 1 (default: encoder, codebook, small decoder) or 2 (frozen encoder, new all-atom decoder)"
            | Encoder _ ->
                "tokenizer stage 2: the stage-1 encoder.safetensors (kept frozen); multitrack: the structure encoder (default: the shipped one; random: a fresh small encoder)"
            | Chains _ -> "multitrack: train on the first N chains of the train split only (default: all)"
            | Data _ -> "shared data folder with index.tsv and structures/ (default: ../shared/data)"
            | Out _ -> "run folder (default: runs/<model>-<preset>, tokenizer stage 2: runs/tokenizer-stage2-<preset>)"
            | Preset _ ->
                "small (default) or smoke (ESM3-TRAINING.md §4.2, §4.3), or esm3-open (ESM's released sizes and the paper's schedule: GPU-sized); the tokenizer also has small-decoder (compute moved to the decoder)"
            | Steps _ -> "optimiser steps (default: the preset's)"
            | Minutes _ ->
                "wall-clock budget: stop after the step that reaches it, validate and checkpoint (counted over resumes)"
            | Fape _ -> "tokenizer stage 1: weight of the backbone FAPE term (default 0, ESM's recipe)"
            | Local_Shape _ ->
                "tokenizer stage 1: weight of the local shape term, a training-only head classifying each token's CA virtual bond angle and torsion from its code vector (default 0)"
            | Local_Distance _ ->
                "tokenizer stage 1: weight of the local CA distance term (CA pairs within LDDT's 15 Å, mean absolute error in Å; default 0, ESM's recipe)"
            | Losses _ ->
                "tokenizer stage 1: the loss recipe: esm (default), linear (distance and direction linear beyond ESM's clamps), fape-pair-heads (FAPE in their place), fape-alone; --fape W then sets FAPE's weight"
            | Structure_Module _ ->
                "tokenizer stage 1: decode frames with an AlphaFold2-style structure module of N rounds (default: ESM's affine head)"
            | Refine _ ->
                "tokenizer stage 1 with --init: train only a new AlphaFold2-style structure module of N rounds (AlphaFold2's 12 IPA heads) that refines the frames of --init's affine head; every loaded weight stays frozen, and at step 0 the structures are --init's"
            | Heads _ ->
                "tokenizer stage 1: the decoder's attention heads (default: the preset's); with --init, the head count of the files, which state dicts do not record"
            | Bypass_Quantizer ->
                "tokenizer stage 1: decode the encoder's continuous vectors (a diagnostic ceiling; no tokens)"
            | Learning_Rate _ -> "peak learning rate (default: the preset's)"
            | Warmup _ -> "steps of linear warm-up to the peak learning rate (default: the preset's)"
            | Neighbour_Geometry ->
                "tokenizer stage 1: the encoder also sees each neighbour's pose and its residue's sequence steps (default: ESM's offsets only)"
            | Principal_Position ->
                "tokenizer stage 1: the encoder also sees each residue's CA position in its chain's principal-axes frame (default: ESM's local inputs only)"
            | Global_Layers _ ->
                "tokenizer stage 1: N residue-level blocks after the encoder's neighbourhood stack, so tokens see the whole chain (default 0: ESM's local tokens)"
            | Principal_Grid _ ->
                "tokenizer stage 1 with --principal-position: round the principal-axes position to a grid of this many Å (default 0: exact), so a token says only roughly where its residue sits"
            | Chain_Frames ->
                "tokenizer stage 1: compose the affine head's frames along the chain (default: ESM's global frames)"
            | Crop_Curriculum _ ->
                "tokenizer stage 1: crop lengths from given steps, e.g. 1000:128,3000:256 (default: the preset's crop throughout)"
            | Pair_Residues _ ->
                "tokenizer stage 1: the pairwise losses read N random residues per batch (default 0: all)"
            | Fsq _ ->
                "tokenizer stage 1: finite scalar quantization with these levels per channel, e.g. 8,5,5,5 (1,000 codes; default: the preset's EMA codebook)"
            | Codes _ ->
                "tokenizer stage 1: codes of the preset's learned codebook, at most 4096 (default: the preset's; not with --fsq)"
            | Code_Dim _ ->
                "tokenizer stage 1: width of the learned codebook's vectors (the encoder's DOut; default: the preset's, 64 for small-decoder; not with --fsq)"
            | Code_Groups _ ->
                "tokenizer stage 1: product quantization, the code vector cut into G slices with an EMA codebook of K^(1/G) codes each (K = --codes must be a G-th power, e.g. 4096 = 64²; default 1: one codebook, ESM's); the release encoder holds the equivalent K-row table"
            | Restart _ ->
                "tokenizer stage 1: dead-code restart of an EMA or gradient codebook: none, below:T (VideoGPT's: EMA count under T, per step), unused:STEPS[/ROWS] (unused for STEPS steps, re-seeded from the last ROWS encoder outputs; default 8192) (default: the preset's)"
            | Init _ ->
                "tokenizer stage 1: start from this tokenizer folder's weights (e.g. models/structure-tokenizer; the preset and options must give the same sizes); multitrack: from this multi-track model's (e.g. models/multitrack); confidence: the tokenizer whose heads are trained"
            | Freeze_Encoder ->
                "tokenizer stage 1 with --init: train the decoder on the frozen encoder's and codebook's tokens (the tokens stay --init's)"
            | Reflect ->
                "tokenizer stage 1 with --init: reflect its decoder's structures through z = 0 first, for a model that learned its chains' mirror images (roundtrip.fsx counts the chains closer to their mirror)"
            | Separate_Coordinates ->
                "multitrack: hide coordinates on their own schedule (Table S6: cubic, spans half the time, dropout 0.5) instead of also wherever structure tokens are hidden (the default, ours)"
            | Mask _ ->
                "multitrack: one track's training noise as TRACK=SCHEDULE[/DROPOUT] (e.g. coordinates=linear/0.25; schedules betalinear30, cosine, cubic, sqrt, linear, fixed:r; repeatable; validation keeps the preset's noise)"
            | Geometric_Layers _ ->
                "multitrack: blocks 0 … N−1 carry geometric attention over the coordinates (default: the preset's, ESM3's 1)"
            | Crop _ -> "multitrack: train on random crops of at most N residues (default: the preset's, 128)"
            | Seed _ -> "random seed (default 0)"
            | Checkpoint_Every _ -> "write a checkpoint every N steps, and at the end (default: the preset's)"
            | Keep_Checkpoints _ ->
                "keep the newest N checkpoints, deleting older ones (default 2; 0 keeps every one, for a learning curve)"
            | Pth ->
                "also write the final checkpoint's release files as PyTorch .pth (torch.load(weights_only=True) reads them; ESM's classes load them strictly)"
            | Resume -> "continue from the last checkpoint in --out"
            | Device _ -> "cpu (default) or cuda"

let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")

Cli.run<Args> "train.fsx" argv (fun args ->
    let data = args.GetResult(Data, defaultValue = Cli.sharedData __SOURCE_DIRECTORY__)
    let device = Cli.device (args.GetResult(Device, defaultValue = "cpu"))
    let presetName = args.GetResult(Preset, defaultValue = "small")
    let resume = args.Contains Resume

    let model =
        args.GetResult(Model, defaultValue = "tokenizer").Trim().ToLowerInvariant()

    let trainer (preset: TrainerConfig) =
        { preset with
            Steps = args.GetResult(Steps, defaultValue = preset.Steps)
            MaxSeconds =
                match args.TryGetResult Minutes with
                | Some m when m > 0.0 && m < infinity -> m * 60.0
                | Some m -> invalidArg "minutes" (sprintf "--minutes must be positive (got %g)" m)
                | None -> preset.MaxSeconds
            Seed = args.GetResult(Seed, defaultValue = preset.Seed)
            LearningRate =
                match args.TryGetResult Learning_Rate with
                | Some lr when lr > 0.0 && lr < infinity -> lr
                | Some lr ->
                    invalidArg "learning-rate" (sprintf "--learning-rate must be positive and finite (got %g)" lr)
                | None -> preset.LearningRate
            WarmupSteps =
                match args.TryGetResult Warmup with
                | Some w when w >= 0 -> w
                | Some w -> invalidArg "warmup" (sprintf "--warmup must be ≥ 0 (got %d)" w)
                | None -> preset.WarmupSteps
            CheckpointEvery = args.GetResult(Checkpoint_Every, defaultValue = preset.CheckpointEvery)
            KeepCheckpoints = args.GetResult(Keep_Checkpoints, defaultValue = preset.KeepCheckpoints)
        }
        // The trainer's own check of the field, naming the flag.
        |> TrainerConfig.validate
        |> Cli.checkConfig "trainer" [ ("KeepCheckpoints", "--keep-checkpoints") ]

    // The run folder; with --resume, says where the run continues from.
    let outOr (name: string) =
        let out =
            args.GetResult(Out, defaultValue = IO.Path.Combine("runs", name + "-" + presetName))

        if resume then
            match TrainerCheckpoint.lastCheckpoint out with
            | Some checkpoint -> printfn "resuming from %s" checkpoint
            | None -> printfn "--resume: no complete checkpoint in %s, starting at step 0" out

        out

    // The stage-1 recipe flags mean nothing to the other models: refused rather than ignored, with what they are for.
    let stage1Flags =
        [
            "--fape", args.Contains Fape
            "--local-distance", args.Contains Local_Distance
            "--local-shape", args.Contains Local_Shape
            "--losses", args.Contains Losses
            "--structure-module", args.Contains Structure_Module
            "--refine", args.Contains Refine
            "--heads", args.Contains Heads
            "--bypass-quantizer", args.Contains Bypass_Quantizer
            "--neighbour-geometry", args.Contains Neighbour_Geometry
            "--global-layers", args.Contains Global_Layers
            "--principal-position", args.Contains Principal_Position
            "--principal-grid", args.Contains Principal_Grid
            "--chain-frames", args.Contains Chain_Frames
            "--crop-curriculum", args.Contains Crop_Curriculum
            "--pair-residues", args.Contains Pair_Residues
            "--fsq", args.Contains Fsq
            "--codes", args.Contains Codes
            "--code-dim", args.Contains Code_Dim
            "--code-groups", args.Contains Code_Groups
            "--restart", args.Contains Restart
            "--freeze-encoder", args.Contains Freeze_Encoder
            "--reflect", args.Contains Reflect
        ]

    let refuse (flags: (string * bool) list) (reason: string -> string) =
        for flag, given in flags do
            if given then
                invalidArg flag (reason flag)

    if args.Contains Pth && args.Contains Principal_Grid then
        invalidArg
            "pth"
            "--pth cannot carry --principal-grid (a .pth file has no metadata, and the encoder would load with exact positions): use the .safetensors files"

    if model <> "multitrack" && args.Contains Separate_Coordinates then
        invalidArg "separate-coordinates" "--separate-coordinates is for --model multitrack"

    if model <> "multitrack" && args.Contains Mask then
        invalidArg "mask" "--mask is for --model multitrack"

    if model <> "multitrack" && args.Contains Geometric_Layers then
        invalidArg "geometric-layers" "--geometric-layers is for --model multitrack"

    if model <> "multitrack" && args.Contains Crop then
        invalidArg "crop" "--crop is for --model multitrack (the tokenizer has --crop-curriculum)"

    // A flag that works on a loaded tokenizer: given without --init, a one-line error naming both. Returns `given`.
    let needsInit (flag: string) (given: bool) (what: string) =
        if given && not (args.Contains Init) then
            invalidArg flag (sprintf "--%s needs --init DIR (%s)" flag what)

        given

    let refuseStage1Flags () =
        refuse (stage1Flags @ [ ("--init", args.Contains Init) ]) (sprintf "%s is for --model tokenizer --stage 1")

    let report =
        match model, args.GetResult(Stage, defaultValue = 1) with
        | "tokenizer", 1 ->
            if args.Contains Encoder then
                invalidArg "encoder" "--encoder is for stage 2 (stage 1 trains its own encoder)"

            let preset =
                let named = TokenizerTrainConfig.preset presetName

                args.TryGetResult Losses
                |> Cli.optionOf "--losses" (fun recipe -> TokenizerTrainConfig.withLosses recipe named) named

            // A loss weight from its flag: finite and ≥ 0, else a one-line error naming the flag.
            let weight (flag: string) (given: float option) (fallback: float) =
                match given with
                | Some w when w >= 0.0 && w < infinity -> w
                | Some w -> invalidArg flag (sprintf "--%s must be ≥ 0 and finite (got %g)" flag w)
                | None -> fallback

            let config =
                { preset with
                    Weights =
                        { preset.Weights with
                            Fape = weight "fape" (args.TryGetResult Fape) preset.Weights.Fape
                            LocalDistance =
                                weight "local-distance" (args.TryGetResult Local_Distance) preset.Weights.LocalDistance
                            LocalShape = weight "local-shape" (args.TryGetResult Local_Shape) preset.Weights.LocalShape
                        }
                    Decoder =
                        { preset.Decoder with
                            StructureModule =
                                match args.TryGetResult Structure_Module, args.TryGetResult Refine with
                                | Some _, Some _ ->
                                    invalidArg
                                        "refine"
                                        "--refine adds its own structure module (starting from the affine head's frames); leave out --structure-module"
                                | None, Some n when n >= 1 ->
                                    Some
                                        { StructureModuleConfig.alphaFold2 preset.Decoder.DModel with
                                            Iterations = n
                                            Start = StructureModuleStart.AffineHead
                                        }
                                | None, Some n ->
                                    invalidArg "refine" (sprintf "--refine needs at least 1 round (got %d)" n)
                                | Some n, None when n >= 1 ->
                                    Some
                                        { StructureModuleConfig.alphaFold2 preset.Decoder.DModel with
                                            Iterations = n
                                            Attention =
                                                { Esm3Structure.Nn.InvariantPointAttentionConfig.alphaFold2
                                                      preset.Decoder.DModel with
                                                    Heads = preset.Decoder.Heads
                                                }
                                        }
                                | Some n, None ->
                                    invalidArg
                                        "structure-module"
                                        (sprintf "--structure-module needs at least 1 round (got %d)" n)
                                | None, None -> preset.Decoder.StructureModule
                            ChainFrames = args.Contains Chain_Frames || preset.Decoder.ChainFrames
                            Heads =
                                match args.TryGetResult Heads with
                                | Some h when h > 0 && preset.Decoder.DModel % int64 h = 0L -> int64 h
                                | Some h ->
                                    invalidArg
                                        "heads"
                                        (sprintf
                                            "--heads %d must be positive and divide the decoder's width d = %d"
                                            h
                                            preset.Decoder.DModel)
                                | None -> preset.Decoder.Heads
                        }
                    Encoder =
                        let quantizer =
                            match args.TryGetResult Fsq with
                            | None when args.Contains Codes ->
                                match args.GetResult Codes with
                                | k when k >= 2 && int64 k <= Esm3Structure.Tokenizers.StructureTokens.CodebookSize ->
                                    { preset.Encoder.Quantizer with
                                        Codes = int64 k
                                    }
                                | k ->
                                    invalidArg
                                        "codes"
                                        (sprintf
                                            "--codes must be 2 … %d, the decoder's code rows (got %d)"
                                            Esm3Structure.Tokenizers.StructureTokens.CodebookSize
                                            k)
                            | Some _ when args.Contains Codes ->
                                invalidArg
                                    "codes"
                                    "--codes is for a learned codebook; --fsq sets its codes by its levels"
                            | None -> preset.Encoder.Quantizer
                            | Some _ when args.Contains Restart ->
                                invalidArg
                                    "restart"
                                    "--restart is for a learned codebook; --fsq has a fixed grid of codes"
                            | Some text ->
                                let levels =
                                    [
                                        for part in text.Split(',', StringSplitOptions.RemoveEmptyEntries) do
                                            match Int32.TryParse(part.Trim()) with
                                            | true, l -> l
                                            | _ ->
                                                invalidArg
                                                    "fsq"
                                                    (sprintf "--fsq: '%s' is not a list of integers like 8,5,5,5" text)
                                    ]

                                let q = QuantizerConfig.finite levels

                                match QuantizerConfig.validate q with
                                | Ok q -> q
                                | Error errors -> invalidArg "fsq" ("--fsq: " + String.Join("; ", errors))

                        let quantizer =
                            match args.TryGetResult Code_Dim with
                            | None -> quantizer
                            | Some _ when args.Contains Fsq ->
                                invalidArg
                                    "code-dim"
                                    "--code-dim is for a learned codebook; --fsq's width is its number of levels"
                            | Some d when d >= 1 -> { quantizer with Dim = int64 d }
                            | Some d -> invalidArg "code-dim" (sprintf "--code-dim must be at least 1 (got %d)" d)

                        let quantizer =
                            match args.TryGetResult Code_Groups with
                            | None -> quantizer
                            | Some _ when args.Contains Fsq ->
                                invalidArg "code-groups" "--code-groups is for a learned EMA codebook, not --fsq"
                            | Some g ->
                                match QuantizerConfig.validate { quantizer with Groups = g } with
                                | Ok q -> q
                                | Error errors ->
                                    invalidArg "code-groups" ("--code-groups: " + String.Join("; ", errors))

                        let quantizer =
                            match args.TryGetResult Restart with
                            | None -> quantizer
                            | Some text ->
                                match QuantizerConfig.parseRestart text with
                                | Ok policy ->
                                    match QuantizerConfig.validate { quantizer with Restart = policy } with
                                    | Ok q -> q
                                    | Error errors -> invalidArg "restart" ("--restart: " + String.Join("; ", errors))
                                | Error message -> invalidArg "restart" ("--restart: " + message)

                        { preset.Encoder with
                            NeighbourGeometry = args.Contains Neighbour_Geometry || preset.Encoder.NeighbourGeometry
                            GlobalLayers = args.GetResult(Global_Layers, defaultValue = preset.Encoder.GlobalLayers)
                            PrincipalPosition = args.Contains Principal_Position || preset.Encoder.PrincipalPosition
                            PrincipalGrid =
                                match args.TryGetResult Principal_Grid with
                                | None -> preset.Encoder.PrincipalGrid
                                | Some _ when
                                    not (args.Contains Principal_Position || preset.Encoder.PrincipalPosition)
                                    ->
                                    invalidArg
                                        "principal-grid"
                                        "--principal-grid rounds the principal-axes position: it needs --principal-position"
                                | Some g when Double.IsFinite g && g >= 0.0 -> g
                                | Some g ->
                                    invalidArg
                                        "principal-grid"
                                        (sprintf "--principal-grid must be a finite number of Å ≥ 0 (got %g)" g)
                            Quantizer = quantizer
                            DOut = quantizer.Dim
                        }
                    BypassQuantizer = args.Contains Bypass_Quantizer || preset.BypassQuantizer
                    CropCurriculum =
                        match args.TryGetResult Crop_Curriculum with
                        | None -> preset.CropCurriculum
                        | Some text ->
                            [
                                for stage in text.Split(',', StringSplitOptions.RemoveEmptyEntries) do
                                    match stage.Split ':' with
                                    | [| step; length |] ->
                                        match Int32.TryParse(step.Trim()), Int32.TryParse(length.Trim()) with
                                        | (true, s), (true, l) -> s, l
                                        | _ ->
                                            invalidArg
                                                "crop-curriculum"
                                                (sprintf "--crop-curriculum: '%s' is not STEP:LENGTH (integers)" stage)
                                    | _ ->
                                        invalidArg
                                            "crop-curriculum"
                                            (sprintf "--crop-curriculum: '%s' is not STEP:LENGTH" stage)
                            ]
                    PairResidues = args.GetResult(Pair_Residues, defaultValue = preset.PairResidues)
                    InitFrom = args.GetResult(Init, defaultValue = preset.InitFrom)
                    FreezeEncoder =
                        needsInit "freeze-encoder" (args.Contains Freeze_Encoder) "the tokenizer whose encoder is kept"
                        || preset.FreezeEncoder
                    ReflectInit =
                        needsInit "reflect" (args.Contains Reflect) "the tokenizer whose decoder is reflected"
                        || preset.ReflectInit
                    RefineOnly =
                        needsInit "refine" (args.Contains Refine) "the tokenizer whose decoder is refined"
                        || preset.RefineOnly
                    Trainer = trainer preset.Trainer
                }

            for warning in TokenizerTrainConfig.warnings config do
                eprintfn "warning: %s" warning

            TokenizerTraining.train config device data (outOr "tokenizer") resume
        | "tokenizer", 2 ->
            refuseStage1Flags ()
            let preset = Stage2TrainConfig.preset presetName

            let config =
                { preset with
                    Encoder =
                        match args.TryGetResult Encoder with
                        | Some path -> path
                        | None -> invalidArg "encoder" "stage 2 needs --encoder PATH (a stage-1 encoder.safetensors)"
                    Trainer = trainer preset.Trainer
                }

            Stage2Training.train config device data (outOr "tokenizer-stage2") resume
        | "tokenizer", n -> invalidArg "stage" (sprintf "--stage must be 1 or 2 (got %d)" n)
        | "multitrack", _ ->
            refuse stage1Flags (sprintf "%s is for --model tokenizer --stage 1")

            if args.Contains Stage then
                invalidArg "stage" "--stage is for --model tokenizer"

            let preset = MultiTrackTrainConfig.preset presetName

            /// `--mask TRACK=SCHEDULE[/DROPOUT]` applied over the preset's training noise, in the order given.
            let withMask (masking: MaskingConfig) (spec: string) =
                match MaskingConfig.withSpec spec masking with
                | Ok m -> m
                | Error e -> invalidArg "mask" (sprintf "--mask '%s': %s" spec e)

            let config =
                { preset with
                    Model =
                        { preset.Model with
                            GeometricLayers =
                                args.GetResult(Geometric_Layers, defaultValue = preset.Model.GeometricLayers)
                        }
                    CropLength = args.GetResult(Crop, defaultValue = preset.CropLength)
                    Masking =
                        { (args.GetResults Mask |> List.fold withMask preset.Masking) with
                            NestCoordinates =
                                preset.Masking.NestCoordinates && not (args.Contains Separate_Coordinates)
                        }
                    ValidMasking =
                        { preset.ValidMasking with
                            NestCoordinates =
                                preset.ValidMasking.NestCoordinates && not (args.Contains Separate_Coordinates)
                        }
                    InitFrom = args.GetResult(Init, defaultValue = preset.InitFrom)
                    Trainer = trainer preset.Trainer
                }
                // Range errors of the fields these flags set name the flag.
                |> MultiTrackTrainConfig.validate
                |> Cli.checkConfig
                    "multi-track"
                    [ "Model: GeometricLayers", "--geometric-layers"; "CropLength", "--crop" ]

            use encoder =
                match args.GetResult(Encoder, defaultValue = "") with
                | "random" ->
                    use g = new torch.Generator(uint64 config.Trainer.Seed)
                    let e = new StructureEncoder(TokenizerTrainConfig.small.Encoder, g)
                    Esm3Structure.Nn.Init.initialise g e
                    e
                | given ->
                    ModelFiles.resolveWeights
                        (Cli.repositoryRoot __SOURCE_DIRECTORY__)
                        ModelFiles.DefaultEncoderPath
                        given
                    |> StructureEncoderCheckpoint.load

            encoder.eval ()

            MultiTrackTraining.train
                config
                device
                data
                (TrackProviders.computed encoder)
                (args.GetResult(Chains, defaultValue = 0))
                (outOr "multitrack")
                resume
        | "confidence", _ ->
            let init = args.TryGetResult Init

            refuse
                (stage1Flags
                 @ [ "--stage", args.Contains Stage; "--encoder", args.Contains Encoder ])
                (sprintf "%s is not an option of --model confidence")

            let preset = ConfidenceTrainConfig.preset presetName

            let config =
                { preset with
                    Tokenizer =
                        match init with
                        | Some dir -> dir
                        | None ->
                            invalidArg
                                "init"
                                "--model confidence needs --init DIR, the tokenizer whose heads it trains (e.g. runs/…/checkpoints/step-…)"
                    Trainer = trainer preset.Trainer
                }

            ConfidenceTraining.train config device data (outOr "confidence") resume
        | "causal-lm", _ ->
            refuse
                (stage1Flags
                 @ [
                     "--stage", args.Contains Stage
                     "--encoder", args.Contains Encoder
                     "--init", args.Contains Init
                     "--chains", args.Contains Chains
                 ])
                (sprintf "%s is not an option of --model causal-lm")

            let preset = CausalLmTrainConfig.preset presetName

            let config =
                { preset with
                    Trainer = trainer preset.Trainer
                }

            let lm = CausalLmTraining.train config device data (outOr "causal-lm") resume
            printfn "%s" (CausalLmTraining.summary lm)
            lm.Training
        | other, _ ->
            raise (
                ArgumentException(
                    sprintf "unknown --model '%s' (expected tokenizer, multitrack, confidence or causal-lm)" other
                )
            )

    printfn "done: %d steps, final loss %.4f, checkpoint %s" report.Steps report.FinalLoss report.Checkpoint

    // The release files (ESM's key format) also as PyTorch checkpoints; model.safetensors and rng.safetensors are
    // the resume state, not release files.
    if args.Contains Pth then
        for file in IO.Directory.GetFiles(report.Checkpoint, "*.safetensors") |> Array.sort do
            match IO.Path.GetFileName file with
            | "model.safetensors"
            | "rng.safetensors" -> ()
            | _ ->
                use _ = torch.NewDisposeScope()
                let out = IO.Path.ChangeExtension(file, ".pth")
                Esm3Structure.Io.PyTorchCheckpoint.write out (Esm3Structure.Io.TensorFile.read file).Tensors
                printfn "wrote %s" out

    0)
|> exit
