#!/usr/bin/env python3
"""One-shot magnitude, SNIP and GraSP masks as the official code cuts them,
in numpy, for parity checks.

A transcription of the rules of Synaptic-Flow's `Mag`, `SNIP` and `GraSP`
pruners and of its global cut (ganguli-lab/Synaptic-Flow and its MiCA fork
Hikari43/minimum_connection_assurance, `Pruners/pruners.py`, `prune.py`),
written from their description, not from their code. Everything is float32,
as theirs:

* magnitude: score |w|;
* SNIP: with L_b the mean cross-entropy of batch b, score
  |sum_b (dL_b/dw * w)| (their gradient with respect to an all-ones mask),
  divided by the sum of all scores;
* GraSP: logits divided by the temperature 200; g = sum_b dL_b/dw over the
  prunable weights (no graph), Hg = sum_b d(g . dL_b/dw)/dw, score w * Hg
  (not negated: the lowest are pruned), divided by |sum of all scores| +
  1e-10. Hg is worked out by hand, exactly, with the R-operator (Pearlmutter
  1994: a forward-mode derivative of the backward pass along g); ReLU's
  second derivative is 0;
* the global cut (one pruning round, `prune_epochs` 1): d = the density,
  k = int((1 - d) * N) over all N prunable weights, threshold = the k-th
  smallest score (torch.kthvalue), every weight scoring <= threshold pruned
  (ties too); nothing pruned when k < 1.

Magnitude reads any ONNX model scripts/synflow_reference.py reads; SNIP and
GraSP take networks of Flatten, Gemm (transB), MatMul with a constant right
operand, Relu and Identity (LeNet-300-100), with the batches of the
calibration file in order, `--batch-size` samples each.

Usage:
  scorer_reference.py MODEL.onnx --method snip --compression 100 \\
      --data x.safetensors --batch-size 50 -o ref.safetensors [--scores s.safetensors]
  scorer_reference.py --make-data x.safetensors --samples 100 --shape 1,28,28 \\
      --classes 10 --seed 0
The mask file is as scripts/synflow_reference.py writes it; `--scores`
writes the float32 scores (one tensor per weight, same keys). stdout: JSON
with the per-layer kept counts, k and the threshold.
"""

import argparse
import json
import struct
import sys

import numpy as np

from synflow_reference import Net, attrs, write_safetensors

F32 = np.float32
TEMPERATURE = F32(200.0)
GRASP_EPS = F32(1e-10)


def read_safetensors(path):
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        lo, hi = h["data_offsets"]
        out[name] = np.frombuffer(blob[lo:hi], dtype=dtypes[h["dtype"]]).reshape(h["shape"])
    return out


def write_tensors(path, tensors):
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


class Mlp:
    """The layers of a dense ReLU network: [(weight name, W as [out, in],
    stored transposed?, bias or None, relu after?)]."""

    def __init__(self, net):
        self.layers = []
        for n in net.nodes:
            a, op = attrs(n), n.op_type
            if op in ("Flatten", "Identity"):
                continue
            if op == "Relu":
                if not self.layers or self.layers[-1][4]:
                    raise SystemExit("Relu must follow a dense layer")
                self.layers[-1] = self.layers[-1][:4] + (True,)
            elif op == "Gemm":
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise SystemExit("Gemm with transA/alpha/beta is not supported")
                w = net.params[n.input[1]]
                t = bool(a.get("transB", 0))
                b = net.params[n.input[2]] if len(n.input) > 2 and n.input[2] else None
                self.layers.append((n.input[1], w if t else w.T, t, b, False))
            elif op == "MatMul" and n.input[1] in net.params:
                self.layers.append((n.input[1], net.params[n.input[1]].T, False, None, False))
            elif op in ("Softmax", "LogSoftmax") and n.output[0] == net.output:
                continue
            else:
                raise SystemExit(f"op {op}: SNIP and GraSP here take dense ReLU networks only")

    def forward(self, x, ws, vs=None):
        """Activations (inputs of every layer), pre-activations, and with
        directions `vs` their R-derivatives."""
        a = x.reshape(x.shape[0], -1).astype(F32)
        ra = np.zeros_like(a) if vs is not None else None
        acts, pres, racts, rpres = [], [], [], []
        for li, (_, _, _, b, relu) in enumerate(self.layers):
            acts.append(a)
            racts.append(ra)
            z = a @ ws[li].T
            if b is not None:
                z = z + b
            rz = None
            if vs is not None:
                rz = ra @ ws[li].T + a @ vs[li].T
            pres.append(z)
            rpres.append(rz)
            if relu:
                on = (z > 0).astype(F32)
                a = z * on
                ra = rz * on if rz is not None else None
            else:
                a, ra = z, rz
        return acts, pres, racts, rpres

    def grads(self, x, y, ws, temp, vs=None):
        """dL/dW per layer ([out, in]) of the mean cross-entropy of
        logits / temp; with `vs`, also the R-derivative (H v)."""
        acts, pres, racts, rpres = self.forward(x, ws, vs)
        n = F32(x.shape[0])
        o = pres[-1] / temp
        o = o - o.max(axis=1, keepdims=True)
        p = np.exp(o)
        p = p / p.sum(axis=1, keepdims=True)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(y)), y] = 1
        dz = (p - onehot) / (n * temp)
        rdz = None
        if vs is not None:
            ro = rpres[-1] / temp
            rdz = (p * ro - p * (p * ro).sum(axis=1, keepdims=True)) / (n * temp)
        gs, hs = [None] * len(ws), [None] * len(ws)
        for li in reversed(range(len(ws))):
            gs[li] = dz.T @ acts[li]
            if vs is not None:
                hs[li] = rdz.T @ acts[li] + dz.T @ racts[li]
            if li == 0:
                break
            da = dz @ ws[li]
            rda = rdz @ ws[li] + dz @ vs[li] if vs is not None else None
            if self.layers[li - 1][4]:
                on = (pres[li - 1] > 0).astype(F32)
                da = da * on
                rda = rda * on if rda is not None else None
            dz, rdz = da, rda
        return (gs, hs) if vs is not None else gs

    def stored(self, li, m):
        """A [out, in] array in the weight's stored ONNX layout."""
        return m if self.layers[li][2] else m.T


