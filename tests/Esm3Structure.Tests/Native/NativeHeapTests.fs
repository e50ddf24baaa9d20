module Esm3Structure.Tests.Native.NativeHeapTests

open System
open Expecto
open Esm3Structure.Native

[<Tests>]
let tests =
    testList
        "Native/NativeHeap"
        [
            test "scopes nest, and disposing one twice counts once" {
                if OperatingSystem.IsLinux() then
                    Expect.isFalse (NativeHeap.isRetaining ()) "no scope open before"
                    let outer = NativeHeap.retainFreedMemory ()
                    let inner = NativeHeap.retainFreedMemory ()
                    Expect.isTrue (NativeHeap.isRetaining ()) "two scopes open"
                    inner.Dispose()
                    inner.Dispose()
                    Expect.isTrue (NativeHeap.isRetaining ()) "the outer scope is still open"
                    outer.Dispose()
                    Expect.isFalse (NativeHeap.isRetaining ()) "all scopes closed"
            }
        ]
