namespace Esm3Structure.Native

open System
open System.IO
open System.Runtime.InteropServices
open System.Text

/// Loads TorchSharp's native wrapper on systems whose libstdc++ is older than the one it was built against.
///
/// TorchSharp 0.107.0's `libLibTorchSharp.so` lists a requirement on `GLIBCXX_3.4.32` (GCC 13), while Debian 12's
/// libstdc++ stops at `GLIBCXX_3.4.30`. The only symbol behind that version (`std::ios_base_library_init()`) is
/// never bound (no relocation refers to it), so a private copy of the wrapper with that one requirement marked
/// weak (`VER_FLG_WEAK`) loads and works. We preload libtorch from the folder TorchSharp itself uses, then the
/// patched copy; TorchSharp's own loader then finds the wrapper already loaded (by soname).
///
/// The patch is applied only when the libstdc++ mapped into this process lacks a version the wrapper needs, and
/// only for versions in `weakenable`. The package cache is never modified. Delete this file once TorchSharp ships
/// a build for an older libstdc++.
module TorchNative =

    /// Version requirements that are known to be safe to weaken (no relocation binds a symbol of that version).
    let weakenable = set [ "GLIBCXX_3.4.32" ]

    /// One `Elf64_Vernaux` entry of a shared object's `.gnu.version_r` section.
    type VersionNeed =
        {
            /// The library that must provide the version, e.g. "libstdc++.so.6".
            File: string
            /// The version name, e.g. "GLIBCXX_3.4.32".
            Version: string
            /// `vna_flags` (2 = weak).
            Flags: uint16
            /// Byte offset of `vna_flags` in the file.
            FlagsOffset: int
        }

    let private verFlgWeak = 2us
    let private shtGnuVerneed = 0x6ffffffeu

    /// Reads the version requirements of an ELF64 little-endian shared object.
    let versionNeeds (data: byte[]) : VersionNeed list =
        let fail msg =
            raise (InvalidDataException(sprintf "not a readable ELF64 little-endian shared object: %s" msg))

        if
            data.Length < 64
            || data.[0] <> 0x7Fuy
            || data.[1] <> byte 'E'
            || data.[2] <> byte 'L'
            || data.[3] <> byte 'F'
        then
            fail "bad magic"

        if data.[4] <> 2uy || data.[5] <> 1uy then
            fail "not ELFCLASS64/ELFDATA2LSB"

        let check o n =
            if o < 0 || o + n > data.Length then
                fail (sprintf "offset %d out of range" o)

        let u16 o =
            check o 2
            BitConverter.ToUInt16(data, o)

        let u32 o =
            check o 4
            BitConverter.ToUInt32(data, o)

        let u64 o =
            check o 8
            int (BitConverter.ToUInt64(data, o))

        let cstr o =
            check o 1
            let e = Array.IndexOf(data, 0uy, o)

            if e < 0 then
                fail "unterminated string"

            Encoding.ASCII.GetString(data, o, e - o)

        let shoff, shentsize, shnum = u64 0x28, int (u16 0x3A), int (u16 0x3C)
        let section i = shoff + i * shentsize

        match
            [ 0 .. shnum - 1 ]
            |> List.tryFind (fun i -> u32 (section i + 4) = shtGnuVerneed)
        with
        | None -> []
        | Some verneed ->
            let vnStart = u64 (section verneed + 24)
            let strtab = u64 (section (int (u32 (section verneed + 40))) + 24)
            let count = int (u32 (section verneed + 44))

            [
                let mutable vn = vnStart

                for _ in 1..count do
                    let file = cstr (strtab + int (u32 (vn + 4)))
                    let mutable aux = vn + int (u32 (vn + 8))

                    for _ in 1 .. int (u16 (vn + 2)) do
                        yield
                            {
                                File = file
                                Version = cstr (strtab + int (u32 (aux + 8)))
                                Flags = u16 (aux + 4)
                                FlagsOffset = aux + 4
                            }

                        aux <- aux + int (u32 (aux + 12))

                    vn <- vn + int (u32 (vn + 12))
            ]

    /// Returns a copy of `data` with the named version requirements marked weak, and the versions changed.
    let markWeak (versions: Set<string>) (data: byte[]) : byte[] * string list =
        let copy = Array.copy data

        let changed =
            [
                for need in versionNeeds data do
                    if versions.Contains need.Version && need.Flags &&& verFlgWeak = 0us then
                        let flags = need.Flags ||| verFlgWeak
                        copy.[need.FlagsOffset] <- byte (flags &&& 0xFFus)
                        copy.[need.FlagsOffset + 1] <- byte (flags >>> 8)
                        yield need.Version
            ]

        copy, changed

    /// True when the ELF file's bytes define or mention the NUL-delimited version string.
    let mentionsVersion (path: string) (version: string) =
        let needle = Encoding.ASCII.GetBytes("\000" + version + "\000")
        let data = File.ReadAllBytes path
        data.AsSpan().IndexOf(ReadOnlySpan needle) >= 0

    /// The path of the libstdc++ mapped into this process (the .NET runtime links it), if any.
    let loadedLibstdcxx () : string option =
        try
            File.ReadLines "/proc/self/maps"
            |> Seq.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            |> Seq.tryPick (fun cols ->
                if cols.Length >= 6 && Path.GetFileName(cols.[5]).StartsWith "libstdc++.so" then
                    Some cols.[5]
                else
                    None)
        with _ ->
            None

    /// The libstdc++ versions the wrapper requires and the process's libstdc++ does not define.
    let missingLibstdcxxVersions (wrapper: string) : string list =
        match loadedLibstdcxx () with
        | None -> []
        | Some libstdcxx ->
            versionNeeds (File.ReadAllBytes wrapper)
            |> List.filter (fun n -> n.File.StartsWith "libstdc++" && n.Flags &&& verFlgWeak = 0us)
            |> List.map _.Version
            |> List.filter (fun v -> not (mentionsVersion libstdcxx v))

    /// What `ensureLoaded` did, for logs and tests.
    type LoadOutcome =
        /// Not Linux, or the wrapper's requirements are all met: TorchSharp loads by itself.
        | NotNeeded
        /// A patched copy of the wrapper was loaded from this path.
        | Patched of path: string * weakened: string list

    let private libtorchPreload =
        [ "libgomp-98b21ff3.so.1"; "libc10.so"; "libtorch_cpu.so"; "libtorch.so" ]

    let private lockObj = obj ()
    let mutable private outcome: LoadOutcome option = None

    /// The per-user cache folder for the patched copy (honours XDG_CACHE_HOME).
    let defaultCacheDir (torchSharpVersion: string) =
        let root =
            match Environment.GetEnvironmentVariable "XDG_CACHE_HOME" with
            | null
            | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache")
            | d -> d

        Path.Combine(root, "esm3structure", "torchsharp-" + torchSharpVersion)

    /// Preloads libtorch from `nativeDir` and a patched copy of `wrapper` (cached in `cacheDir`) where the system
    /// libstdc++ lacks a version the wrapper needs. Idempotent and thread-safe.
    /// Raises with a clear message when a missing version is not known to be safe to weaken.
    let ensureLoadedFrom (nativeDir: string) (wrapper: string) (cacheDir: string) : LoadOutcome =
        lock lockObj (fun () ->
            match outcome with
            | Some o -> o
            | None ->
                let result =
                    if
                        not (RuntimeInformation.IsOSPlatform OSPlatform.Linux)
                        || not (File.Exists wrapper)
                    then
                        NotNeeded
                    else
                        match missingLibstdcxxVersions wrapper with
                        | [] -> NotNeeded
                        | missing ->
                            let unsafe = missing |> List.filter (fun v -> not (weakenable.Contains v))

                            if not unsafe.IsEmpty then
                                failwithf
                                    "%s needs %s, which this system's libstdc++ (%s) lacks; only %A can be worked around. Install a newer libstdc++."
                                    wrapper
                                    (String.Join(", ", unsafe))
                                    (defaultArg (loadedLibstdcxx ()) "?")
                                    weakenable

                            for lib in libtorchPreload do
                                let p = Path.Combine(nativeDir, lib)

                                if File.Exists p then
                                    NativeLibrary.Load p |> ignore

                            Directory.CreateDirectory cacheDir |> ignore
                            let patched = Path.Combine(cacheDir, "libLibTorchSharp.so")
                            let original = File.ReadAllBytes wrapper
                            let bytes, weakened = markWeak (set missing) original

                            let upToDate =
                                File.Exists patched
                                && (FileInfo patched).Length = int64 bytes.Length
                                && (File.ReadAllBytes patched).AsSpan().SequenceEqual(ReadOnlySpan bytes)

                            if not upToDate then
                                let tmp = patched + "." + string Environment.ProcessId + ".tmp"
                                File.WriteAllBytes(tmp, bytes)
                                File.Move(tmp, patched, true)

                            NativeLibrary.Load patched |> ignore
                            Patched(patched, weakened)

                outcome <- Some result
                result)

    /// Where TorchSharp looks for natives next to an assembly (a built app, test exe or library output).
    let nativeDirBeside (assemblyDir: string) =
        Path.Combine(assemblyDir, "runtimes", "linux-x64", "native")

    /// Finds the native folder (next to this library, next to the app, or in the NuGet cache) and ensures loading.
    let ensureLoaded () : LoadOutcome =
        let torchAsm = typeof<TorchSharp.torch>.Assembly
        let version = torchAsm.GetName().Version
        let tsVersion = sprintf "%d.%d.%d" version.Major version.Minor version.Build

        let nugetRoot =
            match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
            | null
            | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
            | d -> d

        let candidates =
            [
                for dir in
                    [
                        Path.GetDirectoryName(typeof<LoadOutcome>.Assembly.Location)
                        AppContext.BaseDirectory
                        Path.GetDirectoryName torchAsm.Location
                    ] do
                    if not (String.IsNullOrEmpty dir) then
                        let native = nativeDirBeside dir
                        yield native, Path.Combine(native, "libLibTorchSharp.so")
                yield
                    Path.Combine(nugetRoot, "libtorch-cpu-linux-x64", "2.10.0", "runtimes", "linux-x64", "native"),
                    Path.Combine(
                        nugetRoot,
                        "torchsharp",
                        tsVersion,
                        "runtimes",
                        "linux-x64",
                        "native",
                        "libLibTorchSharp.so"
                    )
            ]

        match
            candidates
            |> List.tryFind (fun (dir, wrapper) -> File.Exists(Path.Combine(dir, "libtorch.so")) && File.Exists wrapper)
        with
        | Some(dir, wrapper) -> ensureLoadedFrom dir wrapper (defaultCacheDir tsVersion)
        | None -> NotNeeded
