namespace Esm3Structure.Structure

open System
open TorchSharp

/// One protein chain: sequence, numbering and atom coordinates in the atom37 and atom14 layouts
/// (see `ResidueConstants`). Missing atoms are NaN in the coordinate arrays and false in the masks.
type ProteinChain =
    {
        /// A name for the chain, e.g. the file stem "1ubq_A" or an entry id.
        Name: string
        /// The chain identifier as read (author chain id); "" when blank.
        ChainId: string
        /// One-letter sequence; 'X' for residue names that are not one of the 20 amino acids.
        Sequence: string
        /// Three-letter residue names as read (MSE already converted to MET; tool aliases such as HSD mapped to HIS).
        ResidueNames: string[]
        /// Author residue numbers.
        ResidueIndex: int[]
        /// Insertion codes; "" when blank.
        InsertionCodes: string[]
        /// [L, 37, 3] coordinates in Å; NaN where the atom is missing.
        Atom37: float32[,,]
        /// [L, 37] true where the atom is present (all three coordinates finite).
        Atom37Mask: bool[,]
        /// [L, 14, 3] coordinates in the atom14 slots of `ResidueConstants.atom14Names`; NaN where missing.
        Atom14: float32[,,]
        /// [L, 14] true where the atom14 slot holds a present atom.
        Atom14Mask: bool[,]
        /// [L, 37] B-factors; 0 where the atom is missing.
        BFactors: float32[,]
    }

