"""Survival metrics, all through scikit-survival's estimators.

- ``c_index``: Harrell's concordance of the risk score.
- ``c_index_uno``: Uno's IPCW concordance, the censoring distribution estimated on the
  ``reference`` (training) patients; times beyond the reference follow-up are truncated.
- ``td_auroc``: the mean cumulative/dynamic AUROC over the horizons inside the evaluated
  patients' follow-up (``auroc@h`` per horizon in :func:`per_horizon`).
- ``ibs``: the integrated Brier score over those horizons (the Brier score itself when
  only one horizon is inside the follow-up); lower is better.

A metric that cannot be defined on a sample (no comparable pair, no horizon inside the
follow-up, a model without curves) is NaN. Without a ``reference``, the censoring
distribution is estimated on the evaluated patients themselves. A bootstrap fixes the
horizons of ``td_auroc`` and ``ibs`` on the original sample (:func:`horizons_inside`,
``survival_metrics(..., fixed=...)``): a resample whose follow-up does not reach them
is NaN, not an average over fewer horizons.
"""

from __future__ import annotations

import warnings

import numpy as np

from holomed.survival import as_structured, curves_of, kaplan_meier, risk_of

SURVIVAL = ("c_index", "c_index_uno", "td_auroc", "ibs")


def _truncate(y: np.ndarray, limit: float) -> np.ndarray:
    """Follow-up cut just below ``limit``: later times become censored there."""
    y = np.array(y, dtype=float, copy=True)
    late = y[:, 0] >= limit
    y[late, 0] = np.nextafter(limit, -np.inf)
    y[late, 1] = 0
    return y


def _inside(y: np.ndarray, horizons: list[float] | None) -> np.ndarray:
    h = np.asarray(horizons or [], dtype=float)
    if len(y) == 0:
        return np.zeros(len(h), dtype=bool)
    return (h >= y[:, 0].min()) & (h < y[:, 0].max())


def horizons_inside(
    y: np.ndarray, horizons: list[float] | None, reference: np.ndarray | None = None
) -> np.ndarray:
    """Which ``horizons`` :func:`survival_metrics` evaluates ``td_auroc`` and ``ibs`` at
    on the patients ``y`` (those inside their follow-up, cut at the reference's): the
    ``fixed`` horizons of every bootstrap resample of ``y``."""
    y = np.asarray(y, dtype=float)
    ref = y if reference is None else np.asarray(reference, dtype=float)
    if len(y) == 0 or len(ref) == 0:
        return np.zeros(len(horizons or []), dtype=bool)
    return _inside(_truncate(y, ref[:, 0].max()), horizons)


def _before_counts(v: np.ndarray, *queries: np.ndarray) -> list[np.ndarray]:
    """For each position ``p`` of the integer array ``v`` and each integer array ``q`` of
    ``queries``: how many earlier positions hold a value below ``q[p]``. Bottom-up merge
    sort, one vectorised ``searchsorted`` per level and query: O(n log^2 n) in numpy."""
    n = len(v)
    size = 1 << max(0, (n - 1).bit_length())
    big = int(max(v.max(initial=0), *(q.max(initial=0) for q in queries))) + 1
    vals = np.full(size, big, dtype=np.int64)
    vals[:n] = v
    qs = []
    for q in queries:
        full = np.zeros(size, dtype=np.int64)
        full[:n] = q
        qs.append(full)
    ids = np.arange(size)
    counts = [np.zeros(size, dtype=np.int64) for _ in queries]
    width = 1
    while width < size:
        pairs = size // (2 * width)
        blocks, where = vals.reshape(pairs, 2, width), ids.reshape(pairs, 2, width)
        offset = (np.arange(pairs) * (big + 1))[:, None]
        left = (blocks[:, 0] + offset).ravel()  # rows sorted, rows in order: all sorted
        start = (np.arange(pairs) * width)[:, None]
        right = where[:, 1]
        for q, c in zip(qs, counts, strict=True):
            c[right] += np.searchsorted(left, q[right] + offset, "left") - start
        merged = blocks.reshape(pairs, 2 * width)
        order = np.argsort(merged, axis=1, kind="stable")
        vals = np.take_along_axis(merged, order, 1).ravel()
        ids = np.take_along_axis(where.reshape(pairs, 2 * width), order, 1).ravel()
        width *= 2
    return [c[:n] for c in counts]


