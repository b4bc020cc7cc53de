#!/usr/bin/env bash
# Set everything up, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check medswarm node gossip ledger sim tests
ruff format --check medswarm node gossip ledger sim tests
echo "==> mypy"
mypy medswarm node gossip ledger sim
echo "==> pytest (all but the Docker stage)"
pytest -q -m "not docker" "$@"
# The Docker stage: installs and starts Debian's engine if none runs, builds the images if
# missing, runs the simulator in containers. Timed on its own, also when it fails.
echo "==> pytest: Docker stage"
began=$SECONDS
status=0
pytest -q -m docker || status=$?
echo "==> Docker stage took $((SECONDS - began)) s (exit $status)"
exit "$status"
