"""The subgroup audit's gap flag is a permutation test of the largest gap (the pair with
the largest observed gap is chosen after looking, so a bootstrap CI of that pair alone
flags groups that do not differ); threshold mitigation skips groups it cannot fit; a
k-fold fit audits the pooled out-of-fold predictions (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from holomed.cohort import build_cohort, load_cohort
from holomed.evaluation.fitrun import fit_run
from holomed.fairness import _gaps, audit, mitigate_thresholds, survival_audit
from holomed.spec import override_spec, parse_spec
from holomed.synthetic import synthetic_survival_spec_dict

SITES = list("ABCDEF")


def _survival(seed: int, n: int = 240, weak: str | None = None):
    """One data-generating process for every site; ``weak``: that site's risk is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-0.7 * x)) + 1e-3
    c = rng.exponential(2, n)
    y = np.c_[np.minimum(t, c), (t <= c).astype(float)]
    site = rng.choice(SITES, n)
    if weak is not None:
        x = np.where(site == weak, rng.normal(size=n), x)
    return y, x, pd.DataFrame({"site": site})


def test_six_equal_survival_groups_are_rarely_flagged():
    flags = 0
    for seed in range(40):
        y, risk, attrs = _survival(seed)
        gap = survival_audit(y, risk, attrs, n_boot=40, seed=seed)["attributes"]["site"]["gaps"]
        flags += gap["c_index"]["flag"]
    assert flags <= 6  # nominal 5 % (2 of 40); the fixed-pair bootstrap flagged ~36 %


def test_a_real_survival_gap_is_flagged_with_its_test_and_p_value():
    y, risk, attrs = _survival(0, n=600, weak="C")
    gap = survival_audit(y, risk, attrs, n_boot=100, seed=0)["attributes"]["site"]["gaps"]
    g = gap["c_index"]
    assert g["flag"] and g["between"][1] == "C" and g["p_value"] < 0.05
    assert "permutation" in g["test"] and g["ci"][0] <= g["value"] <= g["ci"][1]


def _binary(seed: int, n: int = 480):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.3 * y + 0.35 + rng.normal(0, 0.15, n), 0, 1)
    return y, score, rng.choice(SITES, n)


def test_six_equal_binary_groups_are_rarely_flagged():
    flags = {}
    for seed in range(30):
        y, score, site = _binary(seed)
        for m, g in _gaps(y, score, site, SITES, 0.5, 40, seed).items():
            flags[m] = flags.get(m, 0) + g["flag"]
    assert set(flags) == {"auroc", "tpr", "fpr", "ppv", "ece", "calibration_gap"}
    assert max(flags.values()) <= 5, flags  # nominal 5 % of 30: 1.5


def test_a_rare_outcome_site_with_the_same_discrimination_is_rarely_flagged():
    """One site with 4 % prevalence, five with 35 %, the score the same function of the
    outcome everywhere: AUROC, TPR and FPR are equal. A null that mixed outcomes gave
    every shuffled group the overall prevalence, and the rare site's noisier AUROC / TPR
    was flagged in about a quarter of audits; shuffling within each outcome class keeps
    each site's prevalence."""
    flags = {"auroc": 0, "tpr": 0, "fpr": 0}
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        site = rng.choice(SITES, 1200)
        y = (rng.random(1200) < np.where(site == "A", 0.04, 0.35)).astype(int)
        score = np.clip(0.3 * y + 0.35 + rng.normal(0, 0.15, 1200), 0, 1)
        for m, g in _gaps(y, score, site, SITES, 0.5, 40, seed).items():
            if m in flags:
                flags[m] += g["flag"]
    assert max(flags.values()) <= 4, flags  # nominal 1.5 of 30; mixed outcomes: ~7-8


def test_few_bootstrap_draws_still_give_a_test_that_can_flag():
    """The smallest permutation p is 1 / (n + 1): with n_boot 10 a test of 10 shuffles
    could never flag; the test takes at least 199."""
    y, score, site = _binary(0, n=600)
    score = np.where(site == "B", np.clip(score + 0.2, 0, 1), score)
    gaps = _gaps(y, score, site, SITES, 0.5, 10, 0)
    assert gaps["fpr"]["flag"] and gaps["fpr"]["p_value"] <= 0.01
    assert "199 times" in gaps["fpr"]["test"]


