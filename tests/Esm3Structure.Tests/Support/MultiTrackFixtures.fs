namespace Esm3Structure.Tests

open Esm3Structure.Models

/// Multi-track model sizes for tests.
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
