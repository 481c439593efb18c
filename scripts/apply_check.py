#!/usr/bin/env python3
"""Check a masked ONNX model against the dense one with weights zeroed by hand.

usage: apply_check.py DENSE.onnx MASKS.safetensors MASKED.onnx [DIMS]
The mask file is parsed by hand (8-byte header length, JSON header, data), so
no safetensors package is needed. Exits 1 when outputs differ (rel. 1e-5) or
when the masked model's weights are not exactly the dense ones times the mask.
Weights stored as Constant nodes are handled as initializers of the same
name. A quantized (int8/uint8) weight of a QDQ model is pruned by hand the way its
DequantizeLinear reads as 0: pruned entries set to the zero point. The input
is 4 samples of the model's input shape, or DIMS (e.g. 1x3x64x64) when given.
"""
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def read_masks(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "BOOL", v["dtype"]
        out[k] = np.frombuffer(body[a:b], dtype=np.uint8).reshape(v["shape"]).astype(bool)
    return out


def zero_point(model, name, shape):
    """The zero point of the DequantizeLinear reading `name`, broadcast to `shape`."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] == name:
            z = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros(1, np.int64)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if z.size > 1:
                view = [1] * len(shape)
                view[axis] = z.size
                z = z.reshape(view)
            return np.broadcast_to(z, shape)
    raise SystemExit(f"{name}: quantized but read by no DequantizeLinear")


def input_shape(model):
    if len(sys.argv) > 4:
        return [int(d) for d in sys.argv[4].split("x")]
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return [4] + dims[1:]


def main():
    dense_path, mask_path, masked_path = sys.argv[1:4]
    masks = read_masks(mask_path)
    dense = onnx.load(dense_path)
    masked = onnx.load(masked_path)
    onnx.checker.check_model(masked, full_check=True)
    zeroed = 0
    # Weights stored as Constant nodes (PaddlePaddle exports) become
    # initializers of the same name first, as maskforge's --apply does.
    for node in list(dense.graph.node):
        if node.op_type == "Constant" and node.output[0] in masks:
            t = next(a.t for a in node.attribute if a.name == "value")
            t.name = node.output[0]
            dense.graph.initializer.append(t)
            dense.graph.node.remove(node)
    for init in dense.graph.initializer:
        if init.name in masks:
            w = numpy_helper.to_array(init)
            m = masks[init.name]
            assert m.shape == w.shape, (init.name, m.shape, w.shape)
            zeroed += int((~m).sum())
            if w.dtype in (np.int8, np.uint8):
                pruned = np.where(m, w, zero_point(dense, init.name, w.shape)).astype(w.dtype)
            else:
                pruned = np.where(m, w, 0).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(pruned, init.name))
    assert zeroed > 0, "the masks prune nothing"
    got = {i.name: numpy_helper.to_array(i) for i in masked.graph.initializer}
    for init in dense.graph.initializer:
        if init.name in masks:
            assert np.array_equal(got[init.name], numpy_helper.to_array(init)), init.name
    x = np.random.default_rng(0).standard_normal(input_shape(dense)).astype(np.float32)
    ya = ort.InferenceSession(dense.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {dense.graph.input[0].name: x})[0]
    yb = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {masked.graph.input[0].name: x})[0]
    err = float(np.max(np.abs(ya - yb)) / max(float(np.max(np.abs(ya))), 1e-12))
    print(f"zeroed {zeroed} weights; max relative difference {err:.2e}")
    sys.exit(0 if err <= 1e-5 else 1)


if __name__ == "__main__":
    main()
