namespace Esm3Structure.Structure

open System.Collections.Generic

/// One atom of a residue's ideal geometry: the rigid group it moves with and its position in that group's frame.
type RigidGroupAtom =
    {
        /// Atom name (atom37 naming).
        Atom: string
        /// Rigid group: 0 backbone, 1 pre-omega (empty), 2 phi (hydrogens only, empty), 3 psi, 4..7 chi1..chi4.
        Group: int
        /// Position in the group's local frame, Å.
        X: float
        /// Position in the group's local frame, Å.
        Y: float
        /// Position in the group's local frame, Å.
        Z: float
    }

/// Amino-acid and atom-layout constants (AlphaFold's conventions, as used by ESM3).
///
/// Residue-type rows are indexed 0..20: the 20 amino acids in AlphaFold order `ARNDCQEGHILKMFPSTWYV`, then 20 =
/// unknown (`X`, three-letter `UNK`). Index tables that are meant for gathers are padded with 0 (as in AlphaFold)
/// and come with a mask that says which entries are real.
[<RequireQualifiedAccess>]
module ResidueConstants =

    let private readOnly (pairs: seq<'k * 'v>) : IReadOnlyDictionary<'k, 'v> =
        let d = Dictionary<'k, 'v>()

        for k, v in pairs do
            d.[k] <- v

        d :> IReadOnlyDictionary<'k, 'v>

    // ---------------------------------------------------------------------------------------------------------------
    // Residue types. Source: deepmind/alphafold alphafold/common/residue_constants.py (`restypes`, `restype_1to3`),
    // identical in evolutionaryscale/esm esm/utils/residue_constants.py, which adds "X" -> "UNK".

    /// The 20 amino acids, one-letter codes, AlphaFold order.
    let restypes: char[] = "ARNDCQEGHILKMFPSTWYV".ToCharArray()

    /// Number of standard residue types (20).
    let restypeNum = 20

    /// Row index of the unknown residue type `X` / `UNK` (20).
    let unkRestypeIndex = 20

    /// The 20 amino acids plus `X`.
    let restypesWithX: char[] = Array.append restypes [| 'X' |]

    /// Three-letter names of the 21 rows (`ALA`, `ARG`, ..., `VAL`, `UNK`).
    let resnames: string[] =
        [|
            "ALA"
            "ARG"
            "ASN"
            "ASP"
            "CYS"
            "GLN"
            "GLU"
            "GLY"
            "HIS"
            "ILE"
            "LEU"
            "LYS"
            "MET"
            "PHE"
            "PRO"
            "SER"
            "THR"
            "TRP"
            "TYR"
            "VAL"
            "UNK"
        |]

    /// One-letter code -> three-letter name (21 entries, `X` -> `UNK`).
    let restype1to3: IReadOnlyDictionary<char, string> =
        readOnly (Array.zip restypesWithX resnames)

    /// Three-letter name -> one-letter code (21 entries, `UNK` -> `X`). Other names are not listed: see `oneLetterOf`.
    let restype3to1: IReadOnlyDictionary<string, char> =
        readOnly (Array.zip resnames restypesWithX)

    /// One-letter code -> row index 0..20 (`X` -> 20).
    let restypeOrder: IReadOnlyDictionary<char, int> =
        readOnly (Array.mapi (fun i c -> c, i) restypesWithX)

    /// The row index of a one-letter code; anything that is not one of the 20 amino acids gives 20 (`X`).
    let restypeIndex (letter: char) : int =
        match restypeOrder.TryGetValue(System.Char.ToUpperInvariant letter) with
        | true, i -> i
        | _ -> unkRestypeIndex

    /// The one-letter code of a three-letter name; unknown names give `X`.
    let oneLetterOf (resname: string) : char =
        match restype3to1.TryGetValue resname with
        | true, c -> c
        | _ -> 'X'

    // ---------------------------------------------------------------------------------------------------------------
    // atom37. Source: alphafold/common/residue_constants.py `atom_types` (same in esm/utils/residue_constants.py).

    /// The 37 atom names of the atom37 layout, in order.
    let atomTypes: string[] =
        [|
            "N"
            "CA"
            "C"
            "CB"
            "O"
            "CG"
            "CG1"
            "CG2"
            "OG"
            "OG1"
            "SG"
            "CD"
            "CD1"
            "CD2"
            "ND1"
            "ND2"
            "OD1"
            "OD2"
            "SD"
            "CE"
            "CE1"
            "CE2"
            "CE3"
            "NE"
            "NE1"
            "NE2"
            "OE1"
            "OE2"
            "CH2"
            "NH1"
            "NH2"
            "OH"
            "CZ"
            "CZ2"
            "CZ3"
            "NZ"
            "OXT"
        |]

    /// Number of atom37 slots (37).
    let atomTypeNum = 37

    /// Atom name -> atom37 index.
    let atomOrder: IReadOnlyDictionary<string, int> =
        readOnly (Array.mapi (fun i a -> a, i) atomTypes)

    /// The atom37 index of an atom name, or -1 when the name is not one of the 37.
    let atom37Index (atom: string) : int =
        match atomOrder.TryGetValue atom with
        | true, i -> i
        | _ -> -1

    /// The backbone atoms every encoder uses (bb3): N, CA, C.
    let backboneAtoms: string[] = [| "N"; "CA"; "C" |]

    /// The backbone atoms with the carbonyl oxygen: N, CA, C, O (ESM `bb_atoms`).
    let backboneAtomsWithO: string[] = [| "N"; "CA"; "C"; "O" |]

    /// atom37 index of N (0).
    let nIndex = 0
    /// atom37 index of CA (1).
    let caIndex = 1
    /// atom37 index of C (2).
    let cIndex = 2
    /// atom37 index of CB (3).
    let cbIndex = 3
    /// atom37 index of O (4).
    let oIndex = 4
    /// atom37 index of OXT (36).
    let oxtIndex = 36

    /// The chemical element of an atom37 name: its first letter (C, N, O or S).
    let elementOf (atom: string) : string = atom.Substring(0, 1)

    // ---------------------------------------------------------------------------------------------------------------
    // Heavy atoms per residue type (PDB names, no hydrogens, no OXT).
    // Source: esm/utils/residue_constants.py `residue_atoms` (= AlphaFold's, plus the UNK row C, CA, N).

    /// Heavy atoms of each residue type (21 rows, order of the source table; no OXT).
    let residueAtoms: string[][] =
        [|
            [| "C"; "CA"; "CB"; "N"; "O" |] // ALA
            [| "C"; "CA"; "CB"; "CG"; "CD"; "CZ"; "N"; "NE"; "O"; "NH1"; "NH2" |] // ARG
            [| "C"; "CA"; "CB"; "CG"; "N"; "ND2"; "O"; "OD1" |] // ASN
            [| "C"; "CA"; "CB"; "CG"; "N"; "O"; "OD1"; "OD2" |] // ASP
            [| "C"; "CA"; "CB"; "N"; "O"; "SG" |] // CYS
            [| "C"; "CA"; "CB"; "CG"; "CD"; "N"; "NE2"; "O"; "OE1" |] // GLN
            [| "C"; "CA"; "CB"; "CG"; "CD"; "N"; "O"; "OE1"; "OE2" |] // GLU
            [| "C"; "CA"; "N"; "O" |] // GLY
            [| "C"; "CA"; "CB"; "CG"; "CD2"; "CE1"; "N"; "ND1"; "NE2"; "O" |] // HIS
            [| "C"; "CA"; "CB"; "CG1"; "CG2"; "CD1"; "N"; "O" |] // ILE
            [| "C"; "CA"; "CB"; "CG"; "CD1"; "CD2"; "N"; "O" |] // LEU
            [| "C"; "CA"; "CB"; "CG"; "CD"; "CE"; "N"; "NZ"; "O" |] // LYS
            [| "C"; "CA"; "CB"; "CG"; "CE"; "N"; "O"; "SD" |] // MET
            [| "C"; "CA"; "CB"; "CG"; "CD1"; "CD2"; "CE1"; "CE2"; "CZ"; "N"; "O" |] // PHE
            [| "C"; "CA"; "CB"; "CG"; "CD"; "N"; "O" |] // PRO
            [| "C"; "CA"; "CB"; "N"; "O"; "OG" |] // SER
            [| "C"; "CA"; "CB"; "CG2"; "N"; "O"; "OG1" |] // THR
            [|
                "C"
                "CA"
                "CB"
                "CG"
                "CD1"
                "CD2"
                "CE2"
                "CE3"
                "CZ2"
                "CZ3"
                "CH2"
                "N"
                "NE1"
                "O"
            |] // TRP
            [| "C"; "CA"; "CB"; "CG"; "CD1"; "CD2"; "CE1"; "CE2"; "CZ"; "N"; "O"; "OH" |] // TYR
            [| "C"; "CA"; "CB"; "CG1"; "CG2"; "N"; "O" |] // VAL
            [| "C"; "CA"; "N" |] // UNK
        |]

    /// [21, 37] true where the atom37 slot belongs to the residue type (AlphaFold `STANDARD_ATOM_MASK`, no OXT;
    /// the UNK row has N, CA, C as in ESM).
    let restypeAtom37Mask: bool[,] =
        Array2D.init 21 atomTypeNum (fun r a -> Array.contains atomTypes.[a] residueAtoms.[r])

    // ---------------------------------------------------------------------------------------------------------------
    // atom14. Source: alphafold/common/residue_constants.py `restype_name_to_atom14_names`; the UNK row (N, CA, C)
    // is ESM's (esm/utils/residue_constants.py); AlphaFold's UNK row is empty.

    /// Atom names of the 14 atom14 slots of each residue type (21 rows; "" marks an empty slot).
    let atom14Names: string[][] =
        [|
            [| "N"; "CA"; "C"; "O"; "CB"; ""; ""; ""; ""; ""; ""; ""; ""; "" |] // ALA
            [|
                "N"
                "CA"
                "C"
                "O"
                "CB"
                "CG"
                "CD"
                "NE"
                "CZ"
                "NH1"
                "NH2"
                ""
                ""
                ""
            |] // ARG
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "OD1"; "ND2"; ""; ""; ""; ""; ""; "" |] // ASN
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "OD1"; "OD2"; ""; ""; ""; ""; ""; "" |] // ASP
            [| "N"; "CA"; "C"; "O"; "CB"; "SG"; ""; ""; ""; ""; ""; ""; ""; "" |] // CYS
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "CD"; "OE1"; "NE2"; ""; ""; ""; ""; "" |] // GLN
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "CD"; "OE1"; "OE2"; ""; ""; ""; ""; "" |] // GLU
            [| "N"; "CA"; "C"; "O"; ""; ""; ""; ""; ""; ""; ""; ""; ""; "" |] // GLY
            [|
                "N"
                "CA"
                "C"
                "O"
                "CB"
                "CG"
                "ND1"
                "CD2"
                "CE1"
                "NE2"
                ""
                ""
                ""
                ""
            |] // HIS
            [| "N"; "CA"; "C"; "O"; "CB"; "CG1"; "CG2"; "CD1"; ""; ""; ""; ""; ""; "" |] // ILE
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "CD1"; "CD2"; ""; ""; ""; ""; ""; "" |] // LEU
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "CD"; "CE"; "NZ"; ""; ""; ""; ""; "" |] // LYS
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "SD"; "CE"; ""; ""; ""; ""; ""; "" |] // MET
            [|
                "N"
                "CA"
                "C"
                "O"
                "CB"
                "CG"
                "CD1"
                "CD2"
                "CE1"
                "CE2"
                "CZ"
                ""
                ""
                ""
            |] // PHE
            [| "N"; "CA"; "C"; "O"; "CB"; "CG"; "CD"; ""; ""; ""; ""; ""; ""; "" |] // PRO
            [| "N"; "CA"; "C"; "O"; "CB"; "OG"; ""; ""; ""; ""; ""; ""; ""; "" |] // SER
            [| "N"; "CA"; "C"; "O"; "CB"; "OG1"; "CG2"; ""; ""; ""; ""; ""; ""; "" |] // THR
            [|
                "N"
                "CA"
                "C"
                "O"
                "CB"
                "CG"
                "CD1"
                "CD2"
                "NE1"
                "CE2"
                "CE3"
                "CZ2"
                "CZ3"
                "CH2"
            |] // TRP
            [|
                "N"
                "CA"
                "C"
                "O"
                "CB"
                "CG"
                "CD1"
                "CD2"
                "CE1"
                "CE2"
                "CZ"
                "OH"
                ""
                ""
            |] // TYR
            [| "N"; "CA"; "C"; "O"; "CB"; "CG1"; "CG2"; ""; ""; ""; ""; ""; ""; "" |] // VAL
            [| "N"; "CA"; "C"; ""; ""; ""; ""; ""; ""; ""; ""; ""; ""; "" |] // UNK
        |]

    /// [21, 14] true where the atom14 slot holds an atom.
    let restypeAtom14Mask: bool[,] =
        Array2D.init 21 14 (fun r k -> atom14Names.[r].[k] <> "")

    /// [21, 14] atom37 index of each atom14 slot; 0 for empty slots (see `restypeAtom14Mask`).
    let restypeAtom14ToAtom37: int[,] =
        Array2D.init 21 14 (fun r k ->
            match atom14Names.[r].[k] with
            | "" -> 0
            | name -> atomOrder.[name])

    /// [21, 37] atom14 slot of each atom37 atom; 0 where the residue type has no such atom (see `restypeAtom37ToAtom14Mask`).
    let restypeAtom37ToAtom14: int[,] =
        Array2D.init 21 atomTypeNum (fun r a ->
            match Array.tryFindIndex ((=) atomTypes.[a]) atom14Names.[r] with
            | Some k -> k
            | None -> 0)

    /// [21, 37] true where the atom37 atom has an atom14 slot for the residue type.
    let restypeAtom37ToAtom14Mask: bool[,] =
        Array2D.init 21 atomTypeNum (fun r a -> Array.contains atomTypes.[a] atom14Names.[r])

    // ---------------------------------------------------------------------------------------------------------------
    // Ideal atom positions per rigid group. Source: alphafold/common/residue_constants.py
    // `rigid_group_atom_positions` (also openfold/np/residue_constants.py); the UNK row (alanine's N, CA, C) is from
    // esm/utils/residue_constants.py. Positions are relative to the group's frame: group 0 has CA at the origin and
    // C on +x; groups 3..7 are placed at the axis-end atom of their rotation axis (psi: C; chi k: the third atom of
    // chi k), x along the axis.

    let private atom (name: string) (group: int) (x: float, y: float, z: float) =
        {
            Atom = name
            Group = group
            X = x
            Y = y
            Z = z
        }

    /// Per residue type (21 rows): atom name, rigid group 0..7 and position in the group's frame (Å).
    let rigidGroupAtomPositions: RigidGroupAtom[][] =
        [|
            // ALA
            [|
                atom "N" 0 (-0.525, 1.363, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.529, -0.774, -1.205)
                atom "O" 3 (0.627, 1.062, 0.000)
            |]
            // ARG
            [|
                atom "N" 0 (-0.524, 1.362, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.524, -0.778, -1.209)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.616, 1.390, 0.000)
                atom "CD" 5 (0.564, 1.414, 0.000)
                atom "NE" 6 (0.539, 1.357, 0.000)
                atom "NH1" 7 (0.206, 2.301, 0.000)
                atom "NH2" 7 (2.078, 0.978, 0.000)
                atom "CZ" 7 (0.758, 1.093, 0.000)
            |]
            // ASN
            [|
                atom "N" 0 (-0.536, 1.357, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.531, -0.787, -1.200)
                atom "O" 3 (0.625, 1.062, 0.000)
                atom "CG" 4 (0.584, 1.399, 0.000)
                atom "ND2" 5 (0.593, -1.188, 0.001)
                atom "OD1" 5 (0.633, 1.059, 0.000)
            |]
            // ASP
            [|
                atom "N" 0 (-0.525, 1.362, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.527, 0.000, 0.000)
                atom "CB" 0 (-0.526, -0.778, -1.208)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.593, 1.398, 0.000)
                atom "OD1" 5 (0.610, 1.091, 0.000)
                atom "OD2" 5 (0.592, -1.101, -0.003)
            |]
            // CYS
            [|
                atom "N" 0 (-0.522, 1.362, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.524, 0.000, 0.000)
                atom "CB" 0 (-0.519, -0.773, -1.212)
                atom "O" 3 (0.625, 1.062, 0.000)
                atom "SG" 4 (0.728, 1.653, 0.000)
            |]
            // GLN
            [|
                atom "N" 0 (-0.526, 1.361, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.525, -0.779, -1.207)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.615, 1.393, 0.000)
                atom "CD" 5 (0.587, 1.399, 0.000)
                atom "NE2" 6 (0.593, -1.189, -0.001)
                atom "OE1" 6 (0.634, 1.060, 0.000)
            |]
            // GLU
            [|
                atom "N" 0 (-0.528, 1.361, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.526, -0.781, -1.207)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.615, 1.392, 0.000)
                atom "CD" 5 (0.600, 1.397, 0.000)
                atom "OE1" 6 (0.607, 1.095, 0.000)
                atom "OE2" 6 (0.589, -1.104, -0.001)
            |]
            // GLY
            [|
                atom "N" 0 (-0.572, 1.337, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.517, 0.000, 0.000)
                atom "O" 3 (0.626, 1.062, 0.000)
            |]
            // HIS
            [|
                atom "N" 0 (-0.527, 1.360, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.525, -0.778, -1.208)
                atom "O" 3 (0.625, 1.063, 0.000)
                atom "CG" 4 (0.600, 1.370, 0.000)
                atom "CD2" 5 (0.889, -1.021, 0.003)
                atom "ND1" 5 (0.744, 1.160, 0.000)
                atom "CE1" 5 (2.030, 0.851, 0.002)
                atom "NE2" 5 (2.145, -0.466, 0.004)
            |]
            // ILE
            [|
                atom "N" 0 (-0.493, 1.373, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.527, 0.000, 0.000)
                atom "CB" 0 (-0.536, -0.793, -1.213)
                atom "O" 3 (0.627, 1.062, 0.000)
                atom "CG1" 4 (0.534, 1.437, 0.000)
                atom "CG2" 4 (0.540, -0.785, -1.199)
                atom "CD1" 5 (0.619, 1.391, 0.000)
            |]
            // LEU
            [|
                atom "N" 0 (-0.520, 1.363, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.522, -0.773, -1.214)
                atom "O" 3 (0.625, 1.063, 0.000)
                atom "CG" 4 (0.678, 1.371, 0.000)
                atom "CD1" 5 (0.530, 1.430, 0.000)
                atom "CD2" 5 (0.535, -0.774, 1.200)
            |]
            // LYS
            [|
                atom "N" 0 (-0.526, 1.362, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.524, -0.778, -1.208)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.619, 1.390, 0.000)
                atom "CD" 5 (0.559, 1.417, 0.000)
                atom "CE" 6 (0.560, 1.416, 0.000)
                atom "NZ" 7 (0.554, 1.387, 0.000)
            |]
            // MET
            [|
                atom "N" 0 (-0.521, 1.364, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.523, -0.776, -1.210)
                atom "O" 3 (0.625, 1.062, 0.000)
                atom "CG" 4 (0.613, 1.391, 0.000)
                atom "SD" 5 (0.703, 1.695, 0.000)
                atom "CE" 6 (0.320, 1.786, 0.000)
            |]
            // PHE
            [|
                atom "N" 0 (-0.518, 1.363, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.524, 0.000, 0.000)
                atom "CB" 0 (-0.525, -0.776, -1.212)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG" 4 (0.607, 1.377, 0.000)
                atom "CD1" 5 (0.709, 1.195, 0.000)
                atom "CD2" 5 (0.706, -1.196, 0.000)
                atom "CE1" 5 (2.102, 1.198, 0.000)
                atom "CE2" 5 (2.098, -1.201, 0.000)
                atom "CZ" 5 (2.794, -0.003, -0.001)
            |]
            // PRO
            [|
                atom "N" 0 (-0.566, 1.351, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.527, 0.000, 0.000)
                atom "CB" 0 (-0.546, -0.611, -1.293)
                atom "O" 3 (0.621, 1.066, 0.000)
                atom "CG" 4 (0.382, 1.445, 0.000)
                atom "CD" 5 (0.477, 1.424, 0.000)
            |]
            // SER
            [|
                atom "N" 0 (-0.529, 1.360, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.518, -0.777, -1.211)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "OG" 4 (0.503, 1.325, 0.000)
            |]
            // THR
            [|
                atom "N" 0 (-0.517, 1.364, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
                atom "CB" 0 (-0.516, -0.793, -1.215)
                atom "O" 3 (0.626, 1.062, 0.000)
                atom "CG2" 4 (0.550, -0.718, -1.228)
                atom "OG1" 4 (0.472, 1.353, 0.000)
            |]
            // TRP
            [|
                atom "N" 0 (-0.521, 1.363, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.525, 0.000, 0.000)
                atom "CB" 0 (-0.523, -0.776, -1.212)
                atom "O" 3 (0.627, 1.062, 0.000)
                atom "CG" 4 (0.609, 1.370, 0.000)
                atom "CD1" 5 (0.824, 1.091, 0.000)
                atom "CD2" 5 (0.854, -1.148, -0.005)
                atom "CE2" 5 (2.186, -0.678, -0.007)
                atom "CE3" 5 (0.622, -2.530, -0.007)
                atom "NE1" 5 (2.140, 0.690, -0.004)
                atom "CH2" 5 (3.028, -2.890, -0.013)
                atom "CZ2" 5 (3.283, -1.543, -0.011)
                atom "CZ3" 5 (1.715, -3.389, -0.011)
            |]
            // TYR
            [|
                atom "N" 0 (-0.522, 1.362, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.524, 0.000, 0.000)
                atom "CB" 0 (-0.522, -0.776, -1.213)
                atom "O" 3 (0.627, 1.062, 0.000)
                atom "CG" 4 (0.607, 1.382, 0.000)
                atom "CD1" 5 (0.716, 1.195, 0.000)
                atom "CD2" 5 (0.713, -1.194, -0.001)
                atom "CE1" 5 (2.107, 1.200, -0.002)
                atom "CE2" 5 (2.104, -1.201, -0.003)
                atom "OH" 5 (4.168, -0.002, -0.005)
                atom "CZ" 5 (2.791, -0.001, -0.003)
            |]
            // VAL
            [|
                atom "N" 0 (-0.494, 1.373, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.527, 0.000, 0.000)
                atom "CB" 0 (-0.533, -0.795, -1.213)
                atom "O" 3 (0.627, 1.062, 0.000)
                atom "CG1" 4 (0.540, 1.429, 0.000)
                atom "CG2" 4 (0.533, -0.776, 1.203)
            |]
            // UNK
            [|
                atom "N" 0 (-0.525, 1.363, 0.000)
                atom "CA" 0 (0.000, 0.000, 0.000)
                atom "C" 0 (1.526, 0.000, 0.000)
            |]

        |]

    /// [21, 14] rigid group of each atom14 slot (0 for empty slots).
    let restypeAtom14ToRigidGroup: int[,] =
        Array2D.init 21 14 (fun r k ->
            rigidGroupAtomPositions.[r]
            |> Array.tryFind (fun a -> a.Atom = atom14Names.[r].[k] && atom14Names.[r].[k] <> "")
            |> Option.map (fun a -> a.Group)
            |> Option.defaultValue 0)

    /// [21, 14, 3] position of each atom14 slot in its rigid group's frame (0 for empty slots).
    let restypeAtom14RigidGroupPositions: float32[,,] =
        Array3D.init 21 14 3 (fun r k c ->
            rigidGroupAtomPositions.[r]
            |> Array.tryFind (fun a -> a.Atom = atom14Names.[r].[k] && atom14Names.[r].[k] <> "")
            |> Option.map (fun a ->
                float32 (
                    match c with
                    | 0 -> a.X
                    | 1 -> a.Y
                    | _ -> a.Z
                ))
            |> Option.defaultValue 0.0f)

    // ---------------------------------------------------------------------------------------------------------------
    // Chi angles. Source: alphafold/common/residue_constants.py `chi_angles_atoms`, `chi_angles_mask`,
    // `chi_pi_periodic` (ESM adds an all-zero UNK row to the mask).

    /// The four atoms defining each chi angle of each residue type (21 rows; 0..4 chis per row; chi5 of ARG omitted).
    let chiAnglesAtoms: string[][][] =
        [|
            [||] // ALA
            [|
                [| "N"; "CA"; "CB"; "CG" |]
                [| "CA"; "CB"; "CG"; "CD" |]
                [| "CB"; "CG"; "CD"; "NE" |]
                [| "CG"; "CD"; "NE"; "CZ" |]
            |] // ARG
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "OD1" |] |] // ASN
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "OD1" |] |] // ASP
            [| [| "N"; "CA"; "CB"; "SG" |] |] // CYS
            [|
                [| "N"; "CA"; "CB"; "CG" |]
                [| "CA"; "CB"; "CG"; "CD" |]
                [| "CB"; "CG"; "CD"; "OE1" |]
            |] // GLN
            [|
                [| "N"; "CA"; "CB"; "CG" |]
                [| "CA"; "CB"; "CG"; "CD" |]
                [| "CB"; "CG"; "CD"; "OE1" |]
            |] // GLU
            [||] // GLY
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "ND1" |] |] // HIS
            [| [| "N"; "CA"; "CB"; "CG1" |]; [| "CA"; "CB"; "CG1"; "CD1" |] |] // ILE
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "CD1" |] |] // LEU
            [|
                [| "N"; "CA"; "CB"; "CG" |]
                [| "CA"; "CB"; "CG"; "CD" |]
                [| "CB"; "CG"; "CD"; "CE" |]
                [| "CG"; "CD"; "CE"; "NZ" |]
            |] // LYS
            [|
                [| "N"; "CA"; "CB"; "CG" |]
                [| "CA"; "CB"; "CG"; "SD" |]
                [| "CB"; "CG"; "SD"; "CE" |]
            |] // MET
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "CD1" |] |] // PHE
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "CD" |] |] // PRO
            [| [| "N"; "CA"; "CB"; "OG" |] |] // SER
            [| [| "N"; "CA"; "CB"; "OG1" |] |] // THR
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "CD1" |] |] // TRP
            [| [| "N"; "CA"; "CB"; "CG" |]; [| "CA"; "CB"; "CG"; "CD1" |] |] // TYR
            [| [| "N"; "CA"; "CB"; "CG1" |] |] // VAL
            [||] // UNK
        |]

    /// [21, 4] 1 where the residue type has that chi angle.
    let chiAnglesMask: float32[,] =
        array2D
            [|
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // ALA
                [| 1.0f; 1.0f; 1.0f; 1.0f |] // ARG
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // ASN
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // ASP
                [| 1.0f; 0.0f; 0.0f; 0.0f |] // CYS
                [| 1.0f; 1.0f; 1.0f; 0.0f |] // GLN
                [| 1.0f; 1.0f; 1.0f; 0.0f |] // GLU
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // GLY
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // HIS
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // ILE
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // LEU
                [| 1.0f; 1.0f; 1.0f; 1.0f |] // LYS
                [| 1.0f; 1.0f; 1.0f; 0.0f |] // MET
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // PHE
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // PRO
                [| 1.0f; 0.0f; 0.0f; 0.0f |] // SER
                [| 1.0f; 0.0f; 0.0f; 0.0f |] // THR
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // TRP
                [| 1.0f; 1.0f; 0.0f; 0.0f |] // TYR
                [| 1.0f; 0.0f; 0.0f; 0.0f |] // VAL
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // UNK
            |]

    /// [21, 4] 1 where the chi angle is pi-periodic (symmetric side chains: ASP chi2, GLU chi3, PHE/TYR chi2).
    let chiPiPeriodic: float32[,] =
        array2D
            [|
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // ALA
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // ARG
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // ASN
                [| 0.0f; 1.0f; 0.0f; 0.0f |] // ASP
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // CYS
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // GLN
                [| 0.0f; 0.0f; 1.0f; 0.0f |] // GLU
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // GLY
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // HIS
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // ILE
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // LEU
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // LYS
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // MET
                [| 0.0f; 1.0f; 0.0f; 0.0f |] // PHE
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // PRO
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // SER
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // THR
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // TRP
                [| 0.0f; 1.0f; 0.0f; 0.0f |] // TYR
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // VAL
                [| 0.0f; 0.0f; 0.0f; 0.0f |] // UNK
            |]

    /// [21, 4, 4] atom37 indices of the chi-defining atoms; padded with 0 where `chiAnglesMask` is 0.
    let chiAnglesAtomIndices: int[,,] =
        Array3D.init 21 4 4 (fun r chi k ->
            let chis = chiAnglesAtoms.[r]
            if chi < chis.Length then atomOrder.[chis.[chi].[k]] else 0)

    // ---------------------------------------------------------------------------------------------------------------
    // Ideal geometry. Sources: alphafold/common/residue_constants.py (`ca_ca`, `between_res_*`,
    // `van_der_waals_radius`); esm/utils/residue_constants.py (`CA_TO_N_NORM`, `CA_TO_C_NORM`).

    /// Distance between consecutive CA atoms in a trans peptide, Å.
    let caCa = 3.80209737096

    /// Mean CA–N distance of `rigidGroupAtomPositions`, Å.
    let caToNNorm = 1.4591

    /// Mean CA–C distance of `rigidGroupAtomPositions`, Å.
    let caToCNorm = 1.5252

    /// Peptide C–N bond length, Å: [general; before proline].
    let betweenResBondLengthCN: float[] = [| 1.329; 1.341 |]

    /// Standard deviation of the peptide C–N bond length, Å: [general; before proline].
    let betweenResBondLengthStddevCN: float[] = [| 0.014; 0.016 |]

    /// cos of the C–N–CA angle across the peptide bond: [mean; stddev] (121.352° ± 2.315°).
    let betweenResCosAnglesCNCA: float[] = [| -0.5203; 0.0353 |]

    /// cos of the CA–C–N angle across the peptide bond: [mean; stddev] (116.568° ± 1.995°).
    let betweenResCosAnglesCACN: float[] = [| -0.4473; 0.0311 |]

    /// Van der Waals radii by element (C, N, O, S), Å.
    let vanDerWaalsRadius: IReadOnlyDictionary<string, float> =
        readOnly [ "C", 1.7; "N", 1.55; "O", 1.52; "S", 1.8 ]

    /// Atom-name swaps that leave a side chain unchanged (symmetric atoms of ASP, GLU, PHE, TYR).
    let residueAtomRenamingSwaps: IReadOnlyDictionary<string, (string * string)[]> =
        readOnly
            [
                "ASP", [| "OD1", "OD2" |]
                "GLU", [| "OE1", "OE2" |]
                "PHE", [| "CD1", "CD2"; "CE1", "CE2" |]
                "TYR", [| "CD1", "CD2"; "CE1", "CE2" |]
            ]
