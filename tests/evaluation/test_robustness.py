"""Missing-modality robustness: mask simulation and the curve."""

from __future__ import annotations

import numpy as np

from holomed.cohort import load_cohort
from holomed.evaluation.robustness import drop_modalities, robustness
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict


def test_drop_one_modality_exact_share():
    rng = np.random.default_rng(0)
    present = {"a": np.ones(100, bool), "b": np.ones(100, bool)}
    out = drop_modalities(present, "a", 0.4, rng)
    assert (~out["a"]).sum() == 40 and out["b"].all()
    assert present["a"].all()  # input untouched


def test_random_drop_keeps_one_modality_per_patient():
    rng = np.random.default_rng(1)
    present = {k: np.ones(500, bool) for k in "abc"}
    out = drop_modalities(present, "random", 0.8, rng)
    stacked = np.stack(list(out.values()), 1)
    assert (stacked.sum(1) >= 1).all()
    assert 0.5 < 1 - stacked.mean() < 0.8  # most pairs dropped, rescues keep one each


def test_drop_never_adds_a_modality():
    rng = np.random.default_rng(2)
    present = {"a": np.arange(50) % 2 == 0, "b": np.ones(50, bool)}
    out = drop_modalities(present, "random", 0.5, rng)
    assert not (out["a"] & ~present["a"]).any()


def test_curve_shape_and_degradation():
    d = synthetic_spec_dict(n_patients=300, seed=2, missing=0.0)
    d["training"].update({"max_epochs": 15})
    d["evaluation"].update({"seeds": 1})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    curve = robustness(spec, cohort, ["late"], baselines=True)
    assert curve["rates"] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert set(curve["scenarios"]) == set(cohort.modality_names) | {"random"}
    assert set(curve["curves"]) == {"late", "baseline:lr_early", "baseline:lr_late", "baseline:gbm"}
    auc = curve["curves"]["baseline:lr_late"]["expression"]["auroc"]["mean"]
    assert len(auc) == 5 and all(np.isfinite(auc))
    # expression carries signal: removing it from 80 % of patients must hurt
    assert auc[-1] < auc[0]