def test_a_real_binary_gap_is_flagged_and_says_how():
    y, score, site = _binary(0, n=600)
    score = np.where(site == "B", np.clip(score + 0.2, 0, 1), score)  # over-predicts at B
    res = audit(y, score, pd.DataFrame({"site": site}), n_boot=60)
    gaps = res["attributes"]["site"]["gaps"]
    assert gaps["calibration_gap"]["flag"] and gaps["calibration_gap"]["between"][0] == "B"
    assert gaps["fpr"]["flag"] and gaps["fpr"]["p_value"] < 0.05
    assert all("permutation" in g["test"] for g in gaps.values())


def _mitigation_data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    s = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    return y, s, rng.choice(["F", "M"], n)


def test_mitigation_skips_groups_it_cannot_fit_and_keeps_their_threshold():
    yv, sv, gv = _mitigation_data(0)
    yt, st, gt = _mitigation_data(1)
    gv, gt, yv = gv.astype(object), gt.astype(object), yv.copy()
    gv[:1] = "one"  # a single validation patient
    gv[1:30], yv[1:30] = "neg", 0  # 29 validation patients, no event
    gt[:5], gt[5:25], gt[25:30] = "one", "neg", "unseen"
    res = mitigate_thresholds(yv, sv, gv, yt, st, gt, min_group=20)
    assert sorted(res["mitigated"]) == ["F", "M"]
    assert set(res["not_mitigated"]) == {"one", "neg", "unseen"}
    assert "one outcome class" in res["not_mitigated"]["neg"]
    assert "no validation patients" in res["not_mitigated"]["unseen"]
    for g in ("one", "neg", "unseen"):
        assert res["after"][g] == res["before"][g]  # the plain threshold
    # no group can be fitted: nothing changes, and it says so
    res = mitigate_thresholds(yv[:10], sv[:10], gv[:10], yt, st, gt, min_group=20)
    assert res["mitigated"] == [] and res["after"] == res["before"] and "note" in res


def _attributed_cohort(rare_events: bool = False):
    """Binary cohort with a neural candidate's validation carve-out and a site whose
    patients never have the event (one class in validation) unless ``rare_events``."""
    rng = np.random.default_rng(0)
    n = 240
    ids = [f"A{i:03d}" for i in range(n)]
    x = rng.normal(size=(n, 3))
    site = rng.choice(["big", "other"], n)
    site[:30] = "rare"
    y = (x[:, 0] + rng.normal(0, 0.7, n) > 0).astype(int)
    if not rare_events:
        y[:30] = 0
    spec = parse_spec(
        {
            "modalities": [{"name": "labs", "kind": "tabular"}],
            "target": {"column": "y"},
            "attributes": ["site"],
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 2, "val_fraction": 0.3},
            "evaluation": {
                "n_bootstrap": 10,
                "explain": False,
                "mitigation": "threshold",
                "min_group": 5,
            },
        }  # fmt: skip
    )
    frames = {"labs": pd.DataFrame(x, index=ids, columns=["a", "b", "c"])}
    target = pd.DataFrame({"y": y, "site": site}, index=ids)
    return spec, build_cohort(spec, frames, target)


def test_assess_survives_a_validation_group_with_one_outcome():
    spec, cohort = _attributed_cohort()
    model, res = fit_run(spec, cohort, "late")
    val_sites = set(cohort.subset(cohort.index_of(model.val_ids_)).attributes["site"])
    assert "rare" in val_sites  # the case fairlearn refused ("Degenerate labels")
    mit = res["fairness"]["mitigation"]["site"]
    assert "rare" in mit["not_mitigated"] and "rare" not in mit["mitigated"]


def test_a_k_fold_survival_fit_audits_every_patient_out_of_fold():
    d = synthetic_survival_spec_dict(n_patients=200, seed=1)
    d["training"]["max_epochs"] = 5
    spec = override_spec(parse_spec(d), {"split": {"method": "kfold", "n_folds": 3}}, "test")
    spec.evaluation.n_bootstrap = 10
    cohort = load_cohort(spec)
    _, res = fit_run(spec, cohort, "coxnet", mode="kfold")
    fair = res["fairness"]
    assert fair["task"] == "survival" and "out-of-fold" in fair["on"]
    assert sum(g["n"] for g in fair["attributes"]["sex"]["groups"].values()) == len(cohort)


def test_a_k_fold_binary_fit_keeps_fold_0s_mitigation_and_says_so():
    spec, cohort = _attributed_cohort(rare_events=True)
    spec = override_spec(spec, {"split": {"method": "kfold", "n_folds": 3}}, "test")
    _, res = fit_run(spec, cohort, "late", mode="kfold")
    fair = res["fairness"]
    assert sum(g["n"] for g in fair["attributes"]["site"]["groups"].values()) == len(cohort)
    assert "fold 0" in fair["mitigation"]["site"]["on"]
