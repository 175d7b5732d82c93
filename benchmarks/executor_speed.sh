#!/usr/bin/env bash
# The comparison's fits on one process against worker processes: ROSMAP, every
# candidate, 5 seeds, the same spec; wall time of each and whether the results agree.
#   HOLOMED_DATA=../shared/data bash benchmarks/executor_speed.sh [OUT] [REPEATS]
# Serial: one process, one thread per fit. Local: 2 worker processes, one thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${1:-runs/bench/executor}
REPEATS=${2:-1}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
for r in $(seq 1 "$REPEATS"); do
  for ex in serial local; do
    rm -rf "$OUT/$ex-$r"
    s=$(date +%s.%N)
    if [ "$ex" = serial ]; then
      HOLOMED_THREADS=1 holomed compare examples/rosmap.yaml --fusion all --seeds 5 \
        --executor serial --out "$OUT/$ex-$r" > "$OUT/$ex-$r.log" 2>&1
    else
      HOLOMED_THREADS=2 holomed compare examples/rosmap.yaml --fusion all --seeds 5 \
        --executor local --workers 2 --out "$OUT/$ex-$r" > "$OUT/$ex-$r.log" 2>&1
    fi
    e=$(date +%s.%N)
    echo "$ex run $r: $(python -c "print(round($e - $s, 1))") s"
  done
done
python benchmarks/executor_compare.py "$OUT"/serial-1/predictions.csv "$OUT"/local-1/predictions.csv
