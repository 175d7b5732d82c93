"""Does an Optuna search of LightGBM's hyper-parameters beat its defaults on PhysioNet
2012? Decided on training patients only, by nested cross-validation.

``compare`` searches a candidate's declared space (``evaluation.search``) on the inner
folds of an outer split's training patients, then refits the best configuration on all of
them. Scoring that procedure on the same inner folds would be optimistic (the best of N
trials on those folds), so this script nests it once more: for each outer split of
``examples/physionet2012.yaml`` (5-fold, seed 0) and each of its 3 inner folds, the search
runs on the other two inner folds (with its own 3 folds inside them, exactly as
``compare`` would) and the chosen configuration is fitted on those two folds and scored
on the held-out inner fold, beside the defaults fitted on the same patients. The outer
test patients are never used. One thread.

    HOLOMED_DATA=../shared/data python benchmarks/gbm_search_inner.py --trials 25 \\
        --out benchmarks/results/physionet2012/gbm_search_inner.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from holomed.candidate import make_candidate  # noqa: E402
from holomed.cohort import inner_folds, load_cohort, patient_splits  # noqa: E402
from holomed.evaluation.compare import apply_overrides  # noqa: E402
from holomed.evaluation.select import no_tick, search  # noqa: E402
from holomed.scoring.metrics import oriented  # noqa: E402
from holomed.spec import load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]


def held_out(spec, cohort, name, params, fit_idx, test_idx) -> dict[str, float]:
    """AUROC and AUPRC of one configuration fitted on ``fit_idx`` and scored on
    ``test_idx``."""
    m = make_candidate(spec, name, 0, None, params or None).fit(cohort.subset(fit_idx))
    p = m.predict_proba(cohort.subset(test_idx))
    y = cohort.y[test_idx]
    return {k: oriented(cohort.task, k, y, p) for k in ("auroc", "auprc")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--candidate", default="gbm")
    ap.add_argument("--splits", type=int, default=5, help="outer splits to use")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/physionet2012/gbm_search_inner.json"
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    spec = load_spec(ROOT / "examples" / "physionet2012.yaml")
    spec = apply_overrides(
        spec,
        {"evaluation.search.trials": a.trials, "evaluation.search.candidates": [a.candidate]},
        where="gbm_search_inner",
    )
    cohort = load_cohort(spec)
    k_in = spec.evaluation.selection_folds
    rows = []
    for s, (tr, _te) in enumerate(patient_splits(cohort, spec.split, seed=0)):
        if s >= a.splits:
            break
        for f, (fa, fb) in enumerate(inner_folds(cohort.y[tr], k_in, 0, cohort.task)):
            fit_idx, test_idx = tr[fa], tr[fb]
            sub = cohort.subset(fit_idx)
            folds = inner_folds(sub.y, k_in, 0, cohort.task)
            found = search(spec, sub, a.candidate, folds, 0, no_tick)
            row = {
                "split": s,
                "fold": f,
                "defaults": held_out(spec, cohort, a.candidate, None, fit_idx, test_idx),
                "searched": held_out(spec, cohort, a.candidate, found.params, fit_idx, test_idx),
                "params": found.params,
                "search_inner_score": found.score,
                "search_seconds": found.seconds,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    mean = {
        cfg: {m: float(np.mean([r[cfg][m] for r in rows])) for m in ("auroc", "auprc")}
        for cfg in ("defaults", "searched")
    }
    diff = np.array([r["searched"]["auroc"] - r["defaults"]["auroc"] for r in rows])
    out = {
        "threads": 1,
        "candidate": a.candidate,
        "trials": a.trials,
        "protocol": "nested: search on 2 of 3 inner folds of each outer split's training "
        "patients (3 folds inside), scored on the third; test patients never used",
        "rows": rows,
        "mean": mean,
        "auroc_difference": {
            "mean": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "wins": int((diff > 0).sum()),
            "n": len(diff),
        },
        "seconds": time.perf_counter() - t0,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("mean", "auroc_difference", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
