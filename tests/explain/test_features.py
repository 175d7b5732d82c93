"""Feature attributions: IG completeness, names, absent rows, SHAP for baselines,
deletion curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holomed.cohort import load_cohort, patient_splits
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.explain.features import (
    baseline_shap,
    deletion_curve,
    integrated_gradients,
    top_features,
)
from holomed.model import Model
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict


@pytest.fixture(scope="module")
def fitted():
    d = synthetic_spec_dict(n_patients=400, seed=5, missing=0.2, interaction=0.0)
    d["training"].update({"max_epochs": 20})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    ((tr, te),) = patient_splits(cohort, spec.split)
    model = Model(spec, fusion="joint", seed=0).fit(cohort.subset(tr))
    return spec, model, cohort.subset(tr), cohort.subset(te)


def test_ig_completeness_and_absent_rows(fitted):
    _, model, _, test = fitted
    attr = integrated_gradients(model, test, n_steps=64)
    x, present = model._arrays(test)
    name = "expression"
    p = present[name]
    assert np.isnan(attr[name][~p]).all() and np.isfinite(attr[name][p]).all()
    # completeness: attributions sum to f(x) - f(x with this modality's input at baseline)
    xt = {
        k: torch.as_tensor(np.where(present[k][:, None], v, 0.0), dtype=torch.float32)
        for k, v in x.items()
    }
    pt = {k: torch.as_tensor(v) for k, v in present.items()}
    with torch.no_grad():
        full = model.net_(xt, pt)[:, 0].numpy()
        xb = dict(xt, **{name: torch.zeros_like(xt[name])})
        base = model.net_(xb, pt)[:, 0].numpy()
    np.testing.assert_allclose(attr[name][p].sum(1), (full - base)[p], atol=0.02)


def test_top_features_use_the_modalitys_own_names(fitted):
    _, model, _, test = fitted
    attr = integrated_gradients(model, test)
    names = {k: p.feature_names_out_ for k, p in model.preprocessors_.items()}
    top = top_features(attr, names, k=5)
    assert [d["feature"] for d in top["expression"]][0].startswith("g")
    # the generator's signal genes g000-g003 lead expression's attributions
    assert {d["feature"] for d in top["expression"][:4]} & {"g000", "g001", "g002", "g003"}
    assert any(d["feature"].startswith(("lab", "age", "sex", "site")) for d in top["clinical"])


def test_deletion_of_top_features_hurts_more_than_random(fitted):
    _, model, _, test = fitted
    attr = integrated_gradients(model, test)
    curve = deletion_curve(model, test, attr, steps=(0, 5, 10))
    assert curve["top_first"][0] == curve["random"][0]
    assert curve["top_first"][-1] < curve["random"][-1]


@pytest.mark.parametrize("method", ["lr_early", "lr_late", "gbm"])
def test_baseline_shap_shapes(fitted, method):
    spec, _, train, test = fitted
    bl = ClassicalBaseline(spec, method).fit(train)
    values = baseline_shap(bl, test)
    for name, pre in bl.preprocessors_.items():
        assert values[name].shape == (len(test), pre.out_dim)
