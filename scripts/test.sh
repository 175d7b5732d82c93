#!/usr/bin/env bash
# Set up, then run lint and the whole test suite. Real-data tests read $HOLOMED_DATA
# (default ../shared/data when present); with CI=true a missing dataset fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${HOLOMED_DATA:-}" ] && [ -d ../shared/data ]; then
  export HOLOMED_DATA="$(cd ../shared/data && pwd)"
fi
ruff check src tests benchmarks
python -m pytest tests "$@"
