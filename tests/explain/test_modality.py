"""Modality Shapley values: exactness, efficiency, absent modalities, faithfulness on
the synthetic cohort whose signal-carrying modalities are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from holomed.cohort import load_cohort, patient_splits
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.explain.modality import modality_shapley, shapley_from_values
from holomed.model import Model
from holomed.spec import parse_spec
from holomed.synthetic import GROUND_TRUTH, synthetic_spec_dict


def test_shapley_of_an_additive_game_is_each_players_part():
    names = ["a", "b", "c"]
    part = {"a": 1.0, "b": 2.0, "c": -0.5}
    values = {
        frozenset(s): sum(part[n] for n in s)
        for k in range(4)
        for s in itertools.combinations(names, k)
    }
    phi = shapley_from_values(values, names)
    assert phi == pytest.approx(part)


def test_shapley_splits_an_interaction_equally():
    names = ["a", "b"]
    values = {frozenset(): 0.0, frozenset("a"): 0.0, frozenset("b"): 0.0, frozenset("ab"): 1.0}
    assert shapley_from_values(values, names) == pytest.approx({"a": 0.5, "b": 0.5})


@pytest.fixture(scope="module")
def synthetic():
    d = synthetic_spec_dict(n_patients=700, seed=11, missing=0.15, interaction=0.0)
    d["training"].update({"max_epochs": 30})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    ((tr, te),) = patient_splits(cohort, spec.split)
    return spec, cohort.subset(tr), cohort.subset(te)


@pytest.mark.parametrize("which", ["late", "baseline"])
def test_contributions_rank_the_signal_modalities_first(synthetic, which):
    spec, train, test = synthetic
    model = (
        Model(spec, fusion="late", seed=0)
        if which == "late"
        else ClassicalBaseline(spec, "lr_late")
    ).fit(train)
    res = modality_shapley(model, test)
    g = res["global"]
    strongest = GROUND_TRUTH["signal_modalities"][0]
    assert max(g, key=g.get) == strongest
    assert g["noise"] == min(g.values()) or abs(g["noise"]) < 0.02
    # efficiency: per patient, contributions add up to score(all) - score(none)
    total = np.sum([res["patient"][m] for m in res["modalities"]], 0)
    np.testing.assert_allclose(
        total, np.array(res["patient_score"]) - res["patient_base"], atol=1e-6
    )
    # ... and globally to metric(all) - metric(none)
    assert sum(g.values()) == pytest.approx(res["value_all"] - res["value_none"], abs=1e-9)


def test_absent_modality_contributes_nothing_and_loo_is_undefined(synthetic):
    spec, train, test = synthetic
    model = ClassicalBaseline(spec, "lr_late").fit(train)
    res = modality_shapley(model, test)
    absent = ~test.modalities["expression"].present
    assert absent.any()
    assert np.all(np.array(res["patient"]["expression"])[absent] == 0)
    assert all(res["patient_loo"]["expression"][i] is None for i in np.nonzero(absent)[0])


def test_sampled_shapley_approximates_exact(synthetic):
    spec, train, test = synthetic
    model = ClassicalBaseline(spec, "lr_late").fit(train)
    exact = modality_shapley(model, test)
    sampled = modality_shapley(model, test, exact_max=2, n_permutations=300, seed=1)
    assert sampled["method"].startswith("sampled")
    for m in exact["global"]:
        assert sampled["global"][m] == pytest.approx(exact["global"][m], abs=0.03)
