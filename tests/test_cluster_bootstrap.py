"""Bootstrap CIs with ``split.group``: whole persons are resampled, not rows, so a
person with five rows does not narrow the interval five-fold; fit runs and comparisons
pass the cohort's groups (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import holomed.evaluation.compare as compare_mod
import holomed.evaluation.fitrun as fitrun_mod
import holomed.evaluation.trust as trust_mod
from holomed.cohort import build_cohort
from holomed.evaluation.compare import MetricsJob, compare, metrics_job
from holomed.evaluation.fitrun import fit_run
from holomed.scoring.metrics import bootstrap_ci, resamples, summarise
from holomed.spec import parse_spec


def test_resamples_draw_whole_groups_stratified_by_their_class():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 40)
    groups = np.repeat(np.arange(40), sizes)
    label = rng.integers(0, 2, 40)  # one class per person
    y = np.repeat(label, sizes)
    rows = {g: np.nonzero(groups == g)[0] for g in range(40)}
    for idx in resamples(len(y), 50, 3, y, groups):
        drawn = pd.Series(idx).value_counts()
        for g in np.unique(groups[idx]):
            # every row of a drawn person, each as often as the person was drawn
            counts = drawn.reindex(rows[g]).to_numpy()
            assert (counts == counts[0]).all() and counts[0] >= 1
        persons = (
            pd.Series(groups[idx]).groupby(groups[idx]).size() // sizes[np.unique(groups[idx])]
        )
        by_class = persons.groupby(label[persons.index]).sum()
        assert by_class.to_dict() == pd.Series(label).value_counts().to_dict()
    # the same seed, the same draws
    a = list(resamples(len(y), 3, 7, y, groups))
    b = list(resamples(len(y), 3, 7, y, groups))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def _survival(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-x)) + 0.01
    c = rng.exponential(2, n)
    y = np.c_[np.minimum(t, c), (t <= c).astype(float)]
    return y, np.c_[x + rng.normal(0, 1.5, n)]


def _width(s):
    return s["ci"][1] - s["ci"][0]


def test_five_rows_per_person_give_the_ci_of_one_row_per_person():
    y, out = _survival()
    rep = np.repeat(np.arange(len(y)), 5)
    one = summarise("survival", y, [out], 300, 0)["c_index"]
    rows = summarise("survival", y[rep], [out[rep]], 300, 0)["c_index"]
    persons = summarise("survival", y[rep], [out[rep]], 300, 0, groups=rep)["c_index"]
    assert np.isclose(persons["mean"], one["mean"])
    assert _width(rows) < 0.6 * _width(one)  # rows as if independent: far too narrow
    assert 0.8 < _width(persons) / _width(one) < 1.25

    rng = np.random.default_rng(1)
    yb = rng.integers(0, 2, 200)
    p = np.clip(0.3 * yb + 0.35 + rng.normal(0, 0.2, 200), 0.01, 0.99)
    ob = np.c_[1 - p, p]
    rep = np.repeat(np.arange(200), 5)
    one = summarise("binary", yb, [ob], 300, 0)["auroc"]
    persons = summarise("binary", yb[rep], [ob[rep]], 300, 0, groups=rep)["auroc"]
    assert 0.8 < _width(persons) / _width(one) < 1.25
    lo, hi = bootstrap_ci(lambda i: float(p[rep][i].mean()), len(rep), 300, groups=rep)
    lo1, hi1 = bootstrap_ci(lambda i: float(p[i].mean()), 200, 300)
    assert 0.8 < (hi - lo) / (hi1 - lo1) < 1.25


def _grouped(method: str, n_people: int = 40):
    rng = np.random.default_rng(0)
    person = np.repeat([f"P{i:02d}" for i in range(n_people)], rng.integers(1, 5, n_people))
    ids = [f"A{i:03d}" for i in range(len(person))]
    x = rng.normal(size=(len(ids), 3))
    y = (x[:, 0] + rng.normal(0, 0.5, len(ids)) > 0).astype(int)
    spec = parse_spec(
        {
            "modalities": [{"name": "labs", "kind": "tabular"}],
            "target": {"column": "y"},
            "split": {"method": method, "n_folds": 3, "group": "person"},
            "training": {"max_epochs": 2, "val_fraction": 0.25},
            "evaluation": {
                "seeds": 1,
                "n_bootstrap": 20,
                "selection_folds": 2,
                "ablations": False,
                "baselines": False,
                "explain": False,
                "executor": "serial",
            },
        }  # fmt: skip
    )
    frames = {"labs": pd.DataFrame(x, index=ids, columns=["a", "b", "c"])}
    target = pd.DataFrame({"y": y, "person": person}, index=ids)
    return spec, build_cohort(spec, frames, target)


@pytest.fixture
def seen(monkeypatch):
    """The ``groups`` every caller hands to :func:`summarise`."""
    calls: list[np.ndarray | None] = []

    def spy(*args, groups=None, **kw):
        if len(args) > 5:  # passed by position
            groups, args = args[5], args[:5]
        calls.append(groups)
        return summarise(*args, groups=groups, **kw)

    for mod in (trust_mod, fitrun_mod, compare_mod):
        monkeypatch.setattr(mod, "summarise", spy)
    return calls


@pytest.mark.parametrize("mode", ["holdout", "kfold"])
def test_fit_runs_resample_persons(seen, mode):
    spec, cohort = _grouped(mode)
    _, res = fit_run(spec, cohort, "lr_early", mode=mode)
    assert seen and all(g is not None for g in seen)
    if mode == "kfold":  # the pooled out-of-fold CIs: every row with its person
        assert any(np.array_equal(g, cohort.groups) for g in seen)
    else:
        test_ids = set(res["test_ids"])
        want = cohort.groups[[i in test_ids for i in cohort.ids]]
        assert any(np.array_equal(g, want) for g in seen)


def test_a_comparison_resamples_persons(seen):
    spec, cohort = _grouped("kfold")
    res, _ = compare(spec, cohort, ["lr_early"], seeds=1)
    order = cohort.index_of(res["eval_ids"])
    assert seen and all(np.array_equal(g, cohort.groups[order]) for g in seen)
    y, outs = np.asarray(res["y"]), [np.full((len(order), 2), 0.5)]
    job = MetricsJob("binary", y, outs, 5, 0, {}, cohort.groups[order])
    assert metrics_job(None, job) == summarise("binary", y, outs, 5, 0, cohort.groups[order])
