namespace Esm3Structure.Checks

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Esm3Structure.Io
open Esm3Structure.Models

/// One row of the checkpoint-load benchmark.
type LoadBenchRow =
    {
        /// "safetensors" or "PyTorch .pth"; "none" for building the model alone.
        Format: string
        /// What was timed, e.g. "MultiTrackCheckpoint.load (read into the parameters)".
        Method: string
        FileBytes: int64
        Seconds: float
        /// Peak resident memory above what the process held before (`Bench.peakBytes`).
        PeakBytes: int64
    }

/// One row of the multi-track forward benchmark.
type ForwardBenchRow =
    {
        Length: int64
        Milliseconds: float
        /// The counted matrix products of one forward pass (`LoadBench.forwardGFlop`).
        GFlop: float
        GFlops: float
        PeakBytes: int64
    }

/// Checkpoint loading and one forward pass at a real model size (ESM3-open's: 1.4B parameters), for
/// `scripts/bench.fsx --sections load`. Figures are printed, never asserted.
module LoadBench =

    /// Bytes of the model's tensors as stored (every parameter and buffer of the state dict at 4 bytes, float32).
    let tensorBytes (config: MultiTrackConfig) =
        MultiTrackCheckpoint.expectedKeys config
        |> List.sumBy (fun (_, s) -> 4L * Array.fold (*) 1L s)

    /// The matrix products of one forward pass of B = 1, length `l`: 2 · l · (weights of every rank-2 tensor outside
    /// the input embeddings) plus each block's attention, 2 · 2 · l² · d (scores and weighted sum), in GFLOP.
    let forwardGFlop (config: MultiTrackConfig) (l: int64) =
        let weights =
            MultiTrackCheckpoint.expectedKeys config
            |> List.filter (fun (name, s) -> s.Length = 2 && not (name.StartsWith "encoder."))
            |> List.sumBy (fun (_, s) -> s.[0] * s.[1])

        (2.0 * float l * float weights
         + 4.0 * float l * float l * float config.DModel * float config.Layers)
        / 1e9

    /// Seconds and peak memory of one call of `f`.
    let private measure (f: unit -> unit) =
        let watch = Stopwatch()

        let peak =
            Bench.peakBytes (fun () ->
                watch.Start()
                f ()
                watch.Stop())

        watch.Elapsed.TotalSeconds, peak

    /// Builds a randomly initialised model of `config` and runs one forward pass of B = 1 at each length (a random
    /// sequence between BOS and EOS, every other track absent, no gradients; `warmup` passes at the first length
    /// first; then each pass's peak memory), then writes its state dict as `model.safetensors` and `model.pth` into `dir`. Returns the forward
    /// rows and the two files (format, path).
    let buildRunAndWrite
        (config: MultiTrackConfig)
        (lengths: int64 list)
        (warmup: int)
        (dir: string)
        (log: string -> unit)
        =
        use generator = new torch.Generator(2024UL)
        log "building the model (random init)"
        let build = Stopwatch.StartNew()
        use model = new MultiTrackModel(config, generator)
        model.eval ()
        log (sprintf "built in %.1f s" build.Elapsed.TotalSeconds)

        let random = Random 2024

        let input (l: int64) =
            let ids =
                Array.init (int l) (fun i ->
                    if i = 0 then 0L
                    elif i = int l - 1 then 2L
                    else int64 (random.Next(4, 24)))

            { MultiTrackInput.absent 1L l torch.CPU with
                Sequence = torch.tensor(ids).unsqueeze 0L
            }

        let forward (l: int64) =
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            model.forward (input l) |> ignore

        match lengths with
        | first :: _ ->
            for _ in 1..warmup do
                forward first
        | [] -> ()

        let rows =
            [
                for l in lengths do
                    log (sprintf "forward, L %d" l)
                    let watch = Stopwatch.StartNew()
                    forward l
                    let ms = watch.Elapsed.TotalMilliseconds
                    let gflop = forwardGFlop config l

                    {
                        Length = l
                        Milliseconds = ms
                        GFlop = gflop
                        GFlops = gflop / (ms / 1000.0)
                        PeakBytes = 0L
                    }
            ]
            // Peaks after every timing (measuring a peak fixes the allocator, see `Bench.peakBytes`).
            |> List.map (fun r ->
                { r with
                    PeakBytes = snd (measure (fun () -> forward r.Length))
                })

        let state = Checkpoint.stateDict model
        let safetensors = Path.Combine(dir, "model.safetensors")
        let pth = Path.Combine(dir, "model.pth")
        log "writing model.safetensors"
        Safetensors.write safetensors state null
        log "writing model.pth"
        PyTorchCheckpoint.write pth state

        for _, t in state do
            t.Dispose()

        rows, [ "safetensors", safetensors; "PyTorch .pth", pth ]

    /// Times and peak memory of: building the model alone (random init, no file); `MultiTrackCheckpoint.load` of
    /// each file (build without the random re-initialisation, then every tensor read straight into its parameter);
    /// and, as the baseline, build then read the whole file into fresh tensors and copy them in (`TensorFile.read` +
    /// `Checkpoint.loadInto`, the loader that `MultiTrackCheckpoint.load` replaced). The files are in the page cache
    /// (just written): these are not cold-disk times.
    let loads (config: MultiTrackConfig) (files: (string * string) list) (log: string -> unit) =
        let build () =
            use generator = new torch.Generator(0UL)
            new MultiTrackModel(config, generator)

        [
            log "building alone"
            let seconds, peak = measure (fun () -> (build ()).Dispose())

            {
                Format = "none"
                Method = "build the model (random init), no file"
                FileBytes = 0L
                Seconds = seconds
                PeakBytes = peak
            }

            for format, path in files do
                let size = FileInfo(path).Length
                log (sprintf "%s: MultiTrackCheckpoint.load" format)
                let seconds, peak = measure (fun () -> (MultiTrackCheckpoint.load path).Dispose())

                {
                    Format = format
                    Method = "MultiTrackCheckpoint.load: build (no re-init), read into the parameters"
                    FileBytes = size
                    Seconds = seconds
                    PeakBytes = peak
                }

                log (sprintf "%s: read whole, then copy (baseline)" format)

                let seconds, peak =
                    measure (fun () ->
                        use model = build ()
                        use _ = torch.NewDisposeScope()
                        Checkpoint.loadInto path (TensorFile.read path).Tensors model)

                {
                    Format = format
                    Method = "baseline: build, read into fresh tensors, copy"
                    FileBytes = size
                    Seconds = seconds
                    PeakBytes = peak
                }
        ]

    /// The load table: seconds, the file's size over them, and peak memory as a multiple of the tensors' size.
    let formatLoads (tensorBytes: int64) (rows: LoadBenchRow list) =
        let gib (b: int64) = float b / float (1L <<< 30)

        let line (r: LoadBenchRow) =
            sprintf
                "| %s | %s | %s | %.1f | %s | %.2f | %.2f× |"
                r.Format
                r.Method
                (if r.FileBytes > 0L then
                     sprintf "%.2f" (gib r.FileBytes)
                 else
                     "–")
                r.Seconds
                (if r.FileBytes > 0L then
                     sprintf "%.2f" (gib r.FileBytes / r.Seconds)
                 else
                     "–")
                (gib r.PeakBytes)
                (float r.PeakBytes / float tensorBytes)

        String.Join(
            "\n",
            [
                "| format | method | file GiB | seconds | file GiB / s | peak GiB | peak / tensors |"
                "|---|---|---:|---:|---:|---:|---:|"
                yield! rows |> List.map line
            ]
        )

    /// The forward table with the matmul ceiling measured in the same run.
    let formatForward (ceilingGFlops: float) (rows: ForwardBenchRow list) =
        String.Join(
            "\n",
            [
                "| L | ms | GFLOP (counted) | GFLOP/s | % of matmul | peak GiB |"
                "|---:|---:|---:|---:|---:|---:|"
                for r in rows do
                    sprintf
                        "| %d | %.0f | %.0f | %.1f | %.0f%% | %.2f |"
                        r.Length
                        r.Milliseconds
                        r.GFlop
                        r.GFlops
                        (100.0 * r.GFlops / ceilingGFlops)
                        (float r.PeakBytes / float (1L <<< 30))
            ]
        )
