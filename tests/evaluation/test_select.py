"""Selection over all candidates: the search, the honest ensemble score, the rule."""

from __future__ import annotations

import numpy as np
import pytest

from holomed.cohort import inner_folds, load_cohort, patient_splits
from holomed.evaluation.select import (
    choose,
    ensemble_selection,
    no_tick,
    paired_se,
    repeated_folds,
    repeats_of,
    score_candidate,
    select,
)
from holomed.scoring.metrics import log_loss, oriented
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict


def small(**evaluation):
    d = synthetic_spec_dict(n_patients=160, seed=7)
    d["training"].update({"max_epochs": 3})
    d["evaluation"].update({"selection_folds": 2, **evaluation})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    tr, _ = patient_splits(cohort, spec.split)[0]
    return spec, cohort.subset(tr)


def test_search_tries_the_defaults_first_and_respects_the_trial_budget():
    spec, train = small(search={"trials": 4})
    folds = inner_folds(train.y, 2, 0, train.task, train.groups)
    ticks = []
    s = score_candidate(
        spec, train, "gbm", folds, 0, lambda msg, units=1: ticks.append((msg, units))
    )
    assert len(s.trials) == 4 and len(ticks) == 4
    assert all(u == len(folds) for _, u in ticks)  # each trial: one fit per inner fold
    assert s.trials[0]["params"] == {}  # trial 0 = the defaults
    finished = [t["score"] for t in s.trials if not t["pruned"]]
    assert s.score == max(finished)
    assert np.isfinite(s.oof).all() and s.oof.shape == (len(train), 2)
    # the same seed gives the same search
    again = score_candidate(spec, train, "gbm", folds, 0, no_tick)
    assert [t["params"] for t in again.trials] == [t["params"] for t in s.trials]


@pytest.mark.parametrize("budget", [{"seconds": 2}, {"trials": 40, "seconds": 1}])
def test_a_search_under_a_time_budget_makes_the_progress_it_planned(budget):
    """The progress a search makes is what count_fits planned (the trial budget, or one
    configuration under a time budget), however many trials the clock allows."""
    spec, train = small(search=budget)
    folds = inner_folds(train.y, 2, 0, train.task, train.groups)
    ticks = []
    score_candidate(spec, train, "gbm", folds, 0, lambda m, units=1: ticks.append(units))
    assert sum(ticks) == (budget.get("trials") or 1) * len(folds)


def test_ensemble_selection_with_an_undefined_objective_selects_nothing():
    from holomed.evaluation.select import Scored

    y = np.zeros(30)  # one class: AUROC undefined everywhere
    folds = inner_folds(np.r_[np.zeros(15), np.ones(15)], 3, 0, "binary")
    oof = np.c_[np.full(30, 0.4), np.full(30, 0.6)]
    scored = {n: Scored(n, None, 0.5, [0.5], oof, 0.0, [], [oof]) for n in ("a", "b")}
    assert ensemble_selection(scored, y, folds, "binary", "auroc", "metric") == ({}, [])


def test_the_best_rule_picks_the_best_mean_inner_score_and_the_ensemble_is_scored_honestly():
    spec, train = small(selection_rule="best")
    sel = select(spec, train, ["joint", "lr_early", "gbm", "ensemble"], 0, no_tick)
    scores = {n: s.score for n, s in sel.scored.items()}
    assert sel.selected == max(scores, key=scores.get)
    assert set(sel.ensemble_weights) <= {"joint", "lr_early", "gbm"}
    # the ensemble's reported score is not the in-sample score of its weights
    folds = inner_folds(train.y, 2, 0, train.task, train.groups)
    w, fold_scores = ensemble_selection(
        {n: sel.scored[n] for n in ("joint", "lr_early", "gbm")},
        train.y,
        folds,
        "binary",
        "auroc",
        "log_loss",
        spec.evaluation.ensemble_bags,
        0,
    )
    assert spec.evaluation.ensemble_bags > 0  # bagged by default
    assert w == sel.ensemble_weights
    assert np.isclose(np.mean(fold_scores), sel.scored["ensemble"].score)


def test_one_se_rule_takes_the_simplest_candidate_within_noise_of_the_best():
    # the network leads by less than the noise of its paired per-fold difference: the
    # linear model is chosen; a clear lead (consistent over folds) keeps the network
    noisy = {"late": [0.90, 0.80, 0.88], "gbm": [0.80, 0.86, 0.85], "lr_late": [0.84, 0.86, 0.86]}
    assert choose(noisy, "best") == "late"
    assert choose(noisy, "one_se") == "lr_late"
    # "best": a lead below 0.001 is a tie, and ties go to the simpler candidate
    tied = {"late": [0.8656, 0.8655], "lr_late": [0.8655, 0.8654], "gbm": [0.9, 0.5]}
    assert choose(tied, "best") == "lr_late"
    assert choose({"late": [0.868, 0.867], "lr_late": [0.8655, 0.8654]}, "best") == "late"
    clear = {"late": [0.90, 0.91, 0.92], "lr_late": [0.85, 0.86, 0.86]}
    assert paired_se(clear, "late", "lr_late") < 0.01
    assert choose(clear, "one_se") == "late"
    # among equally simple candidates within the band, the best mean; boosted trees are
    # simpler than a stack, a stack simpler than an ensemble
    band = {"ensemble": [0.9, 0.8], "stack": [0.85, 0.84], "gbm": [0.8, 0.9]}
    assert choose(band, "one_se") == "gbm"
    assert choose({"ensemble": [0.9, 0.91], "stack": [0.85, 0.84]}, "one_se") == "ensemble"
    # undefined folds are left out of the pairing; all undefined: the first listed
    assert choose({"late": [np.nan, np.nan], "lr_early": [np.nan, np.nan]}, "one_se") == "late"
    assert paired_se({"a": [0.9, np.nan, 0.8], "b": [0.8, 0.7, np.nan]}, "a", "b") == 0.0


