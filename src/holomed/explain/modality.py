"""Modality contributions: Shapley values over modality subsets.

The presence masks make "this modality is absent" well defined: the value of a subset
``S`` is the model's output when only the modalities in ``S`` (and actually present for
that patient) are given. Per patient, the value is the predicted score (probability of
the positive class, of the predicted class for multiclass, or the prediction for
regression, the risk score for survival); globally, it is a metric (AUROC by default;
Harrell's C for survival) over the cohort.

Exact Shapley values enumerate all 2^M subsets (M <= ``exact_max`` = 8 modalities);
above that, permutation sampling estimates them. Leave-one-out deltas
``v(all) - v(all without i)`` are reported beside them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from holomed.scoring.metrics import LOWER_IS_BETTER, compute_metrics

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


def predictor(model: Any, cohort: Any) -> Predict:
    """``f(present) -> outputs`` for any candidate (inputs transformed once where the
    family can) or any estimator with ``predict_proba(cohort)``."""
    if hasattr(model, "predictor"):
        return model.predictor(cohort)
    return lambda present: model.predict_proba(cohort.with_presence(present))


def _score(out: np.ndarray, ref: np.ndarray | None = None, task: str = "") -> np.ndarray:
    """Per-patient score: P(positive) for binary, P(reference class) for multiclass, the
    mean label probability for multilabel, the prediction for regression, the risk score
    (log relative hazard) for survival."""
    if out.ndim == 1:
        return out
    if task == "survival":
        return out[:, 0]
    if task == "multilabel":
        return out.mean(1)
    if out.shape[1] == 2:
        return out[:, 1]
    cls = out.argmax(1) if ref is None else ref
    return out[np.arange(len(out)), cls]


def _weights(n: int) -> dict[int, float]:
    return {s: math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)}


def shapley_from_values(values: dict[frozenset, Any], names: list[str]) -> dict[str, Any]:
    n = len(names)
    w = _weights(n)
    phi = {}
    for i in names:
        others = [m for m in names if m != i]
        total = 0
        for k in range(n):
            for sub in itertools.combinations(others, k):
                s = frozenset(sub)
                total = total + w[k] * (values[s | {i}] - values[s])
        phi[i] = total
    return phi


def modality_shapley(
    model: Any,
    cohort: Any,
    metric: str | None = None,
    exact_max: int = 8,
    n_permutations: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Global and per-patient modality Shapley values + leave-one-out deltas."""
    names = list(getattr(model, "preprocessors_", {}) or cohort.modality_names)
    task = cohort.task
    metric = metric or {"regression": "rmse", "survival": "c_index"}.get(task, "auroc")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    f = predictor(model, cohort)
    base = {
        n: cohort.modalities[n].present.copy()
        if n in cohort.modalities
        else np.zeros(len(cohort), bool)
        for n in names
    }
    full_out = f(base)
    ref = full_out.argmax(1) if task == "multiclass" else None
    has_y = cohort.y is not None
    cache: dict[frozenset, tuple[np.ndarray, float]] = {}

    def value(s: frozenset) -> tuple[np.ndarray, float]:
        if s not in cache:
            pres = {n: base[n] & (n in s) for n in names}
            out = f(pres)
            g = sign * compute_metrics(task, cohort.y, out)[metric] if has_y else float("nan")
            cache[s] = (_score(out, ref, task), g)
        return cache[s]

    if len(names) <= exact_max:
        for k in range(len(names) + 1):
            for sub in itertools.combinations(names, k):
                value(frozenset(sub))
        per = shapley_from_values({s: v[0] for s, v in cache.items()}, names)
        glob = shapley_from_values({s: v[1] for s, v in cache.items()}, names)
        method = "exact"
    else:
        rng = np.random.default_rng(seed)
        per = {n: np.zeros(len(cohort)) for n in names}
        glob = {n: 0.0 for n in names}
        for _ in range(n_permutations):
            order = list(rng.permutation(names))
            prev = frozenset()
            for m in order:
                cur = prev | {m}
                per[m] += (value(cur)[0] - value(prev)[0]) / n_permutations
                glob[m] += (value(cur)[1] - value(prev)[1]) / n_permutations
                prev = cur
        method = f"sampled ({n_permutations} permutations)"
    full = frozenset(names)
    loo_per = {n: value(full)[0] - value(full - {n})[0] for n in names}
    loo_glob = {n: value(full)[1] - value(full - {n})[1] for n in names}
    for n in names:  # a modality the patient lacks contributes nothing, by construction
        per[n] = np.where(base[n], per[n], 0.0)
        loo_per[n] = np.where(base[n], loo_per[n], np.nan)
    return {
        "method": method,
        "metric": metric,
        "metric_sign": sign,
        "modalities": names,
        "global": {n: float(glob[n]) for n in names},
        "global_loo": {n: float(loo_glob[n]) for n in names},
        "mean_abs_patient": {n: float(np.mean(np.abs(per[n]))) for n in names},
        "value_all": float(value(full)[1] * sign) if has_y else None,
        "value_none": float(value(frozenset())[1] * sign) if has_y else None,
        "ids": cohort.ids.tolist(),
        "patient": {n: per[n].tolist() for n in names},
        "patient_loo": {n: [None if np.isnan(v) else float(v) for v in loo_per[n]] for n in names},
        "patient_base": value(frozenset())[0].tolist(),
        "patient_score": value(full)[0].tolist(),
    }
