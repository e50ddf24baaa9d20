namespace Esm3Structure.Io

open TorchSharp

/// The names, shapes and metadata of a tensor file.
type TensorFileHeader =
    {
        /// (name, shape) in the file's order.
        Shapes: (string * int64[]) list
        /// Safetensors' `__metadata__`; empty for a PyTorch checkpoint, which has none.
        Metadata: Map<string, string>
    }

/// Tensor files in either format every loader accepts, told apart by content, not by extension: a zip file is a
/// PyTorch checkpoint (`PyTorchCheckpoint`, e.g. ESM's `.pth`), anything else is read as safetensors (`Safetensors`,
/// with its own validation and errors).
module TensorFile =

    /// The file `stem` of `folder` in either format: `stem.safetensors` if present, else `stem.pth`, else `stem.pt`;
    /// None when there is none (e.g. `inFolder "runs/x" "encoder"`).
    let inFolder (folder: string) (stem: string) =
        [ ".safetensors"; ".pth"; ".pt" ]
        |> List.map (fun ext -> System.IO.Path.Combine(folder, stem + ext))
        |> List.tryFind System.IO.File.Exists

    /// True when `path` holds a PyTorch checkpoint (a zip file) rather than safetensors.
    let isPyTorch (path: string) = PyTorchCheckpoint.isZip path

    /// The tensors and metadata. The tensors belong to the caller's dispose scope, if one is open.
    let read (path: string) : SafetensorsFile =
        if isPyTorch path then
            {
                Tensors = PyTorchCheckpoint.read path
                Metadata = Map.empty
            }
        else
            Safetensors.read path

    /// Names, shapes and metadata, without reading any tensor data (safetensors: the header; a PyTorch
    /// checkpoint: its pickle).
    let readHeader (path: string) : TensorFileHeader =
        if isPyTorch path then
            {
                Shapes = PyTorchCheckpoint.entries path |> List.map (fun (n, t) -> n, t.Shape)
                Metadata = Map.empty
            }
        else
            let header = Safetensors.readHeader path

            {
                Shapes = header.Entries |> List.map (fun e -> e.Name, e.Shape)
                Metadata = header.Metadata
            }

    /// Reads every tensor of the file into `into name`, an existing tensor of its shape, straight from the file
    /// where the target is a contiguous CPU tensor of the stored dtype (`Safetensors.readInto`,
    /// `PyTorchCheckpoint.readInto`). The caller checks names and shapes first (`Checkpoint.load`).
    let readInto (path: string) (into: string -> torch.Tensor) : unit =
        if isPyTorch path then
            PyTorchCheckpoint.readInto path into
        else
            Safetensors.readInto path into
