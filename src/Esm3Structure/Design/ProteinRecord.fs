namespace Esm3Structure.Design

open System
open Esm3Structure.Tokenizers

/// One protein as ESM's `ESMProtein` (evolutionaryscale/esm `esm/sdk/api.py`): every track optional, `null` where
/// absent, one entry per residue where present (all present tracks have the same length L). The record behind
/// `scripts/generate.fsx`'s prompts and outputs; `Protein` (the module) converts it to the multi-track model's
/// tokens and back, and reads and writes PDB, mmCIF, FASTA and JSON.
type Protein =
    {
        /// A name for the protein (a FASTA header, a file stem); never null.
        Name: string
        /// One-letter sequence, `_` at masked positions. null: absent (all masked).
        Sequence: string
        /// [L, 37, 3] atom37 coordinates in Å, NaN where an atom is missing. null: no structure.
        Coordinates: float32[,,]
        /// SS8 letters `GHITEBSC`, `_` at masked positions. null: absent.
        SecondaryStructure: string
        /// Per-residue solvent-accessible surface area in Å², NaN where masked. null: absent.
        Sasa: float[]
        /// Function labels over residue ranges (ESM's `FunctionAnnotation`: keyword or InterPro id, 1-based
        /// inclusive range). null or empty: none.
        FunctionAnnotations: FunctionAnnotation[]
        /// The structure track's codes (0 … 4095), `StructureTokens.Mask` where unknown; one per residue, no
        /// BOS/EOS. Not in `ESMProtein` (ESM keeps them in `ESMProteinTensor`); kept here because generated structure
        /// tokens are a result. null: not tokenized.
        StructureTokens: int64[]
        /// Per-residue pLDDT in [0, 1] from the structure decoder. null: none.
        Plddt: float32[]
        /// The structure decoder's pTM; null when none, or when the decoder's pTM is marked uninformative.
        Ptm: Nullable<float>
    }
