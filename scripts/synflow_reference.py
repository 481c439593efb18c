#!/usr/bin/env python3
"""Iterative SynFlow as the official code runs it, in numpy, for parity checks.

A transcription of the rules of Synaptic-Flow's SynFlow pruner and prune loop
(ganguli-lab/Synaptic-Flow and its MiCA fork Hikari43/minimum_connection_assurance,
`Pruners/pruners.py`, `prune.py`), written from their description, not from
their code:

* the linearised network: every parameter (weights, biases, BatchNorm scale,
  shift and running statistics) replaced by its absolute value, prunable
  weights multiplied by their masks, float32 throughout;
* input: all ones of the input shape, batch 1; R = sum of the output;
* score of a prunable weight: |dR/dp * p| (p the |weight|; a pruned weight
  has zero gradient, so it scores 0);
* round r = 1..R: d_r = d ** (r / R) (Python floats), k = int((1 - d_r) * N)
  over all N prunable weights, threshold = the k-th smallest of all scores
  (torch.kthvalue over their concatenation), every weight scoring <= the
  threshold is pruned (ties too); nothing changes in a round with k < 1.

The gradient is worked out by hand (onnxruntime does not differentiate): for
a dense layer, dR/dW is the outer product of the backward flow at its output
and its (ones-propagated) input; for a convolution, the correlation of the
two (im2col, then one matrix product). ReLU passes gradient where its output
is positive; max-pool to the first maximum of each window in row-major
order (PyTorch's rule).

Supported ONNX ops: Gemm, MatMul, Conv, Relu, MaxPool, AveragePool,
GlobalAveragePool, BatchNormalization, Flatten, Reshape, Add, Identity,
Softmax/LogSoftmax at the end (skipped: SynFlow sums the logits). Prunable
weights: Gemm's B, MatMul's constant operand, Conv's W.

Usage:
  synflow_reference.py MODEL.onnx --compression 100 --rounds 100 -o ref.safetensors
The mask file has one U8 tensor per prunable weight, keyed by the weight's
name, in its stored ONNX shape (the layout of maskforge's mask files). The
per-layer kept counts go to stdout as JSON.
"""

import argparse
import json
import struct
import sys

import numpy as np
import onnx
from onnx import numpy_helper

