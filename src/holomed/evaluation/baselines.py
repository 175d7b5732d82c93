"""Baselines that are not candidates of their own, and the historical entry point of
the classical learners.

The classical learners (``lr_early``, ``lr_late``, ``gbm``) are candidates like any other
(:mod:`holomed.candidates.classical`): selectable, saved, calibrated and explained.
:func:`ClassicalBaseline` creates one by its old name. :class:`ScoreBaseline` maps an
existing risk score (SAPS-I, SOFA) to a probability; it is reported, never selected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from holomed.candidate import make_candidate
from holomed.cohort import Cohort
from holomed.spec import Spec

BASELINES = ("lr_early", "lr_late", "gbm")


def ClassicalBaseline(  # noqa: N802 - kept as the historical constructor name
    spec: Spec, method: str = "lr_late", seed: int = 0, modalities: list[str] | None = None
) -> Any:
    """The classical candidate ``method`` (``lr_early``, ``lr_late`` or ``gbm``)."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; expected one of {BASELINES}")
    return make_candidate(spec, method, seed, modalities)


class ScoreBaseline:
    """An existing risk score (a target-table column such as SAPS-I) as a predictor:
    a one-feature logistic regression fitted on the training patients, so that its
    probabilities are comparable; a missing score takes the training median (counted in
    ``describe``). Binary tasks only."""

    def __init__(self, column: str) -> None:
        self.column = column

    def _x(self, cohort: Cohort) -> tuple[np.ndarray, int]:
        if cohort.scores is None or self.column not in cohort.scores:
            raise ValueError(f"the cohort carries no score column {self.column!r}")
        v = cohort.scores[self.column].to_numpy(float)
        miss = ~np.isfinite(v)
        return np.where(miss, self.median_, v)[:, None], int(miss.sum())

    def fit(self, cohort: Cohort) -> ScoreBaseline:
        from sklearn.linear_model import LogisticRegression

        if cohort.task != "binary":
            raise ValueError("score baselines need a binary task")
        v = cohort.scores[self.column].to_numpy(float) if cohort.scores is not None else None
        if v is None or not np.isfinite(v).any():
            raise ValueError(f"score {self.column!r}: no training patient has a value")
        self.median_ = float(np.nanmedian(v))
        x, self.missing_train_ = self._x(cohort)
        self.model_ = LogisticRegression().fit(x, cohort.y)
        return self

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        x, self.missing_last_ = self._x(cohort)
        return self.model_.predict_proba(x)

    def describe(self) -> dict[str, Any]:
        return {"column": self.column, "missing_in_training": self.missing_train_}
