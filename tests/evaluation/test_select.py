"""Selection over all candidates: the search, the honest ensemble score, the rule."""

from __future__ import annotations

import numpy as np

from holomed.cohort import inner_folds, load_cohort, patient_splits
from holomed.evaluation.select import ensemble_selection, score_candidate, select
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
    s = score_candidate(spec, train, "gbm", folds, 0, ticks.append)
    assert len(s.trials) == 4 and len(ticks) == 4
    assert s.trials[0]["params"] == {}  # trial 0 = the defaults
    finished = [t["score"] for t in s.trials if not t["pruned"]]
    assert s.score == max(finished)
    assert np.isfinite(s.oof).all() and s.oof.shape == (len(train), 2)
    # the same seed gives the same search
    again = score_candidate(spec, train, "gbm", folds, 0, lambda _m: None)
    assert [t["params"] for t in again.trials] == [t["params"] for t in s.trials]


def test_the_rule_picks_the_best_mean_inner_score_and_the_ensemble_is_scored_honestly():
    spec, train = small()
    sel = select(spec, train, ["joint", "lr_early", "gbm", "ensemble"], 0, lambda _m: None)
    scores = {n: s.score for n, s in sel.scored.items()}
    assert sel.selected == max(scores, key=scores.get)
    assert set(sel.ensemble_weights) <= {"joint", "lr_early", "gbm"}
    # the ensemble's reported score is not the in-sample score of its weights
    folds = inner_folds(train.y, 2, 0, train.task, train.groups)
    w, fold_scores = ensemble_selection(
        {n: sel.scored[n] for n in ("joint", "lr_early", "gbm")}, train.y, folds, "binary", "auroc"
    )
    assert w == sel.ensemble_weights
    assert np.isclose(np.mean(fold_scores), sel.scored["ensemble"].score)
