#!/usr/bin/env bash
# Idempotent setup: a local virtualenv with the project and its dev tools, plus the npm packages
# (anvil, solc-js) the ledger needs. Every install step the project needs lives here.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.medswarm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing Python packages (torch pinned to the local CPU build)"
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
    # torch first and exactly pinned: an open range would pull a multi-GB CUDA build.
    .venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev,ray,mlflow]"
    touch "$stamp"
fi
if [ -f package.json ] && { [ ! -d node_modules ] || [ package.json -nt node_modules ]; }; then
    echo "==> installing npm packages (anvil, solc-js)"
    npm install --no-audit --no-fund --loglevel=error
    touch node_modules
fi
