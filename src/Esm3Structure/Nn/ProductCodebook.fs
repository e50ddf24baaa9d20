namespace Esm3Structure.Nn

open System
open TorchSharp

/// Product quantization (Jégou et al. 2011; wav2vec 2.0's G codebook groups): z [*, D] is cut into `Groups` slices
/// of D/G channels, each quantized by its own EMA codebook of k = K^(1/G) codes (`EmaCodebook`, with the config's
/// decay, init and restart policy), and the token is the mixed-radix number of the group indices (group 0 least
/// significant), one of K = k^G. Every code of a group sees about N/k rows a step instead of N/K, so small batches
/// train all of them. The effective codes (`Codes`) are the Cartesian table [K, D] (row i: each group's code
/// ⌊i / k^g⌋ mod k, concatenated); the nearest row of that table under squared distance is the product's token, so
/// the table is an ordinary ESM codebook that tokenizes alike (`StructureEncoderCheckpoint.save` writes it so).
/// State-dict keys: `groups.{g}.embeddings` [k, D/G], `groups.{g}.N` [k], `groups.{g}.z_avg` [k, D/G].
type ProductCodebook(config: QuantizerConfig, generator: torch.Generator) as this =
    inherit VectorQuantizer("ProductCodebook")

    do QuantizerConfig.check config |> ignore

    do
        if config.Kind <> QuantizerKind.Ema || config.Groups < 2 then
            raise (
                ArgumentException(
                    sprintf "ProductCodebook needs Kind = Ema and Groups ≥ 2, got %O and %d" config.Kind config.Groups,
                    "config"
                )
            )

    let perGroup = QuantizerConfig.codesPerGroup config

    let groupConfig =
        { config with
            Codes = perGroup
            Dim = config.Dim / int64 config.Groups
            Groups = 1
        }

    let groups =
        [| for _ in 1 .. config.Groups -> new EmaCodebook(groupConfig, generator) |]

    let groupList = torch.nn.ModuleList<EmaCodebook>(groups)

    // Place values of the group indices: 1, k, k², …
    let places = Array.init config.Groups (fun g -> pown perGroup g)

    // Each table row's code in group g (its g-th digit in base k). Shapes: [K] int64 per group
    let digits =
        Array.init config.Groups (fun g ->
            torch.tensor (Array.init (int config.Codes) (fun i -> (int64 i / places.[g]) % perGroup)))

    do this.register_module ("groups", groupList) |> ignore

    /// The group codebooks, group 0 first.
    member _.Groups = groups

    /// Codes per group k (K = k^Groups).
    member _.CodesPerGroup = perGroup

    override _.Config = config

    /// The Cartesian table. Shapes: -> [K, D]
    override _.Codes =
        torch.cat (
            [|
                for g in 0 .. groups.Length - 1 ->
                    let e = groups.[g].Embeddings
                    e.index_select (0L, digits.[g].``to`` e.device)
            |],
            1L
        )

    /// The EMA counts the table's rows would have if the groups' choices were independent: N₀ · Π_{g>0} N_g / ΣN_g.
    /// Shapes: -> [K]
    member _.JointCounts =
        use _ = torch.no_grad ()

        groups
        |> Array.mapi (fun g group ->
            let n = group.Counts.index_select (0L, digits.[g].``to`` group.Counts.device)

            if g = 0 then n else n / group.Counts.sum().clamp_min(1e-12))
        |> Array.reduce (fun a b -> a * b)

    override _.RestartCount = groups |> Array.sumBy (fun g -> g.RestartCount)

    /// Each group's state under "group{g}." (`EmaCodebook.TrainingState`).
    override _.TrainingState() =
        [
            for g in 0 .. groups.Length - 1 do
                for name, t in groups.[g].TrainingState() -> sprintf "group%d.%s" g name, t
        ]

    override _.RestoreTrainingState lookup =
        groups
        |> Array.iteri (fun g group -> group.RestoreTrainingState(fun name -> lookup (sprintf "group%d.%s" g name)))

    /// Sets the groups' codes from a Cartesian table (as `Codes` gives and `StructureEncoderCheckpoint.save`
    /// writes): group g's code j is the slice g of row j·k^g. Every code gets N = 1 and z_avg = its code (a loaded
    /// codebook, never re-initialised). A table that is not this product's (wrong shape, or some row not the
    /// concatenation of its digits' slices) raises an `ArgumentException` naming `what`.
    /// Shapes: table [K, D]
    member this.LoadTable(table: torch.Tensor, what: string) =
        if table.shape <> [| config.Codes; config.Dim |] then
            raise (
                ArgumentException(
                    sprintf "%s: expected a [%d, %d] code table, got %A" what config.Codes config.Dim table.shape
                )
            )

        use _ = torch.no_grad ()
        let width = config.Dim / int64 config.Groups

        groups
        |> Array.iteri (fun g group ->
            let rows = torch.arange (perGroup, dtype = torch.int64) * places.[g]
            let codes = table.index_select(0L, rows).narrow(1L, int64 g * width, width)
            group.Embeddings.copy_ codes |> ignore
            group.Sums.copy_ codes |> ignore
            group.Counts.fill_ (1.0) |> ignore)

        let rebuilt = this.Codes

        if (rebuilt.to_type table.dtype).ne(table).any().ToBoolean() then
            raise (
                ArgumentException(
                    sprintf
                        "%s: the %d-row code table is not a product of %d codebooks of %d codes (its rows are not their slices' concatenations)"
                        what
                        config.Codes
                        config.Groups
                        perGroup
                )
            )

    override _.MarkLoaded() =
        for g in groups do
            g.MarkLoaded()

    /// Shapes: z [*, D], mask [*] bool | null -> Quantized [*, D], Indices [*] int64, Loss scalar (the groups' mean
    /// commitment, so β·mean over all D channels as for one codebook)
    override _.Quantize(z: torch.Tensor, mask: torch.Tensor) =
        let _, _, lead = QuantizerParts.flatten config z mask
        let slices = z.chunk (int64 config.Groups, -1L)

        let outputs =
            Array.map2 (fun (group: EmaCodebook) slice -> group.Quantize(slice, mask)) groups slices

        let indices =
            outputs
            |> Array.mapi (fun g o -> o.Indices * places.[g])
            |> Array.reduce (fun a b -> a + b)

        {
            Quantized = torch.cat (outputs |> Array.map (fun o -> o.Quantized), -1L)
            Indices = indices.reshape lead
            Loss =
                (outputs |> Array.map (fun o -> o.Loss) |> Array.reduce (fun a b -> a + b))
                / float groups.Length
        }
