namespace Esm3Structure.Nn

open System
open TorchSharp
open Esm3Structure.Tensors

/// What a quantizer returns (ESM's `(z_q, indices, commitment_loss)`).
type QuantizerOutput =
    {
        /// Straight-through quantized vectors z + sg(e − z) [*, D]: forward value the codes, gradient to z.
        Quantized: torch.Tensor
        /// Code indices [*] int64.
        Indices: torch.Tensor
        /// The loss to add to the model's: β·commitment (EMA), or the VQ loss (gradient-trained codes).
        Loss: torch.Tensor
    }

/// The ring buffer of recent encoder outputs and the per-code "unused for" counters behind
/// `RestartPolicy.UnusedFor`. Its tensors live outside dispose scopes (they persist across training steps) and are
/// not part of any state_dict.
type internal DeadCodeTracker(steps: int, capacity: int64, generator: torch.Generator) =
    let mutable unused: torch.Tensor = null
    let mutable recent: torch.Tensor = null
    let mutable filled = 0L
    let mutable position = 0L

    let keep (t: torch.Tensor) = t.DetachFromDisposeScope()

    let reset (codes: int64) (rows: torch.Tensor) =
        for t in [ unused; recent ] do
            if not (isNull t) then
                t.Dispose()

        unused <- keep (torch.zeros ([| codes |], dtype = torch.int64, device = rows.device))
        recent <- keep (torch.empty ([| capacity; rows.shape.[1] |], dtype = rows.dtype, device = rows.device))
        filled <- 0L
        position <- 0L

    let push (rows: torch.Tensor) =
        let n = rows.shape.[0]

        if n >= capacity then
            recent.copy_ (rows.narrow (0L, n - capacity, capacity)) |> ignore
            filled <- capacity
            position <- 0L
        elif n > 0L then
            let slots =
                (torch.arange (n, dtype = torch.int64, device = rows.device) + position).remainder(capacity.ToScalar())

            recent.index_copy_ (0L, slots, rows) |> ignore
            filled <- min capacity (filled + n)
            position <- (position + n) % capacity

    /// Records one training update (the batch's real rows and per-code counts) and returns the dead codes with
    /// their replacement rows, if any. Shapes: rows [N, D], counts [K] -> ([M] int64, [M, D]) option
    member _.Step(rows: torch.Tensor, counts: torch.Tensor) =
        if
            isNull unused
            || unused.shape.[0] <> counts.shape.[0]
            || recent.dtype <> rows.dtype
            || recent.shape.[1] <> rows.shape.[1]
            || recent.device.``type`` <> rows.device.``type``
        then
            reset counts.shape.[0] rows

        unused.add_((1L).ToScalar()).masked_fill_(counts.gt ((0.0).ToScalar()), (0L).ToScalar())
        |> ignore

        push rows
        let dead = unused.ge((int64 steps).ToScalar()).nonzero().squeeze(1L)

        if dead.shape.[0] = 0L || filled = 0L then
            None
        else
            unused.index_fill_ (0L, dead, 0L) |> ignore

            let replacements =
                Codebook.randomRows generator dead.shape.[0] (recent.narrow (0L, 0L, filled))

            Some(dead, replacements)

    /// Steps since each code was last selected. Shapes: -> [K] int64 (null before the first step)
    member _.Unused = unused

    /// What a resumed run needs to continue exactly: "dead_codes.unused" [K] int64, the ring buffer
    /// "dead_codes.recent" [capacity, D] and "dead_codes.cursor" [filled, position] int64; empty before the first
    /// step. The tensors are the tracker's own (not copies).
    member _.State: (string * torch.Tensor) list =
        if isNull unused then
            []
        else
            [
                "dead_codes.unused", unused
                "dead_codes.recent", recent
                "dead_codes.cursor", torch.tensor ([| filled; position |], dtype = torch.int64)
            ]

    /// Restores `State` from `lookup` (name -> tensor); with none of its names present the tracker stays as it is (a
    /// checkpoint written before the first step). A state of another capacity, or missing one of the three names,
    /// raises an `ArgumentException` naming the tensor.
    member _.Restore(lookup: string -> torch.Tensor option) =
        match lookup "dead_codes.unused", lookup "dead_codes.recent", lookup "dead_codes.cursor" with
        | None, None, None -> ()
        | Some u, Some r, Some c ->
            let bad name (detail: string) =
                raise (ArgumentException(sprintf "dead-code tracker state '%s': %s" name detail))

            if u.dim () <> 1L || u.dtype <> torch.int64 then
                bad "unused" (sprintf "expected [K] int64, got %A %O" u.shape u.dtype)

            if r.dim () <> 2L || r.shape.[0] <> capacity then
                bad "recent" (sprintf "expected [%d, D] (the run's recent rows), got %A" capacity r.shape)

            if c.dtype <> torch.int64 || c.shape <> [| 2L |] then
                bad "cursor" (sprintf "expected [2] int64, got %A %O" c.shape c.dtype)

            let f, p = c.[0].ToInt64(), c.[1].ToInt64()

            if f < 0L || f > capacity || p < 0L || p >= capacity then
                bad "cursor" (sprintf "filled %d and position %d do not fit a capacity of %d" f p capacity)

            for t in [ unused; recent ] do
                if not (isNull t) then
                    t.Dispose()

            unused <- keep (u.clone ())
            recent <- keep (r.clone ())
            filled <- f
            position <- p
        | _ -> raise (ArgumentException "dead-code tracker state: 'unused', 'recent' and 'cursor' must come together")

