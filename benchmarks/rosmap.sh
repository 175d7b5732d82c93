#!/usr/bin/env bash
# ROSMAP benchmarks: the whole comparison (7 strategies + ablations + baselines, 5 seeds,
# selection by CV on train), the robustness curve of every strategy, prediction speed;
# then BENCHMARKS.md tables are rendered from the JSON results.
#   HOLOMED_DATA=../shared/data bash benchmarks/rosmap.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${1:-runs/bench}
mkdir -p "$OUT"
holomed compare examples/rosmap.yaml --fusion all --seeds 5 --out "$OUT/rosmap"
holomed robustness examples/rosmap.yaml --fusion all --seeds 5 --out "$OUT/rosmap_robustness"
python benchmarks/predict_speed.py --spec examples/rosmap.yaml --out "$OUT/predict.json"
python benchmarks/explain_speed.py --spec examples/rosmap.yaml --out "$OUT/explain.json"
python benchmarks/render.py "$OUT" > "$OUT/tables.md"
echo "tables in $OUT/tables.md"
