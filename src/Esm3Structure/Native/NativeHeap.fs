namespace Esm3Structure.Native

open System
open System.Runtime.InteropServices

/// The C heap that libtorch's CPU tensors are allocated from (glibc's malloc on Linux).
///
/// glibc serves every allocation larger than its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it
/// with `munmap` when freed. A training step of the `small` tokenizer preset allocates and frees dozens of
/// [B, L, L, ·] pair tensors of 30–120 MiB, so each step maps hundreds of MiB anew and touches every 4 KiB page
/// once through a page fault: a `perf` profile of that step spends about a quarter of its samples in the kernel's
/// page-fault handler, and the step's system time is over half its user time. Keeping freed memory in the heap
/// lets the next step reuse the same pages. What a step computes is unchanged; only where its tensors live is.
module NativeHeap =

    module private Libc =
        // glibc's `mallopt(3)`; the file name is glibc's soname on Linux.
        [<DllImport("libc.so.6", EntryPoint = "mallopt")>]
        extern int mallopt(int param, int value)

        // glibc's `gettid(2)` wrapper (glibc 2.30 and later).
        [<DllImport("libc.so.6", EntryPoint = "gettid")>]
        extern int gettid()

        // glibc's `malloc_trim(3)`: returns free memory at the top of the heap (and whole free pages) to the system.
        [<DllImport("libc.so.6", EntryPoint = "malloc_trim")>]
        extern int malloc_trim(unativeint pad)

    // mallopt parameters, from glibc's <malloc.h>.
    let private mTrimThreshold = -1
    let private mMmapThreshold = -3
    let private mMmapMax = -4

    // glibc's defaults (malloc/malloc.c: DEFAULT_MMAP_MAX 65536, DEFAULT_MMAP_THRESHOLD and DEFAULT_TRIM_THRESHOLD
    // 128 KiB).
    let private defaultMmapMax = 65536
    let private defaultMmapThreshold = 128 * 1024
    let private defaultTrimThreshold = 128 * 1024

    let private lockObj = obj ()
    let mutable private depth = 0

    /// `call ()` on Linux, where glibc's entry points exist; `otherwise` elsewhere or where they are missing.
    let private onGlibc (otherwise: 'T) (call: unit -> 'T) : 'T =
        if RuntimeInformation.IsOSPlatform OSPlatform.Linux then
            try
                call ()
            with
            | :? DllNotFoundException
            | :? EntryPointNotFoundException -> otherwise
        else
            otherwise

    let private setRetaining (retain: bool) =
        onGlibc false (fun () ->
            if retain then
                Libc.mallopt (mMmapMax, 0) = 1
                && Libc.mallopt (mTrimThreshold, Int32.MaxValue) = 1
            else
                Libc.mallopt (mMmapMax, defaultMmapMax) = 1
                && Libc.mallopt (mTrimThreshold, defaultTrimThreshold) = 1)

    /// Returns the heap's free memory to the system (`malloc_trim`), whether or not a `retainFreedMemory` scope is
    /// open: the pages of free blocks are released, so resident memory falls to what live tensors hold. The next
    /// allocations fault their pages in again. Does nothing outside Linux's glibc.
    let releaseFree () =
        onGlibc () (fun () -> Libc.malloc_trim 0un |> ignore)

    /// The opposite policy, for measuring a computation's peak memory: every block above 128 KiB (glibc's default
    /// threshold, here fixed: glibc otherwise raises it after frees and keeps large blocks in the heap) is mapped on
    /// its own and returned to the system when freed, so resident memory follows the live tensors. For the rest of
    /// the process; allocations then cost more. False where `mallopt` is absent.
    let returnFreedMemory () : bool =
        onGlibc false (fun () -> Libc.mallopt (mMmapThreshold, defaultMmapThreshold) = 1)

    /// Whether the calling thread is the process's first (Linux: its thread id is the process id). glibc serves
    /// that thread from its main heap; every other thread gets an arena of heaps of at most 64 MiB each.
    let isMainThread () =
        onGlibc false (fun () -> Libc.gettid () = Environment.ProcessId)

    /// Whether freed native memory is being kept for reuse now (inside a `retainFreedMemory` scope, on glibc).
    let isRetaining () = lock lockObj (fun () -> depth > 0)

    /// Keeps freed native memory in the process until the returned scope is disposed: no allocation is served by
    /// `mmap` and the heap is never trimmed, so a loop that allocates the same large tensors again and again (a
    /// training loop) reuses pages instead of faulting in fresh ones. Resident memory then never falls during the
    /// loop, and as tensors of different sizes fragment the heap it grows until it levels off (the `small`
    /// tokenizer preset: about 6.7 GB after 200 steps; under glibc's defaults 3.6 GB at step 100, still rising).
    /// Disposing lets glibc map large blocks again, sets its default trim threshold (128 KiB; glibc no longer adjusts
    /// its thresholds after frees once they have been set) and returns the free memory to the system. Scopes nest.
    ///
    /// It acts only when opened on the process's first thread (`isMainThread`: the scripts and a console app's
    /// `Main` train there), and outside Linux's glibc it does nothing. On other threads it would slow training down:
    /// their arenas cannot hold blocks over 64 MiB, and without `mmap` for the rest their heaps are created and torn
    /// down again and again (the suite's training tests, which run on worker threads, took 1.8× as long with it).
    let retainFreedMemory () : IDisposable =
        let entered =
            lock lockObj (fun () ->
                if isMainThread () then
                    if depth = 0 && not (setRetaining true) then
                        false
                    else
                        depth <- depth + 1
                        true
                else
                    false)

        let mutable disposed = false

        { new IDisposable with
            member _.Dispose() =
                lock lockObj (fun () ->
                    if entered && not disposed then
                        disposed <- true
                        depth <- depth - 1

                        if depth = 0 then
                            setRetaining false |> ignore
                            releaseFree ())
        }
