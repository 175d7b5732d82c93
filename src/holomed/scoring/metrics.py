"""Metrics per task, bootstrap confidence intervals and seed aggregation.

Classification metrics take probabilities ``(n, K)``; the predicted class is the
argmax (0.5 threshold for binary). ``ece`` is the expected calibration error of the
top-class probability over 10 equal-width bins for multiclass tasks and of the
positive-class probability (the risk scale) for binary tasks. :func:`calibration_stats`
adds calibration-in-the-large, slope and intercept (logistic recalibration).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from holomed.scoring.strata import strata as class_strata
from holomed.scoring.survival import SURVIVAL, horizons_inside, survival_metrics

CLASSIFICATION = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_macro",
    "f1_weighted",
    "auroc",
    "auprc",
    "brier",
    "ece",
)
REGRESSION = ("mae", "rmse", "r2")
MULTILABEL = ("auroc", "auprc", "f1_macro", "f1_micro", "subset_accuracy", "hamming_loss", "brier")
LOWER_IS_BETTER = {"brier", "ece", "mae", "rmse", "log_loss", "hamming_loss", "ibs", "fpr"}
# what a random score reaches on a metric (the chance line of plots)
CHANCE = {"auroc": 0.5, "c_index": 0.5, "balanced_accuracy": 0.5}


def log_loss(task: str, y: np.ndarray, out: np.ndarray, eps: float = 1e-6) -> float:
    """Mean negative log-likelihood of ``y`` under the predicted probabilities: binary and
    multiclass (``out`` (n, k), ``y`` class indices), multilabel (mean binary
    cross-entropy over labels). Undefined (NaN) for regression and survival."""
    if task in ("regression", "survival"):
        return float("nan")
    p = np.clip(np.asarray(out, dtype=float), eps, 1 - eps)
    y = np.asarray(y)
    if task == "multilabel":
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(y)), y.astype(int)]).mean())


def oriented(task: str, metric: str, y: np.ndarray, out: np.ndarray, **context) -> float:
    """``metric`` (or ``log_loss``) with its sign set so that higher is better (selection,
    ensembles); NaN when it is undefined here or the outputs are not finite."""
    if not np.isfinite(out).all():
        return float("nan")
    if metric == "log_loss":
        return -log_loss(task, y, out)
    if task == "survival":  # the one metric asked for: the IPCW ones are costly
        v = float(survival_metrics(np.asarray(y), out, only=metric, **context)[metric])
        return -v if metric in LOWER_IS_BETTER else v
    v = float(compute_metrics(task, y, out, **context)[metric])
    return -v if metric in LOWER_IS_BETTER else v


def metric_names(task: str) -> tuple[str, ...]:
    if task == "survival":
        return SURVIVAL
    if task == "multilabel":
        return MULTILABEL
    return REGRESSION if task == "regression" else CLASSIFICATION


def multilabel_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, per_label: bool = False
) -> dict:
    """Macro AUROC/AUPRC over labels that have both classes in ``y``; F1 macro and micro,
    subset accuracy and Hamming loss at ``threshold``; Brier over all entries.
    ``per_label=True`` also returns {label index: {auroc, auprc, f1, prevalence}}."""
    y = np.asarray(y).astype(int)
    pred = (p >= threshold).astype(int)
    tp = (pred & y).sum(0).astype(float)
    fp = (pred & (1 - y)).sum(0).astype(float)
    fn = ((1 - pred) & y).sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    both = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    auc = {j: _auroc(y[:, j], p[:, j]) for j in both}
    ap = {j: _average_precision(y[:, j], p[:, j]) for j in both}
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    res = {
        "auroc": float(np.mean(list(auc.values()))) if auc else float("nan"),
        "auprc": float(np.mean(list(ap.values()))) if ap else float("nan"),
        "f1_macro": float(f1.mean()),
        "f1_micro": float(2 * tp.sum() / micro_den) if micro_den else 0.0,
        "subset_accuracy": float((pred == y).all(1).mean()),
        "hamming_loss": float((pred != y).mean()),
        "brier": float(((p - y) ** 2).mean()),
    }
    if per_label:
        res["per_label"] = {
            j: {
                "auroc": auc.get(j, float("nan")),
                "auprc": ap.get(j, float("nan")),
                "f1": float(f1[j]),
                "prevalence": float(y[:, j].mean()),
            }
            for j in range(y.shape[1])
        }
    return res


def ece(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: binary, |observed rate - mean risk| of the positive
    class per risk bin; multiclass, accuracy vs confidence of the top class."""
    if proba.shape[1] == 2:
        conf, correct = proba[:, 1], (np.asarray(y) == 1).astype(float)
    else:
        conf = proba.max(1)
        correct = (proba.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def calibration_stats(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Binary calibration summary of risks ``p`` (n,): calibration-in-the-large (observed
    rate minus mean risk; 0 is ideal), and the intercept and slope of the logistic
    recalibration ``logit P(y) = a + b logit(p)`` (ideal a = 0, b = 1), fitted by Newton's
    method."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    out = {"calibration_in_the_large": float(y.mean() - p.mean())}
    undefined = {**out, "calibration_intercept": float("nan"), "calibration_slope": float("nan")}
    if len(np.unique(y)) < 2 or np.ptp(z) < 1e-9:
        return undefined
    z0, z1 = z[y == 0], z[y == 1]
    if z0.max() <= z1.min() or z1.max() <= z0.min():
        return undefined  # the risks separate the outcomes: the slope is infinite
    x = np.stack([np.ones_like(z), z], 1)

    def nll(b: np.ndarray) -> float:
        eta = x @ b
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    beta = np.array([0.0, 1.0])
    loss = nll(beta)
    for _ in range(100):
        q = 1 / (1 + np.exp(-np.clip(x @ beta, -30, 30)))
        h = x.T @ (x * (q * (1 - q))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, x.T @ (y - q))
        # damped: a full Newton step can overshoot and diverge when the risks sit
        # near 0 and 1; halve it until the likelihood does not fall
        for _ in range(40):
            new = nll(beta + step)
            if new <= loss + 1e-12:
                break
            step = step / 2
        beta, loss = beta + step, min(loss, new)
        if np.abs(step).max() < 1e-8:
            break
    else:
        return undefined  # no convergence: no finite answer to report
    return {
        **out,
        "calibration_intercept": float(beta[0]),
        "calibration_slope": float(beta[1]),
    }


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Same definition as scikit-learn's ``average_precision_score`` (step-wise, ties
    grouped), vectorised for the bootstrap."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last]
    if tps[-1] == 0:
        return float("nan")
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def _binary(y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    p = out[:, 1]
    pred = (out.argmax(1) == 1).astype(int)
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    tn = float(((pred == 0) & (y == 0)).sum())
    f1_pos = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    f1_neg = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
    n1, n0 = tp + fn, tn + fp
    w1 = n1 / len(y)
    one_class = n1 == 0 or n0 == 0
    return {
        "accuracy": (tp + tn) / len(y),
        "balanced_accuracy": float("nan") if one_class else 0.5 * (tp / n1 + tn / n0),
        "f1": f1_pos,
        "f1_macro": 0.5 * (f1_pos + f1_neg),
        "f1_weighted": w1 * f1_pos + (1 - w1) * f1_neg,
        "auroc": _auroc(y, p),
        "auprc": float("nan") if one_class else _average_precision(y, p),
        "brier": float(((p - y) ** 2).mean()),
        "ece": ece(y, out),
    }


def compute_metrics(
    task: str,
    y: np.ndarray,
    out: np.ndarray,
    horizons: list[float] | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of ``task``; a metric undefined on this sample (one class only) is NaN.
    Survival only: ``horizons`` of the curves in ``out`` and the ``reference`` (training)
    targets for the censoring distribution (:mod:`holomed.scoring.survival`)."""
    y = np.asarray(y)
    if task == "survival":
        return survival_metrics(y, out, horizons, reference)
    if task == "multilabel":
        return multilabel_metrics(y, np.asarray(out, dtype=float))
    if task != "regression" and out.shape[1] == 2:
        return _binary(y.astype(int), np.asarray(out, dtype=float))
    if task == "regression":
        err = out - y
        r2 = skm.r2_score(y, out) if len(y) > 1 else np.nan
        return {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "r2": float(r2),
        }
    with warnings.catch_warnings():  # bootstrap resamples may lack a class
        warnings.simplefilter("ignore", UserWarning)
        return _multiclass(y, out)


def _multiclass(y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    k = out.shape[1]
    pred = out.argmax(1)
    one_class = len(np.unique(y)) < 2
    res = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": np.nan if one_class else skm.balanced_accuracy_score(y, pred),
        "f1_macro": skm.f1_score(y, pred, average="macro", labels=range(k), zero_division=0),
        "f1_weighted": skm.f1_score(y, pred, average="weighted", labels=range(k), zero_division=0),
        "ece": ece(y, out),
    }
    onehot = np.eye(k)[y.astype(int)]
    res["brier"] = (
        float(((out - onehot) ** 2).sum(1).mean())
        if k > 2
        else float(((out[:, 1] - y) ** 2).mean())
    )
    if k == 2:
        res["f1"] = skm.f1_score(y, pred, zero_division=0)
        res["auroc"] = np.nan if one_class else skm.roc_auc_score(y, out[:, 1])
        res["auprc"] = np.nan if one_class else skm.average_precision_score(y, out[:, 1])
    else:
        res["f1"] = res["f1_macro"]
        present = np.unique(y)
        if len(present) == k:
            res["auroc"] = skm.roc_auc_score(y, out, multi_class="ovr", labels=range(k))
        else:
            res["auroc"] = np.nan
        res["auprc"] = (
            np.nan
            if one_class
            else float(
                np.mean([skm.average_precision_score(onehot[:, c], out[:, c]) for c in present])
            )
        )
    return {m: float(res[m]) for m in CLASSIFICATION}


def resamples(
    n: int,
    n_boot: int,
    seed: int = 0,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """``n_boot`` bootstrap index sets of 0..n-1, drawn within each stratum if given.

    ``groups`` (one id per row: the person of ``split.group``, whose rows are not
    independent): a cluster bootstrap, whole groups drawn with replacement, so a person
    with several rows counts once; stratified by the set of strata among a group's rows
    (a group's class when its rows share one). A resample then has about ``n`` rows."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        yield from _cluster_resamples(n, n_boot, rng, strata, groups)
        return
    groups = (
        [np.arange(n)]
        if strata is None
        else [np.nonzero(strata == s)[0] for s in np.unique(strata)]
    )
    for _ in range(n_boot):
        yield np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])


def _cluster_resamples(
    n: int,
    n_boot: int,
    rng: np.random.Generator,
    strata: np.ndarray | None,
    groups: np.ndarray,
) -> Iterator[np.ndarray]:
    """:func:`resamples` by whole groups (see there)."""
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} rows")
    gid, _ = pd.factorize(np.asarray(groups, dtype=object), use_na_sentinel=False)
    order = np.argsort(gid, kind="stable")  # rows of group c: order[start[c]:start[c]+size[c]]
    size = np.bincount(gid)
    start = np.r_[0, np.cumsum(size)[:-1]]
    if strata is None:
        kinds = [np.arange(len(size))]
    else:  # a group's stratum: the set of strata among its rows
        st, _ = pd.factorize(np.asarray(strata, dtype=object), use_na_sentinel=False)
        present: list[tuple[int, ...]] = [() for _ in size]
        for c, v in np.unique(np.c_[gid, st], axis=0):  # sorted: each tuple ascending
            present[c] = (*present[c], int(v))
        kind: dict[tuple[int, ...], list[int]] = {}
        for c, key in enumerate(present):
            kind.setdefault(key, []).append(c)
        kinds = [np.array(v) for v in kind.values()]
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(g, len(g), replace=True) for g in kinds])
        lengths = size[chosen]
        ends = np.cumsum(lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(ends - lengths, lengths)
        yield order[np.repeat(start[chosen], lengths) + offsets]


def bootstrap_ci(
    fn: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile CI of ``fn(idx)`` over ``n_boot`` resamples of 0..n-1 (stratified by
    ``strata`` if given, so each resample keeps the class balance; whole ``groups`` if
    given, see :func:`resamples`)."""
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    draws = resamples(n, n_boot, seed, strata, groups)
    vals = [v for idx in draws if np.isfinite(v := fn(idx))]
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarise(
    task: str,
    y: np.ndarray,
    outputs: list[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    **context,
) -> dict[str, dict[str, float | list[float]]]:
    """Per metric: mean and sd over seeds (one output per seed, same patients) and a
    bootstrap 95 % CI of the seed-mean, resampling patients (stratified by class; with
    ``groups``, one id per row, whole groups: :func:`resamples`).
    Survival: ``mean`` and the CI are of the seed-averaged output (risks and curves
    averaged, as an ensemble of the seeds; see :func:`bootstrap_metrics`), ``sd`` and
    ``per_seed`` of each seed's own output.

    Percentile intervals. ECE is biased upward on resamples (duplicated patients sharpen
    the bins), so its interval can sit above the point estimate on small test sets."""
    per_seed = [compute_metrics(task, y, o, **context) for o in outputs]
    pooled = (
        compute_metrics(task, y, np.mean(outputs, 0), **context) if task == "survival" else None
    )
    names = metric_names(task)
    boots = bootstrap_metrics(
        task, y, outputs, n_boot, seed, class_strata(np.asarray(y), task), groups, **context
    )
    out: dict[str, dict[str, float | list[float]]] = {}
    for m in names:
        vals = np.array([s[m] for s in per_seed], dtype=float)
        b = boots[m][np.isfinite(boots[m])] if n_boot else np.array([])
        lo, hi = np.quantile(b, [0.025, 0.975]).tolist() if len(b) else [np.nan, np.nan]
        mean = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out[m] = {
            "mean": float(pooled[m]) if pooled is not None else mean,
            "sd": float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan"),
            "ci": [float(lo), float(hi)],
            "per_seed": vals.tolist(),
        }
    return out


def bootstrap_metrics(
    task: str,
    y: np.ndarray,
    outputs: list[np.ndarray],
    n_boot: int,
    seed: int = 0,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    **context,
) -> dict[str, np.ndarray]:
    """Seed-mean of every metric on ``n_boot`` resamples of the patients: {metric: (n_boot,)}
    (survival: the metric of the seed-mean output, to bound the cost of IPCW metrics, with
    the horizons of ``td_auroc`` and ``ibs`` those of the whole sample in every resample).
    ``groups``: whole groups resampled (:func:`resamples`)."""
    names = metric_names(task)
    res = {m: np.full(n_boot, np.nan) for m in names}
    mean = np.mean(outputs, 0) if task == "survival" else None
    if task == "survival":  # one estimand: the horizons of the original sample
        horizons, reference = context.get("horizons"), context.get("reference")
        fixed = horizons_inside(y, horizons, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b, idx in enumerate(resamples(len(y), n_boot, seed, strata, groups)):
            if task == "survival":  # IPCW metrics are costly: one evaluation of the
                # seed-mean output per resample (risks and curves averaged, as an ensemble)
                per = [survival_metrics(y[idx], mean[idx], horizons, reference, fixed=fixed)]
            else:
                per = [compute_metrics(task, y[idx], o[idx], **context) for o in outputs]
            for m in names:
                res[m][b] = np.nanmean([p[m] for p in per])
    return res
