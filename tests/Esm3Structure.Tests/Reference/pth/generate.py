#!/usr/bin/env python3
"""Writes the PyTorch-checkpoint fixtures of `Io/PyTorchCheckpointTests` with torch.save (zip format, pickle
protocol 2), each beside `NAME.expected.safetensors`: every tensor as a contiguous float32 copy (exact for every dtype
here), its dtype name in the metadata under the tensor's name.

  dtypes.pth   float32, float16, bfloat16, float64, int64, int32, int8, uint8 and bool tensors, one storage each
  views.pth    views sharing one storage: a row, a column (stride 6), a block with an offset, a transpose, the base
  nested.pth   {"model": state_dict, "step": 7, "note": "text"}: a nested dict and non-tensor leaves
  evil.pth     a pickle whose object reduces to posix.system (never called by the reader: it must refuse the global)
  legacy.pth   the pre-1.6 format (_use_new_zipfile_serialization=False): refused with a message

usage: /usr/bin/python3 generate.py [OUT_DIR]   (Debian's python3-torch; ../shared/tools/esm-reference/README.md)
"""
import collections
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "..", "shared", "tools", "esm-reference"))
import torch  # noqa: E402
from safetensors_io import save_file  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def expected(name, tensors):
    save_file(
        {k: v.to(torch.float32).contiguous() for k, v in tensors.items()},
        os.path.join(out, name + ".expected.safetensors"),
        {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()},
    )


def save(name, obj, tensors):
    torch.save(obj, os.path.join(out, name + ".pth"))
    expected(name, tensors)


g = torch.Generator().manual_seed(0)
dtypes = collections.OrderedDict(
    [
        ("layer.weight", torch.randn(3, 4, generator=g)),
        ("layer.half", (torch.randn(5, generator=g) * 3).to(torch.float16)),
        ("layer.bf16", (torch.randn(2, 3, generator=g) * 3).to(torch.bfloat16)),
        ("layer.double", torch.randn(2, 2, generator=g, dtype=torch.float64).to(torch.float32).to(torch.float64)),
        ("counts.long", torch.tensor([0, -3, 2**40, 7])),
        ("counts.int", torch.tensor([1, -2, 3], dtype=torch.int32)),
        ("counts.int8", torch.tensor([-128, 0, 127], dtype=torch.int8)),
        ("counts.uint8", torch.tensor([0, 255, 9], dtype=torch.uint8)),
        ("mask", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5)),
    ]
)
save("dtypes", dtypes, dtypes)

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
views = collections.OrderedDict(
    [
        ("base", base),
        ("row", base[1]),
        ("column", base[:, 2]),
        ("block", base[1:3, 2:5]),
        ("transposed", base.t()),
    ]
)
save("views", views, views)

inner = collections.OrderedDict([("encoder.weight", torch.randn(2, 3, generator=g)), ("encoder.bias", torch.zeros(2))])
save("nested", {"model": inner, "step": 7, "note": "text"}, {"model." + k: v for k, v in inner.items()})


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


torch.save({"weight": torch.ones(2), "payload": Evil()}, os.path.join(out, "evil.pth"))
torch.save({"weight": torch.ones(2)}, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
print("torch", torch.__version__, "->", out)