def batches(data, size):
    x, y = data["x"].astype(F32), data["y"].astype(np.int64)
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def snip_scores(mlp, data, size):
    ws = [l[1] for l in mlp.layers]
    acc = [np.zeros_like(w) for w in ws]
    for x, y in batches(data, size):
        # Their mask gradient, accumulated over the batches: dL_b/dw * w.
        for li, g in enumerate(mlp.grads(x, y, ws, F32(1.0))):
            acc[li] = acc[li] + g * ws[li]
    s = [np.abs(a) for a in acc]
    norm = np.concatenate([v.ravel() for v in s]).sum(dtype=F32)
    return {mlp.layers[li][0]: mlp.stored(li, v / norm) for li, v in enumerate(s)}


def grasp_scores(mlp, data, size):
    ws = [l[1] for l in mlp.layers]
    bs = batches(data, size)
    g = [np.zeros_like(w) for w in ws]
    for x, y in bs:
        for li, gb in enumerate(mlp.grads(x, y, ws, TEMPERATURE)):
            g[li] = g[li] + gb
    hg = [np.zeros_like(w) for w in ws]
    for x, y in bs:
        _, hb = mlp.grads(x, y, ws, TEMPERATURE, vs=g)
        for li in range(len(ws)):
            hg[li] = hg[li] + hb[li]
    s = [h * w for h, w in zip(hg, ws)]
    norm = np.abs(np.concatenate([v.ravel() for v in s]).sum(dtype=F32)) + GRASP_EPS
    return {mlp.layers[li][0]: mlp.stored(li, v / norm) for li, v in enumerate(s)}


def global_cut(scores, order, density):
    flat = np.concatenate([scores[name].ravel() for name in order])
    k = int((1.0 - density) * flat.size)
    if k < 1:
        return {name: np.ones_like(scores[name], dtype=np.uint8) for name in order}, k, None
    threshold = np.partition(flat, k - 1)[k - 1]
    return {name: (scores[name] > threshold).astype(np.uint8) for name in order}, k, float(threshold)


def make_data(a):
    rng = np.random.default_rng(a.seed)
    shape = [int(v) for v in a.shape.split(",")]
    x = rng.random([a.samples] + shape, dtype=np.float32)
    y = (np.arange(a.samples) % a.classes).astype(np.int64)
    rng.shuffle(y)
    write_tensors(a.make_data, {"x": x, "y": y})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--method", choices=["magnitude", "snip", "grasp"])
    ap.add_argument("--compression", type=float, help="total / kept: density = 1 / compression")
    ap.add_argument("--density", type=float)
    ap.add_argument("--data", help="safetensors with x float [N, ...] and y integer labels")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("-o", "--output")
    ap.add_argument("--scores", help="also write the float32 scores here")
    ap.add_argument("--make-data", metavar="PATH", help="write random calibration data and stop")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.make_data:
        make_data(a)
        return
    if not (a.model and a.method and a.output) or (a.compression is None) == (a.density is None):
        ap.error("give MODEL, --method, -o and one of --compression/--density")
    density = a.density if a.density is not None else 1.0 / a.compression
    net = Net(a.model)
    if a.method == "magnitude":
        scores = {name: np.abs(net.params[name]) for name in net.prunable}
    else:
        if not a.data:
            ap.error(f"{a.method} needs --data")
        mlp = Mlp(net)
        data = read_safetensors(a.data)
        f = snip_scores if a.method == "snip" else grasp_scores
        scores = f(mlp, data, a.batch_size)
    masks, k, threshold = global_cut(scores, net.prunable, density)
    write_safetensors(a.output, masks, net.prunable, method=f"{a.method}-reference")
    if a.scores:
        write_tensors(a.scores, {name: scores[name].astype(F32) for name in net.prunable})
    kept = {name: int(masks[name].sum()) for name in net.prunable}
    json.dump({"kept": kept, "k": k, "threshold": threshold}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
