module Esm3Structure.Tests.Native.NativeHeapTests

open System.Threading.Tasks
open Expecto
open Esm3Structure.Native

// What a scope does on the process's first thread is checked in a child script (Scripts/NativeHeap): the suite's
// tests run on worker threads.
[<Tests>]
let tests =
    testList
        "Native/NativeHeap"
        [
            test "on a worker thread a scope changes nothing" {
                let onWorker =
                    Task
                        .Run(fun () ->
                            let first = NativeHeap.isMainThread ()
                            use _ = NativeHeap.retainFreedMemory ()
                            first, NativeHeap.isRetaining ())
                        .Result

                Expect.equal onWorker (false, false) "not the first thread; not retaining"
            }
        ]
