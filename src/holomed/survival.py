"""Right-censored time to event, shared by every candidate family.

- A survival target is an (n, 2) array: time (> 0, in ``target.time_unit``) and event (1
  observed, 0 censored at that time).
- Every family outputs an (n, 1 + H) array: column 0 is the risk score (log relative
  hazard: higher means an earlier event), columns 1..H the survival probability at each
  of ``target.horizons``. Ensembles average both parts.
- Curves of the Cox-type families (networks with a Cox partial-likelihood head, penalised
  Cox, Coxnet) come from the Breslow estimate of the baseline cumulative hazard on the
  training patients (scikit-survival's ``BreslowEstimator``): S(t | x) =
  exp(-H0(t) exp(risk(x))).
- The null model is Kaplan–Meier on the training patients: the same curve and risk for
  everyone.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_structured(y: np.ndarray):
    """scikit-survival's structured array (event: bool, time: float) of an (n, 2) target."""
    from sksurv.util import Surv

    y = np.asarray(y, dtype=float)
    return Surv.from_arrays(event=y[:, 1].astype(bool), time=y[:, 0])


class Baseline:
    """A baseline cumulative hazard H0 as a right-continuous step function, for risk
    scores centred at ``offset`` (the mean training risk): a model's risk score is
    reported as ``centre(risk)``, its log hazard relative to the average training
    patient, so that scores of different models and of different fits of one model
    (outer folds, seeds) share an origin; the curves do not change with it."""

    def __init__(self, times: np.ndarray, cumhaz: np.ndarray, offset: float = 0.0) -> None:
        self.times = np.asarray(times, dtype=float)
        self.cumhaz = np.asarray(cumhaz, dtype=float)
        self.offset = float(offset)
        if self.times.shape != self.cumhaz.shape or self.times.ndim != 1:
            raise ValueError("baseline hazard: times and cumulative hazard differ in shape")
        if len(self.times) and (np.diff(self.times) < 0).any():
            raise ValueError("baseline hazard: times must not decrease")
        if not (
            np.isfinite(self.times).all()
            and np.isfinite(self.cumhaz).all()
            and np.isfinite(self.offset)
        ):
            raise ValueError("baseline hazard: non-finite values")

    @classmethod
    def fit(cls, risk: np.ndarray, y: np.ndarray) -> Baseline:
        """Breslow's estimator given training risk scores and targets."""
        from sksurv.linear_model.coxph import BreslowEstimator

        y = np.asarray(y, dtype=float)
        risk = np.clip(np.asarray(risk, dtype=float), -50, 50)
        offset = float(risk.mean()) if len(risk) else 0.0
        est = BreslowEstimator().fit(risk - offset, y[:, 1].astype(bool), y[:, 0])
        fn = est.cum_baseline_hazard_
        return cls(fn.x, fn.y, offset)

    def centre(self, risk: np.ndarray) -> np.ndarray:
        """The risk score relative to the average training patient."""
        return np.asarray(risk, dtype=float) - self.offset

    def at(self, t: np.ndarray | list[float]) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        i = np.searchsorted(self.times, t, side="right") - 1
        return np.where(i >= 0, self.cumhaz[np.clip(i, 0, None)], 0.0)

    def survival(self, risk: np.ndarray, horizons: list[float]) -> np.ndarray:
        """S(h | x) for every patient (rows) and horizon (columns), from the model's
        own (uncentred) risk scores."""
        rel = np.exp(np.clip(self.centre(np.clip(risk, -50, 50)), -50, 50))
        return np.exp(-self.at(horizons)[None, :] * rel[:, None])

    def to_json(self) -> dict[str, Any]:
        return {"times": self.times.tolist(), "cumhaz": self.cumhaz.tolist(), "offset": self.offset}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Baseline:
        return cls(
            np.asarray(d["times"], dtype=float),
            np.asarray(d["cumhaz"], dtype=float),
            float(d.get("offset", 0.0)),
        )


def kaplan_meier(y: np.ndarray, horizons: list[float] | np.ndarray) -> np.ndarray:
    """The Kaplan–Meier survival probability at each horizon."""
    from sksurv.nonparametric import kaplan_meier_estimator

    y = np.asarray(y, dtype=float)
    t, s = kaplan_meier_estimator(y[:, 1].astype(bool), y[:, 0])
    i = np.searchsorted(t, np.asarray(horizons, dtype=float), side="right") - 1
    return np.where(i >= 0, s[np.clip(i, 0, None)], 1.0)


def output_names(horizons: list[float]) -> list[str]:
    """Column names of a survival output: ``risk`` then ``survival_at_<h>``."""
    return ["risk"] + [f"survival_at_{h:g}" for h in horizons]


def pack(risk: np.ndarray, surv: np.ndarray) -> np.ndarray:
    """The output of a survival candidate: risk score, then S at each horizon."""
    return np.column_stack([np.asarray(risk, dtype=float), np.asarray(surv, dtype=float)])


def risk_of(out: np.ndarray) -> np.ndarray:
    return np.asarray(out, dtype=float)[:, 0]


def curves_of(out: np.ndarray) -> np.ndarray:
    return np.asarray(out, dtype=float)[:, 1:]