def test_one_se_rule_selects_within_its_band_and_best_is_the_default():
    assert small()[0].evaluation.selection_rule == "best"
    spec, train = small(selection_rule="one_se")
    sel = select(spec, train, ["joint", "lr_early", "gbm"], 0, no_tick)
    scores = {n: s.score for n, s in sel.scored.items()}
    best = max(scores, key=scores.get)
    folds = {n: s.fold_scores for n, s in sel.scored.items()}
    assert scores[best] - scores[sel.selected] <= paired_se(folds, best, sel.selected) + 1e-12


def test_log_loss_is_the_mean_negative_log_likelihood_for_every_classification_task():
    y = np.array([0, 1, 1])
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    want = -np.mean(np.log([0.8, 0.7, 0.5]))
    assert np.isclose(log_loss("binary", y, p), want)
    assert np.isclose(oriented("binary", "log_loss", y, p), -want)
    ym = np.array([[1, 0], [0, 1]])
    pm = np.array([[0.9, 0.2], [0.4, 0.6]])
    bce = -np.mean(np.log([0.9, 0.8, 0.6, 0.6]))
    assert np.isclose(log_loss("multilabel", ym, pm), bce)
    assert np.isnan(log_loss("regression", np.zeros(2), np.zeros(2)))


def test_repeated_inner_cv_scores_every_draw_and_averages_out_of_fold_predictions():
    spec, train = small(selection_repeats=2)
    sel = select(spec, train, ["lr_early", "gbm", "ensemble"], 0, no_tick)
    for s in sel.scored.values():
        assert len(s.fold_scores) == 4 and len(s.oofs) == 2  # 2 draws x 2 folds
        assert np.allclose(s.oof, np.mean(s.oofs, axis=0))
    # the first draw is the single-draw selection; the second draw differs from it
    one = select(*small(selection_repeats=1), ["lr_early", "gbm"], 0, no_tick)
    lr = sel.scored["lr_early"]
    assert np.allclose(lr.oofs[0], one.scored["lr_early"].oof)
    assert lr.fold_scores[:2] == one.scored["lr_early"].fold_scores
    assert not np.allclose(lr.oofs[1], lr.oofs[0])
    # the ensemble's score is honest in every draw: weights chosen without the scored fold
    folds = repeated_folds(train.y, 2, 2, 0, train.task, train.groups)
    assert [len(r) for r in repeats_of(folds, len(train))] == [2, 2]
    w, fold_scores = ensemble_selection(
        {n: sel.scored[n] for n in ("lr_early", "gbm")}, train.y, folds, "binary", "auroc"
    )
    assert w == sel.ensemble_weights and len(fold_scores) == 4
    assert np.isclose(np.mean(fold_scores), sel.scored["ensemble"].score)


def test_bagged_ensemble_selection_averages_greedy_weights_over_random_halves():
    from holomed.candidates.ensemble import caruana, caruana_bagged

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    preds = {f"c{i}": np.clip(good + rng.normal(0, 0.1 * i, 200), 0.01, 0.99) for i in range(5)}
    preds = {n: np.stack([1 - p, p], 1) for n, p in preds.items()}
    w = caruana_bagged(preds, y, "binary", "log_loss", bags=20, seed=3)
    assert np.isclose(sum(w.values()), 1.0) and set(w) <= set(preds)
    assert w == caruana_bagged(preds, y, "binary", "log_loss", bags=20, seed=3)  # seeded
    plain = caruana(preds, y, "binary", "log_loss")
    assert len(w) > len(plain)  # no single best member takes every round of every bag
    # the bags are random halves: every member was left out of some bag, so each weight
    # stays below 1; with fewer than 3 candidates there is nothing to bag
    assert max(w.values()) < 1
    two = {n: preds[n] for n in ("c0", "c1")}
    assert caruana_bagged(two, y, "binary", "log_loss") == caruana(two, y, "binary", "log_loss")


def test_bagging_over_patients_keeps_a_dominant_candidate_in_every_bag():
    """``evaluation.ensemble_bagging: patients``: every bag holds every candidate, so a
    candidate far better than the rest keeps (nearly) all the weight, where random halves
    of the candidates leave it out of about half the bags."""
    from holomed.candidates.ensemble import caruana_bagged, caruana_rows
    from holomed.evaluation.select import ensemble_weights

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    strong = np.clip(0.5 + 0.8 * (y - 0.5) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    preds = {"strong": strong} | {
        f"weak{i}": np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, 400), 0.01, 0.99)
        for i in range(5)
    }
    preds = {n: np.stack([1 - p, p], 1) for n, p in preds.items()}
    halves = caruana_bagged(preds, y, "binary", "log_loss", bags=20, seed=0)
    rows = caruana_rows(preds, y, "binary", "log_loss", bags=20, seed=0)
    assert np.isclose(sum(rows.values()), 1.0) and set(rows) <= set(preds)
    assert rows["strong"] > 0.9 > halves["strong"]
    assert rows == caruana_rows(preds, y, "binary", "log_loss", bags=20, seed=0)  # seeded
    # the spec's switch reaches it, and 0 bags is plain greedy selection either way
    args = (preds, y, "binary", "log_loss", 20, 0)
    assert ensemble_weights(*args, bagging="patients") == rows
    assert ensemble_weights(*args) == halves
    plain = ensemble_weights(preds, y, "binary", "log_loss", 0, 0, bagging="patients")
    assert plain == ensemble_weights(preds, y, "binary", "log_loss", 0, 0)
