namespace Esm3Structure.Tensors

open System
open TorchSharp

/// Shape helpers and checks. Legend used in every `Shapes:` doc line of the library:
/// `B` batch, `L` residues, `K` neighbours, `H` attention heads, `V` vector (geometric) heads, `D` per-head width,
/// `C` channels (d_model), `A` atoms per residue, `N` codebook size, `3` xyz, `*` any leading batch dims.
module Shape =

    /// The shape of a tensor as a readable string, e.g. "[2, 7, 3]".
    let show (shape: int64[]) = "[" + String.Join(", ", shape) + "]"

    /// Raises an ArgumentException naming the argument and both shapes.
    let mismatch (name: string) (expected: string) (t: torch.Tensor) : 'a =
        raise (ArgumentException(sprintf "%s: expected shape %s, got %s" name expected (show t.shape), name))

    /// Checks that the trailing dims of `t` equal `trailing` (any leading batch dims allowed).
    /// Example: `Shape.expectTrailing "x" [| 3L |] x` for points [*, 3].
    let expectTrailing (name: string) (trailing: int64[]) (t: torch.Tensor) =
        let s = t.shape
        let n = trailing.Length

        if s.Length < n || s.[s.Length - n ..] <> trailing then
            mismatch name ("[*, " + String.Join(", ", trailing) + "]") t

    /// Checks an exact shape; -1 in `expected` matches any size.
    let expect (name: string) (expected: int64[]) (t: torch.Tensor) =
        let s = t.shape

        if
            s.Length <> expected.Length
            || Array.exists2 (fun e a -> e >= 0L && e <> a) expected s
        then
            mismatch name (show expected |> fun x -> x.Replace("-1", "_")) t

    /// The leading (batch) dims of a tensor whose last `trailing` dims are fixed.
    let batchDims (trailing: int) (t: torch.Tensor) : int64[] =
        t.shape.[.. t.shape.Length - trailing - 1]

    /// Checks that two tensors share dtype and device.
    let expectSameKind (nameA: string) (a: torch.Tensor) (nameB: string) (b: torch.Tensor) =
        if a.dtype <> b.dtype then
            raise (ArgumentException(sprintf "%s is %O but %s is %O" nameA a.dtype nameB b.dtype))

        if a.device.``type`` <> b.device.``type`` then
            raise (ArgumentException(sprintf "%s is on %O but %s is on %O" nameA a.device nameB b.device))

    /// Reshapes the last dim `n` into `dims` (TorchSharp's unflatten rejects negative dims).
    /// Shapes: [*, prod(dims)] -> [*, dims...]
    let unflattenLast (dims: int64[]) (t: torch.Tensor) =
        t.reshape (Array.append (batchDims 1 t) dims)

    /// Flattens the last `n` dims into one. Shapes: [*, a, b, ...] -> [*, a*b*...]
    let flattenLast (n: int) (t: torch.Tensor) =
        t.reshape (Array.append (batchDims n t) [| -1L |])
