"""The identified and the de-identified COVID CXR cohort on the same folds: the
identified cohort's 5 person-level folds, mapped to the pseudonyms, so the only
difference is de-identification. Out-of-fold AUROC of lr_early, gbm and late.

    holomed deid examples/covid_cxr.yaml --out runs/covid-deid --key-file KEY
    HOLOMED_PRIVACY_KEY_FILE=KEY python benchmarks/deid_covid_same_folds.py
"""
from __future__ import annotations

import numpy as np
import holomed.candidates  # noqa
from holomed.candidate import make_candidate
from holomed.cohort import load_cohort, patient_splits
from holomed.privacy.keys import load_key
from holomed.spec import load_spec
from holomed.scoring.metrics import compute_metrics
key = load_key()
si = load_spec('examples/covid_cxr.yaml'); sd = load_spec('runs/covid-deid/spec.yaml')
ci = load_cohort(si); cd = load_cohort(sd)
pos = {p: i for i, p in enumerate(cd.ids)}
order = np.array([pos[key.pseudonym(p)] for p in ci.ids])
assert (cd.y[order] == ci.y).all()
res = {}
for name in ("lr_early", "gbm", "late"):
    for tag, c, idx in (("identified", ci, None), ("deid", cd, order)):
        oof = np.zeros((len(ci), 2))
        for tr, te in patient_splits(ci, si.split, seed=si.training.seed):
            a, b = (tr, te) if idx is None else (idx[tr], idx[te])
            m = make_candidate(si if idx is None else sd, name, 0).fit(c.subset(a))
            oof[te] = m.predict_proba(c.subset(b))
        res[(name, tag)] = compute_metrics("binary", ci.y, oof)["auroc"]
        print(name, tag, round(res[(name, tag)], 3), flush=True)
