#!/usr/bin/env bash
# Check that the `cuda` cargo feature compiles on a machine without a GPU:
# installs Debian's CUDA toolkit (non-free; CUDA 11.8 on bookworm) when nvcc
# is missing, then runs `cargo check --features cuda --all-targets` in its
# own target directory. Not part of the test suite (large download, and the
# first build compiles candle's CUDA kernels: about 20 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nvcc >/dev/null; then
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q 'non-free' "$src"; then
    sudo_ sed -i 's/^Components: main$/Components: main contrib non-free/' "$src"
  fi
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit
fi
nvcc --version | tail -2
# No nvidia-smi to ask: compile for compute capability 8.0; one nvcc at a time.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-1}"
cargo check --features cuda --all-targets --target-dir target/cuda-check
