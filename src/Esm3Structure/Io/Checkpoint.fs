namespace Esm3Structure.Io

open System
open System.Collections.Generic
open TorchSharp
open Esm3Structure
open Esm3Structure.Tensors

/// A tensor whose shape differs between a checkpoint and a module.
type ShapeMismatch =
    {
        /// The state_dict key.
        Name: string
        /// The module's shape.
        Expected: int64[]
        /// The checkpoint's shape.
        Got: int64[]
    }

/// Everything that keeps a checkpoint from loading strictly into a module.
type CheckpointMismatch =
    {
        /// Module keys the checkpoint lacks, in state_dict order.
        Missing: string list
        /// Checkpoint keys the module lacks, in checkpoint order.
        Unexpected: string list
        /// Keys present in both with different shapes, in state_dict order.
        WrongShape: ShapeMismatch list
        /// Keys the checkpoint holds more than once.
        Duplicated: string list
    }

/// A checkpoint's tensor shapes by name, for inferring a model's sizes from a file (`model` names the model in
/// messages: "decoder", "encoder", …). Every failed lookup raises an `InputException` naming the file and the tensor.
type KeyShapes(file: string, model: string, shapes: seq<string * int64[]>) =
    let table = Dictionary<string, int64[]>()

    do
        for name, shape in shapes do
            table.[name] <- shape

    /// The tensor names.
    member _.Names: seq<string> = table.Keys

    /// How many tensors the file holds.
    member _.Count = table.Count

    /// Whether the file holds a tensor called `name`.
    member _.Contains(name: string) = table.ContainsKey name

    /// Raises an `InputException` naming the file and the tensor `name`.
    member _.Fail<'T>(name: string, message: string) : 'T =
        InputError.raise file (InputLocation.Field name) message

    /// The shape of `name`, which must be a tensor of rank `rank` without an empty dimension.
    member this.Require(name: string, rank: int) : int64[] =
        match table.TryGetValue name with
        | true, s when s.Length = rank && Array.forall (fun n -> n > 0L) s -> s
        | true, s -> this.Fail(name, sprintf "expected a non-empty %d-D tensor, got shape %s" rank (Shape.show s))
        | _ -> this.Fail(name, sprintf "missing (needed to infer the %s's sizes)" model)

