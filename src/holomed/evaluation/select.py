"""Selection over all candidates by inner cross-validation on training patients only.

The rule (one, documented): every candidate is scored by the mean, over the inner folds
of the training patients, of ``evaluation.selection_metric`` on that fold's held-out
predictions. With ``evaluation.selection_rule: best`` (the default) the best mean wins;
candidates within ``TIE`` (0.001, below what a few hundred patients can resolve) of it
count as tied and the simplest of them wins (the candidate's declared complexity rank:
linear models, then boosted trees, stacks, networks, ensembles). With ``one_se`` (Breiman
et al. 1984; Hastie et al., "Elements of Statistical Learning" 7.10) the band is one
standard error of each candidate's paired per-fold difference to the best instead: more
conservative, it gives up small gains of complex candidates (measured: on CPSC 2018 it
chose per-modality logistic regression over the ensemble and lost 0.07 macro-AUROC).
Test patients are never seen.

Per candidate, the hyper-parameters come from (in this order): a fixed grid
(``evaluation.grid``, dotted spec paths, neural candidates), else an Optuna search
(seeded TPE, median pruning after each inner fold) over the candidate's declared
:meth:`~holomed.candidate.Candidate.search_space` under ``evaluation.search``'s budget,
else the defaults.

The greedy ensemble (Caruana; bagged by default, ``evaluation.ensemble_bags``) is built
from the other candidates' out-of-fold predictions. Its own score is honest: for each
inner fold, the weights are chosen on the other folds' out-of-fold predictions and
scored on this fold's.

Repeated inner CV (``evaluation.selection_repeats``, R): the K inner folds are drawn R
times with different seeds (the first draw is the one R = 1 uses). Every candidate is
scored on all R x K folds (paired by position across candidates), its out-of-fold
predictions are the mean over the R draws, and the ensemble's weights are chosen on
those means. On a few hundred patients one partition into K folds decides more of the
ranking than the candidates do; R draws divide that variance (Kim 2009, "Estimating
classification error rate: repeated cross-validation, repeated hold-out and bootstrap")
at R times the cost.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from holomed.candidate import candidate_class, make_candidate
from holomed.candidates.ensemble import blend, caruana, caruana_bagged, caruana_rows
from holomed.cohort import Cohort, inner_folds
from holomed.executor import Executor
from holomed.scoring.metrics import oriented
from holomed.scoring.survival import metric_context
from holomed.spec import Spec


class Tick(Protocol):
    """Progress: one message per step, with the number of model fits the step made
    (``units``), so that a time estimate can weigh a selection step of five inner fits
    five times an outer fit."""

    def __call__(self, msg: str, units: int = 1) -> None: ...


def no_tick(msg: str, units: int = 1) -> None:
    """A :class:`Tick` that shows nothing."""


@dataclass
class Scored:
    """One candidate's inner-CV result: ``oof`` is the mean over repeats of the
    out-of-fold predictions, ``oofs`` those of each repeat."""

    name: str
    params: dict[str, Any] | None
    score: float
    fold_scores: list[float]
    oof: np.ndarray
    seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    oofs: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.oofs:
            self.oofs = [self.oof]


def repeated_folds(
    y: np.ndarray,
    n_folds: int,
    repeats: int,
    seed: int,
    task: str,
    groups: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` draws of ``n_folds`` inner folds, one after the other (the first draw
    uses ``seed``, as a single draw does)."""
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(repeats):
        folds += inner_folds(y, n_folds, seed + 7919 * r, task, groups)
    return folds


def repeats_of(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> list[list[int]]:
    """The fold positions of each repeat: consecutive folds whose held-out parts cover
    the ``n`` patients once."""
    out: list[list[int]] = [[]]
    seen = 0
    for i, (_, b) in enumerate(folds):
        if seen >= n:
            out.append([])
            seen = 0
        out[-1].append(i)
        seen += len(b)
    return out


def grid_points(spec: Spec) -> list[dict[str, Any]]:
    grid = spec.evaluation.grid
    if not grid:
        return [{}]
    keys = sorted(grid)
    return [
        dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid[k] for k in keys))
    ]


def output_columns(spec: Spec, cohort: Cohort) -> int:
    """Columns of a candidate's output: classes (1 for regression), or for survival the
    risk score and one survival probability per horizon."""
    if cohort.task == "survival":
        return 1 + len(spec.target.horizons)
    return len(cohort.classes or []) or 1


