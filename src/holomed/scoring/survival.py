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
distribution is estimated on the evaluated patients themselves.
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
    return (h >= y[:, 0].min()) & (h < y[:, 0].max())


def survival_metrics(
    y: np.ndarray,
    out: np.ndarray,
    horizons: list[float] | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, float]:
    from sksurv.metrics import (
        concordance_index_censored,
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res["c_index"] = float(concordance_index_censored(y[:, 1] > 0, y[:, 0], risk)[0])
        except (ValueError, ZeroDivisionError):
            pass
        yt = _truncate(y, ref[:, 0].max())
        try:
            res["c_index_uno"] = float(
                concordance_index_ipcw(as_structured(ref), as_structured(yt), risk)[0]
            )
        except (ValueError, ZeroDivisionError):
            pass
        ok = _inside(yt, horizons)
        if not ok.any():
            return res
        h = np.asarray(horizons, dtype=float)[ok]
        try:
            _, mean_auc = cumulative_dynamic_auc(as_structured(ref), as_structured(yt), risk, h)
            res["td_auroc"] = float(mean_auc)
        except (ValueError, ZeroDivisionError):
            pass
        surv = curves_of(out)
        if surv.shape[1] == len(ok) and np.isfinite(surv).all():
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
                row["brier"] = brier_at(ref, yt, surv[:, j], float(h))
                row["predicted_event_rate"] = float(1 - surv[:, j].mean())
        res[f"{h:g}"] = row
    return res


def calibration_at(
    y: np.ndarray, surv_h: np.ndarray, h: float, bins: int = 10
) -> dict[str, list[float] | float]:
    """Calibration at horizon ``h``: patients grouped by deciles (``bins``) of predicted
    event probability 1 - S(h); in each group the mean prediction against the
    Kaplan–Meier event probability observed by ``h``. ``ici``: the mean absolute gap,
    weighted by group size."""
    y = np.asarray(y, dtype=float)
    p = 1 - np.asarray(surv_h, dtype=float)
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(p))) if len(g)]
    pred, obs, n = [], [], []
    for g in groups:
        pred.append(float(p[g].mean()))
        obs.append(float(1 - kaplan_meier(y[g], [h])[0]))
        n.append(int(len(g)))
    gap = np.abs(np.array(pred) - np.array(obs))
    return {
        "horizon": float(h),
        "predicted": pred,
        "observed": obs,
        "n": n,
        "ici": float(np.average(gap, weights=n)),
    }


def risk_groups(y: np.ndarray, risk: np.ndarray, k: int = 3) -> dict[str, object]:
    """Patients split into ``k`` groups by predicted risk (tertiles by default): each
    group's Kaplan–Meier curve and the log-rank test across groups."""
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator

    y = np.asarray(y, dtype=float)
    order = np.argsort(np.asarray(risk, dtype=float), kind="stable")
    label = np.empty(len(y), dtype=int)
    for i, g in enumerate(np.array_split(order, k)):
        label[g] = i
    curves = []
    for i in range(k):
        sel = label == i
        t, s = kaplan_meier_estimator(y[sel, 1] > 0, y[sel, 0])
        curves.append(
            {"group": i + 1, "n": int(sel.sum()), "time": t.tolist(), "survival": s.tolist()}
        )
    p = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, p = compare_survival(as_structured(y), label)
        except (ValueError, ZeroDivisionError):
            pass
    return {"groups": curves, "logrank_p": float(p)}


def survival_summary(
    y: np.ndarray, out: np.ndarray, horizons: list[float], reference: np.ndarray | None = None
) -> dict[str, object]:
    """Per-horizon AUROC and Brier, calibration at the middle horizon (predicted vs
    Kaplan–Meier observed, by risk decile) and Kaplan–Meier curves by risk tertile with
    the log-rank p, for one model's output."""
    mid = len(horizons) // 2
    surv = curves_of(out)
    return {
        "per_horizon": per_horizon(y, out, horizons, reference),
        "calibration": calibration_at(y, surv[:, mid], horizons[mid])
        if np.isfinite(surv[:, mid]).all()
        else None,
        "risk_groups": risk_groups(y, risk_of(out)),
    }


def metric_context(task: str, horizons: list[float], reference: np.ndarray | None) -> dict:
    """Keyword arguments of :func:`holomed.scoring.metrics.compute_metrics` for ``task``:
    the horizons and reference targets for survival, nothing otherwise."""
    return {"horizons": horizons, "reference": reference} if task == "survival" else {}
