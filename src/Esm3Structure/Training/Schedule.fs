namespace Esm3Structure.Training

open System

/// Learning-rate schedules as pure functions of the step.
module Schedule =

    /// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to `peak · finalFraction` at
    /// `total` steps (constant after). Step 0 is the first optimiser step.
    let warmupCosine (peak: float) (warmup: int) (total: int) (finalFraction: float) (step: int) =
        if warmup > 0 && step < warmup then
            peak * float (step + 1) / float warmup
        else
            let span = max 1 (total - warmup)
            let progress = min 1.0 (float (step - warmup) / float span)
            let floor = peak * finalFraction
            floor + (peak - floor) * 0.5 * (1.0 + Math.Cos(Math.PI * progress))
