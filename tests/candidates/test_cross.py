"""``lr_cross`` (sparse bilinear fusion): it finds a planted cross-modal product, its
attributions are exact SHAP values (also through a principal-component reduction), and
it refuses parameters it would ignore."""

from __future__ import annotations

import numpy as np
import pytest

import holomed.candidates as C
from holomed.candidates.cross import _caps
from holomed.cohort import load_cohort, patient_splits
from holomed.spec import parse_spec
from holomed.synthetic import DEMO_OPTIONS, synthetic_spec_dict


def _data(**options):
    d = synthetic_spec_dict(**options)
    d["evaluation"].update({"selection_folds": 3})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split)[0]
    return spec, cohort.subset(tr), cohort.subset(te)


@pytest.fixture(scope="module")
def demo():
    return _data(**DEMO_OPTIONS)


def test_it_finds_the_planted_interaction_and_beats_the_sparse_linear_model(demo):
    from sklearn.metrics import roc_auc_score

    spec, train, test = demo
    cross = C.make_candidate(spec, "lr_cross", 0).fit(train)
    top = cross.interactions(1)[0]
    assert {top["a"], top["b"]} == {"expression:g005", "methylation:cg005"}
    assert top["coef"] > 0  # the generator's sign
    l1 = C.make_candidate(spec, "lr_l1", 0).fit(train)
    y = test.y
    auc_cross = roc_auc_score(y, cross.predict_proba(test)[:, 1])
    auc_l1 = roc_auc_score(y, l1.predict_proba(test)[:, 1])
    assert auc_cross > auc_l1 + 0.02, (auc_cross, auc_l1)


def _shap_total_matches_the_logit(model, cohort):
    attr = model.feature_attributions(cohort)
    total = sum(np.nan_to_num(a).sum(1) for a in attr.values())
    blocks, present = model._blocks(cohort, True)
    x = model._cross_design(blocks, present)
    coef, b = model.model_.coef[0], model.model_.intercept[0]
    start = sum(v.shape[1] for v in blocks.values())
    k = len(blocks)
    pres_part = x[:, start : start + k] @ coef[start : start + k]
    np.testing.assert_allclose(total, x @ coef + b - b - pres_part, atol=1e-8)


@pytest.mark.parametrize("max_products", [None, 300])
def test_attributions_are_exact_shap(max_products):
    spec, train, test = _data(n_patients=240, seed=3)
    params = None if max_products is None else {"max_products": max_products}
    model = C.make_candidate(spec, "lr_cross", 0, None, params).fit(train)
    assert bool(model.reduce_) == (max_products is not None)
    if params:  # the widest modalities were reduced until the products fit
        widths = {n: model._width(n) for n in model.preprocessors_}
        assert sum(widths[a] * widths[b] for a, b in model._pairs()) <= 300
    _shap_total_matches_the_logit(model, test)
    attr = model.feature_attributions(test)
    absent = ~test.presence()["methylation"]
    assert absent.any() and np.isnan(attr["methylation"][absent]).all()


def test_caps_lower_the_widest_first_and_always_fit_the_budget():
    assert _caps({"a": 10, "b": 10}, 1000) == {"a": 10, "b": 10}
    caps = _caps({"a": 200, "b": 10, "c": 5}, 1000)
    assert caps["b"] == 10 and caps["c"] == 5
    assert caps["a"] * 15 + 50 <= 1000 < (caps["a"] + 1) * 15 + 50
    assert _caps({"a": 6, "b": 4}, 1) == {"a": 1, "b": 1}  # down to one product
    with pytest.raises(ValueError, match="below one product for each of the 6 pairs"):
        _caps({"a": 6, "b": 4, "c": 3, "d": 2}, 5)