F32 = np.float32


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def pads_of(a, nd=2):
    p = list(a.get("pads", [0] * (2 * nd)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SystemExit("auto_pad is not supported")
    return p[:nd], p[nd:]


def im2col(x, kh, kw, stride, pad_lo, pad_hi, dil, fill=0.0):
    """x [C, H, W] -> (cols [C*kh*kw, OH*OW], OH, OW)."""
    c, h, w = x.shape
    xp = np.full((c, h + pad_lo[0] + pad_hi[0], w + pad_lo[1] + pad_hi[1]), fill, dtype=x.dtype)
    xp[:, pad_lo[0]:pad_lo[0] + h, pad_lo[1]:pad_lo[1] + w] = x
    oh = (xp.shape[1] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[2] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    cols = np.empty((c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dil[0], j * dil[1]
            cols[:, i, j] = xp[:, y0:y0 + stride[0] * oh:stride[0], x0:x0 + stride[1] * ow:stride[1]]
    return cols.reshape(c * kh * kw, oh * ow), oh, ow


def col2im(cols, shape, kh, kw, stride, pad_lo, pad_hi, dil, oh, ow):
    c, h, w = shape
    xp = np.zeros((c, h + pad_lo[0] + pad_hi[0], w + pad_lo[1] + pad_hi[1]), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dil[0], j * dil[1]
            xp[:, y0:y0 + stride[0] * oh:stride[0], x0:x0 + stride[1] * ow:stride[1]] += cols[:, i, j]
    return xp[:, pad_lo[0]:pad_lo[0] + h, pad_lo[1]:pad_lo[1] + w]


class Net:
    def __init__(self, path):
        m = onnx.load(path)
        g = m.graph
        self.params = {i.name: numpy_helper.to_array(i).astype(F32) for i in g.initializer}
        self.ints = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.nodes = list(g.node)
        self.input = [i for i in g.input if i.name not in self.params][0]
        dims = [d.dim_value for d in self.input.type.tensor_type.shape.dim]
        self.input_shape = [1] + dims[1:]
        self.output = g.output[0].name
        # A trailing Softmax is skipped: SynFlow sums the logits.
        last = [n for n in self.nodes if self.output in n.output]
        if last and last[0].op_type in ("Softmax", "LogSoftmax"):
            self.output = last[0].input[0]
        self.prunable = []
        for n in self.nodes:
            if n.op_type in ("Gemm", "Conv") and n.input[1] in self.params:
                self.prunable.append(n.input[1])
            elif n.op_type == "MatMul":
                self.prunable.extend(v for v in n.input if v in self.params)

    def p(self, name):
        """A parameter of the linearised net: |value|."""
        return np.abs(self.params[name])

    def gradients(self, masks):
        """dR/d|W| for every prunable weight (masked: zero where pruned)."""
        vals = {self.input.name: np.ones(self.input_shape, dtype=F32)}
        tape = []
        for n in self.nodes:
            a = attrs(n)
            x = vals.get(n.input[0]) if n.input else None
            op = n.op_type
            if op == "Gemm":
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise SystemExit("Gemm with transA/alpha/beta is not supported")
                w = self.p(n.input[1]) * masks[n.input[1]]
                wt = w.T if a.get("transB", 0) else w  # [in, out]
                y = x @ wt
                if len(n.input) > 2 and n.input[2]:
                    y = y + self.p(n.input[2])
                tape.append((n, x, wt))
            elif op == "MatMul":
                if n.input[1] in self.params:
                    w = self.p(n.input[1]) * masks[n.input[1]]
                    y = x @ w
                    tape.append((n, x, w))
                else:
                    raise SystemExit("MatMul with a constant left operand is not supported")
            elif op == "Conv":
                w = self.p(n.input[1]) * masks[n.input[1]]
                g = a.get("group", 1)
                co, cig, kh, kw = w.shape
                stride = a.get("strides", [1, 1])
                dil = a.get("dilations", [1, 1])
                lo, hi = pads_of(a)
                cols_all, outs = [], []
                for gi in range(g):
                    xs = x[0, gi * cig:(gi + 1) * cig]
                    cols, oh, ow = im2col(xs, kh, kw, stride, lo, hi, dil)
                    wg = w[gi * (co // g):(gi + 1) * (co // g)].reshape(co // g, -1)
                    outs.append(wg @ cols)
                    cols_all.append(cols)
                y = np.concatenate(outs, 0).reshape(1, co, oh, ow)
                if len(n.input) > 2 and n.input[2]:
                    y = y + self.p(n.input[2]).reshape(1, co, 1, 1)
                tape.append((n, x, (w, cols_all, (kh, kw, stride, lo, hi, dil, oh, ow))))
            elif op == "Relu":
                y = np.maximum(x, F32(0))
                tape.append((n, x, y))
            elif op == "MaxPool":
                kh, kw = a["kernel_shape"]
                stride = a.get("strides", [1, 1])
                dil = a.get("dilations", [1, 1])
                lo, hi = pads_of(a)
                if a.get("ceil_mode", 0):
                    raise SystemExit("ceil_mode is not supported")
                c = x.shape[1]
                cols, oh, ow = im2col(x[0], kh, kw, stride, lo, hi, dil, fill=-np.inf)
                cols = cols.reshape(c, kh * kw, oh * ow)
                arg = np.argmax(cols, axis=1)  # the first maximum, row-major in the window
                y = np.take_along_axis(cols, arg[:, None, :], 1).reshape(1, c, oh, ow)
                tape.append((n, x, (arg, (kh, kw, stride, lo, hi, dil, oh, ow))))
            elif op == "AveragePool":
                kh, kw = a["kernel_shape"]
                stride = a.get("strides", [1, 1])
                lo, hi = pads_of(a)
                if a.get("ceil_mode", 0):
                    raise SystemExit("ceil_mode is not supported")
                c = x.shape[1]
                cols, oh, ow = im2col(x[0], kh, kw, stride, lo, hi, [1, 1])
                ones, _, _ = im2col(np.ones_like(x[0]), kh, kw, stride, lo, hi, [1, 1])
                if a.get("count_include_pad", 0):
                    cnt = np.full((c, oh * ow), F32(kh * kw))
                else:
                    cnt = ones.reshape(c, kh * kw, oh * ow).sum(1)
                y = (cols.reshape(c, kh * kw, oh * ow).sum(1) / cnt).reshape(1, c, oh, ow)
                tape.append((n, x, (cnt, (kh, kw, stride, lo, hi, [1, 1], oh, ow))))
            elif op == "GlobalAveragePool":
                y = x.mean(axis=(2, 3), keepdims=True, dtype=F32)
                tape.append((n, x, None))
            elif op == "BatchNormalization":
                s, b, mu, var = (self.p(v) for v in n.input[1:5])
                eps = F32(a.get("epsilon", 1e-5))
                sh = (1, -1) + (1,) * (x.ndim - 2)
                scale = (s / np.sqrt(var + eps)).reshape(sh)
                y = (x - mu.reshape(sh)) / np.sqrt(var + eps).reshape(sh) * s.reshape(sh) + b.reshape(sh)
                tape.append((n, x, scale))
            elif op == "Flatten":
                ax = a.get("axis", 1)
                y = x.reshape(int(np.prod(x.shape[:ax])), -1)
                tape.append((n, x, None))
            elif op == "Reshape":
                shape = [int(v) for v in self.ints[n.input[1]]]
                shape[0] = 1 if shape[0] in (0, -1) else shape[0]
                y = x.reshape([x.shape[i] if v == 0 else v for i, v in enumerate(shape)])
                tape.append((n, x, None))
            elif op == "Add":
                ys = [vals[v] if v in vals else self.p(v) for v in n.input]
                y = ys[0]
                for t in ys[1:]:
                    y = y + t
                tape.append((n, x, None))
            elif op == "Identity":
                y = x
                tape.append((n, x, None))
            elif op in ("Softmax", "LogSoftmax") and n.output[0] != self.output:
                raise SystemExit(f"{op} inside the network is not supported")
            else:
                raise SystemExit(f"op {op} is not supported")
            vals[n.output[0]] = y.astype(F32, copy=False)
            if n.output[0] == self.output:
                break
        grads = {vals_name: None for vals_name in vals}
        grads[self.output] = np.ones_like(vals[self.output])
        out = {}
        for n, x, ctx in reversed(tape):
            dy = grads.get(n.output[0])
            if dy is None:
                continue
            op = n.op_type
            dx = None
            if op in ("Gemm", "MatMul"):
                wt = ctx  # [in, out]
                dwt = x.T @ dy  # batch 1: the outer product
                name = n.input[1]
                a = attrs(n)
                dw = dwt.T if (op == "Gemm" and a.get("transB", 0)) else dwt
                out[name] = dw * masks[name]
                dx = dy @ wt.T
            elif op == "Conv":
                w, cols_all, (kh, kw, stride, lo, hi, dil, oh, ow) = ctx
                a = attrs(n)
                g = a.get("group", 1)
                co, cig = w.shape[:2]
                dyg = dy[0].reshape(co, oh * ow)
                dws, dxs = [], []
                for gi in range(g):
                    d = dyg[gi * (co // g):(gi + 1) * (co // g)]
                    dws.append((d @ cols_all[gi].T).reshape(co // g, cig, kh, kw))
                    wg = w[gi * (co // g):(gi + 1) * (co // g)].reshape(co // g, -1)
                    dcols = wg.T @ d
                    dxs.append(col2im(dcols, (cig,) + x.shape[2:], kh, kw, stride, lo, hi, dil, oh, ow))
                out[n.input[1]] = np.concatenate(dws, 0) * masks[n.input[1]]
                dx = np.concatenate(dxs, 0)[None]
            elif op == "Relu":
                dx = dy * (ctx > 0)
            elif op == "MaxPool":
                arg, (kh, kw, stride, lo, hi, dil, oh, ow) = ctx
                c = x.shape[1]
                dcols = np.zeros((c, kh * kw, oh * ow), dtype=F32)
                np.put_along_axis(dcols, arg[:, None, :], dy[0].reshape(c, 1, oh * ow), 1)
                dx = col2im(dcols.reshape(c * kh * kw, oh * ow), x.shape[1:], kh, kw, stride, lo, hi, dil, oh, ow)[None]
            elif op == "AveragePool":
                cnt, (kh, kw, stride, lo, hi, dil, oh, ow) = ctx
                c = x.shape[1]
                d = (dy[0].reshape(c, 1, oh * ow) / cnt[:, None, :]).astype(F32)
                dcols = np.broadcast_to(d, (c, kh * kw, oh * ow)).reshape(c * kh * kw, oh * ow)
                dx = col2im(dcols, x.shape[1:], kh, kw, stride, lo, hi, dil, oh, ow)[None]
            elif op == "GlobalAveragePool":
                dx = np.broadcast_to(dy / F32(x.shape[2] * x.shape[3]), x.shape)
            elif op == "BatchNormalization":
                dx = dy * ctx
            elif op in ("Flatten", "Reshape", "Identity"):
                dx = dy.reshape(x.shape)
            elif op == "Add":
                for v in n.input:
                    if v not in self.params:
                        grads[v] = dy if grads.get(v) is None else grads[v] + dy
                continue
            dx = dx.astype(F32, copy=False)
            v = n.input[0]
            grads[v] = dx if grads.get(v) is None else grads[v] + dx
        return out

    def scores(self, masks):
        g = self.gradients(masks)
        return {name: np.abs(g[name] * self.p(name)) for name in self.prunable}


def synflow(net, density, rounds):
    masks = {name: np.ones_like(net.params[name]) for name in net.prunable}
    for r in range(1, rounds + 1):
        s = net.scores(masks)
        d_r = density ** (r / rounds)
        flat = np.concatenate([s[name].ravel() for name in net.prunable])
        k = int((1.0 - d_r) * flat.size)
        if k < 1:
            continue
        threshold = np.partition(flat, k - 1)[k - 1]
        for name in net.prunable:
            masks[name] = np.where(s[name] <= threshold, F32(0), F32(1))
    return masks


def write_safetensors(path, masks, order, method="synflow-reference"):
    header, blobs, offset = {}, [], 0
    for name in order:
        b = masks[name].astype(np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(masks[name].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"method": method}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    amount = ap.add_mutually_exclusive_group(required=True)
    amount.add_argument("--compression", type=float, help="total / kept: density = 1 / compression")
    amount.add_argument("--density", type=float)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    density = a.density if a.density is not None else 1.0 / a.compression
    net = Net(a.model)
    masks = synflow(net, density, a.rounds)
    write_safetensors(a.output, masks, net.prunable)
    json.dump({name: int(masks[name].sum()) for name in net.prunable}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
