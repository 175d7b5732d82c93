"""Classical survival learners as candidates (scikit-survival), on the same preprocessed
features as every other family (absent modality = its training mean, 0 after scaling,
plus presence indicators):

- ``cox``: Cox proportional hazards with a ridge penalty (``CoxPHSurvivalAnalysis``,
  Efron's ties), the penalty chosen by CV of Harrell's C on the training patients;
- ``coxnet``: elastic-net Cox (``CoxnetSurvivalAnalysis``, l1_ratio 0.5), the penalty
  chosen along its path by the same CV: sparse, for wide modalities;
- ``km``: the Kaplan–Meier null model: one curve for everyone, no features. Every
  survival model should beat its integrated Brier score.

The Cox models are stored as coefficient arrays plus the Breslow baseline hazard and
applied with numpy (never unpickled); their feature attributions are exact linear SHAP
values (``coef * x``, on the log-hazard scale).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from holomed.candidate import Candidate, register_candidate
from holomed.candidates.classical import FeatureDesign
from holomed.cohort import Cohort, inner_folds
from holomed.model import transform_cohort
from holomed.survival import Baseline, as_structured, kaplan_meier, pack
from holomed.threads import limit_threads

RIDGE_GRID = [0.1, 1.0, 10.0, 100.0, 1000.0]
L1_RATIO = 0.5


def _c_index(y: np.ndarray, risk: np.ndarray) -> float:
    from sksurv.metrics import concordance_index_censored

    try:
        return float(concordance_index_censored(y[:, 1] > 0, y[:, 0], risk)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / ill-conditioning notes
        m = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200)
        return np.asarray(m.fit(x, as_structured(y)).coef_, dtype=float)


def _coxnet(x: np.ndarray, y: np.ndarray, alphas: np.ndarray | None = None):
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxnetSurvivalAnalysis(
            l1_ratio=L1_RATIO, alphas=alphas, n_alphas=30, alpha_min_ratio=0.01, max_iter=20000
        )
        return m.fit(x, as_structured(y))


def fit_cox(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, folds: int
) -> tuple[np.ndarray, float]:
    """Coefficients and the penalty chosen by ``folds``-fold CV of Harrell's C (folds
    stratified by the event indicator)."""
    splits = inner_folds(y[:, 1].astype(int), max(2, folds), seed, "binary", None)
    if name == "cox":
        scores = []
        for a in RIDGE_GRID:
            c = []
            for tr, te in splits:
                c.append(_c_index(y[te], x[te] @ _ridge(x[tr], y[tr], a)))
            scores.append(np.nanmean(c) if np.isfinite(c).any() else -np.inf)
        alpha = RIDGE_GRID[int(np.argmax(scores))]
        return _ridge(x, y, alpha), float(alpha)
    path = _coxnet(x, y)
    alphas = np.asarray(path.alphas_, dtype=float)
    scores = np.zeros(len(alphas))
    for tr, te in splits:
        try:
            m = _coxnet(x[tr], y[tr], alphas)
        except ArithmeticError:  # the path did not converge at small penalties
            continue
        risk = x[te] @ np.asarray(m.coef_, dtype=float)  # (n, alphas)
        scores[: risk.shape[1]] += np.nan_to_num(
            [_c_index(y[te], risk[:, j]) for j in range(risk.shape[1])], nan=0.0
        )
    j = int(np.argmax(scores))
    return np.asarray(path.coef_, dtype=float)[:, j], float(alphas[j])


@register_candidate("cox", "coxnet", "km")
class CoxLinear(FeatureDesign, Candidate):
    """Penalised Cox (``cox``, ``coxnet``) or the Kaplan–Meier null model (``km``) on all
    modalities joined; outputs risk and the survival probability at the horizons."""

    family = "survival_linear"
    complexity = 0
    tasks = ("survival",)
    attribution_method = "exact linear SHAP on the log hazard (coef * x)"

    def fit(self, cohort: Cohort) -> CoxLinear:
        if cohort.task != "survival":
            raise ValueError(f"{self.name} learns a survival task, not {cohort.task}")
        t0 = time.perf_counter()
        self._fit_common(cohort)
        self.horizons_ = list(self.spec.target.horizons)
        x = self._design(cohort, True)
        self.alpha_ = None
        if self.name == "km":
            self.coef_ = np.zeros(x.shape[1])
            self.km_ = kaplan_meier(cohort.y, self.horizons_)
        else:
            with limit_threads():
                self.coef_, self.alpha_ = fit_cox(
                    self.name, x, cohort.y, self.seed, self.spec.evaluation.selection_folds
                )
        self.baseline_ = Baseline.fit(x @ self.coef_, cohort.y)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _predict(self, cohort: Cohort, present: dict | None) -> np.ndarray:
        x = self._design(cohort, True, present)
        risk = x @ self.coef_
        if self.name == "km":
            return pack(risk, np.repeat(self.km_[None, :], len(x), 0))
        return pack(risk, self.baseline_.survival(risk, self.horizons_))

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        return self._predict(cohort, None)

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self._predict(cohort, present)

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        x = self._design(cohort, True)
        return self._split_attr(
            x * self.coef_[None, :], transform_cohort(self.preprocessors_, cohort)[1]
        )

    def describe(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "nonzero": int(np.count_nonzero(self.coef_))}

    def to_state(self):
        meta = self._common_meta()
        _, arrays = self._pre_state()
        arrays["prior"] = np.asarray(self.prior_, dtype=float)
        arrays["coef"] = np.asarray(self.coef_, dtype=float)
        arrays["baseline_times"] = self.baseline_.times
        arrays["baseline_cumhaz"] = self.baseline_.cumhaz
        if self.name == "km":
            arrays["km"] = np.asarray(self.km_, dtype=float)
        meta["model"] = {"alpha": self.alpha_, "horizons": self.horizons_}
        return meta, arrays, {}

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> CoxLinear:
        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        c.coef_ = np.asarray(arrays["coef"], dtype=float)
        c.baseline_ = Baseline(arrays["baseline_times"], arrays["baseline_cumhaz"])
        c.alpha_ = meta["model"].get("alpha")
        c.horizons_ = [float(h) for h in meta["model"]["horizons"]]
        if c.name == "km":
            c.km_ = np.asarray(arrays["km"], dtype=float)
            if c.km_.shape != (len(c.horizons_),):
                raise ValueError("km: the curve does not match the horizons")
        return c
