#!/usr/bin/env bash
# Set everything up, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check node gossip ledger sim tests
ruff format --check node gossip ledger sim tests
echo "==> mypy"
mypy node gossip ledger sim
echo "==> pytest"
pytest -q "$@"
