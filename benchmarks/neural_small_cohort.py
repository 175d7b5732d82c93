"""Why neural fusion trails logistic regression on a small cohort, measured by CV on the
*training* patients of the SYNTHETIC demo only (its test patients are never used here).

Each variant changes one training default of the demo spec (validation carve-out and
early stopping, epochs, weight decay, learning rate, encoders, class weights, bagging
over seeds) and is scored by stratified 5-fold CV AUROC on the 439 training patients,
beside the classical candidates on the same folds. Also times an ablation fit
(``without:noise``) beside the full fit, with one torch thread and with two.

    python benchmarks/neural_small_cohort.py --out runs/bench/neural_small.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import holomed.candidates as C
from holomed.cohort import inner_folds, load_cohort, patient_splits
from holomed.evaluation.metrics import compute_metrics
from holomed.spec import override_spec, parse_spec
from holomed.synthetic import synthetic_spec_dict

VARIANTS = {
    "demo defaults (val carve-out 20 %, early stopping)": {},
    "class weights on": {"training.class_weights": True},
    "no carve-out, 40 epochs": {"training.val_fraction": 0.0, "training.max_epochs": 40},
    "no carve-out, 80 epochs": {"training.val_fraction": 0.0, "training.max_epochs": 80},
    "weight decay 0.1": {"training.weight_decay": 0.1},
    "no carve-out, 40 epochs, L1 1e-3 on input weights": {
        "training.val_fraction": 0.0,
        "training.max_epochs": 40,
        "training.l1": 1e-3,
    },
    "no carve-out, 40 epochs, L1 1e-2 on input weights": {
        "training.val_fraction": 0.0,
        "training.max_epochs": 40,
        "training.l1": 1e-2,
    },
    "lr 0.001": {"training.lr": 0.001},
    "identity encoders + no carve-out, 60 epochs": {
        "training.val_fraction": 0.0,
        "training.max_epochs": 60,
        **{
            f"modalities.{m}.encoder": {"name": "identity"}
            for m in ("clinical", "expression", "methylation", "noise")
        },
    },
}


def cv_auroc(spec, train, name, params=None, bag=1, folds=5) -> tuple[float, float, float]:
    scores, t0 = [], time.perf_counter()
    for a, b in inner_folds(train.y, folds, 0, train.task, train.groups):
        outs = []
        for s in range(bag):
            m = C.make_candidate(spec, name, s, None, params).fit(train.subset(a))
            outs.append(m.predict_proba(train.subset(b)))
        scores.append(compute_metrics("binary", train.y[b], np.mean(outs, 0))["auroc"])
    return float(np.mean(scores)), float(np.std(scores) / np.sqrt(folds)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench/neural_small.json")
    ap.add_argument("--fusion", default="joint")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = parse_spec(synthetic_spec_dict())
    cohort = load_cohort(spec)
    tr, _ = patient_splits(cohort, spec.split)[0]
    train = cohort.subset(tr)  # training patients only
    rows = []
    for label, params in VARIANTS.items():
        m, se, sec = cv_auroc(override_spec(spec, params, "variant"), train, args.fusion)
        rows.append({"variant": f"{args.fusion}: {label}", "cv_auroc": m, "se": se, "s": sec})
        print(json.dumps(rows[-1]), flush=True)
    best = override_spec(spec, VARIANTS["no carve-out, 40 epochs"], "variant")
    for fusion in ("joint", "late", "hybrid", "attention"):
        m, se, sec = cv_auroc(best, train, fusion, bag=5)
        label = f"{fusion}: no carve-out, 40 epochs, bag of 5 seeds"
        rows.append({"variant": label, "cv_auroc": m, "se": se, "s": sec})
        print(json.dumps(rows[-1]), flush=True)
    for name in ("lr_early", "lr_l1", "gbm", "stack"):
        m, se, sec = cv_auroc(spec, train, name)
        rows.append({"variant": name, "cv_auroc": m, "se": se, "s": sec})
        print(json.dumps(rows[-1]), flush=True)
    # ablation fit time: without:noise beside the full model, 1 and 2 torch threads
    timing = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for label, mods in (
            ("full", None),
            ("without:noise", ["clinical", "expression", "methylation"]),
        ):
            t = []
            for _ in range(3):
                t0 = time.perf_counter()
                C.Model(
                    override_spec(spec, {"training.threads": threads}, "t"), "hybrid", 0, mods
                ).fit(train)
                t.append(time.perf_counter() - t0)
            timing[f"hybrid {label}, {threads} thread(s)"] = {"min": min(t), "median": sorted(t)[1]}
            print(label, threads, timing[f"hybrid {label}, {threads} thread(s)"], flush=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "ablation_fit_seconds": timing}, f, indent=1)


if __name__ == "__main__":
    main()