def harrell_c(event: np.ndarray, time: np.ndarray, risk: np.ndarray, tol: float = 1e-8) -> float:
    """Harrell's concordance index, the same number as scikit-survival's
    ``concordance_index_censored`` (a patient with an event is comparable with every later
    time and with a censoring at the same time; two risks within ``tol`` of each other tie
    and count half) in O(n log^2 n) instead of its O(n^2) comparison masks. Selection and
    greedy ensembles evaluate thousands of blends on a few thousand patients, where that
    cost dominated a survival comparison. NaN without a comparable pair or with a
    non-finite time or risk."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=float)
    risk = np.asarray(risk, dtype=float)
    if not event.any() or len(time) < 2:
        return float("nan")
    if not (np.isfinite(time).all() and np.isfinite(risk).all()):
        return float("nan")
    uniq = np.unique(risk)
    rank = np.searchsorted(uniq, risk)
    below = np.searchsorted(uniq, risk - tol, "left")  # rank < below: risk < r - tol
    upto = np.searchsorted(uniq, risk + tol, "right")  # rank < upto: risk <= r + tol
    censored = (~event).astype(np.int64)
    # later key first: time descending, then censored before events at the same time,
    # then risk descending within a key (a same-key neighbour is then never "below")
    order = np.lexsort((-rank, -censored, -time))
    t, c = time[order], censored[order]
    v, lo, hi = rank[order], below[order], upto[order]
    less, leq = _before_counts(v, lo, hi)
    # members of a patient's own key group are not comparable: the earlier ones with a
    # risk up to r + tol were counted in ``leq`` (none in ``less``); take them out
    pos = np.arange(len(t))
    same_key = np.r_[False, (t[1:] == t[:-1]) & (c[1:] == c[:-1])]
    start = np.maximum.accumulate(np.where(same_key, 0, pos))  # first of each group
    group = np.cumsum(~same_key)
    width = len(uniq) + 1
    w = group * width + (width - 1 - v)  # ascending along the order
    at_or_above = np.searchsorted(w, group * width + (width - 1 - hi), "right") - start
    ties = leq - (pos - start - at_or_above) - less
    pairs = start  # the members of earlier groups
    ev = c == 0
    den = float(pairs[ev].sum())
    if den == 0:
        return float("nan")
    return float((less[ev].sum() + 0.5 * ties[ev].sum()) / den)


def survival_metrics(
    y: np.ndarray,
    out: np.ndarray,
    horizons: list[float] | None = None,
    reference: np.ndarray | None = None,
    only: str | None = None,
    fixed: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of ``SURVIVAL`` (NaN where undefined); with ``only``, that one alone
    (the others NaN): selection and greedy ensembles score thousands of blends on one
    metric, and the IPCW ones cost far more than Harrell's C.

    ``fixed`` (a mask over ``horizons``, a bootstrap's :func:`horizons_inside` of the
    original sample): ``td_auroc`` and ``ibs`` over exactly those horizons, NaN when one
    of them is outside this sample's follow-up (by default: the horizons inside it)."""
    from sksurv.metrics import (
        concordance_index_ipcw,
        cumulative_dynamic_auc,
        integrated_brier_score,
    )

    y = np.asarray(y, dtype=float)
    ref = y if reference is None else np.asarray(reference, dtype=float)
    res = dict.fromkeys(SURVIVAL, float("nan"))
    risk = risk_of(out)
    if not np.isfinite(risk).all() or len(y) < 2:
        return res
    if only is not None and only not in SURVIVAL:
        raise ValueError(f"unknown survival metric {only!r}; expected one of {SURVIVAL}")

    def want(name: str) -> bool:
        return only is None or only == name

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if want("c_index"):
            res["c_index"] = harrell_c(y[:, 1] > 0, y[:, 0], risk)
        if only == "c_index":
            return res
        yt = _truncate(y, ref[:, 0].max())
        if want("c_index_uno"):
            try:
                res["c_index_uno"] = float(
                    concordance_index_ipcw(as_structured(ref), as_structured(yt), risk)[0]
                )
            except (ValueError, ZeroDivisionError):
                pass
        ok = _inside(yt, horizons)
        if fixed is not None:
            fixed = np.asarray(fixed, dtype=bool)
            if (fixed & ~ok).any():  # a fixed horizon beyond this sample's follow-up
                return res
            ok = fixed
        if not ok.any():
            return res
        h = np.asarray(horizons, dtype=float)[ok]
        if want("td_auroc"):
            try:
                _, mean_auc = cumulative_dynamic_auc(as_structured(ref), as_structured(yt), risk, h)
                res["td_auroc"] = float(mean_auc)
            except (ValueError, ZeroDivisionError):
                pass
        surv = curves_of(out)
        if want("ibs") and surv.shape[1] == len(ok) and np.isfinite(surv).all():
            try:
                if len(h) >= 2:
                    res["ibs"] = float(
                        integrated_brier_score(
                            as_structured(ref), as_structured(yt), surv[:, ok], h
                        )
                    )
                else:
                    res["ibs"] = brier_at(ref, yt, surv[:, ok][:, 0], float(h[0]))
            except (ValueError, ZeroDivisionError):
                pass
    return res


