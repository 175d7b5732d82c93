"""Recalibrating ``lr_late``'s mean of per-modality probabilities, decided on training
patients only (ROSMAP, MOGONET split: the 106 test patients are dropped before anything).

5-fold CV inside the 245 training patients × 3 seeds of the folds: ``lr_late`` with and
without its cross-fitted recalibration (``params={"calibrate": False}``) is fitted on four
folds and scored on the fifth. Out-of-fold predictions pooled per seed: AUROC, accuracy at
0.5, Brier, ECE and calibration slope. One thread.

    HOLOMED_DATA=../shared/data python benchmarks/late_recalibration.py [--dataset rosmap]

Writes benchmarks/results/<dataset>/late_recalibration.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import load_cohort, patient_splits  # noqa: E402
from holomed.evaluation.select import build_candidate  # noqa: E402
from holomed.scoring.metrics import calibration_stats, compute_metrics  # noqa: E402
from holomed.spec import SplitSpec, load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
EXAMPLES = {"rosmap": "rosmap.yaml", "physionet2012": "physionet2012.yaml",
            "covid_cxr": "covid_cxr.yaml"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="rosmap", choices=sorted(EXAMPLES))
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    t0 = time.perf_counter()
    spec = load_spec(ROOT / "examples" / EXAMPLES[a.dataset])
    cohort = load_cohort(spec)
    train_idx, _test = patient_splits(cohort, spec.split, seed=spec.training.seed)[0]
    train = cohort.subset(train_idx)  # the outer test patients are dropped here
    variants = {"mean of probabilities": {"calibrate": False}, "recalibrated (now)": None}
    rows = {v: [] for v in variants}
    for seed in range(a.seeds):
        folds = patient_splits(train, SplitSpec(method="kfold", n_folds=5), seed=seed)
        for name, params in variants.items():
            oof = np.zeros((len(train), 2))
            for tr, te in folds:
                m = build_candidate(spec, "lr_late", seed, None, params).fit(train.subset(tr))
                oof[te] = m.predict_proba(train.subset(te))
            met = compute_metrics("binary", train.y, oof)
            cal = calibration_stats(train.y, oof[:, 1])
            rows[name].append(
                {k: float(met[k]) for k in ("auroc", "accuracy", "f1", "brier", "ece")}
                | {"slope": cal["calibration_slope"], "intercept": cal["calibration_intercept"]}
            )
            print(seed, name, json.dumps(rows[name][-1]), flush=True)
    summary = {v: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for v, rs in rows.items()}
    out = {
        "dataset": a.dataset,
        "threads": 1,
        "protocol": "5-fold CV inside the outer training patients, pooled out-of-fold "
        "predictions per seed; the outer test patients are never loaded into a fit or score",
        "seeds": a.seeds,
        "summary": summary,
        "per_seed": rows,
        "seconds": time.perf_counter() - t0,
    }
    path = ROOT / "benchmarks" / "results" / a.dataset / "late_recalibration.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
