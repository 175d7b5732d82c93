"""Survival prediction speed on a tabular model (SYNTHETIC cohort, clinical table only):
risk score and survival probability at every horizon for ``--n`` patients in one
``predict_proba`` call (preprocessing included), min / median of 3 runs, for the
penalised Cox models, the boosted Cox model, and networks with either survival head.

    python benchmarks/survival_speed.py --threads 2 --out runs/bench/survival_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import holomed.candidates  # noqa: F401  (every family registered)
from holomed.candidate import make_candidate
from holomed.cohort import load_cohort, patient_splits
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_survival_spec_dict
from holomed.threads import set_threads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/survival_speed.json")
    a = ap.parse_args()
    set_threads(a.threads)
    d = synthetic_survival_spec_dict(n_patients=2000, seed=0)
    d["modalities"] = [m for m in d["modalities"] if m["name"] == "clinical"]
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    tr, _ = patient_splits(cohort, spec.split)[0]
    big = cohort.subset(np.resize(np.arange(len(cohort)), a.n))
    res = {"threads": a.threads, "patients": a.n, "horizons": spec.target.horizons, "models": {}}
    variants = [
        ("coxnet", {}),
        ("cox", {}),
        ("xgb_cox", {}),
        ("joint", {"training.survival_head": "cox"}),
        ("joint", {"training.survival_head": "discrete"}),
    ]
    for name, params in variants:
        m = make_candidate(spec, name, 0, None, params or None).fit(cohort.subset(tr))
        m.predict_proba(cohort.subset(tr[:100]))  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = m.predict_proba(big)
            times.append(time.perf_counter() - t)
        assert out.shape == (a.n, 1 + len(spec.target.horizons)) and np.isfinite(out).all()
        key = name + (f" ({params['training.survival_head']} head)" if params else "")
        res["models"][key] = {
            "seconds_min": round(min(times), 4),
            "seconds_median": round(float(np.median(times)), 4),
            "patients_per_second_at_median": round(a.n / float(np.median(times))),
        }
        print(key, res["models"][key], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
