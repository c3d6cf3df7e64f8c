#!/usr/bin/env bash
# Install LATM into ./.venv with what it needs on a fresh Debian/Ubuntu machine.
#   --dev               also the test and lint tools, PostgreSQL + pgvector and Chromium for the tests
#   --no-local-models   skip the key-less local default (llama.cpp + Qwen2.5-Coder weights)
# System packages (sandbox tiers, the llama.cpp build) are installed with apt-get when run
# as root; otherwise the script says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
dev=0
local_models=1
for arg in "$@"; do
  case "$arg" in
    --dev) extras="[dev]"; dev=1 ;;
    --no-local-models) local_models=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
t0=$(date +%s)
phase() { echo "setup: $1 [$(( $(date +%s) - t0 )) s so far]"; }
# Measured on a fresh 2-core machine: system packages ~1 min, Python packages ~1-2 min,
# the local server build 15-30 min (it prints its own estimate and an ETA), models ~1 min.
if [ "$local_models" = 1 ]; then
  echo "setup: expect about 20-35 min on 2 cores, most of it compiling the local model server"
else
  echo "setup: expect about 2-4 min"
fi
phase "system packages for the sandbox"
if [ -f .ci/sandbox-setup.sh ]; then bash .ci/sandbox-setup.sh; fi
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && [ -f .ci/postgres-setup.sh ]; then
  phase "PostgreSQL + pgvector for the tests"
  bash .ci/postgres-setup.sh
fi
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
  # the LangServe playground test drives Debian's Chromium (nothing downloads a browser)
  phase "Chromium for the playground test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
phase "Python packages into .venv (pip prints each one)"
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar on \
  -e ".${extras}" 2>&1 | { grep --line-buffered -E '^(Collecting|Installing|Successfully|ERROR)' || true; } || {
  echo "setup: pip install failed; run it again without the filter to see why:" >&2
  echo "  .venv/bin/python -m pip install -e '.${extras}'" >&2
  exit 1
}
if [ "$local_models" = 1 ] && [ -f .ci/local-llm-setup.sh ]; then
  phase "local model server and models"
  PATH="$PWD/.venv/bin:$PATH" bash .ci/local-llm-setup.sh
fi
phase "done"
echo "LATM is installed in .venv: run '.venv/bin/latm --help'"