def empty_outputs(n: int, task: str, k: int) -> np.ndarray:
    """NaN outputs for ``n`` patients: (n,) for regression, (n, k) otherwise."""
    return np.full(n, np.nan) if task == "regression" else np.full((n, k), np.nan)


def build_candidate(
    spec: Spec,
    name: str,
    seed: int,
    modalities: list[str] | None = None,
    params: dict[str, Any] | None = None,
):
    """A fresh candidate as the harness fits it: a neural candidate is a bag of
    ``evaluation.bag`` seeds when that is above 1."""
    bag = spec.evaluation.bag
    if bag > 1 and candidate_class(name).family == "neural":
        return make_candidate(
            spec, "bag", seed, modalities, {"base": name, "n": bag, "params": params}
        )
    return make_candidate(spec, name, seed, modalities, params or None)


def inner_cv(
    spec: Spec,
    train: Cohort,
    name: str,
    params: dict[str, Any] | None,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    report: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions of one configuration over ``folds`` (one array per
    repeat, see :func:`repeats_of`) and per-fold scores. ``report(step, running mean)``
    may raise to stop early (Optuna pruning)."""
    ev = spec.evaluation
    k = output_columns(spec, train)
    oofs = []
    scores: list[float] = []
    for rep in repeats_of(folds, len(train)):
        oof = empty_outputs(len(train), train.task, k)
        for i in rep:
            a, b = folds[i]
            c = build_candidate(spec, name, seed, None, params).fit(train.subset(a))
            oof[b] = c.predict_proba(train.subset(b))
            # survival metrics read horizons and the fold's training targets (censoring)
            ctx = metric_context(train.task, spec.target.horizons, train.y[a])
            scores.append(oriented(train.task, ev.selection_metric, train.y[b], oof[b], **ctx))
            if report is not None:
                report(i, float(np.nanmean(scores)) if np.isfinite(scores).any() else -np.inf)
        oofs.append(oof)
    return oofs, scores


def _average(oofs: list[np.ndarray]) -> np.ndarray:
    return oofs[0] if len(oofs) == 1 else np.mean(oofs, axis=0)


def _mean(scores: list[float]) -> float:
    s = np.asarray(scores, dtype=float)
    return float(np.nanmean(s)) if np.isfinite(s).any() else -np.inf


def search(
    spec: Spec,
    train: Cohort,
    name: str,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    tick: Tick,
) -> Scored:
    """Optuna TPE search of one candidate's space within the budget; the default
    configuration is always the first trial, so a search never does worse on the inner CV
    than the defaults."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = spec.evaluation.search
    space = candidate_class(name).search_space(spec)
    best: dict[str, Any] = {}
    t0 = time.perf_counter()
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, budget.trials))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    trials: list[dict[str, Any]] = []
    # progress: the fits planned (count_fits: the trial budget, or one configuration under
    # a time budget), ticked as trials end and made whole when the search stops
    left = (budget.trials or 1) * len(folds)

    def step(msg: str) -> None:
        nonlocal left
        used = min(len(folds), left)
        left -= used
        tick(msg, used)

    def run(trial: Any) -> float:
        params = {} if trial.number == 0 else {k: p.suggest(trial, k) for k, p in space.items()}

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            oofs, scores = inner_cv(spec, train, name, params, folds, seed, report)
        except optuna.TrialPruned:
            trials.append({"params": params, "score": None, "pruned": True})
            step(f"search {name} trial {trial.number} (pruned)")
            raise
        score = _mean(scores)
        trials.append({"params": params, "score": score, "pruned": False})
        if not best or score > best["score"]:
            best.update(params=params, score=score, scores=scores, oofs=oofs)
        step(f"search {name} trial {trial.number}")
        return score

    study.optimize(run, n_trials=budget.trials or None, timeout=budget.seconds)
    if left:
        tick(f"search {name}: {len(trials)} trials", left)
    return Scored(
        name,
        best["params"] or None,
        best["score"],
        best["scores"],
        _average(best["oofs"]),
        time.perf_counter() - t0,
        trials,
        best["oofs"],
    )


