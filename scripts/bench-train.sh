#!/usr/bin/env bash
# One training epoch of LeNet-300-100 and LeNet-5 on the 4 000 training
# digits (the tests' split of the 5 000 MNIST digits), `maskforge train`
# (release build) beside a plain PyTorch loop of the same model, batch size
# and optimiser (scripts/bench_train.py), in the same run on the same
# machine. Each side trains E epochs (default 3) from a fresh start and the
# median epoch is reported (the training steps only: maskforge's per-epoch
# `seconds`, which leaves out loading and the held-out evaluation).
#
# TORCH_PYTHON: a python with torch (default: python3 with PYTHONPATH set to
# the shared install /work/main/.cache/py when it exists, else
# .cache/torch-venv as scripts/bench-scorers.sh makes it).
# OPTIMIZER=adam|sgd (default adam), BATCH (default 64), THREADS (default 2:
# both sides use that many threads; on cores shared with other work
# PyTorch's OpenMP threads slow down far more than ours, so THREADS=1 is the
# steadier comparison there).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
bin=target/release/maskforge
e="${E:-3}"; opt="${OPTIMIZER:-adam}"; batch="${BATCH:-64}"; threads="${THREADS:-2}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
csv="$(bash scripts/fetch-mnist-csv.sh)"
# Every fifth digit is held out (tests/train.rs): 4 000 remain.
zcat -f "$csv" | awk 'NR % 5 != 0' > "$tmp/train.csv"
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {printf "%.4f", a[int((NR+1)/2)]}'; }
py="${TORCH_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -d /work/main/.cache/py ]; then
    export PYTHONPATH="/work/main/.cache/py${PYTHONPATH:+:$PYTHONPATH}"
    py=python3
  else
    py=.cache/torch-venv/bin/python
    if ! "$py" -c "import torch" 2>/dev/null; then
      python3 -m venv .cache/torch-venv
      .cache/torch-venv/bin/pip install --quiet torch numpy >&2
    fi
  fi
fi
torch_lines="$("$py" scripts/bench_train.py --data "$tmp/train.csv" --epochs "$e" \
  --batch-size "$batch" --optimizer "$opt" --threads "$threads" 2>/dev/null)"
printf '%-10s %6s %5s %14s %14s %7s\n' model opt batch "maskforge s" "pytorch s" ratio
for m in lenet300 lenet5; do
  ours=$(RAYON_NUM_THREADS="$threads" $bin train "zoo:$m" --data "$tmp/train.csv" --epochs "$e" \
    --batch-size "$batch" --optimizer "$opt" --json -o "$tmp/$m.safetensors" \
    | python3 -c 'import json,sys; print(" ".join(str(x["seconds"]) for x in json.load(sys.stdin)["epochs"]))' \
    | median)
  theirs=$(echo "$torch_lines" | awk -v m="$m" '$1 == m {$1=""; print}' | sed 's/^ //' | median)
  ratio=$(echo "$ours / $theirs" | bc -l)
  printf '%-10s %6s %5s %14s %14s %7.2f\n' "$m" "$opt" "$batch" "$ours" "$theirs" "$ratio"
done
echo "(ratio = maskforge / PyTorch seconds per epoch; below 1 is faster)"
