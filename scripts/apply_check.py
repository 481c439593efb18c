#!/usr/bin/env python3
"""Check a masked ONNX model against the dense one with weights zeroed by hand.

usage: apply_check.py DENSE.onnx MASKS.safetensors MASKED.onnx
The mask file is parsed by hand (8-byte header length, JSON header, data), so
no safetensors package is needed. Exits 1 when outputs differ (rel. 1e-5) or
when the masked model's weights are not exactly the dense ones times the mask.
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


def main():
    dense_path, mask_path, masked_path = sys.argv[1:4]
    masks = read_masks(mask_path)
    dense = onnx.load(dense_path)
    masked = onnx.load(masked_path)
    onnx.checker.check_model(masked, full_check=True)
    zeroed = 0
    for init in dense.graph.initializer:
        if init.name in masks:
            w = numpy_helper.to_array(init)
            m = masks[init.name]
            assert m.shape == w.shape, (init.name, m.shape, w.shape)
            zeroed += int((~m).sum())
            init.CopyFrom(numpy_helper.from_array(np.where(m, w, 0).astype(np.float32), init.name))
    assert zeroed > 0, "the masks prune nothing"
    got = {i.name: numpy_helper.to_array(i) for i in masked.graph.initializer}
    for init in dense.graph.initializer:
        if init.name in masks:
            assert np.array_equal(got[init.name], numpy_helper.to_array(init)), init.name
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ya = ort.InferenceSession(dense.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {dense.graph.input[0].name: x})[0]
    yb = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {masked.graph.input[0].name: x})[0]
    err = float(np.max(np.abs(ya - yb)) / max(float(np.max(np.abs(ya))), 1e-12))
    print(f"zeroed {zeroed} weights; max relative difference {err:.2e}")
    sys.exit(0 if err <= 1e-5 else 1)


if __name__ == "__main__":
    main()
