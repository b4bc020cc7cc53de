#!/usr/bin/env bash
# Set everything up, then run the demo: four heart-disease hospitals as a local libp2p swarm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-runs/demo}
.venv/bin/medswarm swarm demo --out "$out"
