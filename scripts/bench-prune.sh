#!/usr/bin/env bash
# End-to-end timings of the random-family commands (release build): median of
# N runs of each command line, with the process start, model build, quotas,
# placement, effective check and the atomic write of the mask file included.
# Compare with the official PyTorch code's placement-only medians on the same
# machine kind (issue #3): MiCA-IGQ 0.79 s, RPI-IGQ 1.18 s on VGG-16, 0.04 s
# on ResNet-20.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
cargo build --quiet --release
bin=target/release/maskforge
n="${N:-15}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
median() {  # command... -> median wall seconds over $n runs
  local times=()
  for _ in $(seq "$n"); do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.4f", a[int((NR+1)/2)]}'
}
printf '%-44s %10s %12s %8s\n' "command" "median s" "official s" "ratio"
row() {  # label official-seconds command...
  local label="$1" ref="$2"; shift 2
  local t; t=$(median "$@")
  local ratio="-"
  [ "$ref" != "-" ] && ratio=$(echo "$ref / $t" | bc -l | xargs printf '%.0fx')
  printf '%-44s %10s %12s %8s\n' "$label" "$t" "$ref" "$ratio"
}
row "prune vgg16 mica igq 1000" 0.79 $bin prune zoo:vgg16 --method mica --quota igq --compression 1000 -o "$tmp/m.safetensors"
row "prune vgg16 rpi igq 1000" 1.18 $bin prune zoo:vgg16 --method rpi --quota igq --compression 1000 -o "$tmp/r.safetensors"
row "prune resnet20 mica igq 1000" 0.04 $bin prune zoo:resnet20 --method mica --quota igq --compression 1000 -o "$tmp/m2.safetensors"
row "prune resnet20 rpi igq 1000" 0.04 $bin prune zoo:resnet20 --method rpi --quota igq --compression 1000 -o "$tmp/r2.safetensors"
n=3 row "sweep vgg16 2 methods x 2 quotas x 3 seeds" - $bin sweep zoo:vgg16 --methods rpi,mica --quotas erk,igq --compressions 1000 --seeds 3 --csv "$tmp/s.csv"
