#!/usr/bin/env python3
"""ESM's own structure tokenizer on a real chain, for encoder and decoder parity: ESM's
`StructureTokenEncoder` and `StructureTokenDecoder` (unmodified, through esm_env) with seeded random weights, saved by
torch.save, and their outputs on 1UBQ chain A in float32 and, from the same weights and inputs upcast exactly, float64.

- `encoder.pth`: d 64, 4 geometric heads, 2 blocks, 4096 codes of width 16.
- `decoder-d64-h1.pth`, `decoder-d64-h4.pth`, `decoder-d96-h4.pth`: decoders of d 64 with 1 head (ESM's width 64),
  d 64 with 4 heads (16 wide: decodes wrong if read as ESM's 64-wide heads) and d 96 with 4 heads (24 wide: d is
  no multiple of 64). 2 layers each. A state dict does not record the head count: `--heads` states it.
- `io.safetensors`: the backbone (N, CA, C) and residue index given to the encoder; `enc.z` (pre-quantization
  vectors), `enc.tokens`, `enc.gap` (per residue, the squared distance to the second-nearest code minus that to the
  nearest: how far the token is from a tie); then per decoder `NAME.bb` (N, CA, C of every position, BOS/EOS
  included), `NAME.plddt`, `NAME.ptm`, `NAME.pae`; the same with `64.` in front for float64.

usage: ESM_REF_DIR=/path/to/esm-checkout /usr/bin/python3 generate.py   (../shared/tools/esm-reference/README.md)
"""
import copy
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.join(here, "..", "..", "..", "..")
sys.path.insert(0, os.path.join(repo, "..", "shared", "tools", "esm-reference"))
import esm_env  # noqa: E402

esm_env.setup()
import torch  # noqa: E402
from esm.models.vqvae import StructureTokenDecoder, StructureTokenEncoder  # noqa: E402
from safetensors_io import save_file  # noqa: E402


def perturb(m):
    """ESM's init leaves LayerNorm weights at 1 and biases at 0: perturb every parameter so each one matters."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


torch.manual_seed(0)
encoder = perturb(StructureTokenEncoder(d_model=64, n_heads=1, v_heads=4, n_layers=2, d_out=16, n_codes=4096))
torch.save(encoder.state_dict(), os.path.join(here, "encoder.pth"))
decoders = {}
for d, h in ((64, 1), (64, 4), (96, 4)):
    name = "decoder-d%d-h%d" % (d, h)
    decoders[name] = perturb(StructureTokenDecoder(d_model=d, n_heads=h, n_layers=2))
    torch.save(decoders[name].state_dict(), os.path.join(here, name + ".pth"))

# 1UBQ chain A: N, CA, C of each residue and its residue number, in file order.
coords, numbers = [], []
with open(os.path.join(repo, "..", "shared", "data", "small", "1ubq_A.pdb")) as f:
    for line in f:
        if line.startswith("ATOM") and line[12:16].strip() in ("N", "CA", "C"):
            key = int(line[22:26])
            if not numbers or numbers[-1] != key:
                numbers.append(key)
                coords.append({})
            coords[-1][line[12:16].strip()] = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
backbone = torch.tensor([[r[a] for a in ("N", "CA", "C")] for r in coords]).unsqueeze(0)  # [1, L, 3, 3]
residue_index = torch.tensor(numbers).unsqueeze(0)  # [1, L]


def run(dtype, enc, decs):
    out = {}
    with torch.no_grad():
        z_q, tokens = enc.encode(backbone.to(dtype), residue_index=residue_index)
        # The pre-quantization vectors and the gap between the nearest two codes (ESM's `encode` returns neither).
        z = enc_pre_vq[0]
        dist = (z.unsqueeze(-2) - enc.codebook.embeddings).pow(2).sum(-1)
        two = dist.topk(2, dim=-1, largest=False).values
        out["enc.z"] = z
        out["enc.tokens"] = tokens
        out["enc.gap"] = two[..., 1] - two[..., 0]
        structure = torch.cat([torch.tensor([[4098]]), tokens, torch.tensor([[4097]])], dim=1)  # BOS, EOS
        for name, dec in decs.items():
            o = dec.decode(structure)
            out[name + ".bb"] = o["bb_pred"]
            out[name + ".plddt"] = o["plddt"]
            out[name + ".ptm"] = o["ptm"]
            out[name + ".pae"] = o["predicted_aligned_error"]
    return out


# ESM's encode() keeps z to itself: catch pre_vq_proj's output with a forward hook.
enc_pre_vq = [None]


def hook_on(m):
    def hook(_module, _inputs, output):
        enc_pre_vq[0] = output

    return m.pre_vq_proj.register_forward_hook(hook)


hook_on(encoder)
out = run(torch.float32, encoder, decoders)
with esm_env.esm_float64():
    encoder64 = esm_env.model_to_float64(copy.deepcopy(encoder))
    hook_on(encoder64)
    decoders64 = {n: esm_env.model_to_float64(copy.deepcopy(d)) for n, d in decoders.items()}
    out64 = run(torch.float64, encoder64, decoders64)

tensors = {"in.backbone": backbone, "in.residue_index": residue_index}
tensors.update(out)
tensors.update({"64." + k: v for k, v in out64.items()})
save_file(tensors, os.path.join(here, "io.safetensors"), {"torch": torch.__version__, "chain": "1ubq_A"})
print("tokenizer fixture:", backbone.shape[1], "residues; tokens float32 == float64:",
      bool((out["enc.tokens"] == out64["enc.tokens"]).all()), "->", here)
