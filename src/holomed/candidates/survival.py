"""Classical survival learners as candidates (scikit-survival), on the same preprocessed
features as every other family (absent modality = its training mean, 0 after scaling,
plus presence indicators):

- ``cox``: Cox proportional hazards with a ridge penalty (``CoxPHSurvivalAnalysis``,
  Efron's ties), the penalty chosen by CV of Harrell's C on the training patients;
- ``coxnet``: elastic-net Cox (``CoxnetSurvivalAnalysis``, l1_ratio 0.5), the penalty
  chosen along its path by the same CV: sparse, for wide modalities;
- ``xgb_cox``: gradient-boosted trees on the Cox partial likelihood (XGBoost's
  ``survival:cox``), the number of rounds chosen by XGBoost's own CV with early stopping;
  absent values left missing (handled natively);
- ``rsf``: random survival forest (scikit-survival, log-rank splits), stored as flat node
  arrays (scikit-survival itself could only pickle it) and applied with numpy, equal to
  scikit-survival's own predictions (tested). (scikit-survival's gradient-boosted
  survival model is not a candidate: ``xgb_cox`` is the boosted one.)
- ``km``: the Kaplan–Meier null model: one curve for everyone, no features. Every
  survival model should beat its integrated Brier score.

The linear Cox models are stored as coefficient arrays plus the Breslow baseline hazard
and applied with numpy; the boosted model in XGBoost's JSON format (loaded with
``Booster.load_model``, which parses numbers and runs no code). Nothing is unpickled.
Feature attributions are exact SHAP values on the log-hazard scale: ``coef * x`` for the
linear models, XGBoost's TreeSHAP (``pred_contribs``) for the boosted one.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import numpy as np

from holomed.candidate import Candidate, Param, register_candidate
from holomed.candidates.classical import FeatureDesign
from holomed.cohort import Cohort, inner_folds
from holomed.model import transform_cohort
from holomed.survival import Baseline, as_structured, kaplan_meier, pack
from holomed.threads import cores, limit_threads

RIDGE_GRID = [0.1, 1.0, 10.0, 100.0, 1000.0]


def baseline_of(arrays: dict[str, np.ndarray]) -> Baseline:
    """A candidate's Breslow baseline from its bundle arrays (no offset in older ones)."""
    offset = np.asarray(arrays.get("baseline_offset", np.zeros(1)), dtype=float).reshape(-1)
    if offset.size != 1:
        raise ValueError(f"baseline_offset holds {offset.size} values; expected 1")
    return Baseline(arrays["baseline_times"], arrays["baseline_cumhaz"], float(offset[0]))


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
        return pack(self.baseline_.centre(risk), self.baseline_.survival(risk, self.horizons_))

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
        arrays["baseline_offset"] = np.asarray([self.baseline_.offset])
        if self.name == "km":
            arrays["km"] = np.asarray(self.km_, dtype=float)
        meta["model"] = {"alpha": self.alpha_, "horizons": self.horizons_}
        return meta, arrays, {}

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> CoxLinear:
        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        c.coef_ = np.asarray(arrays["coef"], dtype=float)
        c.baseline_ = baseline_of(arrays)
        c.alpha_ = meta["model"].get("alpha")
        c.horizons_ = [float(h) for h in meta["model"]["horizons"]]
        if c.name == "km":
            c.km_ = np.asarray(arrays["km"], dtype=float)
            if c.km_.shape != (len(c.horizons_),):
                raise ValueError("km: the curve does not match the horizons")
        return c


XGB_DEFAULTS: dict[str, Any] = {
    "eta": 0.05,
    "max_depth": 3,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "lambda": 1.0,
}


def _xgb_label(y: np.ndarray) -> np.ndarray:
    """XGBoost's Cox label: the time, negative when censored."""
    return np.where(y[:, 1] > 0, y[:, 0], -y[:, 0])


