#!/usr/bin/env bash
# Pruning at initialisation then training on the 5 000 real MNIST digits
# (docs/repro-mnist.md): LeNet-300-100 and LeNet-5, (a) the effective-sparsity
# paper's Fig. 2 (random pruning to a direct vs an effective compression,
# SynFlow), (b) MiCA vs RPI with IGQ quotas and (c) the end-to-end pipeline
# vs vanilla magnitude pruning and SNIP at 5-1 % density, over seeds. Writes
# OUT.csv, OUT-lenet300.svg, OUT-lenet5.svg and the table into OUT.md
# (OUT=docs/repro-mnist by default), and prints the table.
#
# A quick check: OUT=/tmp/quick SEEDS=1 EPOCHS=2 NETS=lenet300 EXPERIMENTS=a
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
data="$(./scripts/fetch-mnist-csv.sh)"
args=(--seeds "${SEEDS:-3}")
[ -n "${EPOCHS:-}" ] && args+=(--epochs "$EPOCHS")
[ -n "${NETS:-}" ] && args+=(--nets "$NETS")
[ -n "${EXPERIMENTS:-}" ] && args+=(--experiments "$EXPERIMENTS")
cargo run --quiet --release --example train_mnist -- "$data" "${OUT:-docs/repro-mnist}" "${args[@]}"
