#!/usr/bin/env bash
# Installs what the tests and the demo need when it is missing:
# redis-server (6.2+), redis-sentinel and redis-cli via apt-get (as root, or
# through sudo), and (--with-python) what the Python package and its checks
# need via pip.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# The man page test renders with man-db.
command -v man >/dev/null 2>&1 || need+=(man-db)
if [ ${#need[@]} -gt 0 ]; then
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
  redis-server --version >&2
fi

# The Python package's checks need python3.
if [ "${1:-}" = "--with-python" ] && ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing python3 with apt-get ..." >&2
  apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi
# The Python package (clients/python) needs redis-py; its checks need
# pytest, pytest-asyncio, mypy and ruff, and setuptools and wheel to build it
# without downloading a build backend on every run.
if [ "${1:-}" = "--with-python" ] && ! python3 -c 'import redis, pytest, pytest_asyncio, mypy, ruff, setuptools, wheel' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  pkgs=(redis pytest pytest-asyncio mypy ruff setuptools wheel)
  echo "installing ${pkgs[*]} with pip ..." >&2
  export PIP_ROOT_USER_ACTION=ignore
  python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}"
fi
