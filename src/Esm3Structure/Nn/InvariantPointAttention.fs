namespace Esm3Structure.Nn

open System
open TorchSharp
open TorchSharp.Modules
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Tensors

/// Sizes of invariant point attention (AlphaFold2 supplement Alg. 22; defaults there: 12 heads, 16 scalar and
/// 4 point query/key channels, 16 scalar and 8 point value channels). There is no pair representation here: the
/// pair bias b_ij is a learned embedding of the clipped sequence offset j − i, as AlphaFold2's relative position
/// encoding (Alg. 4, offsets clipped to ±32).
type InvariantPointAttentionConfig =
    {
        /// Width of the single representation.
        DModel: int64
        Heads: int64
        ScalarQk: int64
        ScalarV: int64
        PointQk: int64
        PointV: int64
        /// Offsets j − i are clipped to ±this (2·this + 1 bias rows).
        MaxOffset: int64
    }

/// Presets and checks of `InvariantPointAttentionConfig`.
module InvariantPointAttentionConfig =

    /// AlphaFold2's sizes (supplement §1.8.2) at width `d`, offsets clipped to ±32.
    let alphaFold2 (d: int64) =
        {
            DModel = d
            Heads = 12L
            ScalarQk = 16L
            ScalarV = 16L
            PointQk = 4L
            PointV = 8L
            MaxOffset = 32L
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: InvariantPointAttentionConfig) =
        [
            for name, v in
                [
                    "DModel", c.DModel
                    "Heads", c.Heads
                    "ScalarQk", c.ScalarQk
                    "ScalarV", c.ScalarV
                    "PointQk", c.PointQk
                    "PointV", c.PointV
                    "MaxOffset", c.MaxOffset
                ] do
                if v < 1L then
                    sprintf "%s must be positive (got %d)" name v
        ]
        |> Validation.ofErrors c

    /// Width of the concatenated head outputs: H·(C_v + 4·P_v) (scalar values, point values in 3-D, their norms).
    let outputWidth (c: InvariantPointAttentionConfig) = c.Heads * (c.ScalarV + 4L * c.PointV)

