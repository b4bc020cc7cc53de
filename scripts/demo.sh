#!/usr/bin/env bash
# Set everything up, then run the demo: the simulator's heart-disease scenario, four hospitals
# as one process each on a libp2p swarm, with their consortium chain on Anvil.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-runs/demo}
.venv/bin/medswarm sim run sim/scenarios/heart-disease.toml --out "$out" --replace
