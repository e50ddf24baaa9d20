namespace Esm3Structure.Tests

open TorchSharp
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.Training

/// Multi-track model sizes, training configs and examples for tests (the data and the training tests share them).
module MultiTrackFixtures =

    /// Small, all-different sizes: d 24, 3 heads (width 8), 4 vector heads, 2 layers (geometric attention in block
    /// 0): a random multi-track model that runs in milliseconds.
    let tiny =
        { MultiTrackConfig.esm3 with
            DModel = 24L
            Heads = 3L
            VHeads = 4L
            Layers = 2
        }

    /// The smoke preset shrunk to a run of a few seconds.
    let tinyTraining =
        let smoke = MultiTrackTrainConfig.smoke

        { smoke with
            Model =
                { smoke.Model with
                    DModel = 32L
                    Heads = 4L
                    VHeads = 4L
                    Layers = 2
                }
            CropLength = 48
            ValidChains = 2
            ValidLength = 40
            ValidBatchSize = 2
            Trainer =
                { smoke.Trainer with
                    Steps = 80
                    BatchSize = 4
                    LearningRate = 3e-3
                    WarmupSteps = 5
                    EvalEvery = 40
                    CheckpointEvery = 40
                    LogEvery = 1
                    Seed = 3
                    Progress = ProgressMode.Silent
                }
        }

    /// The first five small chains.
    let chains =
        lazy
            (Data.smallNames.Value
             |> Array.truncate 5
             |> Array.map (fun n -> StructureFile.read (Data.small n) None))

    /// `chains` as multi-track examples, their structure tokens from a small, freshly initialised encoder (no
    /// shipped tokenizer is needed).
    let examples =
        lazy
            (use g = new torch.Generator(17UL)

             let encoderConfig = TokenizerFixtures.tinyEncoderConfig

             use encoder = new StructureEncoder(encoderConfig, g)
             Esm3Structure.Nn.Init.initialise g encoder
             encoder.eval ()
             let providers = TrackProviders.withStructureEncoder encoder
             chains.Value |> Array.map (MultiTrackData.ofChain providers))