def test_a_reduced_modality_with_one_training_patient_gives_no_products():
    import pandas as pd

    from holomed.candidates.cross import _whitened_pca
    from holomed.cohort import build_cohort

    mu, w = _whitened_pca(np.ones((1, 5)), 3, "x")
    assert mu.shape == (5,) and w.shape == (5, 0)
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(120)]
    a, b = rng.normal(size=(120, 6)), rng.normal(size=(120, 8))
    frames = {
        "a": pd.DataFrame(a, index=ids, columns=[f"a{i}" for i in range(6)]),
        "b": pd.DataFrame(b, index=ids, columns=[f"b{i}" for i in range(8)]).iloc[[0, 1, 2]],
    }
    spec = parse_spec(
        {
            "modalities": [{"name": "a", "kind": "omics"}, {"name": "b", "kind": "tabular"}],
            "target": {"column": "y"},
            "evaluation": {"selection_folds": 3},
        }
    )
    y = pd.DataFrame({"y": (a[:, 0] > 0).astype(int)}, index=ids)
    cohort = build_cohort(spec, frames, y)
    train, test = cohort.subset(np.arange(2, 120)), cohort.subset(np.arange(2))
    assert train.presence()["b"].sum() == 1
    # b is the widest, so the one reduced: one patient has no spread, so no products
    model = C.make_candidate(spec, "lr_cross", 0, None, {"max_products": 12}).fit(train)
    assert model._width("b") == 0
    assert np.isfinite(model.predict_proba(test)).all()
    _shap_total_matches_the_logit(model, test)


def test_parameters_it_would_ignore_are_refused():
    spec, train, _ = _data(n_patients=120, seed=1)
    with pytest.raises(ValueError, match="takes only max_products"):
        C.make_candidate(spec, "lr_cross", 0, None, {"C": 1.0}).fit(train)
    with pytest.raises(ValueError, match="at least 1"):
        C.make_candidate(spec, "lr_cross", 0, None, {"max_products": 0}).fit(train)


def test_the_demo_plants_a_strong_interaction_and_offers_lr_cross(tmp_path):
    import json

    import yaml

    from holomed.candidate import DEFAULT_CANDIDATES
    from holomed.synthetic import DEMO_CANDIDATES, demo_spec_dict, write_synthetic

    spec = parse_spec(demo_spec_dict())
    assert spec.dataset_options["interaction"] == DEMO_OPTIONS["interaction"] == 3.0
    # the task's defaults, none lost, and lr_cross
    assert set(DEMO_CANDIDATES) == set(DEFAULT_CANDIDATES) | {"lr_cross"}
    path = write_synthetic(tmp_path, demo=True, n_patients=80)
    written = yaml.safe_load(path.read_text())
    assert written["evaluation"]["candidates"] == DEMO_CANDIDATES
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth["interaction_weight"] == 3.0


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_other_tasks_fit_attribute_and_round_trip(task, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from test_tasks import _cohort

    spec, cohort = _cohort(task)
    ((tr, te),) = patient_splits(cohort, spec.split)
    train, test = cohort.subset(tr), cohort.subset(te)
    model = C.make_candidate(spec, "lr_cross", 0).fit(train)
    out = model.predict_proba(test)
    assert np.isfinite(out).all()
    assert out.shape == ((len(te),) if task == "regression" else (len(te), 3))
    attr = model.feature_attributions(test)
    assert set(attr) == {"a", "b"} and attr["a"].shape == (len(te), 6)
    back = C.load_bundle(model.save(tmp_path / "b"))
    np.testing.assert_array_equal(back.predict_proba(test), out)


def test_one_modality_has_no_products():
    from holomed.spec import override_spec

    spec, train, test = _data(n_patients=120, seed=2)
    spec = override_spec(spec, {"modalities": [spec.modalities[1].model_dump()]}, "test")
    model = C.make_candidate(spec, "lr_cross", 0).fit(train)
    assert model._pairs() == [] and model.interactions() == []
    assert np.isfinite(model.predict_proba(test)).all()


def test_l1_models_keep_their_intercept():
    """liblinear's L1 penalty shrinks the intercept with the weights (on the demo it was
    exactly 0, pulling every risk toward 0.5): it is refitted with the weights fixed, so
    the training risks average to the training prevalence."""
    from holomed.candidates.classical import Linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30))
    y = (rng.random(400) < 1 / (1 + np.exp(-(-2.5 + x[:, 0])))).astype(int)
    lin = Linear.fit("binary", x, y, 0, 5, l1=True)
    assert abs(lin.proba_positive(x).mean() - y.mean()) < 1e-6
    assert lin.intercept[0] < -1.5
