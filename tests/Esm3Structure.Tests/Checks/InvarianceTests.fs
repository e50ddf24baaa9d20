module Esm3Structure.Tests.Checks.InvarianceTests

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
                        { InvarianceConfig.Default with
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

            test "a broken claim shows up: a chain whose motion is not rigid fails the report" {
                // Scale one chain's coordinates by 1.01 after the fact: distances change, so the check must see it.
                let chain = StructureFile.read (Data.small "1ubq_A") None

                let scaled =
                    { chain with
                        Atom37 = Array3D.map (fun (x: float32) -> x * 1.01f) chain.Atom37
                    }

                use a = ProteinChain.ca TorchSharp.torch.float64 chain
                use b = ProteinChain.ca TorchSharp.torch.float64 scaled
                let lddt = (Metrics.lddtCa b a None).Protein.ToDouble()
                Expect.isLessThan lddt 0.999 "LDDT sees a 1% scaling"
            }
        ]
