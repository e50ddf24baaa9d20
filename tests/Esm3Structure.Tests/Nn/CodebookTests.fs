module Esm3Structure.Tests.Nn.CodebookTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Esm3Structure.Nn
open Esm3Structure.Tests

/// One random search problem: N vectors and K codes of width D, a distance budget in bytes, and a seed.
type SearchCase =
    {
        Seed: uint64
        N: int64
        K: int64
        D: int64
        Budget: int64
    }

let private searchCase =
    gen {
        let! seed = Gen.choose (0, Int32.MaxValue)
        let! n = Gen.choose (1, 40)
        let! k = Gen.choose (1, 24)
        let! d = Gen.choose (1, 6)
        // from below one element up to more than the whole float64 matrix
        let! budget =
            Gen.oneof
                [
                    Gen.choose (1, 16)
                    Gen.choose (8, 8 * 24 * 3)
                    Gen.choose (1, 8 * 40 * 24 + 100)
                ]

        return
            {
                Seed = uint64 seed
                N = int64 n
                K = int64 k
                D = int64 d
                Budget = int64 budget
            }
    }
    |> Arb.fromGen

let private config =
    { Props.baseConfig with
        maxTest = Props.cases
    }

let private f64 = torch.float64

let private rows (t: torch.Tensor) : float[][] =
    let d = t.shape.[1]
    let flat = t.to_type(f64).contiguous().data<float>().ToArray()
    Array.chunkBySize (int d) flat

/// ‖z − e‖² in plain doubles, and the first index of the minimum (a strict < scan).
let private bruteForce (z: float[][]) (codes: float[][]) =
    z
    |> Array.map (fun zi ->
        let dist =
            codes
            |> Array.map (fun e -> Array.fold2 (fun acc a b -> acc + (a - b) * (a - b)) 0.0 zi e)

        let mutable best = 0

        for k in 1 .. dist.Length - 1 do
            if dist.[k] < dist.[best] then
                best <- k

        best, dist)

let private indices (t: torch.Tensor) =
    t.data<int64>().ToArray() |> Array.map int

let private draw (c: SearchCase) (dtype: torch.ScalarType) =
    let g = new torch.Generator(c.Seed)
    let z = torch.randn ([| c.N; c.D |], dtype = dtype, generator = g)
    let codes = torch.randn ([| c.K; c.D |], dtype = dtype, generator = g)
    z, codes

/// Small integer entries in -2..2: exact arithmetic, frequent exact ties and duplicated codes.
let private drawIntegers (c: SearchCase) =
    let g = new torch.Generator(c.Seed)

    let ints (shape: int64[]) =
        torch.randint(-2L, 3L, shape, generator = g).to_type(f64)

    ints [| c.N; c.D |], ints [| c.K; c.D |]

