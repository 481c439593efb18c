#!/usr/bin/env bash
# Run the cargo-fuzz targets (ONNX reader, safetensors/index.json reader,
# mask-file reader), SECONDS_EACH seconds each (default 600), starting from
# the committed seeds in fuzz/seeds/. cargo-fuzz needs nightly features; the
# stable toolchain provides them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${SECONDS_EACH:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for t in onnx_reader safetensors_reader maskfile_reader; do
  mkdir -p "corpus/$t"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
