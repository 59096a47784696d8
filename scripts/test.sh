#!/usr/bin/env bash
# The whole test suite: installs Redis when missing, then every test against
# redis-server processes the tests start themselves. (Benchmarks: cargo bench.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-python
cargo test --locked "$@"
