namespace Esm3Structure.Checks

open System
open System.IO
open System.Text
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Models
open Esm3Structure.Structure
open Esm3Structure.App

/// Generated inputs of a million residues in every format, each with the outcome it must have.
module FuzzLarge =

    /// Residues (or tokens) of the large inputs: a million.
    [<Literal>]
    let MillionResidues = 1_000_000

    let private inv = Globalization.CultureInfo.InvariantCulture

    // Coordinates on a 3.8 Å grid of 100 × 100 × n/10^4 points: every value fits the PDB columns.
    let private gridPoint (i: int) =
        float (i % 100) * 3.8, float (i / 100 % 100) * 3.8, float (i / 10000) * 3.8

    /// A CA-only PDB chain of `residues` residues (the first with N, CA and C). Residue numbers beyond 9999 are hybrid-36 ("A000" = 10000) when
    /// `hybrid36`, else they wrap to 0 after 9999 as many MD tools write them; atom serials wrap after 99999.
    let largePdb (residues: int) (hybrid36: bool) : byte[] =
        let digitsUpper = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

        // The inverse of Pdb.hybrid36 for 4 characters (upper-case range).
        let encode (n: int) =
            if n <= 9999 then
                n.ToString(inv).PadLeft 4
            else
                let mutable v = n - 10000 + 10 * 46656
                let chars = Array.zeroCreate<char> 4

                for k in 3..-1..0 do
                    chars.[k] <- digitsUpper.[v % 36]
                    v <- v / 36

                String chars

        let sb = StringBuilder(82 * residues + 64)
        sb.Append("HEADER    FUZZ: A MILLION RESIDUES\n") |> ignore

        let serial = ref 0

        let atom (name: string) (number: string) (x: float) (y: float) (z: float) =
            serial.Value <- serial.Value % 99999 + 1

            sb
                .Append("ATOM  ")
                .Append(serial.Value.ToString(inv).PadLeft 5)
                .Append(name)
                .Append("ALA A")
                .Append(number)
                .Append("    ")
                .Append(x.ToString("F3", inv).PadLeft 8)
                .Append(y.ToString("F3", inv).PadLeft 8)
                .Append(z.ToString("F3", inv).PadLeft 8)
                .Append("  1.00 20.00           ")
                .Append(name.[2])
                .Append('\n')
            |> ignore

        for i in 0 .. residues - 1 do
            let x, y, z = gridPoint i

            let number =
                if hybrid36 then
                    encode (i + 1)
                else
                    ((i + 1) % 10000).ToString(inv).PadLeft 4

            // The first residue has a whole backbone (a chain needs one), the others CA only.
            if i = 0 then
                atom "  N   " number (x - 1.2) y z

            atom "  CA  " number x y z

            if i = 0 then
                atom "  C   " number x (y + 1.5) z

        sb.Append("END\n") |> ignore
        Encoding.ASCII.GetBytes(sb.ToString())

    /// A CA-only mmCIF chain of `residues` residues (the first with N, CA and C; one `_atom_site` loop).
    let largeMmcif (residues: int) : byte[] =
        let sb = StringBuilder(80 * residues + 512)

        sb
            .Append("data_FUZZ\nloop_\n")
            .Append("_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n_atom_site.label_atom_id\n")
            .Append("_atom_site.label_comp_id\n_atom_site.label_asym_id\n_atom_site.label_seq_id\n")
            .Append("_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n_atom_site.occupancy\n")
            .Append("_atom_site.B_iso_or_equiv\n_atom_site.auth_seq_id\n_atom_site.auth_asym_id\n")
            .Append("_atom_site.pdbx_PDB_model_num\n")
        |> ignore

        let serial = ref 0

        let atom (name: string) (number: string) (x: float) (y: float) (z: float) =
            serial.Value <- serial.Value + 1

            sb
                .Append("ATOM ")
                .Append(serial.Value.ToString inv)
                .Append(' ')
                .Append(name.[0])
                .Append(' ')
                .Append(name)
                .Append(" ALA A ")
                .Append(number)
                .Append(' ')
                .Append(x.ToString("F3", inv))
                .Append(' ')
                .Append(y.ToString("F3", inv))
                .Append(' ')
                .Append(z.ToString("F3", inv))
                .Append(" 1.00 20.00 ")
                .Append(number)
                .Append(" A 1\n")
            |> ignore

        for i in 0 .. residues - 1 do
            let x, y, z = gridPoint i
            let number = (i + 1).ToString inv

            // The first residue has a whole backbone (a chain needs one), the others CA only.
            if i = 0 then
                atom "N" number (x - 1.2) y z

            atom "CA" number x y z

            if i = 0 then
                atom "C" number x (y + 1.5) z

        Encoding.ASCII.GetBytes(sb.ToString())

    /// A safetensors file (written through `scratchDir`) with backbone coordinates [residues, 3, 3] (F32) and
    /// structure tokens [residues] (I64).
    let largeSafetensors (residues: int) (scratchDir: string) : byte[] =
        use _ = torch.NewDisposeScope()
        let path = Path.Combine(scratchDir, "large.safetensors")
        let n = int64 residues

        let tensors =
            [
                "coords",
                torch.arange((n * 9L).ToScalar(), dtype = torch.float32).reshape(n, 3L, 3L)
                * 0.001f
                "tokens", torch.arange(n.ToScalar(), dtype = torch.int64).remainder((4096L).ToScalar())
            ]

        Safetensors.write path tensors (readOnlyDict [ "format", "pt" ])
        let bytes = File.ReadAllBytes path
        File.Delete path
        bytes

    /// A tokens JSON of one chain of `residues` tokens (a few MASK tokens among random codes).
    let largeTokens (residues: int) : byte[] =
        let chain = FuzzMutators.tokenChain (Random 9) "million.pdb" "A" residues
        Encoding.UTF8.GetBytes(TokensJson.toJson [| chain |])

    /// The large inputs of `format`: each must read (Valid), except a PDB whose residue numbers wrap after 9999,
    /// which must be a typed error naming the line where a residue number comes back.
    let largeInputs (format: FuzzFormat) (residues: int) (scratchDir: string) : FuzzLargeInput list =
        let input description expected bytes =
            {
                Format = format
                Description = description
                Bytes = bytes
                Expected = expected
            }

        match format with
        | FuzzFormat.Pdb ->
            [
                input
                    (sprintf "%d residues (CA only), hybrid-36 residue numbers" residues)
                    "Valid"
                    (largePdb residues true)
                if residues > 10000 then
                    input
                        (sprintf "%d residues (CA only), residue numbers wrapping after 9999" residues)
                        "TypedError(Line)"
                        (largePdb residues false)
            ]
        | FuzzFormat.Mmcif ->
            [
                input (sprintf "%d residues (CA only)" residues) "Valid" (largeMmcif residues)
            ]
        | FuzzFormat.Safetensors ->
            [
                input
                    (sprintf "coords [%d, 3, 3] F32 + tokens [%d] I64" residues residues)
                    "Valid"
                    (largeSafetensors residues scratchDir)
            ]
        | FuzzFormat.Tokens -> [ input (sprintf "%d tokens" residues) "Valid" (largeTokens residues) ]
