"""Subgroup audit over the cohort's attributes (sex, age band, site, ...), which never
enter the model unless a spec makes them a modality.

Per group, via fairlearn's ``MetricFrame`` with bootstrap CIs: size, prevalence,
AUROC, TPR, FPR, PPV (at the decision threshold) and calibration (ECE and mean
predicted minus observed risk). Groups smaller than ``min_group`` patients, or with a
single class, are reported as too small, never as zero gaps. The largest gap per
metric (max - min over adequate groups) comes with a bootstrap CI of the difference
between its two groups, and is flagged by a permutation test of the largest gap itself
(group labels shuffled among the adequate groups' patients within each outcome class, so
each group keeps its prevalence; the max - min recomputed each time, at least 199 times;
flagged when p < 0.05): the pair with the largest observed gap is chosen after looking,
so a CI of that pair alone excludes 0 far more often than 5 % of the time when the
groups do not differ. The null is "the metric does not depend on the group beyond its
prevalence": AUROC, TPR and FPR are tested as they are, while PPV, ECE and the
calibration gap, which move with prevalence, are tested for a difference beyond it.
The audit works on rows: with ``split.group`` (several rows per person) its counts,
CIs and shuffles treat rows as patients.
Optional mitigation: fairlearn's ``ThresholdOptimizer`` (group-specific thresholds,
equalised odds) fitted on validation patients, with before/after; groups with too few
validation patients or one outcome class keep the plain threshold ("not mitigated").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from holomed.scoring.metrics import ece as _ece
from holomed.scoring.survival import survival_metrics

METRICS = ("auroc", "tpr", "fpr", "ppv", "ece", "calibration_gap", "prevalence")
GAP_METRICS = ("auroc", "tpr", "fpr", "ppv", "ece", "calibration_gap")
ALPHA = 0.05


MIN_PERMUTATIONS = 199  # the smallest p is 1 / (n + 1): 0.005, below ALPHA


def gap_test(n_perm: int, within: str) -> str:
    """What the ``flag`` of a gap means (written next to it)."""
    return (
        f"permutation of the largest gap: group labels shuffled {n_perm} times among the "
        f"compared groups' patients, within {within} (each group keeps its own count of "
        f"them), max - min recomputed each time; flagged when p < {ALPHA:g} (the CI is of "
        "the difference between the two named groups)"
    )


def n_permutations(n_boot: int) -> int:
    """Relabellings of a gap test: ``n_boot``, at least :data:`MIN_PERMUTATIONS` (fewer
    could never reach p < 0.05); none without a bootstrap."""
    return max(n_boot, MIN_PERMUTATIONS) if n_boot > 0 else 0


def _p_value(observed: float, null: list[float]) -> float | None:
    """One-sided permutation p of ``observed`` against the finite values of ``null``."""
    v = np.array([x for x in null if np.isfinite(x)])
    if not len(v):
        return None
    return float((1 + np.sum(v >= observed - 1e-12)) / (1 + len(v)))


def _shuffled(
    idx: dict[str, np.ndarray], n_perm: int, seed: int, strata: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """``n_perm`` relabellings of the patients of ``idx`` ({group: rows}), dealt at random
    within each stratum of ``strata`` (per cohort row: the outcome, or the event
    indicator), so every group keeps its size and its count of each stratum. A null
    that mixed outcomes would give every group the overall prevalence, and a real group
    with few positives, whose AUROC or TPR is noisier, would be flagged too often. A
    stream of its own, so seeded CIs do not move."""
    keys = list(idx)
    rows = np.concatenate([idx[g] for g in keys])
    label = np.repeat(np.arange(len(keys)), [len(idx[g]) for g in keys])
    kinds = [np.nonzero(strata[rows] == v)[0] for v in np.unique(strata[rows])]
    rng = np.random.default_rng([seed, 1])
    for _ in range(n_perm):
        dealt = label.copy()
        for k in kinds:
            dealt[k] = rng.permutation(label[k])
        yield {g: rows[dealt == j] for j, g in enumerate(keys)}


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


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic with mid-ranks (ties count half): the same
    number as scikit-learn's ``roc_auc_score``, at a tenth of its cost in the bootstrap
    and permutation loops. NaN without both classes."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(s)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _metric_fns(threshold: float) -> dict[str, Any]:
    def rate(num, den):
        return num.sum() / den.sum() if den.sum() else float("nan")

    return {
        "auroc": _safe(_auroc),
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


def _group_text(v: Any) -> Any:
    """One attribute value as its group's name: a whole number is written without a
    decimal part whichever way it was read (``1`` and ``1.0`` are both group ``1``: a
    column with one empty cell is read as decimals)."""
    if isinstance(v, float | np.floating) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return v


def attribute_groups(col: pd.Series, edges: list[float] | None) -> np.ndarray:
    """Each patient's group: the binned value when ``edges`` are given, else the value
    as text (missing: ``unknown``)."""
    if edges is not None:
        return bin_attribute(col, edges).to_numpy()
    named = col.astype(object).map(_group_text)
    return named.astype("string").fillna("unknown").to_numpy()


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
    """Largest gap (max - min over adequate groups) per metric, with a bootstrap CI of
    the difference between its two groups (patients resampled within groups) and a
    permutation test of the largest gap (``n_boot`` relabellings; the ``flag``)."""
    fns = _metric_fns(threshold)
    if len(adequate) < 2:
        return {"note": "fewer than two groups large enough to compare"}
    idx = {g: np.nonzero(groups == g)[0] for g in adequate}

    def spreads(sel: dict[str, np.ndarray]) -> dict[str, tuple[float, str, str]]:
        res = {}
        for m in GAP_METRICS:
            vals = {g: fns[m](y[i], score[i]) for g, i in sel.items()}
            vals = {g: v for g, v in vals.items() if np.isfinite(v)}
            if len(vals) < 2:
                continue
            hi_g, lo_g = max(vals, key=vals.get), min(vals, key=vals.get)
            res[m] = (vals[hi_g] - vals[lo_g], hi_g, lo_g)
        return res

    point = spreads(idx)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(n_boot):
        sel = {g: rng.choice(i, len(i), replace=True) for g, i in idx.items()}
        for m, (_, hi_g, lo_g) in point.items():  # the same two groups as the estimate
            a, b = sel[hi_g], sel[lo_g]
            boots[m].append(fns[m](y[a], score[a]) - fns[m](y[b], score[b]))
    null: dict[str, list[float]] = {m: [] for m in point}
    n_perm = n_permutations(n_boot)
    for sel in _shuffled(idx, n_perm, seed, y):
        # the groups that would be compared: both classes (sizes are kept as they are)
        sel = {g: i for g, i in sel.items() if len(np.unique(y[i])) == 2}
        perm = spreads(sel)
        for m in point:
            null[m].append(perm[m][0] if m in perm else float("nan"))
    out = {}
    for m, (v, hi_g, lo_g) in point.items():
        b = np.array([x for x in boots[m] if np.isfinite(x)])
        ci = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [None, None]
        p = _p_value(v, null[m])
        out[m] = {
            "value": float(v),
            "between": [str(hi_g), str(lo_g)],
            "ci": ci,
            "p_value": p,
            "test": gap_test(n_perm, "outcome classes"),
            "flag": bool(p is not None and p < ALPHA),
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
    min_group: int = 20,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Group-specific thresholds (fairlearn ``ThresholdOptimizer``) fitted on validation
    patients, applied to test patients: TPR/FPR per group before and after.

    Fitted only on the groups with at least ``min_group`` validation patients and both
    outcome classes among them (``mitigated``); any other test group, one absent from
    the validation patients included, keeps the plain ``threshold`` and is listed with
    its reason under ``not_mitigated``."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.base import BaseEstimator, ClassifierMixin

    class _Scores(ClassifierMixin, BaseEstimator):  # the scores ThresholdOptimizer thresholds
        def fit(self, x, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, x):
            return np.asarray(x)[:, 0]

    y_val, y_test = np.asarray(y_val).astype(int), np.asarray(y_test).astype(int)
    s_val, s_test = np.asarray(s_val, dtype=float), np.asarray(s_test, dtype=float)
    g_val, g_test = np.asarray(g_val), np.asarray(g_test)
    fitted, skipped = [], {}
    for g in pd.unique(np.concatenate([g_val, g_test]).astype(object)):
        m = g_val == g
        if not m.any():
            skipped[str(g)] = "no validation patients"
        elif m.sum() < min_group:
            skipped[str(g)] = f"{int(m.sum())} validation patients (fewer than {min_group})"
        elif len(np.unique(y_val[m])) < 2:
            skipped[str(g)] = "one outcome class among its validation patients"
        else:
            fitted.append(g)
    before = (s_test >= threshold).astype(int)
    after = before.copy()
    note = None
    fv, ft = np.isin(g_val, fitted), np.isin(g_test, fitted)
    if fitted:
        opt = ThresholdOptimizer(
            estimator=_Scores(), constraints=constraint, prefit=True, predict_method="predict"
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt.fit(s_val[fv][:, None], y_val[fv], sensitive_features=g_val[fv])
                if ft.any():
                    after[ft] = opt.predict(
                        s_test[ft][:, None], sensitive_features=g_test[ft], random_state=seed
                    )
        except ValueError as err:  # fairlearn refuses these patients: nothing mitigated
            after = before.copy()
            note = f"ThresholdOptimizer could not be fitted ({err}); no group mitigated"
            skipped.update({str(g): "not fitted" for g in fitted})
            fitted = []
    else:
        note = "no group has enough validation patients of both outcomes; none mitigated"

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
    test_groups = {str(g) for g in np.unique(g_test)}
    out = {
        "method": f"ThresholdOptimizer({constraint})",
        "before": rates(before),
        "after": rates(after),
        "accuracy": acc,
        "min_group": min_group,
        "mitigated": [str(g) for g in fitted],
        "not_mitigated": {
            g: f"{why}: plain threshold {threshold:g}"
            for g, why in skipped.items()
            if g in test_groups
        },
    }
    if note:
        out["note"] = note
    return out


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
    (at least ``min_group`` patients and 2 events), with a bootstrap CI of the difference
    between those two groups and a permutation test of the largest gap (the ``flag``;
    ``n_boot`` relabellings, see the module doc). (fairlearn's MetricFrame takes one
    label per patient; a censored time is two.)"""

    def c(idx: np.ndarray) -> float:
        return survival_metrics(y[idx], risk[idx][:, None], only="c_index")["c_index"]

    def spread(sel: dict[str, np.ndarray]) -> float:
        """max - min of C over the groups of ``sel`` that are adequate (2 events)."""
        vals = [c(i) for i in sel.values() if y[i, 1].sum() >= 2]
        vals = [v for v in vals if np.isfinite(v)]
        return max(vals) - min(vals) if len(vals) >= 2 else float("nan")

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
        vals = {g: v for g, i in adequate.items() if np.isfinite(v := c(i))}
        adequate = {g: adequate[g] for g in vals}
        if len(adequate) < 2:
            gaps: dict[str, Any] = {"note": "fewer than two groups large enough to compare"}
        else:
            hi, lo = max(vals, key=vals.get), min(vals, key=vals.get)
            b = []
            for _ in range(n_boot):
                a = rng.choice(adequate[hi], len(adequate[hi]), replace=True)
                z = rng.choice(adequate[lo], len(adequate[lo]), replace=True)
                b.append(c(a) - c(z))
            b = np.array([v for v in b if np.isfinite(v)])
            ci = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [None, None]
            value = float(vals[hi] - vals[lo])
            n_perm = n_permutations(n_boot)
            shuffles = _shuffled(adequate, n_perm, seed, y[:, 1])
            p = _p_value(value, [spread(sel) for sel in shuffles])
            gaps = {
                "c_index": {
                    "value": value,
                    "between": [hi, lo],
                    "ci": ci,
                    "p_value": p,
                    "test": gap_test(n_perm, "events and censored patients"),
                    "flag": bool(p is not None and p < ALPHA),
                }
            }
        out["attributes"][attr] = {"groups": res_groups, "gaps": gaps, "binned": attr in bins}
    return out
