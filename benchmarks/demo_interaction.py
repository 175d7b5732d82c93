"""How much the SYNTHETIC demo's cross-modal interaction is worth, and whether a model
learns it.

1. Oracle: the generator's true log-odds (an absent modality or lab value at its
   expectation, 0) scored on the demo's test patients with and without the interaction
   term, for interaction weights 1, 2 and 3. No model is fitted; this is what the data
   could give at best.
2. Training patients only: 5-fold CV AUROC of ``lr_early``, ``lr_l1``, ``lr_cross`` and
   ``gbm`` at each weight (the test patients are never used for this).
3. Test patients of the demo cohort (weight 3, the demo's): ``lr_cross`` and ``lr_l1``
   fitted on the training patients, and the fall of their test AUROC when
   ``methylation:cg005`` (and, apart, ``expression:g005``) is permuted among the test
   patients. Neither feature has a main effect in the generator, so a fall means the
   model uses the interaction. Nothing here chooses anything.

    python benchmarks/demo_interaction.py --out runs/bench/demo_interaction.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

import holomed.candidates as C
from holomed.cohort import inner_folds, load_cohort, patient_splits
from holomed.spec import parse_spec
from holomed.synthetic import DEMO_OPTIONS, make_synthetic, synthetic_spec_dict

LEARNERS = ["lr_early", "lr_l1", "lr_cross", "gbm"]


def oracle(weight: float) -> dict[str, float]:
    frames, target, _ = make_synthetic(interaction=weight)
    ids = target.index

    def col(mod: str, c: str) -> np.ndarray:
        return frames[mod][c].reindex(ids).fillna(0.0).to_numpy()

    age = frames["clinical"]["age"].reindex(ids).to_numpy()
    clin = 0.8 * col("clinical", "lab0") + 0.6 * (age - 62) / 12
    expr = sum(col("expression", f"g{i:03d}") for i in range(4)) / 2
    meth = sum(col("methylation", f"cg{i:03d}") for i in range(3)) / np.sqrt(3)
    main = 1.0 * clin + 3.0 * expr + 1.5 * meth
    inter = col("expression", "g005") * col("methylation", "cg005")
    y = (target["label"] == "event").to_numpy()
    te = (target["split"] == "test").to_numpy()
    return {
        "with_interaction": float(roc_auc_score(y[te], (main + weight * inter)[te])),
        "without": float(roc_auc_score(y[te], main[te])),
    }


def data(weight: float):
    d = synthetic_spec_dict(interaction=weight)
    d["evaluation"]["selection_folds"] = 5
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split)[0]
    return spec, cohort.subset(tr), cohort.subset(te)


def cv(spec, train, name: str) -> tuple[float, float, float]:
    scores, t0 = [], time.perf_counter()
    for a, b in inner_folds(train.y, 5, 0, train.task, train.groups):
        m = C.make_candidate(spec, name, 0).fit(train.subset(a))
        scores.append(roc_auc_score(train.y[b], m.predict_proba(train.subset(b))[:, 1]))
    se = float(np.std(scores, ddof=1) / np.sqrt(len(scores)))
    return float(np.mean(scores)), se, time.perf_counter() - t0


def permuted(model, test, modality: str, column: str, repeats: int = 30) -> float:
    """Mean test AUROC with ``column`` permuted among the patients who have ``modality``."""
    m = test.modalities[modality]
    j = list(m.feature_names).index(column)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(repeats):
        frame = m.values.copy()
        rows = np.flatnonzero(m.present)
        frame.iloc[rows, j] = frame.iloc[rng.permutation(rows), j].to_numpy()
        test.modalities[modality] = type(m)(m.kind, frame, m.present.copy(), list(m.feature_names))
        try:
            out.append(roc_auc_score(test.y, model.predict_proba(test)[:, 1]))
        finally:
            test.modalities[modality] = m
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/demo_interaction.json")
    args = ap.parse_args()
    res: dict = {"oracle": {}, "cv_train": {}, "test": {}}
    for w in (1.0, 2.0, 3.0):
        res["oracle"][str(w)] = oracle(w)
        print(f"weight {w}: oracle {res['oracle'][str(w)]}", flush=True)
        spec, train, _ = data(w)
        res["cv_train"][str(w)] = {}
        for name in LEARNERS:
            mean, se, sec = cv(spec, train, name)
            res["cv_train"][str(w)][name] = {"auroc": mean, "se": se, "seconds": sec}
            print(f"  {name:9s} CV AUROC {mean:.3f} ± {se:.3f} ({sec:.1f} s)", flush=True)
    spec, train, test = data(DEMO_OPTIONS["interaction"])
    for name in ("lr_cross", "lr_l1"):
        m = C.make_candidate(spec, name, 0).fit(train)
        full = float(roc_auc_score(test.y, m.predict_proba(test)[:, 1]))
        row = {
            "auroc": full,
            "cg005_permuted": permuted(m, test, "methylation", "cg005"),
            "g005_permuted": permuted(m, test, "expression", "g005"),
        }
        if name == "lr_cross":
            row["top_interactions"] = m.interactions(3)
        res["test"][name] = row
        print(f"test {name}: {row}", flush=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
