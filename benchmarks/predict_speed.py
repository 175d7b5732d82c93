"""Prediction speed on ROSMAP-sized inputs (3 omics x 200 features), CPU.

Batch throughput: the test patients repeated to ``--n`` rows, one ``predict_proba`` call
(preprocessing + network). Single-patient latency: ``predict_proba`` on a one-patient
cohort, repeated; p50/p95 reported. Every fusion strategy is measured.

    HOLOMED_DATA=../shared/data python benchmarks/predict_speed.py --out runs/bench/predict.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from holomed.cohort import load_cohort, patient_splits
from holomed.fusion import fusion_names
from holomed.model import Model
from holomed.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="examples/rosmap.yaml")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--single", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/predict.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = load_spec(a.spec)
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split)[0]
    test = cohort.subset(te)
    big = cohort.subset(np.resize(te, a.n))
    res = {}
    for f in fusion_names():
        m = Model(spec, fusion=f, seed=0).fit(cohort.subset(tr))
        m.predict_proba(test)  # warm-up
        t = time.perf_counter()
        m.predict_proba(big)
        batch_s = time.perf_counter() - t
        lat = []
        for i in range(a.single):
            one = test.subset([i % len(test)])
            t = time.perf_counter()
            m.predict_proba(one)
            lat.append((time.perf_counter() - t) * 1000)
        res[f] = {
            "batch_patients": a.n,
            "batch_seconds": round(batch_s, 4),
            "patients_per_second": round(a.n / batch_s),
            "single_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "single_ms_p95": round(float(np.percentile(lat, 95)), 2),
        }
        print(f, res[f], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "results": res}, indent=1))


if __name__ == "__main__":
    main()
