#!/usr/bin/env bash
# Fetch the real model-zoo graphs shipped inside the `onnx` PyPI wheel
# (onnx/backend/test/data/light/light_*.onnx: weights are ConstantOfShape
# nodes, so the files are small) and cache them under .cache/onnx-light.
# Prints the folder holding the .onnx files. The wheel's version is pinned.
# Every file is written under a temporary name and renamed into place, and
# the folder counts as complete only once the `.complete` stamp (written
# last, listing the files) is there, so an interrupted fetch leaves no
# half-written model and is simply redone.
set -euo pipefail
ONNX_VERSION=1.23.2
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/onnx-light"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "onnx==$ONNX_VERSION" ]; then
  echo "$dest"; exit 0
fi
"$root/scripts/setup.sh" python >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
  "onnx==$ONNX_VERSION" >&2
mkdir -p "$dest"
PYTHONPATH="$root/scripts" python3 - "$tmp" "$dest" "$ONNX_VERSION" <<'PY'
import glob, os, sys, zipfile
from atomic_put import put
src, dest, version = sys.argv[1], sys.argv[2], sys.argv[3]

stamp = os.path.join(dest, ".complete")
if os.path.exists(stamp):
    os.unlink(stamp)
wheel = glob.glob(os.path.join(src, f"onnx-{version}-*.whl"))[0]
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/backend/test/data/light/light_" in name and name.endswith(".onnx"):
            put(os.path.join(dest, os.path.basename(name)), z.read(name))
            n += 1
if n < 9:
    sys.exit(f"onnx {version} wheel: only {n} light_*.onnx models")
put(stamp, f"onnx=={version}".encode())
PY
echo "$dest"
