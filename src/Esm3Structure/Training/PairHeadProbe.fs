namespace Esm3Structure.Training

open System
open TorchSharp
open Esm3Structure.Geometry
open Esm3Structure.Models

/// Settings of the pair-head probe: the decoder's pairwise head trained on the true frames.
type PairHeadProbeConfig =
    {
        /// Width of the per-residue features the head reads (the decoder's d).
        DModel: int64
        /// The head's down-projection P (q and k of P/2 each) and hidden width H.
        Downproject: int64
        Hidden: int64
        /// Weights of the distogram and binned-direction cross-entropies (0 leaves a term out).
        DistogramWeight: float
        DirectionWeight: float
        Steps: int
        LearningRate: float
        /// Every this many steps a point of the curve (and the first step).
        LogEvery: int
        Seed: int64
    }

/// Presets of `PairHeadProbeConfig`.
module PairHeadProbeConfig =

    /// The `small` tokenizer's head (d 128, P 32, H 64), both terms at ESM's weight 1, Adam at 1e-3 for 1,000 steps.
    let small =
        {
            DModel = 128L
            Downproject = 32L
            Hidden = 64L
            DistogramWeight = 1.0
            DirectionWeight = 1.0
            Steps = 1000
            LearningRate = 1e-3
            LogEvery = 100
            Seed = 0L
        }

/// One point of the probe's curve: the two cross-entropies (nats) at a step, whatever their weights.
type PairHeadProbePoint =
    {
        Step: int
        Distogram: float
        BinnedDirection: float
    }

/// Can the decoder's pairwise head (ESM's `PairwisePredictionHead`, one head for 64 distogram + 96 direction + 64 pAE
/// channels) learn ESM's binned-direction labels? The probe feeds it what a perfect trunk would know: each residue's
/// true rotation (9 entries) and centred CA position (/10 Å), through Linear → GELU → Linear to width d. Every
/// u_a(i)·u_b(j) is then bilinear in the inputs, so a loss that stays at chance is the head's or the loss's doing,
/// not the trunk's. Chance is ln 16 = 2.773 for the direction and ln 64 = 4.159 for the distogram.
module PairHeadProbe =

    /// The probe's per-residue inputs: rotation entries and centred CA positions / 10 Å of the framed residues.
    /// Shapes: backbone [B, L, 3, 3] -> [B, L, 12]
    let inputs (backbone: torch.Tensor) =
        let frames = (Frame.ofBackbone backbone).Frames
        let b, l = backbone.shape.[0], backbone.shape.[1]
        let centred = frames.T - frames.T.mean ([| 1L |], true)
        torch.cat ([| frames.R.reshape (b, l, 9L); centred / 10.0 |], -1L)

    /// Trains embedding and head on one fixed batch (whole-batch steps, Adam) on `device` and returns the curve. The
    /// batch's residues without N, CA and C and its padding are masked out of both losses.
    let run (config: PairHeadProbeConfig) (device: torch.Device) (batch: TokenizerBatch) : PairHeadProbePoint[] =
        if config.Steps < 1 || config.LogEvery < 1 then
            invalidArg "config" (sprintf "Steps and LogEvery must be ≥ 1 (got %d, %d)" config.Steps config.LogEvery)

        use _ = torch.NewDisposeScope()
        torch.random.manual_seed config.Seed |> ignore
        let backbone = batch.Backbone.nan_to_num(0.0, 0.0, 0.0).``to`` device
        let mask = batch.Mask.logical_and(batch.Padding.logical_not ()).``to`` device
        let x = inputs backbone

        let embed =
            torch.nn.Sequential(
                torch.nn.Linear(x.shape.[2], config.DModel),
                torch.nn.GELU(),
                torch.nn.Linear(config.DModel, config.DModel)
            )

        embed.``to`` device |> ignore

        let head =
            new PairwisePredictionHead(
                config.DModel,
                config.Downproject,
                config.Hidden,
                StructureDecoderConfig.PairwiseBins,
                false
            )

        head.``to`` device |> ignore

        let parameters =
            Seq.append (embed.parameters ()) (head.parameters ()) |> Seq.toArray

        let optimizer = torch.optim.Adam(parameters, config.LearningRate)

        [|
            for step in 1 .. config.Steps do
                use _ = torch.NewDisposeScope()
                optimizer.zero_grad ()
                let logits = head.forward (embed.forward x)
                let distogramLogits = logits.narrow (-1L, 0L, StructureDecoderConfig.DistogramBins)

                let directionLogits =
                    logits.narrow (-1L, StructureDecoderConfig.DistogramBins, StructureDecoderConfig.DirectionBins)

                let distogram = StructureLosses.distogram distogramLogits backbone mask
                let direction = StructureLosses.binnedDirection directionLogits backbone mask
                (distogram * config.DistogramWeight + direction * config.DirectionWeight).backward()
                optimizer.step () |> ignore

                if step = 1 || step % config.LogEvery = 0 then
                    {
                        Step = step
                        Distogram = distogram.ToDouble()
                        BinnedDirection = direction.ToDouble()
                    }
        |]
