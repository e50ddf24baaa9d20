// Converts a tensor file between PyTorch's checkpoint format (torch.save's zip, e.g. ESM's .pth) and safetensors.
// The input's format is told by its content; the output's by its extension (.pth or .pt: PyTorch; .safetensors).
// Tensor names, shapes, dtypes and values are kept exactly. PyTorch checkpoints carry no metadata: converting our
// safetensors to .pth drops it (e.g. a decoder's head width: pass --heads when loading such a file); the dropped keys
// are printed.
//   dotnet fsi scripts/convert.fsx --in FILE --out FILE
#load "_load.fsx"

open System
open System.IO
open Argu
open TorchSharp
open Esm3Structure.App
open Esm3Structure.Io

[<HelpFlags("--usage", "--help")>]
type Args =
    | [<Unique; Mandatory; AltCommandLine("-i")>] In of file: string
    | [<Unique; Mandatory; AltCommandLine("-o")>] Out of file: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | In _ -> "tensor file to read: a PyTorch checkpoint (.pth/.pt) or safetensors, told apart by content"
            | Out _ -> "file to write, atomically: .pth or .pt (PyTorch) or .safetensors"

Cli.run<Args> "convert.fsx" (fsi.CommandLineArgs |> Array.skip 1) (fun args ->
    let input = args.GetResult In
    let output = args.GetResult Out

    let toPyTorch =
        match Path.GetExtension(output).ToLowerInvariant() with
        | ".pth"
        | ".pt" -> true
        | ".safetensors" -> false
        | other ->
            raise (
                ArgumentException(
                    sprintf
                        "--out: '%s' ends in '%s'; expected .pth, .pt or .safetensors (the format to write)"
                        output
                        other
                )
            )

    if Path.GetFullPath input = Path.GetFullPath output then
        raise (ArgumentException "--out: the same file as --in")

    use _ = torch.NewDisposeScope()
    let file = TensorFile.read input

    if toPyTorch then
        PyTorchCheckpoint.write output file.Tensors

        if not file.Metadata.IsEmpty then
            printfn
                "note: PyTorch checkpoints hold no metadata; dropped %s"
                (String.Join(", ", file.Metadata |> Seq.map (fun kv -> kv.Key + "=" + kv.Value)))
    else
        Safetensors.write output file.Tensors (readOnlyDict (Map.toList file.Metadata))

    printfn
        "%s (%s) -> %s (%s): %d tensors"
        input
        (if TensorFile.isPyTorch input then
             "PyTorch"
         else
             "safetensors")
        output
        (if toPyTorch then "PyTorch" else "safetensors")
        file.Tensors.Length

    0)
|> exit
