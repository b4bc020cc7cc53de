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
echo "==> pytest (all but the browser and Docker stages)"
# Two workers (pytest-xdist), each given whole files (--dist loadfile: a module's shared
# fixtures are built once): most of the time goes to waiting on node processes and chains.
pytest -q -m "not docker and not browser" -n 2 --dist loadfile "$@"
# The browser stage: installs Debian's chromium if missing, loads the dashboard and the ledger
# explorer in it, writes the screenshots in docs/. Timed on its own, as the Docker stage.
echo "==> pytest: browser stage"
began=$SECONDS
status=0
pytest -q -m browser || status=$?
echo "==> browser stage took $((SECONDS - began)) s (exit $status)"
[ "$status" -eq 0 ] || exit "$status"
# The Docker stage: installs and starts Debian's engine if none runs, builds the images if
# missing, runs the simulator in containers. Timed on its own, also when it fails.
echo "==> pytest: Docker stage"
began=$SECONDS
status=0
pytest -q -m docker || status=$?
echo "==> Docker stage took $((SECONDS - began)) s (exit $status)"
exit "$status"