def brier_at(ref: np.ndarray, y: np.ndarray, surv_h: np.ndarray, h: float) -> float:
    from sksurv.metrics import brier_score

    _, b = brier_score(as_structured(ref), as_structured(y), surv_h[:, None], [h])
    return float(b[0])


def per_horizon(
    y: np.ndarray,
    out: np.ndarray,
    horizons: list[float],
    reference: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """``{horizon: {auroc, brier, km_event_rate, predicted_event_rate}}`` for every
    horizon inside the follow-up of ``y``."""
    from sksurv.metrics import cumulative_dynamic_auc

    y = np.asarray(y, dtype=float)
    ref = y if reference is None else np.asarray(reference, dtype=float)
    yt = _truncate(y, ref[:, 0].max())
    ok = _inside(yt, horizons)
    res: dict[str, dict[str, float]] = {}
    surv = curves_of(out)
    for j, h in enumerate(horizons):
        if not ok[j]:
            continue
        row: dict[str, float] = {"km_event_rate": float(1 - kaplan_meier(y, [h])[0])}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                auc, _ = cumulative_dynamic_auc(
                    as_structured(ref), as_structured(yt), risk_of(out), [h]
                )
                row["auroc"] = float(auc[0])
            except (ValueError, ZeroDivisionError):
                row["auroc"] = float("nan")
            if np.isfinite(surv[:, j]).all():
                try:  # undefined without an event (sksurv: "all samples are censored")
                    row["brier"] = brier_at(ref, yt, surv[:, j], float(h))
                except (ValueError, ZeroDivisionError):
                    row["brier"] = float("nan")
                row["predicted_event_rate"] = float(1 - surv[:, j].mean())
        res[f"{h:g}"] = row
    return res


def calibration_at(
    y: np.ndarray, surv_h: np.ndarray, h: float, bins: int = 10
) -> dict[str, list[float] | float]:
    """Calibration at horizon ``h``: patients grouped by deciles (``bins``) of predicted
    event probability 1 - S(h); in each group the mean prediction against the
    Kaplan–Meier event probability observed by ``h``. ``ici``: the mean absolute gap,
    weighted by group size (NaN without a group).

    A group whose follow-up ends before ``h`` with its Kaplan–Meier curve above 0 (the
    last patients censored) has no observed rate at ``h``: Kaplan–Meier would carry its
    last value forward, an event probability too low. Such groups are left out of
    ``predicted``, ``observed``, ``n`` and the ICI, and counted in ``unobserved``
    (``groups``, ``n`` patients, their mean ``predicted`` risks)."""
    y = np.asarray(y, dtype=float)
    p = 1 - np.asarray(surv_h, dtype=float)
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, max(1, min(bins, len(p)))) if len(g)]
    pred, obs, n = [], [], []
    unknown: dict[str, list] = {"n": [], "predicted": []}
    for g in groups:
        km = float(kaplan_meier(y[g], [h])[0])
        if y[g, 0].max() < h and km > 0:  # nobody followed to h: the rate there is unknown
            unknown["n"].append(int(len(g)))
            unknown["predicted"].append(float(p[g].mean()))
            continue
        pred.append(float(p[g].mean()))
        obs.append(1 - km)
        n.append(int(len(g)))
    gap = np.abs(np.array(pred) - np.array(obs))
    return {
        "horizon": float(h),
        "predicted": pred,
        "observed": obs,
        "n": n,
        "ici": float(np.average(gap, weights=n)) if n else float("nan"),
        "unobserved": {"groups": len(unknown["n"]), **unknown},
    }


