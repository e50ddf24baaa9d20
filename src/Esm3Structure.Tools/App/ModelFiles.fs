namespace Esm3Structure.App

open System
open System.IO
open TorchSharp
open Esm3Structure.Models

/// The shipped models' files and how scripts load a model: a `--weights` flag (default: the shipped file of the
/// repository above the script) and a `--device` flag.
module ModelFiles =

    /// The shipped encoder, relative to the repository root (README, "The shipped tokenizer").
    [<Literal>]
    let DefaultEncoderPath = "models/structure-tokenizer/encoder.safetensors"

    /// The shipped decoder, relative to the repository root.
    [<Literal>]
    let DefaultDecoderPath = "models/structure-tokenizer/decoder.safetensors"

    /// The shipped multi-track model, relative to the repository root (README, "Generate").
    [<Literal>]
    let DefaultMultiTrackPath = "models/multitrack/multitrack.safetensors"

    /// The weights file to use: `given` when not null or empty, else one of the default paths above
    /// (`defaultRelative`) under `repositoryRoot`. A missing default file (an incomplete checkout) raises an
    /// `ArgumentException` naming it and saying to pass --weights. A given path is returned as is (its reader names it).
    let resolveWeights (repositoryRoot: string) (defaultRelative: string) (given: string) : string =
        if not (String.IsNullOrEmpty given) then
            given
        else
            let path = Path.Combine(repositoryRoot, defaultRelative)

            if File.Exists path then
                path
            else
                raise (
                    ArgumentException(
                        sprintf
                            "the shipped model %s is missing (incomplete checkout?): pass --weights FILE"
                            defaultRelative
                    )
                )

    /// Usage text of a script's `--weights` flag for a model kind ("encoder", "decoder") whose shipped file is
    /// `defaultRelative`.
    let weightsUsage (kind: string) (defaultRelative: string) =
        sprintf "%s file, safetensors or a PyTorch .pth such as ESM's (default: the shipped %s)" kind defaultRelative

    let private loadFor
        (load: string -> 'M)
        (defaultRelative: string)
        (scriptDir: string)
        (weights: string)
        (device: string)
        : 'M :> torch.nn.Module =
        let device = Cli.device device
        let m = load (resolveWeights (Cli.repositoryRoot scriptDir) defaultRelative weights)

        try
            m.``to`` device |> ignore
            m
        with _ ->
            m.Dispose()
            reraise ()

    /// What `scripts/tokenize.fsx` does with its `--weights` and `--device` (and `generate.fsx`,
    /// `evaluate-generation.fsx` with `--encoder`): the device parsed first (`Cli.device`: "cpu", "cuda", "cuda:N"),
    /// then `weights` resolved (null or "": the shipped `DefaultEncoderPath` of the repository above `scriptDir`, see
    /// `resolveWeights`), loaded (`StructureEncoderCheckpoint.load`) and moved there.
    let loadEncoderFor (scriptDir: string) (weights: string) (device: string) : StructureEncoder =
        loadFor StructureEncoderCheckpoint.load DefaultEncoderPath scriptDir weights device

    /// `loadEncoderFor` for the decoder (`DefaultDecoderPath`, `StructureDecoderCheckpoint.loadWith heads`, `heads`
    /// 0: not given): `scripts/decode.fsx`, and `generate.fsx`, `evaluate-generation.fsx` with `--decoder`.
    let loadDecoderFor (scriptDir: string) (weights: string) (heads: int) (device: string) : StructureDecoder =
        let heads = if heads = 0 then None else Some(int64 heads)
        loadFor (StructureDecoderCheckpoint.loadWith heads) DefaultDecoderPath scriptDir weights device

    /// What `scripts/generate.fsx` does with `--weights` and `--device`: the device parsed (`Cli.device`), `weights`
    /// resolved (null or "": the shipped `DefaultMultiTrackPath`), loaded (`MultiTrackCheckpoint.load`, safetensors
    /// or .pth) and moved there.
    let loadMultiTrackFor (scriptDir: string) (weights: string) (device: string) : MultiTrackModel =
        loadFor MultiTrackCheckpoint.load DefaultMultiTrackPath scriptDir weights device

    /// The SHA-256 of a file's bytes as 64 lowercase hex digits: how an evaluation record names the exact weights
    /// it was measured with (`scripts/evaluate-generation.fsx`).
    let sha256 (path: string) : string =
        use stream = File.OpenRead path
        Convert.ToHexString(Security.Cryptography.SHA256.HashData stream).ToLowerInvariant()
