namespace Esm3Structure.Training

open System
open Esm3Structure

/// What the trainer does when a step's loss (or gradient norm) is not finite.
type NanPolicy =
    /// End the run with a `NonFiniteLossException`; the last checkpoint stays the last good one.
    | Stop = 0
    /// Skip the optimiser step, count it, and go on.
    | Skip = 1

/// How the trainer reports progress.
type ProgressMode =
    /// A live display when stdout is a terminal and one is installed (`Trainer.terminalDisplay`: the scripts'
    /// Spectre.Console bar), else one line every `LogEvery` steps.
    | Auto = 0
    /// One line every `LogEvery` steps.
    | Lines = 1
    /// Nothing on stdout (metrics.jsonl is still written).
    | Silent = 2

/// Settings of the optimisation loop, shared by every model the trainer drives.
type TrainerConfig =
    {
        /// Optimiser steps of the whole run (also the learning-rate schedule's length).
        Steps: int
        /// Wall-clock budget of the whole run in seconds, counted over resumes (0: none). The run stops after the
        /// step that reaches it, validating and writing a checkpoint as at its last step.
        MaxSeconds: float
        /// Examples per step (the task reads it to build its batches).
        BatchSize: int
        /// Peak learning rate.
        LearningRate: float
        Beta1: float
        Beta2: float
        WeightDecay: float
        /// Linear warm-up steps.
        WarmupSteps: int
        /// The cosine decay ends at LearningRate · FinalFraction.
        FinalFraction: float
        /// Gradient-norm clip (≤ 0: no clipping).
        ClipNorm: float
        /// Validate every this many steps (and at the end); ≤ 0: only at the end.
        EvalEvery: int
        /// Write a checkpoint every this many steps (and at the end); ≤ 0: only at the end.
        CheckpointEvery: int
        /// Checkpoints kept in the run folder: the newest N (older ones are deleted as each new one is written);
        /// 0 keeps every one (a learning curve's checkpoints). Bookkeeping only: the run's numbers do not depend on it.
        KeepCheckpoints: int
        /// Log a metrics row every this many steps.
        LogEvery: int
        Seed: int
        OnNan: NanPolicy
        Progress: ProgressMode
    }

/// Defaults and checks of `TrainerConfig`.
module TrainerConfig =

    /// AdamW 4e-4, betas (0.9, 0.95), wd 0.01, clip 1, warm-up 300, cosine to 10 %, 5k steps (ESM3-TRAINING.md §4.2
    /// "small").
    let small =
        {
            Steps = 5000
            MaxSeconds = 0.0
            BatchSize = 8
            LearningRate = 4e-4
            Beta1 = 0.9
            Beta2 = 0.95
            WeightDecay = 0.01
            WarmupSteps = 300
            FinalFraction = 0.1
            ClipNorm = 1.0
            EvalEvery = 500
            CheckpointEvery = 500
            KeepCheckpoints = 2
            LogEvery = 10
            Seed = 0
            OnNan = NanPolicy.Stop
            Progress = ProgressMode.Auto
        }

    /// `t` cut down for a "smoke" preset (minutes here): 300 steps of batch 4 (warm-up 30), validating and
    /// checkpointing every 100. Every training config's smoke preset uses it.
    let smokeOf (t: TrainerConfig) =
        { t with
            Steps = 300
            BatchSize = 4
            WarmupSteps = 30
            EvalEvery = 100
            CheckpointEvery = 100
        }

    /// The preset called `name` (case and surrounding spaces ignored) among `presets`; an `ArgumentException` naming
    /// the choices otherwise. The one lookup behind every training config's `preset`.
    let pickPreset (presets: (string * 'Config) list) (name: string) : 'Config =
        match presets |> List.tryFind (fun (n, _) -> n = name.Trim().ToLowerInvariant()) with
        | Some(_, c) -> c
        | None ->
            raise (
                ArgumentException(
                    sprintf "unknown preset '%s' (expected %s)" name (String.Join(" or ", presets |> List.map fst))
                )
            )

    /// Errors of the data fields every structure-training config has: crops of at least `minLength` residues, a
    /// number of validation chains ≥ 0 and a validation length of at least `minLength`.
    let validateData (minLength: int) (cropLength: int) (validChains: int) (validLength: int) =
        [
            if cropLength < minLength then
                sprintf "CropLength must be at least %d (got %d)" minLength cropLength
            if validChains < 0 then
                sprintf "ValidChains must be ≥ 0 (got %d)" validChains
            if validLength < minLength then
                sprintf "ValidLength must be at least %d (got %d)" minLength validLength
        ]

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: TrainerConfig) =
        [
            if c.Steps < 1 then
                sprintf "Steps must be at least 1 (got %d)" c.Steps
            if not (c.MaxSeconds >= 0.0 && c.MaxSeconds < infinity) then
                sprintf "MaxSeconds must be ≥ 0 and finite (0: no time limit) (got %g)" c.MaxSeconds
            if c.BatchSize < 1 then
                sprintf "BatchSize must be at least 1 (got %d)" c.BatchSize
            if not (c.LearningRate > 0.0) then
                sprintf "LearningRate must be positive (got %g)" c.LearningRate
            if not (c.Beta1 >= 0.0 && c.Beta1 < 1.0 && c.Beta2 >= 0.0 && c.Beta2 < 1.0) then
                sprintf "Beta1 and Beta2 must lie in [0, 1) (got %g, %g)" c.Beta1 c.Beta2
            if not (c.WeightDecay >= 0.0) then
                sprintf "WeightDecay must be ≥ 0 (got %g)" c.WeightDecay
            if c.WarmupSteps < 0 then
                sprintf "WarmupSteps must be ≥ 0 (got %d)" c.WarmupSteps
            if not (c.FinalFraction >= 0.0 && c.FinalFraction <= 1.0) then
                sprintf "FinalFraction must lie in [0, 1] (got %g)" c.FinalFraction
            if c.LogEvery < 1 then
                sprintf "LogEvery must be at least 1 (got %d)" c.LogEvery
            if c.KeepCheckpoints < 0 then
                sprintf "KeepCheckpoints must be ≥ 0 (0: keep every checkpoint) (got %d)" c.KeepCheckpoints
        ]
        |> Validation.ofErrors c
