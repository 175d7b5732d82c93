#!/usr/bin/env bash
# PhysioNet 2012 set A: every strategy, static-only and series-only, the classical
# baselines (summary statistics + logistic regression / gradient boosting) and SAPS-I /
# SOFA alone, stratified 5-fold CV x 5 seeds with selection by inner CV on the training
# folds; then load time, one GRU-D epoch and peak memory.
#   HOLOMED_DATA=../shared/data bash benchmarks/physionet2012.sh [OUT]
# One torch/BLAS thread per process: on 2 shared cores, spinning OpenMP threads made a
# GRU-D epoch 100x slower (311 s instead of 3.4 s).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-runs/bench}
mkdir -p "$OUT"
holomed compare examples/physionet2012.yaml --fusion all --seeds 5 --out "$OUT/physionet2012"
holomed compare examples/physionet2012.yaml --fusion joint --seeds 5 \
  --set modalities.series.encoder.name=grud --set evaluation.ablations=false \
  --set evaluation.baselines=false --out "$OUT/physionet2012_grud"
python benchmarks/physionet2012_speed.py --threads 1 --out "$OUT/physionet2012_speed.json"
