#!/usr/bin/env python3
"""ESM's own iterative-decoding helpers on seeded inputs, for `Training/Decoding` parity: ESM's
`esm/utils/generation.py` and `esm/utils/sampling.py` (unmodified, through esm_env), called directly.

`decoding.safetensors` holds, per case:
- `schedule.{cosine,linear}`: for every (total to sample T in 1..40, steps S in 1..min(T, 20), step t < S), the
  number of positions ESM's `_get_iterative_sampling_mask_for_prompt_and_step` unmasks at step t when T − (those
  unmasked before) are still masked: rows (T, S, t, count), int64;
- `annealed`: rows (step, num_steps, initial temperature, `_get_annealed_temperature`), float64;
- `top_p.logits` [64, 33] and `top_p.p` [64] with `top_p.out` = `top_p_logits(logits, p)`;
- `entropy.*`: ESM's entropy strategy on a 1 × 48 sequence: `entropy` [1, 48], `mask` [1, 48] (sampling mask),
  `count`, and `where` [1, 48] (the positions it picks);
- `argmax.logits` [5, 40, 64], `argmax.valid` (ids allowed) and `argmax.out`: `sample_logits` at temperature 0.

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
from esm.utils import generation as G  # noqa: E402
from esm.utils.sampling import sample_logits, top_p_logits  # noqa: E402
from safetensors_io import save_file  # noqa: E402

out = {}
g = torch.Generator().manual_seed(0)


def tokenizers_with_mask(mask_id):
    tok = types.SimpleNamespace(mask_token_id=mask_id)
    return types.SimpleNamespace(sequence=tok)


def counts(schedule):
    """Replays ESM's mask-count arithmetic over whole decodes: at each step t the sampling mask holds the still
    masked positions; ESM unmasks `count` of them (strategy random, seeded)."""
    rows = []
    for total in range(1, 41):
        for steps in range(1, min(total, 20) + 1):
            L = total + 2
            seq = torch.full((1, L), 32, dtype=torch.int64)
            seq[0, 0], seq[0, -1] = 0, 2
            cfg = types.SimpleNamespace(track="sequence", schedule=schedule, num_steps=steps, strategy="random")
            for t in range(steps):
                cur = types.SimpleNamespace(sequence=seq)
                where = G._get_iterative_sampling_mask_for_prompt_and_step(
                    cur, torch.tensor(L), torch.tensor(total), t, None, cfg, tokenizers_with_mask(32)
                )
                n = int(where.sum())
                rows.append([total, steps, t, n])
                seq = torch.where(where, torch.full_like(seq, 5), seq)
                if not (seq == 32).any():
                    break
    return torch.tensor(rows, dtype=torch.int64)


torch.manual_seed(0)
out["schedule.cosine"] = counts("cosine")
out["schedule.linear"] = counts("linear")

ann = []
for n in (1, 2, 5, 20):
    for t in range(n):
        for t0 in (0.0, 0.5, 1.0, 1.7):
            ann.append([t, n, t0, G._get_annealed_temperature(t, n, t0)])
out["annealed"] = torch.tensor(ann, dtype=torch.float64)

logits = torch.randn(64, 33, generator=g) * 3
p = torch.rand(64, generator=g)
p[:4] = torch.tensor([1.0, 0.0, 0.5, 0.999])
out["top_p.logits"] = logits.clone()
out["top_p.p"] = p
out["top_p.out"] = top_p_logits(logits.clone(), p)

entropy = torch.rand(1, 48, generator=g)
entropy[0, 10] = entropy[0, 11]  # a tie
mask = torch.rand(1, 48, generator=g) < 0.6
mask[0, 0] = mask[0, -1] = False
seq = torch.where(mask, torch.full((1, 48), 32), torch.full((1, 48), 5))
seq[0, 0], seq[0, -1] = 0, 2
total = int(mask.sum())
cfg = types.SimpleNamespace(track="sequence", schedule="cosine", num_steps=8, strategy="entropy")
where = G._get_iterative_sampling_mask_for_prompt_and_step(
    types.SimpleNamespace(sequence=seq), torch.tensor(48), torch.tensor(total), 2, types.SimpleNamespace(sequence=entropy),
    cfg, tokenizers_with_mask(32),
)
out["entropy.entropy"] = entropy
out["entropy.mask"] = mask
out["entropy.sequence"] = seq
out["entropy.where"] = where

al = torch.randn(5, 40, 64, generator=g)
valid = torch.tensor([i for i in range(64) if i % 3 != 0], dtype=torch.int64)
out["argmax.logits"] = al.clone()
out["argmax.valid"] = valid
out["argmax.out"] = sample_logits(al.clone(), temperature=0.0, valid_ids=valid.tolist())

save_file(out, os.path.join(here, "decoding.safetensors"), {"torch": torch.__version__})
print("decoding fixture:", {k: tuple(v.shape) for k, v in out.items()})

# ---- Whole iterative decodes by ESM's own `iterative_sampling_tokens` on the small seeded ESM3 of
# `../esm3/esm3-small.pth` (d 64, 2 layers), deterministic settings: entropy strategy, temperature 0 without annealing
# (argmax), cosine schedule. `iterative.safetensors` holds per case NAME: `NAME.in.*` (every track of the prompt, ESM's
# ids with BOS/EOS; coordinates [L, 3, 3] with ±inf where absent) and `NAME.out` (the generated track).
import attr  # noqa: E402
from esm.models.esm3 import ESM3  # noqa: E402
from esm.sdk.api import ESMProteinTensor, GenerationConfig  # noqa: E402

G.tqdm = lambda it, disable=False: it  # esm_env's tqdm is a stand-in that does not iterate

model = ESM3(
    d_model=64,
    n_heads=1,
    v_heads=4,
    n_layers=2,
    structure_encoder_fn=None,
    structure_decoder_fn=None,
    function_decoder_fn=None,
    tokenizers=types.SimpleNamespace(sequence=types.SimpleNamespace(mask_token_id=32)),
).eval()
model.load_state_dict(torch.load(os.path.join(here, "..", "esm3", "esm3-small.pth")))


def track(mask, bos, eos, pad, size, specials):
    return types.SimpleNamespace(
        mask_token_id=mask, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        all_token_ids=list(range(size)), special_token_ids=specials,
    )


tokenizers = types.SimpleNamespace(
    sequence=track(32, 0, 2, 1, 33, [0, 1, 32, 2, 31, 3]),
    structure=track(4096, 4098, 4097, 4099, 4101, [4096, 4097, 4098, 4099, 4100]),
    secondary_structure=track(0, 0, 0, 0, 11, [0, 1, 2]),
    sasa=track(0, 0, 0, 0, 19, [0, 1, 2]),
    function=types.SimpleNamespace(mask_token_id=0, bos_token_id=0, eos_token_id=0, pad_token_id=0, depth=8),
    residue_annotations=types.SimpleNamespace(mask_token_id=0, bos_token_id=0, eos_token_id=0, pad_token_id=0),
)

# 1UBQ chain A, the first 30 residues: sequence ids and N, CA, C.
aa = {a: i for i, a in enumerate(["<cls>", "<pad>", "<eos>", "<unk>"] + list("LAGVSERTIDPKQNFYMHWCXBUZO.-") + ["|", "<mask>"])}
three = {"MET": "M", "GLN": "Q", "ILE": "I", "PHE": "F", "VAL": "V", "LYS": "K", "THR": "T", "LEU": "L", "GLY": "G",
         "PRO": "P", "GLU": "E", "SER": "S", "ASP": "D", "ASN": "N", "ALA": "A", "ARG": "R", "TYR": "Y", "HIS": "H"}
res, xyz = [], {}
with open(os.path.join(repo, "..", "shared", "data", "small", "1ubq_A.pdb")) as f:
    for line in f:
        if line.startswith("ATOM") and line[12:16].strip() in ("N", "CA", "C"):
            key = int(line[22:26])
            if key not in xyz:
                xyz[key] = {}
                res.append((key, three[line[17:20]]))
            xyz[key][line[12:16].strip()] = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
res = res[:30]
L = len(res) + 2
seq_ids = torch.tensor([0] + [aa[r] for _, r in res] + [2])
coords = torch.full((L, 3, 3), float("inf"))
for i, (k, _) in enumerate(res):
    coords[i + 1] = torch.tensor([xyz[k][a] for a in ("N", "CA", "C")])


def masked(mask, bos, eos):
    t = torch.full((L,), mask, dtype=torch.int64)
    t[0], t[-1] = bos, eos
    return t


def prompt(**given):
    base = dict(
        sequence=masked(32, 0, 2),
        structure=masked(4096, 4098, 4097),
        secondary_structure=masked(0, 0, 0),
        sasa=masked(0, 0, 0),
        function=torch.zeros((L, 8), dtype=torch.int64),
        residue_annotations=torch.zeros((L, 16), dtype=torch.int64),
        coordinates=None,
    )
    base.update(given)
    return ESMProteinTensor(**base)


half = seq_ids.clone()
half[torch.randperm(30, generator=g)[:15] + 1] = 32
cases = {
    "sequence": (prompt(sequence=half), "sequence", 6),
    "structure": (prompt(sequence=seq_ids), "structure", 8),
    "ss8": (prompt(sequence=seq_ids), "secondary_structure", 20),
    "inverse": (prompt(structure=None, coordinates=coords), "sequence", 10),
}
iterative = {}
for name, (p, tr, steps) in cases.items():
    config = GenerationConfig(track=tr, schedule="cosine", strategy="entropy", num_steps=steps, temperature=0.0,
                              temperature_annealing=False, top_p=1.0)
    inputs = attr.evolve(p)
    [result] = G.iterative_sampling_tokens(model, [inputs], [config], tokenizers)
    for k, v in attr.asdict(p).items():
        if isinstance(v, torch.Tensor):
            iterative[name + ".in." + k] = v
    iterative[name + ".steps"] = torch.tensor([steps])
    iterative[name + ".out"] = getattr(result, tr)
    print(name, "->", getattr(result, tr).tolist()[:12], "...")
save_file(iterative, os.path.join(here, "iterative.safetensors"), {"torch": torch.__version__, "chain": "1ubq_A 1-30"})
