"""Time to explain 100 ROSMAP test patients: modality Shapley + Integrated Gradients.

HOLOMED_DATA=../shared/data python benchmarks/explain_speed.py --out runs/bench/explain.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from holomed.cohort import load_cohort, patient_splits
from holomed.explain.features import integrated_gradients
from holomed.explain.modality import modality_shapley
from holomed.model import Model
from holomed.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="examples/rosmap.yaml")
    ap.add_argument("--fusion", default="late")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default="runs/bench/explain.json")
    a = ap.parse_args()
    spec = load_spec(a.spec)
    cohort = load_cohort(spec)
    ((tr, te),) = patient_splits(cohort, spec.split)
    model = Model(spec, fusion=a.fusion, seed=0).fit(cohort.subset(tr))
    test = cohort.subset(te[np.arange(min(a.n, len(te)))])
    integrated_gradients(model, test.subset([0]), n_steps=2)  # warm-up (imports)
    t = time.perf_counter()
    modality_shapley(model, test)
    t_shap = time.perf_counter() - t
    t = time.perf_counter()
    integrated_gradients(model, test, n_steps=a.steps)
    t_ig = time.perf_counter() - t
    res = {
        "fusion": a.fusion,
        "n_patients": len(test),
        "threads": torch.get_num_threads(),
        "ig_steps": a.steps,
        "shapley_seconds": round(t_shap, 3),
        "ig_seconds": round(t_ig, 3),
        "total_seconds": round(t_shap + t_ig, 3),
    }
    print(res)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
