"""Subgroup audit over the cohort's attributes (sex, age band, site, ...), which never
enter the model unless a spec makes them a modality.

Per group, via fairlearn's ``MetricFrame`` with bootstrap CIs: size, prevalence,
AUROC, TPR, FPR, PPV (at the decision threshold) and calibration (ECE and mean
predicted minus observed risk). Groups smaller than ``min_group`` patients, or with a
single class, are reported as too small, never as zero gaps. The largest gap per
metric (max - min over adequate groups) is flagged when its bootstrap CI excludes 0.
Optional mitigation: fairlearn's ``ThresholdOptimizer`` (group-specific thresholds,
equalised odds) fitted on validation patients, with before/after.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from holomed.scoring.metrics import ece as _ece
from holomed.scoring.survival import survival_metrics

METRICS = ("auroc", "tpr", "fpr", "ppv", "ece", "calibration_gap", "prevalence")


def _safe(fn):
    def wrapped(y, s):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = fn(np.asarray(y), np.asarray(s))
            return float(v)
        except (ValueError, ZeroDivisionError):
            return float("nan")

    return wrapped


def _metric_fns(threshold: float) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    def rate(num, den):
        return num.sum() / den.sum() if den.sum() else float("nan")

    return {
        "auroc": _safe(lambda y, s: roc_auc_score(y, s) if len(np.unique(y)) == 2 else np.nan),
        "tpr": _safe(lambda y, s: rate((s >= threshold) & (y == 1), y == 1)),
        "fpr": _safe(lambda y, s: rate((s >= threshold) & (y == 0), y == 0)),
        "ppv": _safe(lambda y, s: rate((s >= threshold) & (y == 1), s >= threshold)),
        "ece": _safe(lambda y, s: _ece(y.astype(int), np.c_[1 - s, s])),
        "calibration_gap": _safe(lambda y, s: s.mean() - y.mean()),
        "prevalence": _safe(lambda y, s: y.mean()),
    }


def bin_attribute(values: pd.Series, edges: list[float]) -> pd.Series:
    """Numeric attribute -> bands, e.g. edges [50, 70] -> '<50', '50-70', '>=70'."""
    num = pd.to_numeric(values, errors="coerce")
    labels = [f"<{edges[0]:g}"] + [
        f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    labels.append(f">={edges[-1]:g}")
    out = pd.cut(num, [-np.inf, *edges, np.inf], right=False, labels=labels).astype("string")
    return out.fillna("unknown")


def attribute_groups(col: pd.Series, edges: list[float] | None) -> np.ndarray:
    """Each patient's group: the binned value when ``edges`` are given, else the value
    as text (missing: ``unknown``)."""
    if edges is not None:
        return bin_attribute(col, edges).to_numpy()
    return col.astype("string").fillna("unknown").to_numpy()


def audit(
    y: np.ndarray,
    score: np.ndarray,
    attributes: pd.DataFrame,
    bins: dict[str, list[float]] | None = None,
    threshold: float = 0.5,
    n_boot: int = 200,
    min_group: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Binary tasks: ``score`` is P(positive) per patient; ``attributes`` aligned rows."""
    from fairlearn.metrics import MetricFrame

    bins = bins or {}
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    out: dict[str, Any] = {
        "threshold": threshold,
        "min_group": min_group,
        "n_boot": n_boot,
        "attributes": {},
    }
    for attr in attributes.columns:
        groups = attribute_groups(attributes[attr], bins.get(attr))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mf = MetricFrame(
                metrics=_metric_fns(threshold),
                y_true=y,
                y_pred=score,
                sensitive_features={attr: groups},
                n_boot=n_boot or None,
                ci_quantiles=[0.025, 0.975] if n_boot else None,
                random_state=seed,
            )
        table = mf.by_group
        lo = mf.by_group_ci[0] if n_boot else table * np.nan
        hi = mf.by_group_ci[1] if n_boot else table * np.nan
        res_groups = {}
        adequate = []
        for g in table.index:
            mask = groups == g
            n = int(mask.sum())
            too_small = n < min_group or len(np.unique(y[mask])) < 2
            if not too_small:
                adequate.append(g)
            res_groups[str(g)] = {
                "n": n,
                "too_small": bool(too_small),
                **{
                    m: {"value": _f(table.loc[g, m]), "ci": [_f(lo.loc[g, m]), _f(hi.loc[g, m])]}
                    for m in METRICS
                },
            }
        gaps = _gaps(y, score, groups, adequate, threshold, n_boot, seed)
        out["attributes"][attr] = {"groups": res_groups, "gaps": gaps, "binned": attr in bins}
    return out


