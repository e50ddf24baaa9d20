module Esm3Structure.Tests.Tools.Checks.InvarianceTests

open Expecto
open TorchSharp
open Esm3Structure.Checks
open Esm3Structure.Structure
open Esm3Structure.Tests

[<Tests>]
let tests =
    testList
        "Checks/Invariance"
        [
            test "on real chains every SE(3) claim holds to float64 precision, and to float32 precision in float32" {
                let chains =
                    [
                        StructureFile.read (Data.small "1ubq_A") None
                        StructureFile.read (Data.small "1a8o_A") None
                    ]

                let rows =
                    Invariance.run
                        { InvarianceConfig.defaults with
                            Motions = 3
                            Seed = 5UL
                        }
                        chains

                Expect.equal rows.Length 8 "eight properties"

                for r in rows do
                    Expect.equal r.Cases 6 (r.Property + ": cases")
                    Expect.isLessThan r.MaxErrorFloat64 1e-9 (r.Property + " (float64)")
                    Expect.isLessThan r.MaxErrorFloat32 1e-3 (r.Property + " (float32)")

                let table = Invariance.format rows
                Expect.stringContains table "local coordinates" "table lists the properties"
            }
        ]
