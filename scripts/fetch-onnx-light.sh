#!/usr/bin/env bash
# Fetch the real model-zoo graphs shipped inside the `onnx` PyPI wheel
# (onnx/backend/test/data/light/light_*.onnx: weights are ConstantOfShape
# nodes, so the files are small) and cache them under .cache/onnx-light.
# Prints the folder holding the .onnx files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/onnx-light"
if [ "$(ls "$dest"/light_*.onnx 2>/dev/null | wc -l)" -ge 9 ]; then
  echo "$dest"; exit 0
fi
"$root/scripts/setup.sh" python >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnx==1.23.2" >&2 \
  || python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" onnx >&2
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(src, "onnx-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if "/backend/test/data/light/light_" in n and n.endswith(".onnx"):
            with open(os.path.join(dest, os.path.basename(n)), "wb") as f:
                f.write(z.read(n))
PY
echo "$dest"
