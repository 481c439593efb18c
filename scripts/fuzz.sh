#!/usr/bin/env bash
# Run the cargo-fuzz targets (ONNX reader, safetensors/index.json reader,
# mask-file reader), SECONDS_EACH seconds each (default 600), starting from
# the committed seeds in fuzz/seeds/ plus, for the ONNX reader, real graphs
# that are not committed: zoo exports too large to commit (lenet300,
# resnet20) and the light_*.onnx model-zoo graphs of the onnx wheel
# (third-party, fetched by scripts/fetch-onnx-light.sh). cargo-fuzz needs
# nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP=1.
# SANITIZER=none builds without AddressSanitizer (faster; panics and aborts
# are still found).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
secs="${SECONDS_EACH:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
gen="$root/fuzz/corpus/generated-onnx"
mkdir -p "$gen"
light="$("$root/scripts/fetch-onnx-light.sh")"
(cd "$root" && cargo build --quiet --bin maskforge)
# The malformed graphs of the bad-input catalogue, rewritten from their
# definitions in tests/bad_inputs.rs (the test is #[ignore]d in the suite).
(cd "$root" && cargo test --quiet --test bad_inputs -- --ignored write_onnx_fuzz_seeds)
for m in lenet300 resnet20; do
  [ -s "$gen/$m.onnx" ] || "$root/target/debug/maskforge" zoo export "$m" --init zero -o "$gen/$m.onnx" >/dev/null
done
for t in onnx_reader safetensors_reader maskfile_reader; do
  mkdir -p "corpus/$t"
  extra=()
  if [ "$t" = onnx_reader ]; then extra=("$gen" "$light"); fi
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O --sanitizer "${SANITIZER:-address}" "$t" \
    "corpus/$t" "seeds/$t" "${extra[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