[<Tests>]
let tests =
    testList
        "Nn/Codebook"
        [
            test "torch.argmin returns the first index of a repeated minimum (the tie rule we follow)" {
                use _ = torch.NewDisposeScope()
                let t = torch.tensor ([| 3.0; 1.0; 1.0; 2.0; 1.0 |])
                Expect.equal (t.argmin().ToInt64()) 1L "first of three minima"
                let m = torch.tensor([| 2.0; 0.5; 0.5; 9.0; 0.5; 0.5 |]).reshape(2L, 3L)
                Expect.sequenceEqual (indices (m.argmin (1L))) [| 1; 1 |] "per row"
            }

            testPropertyWithConfig config "nearest code equals brute force over random codebooks (float64)"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()
                let z, codes = draw c f64
                let got = indices (Codebook.nearestCodes c.Budget z codes)

                for n, (best, dist) in Array.indexed (bruteForce (rows z) (rows codes)) do
                    // the expanded form may only differ on a near-tie (relative gap < 1e-12)
                    if got.[n] <> best then
                        let gap = abs (dist.[got.[n]] - dist.[best]) / max 1.0 dist.[best]
                        Expect.isLessThan gap 1e-12 (sprintf "row %d: got code %d, brute force %d" n got.[n] best))

            testPropertyWithConfig config "exact ties go to the lowest index, for every budget (integer codebooks)"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()
                let z, codes = drawIntegers c
                let expected = bruteForce (rows z) (rows codes) |> Array.map fst
                Expect.sequenceEqual (indices (Codebook.nearestCodes c.Budget z codes)) expected "chunked"
                Expect.sequenceEqual (indices (Codebook.nearestCodesNaive z codes)) expected "naive (ESM's argmin)")

            testPropertyWithConfig
                config
                "chunked search equals the unchunked one for random budgets (float64, float32)"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()

                for dtype in [ f64; torch.float32 ] do
                    let z, codes = draw c dtype

                    Expect.sequenceEqual
                        (indices (Codebook.nearestCodes c.Budget z codes))
                        (indices (Codebook.nearestCodesNaive z codes))
                        (sprintf "%O" dtype))

            testPropertyWithConfig config "distance blocks respect the budget and are as large as it allows"
            <| Prop.forAll
                (Arb.fromGen (
                    gen {
                        let! n = Gen.choose (1, 5000)
                        let! k = Gen.choose (1, 5000)
                        let! budget = Gen.choose (1, 1 <<< 24)
                        let! size = Gen.elements [ 2; 4; 8 ]
                        return n, k, budget, size
                    }
                ))
                (fun (n, k, budget, size) ->
                    let n, k, budget, size = int64 n, int64 k, int64 budget, int64 size
                    let b = Codebook.distanceBlocks budget size n k
                    Expect.isTrue (b.Rows >= 1L && b.Rows <= n) "rows in 1..N"
                    Expect.isTrue (b.Columns >= 1L && b.Columns <= k) "columns in 1..K"
                    Expect.equal b.BlockBytes (b.Rows * b.Columns * size) "block bytes"
                    Expect.isLessThanOrEqual b.BlockBytes (max budget size) "within the budget (or one element)"

                    if b.Columns < k then
                        Expect.equal b.Rows 1L "column chunks only when not even one row fits"
                        Expect.isGreaterThan ((b.Columns + 1L) * size) budget "as many columns as fit"
                    elif b.Rows < n then
                        Expect.isGreaterThan ((b.Rows + 1L) * k * size) budget "as many rows as fit"

                    if n * k * size <= budget then
                        Expect.equal (b.Rows, b.Columns) (n, k) "the whole matrix when it fits")

            test
                "65,536 vectors against 4096 codes in float32 with a 64 MiB budget: 16 blocks of 4096 rows, never 1 GiB" {
                let b = Codebook.distanceBlocks (64L <<< 20) 4L 65536L 4096L
                Expect.equal (b.Rows, b.Columns) (4096L, 4096L) "4096 × 4096 blocks"
                Expect.equal b.BlockBytes (64L <<< 20) "64 MiB"
                Expect.isLessThan b.BlockBytes (65536L * 4096L * 4L) "the full matrix is never built"
                Expect.equal (Codebook.distanceBlocks 3L 4L 10L 10L).BlockBytes 4L "a budget below one element: 1 × 1"

                Expect.throwsT<ArgumentOutOfRangeException>
                    (fun () -> Codebook.distanceBlocks 0L 4L 1L 1L |> ignore)
                    "zero"
            }

            testPropertyWithConfig config "E8: E[tok] equals z_q to 1 ulp; straight-through gradient is the identity"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()

                for dtype in [ f64; torch.float32 ] do
                    let z0, codes0 = draw c dtype
                    let z = z0.requires_grad_ (true)
                    let codes = codes0.requires_grad_ (true)
                    let tok = Codebook.nearestCodes c.Budget (z.detach ()) (codes.detach ())
                    let e = Codebook.lookup codes tok
                    let zq = Codebook.straightThrough z e
                    let eps = torch.finfo(dtype).eps
                    let ulp = eps * torch.maximum(z.abs (), e.abs ()).detach()
                    let err = (zq - e).abs().detach()
                    Expect.isTrue (err.le(ulp).all().ToBoolean()) (sprintf "%O: |z_q − e| ≤ 1 ulp" dtype)

                    let upstream =
                        torch.randn (zq.shape, dtype = dtype, generator = new torch.Generator(c.Seed + 1UL))

                    (zq * upstream).sum().backward()
                    Expect.equal (Tol.maxAbsDiff z.grad upstream) 0.0 (sprintf "%O: dL/dz = dL/dz_q exactly" dtype)

                    Expect.isTrue
                        (isNull codes.grad || codes.grad.abs().max().ToDouble() = 0.0)
                        "no gradient reaches the codes through z_q")

            testPropertyWithConfig config "E8: commitment = β·MSE ≥ 0, and 0 iff z is a code (float64)"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()
                let z, codes = draw c f64
                let e = Codebook.lookup codes (Codebook.nearestCodes c.Budget z codes)
                let commit = Codebook.commitmentLoss 0.25 z e None
                let mse = (z - e).square().mean()
                Tol.close "β·MSE" 1e-15 commit (0.25 * mse)
                Expect.isGreaterThan (commit.ToDouble()) 0.0 "random z is not a code"

                let onCodes =
                    codes.index_select (
                        0L,
                        torch.randint (0L, c.K, [| c.N |], generator = new torch.Generator(c.Seed))
                    )

                let e2 = Codebook.lookup codes (Codebook.nearestCodes c.Budget onCodes codes)
                Expect.equal ((Codebook.commitmentLoss 0.25 onCodes e2 None).ToDouble()) 0.0 "z on codes")

            test "one-hot product (the seed's z_q = Y E) equals the lookup exactly; Y is [B·L, K] one-hot" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(11UL)
                let codes = torch.randn ([| 9L; 5L |], dtype = f64, generator = g)
                let z = torch.randn ([| 2L; 7L; 5L |], dtype = f64, generator = g)
                let tok = (Codebook.nearestCodes 1000L (z.reshape (-1L, 5L)) codes)
                let y = Codebook.oneHot 9L f64 tok
                Expect.sequenceEqual y.shape [| 14L; 9L |] "[B·L, K]"
                Tol.close "rows sum to 1" 0.0 (y.sum (1L)) (torch.ones ([| 14L |], dtype = f64))
                let viaOneHot = (Codebook.lookupOneHot codes y).reshape(2L, 7L, 5L)
                let viaIndex = Codebook.lookup codes (tok.reshape (2L, 7L))
                Expect.equal (Tol.maxAbsDiff viaOneHot viaIndex) 0.0 "identical"

                Tol.close
                    "soft lookup of one-hot weights"
                    0.0
                    (Codebook.softLookup codes y)
                    (viaOneHot.reshape (14L, 5L))
            }

            test "standard and seed losses have equal values but put β on different gradients" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(12UL)
                let beta = 0.3

                for form in [ VqLossForm.Standard; VqLossForm.SeedBetaOnCodebookTerm ] do
                    let z =
                        torch.randn([| 3L; 4L; 2L |], dtype = f64, generator = g).requires_grad_(true)

                    let e =
                        torch.randn([| 3L; 4L; 2L |], dtype = f64, generator = g).requires_grad_(true)

                    let loss = Codebook.vqLoss form beta z e None
                    let mse = (z - e).square().mean()
                    Tol.close "value (1 + β)·MSE" 1e-15 loss ((1.0 + beta) * mse)
                    loss.backward ()
                    let unit = 2.0 * (z - e).detach() / float (z.numel ())
                    let zWeight, eWeight = if form = VqLossForm.Standard then beta, 1.0 else 1.0, beta
                    Tol.close (sprintf "%O: dL/dz" form) 1e-15 z.grad (zWeight * unit)
                    Tol.close (sprintf "%O: dL/de" form) 1e-15 e.grad (-eWeight * unit)
            }

            test "masked losses average over the real rows only" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(13UL)
                let z = torch.randn ([| 2L; 5L; 3L |], dtype = f64, generator = g)
                let e = torch.randn ([| 2L; 5L; 3L |], dtype = f64, generator = g)

                let mask =
                    torch.tensor([| true; false; true; true; false; false; false; true; false; true |]).reshape(2L, 5L)

                let expected = (z - e).square().sum(-1L).masked_select(mask).mean() / 3.0
                Tol.close "masked" 1e-15 (Codebook.maskedMse z e (Some mask)) expected
                Tol.close "commitment" 1e-15 (Codebook.commitmentLoss 0.25 z e (Some mask)) (0.25 * expected)
                let none = torch.zeros ([| 2L; 5L |], dtype = torch.ScalarType.Bool)
                Expect.equal ((Codebook.maskedMse z e (Some none)).ToDouble()) 0.0 "empty mask: 0"
            }

            test "E9: perplexity of uniform use of k codes is k, of one code 1 (float64 to 1e-12)" {
                use _ = torch.NewDisposeScope()

                for k in [ 1L; 2L; 3L; 7L; 64L ] do
                    let tok = torch.arange(k, dtype = torch.int64).repeat([| 5L |])
                    let ppl = (Codebook.perplexity 100L tok None).ToDouble()
                    Expect.floatClose { absolute = 0.0; relative = 1e-12 } ppl (float k) (sprintf "uniform over %d" k)

                let single = torch.full ([| 40L |], (17L).ToScalar(), dtype = torch.int64)
                Expect.equal ((Codebook.perplexity 64L single None).ToDouble()) 1.0 "one code"
                let mask = torch.arange(40L).lt((20L).ToScalar())

                let mixed =
                    torch.cat (
                        [|
                            torch.full ([| 20L |], (3L).ToScalar(), dtype = torch.int64)
                            torch.arange (20L, dtype = torch.int64)
                        |]
                    )

                Expect.equal ((Codebook.perplexity 64L mixed (Some mask)).ToDouble()) 1.0 "masked rows don't count"
            }

            testPropertyWithConfig config "E9: perplexity is in [1, K]"
            <| Prop.forAll searchCase (fun c ->
                use _ = torch.NewDisposeScope()

                let skew =
                    torch.rand([| c.N |], dtype = f64, generator = new torch.Generator(c.Seed)).square()

                let tok =
                    (skew * float c.K).floor().to_type(torch.int64).clamp_max((c.K - 1L).ToScalar())

                let ppl = (Codebook.perplexity c.K tok None).ToDouble()
                Expect.isGreaterThanOrEqual ppl (1.0 - 1e-12) "≥ 1"
                Expect.isLessThanOrEqual ppl (float c.K * (1.0 + 1e-12)) "≤ K")

            test "one EMA step equals the hand-computed update (float64, 1e-12)" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(14UL)
                let k, d, n = 5, 3, 11
                let decay, eps = 0.9, 1e-7
                let counts = torch.rand ([| int64 k |], dtype = f64, generator = g) * 3.0
                let sums = torch.randn ([| int64 k; int64 d |], dtype = f64, generator = g)
                let z = torch.randn ([| int64 n; int64 d |], dtype = f64, generator = g)
                // code 4 unused in this batch
                let tok = torch.tensor ([| 0L; 1L; 1L; 2L; 3L; 0L; 0L; 2L; 1L; 3L; 3L |])
                let batchN, batchS = Codebook.assignmentSums (int64 k) z tok None
                let n', m', e' = Codebook.emaStep decay eps counts sums batchN batchS
                let zr, nr, sr = rows z, counts.data<float>().ToArray(), rows sums
                let tr = indices tok

                let hn =
                    Array.init k (fun j ->
                        decay * nr.[j]
                        + (1.0 - decay) * float (tr |> Array.filter ((=) j) |> Array.length))

                let hm =
                    Array.init k (fun j ->
                        Array.init d (fun c ->
                            let s =
                                Array.fold2
                                    (fun acc (t: int) (row: float[]) -> if t = j then acc + row.[c] else acc)
                                    0.0
                                    tr
                                    zr

                            decay * sr.[j].[c] + (1.0 - decay) * s))

                let total = Array.sum hn

                let smoothed =
                    hn |> Array.map (fun x -> (x + eps) / (total + float k * eps) * total)

                let he = Array.init k (fun j -> hm.[j] |> Array.map (fun m -> m / smoothed.[j]))

                let t (a: float[][]) =
                    torch.tensor(Array.concat a, dtype = f64).reshape(int64 k, int64 d)

                Tol.close "N" 1e-12 n' (torch.tensor (hn, dtype = f64))
                Tol.close "z_avg" 1e-12 m' (t hm)
                Tol.close "embeddings" 1e-12 e' (t he)
                Tol.close "inputs untouched" 0.0 counts (torch.tensor (nr, dtype = f64))
            }

            test "tile and randomRows follow ESM's _tile: no noise when enough rows, noise 0.01/√D otherwise" {
                use _ = torch.NewDisposeScope()
                let g = new torch.Generator(15UL)
                let x = torch.randn ([| 10L; 4L |], dtype = f64, generator = g)
                Expect.isTrue (obj.ReferenceEquals(Codebook.tile g 10L x, x)) "enough rows: unchanged"
                let picked = Codebook.randomRows g 6L x
                let matches = torch.cdist(picked, x).le((0.0).ToScalar()).sum(1L)
                Tol.close "every row is a row of x" 0.0 matches (torch.ones ([| 6L |], dtype = torch.int64))
                let tiled = Codebook.tile g 25L x
                Expect.sequenceEqual tiled.shape [| 30L; 4L |] "three copies"
                let noise = tiled - x.repeat ([| 3L; 1L |])
                let std = noise.std().ToDouble()
                Expect.isTrue (std > 0.003 && std < 0.007) (sprintf "noise std %g ≈ 0.005" std)
            }
        ]
