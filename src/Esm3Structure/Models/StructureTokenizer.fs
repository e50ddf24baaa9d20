namespace Esm3Structure.Models

open System
open System.IO
open System.Text
open System.Text.Json
open TorchSharp
open Esm3Structure
open Esm3Structure.Io
open Esm3Structure.Structure
open Esm3Structure.Tokenizers

/// One chain as structure tokens: the record behind the JSON of `scripts/tokenize.fsx` (README, "Tokenize and
/// decode"). One token per residue in file order, no BOS/EOS.
type TokenizedChain =
    {
        /// The structure file the chain was read from (as given).
        File: string
        /// The chain id as read ("" when blank).
        Chain: string
        /// One-letter sequence, one letter per token; "" when unknown (decoding then uses alanine, as ESM).
        Sequence: string
        /// Author residue numbers, one per token.
        ResidueIndex: int[]
        /// Codebook ids 0 … 4095; `StructureTokens.Mask` (4096) exactly at the residues of `MissingBackbone`.
        Tokens: int64[]
        /// 0-based positions (into the arrays above) of residues without all of N, CA and C: no frame, so no token.
        MissingBackbone: int[]
    }

/// Structure files → tokens, and tokens → decoded PDB: what `scripts/tokenize.fsx` and `scripts/decode.fsx` do
/// (their JSON is `App.TokensJson`).
module StructureTokenizer =

    /// Tokenizes a chain with `encoder` (in eval mode, no gradients): backbone N, CA, C in float32, the author
    /// residue numbers as positions (as ESM's `ProteinChain.to_structure_encoder_inputs`), one chain. Residues
    /// without a complete backbone get `StructureTokens.Mask` and are listed in `MissingBackbone` (ESM would give
    /// them the code nearest the projection of a zero vector; we do not guess). `File` is the chain's name.
    let tokenize (encoder: StructureEncoder) (chain: ProteinChain) : TokenizedChain =
        let l = ProteinChain.length chain

        let tokens, framed =
            if l = 0 then
                [||], [||]
            else
                use _scope = torch.NewDisposeScope()
                use _noGrad = torch.no_grad ()
                let device = Checkpoint.deviceOf encoder

                let backbone =
                    (ProteinChain.backbone torch.float32 chain).unsqueeze(0L).``to`` device

                let residueIndex = (ProteinChain.residueIndex chain).unsqueeze(0L).``to`` device
                let out = encoder.Encode(backbone, residueIndex, null, null)

                let ids =
                    out.Tokens.select(0L, 0L).cpu().to_type(torch.int64).contiguous().data<int64>().ToArray()

                let framed = out.Framed.select(0L, 0L).cpu().contiguous().data<bool>().ToArray()
                ids, framed

        {
            File = chain.Name
            Chain = chain.ChainId
            Sequence = chain.Sequence
            ResidueIndex = Array.copy chain.ResidueIndex
            Tokens = Array.init l (fun i -> if framed.[i] then tokens.[i] else StructureTokens.Mask)
            MissingBackbone =
                [|
                    for i in 0 .. l - 1 do
                        if not framed.[i] then
                            i
                |]
        }

    /// The positions of `tokenized` that hold a token (every one not in `MissingBackbone`), in order; a chain with
    /// none raises an `ArgumentException` naming `name`.
    let decodable (name: string) (tokenized: TokenizedChain) : int[] =
        let missing = Collections.Generic.HashSet<int>(tokenized.MissingBackbone)

        let keep =
            [| 0 .. tokenized.Tokens.Length - 1 |] |> Array.filter (missing.Contains >> not)

        if keep.Length = 0 then
            raise (ArgumentException(sprintf "%s: no residue has N, CA and C; nothing to decode" name))

        keep

    /// Reads the chain `chain` (null or "": the first protein chain) of a PDB or mmCIF file (optionally gzipped,
    /// first model) and tokenizes it; `File` is `path` as given. Bad input raises an `InputException` naming it.
    let tokenizeFile (encoder: StructureEncoder) (path: string) (chain: string) : TokenizedChain =
        let c =
            StructureFile.read path (if String.IsNullOrEmpty chain then None else Some chain)

        { tokenize encoder c with File = path }

    /// Decodes a tokenized chain (BOS and EOS added; `StructureDecoder.decodeWithSequence`), with the chain's
    /// sequence (alanine when unknown), chain id and residue numbers. A MASK (a residue without backbone) raises an
    /// `InputException` naming `File` and the position: the decoder needs every token.
    let decode (decoder: StructureDecoder) (tokenized: TokenizedChain) : DecodedStructure =
        tokenized.Tokens
        |> Array.iteri (fun i id ->
            if id = StructureTokens.Mask then
                InputError.raise
                    tokenized.File
                    (InputLocation.Field(sprintf "structure_tokens[%d]" i))
                    "MASK (a residue without backbone): only chains with every structure token can be decoded")

        let l = tokenized.Tokens.Length

        let sequence =
            if String.IsNullOrEmpty tokenized.Sequence then
                String('A', l)
            else
                tokenized.Sequence

        let wrapped = StructureTokens.wrap tokenized.File tokenized.Tokens
        let d = StructureDecoder.decodeWithSequence decoder sequence wrapped

        { d with
            Chain =
                { d.Chain with
                    Name = Path.GetFileName tokenized.File
                    ChainId = tokenized.Chain
                    ResidueIndex = Array.copy tokenized.ResidueIndex
                }
        }

    /// The PDB text of a decoded chain: `REMARK 250 PTM: 0.8123` (four decimals), then the atoms (atom37 order;
    /// B-factor = 100 · pLDDT). A chain id longer than one character (mmCIF) is written as its first character.
    let toPdb (decoded: DecodedStructure) : string =
        let chain =
            if decoded.Chain.ChainId.Length > 1 then
                { decoded.Chain with
                    ChainId = decoded.Chain.ChainId.Substring(0, 1)
                }
            else
                decoded.Chain

        String.Format(Globalization.CultureInfo.InvariantCulture, "REMARK 250 PTM: {0:F4}\n", decoded.Ptm)
        + Pdb.toText AtomLayout.Atom37 None chain

    /// Writes `toPdb decoded` to `path` atomically (gzip when it ends in .gz).
    let writePdb (path: string) (decoded: DecodedStructure) : unit =
        TextFiles.writeAtomic path (toPdb decoded)
