/// Random rigid motions, point clouds and chains for the superposition and metric tests, plus the CA reader for the
/// real-data checks. Everything random takes an explicit generator.
module Esm3Structure.Tests.StructureTestKit

open System
open System.IO
open TorchSharp
open FsCheck.FSharp
open Esm3Structure.Tests

let f64 = torch.ScalarType.Float64
let f32 = torch.ScalarType.Float32

/// A float64 tensor of the given shape filled with `v`.
let filled (shape: int64[]) (v: float) =
    torch.full_like (torch.zeros (shape, dtype = f64), v)

/// A generator seeded from an FsCheck-drawn integer.
let generator (seed: int) = new torch.Generator(uint64 seed)

/// Uniform random rotations (the library's, tested in Geometry/RotationTests).
/// Shapes: -> [batch..., 3, 3] float64
let randomRotation (g: torch.Generator) (batch: int64[]) =
    Esm3Structure.Geometry.Rotation.random batch f64 torch.CPU g

/// Random translations with |t| uniform in [0, 100) Å and a uniform direction. Shapes: -> [batch..., 3] float64
let randomTranslation (g: torch.Generator) (batch: int64[]) =
    let dir = torch.randn (Array.append batch [| 3L |], dtype = f64, generator = g)
    let dir = dir / dir.square().sum(-1L, true).sqrt()

    let radius =
        torch.rand (Array.append batch [| 1L |], dtype = f64, generator = g) * 100.0

    dir * radius

/// A Gaussian point cloud (σ = 10 Å). Shapes: -> [batch..., n, 3] float64
let randomCloud (g: torch.Generator) (batch: int64[]) (n: int) =
    torch.randn (Array.append batch [| int64 n; 3L |], dtype = f64, generator = g)
    * 10.0

/// A random-walk "CA chain" with 3.8 Å steps in uniform directions. Shapes: -> [batch..., n, 3] float64
let randomChain (g: torch.Generator) (batch: int64[]) (n: int) =
    let steps =
        torch.randn (Array.append batch [| int64 n; 3L |], dtype = f64, generator = g)

    let steps = steps / steps.square().sum(-1L, true).sqrt() * 3.8
    steps.cumsum (-2L)

/// R x + t. Shapes: r [*, 3, 3], t [*, 3], x [*, n, 3] -> [*, n, 3]
let moveRigid (r: torch.Tensor) (t: torch.Tensor) (x: torch.Tensor) =
    x.matmul (r.transpose (-1L, -2L)) + t.unsqueeze -2L

/// A random bool mask with at least `atLeast` true entries per row. Shapes: -> [batch..., n] bool
let randomMask (g: torch.Generator) (batch: int64[]) (n: int) (atLeast: int) =
    let u = torch.rand (Array.append batch [| int64 n |], dtype = f64, generator = g)
    // keep the `atLeast` smallest draws plus about 70 % of the rest
    let struct (kth, _) = u.kthvalue (int64 atLeast, Nullable -1L, true)
    u.le(kth).logical_or(u.lt (torch.full_like (u, 0.7)))

/// FsCheck generator of (seed, size) cases.
let seedAndSize (lo: int) (hi: int) =
    gen {
        let! seed = Gen.choose (0, 1_000_000)
        let! n = Gen.choose (lo, hi)
        return seed, n
    }
    |> Arb.fromGen

/// The CA coordinates of a PDB file, parsed here on purpose (independent of the library's reader): lines starting
/// with "ATOM" whose atom name (columns 13-16) is " CA ", coordinates from columns 31-54. Shapes: -> [L, 3] float64
let readCa (path: string) =
    let rows =
        File.ReadLines path
        |> Seq.filter (fun l -> l.StartsWith "ATOM" && l.Length >= 54 && l.Substring(12, 4) = " CA ")
        |> Seq.map (fun l ->
            let c (start: int) =
                Double.Parse(l.Substring(start, 8), Globalization.CultureInfo.InvariantCulture)

            [| c 30; c 38; c 46 |])
        |> Array.concat

    torch.tensor(rows, dtype = f64).reshape(-1L, 3L)

/// 1ubq chain A CA trace (76 residues).
let ubiquitinCa () = readCa (Data.small "1ubq_A")

/// Inserts `k` junk rows (NaN in `a`, large/NaN values in `b`) at random positions along dim -2 of [n, 3] tensors and
/// returns (a', b', mask') where mask' is false exactly at the junk rows.
let withJunkRows (g: torch.Generator) (k: int) (a: torch.Tensor) (b: torch.Tensor) =
    let n = int a.shape.[0]
    let total = n + k
    let order = torch.randperm (int64 total, generator = g)
    let isJunk = order.lt (torch.full_like (order, int64 k)) // a random set of k positions
    let junkA = filled [| int64 total; 3L |] Double.NaN

    let junkB =
        torch.cat ([| filled [| 1L; 3L |] Double.NaN; filled [| int64 total - 1L; 3L |] 1e30 |], 0L)

    let real = isJunk.logical_not().nonzero().squeeze -1L
    let a' = junkA.index_copy (0L, real, a)
    let b' = junkB.index_copy (0L, real, b)
    a', b', isJunk.logical_not ()
