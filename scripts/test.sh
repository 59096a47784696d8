#!/usr/bin/env bash
# The whole test suite: installs Redis when missing, then every test against
# redis-server processes the tests start themselves. (Benchmarks: cargo bench.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-python
cargo test --locked "$@"

# The Python package (clients/python): built and installed into a scratch
# directory (so that what `pip install ./clients/python` ships is what is
# tested), checked with ruff and mypy --strict, and its pytest suite run
# against that copy, with Rust contenders from the binary cargo just built.
# LEASEHOLD_SKIP_PYTHON=1 leaves it out.
if [ "${LEASEHOLD_SKIP_PYTHON:-0}" != 1 ]; then
  py_dir="$(mktemp -d)"
  trap 'rm -rf "$py_dir"' EXIT
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$py_dir" ./clients/python
  (cd clients/python && python3 -m ruff check . && python3 -m ruff format --check . && python3 -m mypy --strict)
  (cd clients/python && LEASEHOLD_PACKAGE_DIR="$py_dir" LEASEHOLD_REQUIRE_RUST=1 \
    python3 -m pytest -q -p no:cacheprovider tests)
fi