def score_candidate(
    spec: Spec,
    train: Cohort,
    name: str,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    tick: Tick,
) -> Scored:
    """Inner-CV score of one candidate with its best configuration (grid, search or
    defaults)."""
    cls = candidate_class(name)
    budget = spec.evaluation.search
    searchable = budget.candidates is None or name in budget.candidates
    t0 = time.perf_counter()
    if cls.family == "neural" and spec.evaluation.grid:
        best: Scored | None = None
        trials = []
        for point in grid_points(spec):
            oofs, scores = inner_cv(spec, train, name, point, folds, seed)
            trials.append({"params": point, "score": _mean(scores), "pruned": False})
            if best is None or _mean(scores) > best.score:
                best = Scored(
                    name, point or None, _mean(scores), scores, _average(oofs), 0.0, [], oofs
                )
            tick(f"select {name} {json.dumps(point, sort_keys=True)}", len(folds))
        assert best is not None
        best.seconds, best.trials = time.perf_counter() - t0, trials
        return best
    if (budget.trials or budget.seconds) and searchable and cls.search_space(spec):
        return search(spec, train, name, folds, seed, tick)
    oofs, scores = inner_cv(spec, train, name, None, folds, seed)
    tick(f"select {name}", len(folds))
    return Scored(
        name, None, _mean(scores), scores, _average(oofs), time.perf_counter() - t0, [], oofs
    )


def ensemble_weights(
    preds: dict[str, np.ndarray],
    y: np.ndarray,
    task: str,
    objective: str,
    bags: int,
    seed: int,
    horizons: list[float] | None = None,
    bagging: str = "candidates",
) -> dict[str, float]:
    """Greedy ensemble weights on ``objective``: bagged (``bags`` > 0, bags of random
    halves of the candidates or, ``bagging="patients"``, bootstrap resamples of the
    patients) or plain. ``horizons``: survival metrics' horizons (``y`` is then their
    reference)."""
    ctx = metric_context(task, horizons or [], y)
    if bags > 0 and bagging == "patients":
        return caruana_rows(preds, y, task, objective, bags=bags, seed=seed, context=ctx)
    if bags > 0:
        return caruana_bagged(preds, y, task, objective, bags=bags, seed=seed, context=ctx)
    return caruana(preds, y, task, objective, context=ctx)


def ensemble_selection(
    scored: dict[str, Scored],
    y: np.ndarray,
    folds: list,
    task: str,
    metric: str,
    objective: str = "log_loss",
    bags: int = 0,
    seed: int = 0,
    horizons: list[float] | None = None,
    bagging: str = "candidates",
) -> tuple[dict[str, float], list[float]]:
    """Ensemble weights (:func:`ensemble_weights`, greedy on ``objective``: ``log_loss``
    or ``metric``) over all candidates' out-of-fold predictions (the mean over repeats),
    and the honest per-fold scores, in ``metric``, of the procedure (in each repeat,
    weights chosen on that repeat's out-of-fold predictions without the scored fold)."""
    if objective == "metric" or task in ("regression", "survival"):
        objective = metric
    ok = {n: s for n, s in scored.items() if all(np.isfinite(o).all() for o in s.oofs)}
    if len(ok) < 2:
        return {}, []
    oof = {n: s.oof for n, s in ok.items()}
    weights = ensemble_weights(oof, y, task, objective, bags, seed, horizons, bagging)
    if not weights:  # the objective is undefined for every candidate: no ensemble
        return {}, []
    fold_scores = []
    for r, rep in enumerate(repeats_of(folds, len(y))):
        preds = {n: s.oofs[r] for n, s in ok.items()}
        for i in rep:
            b = folds[i][1]
            rest = np.setdiff1d(np.arange(len(y)), b)
            w = ensemble_weights(
                {n: p[rest] for n, p in preds.items()},
                y[rest], task, objective, bags, seed, horizons, bagging,
            )  # fmt: skip
            if not w:  # undefined on this fold's training rows: the fold has no score
                fold_scores.append(float("nan"))
                continue
            out = blend([preds[n][b] for n in w], list(w.values()))
            ctx = metric_context(task, horizons or [], y[rest])
            fold_scores.append(oriented(task, metric, y[b], out, **ctx))
    return weights, fold_scores


@dataclass
class Selection:
    scored: dict[str, Scored]
    ensemble_weights: dict[str, float]
    selected: str
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "cv_scores": {n: s.score for n, s in self.scored.items()},
            "cv_fold_scores": {n: s.fold_scores for n, s in self.scored.items()},
            "chosen_params": {n: s.params for n, s in self.scored.items()},
            "search_trials": {n: s.trials for n, s in self.scored.items() if s.trials},
            "select_seconds": {n: round(s.seconds, 2) for n, s in self.scored.items()},
            "ensemble_weights": self.ensemble_weights,
            "selected": self.selected,
        }


@dataclass
class ScoreJob:
    """Score one candidate on the inner folds of the training rows ``rows``."""

    name: str
    rows: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    seed: int


