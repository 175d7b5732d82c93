#!/usr/bin/env bash
# COVID-19 image data collection (staged 256-px subset): X-ray sets + clinical variables +
# case notes -> COVID-19 vs other findings. Every strategy, single-modality and
# leave-one-out ablations and classical baselines on the same person-level 5 folds, 5
# seeds, selection by CV on the training patients; then a copy of the results without ids
# or labels. About 42 min on 2 shared cores (frozen EfficientNet features computed once
# per image and process).
#   HOLOMED_DATA=../shared/data bash benchmarks/covid_cxr.sh [OUT] [SEEDS]
# CAUTION: the label is confounded with the image source; these numbers are a fusion
# test, not a clinical result.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-runs/bench}
SEEDS=${2:-5}
mkdir -p "$OUT"
holomed compare examples/covid_cxr.yaml --fusion all --seeds "$SEEDS" --out "$OUT/covid_cxr"
python benchmarks/strip.py "$OUT/covid_cxr/results.json" "$OUT/covid_cxr/compare_results.json"