/// The common surface of the quantizers: a module from z [*, D] to `QuantizerOutput`, its effective codes,
/// and dictionary lookups. `forward z` is `Quantize(z, null)`.
[<AbstractClass>]
type VectorQuantizer(name: string) =
    inherit torch.nn.Module<torch.Tensor, QuantizerOutput>(name)

    /// The configuration the quantizer was built with.
    abstract Config: QuantizerConfig

    /// The effective codes (for the reparameterised codebook, C Wᵀ + b with its gradient). Shapes: -> [K, D]
    abstract Codes: torch.Tensor

    /// Quantizes z; in training mode also learns (init, EMA update, restarts) from the rows where `mask` is true
    /// (null: every row). The loss averages over those rows only.
    /// Shapes: z [*, D], mask [*] bool | null -> Quantized [*, D], Indices [*] int64, Loss scalar
    abstract Quantize: z: torch.Tensor * mask: torch.Tensor -> QuantizerOutput

    /// Codes re-seeded so far (dead-code restarts).
    abstract RestartCount: int64

    /// Training state outside the state_dict that a resumed run needs to continue exactly (the `UnusedFor`
    /// counters and recent rows, a pending data init), as (name, tensor) pairs; none by default. The tensors may be
    /// the quantizer's own: write them out, do not keep or change them.
    abstract TrainingState: unit -> (string * torch.Tensor) list
    default _.TrainingState() = []

    /// Restores `TrainingState` from `lookup` (name -> tensor); names it does not find leave that part as constructed.
    abstract RestoreTrainingState: lookup: (string -> torch.Tensor option) -> unit
    default _.RestoreTrainingState _ = ()

    /// Tells the quantizer that its codes were loaded from a trained model, so that a pending data init (`DataInit`)
    /// must not overwrite them; nothing by default (the EMA codebook reads that from its loaded counts).
    abstract MarkLoaded: unit -> unit
    default _.MarkLoaded() = ()

    /// Sets the learned parameters by the quantizer's own rules, drawing from `generator`; nothing by default (the
    /// EMA and finite quantizers hold buffers only, set at construction).
    abstract InitialiseParameters: generator: torch.Generator -> unit
    default _.InitialiseParameters _ = ()

    interface IInitialise with
        member this.Initialise generator = this.InitialiseParameters generator

    /// ESM's `dictionary_lookup`. Shapes: indices [*] int64 -> [*, D]
    member this.DictionaryLookup(indices: torch.Tensor) = Codebook.lookup this.Codes indices

    /// ESM's `soft_codebook_lookup`. Shapes: weights [*, K] -> [*, D]
    member this.SoftCodebookLookup(weights: torch.Tensor) = Codebook.softLookup this.Codes weights

    /// Shapes: z [*, D] -> Quantized [*, D], Indices [*] int64, Loss scalar
    override this.forward(z: torch.Tensor) = this.Quantize(z, null)

/// Helpers the quantizers share.
module internal QuantizerParts =

    /// z flattened to rows and the mask flattened alike, after shape checks.
    let flatten (config: QuantizerConfig) (z: torch.Tensor) (mask: torch.Tensor) =
        Shape.expectTrailing "z" [| config.Dim |] z

        if not (z.is_floating_point ()) then
            raise (ArgumentException(sprintf "z: expected a float tensor, got %O" z.dtype, "z"))

        let lead = Shape.batchDims 1 z

        let mask =
            match Option.ofObj mask with
            | None -> None
            | Some m ->
                Shape.expect "mask" lead m

                if m.dtype <> torch.ScalarType.Bool then
                    raise (ArgumentException(sprintf "mask: expected a bool tensor, got %O" m.dtype, "mask"))

                Some(m.reshape ([| -1L |]))

        z.reshape ([| -1L; config.Dim |]), mask, lead

    /// The rows that count (detached).
    let realRows (z_ND: torch.Tensor) (mask: torch.Tensor option) =
        match mask with
        | None -> z_ND.detach ()
        | Some m -> z_ND.detach().index_select(0L, m.nonzero().squeeze(1L))

    /// The indices of the rows that count.
    let realIndices (indices_N: torch.Tensor) (mask: torch.Tensor option) =
        match mask with
        | None -> indices_N
        | Some m -> indices_N.masked_select (m)

    /// Uniform(−bound, bound) values from an explicit generator.
    let uniform (generator: torch.Generator) (shape: int64[]) (bound: float) =
        (torch.rand (shape, generator = generator) * 2.0 - 1.0) * bound
