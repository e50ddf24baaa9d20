#!/usr/bin/env python3
"""Checks a .pth written by this library (`PyTorchCheckpoint.write`, `scripts/convert.fsx`, `train.fsx --pth`):
it loads in PyTorch with `torch.load(path, weights_only=True)` and holds exactly the tensors of a safetensors file
(names, dtypes, shapes, values); with --esm-encoder or --esm-decoder it also loads with `load_state_dict(strict=True)`
into ESM's own StructureTokenEncoder / StructureTokenDecoder of those sizes (ESM's code through esm_env, as
../shared/tools/esm-reference/README.md describes; ESM's decoder fixes the pairwise head at 128/128).

usage: /usr/bin/python3 check_written.py FILE.pth FILE.safetensors
           [--esm-encoder D,HEADS,V_HEADS,LAYERS,D_OUT,CODES] [--esm-decoder D,HEADS,LAYERS]
e.g. the shipped encoder: --esm-encoder 128,1,16,2,64,512
"""
import argparse
import os
import sys

tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "..", "shared", "tools", "esm-reference")
sys.path.insert(0, tools)

p = argparse.ArgumentParser()
p.add_argument("pth")
p.add_argument("safetensors")
p.add_argument("--esm-encoder")
p.add_argument("--esm-decoder")
a = p.parse_args()

if a.esm_encoder or a.esm_decoder:
    import esm_env

    esm_env.setup()
import torch  # noqa: E402
from safetensors_io import load_file  # noqa: E402

loaded = torch.load(a.pth, weights_only=True)
expected = load_file(a.safetensors)
expected = expected[0] if isinstance(expected, tuple) else expected
assert set(loaded) == set(expected), (sorted(loaded), sorted(expected))
for name, t in expected.items():
    u = loaded[name]
    assert u.dtype == t.dtype and u.shape == t.shape and torch.equal(u, t), name
print(f"torch {torch.__version__}: {a.pth} loads with weights_only=True; {len(expected)} tensors equal {a.safetensors}")

if a.esm_encoder:
    from esm.models.vqvae import StructureTokenEncoder

    d, heads, v_heads, layers, d_out, codes = map(int, a.esm_encoder.split(","))
    m = StructureTokenEncoder(d_model=d, n_heads=heads, v_heads=v_heads, n_layers=layers, d_out=d_out, n_codes=codes)
    print("ESM StructureTokenEncoder, strict:", m.load_state_dict(loaded, strict=True))
if a.esm_decoder:
    from esm.models.vqvae import StructureTokenDecoder

    d, heads, layers = map(int, a.esm_decoder.split(","))
    m = StructureTokenDecoder(d_model=d, n_heads=heads, n_layers=layers)
    print("ESM StructureTokenDecoder, strict:", m.load_state_dict(loaded, strict=True))