/// Module checkpoints: the state_dict as safetensors, under exactly the names `state_dict()` gives (ESM's names,
/// no prefix), loaded strictly with every problem named at once.
module Checkpoint =

    // PyTorch's state_dict order: a module's own parameters, then its own persistent buffers, then each child
    // (declaration order), recursively (torch.nn.Module._save_to_state_dict / state_dict).
    let rec private pytorchOrder (prefix: string) (m: torch.nn.Module) : string list =
        [
            for struct (n, _) in m.named_parameters (false) do
                yield prefix + n
            for struct (n, _) in m.named_buffers (false, false) do
                yield prefix + n
            for struct (n, child) in m.named_children () do
                yield! pytorchOrder (prefix + n + ".") child
        ]

    /// The device of a module's first parameter (CPU for a module without parameters).
    let deviceOf (m: torch.nn.Module) =
        match m.parameters () |> Seq.tryHead with
        | Some p -> p.device
        | None -> torch.CPU


    /// The module's state_dict (parameters and persistent buffers) as (name, tensor) pairs, in PyTorch's order:
    /// each module's own parameters, then its own buffers, then its children. TorchSharp's own `state_dict()` holds
    /// the same entries but lists all parameters of the tree before all buffers; keys it holds that the walk does
    /// not reach (a module overriding `state_dict`) follow in TorchSharp's order. The tensors are the module's own,
    /// not copies.
    /// Shapes: each as registered.
    let stateDict (m: torch.nn.Module) : (string * torch.Tensor) list =
        let sd = m.state_dict ()
        let seen = HashSet<string>()

        [
            for k in pytorchOrder "" m do
                if sd.ContainsKey k && seen.Add k then
                    yield k, sd.[k]
            for kv in sd do
                if seen.Add kv.Key then
                    yield kv.Key, kv.Value
        ]

    /// (name, shape) of every state_dict entry, in state_dict order: the list a golden key/shape test compares.
    let keyShapes (m: torch.nn.Module) : (string * int64[]) list =
        [ for name, t in stateDict m -> name, t.shape ]

    /// The number of numbered children under `prefix` in a list of keys: for "decoder_stack.blocks", the largest i
    /// of "decoder_stack.blocks.{i}.…" plus one (0 when there is none). A key whose index is not a number below
    /// 10,000 is returned as `Error key`.
    let blockCount (prefix: string) (keys: seq<string>) : Result<int, string> =
        let start = prefix + "."

        keys
        |> Seq.fold
            (fun acc (key: string) ->
                match acc with
                | Error _ -> acc
                | Ok count when key.StartsWith(start, StringComparison.Ordinal) ->
                    let rest = key.Substring start.Length
                    let dot = rest.IndexOf '.'
                    let index = if dot < 0 then rest else rest.Substring(0, dot)

                    match
                        Int32.TryParse(
                            index,
                            Globalization.NumberStyles.None,
                            Globalization.CultureInfo.InvariantCulture
                        )
                    with
                    | true, i when i < 10000 -> Ok(max count (i + 1))
                    | _ -> Error key
                | ok -> ok)
            (Ok 0)

    /// True when the checkpoint loads strictly.
    let isEmpty (mismatch: CheckpointMismatch) =
        mismatch.Missing.IsEmpty
        && mismatch.Unexpected.IsEmpty
        && mismatch.WrongShape.IsEmpty
        && mismatch.Duplicated.IsEmpty

    /// Compares (name, shape) pairs with the expected ones: missing, unexpected, duplicated and mis-shaped keys
    /// (without building anything: loaders check a file's header against a config's key table first).
    let mismatchesOfShapes (expected: (string * int64[]) list) (given: seq<string * int64[]>) : CheckpointMismatch =
        let found = Dictionary<string, int64[]>()
        let order = ResizeArray<string>()
        let duplicated = ResizeArray<string>()

        for name, shape in given do
            if found.ContainsKey name then
                if not (duplicated.Contains name) then
                    duplicated.Add name
            else
                found.[name] <- shape
                order.Add name

        let known = HashSet<string>(expected |> List.map fst)

        {
            Missing =
                [
                    for name, _ in expected do
                        if not (found.ContainsKey name) then
                            yield name
                ]
            Unexpected =
                [
                    for name in order do
                        if not (known.Contains name) then
                            yield name
                ]
            WrongShape =
                [
                    for name, shape in expected do
                        match found.TryGetValue name with
                        | true, g when g <> shape ->
                            yield
                                {
                                    Name = name
                                    Expected = shape
                                    Got = g
                                }
                        | _ -> ()
                ]
            Duplicated = List.ofSeq duplicated
        }

    /// Compares checkpoint tensors with a module's state_dict: missing, unexpected, duplicated and mis-shaped keys.
    /// Shapes: any.
    let mismatches (tensors: seq<string * torch.Tensor>) (m: torch.nn.Module) : CheckpointMismatch =
        mismatchesOfShapes (keyShapes m) (tensors |> Seq.map (fun (name, t) -> name, t.shape))

    /// One line listing every problem, e.g.
    /// "missing keys: a.weight; unexpected keys: b.bias; wrong shapes: c.weight: expected [4, 8], got [4, 5]".
    let describe (mismatch: CheckpointMismatch) : string =
        let part title (items: string list) =
            if items.IsEmpty then
                None
            else
                Some(title + ": " + String.Join(", ", items))

        [
            part "missing keys" mismatch.Missing
            part "unexpected keys" mismatch.Unexpected
            part
                "wrong shapes"
                [
                    for s in mismatch.WrongShape ->
                        sprintf "%s: expected %s, got %s" s.Name (Shape.show s.Expected) (Shape.show s.Got)
                ]
            part "duplicated keys" mismatch.Duplicated
        ]
        |> List.choose id
        |> fun parts -> String.Join("; ", parts)

    /// Copies checkpoint tensors into the module's existing parameters and buffers (the Parameter objects are kept;
    /// values are copied under no_grad, converted to each parameter's dtype and device). Strict and all-or-nothing:
    /// if any key is missing, unexpected, duplicated or mis-shaped, nothing is copied and one `InputException`
    /// naming `file` lists every problem (`describe`).
    /// Shapes: each tensor must have its parameter's shape.
    let loadInto (file: string) (tensors: seq<string * torch.Tensor>) (m: torch.nn.Module) : unit =
        let tensors = List.ofSeq tensors
        let mismatch = mismatches tensors m

        if not (isEmpty mismatch) then
            InputError.raise file InputLocation.Whole ("the checkpoint does not match the module: " + describe mismatch)

        let given = dict tensors
        use _noGrad = torch.no_grad ()

        for name, target in stateDict m do
            target.copy_ given.[name] |> ignore

    /// Saves the module's state_dict as a safetensors file (atomically; see `Safetensors.write`), under the names
    /// `state_dict()` gives. `metadata` may be null.
    let save (path: string) (m: torch.nn.Module) (metadata: IReadOnlyDictionary<string, string>) : unit =
        Safetensors.write path (stateDict m) metadata

    /// Loads a safetensors file or a PyTorch checkpoint (`TensorFile`, told apart by content) strictly into the
    /// module: names and shapes are checked from the file's header first (any missing, unexpected, duplicated or
    /// mis-shaped tensor: one `InputException` naming `file` and listing every problem, nothing read), then each
    /// tensor is read straight into its parameter or buffer (no second copy of the weights; a dtype or device
    /// other than the file's gets a converted copy). A file that fails part-way (truncated) raises an
    /// `InputException` and leaves the module partly loaded.
    let load (path: string) (m: torch.nn.Module) : unit =
        let header = TensorFile.readHeader path
        let mismatch = mismatchesOfShapes (keyShapes m) header.Shapes

        if not (isEmpty mismatch) then
            InputError.raise path InputLocation.Whole ("the checkpoint does not match the module: " + describe mismatch)

        let targets = dict (stateDict m)
        use _noGrad = torch.no_grad ()
        TensorFile.readInto path (fun name -> targets.[name])
