#!/usr/bin/env python3
"""SNIP or GraSP masks of the official code and of maskforge on the same
VGG-16 weights and the same 100 inputs, compared weight by weight.

The official code (Hikari43/minimum_connection_assurance, a Synaptic-Flow
fork) builds its VGG-16 with BatchNorm at seed 0; its parameters and
BatchNorm statistics are written to a safetensors file, which maskforge
reads with `--arch zoo:vgg16` (the zoo uses the same names), and the inputs
and labels to another (`--data`). Both prune at density 1/100, one global
round; maskforge writes the raw mask (`--keep-inactive`), as theirs is.
Prints per layer the weights each keeps and both keep.

  PYTHONPATH=.cache/py python3 scripts/official_parity_vgg16.py \\
      --official /work/.cache-official/mca --method grasp

Needs torch and their checkout (like scripts/bench-official); CI does not
run it.
"""
import argparse
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np


def save_safetensors(path, tensors):
    dtypes = {np.float32: "F32", np.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for k, t in tensors.items():
        a = np.ascontiguousarray(t)
        b = a.tobytes()
        header[k] = {"dtype": dtypes[a.dtype.type], "shape": list(a.shape),
                     "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_masks(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=np.uint8).astype(bool).reshape(v["shape"])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--official", required=True, help="their checkout")
    p.add_argument("--method", choices=["snip", "grasp"], required=True)
    p.add_argument("--maskforge", default="target/release/maskforge")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    sys.path.insert(0, os.path.abspath(a.official))
    import torch
    import torch.nn as nn
    from Models import lottery_vgg
    from Pruners import pruners
    from Utils import generator
    from prune import prune_loop

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        model = lottery_vgg.vgg16_bn((3, 32, 32), 10, False, False)
    x = torch.rand(100, 3, 32, 32)
    y = torch.randint(0, 10, (100,))
    tmp = tempfile.mkdtemp()
    weights, data, ours = (os.path.join(tmp, f) for f in ("vgg16.safetensors", "cal.safetensors", "ours.safetensors"))
    save_safetensors(weights, {k: v.detach().numpy() for k, v in model.state_dict().items()
                               if v.dtype == torch.float32})
    save_safetensors(data, {"x": x.numpy(), "y": y.numpy()})

    cls = {"grasp": pruners.GraSP, "snip": pruners.SNIP}[a.method]
    pruner = cls(generator.masked_parameters(model, False, False, False))
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        prune_loop(model=model, loss=nn.CrossEntropyLoss(), pruner=pruner, dataloader=[(x, y)],
                   device=torch.device("cpu"), density=0.01, schedule="exponential",
                   scope="global", epochs=1)
    names = [n for n, q in model.named_parameters() if q.dim() > 1]
    theirs = {n: m.detach().numpy().astype(bool) for n, (m, _) in zip(names, pruner.masked_parameters)}

    subprocess.run([a.maskforge, "prune", weights, "--arch", "zoo:vgg16", "--method", a.method,
                    "--compression", "100", "--data", data, "--samples-per-class", "0",
                    "--keep-inactive", "-o", ours], check=True, stdout=subprocess.DEVNULL)
    mine = load_masks(ours)
    totals = [0, 0, 0]
    print(f"{'layer':24} {'theirs':>8} {'ours':>8} {'both':>8}")
    for k in names:
        t, o = theirs[k], mine[k]
        row = [int(t.sum()), int(o.sum()), int((t & o).sum())]
        totals = [s + r for s, r in zip(totals, row)]
        print(f"{k:24} {row[0]:8} {row[1]:8} {row[2]:8}")
    print(f"{a.method}: theirs {totals[0]}, ours {totals[1]}, both {totals[2]} "
          f"({totals[2] / max(totals[0], 1):.4%} of theirs)")


if __name__ == "__main__":
    main()
