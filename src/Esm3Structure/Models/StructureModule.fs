namespace Esm3Structure.Models

open System
open TorchSharp
open TorchSharp.Modules
open Esm3Structure
open Esm3Structure.Geometry
open Esm3Structure.Nn
open Esm3Structure.Tensors

/// Where the structure module's first round starts.
[<RequireQualifiedAccess>]
type StructureModuleStart =
    /// At identity frames (AlphaFold2 Alg. 20, line 2): the module builds the structure from nothing.
    | Identity
    /// At the frames the decoder's affine head draws (their rotations detached, as between AlphaFold2's rounds): the
    /// module refines them, and a new one (AlphaFold2's zero-initialised update layers) leaves a trained decoder's
    /// structures as they were, so it can be trained on its own on top of that decoder (`train.fsx --refine`).
    | AffineHead

/// Sizes of the AlphaFold2-style structure module (AlphaFold2 supplement Alg. 20, without the pair representation
/// and the side-chain torsions): `Iterations` rounds of invariant point attention, a transition and a backbone
/// update with shared weights.
type StructureModuleConfig =
    {
        /// Rounds of IPA + transition + backbone update (AlphaFold2: 8), weights shared across rounds.
        Iterations: int
        /// The attention's sizes; its `DModel` is the decoder's width.
        Attention: InvariantPointAttentionConfig
        /// Where the first round starts (AlphaFold2: `Identity`).
        Start: StructureModuleStart
    }

/// Presets and checks of `StructureModuleConfig`.
module StructureModuleConfig =

    /// AlphaFold2's round count (supplement §1.8).
    [<Literal>]
    let AlphaFold2Rounds = 8

    /// The safetensors metadata field our exports write the round count to (shapes cannot tell it).
    [<Literal>]
    let RoundsMetadataKey = "structure_module_iterations"

    /// The metadata field our exports write a module's start to ("affine_head"; absent: identity, AlphaFold2's).
    [<Literal>]
    let StartMetadataKey = "structure_module_start"

    /// The metadata value of a start (`StartMetadataKey`).
    let startName (start: StructureModuleStart) =
        match start with
        | StructureModuleStart.Identity -> "identity"
        | StructureModuleStart.AffineHead -> "affine_head"

    /// A start from its metadata value (`startName`), if it is one.
    let tryStart (name: string) =
        match name with
        | "identity" -> Some StructureModuleStart.Identity
        | "affine_head" -> Some StructureModuleStart.AffineHead
        | _ -> None

    /// AlphaFold2's structure module at width `d` (8 rounds, 12 heads, 16/4 query-key and 16/8 value channels).
    let alphaFold2 (d: int64) =
        {
            Iterations = AlphaFold2Rounds
            Attention = InvariantPointAttentionConfig.alphaFold2 d
            Start = StructureModuleStart.Identity
        }

    /// The config, or the errors naming each bad field (`Validation`).
    let validate (c: StructureModuleConfig) =
        [
            if c.Iterations < 1 then
                sprintf "Iterations must be at least 1 (got %d)" c.Iterations
            yield! Validation.within "Attention" (InvariantPointAttentionConfig.validate c.Attention)
        ]
        |> Validation.ofErrors c

    /// Every state-dict key under `prefix` with its shape, in the module's registration order.
    let expectedKeys (prefix: string) (c: StructureModuleConfig) : (string * int64[]) list =
        let a = c.Attention
        let d, h = a.DModel, a.Heads

        let linear (name: string) (rows: int64) (cols: int64) =
            [
                prefix + name + ".weight", [| rows; cols |]
                prefix + name + ".bias", [| rows |]
            ]

        let norm (name: string) =
            [ prefix + name + ".weight", [| d |]; prefix + name + ".bias", [| d |] ]

        [
            yield! norm "input_norm"
            yield! linear "input_proj" d d
            // TorchSharp lists a module's own parameters before its submodules'.
            prefix + "ipa.head_weights", [| h |]
            yield! linear "ipa.q" (h * a.ScalarQk) d
            yield! linear "ipa.k" (h * a.ScalarQk) d
            yield! linear "ipa.v" (h * a.ScalarV) d
            yield! linear "ipa.q_points" (h * a.PointQk * 3L) d
            yield! linear "ipa.k_points" (h * a.PointQk * 3L) d
            yield! linear "ipa.v_points" (h * a.PointV * 3L) d
            prefix + "ipa.relative_position.weight", [| 2L * a.MaxOffset + 1L; h |]
            yield! linear "ipa.out" d (InvariantPointAttentionConfig.outputWidth a)
            yield! norm "ipa_norm"
            yield! linear "transition.0" d d
            yield! linear "transition.2" d d
            yield! linear "transition.4" d d
            yield! norm "transition_norm"
            yield! linear "backbone_update" 6L d
        ]

