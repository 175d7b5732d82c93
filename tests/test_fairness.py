"""Subgroup audit: per-group metrics with CIs, too-small groups, flagged gaps, bands,
threshold mitigation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from holomed.fairness import audit, bin_attribute, mitigate_thresholds


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    y = rng.integers(0, 2, n)
    # the model over-predicts risk for M: calibration and FPR gaps
    score = np.clip(0.35 * y + 0.3 + rng.normal(0, 0.15, n) + 0.2 * (sex == "M"), 0, 1)
    site = np.where(np.arange(n) < 8, "tiny", "big")
    age = rng.normal(60, 12, n)
    return y, score, pd.DataFrame({"sex": sex, "site": site, "age": age})


def test_gaps_are_flagged_with_their_groups_and_ci():
    y, s, attrs = _data()
    res = audit(y, s, attrs[["sex"]], n_boot=100)
    gaps = res["attributes"]["sex"]["gaps"]
    assert gaps["fpr"]["flag"] and gaps["fpr"]["between"] == ["M", "F"]
    lo, hi = gaps["calibration_gap"]["ci"]
    assert 0 < lo <= gaps["calibration_gap"]["value"] <= hi
    g = res["attributes"]["sex"]["groups"]["F"]
    assert g["n"] == int((attrs["sex"] == "F").sum())
    assert g["tpr"]["ci"][0] <= g["tpr"]["value"] <= g["tpr"]["ci"][1]


def test_small_groups_are_reported_as_too_small_not_as_gaps():
    y, s, attrs = _data()
    res = audit(y, s, attrs[["site"]], n_boot=50, min_group=20)
    assert res["attributes"]["site"]["groups"]["tiny"]["too_small"]
    assert "note" in res["attributes"]["site"]["gaps"]


def test_age_bands():
    bands = bin_attribute(pd.Series([30, 55, 70, 85, None]), [50, 70])
    assert bands.tolist() == ["<50", "50-70", ">=70", ">=70", "unknown"]
    y, s, attrs = _data()
    res = audit(y, s, attrs[["age"]], bins={"age": [50, 70]}, n_boot=20)
    assert set(res["attributes"]["age"]["groups"]) == {"<50", "50-70", ">=70"}


def test_threshold_mitigation_narrows_the_fpr_gap():
    y, s, attrs = _data(2000, seed=3)
    g = attrs["sex"].to_numpy()
    m = mitigate_thresholds(y[:1000], s[:1000], g[:1000], y[1000:], s[1000:], g[1000:])

    def gap(part):
        return abs(m[part]["M"]["fpr"] - m[part]["F"]["fpr"])

    assert gap("after") < gap("before")
