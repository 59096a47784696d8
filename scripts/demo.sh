#!/usr/bin/env bash
# The main job on a local default: a throwaway redis-server, three supervised
# instances of a sample job, the leader killed a few times, failovers printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo run --quiet --locked -- demo "$@"
