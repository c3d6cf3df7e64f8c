#!/usr/bin/env bash
# Install LATM into ./.venv with what it needs on a fresh Debian/Ubuntu machine.
#   --dev               also the test and lint tools, and PostgreSQL + pgvector for the tests
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
if [ -f .ci/sandbox-setup.sh ]; then bash .ci/sandbox-setup.sh; fi
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && [ -f .ci/postgres-setup.sh ]; then
  bash .ci/postgres-setup.sh
fi
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
if [ "$local_models" = 1 ] && [ -f .ci/local-llm-setup.sh ]; then
  PATH="$PWD/.venv/bin:$PATH" bash .ci/local-llm-setup.sh
fi
echo "LATM is installed in .venv: run '.venv/bin/latm --help'"
