namespace Esm3Structure.Ablations

open System
open Esm3Structure
open Esm3Structure.Training

/// One named change of an ablation's base config.
type AblationVariant<'Config> =
    {
        /// Unique within the ablation; letters, digits, '-', '_' and '.' are kept in file names, others become '-'.
        Name: string
        /// The change applied to the base config (`Func` so that C# can build variants).
        Change: Func<'Config, 'Config>
    }

/// The budget of every run of an ablation.
[<RequireQualifiedAccess>]
type AblationBudget =
    /// Optimiser steps (also the length of the learning-rate schedule).
    | Steps of steps: int
    /// Wall-clock seconds of training per run, counted over resumes (`TrainerConfig.MaxSeconds`); the config's own
    /// step count stays the schedule's length and a cap.
    | Seconds of seconds: float

/// An ablation: a base config plus named variants, each trained once per seed for a fixed budget.
type Ablation<'Config> =
    {
        Name: string
        Base: 'Config
        Variants: AblationVariant<'Config>[]
        Seeds: int[]
        /// The budget of every run: steps or seconds.
        Budget: AblationBudget
    }

/// How the ablation runner trains one kind of model (records of `Func`s, callable from C#).
type AblationTrainer<'Config> =
    {
        /// The config with this seed and budget: (config, seed, budget) -> config (see
        /// `Ablation.configureTrainer`).
        Configure: Func<'Config, int, AblationBudget, 'Config>
        /// The config as the JSON text the run folder's `config.json` holds.
        ToJson: Func<'Config, string>
        /// Trains (config, run folder, resume) and returns the trainer's report; must write `metrics.jsonl` and
        /// `config.json` (= `ToJson config`) into the run folder, as `Trainer.run` does.
        Train: Func<'Config, string, bool, TrainReport>
    }

/// One logged step of a run: "loss", "running_loss", "lr", "train/<term>" and "valid/<metric>" values.
type AblationPoint =
    {
        Step: int
        Values: (string * float)[]
    }

/// The record of one finished run, as stored in `<results>/runs/<key>.json`.
type AblationRun =
    {
        Ablation: string
        Variant: string
        /// Position of the variant in its ablation (orders tables and charts).
        VariantIndex: int
        Seed: int
        Key: string
        /// The git commit of the code that trained it ("unknown" outside a checkout).
        Commit: string
        /// The resolved config (JSON text).
        Config: string
        /// Steps trained (for a time budget: the step count reached).
        Steps: int
        /// The ablation's budget (a result written before budgets existed reads as `Steps Steps`).
        Budget: AblationBudget
        /// True when the run stopped on its time budget before its config's step count.
        StoppedOnTime: bool
        /// Wall time of the call that finished the run (a resumed run counts only its last part).
        WallSeconds: float
        /// Peak resident memory of the process during that call (bytes; see `Ablation.peakMemory`).
        PeakMemoryBytes: int64
        /// True when the run continued from a checkpoint of an interrupted attempt.
        Resumed: bool
        /// The final metrics: the last logged row's values (validation included), "wall_seconds" and
        /// "peak_memory_mb" (and "steps" under a time budget).
        Final: (string * float)[]
        History: AblationPoint[]
    }

/// Mean and sample standard deviation (n − 1) of one metric over the seeds of one variant.
type AblationSummaryRow =
    {
        Variant: string
        Metric: string
        /// Runs with a finite value.
        Runs: int
        Mean: float
        /// NaN when fewer than two runs.
        StdDev: float
    }

/// One variant against the ablation's first variant (the baseline) on one metric: Welch's two-sample t-test over
/// the seeds, two-sided at 5 %.
type AblationContrast =
    {
        Variant: string
        Baseline: string
        Metric: string
        /// mean(variant) − mean(baseline).
        Difference: float
        /// sqrt(s²_v / n_v + s²_b / n_b); NaN when either side has fewer than two runs.
        StandardError: float
        /// Welch–Satterthwaite degrees of freedom (n_v + n_b − 2 when both spreads are 0).
        DegreesOfFreedom: float
        /// The 97.5 % quantile of Student's t at the degrees of freedom rounded down (conservative).
        Critical: float
        /// |Difference| > Critical × StandardError: the difference exceeds the seed-to-seed spread.
        Exceeds: bool
    }
