"""The identified and the de-identified COVID CXR cohort on the same folds: the
identified cohort's 5 person-level folds, mapped to the pseudonyms, so the only
difference is de-identification. Out-of-fold AUROC of lr_early, gbm and late.

    holomed deid examples/covid_cxr.yaml --out runs/covid-deid --key-file KEY
    HOLOMED_PRIVACY_KEY_FILE=KEY python benchmarks/deid_covid_same_folds.py
"""

from __future__ import annotations

import argparse

import numpy as np

import holomed.candidates  # noqa: F401  (every family registered)
from holomed.candidate import make_candidate
from holomed.cohort import load_cohort, patient_splits
from holomed.privacy.keys import load_key
from holomed.scoring.metrics import compute_metrics
from holomed.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="examples/covid_cxr.yaml")
    ap.add_argument("--deid", default="runs/covid-deid/spec.yaml")
    a = ap.parse_args()
    key = load_key()
    si, sd = load_spec(a.spec), load_spec(a.deid)
    ci, cd = load_cohort(si), load_cohort(sd)
    pos = {p: i for i, p in enumerate(cd.ids)}
    order = np.array([pos[key.pseudonym(p)] for p in ci.ids])
    assert (cd.y[order] == ci.y).all(), "labels differ after de-identification"
    for name in ("lr_early", "gbm", "late"):
        for tag, spec, cohort, idx in (("identified", si, ci, None), ("deid", sd, cd, order)):
            oof = np.zeros((len(ci), 2))
            for tr, te in patient_splits(ci, si.split, seed=si.training.seed):
                fit_rows, test_rows = (tr, te) if idx is None else (idx[tr], idx[te])
                m = make_candidate(spec, name, 0).fit(cohort.subset(fit_rows))
                oof[te] = m.predict_proba(cohort.subset(test_rows))
            auroc = compute_metrics("binary", ci.y, oof)["auroc"]
            print(f"{name:9s} {tag:10s} out-of-fold AUROC {auroc:.3f}", flush=True)


if __name__ == "__main__":
    main()
