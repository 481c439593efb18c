#!/usr/bin/env python3
"""Run an ONNX model in onnxruntime and compare with reference outputs.

usage: ort_check.py MODEL.onnx INPUT.bin IN_SHAPE OUTPUT.bin [RTOL]
OUTPUT may be '-' (no reference: only run it). INPUT/OUTPUT are raw little-endian float32; IN_SHAPE like 2x3x32x32.
Prints the max error relative to the output's scale (its largest magnitude,
at least 0.01); exits 1 when it exceeds RTOL (default 1e-4).
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model, xin, shape, yref = sys.argv[1:5]
    rtol = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-4
    onnx.checker.check_model(onnx.load(model), full_check=True)
    x = np.fromfile(xin, dtype="<f4").reshape([int(d) for d in shape.split("x")])
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if yref == "-":
        # No reference: the model must run and give finite, non-constant outputs.
        ok = bool(np.all(np.isfinite(y))) and float(np.std(y)) > 0
        print(f"{model}: ran in onnxruntime, output shape {y.shape}, finite={ok}")
        sys.exit(0 if ok else 1)
    ref = np.fromfile(yref, dtype="<f4").reshape(y.shape)
    # Relative to the output's scale, taken as at least 0.01: an output of a
    # sigmoid far in its tail (1e-7) is compared to 1e-6 absolute, where
    # float32 implementations legitimately differ (onnxruntime flushes such
    # values to 0).
    scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(y))), 1e-2)
    err = float(np.max(np.abs(y - ref)) / scale)
    print(f"{model}: max relative error {err:.3e}")
    sys.exit(0 if err <= rtol else 1)


if __name__ == "__main__":
    main()