@register_candidate("xgb_cox")
class BoostedCox(FeatureDesign, Candidate):
    """Gradient-boosted Cox model (XGBoost) on all modalities joined."""

    family = "survival_boosted"
    complexity = 1
    tasks = ("survival",)
    attribution_method = "XGBoost TreeSHAP on the log hazard"

    def _params(self) -> dict[str, Any]:
        p = {**XGB_DEFAULTS, **{k: v for k, v in (self.params or {}).items() if k != "rounds"}}
        return {**p, "objective": "survival:cox", "seed": self.seed, "nthread": cores()}

    def fit(self, cohort: Cohort) -> BoostedCox:
        import xgboost as xgb

        if cohort.task != "survival":
            raise ValueError(f"{self.name} learns a survival task, not {cohort.task}")
        t0 = time.perf_counter()
        self._fit_common(cohort)
        self.horizons_ = list(self.spec.target.horizons)
        x = self._design(cohort, False)
        d = xgb.DMatrix(x, label=_xgb_label(cohort.y), missing=np.nan)
        params = self._params()
        rounds = (self.params or {}).get("rounds")
        with limit_threads():
            if rounds is None:  # XGBoost's CV with early stopping on the partial likelihood
                folds = inner_folds(
                    cohort.y[:, 1].astype(int),
                    max(2, self.spec.evaluation.selection_folds),
                    self.seed,
                    "binary",
                    None,
                )
                hist = xgb.cv(
                    params,
                    d,
                    num_boost_round=600,
                    folds=[(a, b) for a, b in folds],
                    early_stopping_rounds=30,
                    verbose_eval=False,
                )
                rounds = max(1, len(hist))
            self.booster_ = xgb.train(params, d, num_boost_round=int(rounds))
        self.rounds_ = int(rounds)
        risk = self._risk(x)
        self.baseline_ = Baseline.fit(risk, cohort.y)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _risk(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        with limit_threads():
            d = xgb.DMatrix(x, missing=np.nan)
            return np.asarray(self.booster_.predict(d, output_margin=True), dtype=float)

    def _predict(self, cohort: Cohort, present: dict | None) -> np.ndarray:
        risk = self._risk(self._design(cohort, False, present))
        return pack(self.baseline_.centre(risk), self.baseline_.survival(risk, self.horizons_))

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        return self._predict(cohort, None)

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self._predict(cohort, present)

    @classmethod
    def search_space(cls, spec: Any) -> dict[str, Param]:
        return {
            "eta": Param("float", 0.01, 0.3, log=True),
            "max_depth": Param("int", 1, 6),
            "min_child_weight": Param("float", 1.0, 50.0, log=True),
            "subsample": Param("float", 0.5, 1.0),
            "colsample_bytree": Param("float", 0.1, 1.0),
            "lambda": Param("float", 1e-3, 30.0, log=True),
        }

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        import xgboost as xgb

        x = self._design(cohort, False)
        with limit_threads():
            v = self.booster_.predict(xgb.DMatrix(x, missing=np.nan), pred_contribs=True)
        return self._split_attr(v[:, :-1], transform_cohort(self.preprocessors_, cohort)[1])

    def describe(self) -> dict[str, Any]:
        return {**XGB_DEFAULTS, **(self.params or {}), "rounds": self.rounds_}

    def to_state(self):
        meta = self._common_meta()
        _, arrays = self._pre_state()
        arrays["prior"] = np.asarray(self.prior_, dtype=float)
        arrays["baseline_times"] = self.baseline_.times
        arrays["baseline_cumhaz"] = self.baseline_.cumhaz
        arrays["baseline_offset"] = np.asarray([self.baseline_.offset])
        meta["model"] = {"rounds": self.rounds_, "horizons": self.horizons_}
        text = bytes(self.booster_.save_raw(raw_format="json")).decode("utf-8")
        return meta, arrays, {"xgboost": text}

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> BoostedCox:
        import xgboost as xgb

        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        text = texts["xgboost"]
        json.loads(text)  # plain JSON or a named error before XGBoost sees it
        c.booster_ = xgb.Booster()
        c.booster_.load_model(bytearray(text.encode("utf-8")))
        c.baseline_ = baseline_of(arrays)
        c.rounds_ = int(meta["model"]["rounds"])
        c.horizons_ = [float(h) for h in meta["model"]["horizons"]]
        return c


RSF_DEFAULTS = {"n_estimators": 200, "min_samples_leaf": 15, "max_features": "sqrt"}


def _leaves(x: np.ndarray, forest: dict[str, np.ndarray]) -> np.ndarray:
    """(n, trees) node index of each patient's leaf in each tree of a forest stored as
    flat arrays (``left``, ``right``, ``feature``, ``threshold`` over all trees' nodes,
    ``roots``: each tree's first node); ``x <= threshold`` goes left, as in
    scikit-learn's trees."""
    node = np.broadcast_to(forest["roots"], (len(x), len(forest["roots"]))).copy()
    rows = np.arange(len(x))[:, None]
    while True:
        inner = forest["left"][node] >= 0
        if not inner.any():
            return node
        go_left = x[rows, np.maximum(forest["feature"][node], 0)] <= forest["threshold"][node]
        nxt = np.where(go_left, forest["left"][node], forest["right"][node])
        node = np.where(inner, nxt, node)


@register_candidate("rsf")
class RandomSurvivalForest(FeatureDesign, Candidate):
    """Random survival forest (scikit-survival; log-rank splits) on all modalities joined,
    absent values at the training mean. Stored as flat node arrays: for every node its
    children, split feature and threshold, and for leaves the forest's two outputs, the
    risk score (the cumulative hazard summed over the training event times) and the
    survival probability at each horizon; prediction walks the trees with numpy and
    averages over them, as scikit-survival does. The risk score reported is the log of
    that expected number of events, centred at the training mean (module
    :class:`~holomed.survival.Baseline`'s convention), so it blends and pools with the
    Cox models' log hazards. Nothing is pickled, and the bundle holds (1 + horizons)
    numbers per node instead of whole curves."""

    family = "survival_forest"
    complexity = 1
    tasks = ("survival",)
    attribution_method = "none (forest; modality Shapley values only)"

    def fit(self, cohort: Cohort) -> RandomSurvivalForest:
        from sksurv.ensemble import RandomSurvivalForest as RSF

        if cohort.task != "survival":
            raise ValueError(f"{self.name} learns a survival task, not {cohort.task}")
        t0 = time.perf_counter()
        self._fit_common(cohort)
        self.horizons_ = list(self.spec.target.horizons)
        x = self._design(cohort, True)
        p = {**RSF_DEFAULTS, **(self.params or {})}
        m = RSF(**p, n_jobs=cores(), random_state=self.seed, low_memory=False)
        with limit_threads():
            m.fit(x, as_structured(cohort.y))
        times, event_time = np.asarray(m.unique_times_), np.asarray(m.is_event_time_)
        # the step of each horizon: the last unique time at or before it (S = 1 before)
        steps = np.searchsorted(times, self.horizons_, side="right") - 1
        left, right, feat, thr, values, roots = [], [], [], [], [], []
        offset = 0
        for tree in m.estimators_:
            t = tree.tree_
            v = np.asarray(t.value)  # (nodes, unique times, 2): cumulative hazard, survival
            surv = np.where(steps[None, :] >= 0, v[:, np.maximum(steps, 0), 1], 1.0)
            values.append(np.column_stack([v[:, event_time, 0].sum(1), surv]))
            is_leaf = t.children_left < 0
            left.append(np.where(is_leaf, -1, t.children_left + offset))
            right.append(np.where(is_leaf, -1, t.children_right + offset))
            feat.append(t.feature)
            thr.append(t.threshold)
            roots.append(offset)
            offset += t.node_count
        self.forest_ = {
            "left": np.concatenate(left).astype(np.int64),
            "right": np.concatenate(right).astype(np.int64),
            "feature": np.concatenate(feat).astype(np.int64),
            "threshold": np.concatenate(thr).astype(np.float64),
            "values": np.concatenate(values).astype(np.float64),
            "roots": np.asarray(roots, dtype=np.int64),
        }
        self.offset_ = 0.0
        self.offset_ = float(self._forest(x)[:, 0].mean())
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _forest(self, x: np.ndarray) -> np.ndarray:
        """(n, 1 + horizons): the log of the forest's expected number of events relative
        to the average training patient (a log-hazard-like risk score on the scale of
        the Cox models'), then S at each horizon."""
        out = self.forest_["values"][_leaves(x, self.forest_)].mean(1)
        out[:, 0] = np.log(np.maximum(out[:, 0], 1e-6)) - self.offset_
        return out

    def _predict(self, cohort: Cohort, present: dict | None) -> np.ndarray:
        out = self._forest(self._design(cohort, True, present))
        return pack(out[:, 0], out[:, 1:])

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        return self._predict(cohort, None)

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self._predict(cohort, present)

    @classmethod
    def search_space(cls, spec: Any) -> dict[str, Param]:
        return {
            "min_samples_leaf": Param("int", 3, 50, log=True),
            "max_features": Param("float", 0.05, 1.0),
        }

    def describe(self) -> dict[str, Any]:
        return {**RSF_DEFAULTS, **(self.params or {})}

    def to_state(self):
        meta = self._common_meta()
        _, arrays = self._pre_state()
        arrays["prior"] = np.asarray(self.prior_, dtype=float)
        arrays.update({f"forest.{k}": np.ascontiguousarray(v) for k, v in self.forest_.items()})
        meta["model"] = {"horizons": self.horizons_, "offset": self.offset_}
        return meta, arrays, {}

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> RandomSurvivalForest:
        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        c.forest_ = {k: arrays[f"forest.{k}"] for k in FOREST_KEYS}
        n, h = len(c.forest_["left"]), len(meta["model"]["horizons"])
        bad = [k for k in FOREST_KEYS[:4] if len(c.forest_[k]) != n]
        idx = np.arange(n)
        inner = c.forest_["left"] >= 0
        forward = all(  # children come after their parent: every walk ends at a leaf
            (c.forest_[k][inner] > idx[inner]).all() and (c.forest_[k][inner] < n).all()
            for k in ("left", "right")
        )
        if bad or c.forest_["values"].shape != (n, 1 + h) or not forward:
            raise ValueError(f"forest arrays of candidate {meta['name']!r} are inconsistent")
        c.horizons_ = [float(x) for x in meta["model"]["horizons"]]
        c.offset_ = float(meta["model"].get("offset", 0.0))
        return c


FOREST_KEYS = ("left", "right", "feature", "threshold", "values", "roots")
