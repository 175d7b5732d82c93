#!/usr/bin/env bash
# Set up, then run the main job on the embedded SYNTHETIC cohort (no network, no data needed):
# every fusion strategy + ablations + baselines, a robustness curve, and a saved bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
holomed demo --out "${1:-runs/demo}"
