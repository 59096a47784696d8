#!/usr/bin/env bash
# Installs redis-server (6.2+), redis-sentinel and redis-cli when missing.
# Debian/Ubuntu via apt-get (as root, or through sudo). Anything else: a clear message.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "leasehold needs ${need[*]} (Redis 6.2 or later) on PATH; install them with your package manager, or set LEASEHOLD_REDIS_SERVER" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing ${need[*]} needs root: run as root or install them yourself" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${need[*]} with apt-get ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system services on some machines; the tests start their own.
redis-server --version >&2
