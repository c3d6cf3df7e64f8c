#!/usr/bin/env bash
# Set up the key-less local default (llama.cpp's llama-server + Qwen2.5-Coder weights),
# non-interactively and idempotently, on a fresh Debian/Ubuntu machine:
#   1. the build tools (cmake, a C++ compiler, make), with apt-get when run as root;
#   2. `latm local install`: builds the server from the pinned source and assembles the
#      pinned, sha256-checked model files into the cache dir ($LATM_LOCAL_DIR overrides),
#      then smoke-tests the server: each model must load and complete a few tokens, or the
#      install fails with the diagnosis. When everything is in place only the smoke test runs.
# Assumes LATM is pip-installed in the active Python (`latm` on PATH, or $PYTHON).
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=("a C++ compiler")
command -v make >/dev/null 2>&1 || missing+=(make)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "local-llm-setup: installing build tools (${missing[*]}) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends cmake build-essential >/dev/null
  else
    echo "local-llm-setup: missing ${missing[*]}." >&2
    echo "  Install them (Debian/Ubuntu: sudo apt-get install -y cmake build-essential) and re-run." >&2
    exit 1
  fi
fi

start=$(date +%s)
if command -v latm >/dev/null 2>&1; then
  latm local install
else
  python=${PYTHON:-python3}
  if ! "$python" -c 'import latm.cli.local' >/dev/null 2>&1; then
    echo "local-llm-setup: LATM is not installed in $python: pip install it first" >&2
    echo "  (or put its 'latm' on PATH, or set PYTHON to the Python that has it)." >&2
    exit 1
  fi
  "$python" -c 'import sys; from latm.cli import main; sys.exit(main(["local", "install"]))'
fi
echo "local-llm-setup: done in $(( $(date +%s) - start )) s"
