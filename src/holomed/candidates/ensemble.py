"""Ensembles of candidates: a weighted mean of members' probabilities.

- Greedy ensemble selection with replacement (Caruana et al., 2004, "Ensemble selection
  from libraries of models"): starting from the best member, repeatedly add (again, if
  it helps) the member whose inclusion most improves an objective of the running mean of
  out-of-fold predictions; the weights are the counts at the best round. The objective
  is ``evaluation.ensemble_objective``: the log loss by default (a smooth, proper
  scoring rule: on a few hundred patients a rank metric such as AUROC moves in steps of
  one pair and greedy steps on it fit noise), or the selection metric.
- Bagged ensemble selection (Caruana et al., 2006): the greedy selection run in random
  halves of the candidates and the weights averaged (``evaluation.ensemble_bags``, 20 by
  default; 0 for plain greedy selection); or, with ``evaluation.ensemble_bagging:
  patients``, in bootstrap resamples of the patients with every candidate (Sun and
  Pfahringer, 2011), which keeps a dominant candidate in every bag.
- Bagging over seeds is the same ensemble with one candidate at several seeds.

Members are any candidates; each handles missing modalities itself, so the ensemble
does too. A bundle holds every member's state under a prefix.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from holomed.candidate import (
    Candidate,
    make_candidate,
    pack_members,
    register_candidate,
    unpack_members,
)
from holomed.scoring.metrics import oriented


def _objective(
    task: str, metric: str, y: np.ndarray, out: np.ndarray, context: dict | None = None
) -> float:
    v = oriented(task, metric, y, out, **(context or {}))
    return v if np.isfinite(v) else -np.inf


def caruana(
    preds: dict[str, np.ndarray],
    y: np.ndarray,
    task: str,
    metric: str,
    rounds: int = 40,
    context: dict | None = None,
) -> dict[str, float]:
    """Weights (summing to 1) of greedy ensemble selection with replacement over the
    out-of-fold predictions ``preds`` of ``y``; members with non-finite predictions are
    left out. Ties go to the member listed first. ``context``: what the metric needs
    beyond ``y`` (survival: horizons and the reference targets)."""
    names = [n for n, p in preds.items() if np.isfinite(p).all()]
    if not names:
        return {}
    counts = dict.fromkeys(names, 0)
    total = np.zeros_like(preds[names[0]], dtype=float)
    best_score, best_counts = -np.inf, None
    for r in range(rounds):
        scores = {
            n: _objective(task, metric, y, (total + preds[n]) / (r + 1), context) for n in names
        }
        pick = max(names, key=lambda n: scores[n])
        counts[pick] += 1
        total = total + preds[pick]
        if scores[pick] > best_score + 1e-12:
            best_score, best_counts = scores[pick], dict(counts)
    if best_counts is None:  # the objective is undefined for every member: no ensemble
        return {}
    k = sum(best_counts.values())
    return {n: c / k for n, c in best_counts.items() if c}


def caruana_bagged(
    preds: dict[str, np.ndarray],
    y: np.ndarray,
    task: str,
    metric: str,
    bags: int = 20,
    fraction: float = 0.5,
    seed: int = 0,
    context: dict | None = None,
) -> dict[str, float]:
    """Bagged ensemble selection (Caruana et al., 2006, "Getting the most out of ensemble
    selection", section 2.3): greedy selection (:func:`caruana`) in each of ``bags``
    random subsets of ``fraction`` of the candidates, the weights averaged over the bags.
    No single candidate that happens to fit the selection patients best can take every
    round, which is what overfits when few patients choose the weights. Seeded."""
    names = [n for n, p in preds.items() if np.isfinite(p).all()]
    if len(names) < 3:
        return caruana(preds, y, task, metric, context=context)
    rng = np.random.default_rng(seed)
    k = max(2, round(fraction * len(names)))
    total = dict.fromkeys(names, 0.0)
    for _ in range(bags):
        pick = sorted(rng.choice(len(names), k, replace=False))
        subset = {names[i]: preds[names[i]] for i in pick}
        for n, w in caruana(subset, y, task, metric, context=context).items():
            total[n] += w / bags
    return {n: w for n, w in total.items() if w > 0}


def caruana_rows(
    preds: dict[str, np.ndarray],
    y: np.ndarray,
    task: str,
    metric: str,
    bags: int = 20,
    seed: int = 0,
    context: dict | None = None,
) -> dict[str, float]:
    """Bagging ensemble selection over patients (Sun and Pfahringer, 2011, "Bagging
    ensemble selection"): greedy selection (:func:`caruana`) with every candidate on each
    of ``bags`` bootstrap resamples of the patients, the weights averaged over the bags.
    Unlike :func:`caruana_bagged` no candidate is ever left out of a bag, so a candidate
    that dominates keeps its weight. Seeded. Survival ``context`` is resampled with the
    patients (its reference targets)."""
    names = [n for n, p in preds.items() if np.isfinite(p).all()]
    if not names:
        return {}
    rng = np.random.default_rng(seed)
    total = dict.fromkeys(names, 0.0)
    for _ in range(bags):
        rows = rng.choice(len(y), len(y), replace=True)
        ctx = context
        if context and context.get("reference") is not None:
            ctx = {**context, "reference": np.asarray(context["reference"])[rows]}
        sub = {n: preds[n][rows] for n in names}
        for n, w in caruana(sub, y[rows], task, metric, context=ctx).items():
            total[n] += w / bags
    return {n: w for n, w in total.items() if w > 0}


def check_weights(weights: list[float]) -> np.ndarray:
    """Blending weights as an array: finite, non-negative, summing above 0."""
    w = np.asarray(weights, dtype=float)
    if not len(w) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"ensemble weights {list(map(float, w))}: expected finite, non-negative weights "
            "summing above 0"
        )
    return w


def blend(outputs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    w = check_weights(weights)
    return sum(wi * o for wi, o in zip(w / w.sum(), outputs, strict=True))


def _own(present: dict[str, np.ndarray], member: Candidate) -> dict[str, np.ndarray]:
    """The masks of ``present`` that name one of ``member``'s modalities (a mask may name
    only some modalities; the others keep what the cohort has)."""
    return {k: v for k, v in present.items() if k in member.preprocessors_}


@register_candidate("ensemble", "bag")
class Ensemble(Candidate):
    """``params = {"members": [{"name", "weight", "params"?, "seed"?}, ...]}``: each member
    is fitted on the same patients and the outputs are averaged with these weights.
    ``bag``: ``params = {"base": "late", "n": 5}`` is the ``base`` candidate at ``n`` seeds
    with equal weights."""

    family = "ensemble"
    complexity = 4
    attribution_method = "members' attributions, weighted mean"

    def _member_specs(self) -> list[dict[str, Any]]:
        p = self.params or {}
        if self.name == "bag" or "base" in p:
            base, n = p.get("base"), int(p.get("n", 5))
            if not base:
                raise ValueError("a bag needs params {'base': candidate name, 'n': seeds}")
            return [
                {"name": base, "weight": 1.0, "seed": self.seed + i, "params": p.get("params")}
                for i in range(n)
            ]
        members = p.get("members")
        if not members:
            raise ValueError(
                "an ensemble's members and weights come from a comparison's inner CV: run "
                "'holomed compare SPEC --out RUN', then deploy it with 'holomed fit SPEC --from "
                "RUN' (in Python: params {'members': [{'name', 'weight'}, ...]})"
            )
        return members

    def fit(self, cohort: Any) -> Ensemble:
        t0 = time.perf_counter()
        self.members_, self.weights_ = [], []
        for m in self._member_specs():
            c = make_candidate(
                self.spec, m["name"], m.get("seed", self.seed), self.modalities, m.get("params")
            ).fit(cohort)
            self.members_.append(c)
            self.weights_.append(float(m["weight"]))
        self._adopt(self.members_[0])
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _adopt(self, first: Candidate) -> None:
        self.task_, self.classes_ = first.task_, first.classes_
        mods: dict[str, Any] = {}
        for m in self.members_:
            mods.update(m.preprocessors_)
        self.preprocessors_ = mods

    def predict_proba(self, cohort: Any, calibrated: bool = True) -> np.ndarray:
        return blend([m.predict_proba(cohort, calibrated) for m in self.members_], self.weights_)

    def predict_present(self, cohort: Any, present: dict[str, np.ndarray]) -> np.ndarray:
        outs = []
        for m in self.members_:
            outs.append(m.predict_present(cohort, _own(present, m)))
        return blend(outs, self.weights_)

    def predictor(self, cohort: Any):
        fs = [m.predictor(cohort) for m in self.members_]

        def f(present: dict[str, np.ndarray]) -> np.ndarray:
            return blend(
                [g(_own(present, m)) for g, m in zip(fs, self.members_, strict=True)],
                self.weights_,
            )

        return f

    def feature_attributions(self, cohort: Any) -> dict[str, np.ndarray] | None:
        """Weighted mean of the members' attributions (members without any are skipped)."""
        total: dict[str, np.ndarray] = {}
        wsum: dict[str, float] = {}
        for m, w in zip(self.members_, self.weights_, strict=True):
            a = m.feature_attributions(cohort)
            for k, v in (a or {}).items():
                v = np.asarray(v, dtype=float).reshape(len(v), -1)
                if k in total and total[k].shape != v.shape:
                    continue
                total[k] = total.get(k, 0) + w * v
                wsum[k] = wsum.get(k, 0.0) + w
        return {k: v / wsum[k] for k, v in total.items()} or None

    def feature_names(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.members_:
            for k, v in m.feature_names().items():
                out.setdefault(k, v)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "members": [
                {"name": m.name, "seed": m.seed, "weight": round(w / sum(self.weights_), 4)}
                for m, w in zip(self.members_, self.weights_, strict=True)
            ]
        }

    def to_state(self):
        meta: dict[str, Any] = {
            "family": self.family,
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "weights": self.weights_,
        }
        packed, arrays, texts = pack_members(self.members_, "m")
        meta["members"] = packed["members"]
        return meta, arrays, texts

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> Ensemble:
        e = cls(spec, meta["name"], meta["seed"], None, meta.get("params"))
        e.members_ = unpack_members(spec, meta["members"], arrays, texts, "m")
        e.weights_ = [float(w) for w in meta["weights"]]
        if len(e.weights_) != len(e.members_) or not e.members_:
            raise ValueError("ensemble: weights do not match members")
        check_weights(e.weights_)
        e._adopt(e.members_[0])
        return e
