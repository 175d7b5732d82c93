"""Bags of boosters for the ``gbm`` candidate (``evaluation.tree_bags``), decided on
training patients only (PhysioNet 2012 set A, in-hospital death).

For each outer split of ``examples/physionet2012.yaml`` (5-fold, seed 0) the preprocessors
are fitted on that split's training patients, and ``gbm`` (the candidate's defaults and
feature design: static record + the timeseries kind's six statistics per variable) is
scored by the spec's 3-fold inner CV on the training patients only, with 1, 3 and 5
boosters per bag (log-odds averaged, as the candidate does). The outer test patients are
never used. One thread.

    HOLOMED_DATA=../shared/data python benchmarks/gbm_bags_inner.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from holomed.candidates.classical import Boosted  # noqa: E402
from holomed.cohort import inner_folds, load_cohort, patient_splits  # noqa: E402
from holomed.model import fit_preprocessors, transform_cohort  # noqa: E402
from holomed.spec import load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "physionet2012" / "gbm_bags_inner.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bags", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    t0 = time.perf_counter()
    spec = load_spec(ROOT / "examples" / "physionet2012.yaml")
    cohort = load_cohort(spec)
    y = np.asarray(cohort.y).astype(int)
    scores = {b: {"auroc": [], "auprc": [], "seconds": []} for b in a.bags}
    for k, (tr, _te) in enumerate(patient_splits(cohort, spec.split, seed=0)):
        pre = fit_preprocessors(spec.modalities, cohort.subset(tr), 0)
        x, _ = transform_cohort(pre, cohort)
        static, _ = pre["static"].flat_features(x["static"])
        series, _ = pre["series"].flat_features(x["series"])
        design = np.hstack([static, series])
        for ia, ib in inner_folds(y[tr], spec.evaluation.selection_folds, 0, "binary"):
            fit_rows, held = tr[ia], tr[ib]
            for b in a.bags:
                t = time.perf_counter()
                m = Boosted.fit("binary", design[fit_rows], y[fit_rows], 0, {}, bags=b)
                p = m.predict(design[held], 2)[:, 1]
                scores[b]["seconds"].append(time.perf_counter() - t)
                scores[b]["auroc"].append(float(roc_auc_score(y[held], p)))
                scores[b]["auprc"].append(float(average_precision_score(y[held], p)))
        print(k, {b: round(float(np.mean(v["auroc"])), 4) for b, v in scores.items()}, flush=True)
    base = a.bags[0]
    summary = {}
    for b, v in scores.items():
        d = np.subtract(v["auroc"], scores[base]["auroc"])
        e = np.subtract(v["auprc"], scores[base]["auprc"])
        summary[str(b)] = {
            "auroc": float(np.mean(v["auroc"])),
            "auprc": float(np.mean(v["auprc"])),
            f"auroc_minus_{base}": {
                "mean": float(d.mean()),
                "se": float(d.std(ddof=1) / np.sqrt(len(d))),
            },
            f"auprc_minus_{base}": {
                "mean": float(e.mean()),
                "se": float(e.std(ddof=1) / np.sqrt(len(e))),
            },
            "fit_seconds_median": float(np.median(v["seconds"])),
            "wins": int((d > 0).sum()),
            "folds": len(d),
        }
    out = {
        "threads": 1,
        "protocol": "3-fold inner CV on each outer split's training patients (5-fold, seed "
        "0); test patients never used",
        "summary": summary,
        "per_fold": {str(b): v for b, v in scores.items()},
        "seconds": time.perf_counter() - t0,
    }
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
