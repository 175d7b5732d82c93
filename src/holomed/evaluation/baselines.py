"""Classical baselines on the same preprocessed features and the same splits:

- ``lr_early``: standardised logistic regression on the concatenated modalities
  (absent modality = its training mean, 0 after scaling, plus presence indicators);
- ``lr_late``: one logistic regression per modality; the mean of the probabilities of
  the present modalities (the training prevalence when none is present);
- ``gbm``: histogram gradient boosting on the concatenated features, absent values
  left missing (handled natively).

The logistic regressions' C is chosen by stratified CV on the training patients only
(``LogisticRegressionCV``); regression tasks use ridge (``RidgeCV``) instead.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from holomed.cohort import Cohort
from holomed.model import fit_preprocessors, transform_cohort
from holomed.spec import Spec

BASELINES = ("lr_early", "lr_late", "gbm")
C_GRID = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


def _linear(task: str, seed: int, folds: int):
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold

    if task == "regression":
        return RidgeCV(alphas=np.logspace(-2, 3, 12))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return LogisticRegressionCV(Cs=C_GRID, cv=cv, scoring="neg_log_loss", max_iter=5000)


class PerLabel:
    """One binary model per label (multilabel); a label with one class in training
    predicts its training prevalence."""

    def __init__(self, make) -> None:
        self.make = make

    def fit(self, x: np.ndarray, y: np.ndarray) -> PerLabel:
        import warnings

        self.models_: list[Any] = []
        for j in range(y.shape[1]):
            col = y[:, j]
            if 0 < col.sum() < len(col):
                with warnings.catch_warnings():  # a rare label can leave a CV fold one-class
                    warnings.simplefilter("ignore")
                    self.models_.append(self.make().fit(x, col))
            else:
                self.models_.append(float(col.mean()))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1]
                for m in self.models_
            ],
            1,
        )


class ClassicalBaseline:
    """``ClassicalBaseline(spec, "lr_late").fit(train).predict_proba(test)``."""

    def __init__(
        self,
        spec: Spec,
        method: str = "lr_late",
        seed: int = 0,
        modalities: list[str] | None = None,
    ) -> None:
        self.spec, self.method, self.seed, self.modalities = spec, method, seed, modalities

    def _features(self, cohort: Cohort, fill_nan: bool) -> np.ndarray:
        x, present = transform_cohort(self.preprocessors_, cohort)
        parts = []
        for n, pre in self.preprocessors_.items():
            v = pre.flat_features(x[n])[0].copy()
            if fill_nan:  # absent rows and undefined statistics: the training mean (0)
                v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
            parts.append(v)
        parts.append(np.stack([present[n] for n in self.preprocessors_], 1).astype(float))
        return np.concatenate(parts, 1)

    def fit(self, cohort: Cohort) -> ClassicalBaseline:
        import warnings

        from threadpoolctl import threadpool_limits

        # one BLAS/OpenMP thread: these matrices are small, and threads that spin while
        # other processes use the cores make a fit 10-50x slower
        with warnings.catch_warnings(), threadpool_limits(1):
            # scikit-learn 1.9 announces default changes of LogisticRegressionCV (l1_ratios,
            # fitted-attribute layout) that do not affect the L2 fit used here
            warnings.simplefilter("ignore", FutureWarning)
            return self._fit(cohort)

    def _fit(self, cohort: Cohort) -> ClassicalBaseline:
        if self.method not in BASELINES:
            raise ValueError(f"unknown baseline {self.method!r}; expected one of {BASELINES}")
        t0 = time.perf_counter()
        names = self.modalities or self.spec.modality_names
        mspecs = [m for m in self.spec.modalities if m.name in names]
        self.preprocessors_ = fit_preprocessors(mspecs, cohort, self.seed)
        self.task_ = cohort.task
        y = cohort.y
        folds = self.spec.evaluation.selection_folds
        multilabel = cohort.task == "multilabel"
        if cohort.task != "regression":
            self.n_classes_ = len(cohort.classes or [])
            self.prior_ = (
                y.mean(0)
                if multilabel
                else np.bincount(y.astype(int), minlength=self.n_classes_) / len(y)
            )

        def linear():
            if multilabel:
                return PerLabel(lambda: _linear("binary", self.seed, folds))
            return _linear(cohort.task, self.seed, folds)

        if self.method == "lr_early":
            self.model_ = linear().fit(self._features(cohort, True), y)
        elif self.method == "gbm":
            from sklearn.ensemble import (
                HistGradientBoostingClassifier,
                HistGradientBoostingRegressor,
            )

            cls = (
                HistGradientBoostingRegressor
                if cohort.task == "regression"
                else HistGradientBoostingClassifier
            )
            make = lambda: cls(random_state=self.seed)  # noqa: E731
            model = PerLabel(make) if multilabel else make()
            self.model_ = model.fit(self._features(cohort, False), y)
        else:
            x, present = transform_cohort(self.preprocessors_, cohort)
            self.models_ = {}
            for n in self.preprocessors_:
                rows = present[n]
                if cohort.task in ("binary", "multiclass") and len(np.unique(y[rows])) < 2:
                    continue  # too few patients with this modality to learn from
                f = np.nan_to_num(self.preprocessors_[n].flat_features(x[n])[0][rows])
                self.models_[n] = linear().fit(f, y[rows])
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        reg = self.task_ == "regression"
        if self.method in ("lr_early", "gbm"):
            f = self._features(cohort, self.method == "lr_early")
            return self.model_.predict(f) if reg else self.model_.predict_proba(f)
        x, present = transform_cohort(self.preprocessors_, cohort)
        n = len(cohort)
        total = np.zeros(n) if reg else np.zeros((n, self.n_classes_))
        count = np.zeros(n)
        for name, m in self.models_.items():
            rows = present[name]
            if rows.any():
                f = np.nan_to_num(self.preprocessors_[name].flat_features(x[name])[0][rows])
                total[rows] += m.predict(f) if reg else m.predict_proba(f)
                count[rows] += 1
        none = count == 0
        count[none] = 1
        out = total / (count if reg else count[:, None])
        if none.any():
            out[none] = np.nan if reg else self.prior_
        return out

    def feature_names(self) -> dict[str, list[str]]:
        """Per modality, the names of the features the baselines see (``flat_features``)."""
        out = {}
        for n, pre in self.preprocessors_.items():
            probe = np.zeros((1, *pre.out_shape), np.float32)
            out[n] = pre.flat_features(probe)[1]
        return out

    def describe(self) -> dict[str, Any]:
        if self.method == "lr_early":
            return {"C": float(np.atleast_1d(getattr(self.model_, "C_", [np.nan]))[0])}
        if self.method == "lr_late":
            return {
                n: float(np.atleast_1d(getattr(m, "C_", [np.nan]))[0])
                for n, m in self.models_.items()
            }
        return {}


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
