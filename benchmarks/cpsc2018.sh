#!/usr/bin/env bash
# CPSC 2018 benchmark (150 12-lead ECGs + age/sex, 9 diagnoses, multilabel): every fusion
# strategy, ECG-only and demographics-only ablations and classical baselines on the same
# 5 folds, selection by CV on the training patients; then a copy of the results without
# per-patient ids or labels (benchmarks/strip.py; the form kept in benchmarks/results/).
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
python benchmarks/strip.py "$OUT/cpsc2018/results.json" "$OUT/cpsc2018/compare_results.json"