def risk_groups(y: np.ndarray, risk: np.ndarray, k: int = 3) -> dict[str, object]:
    """Patients split into ``k`` groups by predicted risk (tertiles by default; fewer
    groups when there are fewer than ``k`` patients): each group's Kaplan–Meier curve
    and the log-rank test across groups."""
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator

    y = np.asarray(y, dtype=float)
    k = max(0, min(k, len(y)))  # never an empty group (Kaplan–Meier needs a patient)
    order = np.argsort(np.asarray(risk, dtype=float), kind="stable")
    label = np.empty(len(y), dtype=int)
    for i, g in enumerate(np.array_split(order, k) if k else []):
        label[g] = i
    # numbers at risk (still followed, no event or censoring before t) at 5 even times
    ticks = np.linspace(0.0, float(y[:, 0].max()), 5) if len(y) else np.zeros(0)
    curves = []
    for i in range(k):
        sel = label == i
        if not sel.any():
            continue
        t, s = kaplan_meier_estimator(y[sel, 1] > 0, y[sel, 0])
        at_risk = [int((y[sel, 0] >= tick).sum()) for tick in ticks]
        curves.append(
            {
                "group": i + 1,
                "n": int(sel.sum()),
                "time": t.tolist(),
                "survival": s.tolist(),
                "at_risk": at_risk,
            }
        )
    p = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, p = compare_survival(as_structured(y), label)
        except (ValueError, ZeroDivisionError):
            pass
    return {"groups": curves, "logrank_p": float(p), "at_risk_times": ticks.tolist()}


def survival_summary(
    y: np.ndarray, out: np.ndarray, horizons: list[float], reference: np.ndarray | None = None
) -> dict[str, object]:
    """Per-horizon AUROC and Brier, calibration at the middle horizon (predicted vs
    Kaplan–Meier observed, by risk decile; None when no decile is followed to it) and
    Kaplan–Meier curves by risk tertile with the log-rank p, for one model's output."""
    mid = len(horizons) // 2
    surv = curves_of(out)
    cal = None
    if len(y) and np.isfinite(surv[:, mid]).all():
        cal = calibration_at(y, surv[:, mid], horizons[mid])
        if not cal["n"]:
            cal = None
    return {
        "per_horizon": per_horizon(y, out, horizons, reference),
        "calibration": cal,
        "risk_groups": risk_groups(y, risk_of(out)),
    }


def metric_context(task: str, horizons: list[float], reference: np.ndarray | None) -> dict:
    """Keyword arguments of :func:`holomed.scoring.metrics.compute_metrics` for ``task``:
    the horizons and reference targets for survival, nothing otherwise."""
    return {"horizons": horizons, "reference": reference} if task == "survival" else {}