/// Construction of `ProteinChain`s and tensor views of them. Every tensor returned is fresh (the caller disposes it).
[<RequireQualifiedAccess>]
module ProteinChain =

    /// The number of residues.
    let length (chain: ProteinChain) : int = chain.ResidueIndex.Length

    /// The residue-type row (0..20, `ResidueConstants` order; 20 = X) of each residue.
    let restypeIndices (chain: ProteinChain) : int[] =
        chain.Sequence.ToCharArray() |> Array.map ResidueConstants.restypeIndex

    let private finite (x: float32) =
        not (Single.IsNaN x || Single.IsInfinity x)

    /// Derives atom14 coordinates and mask from atom37 ones, per residue type.
    let private atom14Of (restypes: int[]) (atom37: float32[,,]) (mask37: bool[,]) =
        let n = restypes.Length
        let atom14 = Array3D.create n 14 3 Single.NaN
        let mask14 = Array2D.zeroCreate n 14

        for i in 0 .. n - 1 do
            let r = restypes.[i]

            for k in 0..13 do
                if ResidueConstants.restypeAtom14Mask.[r, k] then
                    let a = ResidueConstants.restypeAtom14ToAtom37.[r, k]

                    if mask37.[i, a] then
                        mask14.[i, k] <- true

                        for c in 0..2 do
                            atom14.[i, k, c] <- atom37.[i, a, c]

        atom14, mask14

    /// Builds a chain from all its per-residue data. Atoms with any non-finite coordinate become missing (NaN, mask
    /// false, B-factor 0); atom14 is derived from atom37. Sequence letters other than the 20 amino acids become 'X'.
    /// Shapes: atom37 [L, 37, 3], bfactors [L, 37]; residueNames, residueIndex, insertionCodes [L]; sequence length L.
    let create
        (name: string)
        (chainId: string)
        (residueNames: string[])
        (sequence: string)
        (residueIndex: int[])
        (insertionCodes: string[])
        (atom37: float32[,,])
        (bfactors: float32[,])
        : ProteinChain =
        let n = residueIndex.Length

        let check what (got: int) =
            if got <> n then
                raise (ArgumentException(sprintf "%s has length %d but residueIndex has %d" what got n, what))

        check "sequence" sequence.Length
        check "residueNames" residueNames.Length
        check "insertionCodes" insertionCodes.Length
        check "atom37 (dim 0)" (Array3D.length1 atom37)
        check "bfactors (dim 0)" (Array2D.length1 bfactors)

        if Array3D.length2 atom37 <> 37 || Array3D.length3 atom37 <> 3 then
            raise (
                ArgumentException(
                    sprintf
                        "atom37 must be [L, 37, 3], got [%d, %d, %d]"
                        n
                        (Array3D.length2 atom37)
                        (Array3D.length3 atom37),
                    "atom37"
                )
            )

        if Array2D.length2 bfactors <> 37 then
            raise (
                ArgumentException(
                    sprintf "bfactors must be [L, 37], got [%d, %d]" n (Array2D.length2 bfactors),
                    "bfactors"
                )
            )

        let restypes = sequence.ToCharArray() |> Array.map ResidueConstants.restypeIndex

        let seq =
            String(restypes |> Array.map (fun r -> ResidueConstants.restypesWithX.[r]))

        let coords = Array3D.create n 37 3 Single.NaN
        let mask = Array2D.zeroCreate n 37
        let b = Array2D.zeroCreate n 37

        for i in 0 .. n - 1 do
            for a in 0..36 do
                if finite atom37.[i, a, 0] && finite atom37.[i, a, 1] && finite atom37.[i, a, 2] then
                    mask.[i, a] <- true
                    b.[i, a] <- bfactors.[i, a]

                    for c in 0..2 do
                        coords.[i, a, c] <- atom37.[i, a, c]

        let atom14, mask14 = atom14Of restypes coords mask

        {
            Name = name
            ChainId = chainId
            Sequence = seq
            ResidueNames = Array.copy residueNames
            ResidueIndex = Array.copy residueIndex
            InsertionCodes = insertionCodes |> Array.map (fun s -> if isNull s then "" else s.Trim())
            Atom37 = coords
            Atom37Mask = mask
            Atom14 = atom14
            Atom14Mask = mask14
            BFactors = b
        }

    /// Builds a chain from atom37 coordinates (e.g. a decoder's output): residue names from the sequence ('X' ->
    /// UNK), blank insertion codes, B-factors 0, mask = all three coordinates finite, atom14 derived.
    /// Shapes: atom37 [L, 37, 3]; sequence and residueIndex length L.
    let ofAtom37
        (name: string)
        (chainId: string)
        (sequence: string)
        (residueIndex: int[])
        (atom37: float32[,,])
        : ProteinChain =
        let n = residueIndex.Length

        let names =
            sequence.ToCharArray()
            |> Array.map (fun c -> ResidueConstants.resnames.[ResidueConstants.restypeIndex c])

        create name chainId names sequence residueIndex (Array.create n "") atom37 (Array2D.zeroCreate n 37)

    /// `ofAtom37` from a tensor (any float dtype, any device; copied to CPU float32).
    /// Shapes: atom37 [L, 37, 3].
    let ofAtom37Tensor
        (name: string)
        (chainId: string)
        (sequence: string)
        (residueIndex: int[])
        (atom37: torch.Tensor)
        : ProteinChain =
        Esm3Structure.Tensors.Shape.expect "atom37" [| -1L; 37L; 3L |] atom37
        let n = int atom37.shape.[0]
        use flat = atom37.detach().cpu().to_type(torch.float32).contiguous()
        let data = flat.data<float32>().ToArray()
        let coords = Array3D.zeroCreate n 37 3
        Buffer.BlockCopy(data, 0, coords, 0, data.Length * sizeof<float32>)
        ofAtom37 name chainId sequence residueIndex coords

    let private floatTensor (dtype: torch.ScalarType) (data: Array) (count: int) (shape: int64[]) =
        let flat = Array.zeroCreate<float32> count
        Buffer.BlockCopy(data, 0, flat, 0, count * sizeof<float32>)
        use t = torch.tensor (flat, ReadOnlySpan<int64> shape)
        t.to_type dtype

    let private boolTensor (data: Array) (count: int) (shape: int64[]) =
        let flat = Array.zeroCreate<bool> count
        Buffer.BlockCopy(data, 0, flat, 0, count * sizeof<bool>)
        torch.tensor (flat, shape)

    /// Atom37 coordinates, NaN where missing. Shapes: -> [L, 37, 3]
    let atom37 (dtype: torch.ScalarType) (chain: ProteinChain) : torch.Tensor =
        let n = length chain
        floatTensor dtype chain.Atom37 (n * 37 * 3) [| int64 n; 37L; 3L |]

    /// Atom37 mask. Shapes: -> [L, 37] bool
    let atom37Mask (chain: ProteinChain) : torch.Tensor =
        let n = length chain
        boolTensor chain.Atom37Mask (n * 37) [| int64 n; 37L |]

    /// Atom14 coordinates, NaN where missing. Shapes: -> [L, 14, 3]
    let atom14 (dtype: torch.ScalarType) (chain: ProteinChain) : torch.Tensor =
        let n = length chain
        floatTensor dtype chain.Atom14 (n * 14 * 3) [| int64 n; 14L; 3L |]

    /// Atom14 mask. Shapes: -> [L, 14] bool
    let atom14Mask (chain: ProteinChain) : torch.Tensor =
        let n = length chain
        boolTensor chain.Atom14Mask (n * 14) [| int64 n; 14L |]

    /// Backbone N, CA, C coordinates, NaN where missing. Shapes: -> [L, 3, 3] (residue, atom N/CA/C, xyz)
    let backbone (dtype: torch.ScalarType) (chain: ProteinChain) : torch.Tensor =
        let n = length chain
        let data = Array3D.init n 3 3 (fun i a c -> chain.Atom37.[i, a, c])
        floatTensor dtype data (n * 9) [| int64 n; 3L; 3L |]

    /// True where all of N, CA and C are present. Shapes: -> [L] bool
    let backboneMask (chain: ProteinChain) : torch.Tensor =
        let m = chain.Atom37Mask
        let data = Array.init (length chain) (fun i -> m.[i, 0] && m.[i, 1] && m.[i, 2])
        torch.tensor (data, [| int64 data.Length |])

    /// CA coordinates, NaN where missing. Shapes: -> [L, 3]
    let ca (dtype: torch.ScalarType) (chain: ProteinChain) : torch.Tensor =
        let n = length chain

        let data =
            Array2D.init n 3 (fun i c -> chain.Atom37.[i, ResidueConstants.caIndex, c])

        floatTensor dtype data (n * 3) [| int64 n; 3L |]

    /// True where CA is present. Shapes: -> [L] bool
    let caMask (chain: ProteinChain) : torch.Tensor =
        let data =
            Array.init (length chain) (fun i -> chain.Atom37Mask.[i, ResidueConstants.caIndex])

        torch.tensor (data, [| int64 data.Length |])

    /// Residue types (0..20, `ResidueConstants` order). Shapes: -> [L] int64
    let restypes (chain: ProteinChain) : torch.Tensor =
        let data = restypeIndices chain |> Array.map int64
        torch.tensor (data, ReadOnlySpan<int64> [| int64 data.Length |])

    /// Author residue numbers. Shapes: -> [L] int64
    let residueIndex (chain: ProteinChain) : torch.Tensor =
        let data = chain.ResidueIndex |> Array.map int64
        torch.tensor (data, ReadOnlySpan<int64> [| int64 data.Length |])