/// The structure module: s ← LN(Linear(LN(s))); frames start at the identity (or at given frames, `RoundsFrom`);
/// each round s ← LN(s + IPA(s, T)), s ← LN(s + MLP(s)), and T ← T ∘ (R(1, b, c, d), t) from a linear update of s
/// (AlphaFold2 Alg. 20, 23). Frames live in nanometres inside (AlphaFold2's scale) and come out in Å. Rotations
/// are detached between rounds (Alg. 20, line 20). Keys: see `StructureModuleConfig.expectedKeys`.
type StructureModule(config: StructureModuleConfig) as this =
    inherit torch.nn.Module<torch.Tensor, Frame>("StructureModule")

    do
        Validation.check "structure module" (StructureModuleConfig.validate config)
        |> ignore

    let d = config.Attention.DModel
    let input_norm = torch.nn.LayerNorm([| d |], 1e-5)
    let input_proj = torch.nn.Linear(d, d)
    let ipa = new InvariantPointAttention(config.Attention)
    let ipa_norm = torch.nn.LayerNorm([| d |], 1e-5)

    let transition =
        torch.nn.Sequential(
            [|
                "0", torch.nn.Linear(d, d) :> torch.nn.Module<torch.Tensor, torch.Tensor>
                "1", torch.nn.ReLU()
                "2", torch.nn.Linear(d, d)
                "3", torch.nn.ReLU()
                "4", torch.nn.Linear(d, d)
            |]
        )

    let transition_norm = torch.nn.LayerNorm([| d |], 1e-5)
    let backbone_update = torch.nn.Linear(d, 6L)

    do this.RegisterComponents()

    /// Å per internal length unit (AlphaFold2's `position_scale`).
    static member PositionScale = 10.0

    member _.Config = config

    /// PyTorch's defaults (LayerNorms weight 1, bias 0; linear layers uniform in ±1/sqrt(fan_in), biases 0), the
    /// attention's own rules, and AlphaFold2's "final" layers (supplement §1.11.4): the attention's output
    /// projection (its rule), the last transition layer and `backbone_update` start at zero (no draw), so every
    /// round starts as the identity update.
    interface IInitialise with
        member _.Initialise generator =
            Init.layerNorm input_norm
            Init.linear generator input_proj
            Init.initialise generator ipa
            Init.layerNorm ipa_norm
            Init.linear generator (transition.[0] :?> Linear)
            Init.linear generator (transition.[2] :?> Linear)
            Init.zeroLinear (transition.[4] :?> Linear)
            Init.layerNorm transition_norm
            Init.zeroLinear backbone_update

    /// The frames after every round, in Å (the last is the prediction). `allowed` marks the residues attention may
    /// read. Shapes: s [B, L, d], allowed [B, L] bool -> Iterations × Frame [B, L]
    member this.Rounds(s: torch.Tensor, allowed: torch.Tensor) : Frame list =
        Shape.expect "s" [| -1L; -1L; d |] s
        this.RoundsFrom(s, allowed, Frame.identity [| s.shape.[0]; s.shape.[1] |] s.dtype s.device)

    /// `Rounds` from `start` (in Å; its rotations are detached, as between rounds) instead of identity frames: with
    /// the update layers at zero (a new module) every round returns `start` itself, up to the rounding of Å to the
    /// internal unit and back. Shapes: s [B, L, d], allowed [B, L] bool, start Frame [B, L]
    /// -> Iterations × Frame [B, L]
    member _.RoundsFrom(s: torch.Tensor, allowed: torch.Tensor, start: Frame) : Frame list =
        Shape.expect "s" [| -1L; -1L; d |] s
        let b, l = s.shape.[0], s.shape.[1]
        Shape.expect "start.R" [| b; l; 3L; 3L |] start.R
        Shape.expect "start.T" [| b; l; 3L |] start.T
        let mutable s = input_proj.forward (input_norm.forward s)

        let mutable frames =
            {
                R = start.R.detach ()
                T = start.T / StructureModule.PositionScale
            }

        [
            for round in 1 .. config.Iterations do
                s <- ipa_norm.forward (s + ipa.Attend(s, frames, allowed))
                s <- transition_norm.forward (s + transition.forward s)
                let u = backbone_update.forward s // [B, L, 6]

                let quaternion =
                    torch.cat ([| torch.ones_like (u.narrow (-1L, 0L, 1L)); u.narrow (-1L, 0L, 3L) |], -1L)

                let r = Quaternion.toMatrix (quaternion / quaternion.norm (-1, true))
                let t: torch.Tensor = u.narrow (-1L, 3L, 3L)
                let updated = Frame.compose frames { R = r; T = t }

                yield
                    {
                        R = updated.R
                        T = updated.T * StructureModule.PositionScale
                    }

                frames <-
                    if round < config.Iterations then
                        { updated with R = updated.R.detach () }
                    else
                        updated
        ]

    /// The last round's frames in Å, every residue allowed. Shapes: s [B, L, d] -> Frame [B, L]
    override this.forward(s: torch.Tensor) =
        let allowed =
            torch.ones ([| s.shape.[0]; s.shape.[1] |], dtype = torch.ScalarType.Bool, device = s.device)

        List.last (this.Rounds(s, allowed))
