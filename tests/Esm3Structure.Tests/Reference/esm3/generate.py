#!/usr/bin/env python3
"""ESM3's own forward pass on a real chain, for `Models/MultiTrack` parity: a small ESM3 (d 64, 1 head of
ESM3's width 64, 4 geometric heads, 2 layers; ESM's class, unmodified, through esm_env) with seeded weights, saved
by torch.save as `esm3-small.pth` (our loader reads PyTorch checkpoints), and `esm3-small.io.safetensors`: the inputs
(the first 30 residues of 1UBQ chain A with BOS/EOS rows of NaN, seeded tokens on every track) and ESM3's outputs
(every logit head and the embeddings), in float32 and, from the same weights and inputs upcast exactly, in float64
(`out64.*`, through esm_env's `esm_float64`).

usage: ESM_REF_DIR=/path/to/esm-checkout /usr/bin/python3 generate.py   (../shared/tools/esm-reference/README.md)
"""
import os
import sys
import types

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.join(here, "..", "..", "..", "..")
sys.path.insert(0, os.path.join(repo, "..", "shared", "tools", "esm-reference"))
import esm_env  # noqa: E402

esm_env.setup()
import torch  # noqa: E402
from esm.models.esm3 import ESM3  # noqa: E402
from safetensors_io import save_file  # noqa: E402

torch.manual_seed(0)
model = ESM3(
    d_model=64,
    n_heads=1,
    v_heads=4,
    n_layers=2,
    structure_encoder_fn=None,
    structure_decoder_fn=None,
    function_decoder_fn=None,
    tokenizers=types.SimpleNamespace(sequence=types.SimpleNamespace(mask_token_id=32)),  # read, unused: all given
).eval()
with torch.no_grad():
    # ESM's init leaves LayerNorm weights at 1 and some biases at 0: perturb every parameter so each one matters.
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
torch.save(model.state_dict(), os.path.join(here, "esm3-small.pth"))

# 1UBQ chain A: N, CA, C of each residue, in file order.
coords = {}
order = []
with open(os.path.join(repo, "..", "shared", "data", "small", "1ubq_A.pdb")) as f:
    for line in f:
        if line.startswith("ATOM") and line[12:16].strip() in ("N", "CA", "C"):
            key = (line[21], int(line[22:26]), line[26])
            if key not in coords:
                coords[key] = {}
                order.append(key)
            coords[key][line[12:16].strip()] = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
order = order[:30]
n = len(order)
L = n + 2
backbone = torch.full((1, L, 3, 3), float("nan"))
for i, key in enumerate(order):
    for j, atom in enumerate(("N", "CA", "C")):
        backbone[0, i + 1, j] = torch.tensor(coords[key][atom])

g = torch.Generator().manual_seed(1)
sequence = torch.randint(4, 24, (1, L), generator=g)
sequence[0, 0], sequence[0, -1] = 0, 2  # BOS, EOS
structure = torch.randint(0, 4096, (1, L), generator=g)
structure[0, 5] = -1  # read as MASK
ss8 = torch.randint(0, 11, (1, L), generator=g)
sasa = torch.randint(0, 19, (1, L), generator=g)
function = torch.randint(0, 260, (1, L, 8), generator=g)
function[0, :3] = 0
residue = torch.randint(0, 1478, (1, L, 16), generator=g)
residue[0, :, 4:] = 0
average = torch.full((1, L), 0.7)
per_res = torch.rand((1, L), generator=g)


def forward(m, dtype):
    """ESM3's forward on the fixture's inputs, the float inputs in `dtype`."""
    with torch.no_grad():
        return m(
            sequence_tokens=sequence,
            structure_tokens=structure,
            ss8_tokens=ss8,
            sasa_tokens=sasa,
            function_tokens=function,
            residue_annotation_tokens=residue,
            average_plddt=average.to(dtype),
            per_res_plddt=per_res.to(dtype),
            structure_coords=backbone.to(dtype),
        )


out = forward(model, torch.float32)

# The same computation in float64 (weights and inputs upcast exactly; esm_env's documented patch set).
import copy  # noqa: E402

with esm_env.esm_float64():
    out64 = forward(esm_env.model_to_float64(copy.deepcopy(model)), torch.float64)

save_file(
    {
        "in.sequence": sequence,
        "in.structure": structure,
        "in.ss8": ss8,
        "in.sasa": sasa,
        "in.function": function,
        "in.residue_annotations": residue,
        "in.coordinates": backbone,
        "in.average_plddt": average,
        "in.per_residue_plddt": per_res,
        "out.sequence_logits": out.sequence_logits,
        "out.structure_logits": out.structure_logits,
        "out.ss8_logits": out.secondary_structure_logits,
        "out.sasa_logits": out.sasa_logits,
        "out.function_logits": out.function_logits,
        "out.residue_logits": out.residue_logits,
        "out.embeddings": out.embeddings,
        "out64.sequence_logits": out64.sequence_logits,
        "out64.structure_logits": out64.structure_logits,
        "out64.ss8_logits": out64.secondary_structure_logits,
        "out64.sasa_logits": out64.sasa_logits,
        "out64.function_logits": out64.function_logits,
        "out64.residue_logits": out64.residue_logits,
        "out64.embeddings": out64.embeddings,
    },
    os.path.join(here, "esm3-small.io.safetensors"),
    {"torch": torch.__version__, "chain": "1ubq_A"},
)
print("ESM3 d 64, 2 layers;", L, "positions ->", here)
