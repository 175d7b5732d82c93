#!/usr/bin/env bash
# CPSC 2018 benchmark (150 12-lead ECGs + age/sex, 9 diagnoses, multilabel): every fusion
# strategy, ECG-only and demographics-only ablations and classical baselines on the same
# 5 folds, selection by CV on the training patients; then a copy of the results without
# per-patient ids or labels (the form kept in benchmarks/results/cpsc2018/).
#   HOLOMED_DATA=../shared/data bash benchmarks/cpsc2018.sh [OUT] [SEEDS]
# One seed took 37 min (34 CPU-minutes) on 2 CPU cores shared with other jobs; the guided
# and hybrid strategies and the CV selection fits (2 inner folds x 7 strategies x 5 folds)
# take most of it.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${1:-runs/bench}
SEEDS=${2:-1}
mkdir -p "$OUT"
holomed compare examples/cpsc2018.yaml --fusion all --seeds "$SEEDS" --out "$OUT/cpsc2018"
python - "$OUT/cpsc2018/results.json" "$OUT/cpsc2018/compare_results.json" <<'PY'
import json, sys

res = json.load(open(sys.argv[1]))
for key in ("eval_ids", "y", "excluded"):  # per-patient ids and labels stay out
    res.pop(key, None)
json.dump(res, open(sys.argv[2], "w"), indent=1)
print(f"wrote {sys.argv[2]}")
PY
