#!/usr/bin/env bash
# maskforge's NPB masks beside the official code's (the parity fixtures of
# fixtures/npb, made by fixtures/npb/make.sh), both audited by maskforge:
# kept weights, effective nodes and log10 effective paths per model and
# density, as a Markdown table (docs/npb.md). Needs only this repository.
#
#   ./scripts/npb-parity.sh [PRUNE OPTIONS]   e.g. --max-taps-schedule reference
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
cargo build --quiet --release
bin=target/release/maskforge
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])" "$@"; }
echo "| model | density | kept (ours / theirs) | effective nodes (ours / theirs) | log10 paths (ours / theirs) | ours, s |"
echo "|---|---|---|---|---|---|"
for masks in fixtures/npb/*.masks.safetensors.gz; do
  run="$(basename "$masks" .masks.safetensors.gz)"
  model="${run%_*}"; density="${run##*_}"
  gzip -dc "$masks" >"$tmp/theirs.safetensors"
  "$bin" audit "zoo:$model" --masks "$tmp/theirs.safetensors" --json >"$tmp/theirs.json"
  compression="$(python3 -c "print(1 / $density)")"
  s=$(date +%s.%N)
  "$bin" prune "zoo:$model" --method npb --compression "$compression" "$@" -o "$tmp/ours.safetensors" >/dev/null
  e=$(date +%s.%N)
  "$bin" audit "zoo:$model" --masks "$tmp/ours.safetensors" --json >"$tmp/ours.json"
  printf '| %s | %s | %s / %s | %s / %s | %.3f / %.3f | %.2f |\n' "$model" "$density" \
    "$(field "$tmp/ours.json" kept)" "$(field "$tmp/theirs.json" kept)" \
    "$(field "$tmp/ours.json" effective_nodes)" "$(field "$tmp/theirs.json" effective_nodes)" \
    "$(field "$tmp/ours.json" log10_effective_paths)" "$(field "$tmp/theirs.json" log10_effective_paths)" \
    "$(echo "$e - $s" | bc -l)"
done