def _f(v: Any) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def _gaps(y, score, groups, adequate, threshold, n_boot, seed) -> dict[str, Any]:
    """Largest gap (max - min over adequate groups) per metric, with a bootstrap CI
    (patients resampled within groups)."""
    fns = _metric_fns(threshold)
    if len(adequate) < 2:
        return {"note": "fewer than two groups large enough to compare"}
    idx = {g: np.nonzero(groups == g)[0] for g in adequate}

    def gap(sel: dict[str, np.ndarray]) -> dict[str, tuple[float, str, str]]:
        res = {}
        for m in ("auroc", "tpr", "fpr", "ppv", "ece", "calibration_gap"):
            vals = {g: fns[m](y[i], score[i]) for g, i in sel.items()}
            vals = {g: v for g, v in vals.items() if np.isfinite(v)}
            if len(vals) < 2:
                continue
            hi_g, lo_g = max(vals, key=vals.get), min(vals, key=vals.get)
            res[m] = (vals[hi_g] - vals[lo_g], hi_g, lo_g)
        return res

    point = gap(idx)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(n_boot):
        sel = {g: rng.choice(i, len(i), replace=True) for g, i in idx.items()}
        b = gap(sel)
        for m in point:
            if m in b:
                # the gap between the same two groups as the point estimate
                hi_g, lo_g = point[m][1], point[m][2]
                boots[m].append(
                    fns[m](y[sel[hi_g]], score[sel[hi_g]]) - fns[m](y[sel[lo_g]], score[sel[lo_g]])
                )
    out = {}
    for m, (v, hi_g, lo_g) in point.items():
        b = np.array([x for x in boots[m] if np.isfinite(x)])
        ci = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [None, None]
        out[m] = {
            "value": float(v),
            "between": [str(hi_g), str(lo_g)],
            "ci": ci,
            "flag": bool(len(b) and ci[0] > 0),
        }
    return out


def mitigate_thresholds(
    y_val: np.ndarray,
    s_val: np.ndarray,
    g_val: np.ndarray,
    y_test: np.ndarray,
    s_test: np.ndarray,
    g_test: np.ndarray,
    constraint: str = "equalized_odds",
    seed: int = 0,
) -> dict[str, Any]:
    """Group-specific thresholds (fairlearn ``ThresholdOptimizer``) fitted on validation
    patients, applied to test patients: TPR/FPR per group before and after."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.base import BaseEstimator, ClassifierMixin

    class _Scores(ClassifierMixin, BaseEstimator):  # the scores ThresholdOptimizer thresholds
        def fit(self, x, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, x):
            return np.asarray(x)[:, 0]

    opt = ThresholdOptimizer(
        estimator=_Scores(), constraints=constraint, prefit=True, predict_method="predict"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.fit(s_val[:, None], y_val, sensitive_features=g_val)
        after = opt.predict(s_test[:, None], sensitive_features=g_test, random_state=seed)
    before = (s_test >= 0.5).astype(int)

    def rates(pred):
        res = {}
        for g in np.unique(g_test):
            m = g_test == g
            pos, neg = m & (y_test == 1), m & (y_test == 0)
            res[str(g)] = {
                "n": int(m.sum()),
                "tpr": float(pred[pos].mean()) if pos.any() else None,
                "fpr": float(pred[neg].mean()) if neg.any() else None,
            }
        return res

    acc = {"before": float((before == y_test).mean()), "after": float((after == y_test).mean())}
    return {
        "method": f"ThresholdOptimizer({constraint})",
        "before": rates(before),
        "after": rates(after),
        "accuracy": acc,
    }


def survival_audit(
    y: np.ndarray,
    risk: np.ndarray,
    attributes: pd.DataFrame,
    bins: dict[str, list[float]] | None = None,
    n_boot: int = 200,
    min_group: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Survival tasks: Harrell's C of the risk score per group (95 % bootstrap CI,
    patients resampled within the group) and the largest gap between adequate groups
    (at least ``min_group`` patients and 2 events), with a bootstrap CI of that gap.
    (fairlearn's MetricFrame takes one label per patient; a censored time is two.)"""

    def c(idx: np.ndarray) -> float:
        return survival_metrics(y[idx], risk[idx][:, None])["c_index"]

    y = np.asarray(y, dtype=float)
    risk = np.asarray(risk, dtype=float)
    bins = bins or {}
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "task": "survival",
        "metrics": ["c_index"],
        "min_group": min_group,
        "n_boot": n_boot,
        "attributes": {},
    }
    for attr in attributes.columns:
        groups = attribute_groups(attributes[attr], bins.get(attr))
        res_groups, adequate = {}, {}
        for g in pd.unique(groups):
            i = np.nonzero(groups == g)[0]
            events = int(y[i, 1].sum())
            small = len(i) < min_group or events < 2
            entry: dict[str, Any] = {"n": int(len(i)), "events": events, "too_small": small}
            if not small:
                adequate[str(g)] = i
                boots = [c(rng.choice(i, len(i), replace=True)) for _ in range(n_boot)]
                b = np.array([v for v in boots if np.isfinite(v)])
                ci = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [None, None]
                entry["c_index"] = {"value": _f(c(i)), "ci": ci}
            res_groups[str(g)] = entry
        if len(adequate) < 2:
            gaps: dict[str, Any] = {"note": "fewer than two groups large enough to compare"}
        else:
            vals = {g: c(i) for g, i in adequate.items()}
            hi, lo = max(vals, key=vals.get), min(vals, key=vals.get)
            b = []
            for _ in range(n_boot):
                a = rng.choice(adequate[hi], len(adequate[hi]), replace=True)
                z = rng.choice(adequate[lo], len(adequate[lo]), replace=True)
                b.append(c(a) - c(z))
            b = np.array([v for v in b if np.isfinite(v)])
            ci = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [None, None]
            gaps = {
                "c_index": {
                    "value": float(vals[hi] - vals[lo]),
                    "between": [hi, lo],
                    "ci": ci,
                    "flag": bool(len(b) and ci[0] > 0),
                }
            }
        out["attributes"][attr] = {"groups": res_groups, "gaps": gaps, "binned": attr in bins}
    return out
