#!/usr/bin/env bash
# The gradient scorers end to end on VGG-16 with 100 calibration images
# (release build, median of N runs, process start and the mask write
# included), and in the same run a plain PyTorch forward + backward of the
# same VGG-16 (scripts/torch_vgg16.py) for a same-machine ratio. The official
# code itself, timed in the same run: scripts/bench-official.
#
# PyTorch comes from PyPI into .cache/torch-venv (a few GB: the PyPI wheel
# brings its CUDA libraries; it runs on the CPU here), or set TORCH_PYTHON to
# a python that has torch; NO_TORCH=1 skips it. N (default 3) runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
cargo build --quiet --release
bin=target/release/maskforge
n="${N:-3}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
median() {  # command... -> median wall seconds over $n runs
  local times=()
  for _ in $(seq "$n"); do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'
}
printf '%-40s %9s\n' "VGG-16, 100 images" "median s"
row() {  # label method args...
  local label="$1"; shift
  local t; t=$(median $bin prune zoo:vgg16 --compression 100 -o "$tmp/m.safetensors" "$@")
  printf '%-40s %9s\n' "$label" "$t"
}
# --samples-per-class 0: all 100 samples (the default, 10 per class, keeps
# fewer of 100 randomly labelled ones).
row "snip" --method snip --data synthetic:100 --samples-per-class 0
row "grasp" --method grasp --data synthetic:100 --samples-per-class 0
row "synflow (100 rounds)" --method synflow
if [ "${NO_TORCH:-0}" != 1 ]; then
  py="${TORCH_PYTHON:-}"
  if [ -z "$py" ]; then
    py=.cache/torch-venv/bin/python
    if ! "$py" -c "import torch" 2>/dev/null; then
      python3 -m venv .cache/torch-venv
      .cache/torch-venv/bin/pip install --quiet torch numpy >&2
    fi
  fi
  echo
  echo "plain PyTorch loop, same machine, same run (median of $n after a warm-up):"
  "$py" scripts/torch_vgg16.py --threads 2 --repeat "$n" 2>/dev/null
fi