/// Invariant point attention (AlphaFold2 Alg. 22) without the pair representation: per head h,
/// a_ij = softmax_j( w_L·( q_i·k_j/√C + b_h(j − i) − γ_h·w_C/2·Σ_p ‖T_i q_ip − T_j k_jp‖² ) ),
/// w_L = √(1/3), w_C = √(2/(9·P_qk)), γ_h = softplus(head_weights_h); outputs Σ_j a_ij v_j and the points
/// T_i⁻¹ Σ_j a_ij T_j v_jp with their norms, concatenated and projected to d. Invariant to a rigid motion applied to
/// every frame. Keys: `q`, `k`, `v`, `q_points`, `k_points`, `v_points` (Linear with bias), `head_weights` [H],
/// `relative_position.weight` [2·MaxOffset + 1, H], `out` (Linear with bias).
type InvariantPointAttention(config: InvariantPointAttentionConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("InvariantPointAttention")

    do
        Validation.check "invariant point attention" (InvariantPointAttentionConfig.validate config)
        |> ignore

    let d, h = config.DModel, config.Heads
    let q = torch.nn.Linear(d, h * config.ScalarQk)
    let k = torch.nn.Linear(d, h * config.ScalarQk)
    let v = torch.nn.Linear(d, h * config.ScalarV)
    let q_points = torch.nn.Linear(d, h * config.PointQk * 3L)
    let k_points = torch.nn.Linear(d, h * config.PointQk * 3L)
    let v_points = torch.nn.Linear(d, h * config.PointV * 3L)

    let head_weights =
        torch.nn.Parameter(
            torch.full ([| h |], InvariantPointAttention.HeadWeightStart.ToScalar(), dtype = torch.float32)
        )

    let relative_position = torch.nn.Embedding(2L * config.MaxOffset + 1L, h)
    let out = torch.nn.Linear(InvariantPointAttentionConfig.outputWidth config, d)

    do this.RegisterComponents()

    /// softplus⁻¹(1) = ln(e − 1): the head weights' start, so that γ_h starts at 1 (AlphaFold2 supplement §1.8.2).
    static member HeadWeightStart: float = Math.Log(Math.E - 1.0)

    member _.Config = config

    /// The output projection (`out`), which AlphaFold2 initialises to zero.
    member _.OutputProjection: Linear = out

    /// AlphaFold2's rules (supplement §1.8.2, §1.11.4): `head_weights` softplus⁻¹(1); the six input projections
    /// PyTorch's linear default (uniform in ±1/sqrt(d), biases 0); `out` zero ("final", no draw), so the layer
    /// starts by adding nothing. `relative_position` is uniform in ±1/sqrt(H), the rule training has always drawn
    /// it by (the bias rows as a fan-in-H matrix, not an embedding's N(0, 1)).
    interface IInitialise with
        member _.Initialise generator =
            Init.constant InvariantPointAttention.HeadWeightStart head_weights
            Init.linear generator q
            Init.linear generator k
            Init.linear generator v
            Init.linear generator q_points
            Init.linear generator k_points
            Init.linear generator v_points
            Init.uniformFanIn generator relative_position.weight
            Init.zeroLinear out

    /// Attention of every residue over the allowed residues of its row. `frames` are in the module's length unit
    /// (the structure module's: nm). Shapes: s [B, L, d], frames [B, L], allowed [B, L] bool (keys that may be
    /// attended to) -> [B, L, d]
    member _.Attend(s: torch.Tensor, frames: Frame, allowed: torch.Tensor) =
        Shape.expect "s" [| -1L; -1L; d |] s
        let b, l = s.shape.[0], s.shape.[1]
        Shape.expect "allowed" [| b; l |] allowed

        // [B, L, H·C] -> [B, H, L, C]
        let heads (x: torch.Tensor) (c: int64) =
            x.view(b, l, h, c).permute(0L, 2L, 1L, 3L)

        // Local points [B, L, H·P·3] -> global [B, H, L, 3P]
        let globalPoints (x: torch.Tensor) (p: int64) =
            let local = x.view (b, l, h * p, 3L)
            let g = Frame.applyEach frames local // [B, L, H·P, 3]
            g.view(b, l, h, p * 3L).permute(0L, 2L, 1L, 3L)

        let qS = heads (q.forward s) config.ScalarQk
        let kS = heads (k.forward s) config.ScalarQk
        let vS = heads (v.forward s) config.ScalarV
        let qP = globalPoints (q_points.forward s) config.PointQk
        let kP = globalPoints (k_points.forward s) config.PointQk
        let vP = globalPoints (v_points.forward s) config.PointV

        let wL = Math.Sqrt(1.0 / 3.0)
        let wC = Math.Sqrt(2.0 / (9.0 * float config.PointQk))
        let gamma = torch.nn.functional.softplus(head_weights).view(1L, h, 1L, 1L)

        let scalar = qS.matmul (kS.transpose (-1L, -2L)) / Math.Sqrt(float config.ScalarQk) // [B, H, L, L]

        // Σ_p ‖q_ip − k_jp‖² from one product: ‖q‖² + ‖k‖² − 2 q·k over the 3P flattened coordinates.
        let squared =
            qP.square().sum(-1L, true) + kP.square().sum(-1L).unsqueeze(-2L)
            - 2.0 * qP.matmul (kP.transpose (-1L, -2L))

        let positions = torch.arange (l, dtype = torch.int64, device = s.device)

        let offsets =
            (positions.unsqueeze 0L - positions.unsqueeze 1L)
                .clamp((-config.MaxOffset).ToScalar(), config.MaxOffset.ToScalar())
            + config.MaxOffset // [L, L]: j − i

        let bias = relative_position.forward(offsets).permute(2L, 0L, 1L).unsqueeze 0L // [1, H, L, L]

        let logits = wL * (scalar + bias - gamma * (wC / 2.0) * squared)

        let logits =
            logits.masked_fill (allowed.logical_not().view(b, 1L, 1L, l), (Attention.finfoMin logits.dtype).ToScalar())

        let a = logits.softmax (-1L)
        let oS = a.matmul(vS).permute(0L, 2L, 1L, 3L).reshape(b, l, -1L) // [B, L, H·Cv]
        let oGlobal = a.matmul(vP).permute(0L, 2L, 1L, 3L).reshape(b, l, -1L, 3L) // [B, L, H·Pv, 3]
        let oLocal = Frame.invertApplyEach frames oGlobal // [B, L, H·Pv, 3]
        let norms = (oLocal.square().sum(-1L) + 1e-8).sqrt() // [B, L, H·Pv]
        out.forward (torch.cat ([| oS; oLocal.reshape (b, l, -1L); norms |], -1L))

    /// Attention with identity frames and every residue allowed. Shapes: s [B, L, d] -> [B, L, d]
    override this.forward(s: torch.Tensor) =
        let b, l = s.shape.[0], s.shape.[1]

        this.Attend(
            s,
            Frame.identity [| b; l |] s.dtype s.device,
            torch.ones ([| b; l |], dtype = torch.ScalarType.Bool, device = s.device)
        )
