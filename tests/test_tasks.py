"""Tasks end to end: binary, multiclass and regression through Model, with class weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.model import Model
from holomed.spec import parse_spec
from holomed.tasks import Task


def _cohort(task: str, n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    a = rng.normal(size=(n, 6))
    b = rng.normal(size=(n, 4))
    score = a[:, 0] + b[:, 0]
    if task == "regression":
        label = 10 + 3 * score + rng.normal(scale=0.3, size=n)
    elif task == "multiclass":
        label = np.array(["low", "mid", "high"])[np.digitize(score, [-0.6, 0.6])]
    else:
        label = np.where(score > 0.8, "yes", "no")  # imbalanced
    b_rows = rng.random(n) > 0.2
    frames = {
        "a": pd.DataFrame(a, index=ids, columns=[f"a{i}" for i in range(6)]),
        "b": pd.DataFrame(b, index=ids, columns=[f"b{i}" for i in range(4)]).loc[b_rows],
    }
    target = pd.DataFrame({"y": label}, index=ids)
    spec = parse_spec(
        {
            "modalities": [{"name": "a", "kind": "omics"}, {"name": "b", "kind": "omics"}],
            "target": {"column": "y", "task": task},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"name": "joint", "hidden": 16},
            "training": {"max_epochs": 60, "lr": 0.01, "patience": 10},
        }
    )
    return spec, build_cohort(spec, frames, target)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_task_learns(task, tmp_path):
    spec, cohort = _cohort(task)
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion="early" if task != "regression" else "joint").fit(cohort.subset(tr))
    test = cohort.subset(te)
    out = m.predict_proba(test)
    metrics = m.evaluate(test)
    if task == "regression":
        assert out.shape == (len(te),)
        assert metrics["r2"] > 0.6
    else:
        k = 3 if task == "multiclass" else 2
        assert out.shape == (len(te), k)
        np.testing.assert_allclose(out.sum(1), 1, rtol=1e-6)
        assert metrics["auroc"] > 0.8
        assert metrics["balanced_accuracy"] > (0.55 if k == 3 else 0.7)
    again = load(m.save(tmp_path / "b"))
    np.testing.assert_allclose(again.predict_proba(test), out, rtol=1e-5, atol=1e-6)


def test_class_weights_balance_the_loss():
    y = np.array([0] * 90 + [1] * 10)
    t = Task.fit("binary", y, 2, balance=True)
    assert t.class_weights[1] / t.class_weights[0] == pytest.approx(9.0)
    logits = torch.zeros(100, 1)
    weighted = t.loss(logits, torch.as_tensor(y), weighted=True)
    plain = t.loss(logits, torch.as_tensor(y), weighted=False)
    assert weighted > plain
    assert Task.fit("binary", y, 2, balance=False).class_weights is None


def test_regression_target_is_standardised_and_restored():
    y = np.array([100.0, 110.0, 120.0])
    t = Task.fit("regression", y, 1, balance=True)
    assert t.y_mean == pytest.approx(110) and t.y_sd > 0
    np.testing.assert_allclose(t.output(torch.zeros(3, 1)), [110, 110, 110])


def test_model_explain_returns_contributions_weights_and_features():
    spec, cohort = _cohort("binary")
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion="attention").fit(cohort.subset(tr))
    why = m.explain(cohort.subset(te))
    assert set(why["contributions"]["global"]) == {"a", "b"}
    assert len(why["attention"]["examples"]) == len(te)
    assert [d["feature"] for d in why["features"]["a"]][0] == "a0"  # the signal feature


def test_multilabel_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    ids = [f"P{i:03d}" for i in range(n)]
    a, b = rng.normal(size=(n, 6)), rng.normal(size=(n, 4))
    lab_a, lab_b = a[:, 0] + b[:, 0] > 0, a[:, 1] - b[:, 1] > 0.5
    labels = [
        ";".join(t for t, on in (("AF", x), ("RBBB", z)) if on)
        for x, z in zip(lab_a, lab_b, strict=True)
    ]
    frames = {
        "a": pd.DataFrame(a, index=ids, columns=[f"a{i}" for i in range(6)]),
        "b": pd.DataFrame(b, index=ids, columns=[f"b{i}" for i in range(4)]),
    }
    spec = parse_spec(
        {
            "modalities": [{"name": "a", "kind": "omics"}, {"name": "b", "kind": "omics"}],
            "target": {"column": "y", "task": "multilabel"},
            "split": {"method": "kfold", "n_folds": 3},
            "fusion": {"name": "joint", "hidden": 16},
            "training": {"max_epochs": 40, "lr": 0.01, "patience": 10},
            "evaluation": {"seeds": 1, "n_bootstrap": 20, "selection_folds": 2, "ablations": False},
        }
    )
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": labels}, index=ids))
    assert cohort.classes == ["AF", "RBBB"] and cohort.y.shape == (n, 2)
    assert cohort.summary()["classes"] == {"AF": int(lab_a.sum()), "RBBB": int(lab_b.sum())}
    (tr, te), *_ = patient_splits(cohort, spec.split)
    m = Model(spec, fusion="early").fit(cohort.subset(tr))
    test = cohort.subset(te)
    p = m.predict_proba(test)
    assert p.shape == (len(te), 2) and ((p >= 0) & (p <= 1)).all()
    metrics = m.evaluate(test)
    assert metrics["auroc"] > 0.8 and 0 <= metrics["hamming_loss"] < 0.3
    assert m.predict(test).shape == (len(te), 2)
    again = load(m.save(tmp_path / "ml"))
    np.testing.assert_allclose(again.predict_proba(test), p, rtol=1e-5, atol=1e-6)
    why = m.explain(test)
    assert set(why["contributions"]["global"]) == {"a", "b"}

    from holomed.evaluation.compare import compare

    results, _ = compare(spec, cohort, ["late"], seeds=1)
    assert set(results["strategies"]["late"]["metrics"]) >= {"auroc", "f1_macro", "f1_micro"}
    assert results["strategies"]["baseline:lr_late"]["metrics"]["auroc"]["mean"] > 0.8


def test_a_classifier_is_not_fitted_on_one_class_missing_or_foreign_labels():
    import numpy as np
    import pytest

    from holomed.tasks import Task

    with pytest.raises(ValueError, match="one class only"):
        Task.fit("binary", np.zeros(10), 2, False)
    with pytest.raises(ValueError, match="1 training label"):
        Task.fit("binary", np.array([0, 1, np.nan]), 2, False)
    with pytest.raises(ValueError, match="outside the 2 classes"):
        Task.fit("binary", np.array([0, 1, 2]), 2, False)
    assert Task.fit("multiclass", np.array([0, 1, 2, 2]), 3, False).n_outputs == 3