def score_job(shared: tuple[Spec, Cohort], job: ScoreJob) -> tuple[Scored, list[tuple[str, int]]]:
    """Run one :class:`ScoreJob` (here or in an executor's worker): the score and the
    progress steps it made (message, fits)."""
    spec, cohort = shared
    lines: list[tuple[str, int]] = []
    train = cohort.subset(job.rows)

    def keep(msg: str, units: int = 1) -> None:
        lines.append((msg, units))

    return score_candidate(spec, train, job.name, job.folds, job.seed, keep), lines


def select(
    spec: Spec,
    train: Cohort,
    names: list[str],
    seed: int,
    tick: Tick,
    executor: Executor | None = None,
    source: tuple[tuple[Spec, Cohort], np.ndarray] | None = None,
) -> Selection:
    """Score every candidate in ``names`` by inner CV on ``train`` and select the best
    (``ensemble`` in ``names`` adds the greedy ensemble over the others). With an
    ``executor`` and ``source`` = ((spec, cohort), rows of ``train`` in ``cohort``), the
    candidates are scored in parallel, one job each, from data shipped once."""
    ev = spec.evaluation
    folds = repeated_folds(
        train.y, ev.selection_folds, ev.selection_repeats, seed, train.task, train.groups
    )
    fitted = [n for n in names if n != "ensemble"]
    if executor is not None and source is not None and executor.workers > 1:
        shared, rows = source
        jobs = [ScoreJob(name, rows, folds, seed) for name in fitted]

        def done(_i: int, res: tuple[Scored, list[tuple[str, int]]]) -> None:
            for line, units in res[1]:
                tick(line, units)

        results = executor.map(score_job, shared, jobs, done)
        scored = {name: res[0] for name, res in zip(fitted, results, strict=True)}
    else:
        scored = {name: score_candidate(spec, train, name, folds, seed, tick) for name in fitted}
    weights: dict[str, float] = {}
    if "ensemble" in names:
        t0 = time.perf_counter()
        weights, fold_scores = ensemble_selection(
            scored, train.y, folds, train.task, ev.selection_metric, ev.ensemble_objective,
            ev.ensemble_bags, seed, spec.target.horizons, ev.ensemble_bagging,
        )  # fmt: skip
        if weights:
            w = list(weights.values())
            oofs = [
                blend([scored[n].oofs[r] for n in weights], w)
                for r in range(len(scored[next(iter(weights))].oofs))
            ]
            members = [
                {"name": n, "weight": w, "params": scored[n].params} for n, w in weights.items()
            ]
            scored["ensemble"] = Scored(
                "ensemble",
                {"members": members},
                _mean(fold_scores),
                fold_scores,
                _average(oofs),
                time.perf_counter() - t0,
                [],
                oofs,
            )
        tick("select ensemble")
    fold_scores = {n: s.fold_scores for n, s in scored.items()}
    selected = choose(fold_scores, ev.selection_rule)
    return Selection(scored, weights, selected, folds)


TIE = 1e-3


def choose(fold_scores: dict[str, list[float]], rule: str = "best") -> str:
    """The selected candidate from per-fold scores (higher is better; NaN where a fold is
    undefined), by ``rule`` (module doc). The lists are paired by position: the same
    folds in the same order for every candidate."""
    means = {n: _mean(v) for n, v in fold_scores.items()}
    best = max(means, key=lambda n: means[n])  # ties: the first listed
    if not np.isfinite(means[best]):
        return best

    def band(n: str) -> float:
        return paired_se(fold_scores, best, n) if rule == "one_se" else TIE

    ok = [n for n in fold_scores if means[best] - means[n] <= band(n)]
    simplest = min(candidate_class(n).complexity_of(n) for n in ok)
    return max(
        (n for n in ok if candidate_class(n).complexity_of(n) == simplest),
        key=lambda n: means[n],
    )


def paired_se(fold_scores: dict[str, list[float]], a: str, b: str) -> float:
    """Standard error of the mean per-fold difference between ``a`` and ``b`` (folds
    where both are defined); 0 with fewer than two such folds."""
    x, y = np.asarray(fold_scores[a], float), np.asarray(fold_scores[b], float)
    n = min(len(x), len(y))
    d = (x[:n] - y[:n])[np.isfinite(x[:n]) & np.isfinite(y[:n])]
    if len(d) < 2:
        return 0.0
    return float(d.std(ddof=1) / np.sqrt(len(d)))
