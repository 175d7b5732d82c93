"""Classical learners as candidates, on the same preprocessed features as the networks:

- ``lr_early``: L2 logistic regression on the concatenated modalities (absent modality =
  its training mean, 0 after scaling, plus presence indicators); C chosen by stratified
  CV on the training patients (``LogisticRegressionCV``); ridge (``RidgeCV``) for
  regression. Stored as coefficient arrays and applied with numpy.
- ``lr_l1``: the same with an L1 penalty (sparse; Lasso for regression), for cohorts where
  few of many features carry signal (omics).
- ``lr_late``: one such model per modality; the mean of the probabilities of the
  modalities a patient has (the training prevalence when none).
- ``gbm``: LightGBM on the concatenated features, absent values left missing (handled
  natively). Stored in LightGBM's own text model format and loaded with
  ``lightgbm.Booster(model_str=...)``, which parses numbers and runs no code.

Feature attributions are exact SHAP values: ``coef * x`` for the linear models (the
background is the training mean, 0 after scaling) and LightGBM's own TreeSHAP
(``pred_contrib``) for boosting.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from holomed.candidate import Candidate, Param, canonical, register_candidate
from holomed.cohort import Cohort, inner_folds
from holomed.modalities import get_modality
from holomed.model import fit_preprocessors, masks_within, transform_cohort
from holomed.scoring.metrics import calibration_stats
from holomed.tasks import Task
from holomed.threads import cores, limit_threads

C_GRID = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
L1_GRID = np.logspace(-2, 1, 10).tolist()
GBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 10,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
}
# a random forest in LightGBM's ``rf`` mode (Breiman 2001: each tree on a 63 % bag of the
# patients and half the features, outputs averaged; no learning rate): deep, decorrelated
# trees whose errors differ from the boosted ones', in the same native text format
RF_DEFAULTS: dict[str, Any] = {
    "boosting_type": "rf",
    "n_estimators": 300,
    "num_leaves": 31,
    "min_child_samples": 5,
    "subsample": 0.632,
    "colsample_bytree": 0.5,
    "reg_lambda": 0.0,
}
TREES = {"gbm": GBM_DEFAULTS, "rf": RF_DEFAULTS}
# seeds of a bag of boosters: seed, seed + BAG_STRIDE, ... (apart from the seeds a
# comparison gives its fits, 0, 1, 2 ...)
BAG_STRIDE = 104_729


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _refit_intercept(z: np.ndarray, y: np.ndarray) -> float:
    """The maximum-likelihood intercept of a logistic model whose weights are fixed
    (linear predictor ``z`` without intercept): the risks then average to the training
    prevalence. liblinear's L1 solver shrinks the intercept with the weights, which
    pulls every risk toward 0.5 (on a balanced cohort it set it to exactly 0)."""
    y = np.asarray(y, dtype=float)
    b = float(np.log(max(y.mean(), 1e-6) / max(1 - y.mean(), 1e-6)) - np.mean(z))
    for _ in range(100):
        p = _sigmoid(z + b)
        step = float(np.sum(y - p) / max(np.sum(p * (1 - p)), 1e-12))
        b += float(np.clip(step, -5.0, 5.0))
        if abs(step) < 1e-10:
            break
    return b


def spread(p: np.ndarray, classes: np.ndarray | None, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities from a model's columns ``p`` over the ``classes`` it
    saw in training: a multiclass task whose training patients lack a class (a rare class
    outside an inner fold) gives that class probability 0, and every other column stays
    with its class. ``classes`` None: the columns are already the task's."""
    if classes is None or (p.shape[1] == n_classes and len(classes) == n_classes):
        return p
    out = np.zeros((len(p), n_classes))
    out[:, np.asarray(classes, dtype=int)] = p
    return out


class Linear:
    """A fitted linear model as arrays: ``coef`` (k, p), ``intercept`` (k,);
    ``kind`` binary (k = 1), multiclass (softmax over k) or regression (k = 1), or a
    constant ``prior`` (a label with one class in training)."""

    def __init__(self, kind: str, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.kind, self.coef, self.intercept = kind, np.atleast_2d(coef), np.atleast_1d(intercept)

    @classmethod
    def fit(
        cls, task: str, x: np.ndarray, y: np.ndarray, seed: int, folds: int, l1: bool = False
    ) -> Linear:
        from sklearn.linear_model import LassoCV, LogisticRegressionCV, RidgeCV
        from sklearn.model_selection import KFold, StratifiedKFold

        if task == "regression":
            if l1:
                cv = KFold(max(2, folds), shuffle=True, random_state=seed)
                m = LassoCV(cv=cv, random_state=seed, max_iter=5000).fit(x, y)
            else:
                m = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(x, y)
            return cls("regression", m.coef_[None], np.atleast_1d(m.intercept_))
        classes = np.unique(y)
        if len(classes) < 2:
            lin = cls("prior", np.zeros((1, x.shape[1])), np.array([float(classes[0])]))
            lin.classes = classes.astype(int)
            return lin
        counts = np.bincount(y.astype(int))
        if counts[counts > 0].min() < 2:  # a class seen once: no CV of C is possible
            from sklearn.linear_model import LogisticRegression

            if l1 and task == "binary":  # liblinear would shrink the intercept too
                return cls("prior", np.zeros((1, x.shape[1])), np.array([float(np.mean(y))]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=0.1, max_iter=5000).fit(x, y)
            lin = cls("binary" if len(m.classes_) == 2 else "multiclass", m.coef_, m.intercept_)
            lin.C, lin.classes = 0.1, m.classes_.astype(int)
            return lin
        k = int(max(2, min(folds, counts[counts > 0].min())))
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarnings of LogisticRegressionCV; rare folds
            if l1:  # sparse: most omics features carry no signal
                solver = "liblinear" if len(classes) == 2 else "saga"
                m = LogisticRegressionCV(
                    Cs=L1_GRID,
                    cv=cv,
                    scoring="neg_log_loss",
                    max_iter=5000,
                    penalty="l1",
                    solver=solver,
                    random_state=seed,
                )
            else:
                m = LogisticRegressionCV(Cs=C_GRID, cv=cv, scoring="neg_log_loss", max_iter=5000)
            m.fit(x, y)
        kind = "binary" if len(m.classes_) == 2 else "multiclass"
        intercept = m.intercept_
        if l1 and kind == "binary":  # liblinear penalises the intercept like a weight
            positive = (y == m.classes_[1]).astype(float)  # labels may be {0, 2}
            intercept = np.array([_refit_intercept(x @ m.coef_[0], positive)])
        lin = cls(kind, m.coef_, intercept)
        lin.C = float(np.atleast_1d(m.C_)[0])
        lin.classes = m.classes_.astype(int)
        return lin

    def decision(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef.T + self.intercept

    def proba_positive(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "prior":
            return np.full(len(x), self.intercept[0])
        return _sigmoid(self.decision(x)[:, 0])

    def predict(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        if self.kind == "regression":
            return self.decision(x)[:, 0]
        classes = getattr(self, "classes", None)
        if self.kind == "prior" and n_classes > 2 and classes is not None:
            return spread(np.ones((len(x), 1)), classes[:1], n_classes)  # one class seen
        if self.kind in ("binary", "prior"):
            p = self.proba_positive(x)
            two = np.stack([1 - p, p], 1)
            return two if n_classes <= 2 else spread(two, classes, n_classes)
        z = self.decision(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return spread(z / z.sum(1, keepdims=True), classes, n_classes)

    def class_coef(self, cls_index: int = 0, multiclass: bool = False) -> np.ndarray:
        """The coefficients whose terms explain class ``cls_index`` of the task. In a
        multiclass task the model's rows are the classes its training patients had: an
        absent class gets zeros, and a model that saw two classes (a binary one) explains
        the second with its coefficients and the first with their negation."""
        classes = getattr(self, "classes", None)
        if not multiclass or classes is None:
            return self.coef[min(cls_index, len(self.coef) - 1)]
        seen = [int(c) for c in classes]
        if self.kind == "multiclass" and cls_index in seen:
            return self.coef[seen.index(cls_index)]
        if self.kind == "binary" and len(seen) == 2 and cls_index in seen:
            return self.coef[0] if cls_index == seen[1] else -self.coef[0]
        return np.zeros(self.coef.shape[1])

    def shap(self, x: np.ndarray, cls_index: int = 0, multiclass: bool = False) -> np.ndarray:
        """Exact linear SHAP with the training mean (0) as background: coef * x."""
        return x * self.class_coef(cls_index, multiclass)[None, :]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"kind": self.kind, "C": getattr(self, "C", None)}
        arrays = {"coef": self.coef, "intercept": self.intercept}
        if hasattr(self, "classes"):
            arrays["classes"] = np.asarray(self.classes, dtype=np.int64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Linear:
        lin = cls(meta["kind"], arrays["coef"], arrays["intercept"])
        if lin.coef.ndim != 2 or lin.intercept.shape != (len(lin.coef),):
            raise ValueError(
                f"linear model: coef {lin.coef.shape} and intercept {lin.intercept.shape} "
                "do not match"
            )
        if not (np.isfinite(lin.coef).all() and np.isfinite(lin.intercept).all()):
            raise ValueError("linear model: non-finite coefficients")
        if "classes" in arrays:
            lin.classes = arrays["classes"].astype(int)
        return lin


def _check_texts(name: str, text: str) -> str:
    if not text.startswith("tree\n"):
        raise ValueError(f"{name}: not a LightGBM text model")
    return text


class Boosted:
    """LightGBM boosters as text: one for binary / multiclass / regression, one per label
    for multilabel (a one-class label keeps its training prevalence). ``classes``: for
    multiclass, the classes the training patients had (the booster's columns). With
    ``bags`` > 1 each is a bag of boosters fitted with different seeds (row and column
    sampling differ), whose raw scores (log-odds) are averaged before the link: on
    PhysioNet 2012's training patients, five boosters gained AUROC +0.0032 ± 0.0008 over
    one in 15 inner folds (BENCHMARKS)."""

    def __init__(
        self,
        task: str,
        boosters: list[list[Any] | None],
        priors: list[float | None],
        classes: list[int] | None = None,
    ) -> None:
        self.task, self.boosters, self.priors = task, boosters, priors
        self.classes = classes

    @classmethod
    def fit(
        cls,
        task: str,
        x: np.ndarray,
        y: np.ndarray,
        seed: int,
        params: dict,
        defaults: dict[str, Any] = GBM_DEFAULTS,
        bags: int = 1,
    ) -> Boosted:
        import lightgbm as lgb

        def kw(k: int) -> dict[str, Any]:
            return {
                **defaults,
                **params,
                "random_state": seed + BAG_STRIDE * k,
                "n_jobs": cores(),
                "deterministic": True,
                "force_row_wise": True,
                "subsample_freq": 1,
                "verbose": -1,
            }

        if task == "regression":
            fitted = [lgb.LGBMRegressor(**kw(k)).fit(x, y).booster_ for k in range(bags)]
            return cls(task, [fitted], [None])
        cols = [y] if task != "multilabel" else [y[:, j] for j in range(y.shape[1])]
        boosters: list[list[Any] | None] = []
        priors: list[float | None] = []
        for col in cols:
            if len(np.unique(col)) < 2:
                boosters.append(None)
                priors.append(float(np.mean(col)))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                boosters.append(
                    [
                        lgb.LGBMClassifier(**kw(k)).fit(x, col.astype(int)).booster_
                        for k in range(bags)
                    ]
                )
            priors.append(None)
        classes = [int(c) for c in np.unique(y)] if task == "multiclass" else None
        return cls(task, boosters, priors, classes)

    @staticmethod
    def _forest(b: Any) -> bool:
        params = getattr(b, "params", None) or {}
        return "rf" in (params.get("boosting_type"), params.get("boosting"))

    @classmethod
    def _raw(cls, b: Any, x: np.ndarray) -> np.ndarray:
        """A booster's score before the link; a forest's is the mean of its trees, where
        LightGBM's ``raw_score`` sums them (its predictions average them)."""
        raw = np.asarray(b.predict(x, raw_score=True))
        return raw / max(b.current_iteration(), 1) if cls._forest(b) else raw

    def _bag_predict(self, bag: list[Any], x: np.ndarray) -> np.ndarray:
        """One column's prediction from its bag: classification averages the boosters'
        log-odds (softmax for multiclass), regression their predictions (on the response
        scale, whatever the objective's link)."""
        if len(bag) == 1:
            return bag[0].predict(x)
        if self.task == "regression":
            return np.mean([b.predict(x) for b in bag], axis=0)
        raw = np.mean([self._raw(b, x) for b in bag], axis=0)
        if raw.ndim == 2:  # multiclass: softmax of the averaged scores
            z = np.exp(raw - raw.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True)
        return _sigmoid(raw)

    def predict(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        outs = []
        for bag, prior in zip(self.boosters, self.priors, strict=True):
            outs.append(np.full(len(x), prior) if bag is None else self._bag_predict(bag, x))
        if self.task == "regression":
            return outs[0]
        if self.task == "multilabel":
            return np.stack(outs, 1)
        p = outs[0]
        if self.task == "multiclass" and self.priors[0] is not None:
            seen = self.classes or [int(round(float(self.priors[0] or 0)))]  # an old bundle
            return spread(np.ones((len(x), 1)), seen[:1], n_classes)
        if p.ndim == 1:
            p = np.stack([1 - p, p], 1)
        return spread(p, self.classes, n_classes) if self.task == "multiclass" else p

    def shap(self, x: np.ndarray, cls_index: int = 0) -> np.ndarray:
        """TreeSHAP (LightGBM ``pred_contrib``), on the log-odds scale, without the bias
        column, averaged over a bag (exact for its averaged scores); for multiclass, the
        contributions to class ``cls_index``."""
        bag = next((b for b in self.boosters if b is not None), None)
        if bag is None:
            return np.zeros_like(x)
        c = np.mean([np.asarray(b.predict(x, pred_contrib=True)) for b in bag], axis=0)
        if self._forest(bag[0]):
            # a forest averages its trees, but LightGBM's pred_contrib sums them
            # (lightgbm-org/LightGBM#6217): scale back to the averaged prediction
            c = c / max(bag[0].current_iteration(), 1)
        p = x.shape[1]
        if self.task == "multiclass" and self.classes is not None and c.shape[1] == p + 1:
            # a binary booster in a multiclass task (two classes seen): it explains the
            # second class; the first is its negation, any other class nothing
            if cls_index not in self.classes[:2]:
                return np.zeros_like(x)
            return c[:, :p] if cls_index == self.classes[1] else -c[:, :p]
        if c.shape[1] > p + 1 and self.classes is not None:  # blocks: the classes seen
            hit = [j for j, k in enumerate(self.classes) if k == cls_index]
            if not hit:
                return np.zeros_like(x)
            cls_index = hit[0]
        if c.shape[1] > p + 1:  # multiclass: K blocks of p + 1
            c = c[:, cls_index * (p + 1) : (cls_index + 1) * (p + 1)]
        return c[:, :p]

    @staticmethod
    def _text_name(j: int, k: int) -> str:
        return f"lgbm{j}.txt" if k == 0 else f"lgbm{j}.bag{k}.txt"

    def state(self) -> tuple[dict[str, Any], dict[str, str]]:
        texts = {
            self._text_name(j, k): b.model_to_string()
            for j, bag in enumerate(self.boosters)
            if bag is not None
            for k, b in enumerate(bag)
        }
        bags = max((len(b) for b in self.boosters if b is not None), default=1)
        meta = {"task": self.task, "priors": self.priors, "classes": self.classes, "bags": bags}
        return meta, texts

    @classmethod
    def from_state(cls, meta: dict[str, Any], texts: dict[str, str]) -> Boosted:
        import lightgbm as lgb

        bags = int(meta.get("bags", 1))
        if bags < 1:
            raise ValueError(f"bags: {bags}; expected >= 1")
        boosters: list[list[Any] | None] = []
        for j, prior in enumerate(meta["priors"]):
            if prior is not None:
                boosters.append(None)
                continue
            bag = []
            for k in range(bags):
                name = cls._text_name(j, k)
                if name not in texts:
                    raise ValueError(f"models/{name}: missing from the bundle")
                bag.append(lgb.Booster(model_str=_check_texts(name, texts[name])))
            boosters.append(bag)
        return cls(meta["task"], boosters, meta["priors"], meta.get("classes"))


def fit_linear(
    task: str, x: np.ndarray, y: np.ndarray, seed: int, folds: int, l1: bool = False
) -> Any:
    if task == "multilabel":
        return [Linear.fit("binary", x, y[:, j], seed, folds, l1) for j in range(y.shape[1])]
    return Linear.fit(task, x, y, seed, folds, l1)


def predict_linear(lin: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    if isinstance(lin, list):
        return np.stack([m.proba_positive(x) for m in lin], 1)
    return lin.predict(x, n_classes)


class FeatureDesign:
    """What the classical families share: preprocessors fitted on training patients and
    flat features per modality (``flat_features`` of each kind)."""

    def _fit_common(self, cohort: Cohort) -> None:
        if cohort.y is None:
            raise ValueError("fit needs a cohort with labels")
        names = self.modalities or self.spec.modality_names
        mspecs = [m for m in self.spec.modalities if m.name in names]
        self.preprocessors_ = fit_preprocessors(mspecs, cohort, self.seed)
        n_classes = len(cohort.classes or []) or 1
        self.task_ = Task.fit(cohort.task, cohort.y, n_classes, False)
        self.classes_ = cohort.classes
        if cohort.task in ("binary", "multiclass"):
            self.prior_ = np.bincount(cohort.y.astype(int), minlength=n_classes) / len(cohort.y)
        elif cohort.task == "multilabel":
            self.prior_ = cohort.y.mean(0)
        elif cohort.task == "survival":  # the event rate
            self.prior_ = np.array([float(np.mean(cohort.y[:, 1]))])
        else:
            self.prior_ = np.array([float(np.mean(cohort.y))])

    def predict_both(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
        p = self.predict_proba(cohort)  # the model's own probabilities: no recalibration
        return p, p

    @property
    def method(self) -> str:  # the historical name of the learner
        return self.name

    @property
    def n_classes_(self) -> int:
        return self.task_.n_classes

    def _flat(self, x: dict[str, np.ndarray], name: str) -> np.ndarray:
        return self.preprocessors_[name].flat_features(x[name])[0].astype(float)

    def _blocks(
        self, cohort: Cohort, fill: bool, present: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Flat features per modality (absent rows NaN, or with ``fill`` the training
        mean, 0, as are undefined statistics) and the presence masks used."""
        x, pres = transform_cohort(self.preprocessors_, cohort)
        present = pres if present is None else masks_within(present, pres)
        blocks = {}
        for n in self.preprocessors_:
            v = self._flat(x, n).copy()
            v[~present[n]] = np.nan
            if fill:
                v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
            blocks[n] = v
        return blocks, present

    def _design(self, cohort: Cohort, fill: bool, present: dict | None = None) -> np.ndarray:
        """The modalities' blocks side by side, then one presence indicator each."""
        blocks, present = self._blocks(cohort, fill, present)
        pres = np.stack([present[n] for n in self.preprocessors_], 1).astype(float)
        return np.concatenate([*blocks.values(), pres], 1)

    def feature_names(self) -> dict[str, list[str]]:
        out = {}
        for n, pre in self.preprocessors_.items():
            probe = np.zeros((1, *pre.out_shape), np.float32)
            out[n] = pre.flat_features(probe)[1]
        return out

    def _split_attr(self, v: np.ndarray, present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for name, names in self.feature_names().items():
            a = v[:, start : start + len(names)].astype(float)
            a[~present[name]] = np.nan
            out[name] = a
            start += len(names)
        return out

    def _pre_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = {}, {}
        for name, pre in self.preprocessors_.items():
            m, a = pre.get_state()
            meta[name] = {"kind": pre.kind, "meta": m}
            arrays.update({f"pre.{name}.{k}": np.ascontiguousarray(v) for k, v in a.items()})
        return meta, arrays

    def _common_meta(self) -> dict[str, Any]:
        pre_meta, _ = self._pre_state()
        return {
            "family": self.family,
            "name": self.name,
            "seed": self.seed,
            "modalities": list(self.preprocessors_),
            "task": self.task_.to_json(),
            "classes": self.classes_,
            "preprocessors": pre_meta,
            "params": self.params,
        }

    def _restore_common(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.preprocessors_ = {}
        for name in meta["modalities"]:
            ps = meta["preprocessors"][name]
            prefix = f"pre.{name}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            cls = get_modality(ps["kind"]).preprocessor
            self.preprocessors_[name] = cls.from_state(ps["meta"], sub)
        self.task_ = Task.from_json(meta["task"])
        self.classes_ = meta["classes"]
        self.prior_ = np.asarray(arrays["prior"], dtype=float)


@register_candidate("lr_early", "lr_l1")
class Classical(FeatureDesign, Candidate):
    """Logistic regression (``lr_early``: L2; ``lr_l1``: L1, sparse), LightGBM (``gbm``,
    gradient boosting) or a LightGBM random forest (``rf``) on all modalities joined."""

    family = "classical"
    complexity = 0
    tasks = ("binary", "multiclass", "multilabel", "regression")

    @classmethod
    def complexity_of(cls, name: str) -> int:
        return 1 if canonical(name) in TREES else 0

    @property
    def trees(self) -> bool:
        return self.name in TREES

    def fit(self, cohort: Cohort) -> Classical:
        t0 = time.perf_counter()
        _known_params(self.name, self.params, self.trees)
        self._fit_common(cohort)
        folds = self.spec.evaluation.selection_folds
        with limit_threads():
            if self.trees:
                self.model_ = Boosted.fit(
                    cohort.task,
                    self._design(cohort, False),
                    cohort.y,
                    self.seed,
                    self.params or {},
                    TREES[self.name],
                    bags=self.spec.evaluation.tree_bags,
                )
            else:
                x = self._design(cohort, True)
                l1 = self.name == "lr_l1"
                self.model_ = fit_linear(cohort.task, x, cohort.y, self.seed, folds, l1)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        return self._predict(cohort, None)

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self._predict(cohort, present)

    def _predict(self, cohort: Cohort, present: dict | None) -> np.ndarray:
        x = self._design(cohort, not self.trees, present)
        with limit_threads():
            if self.trees:
                return self.model_.predict(x, self.n_classes_)
            return predict_linear(self.model_, x, self.n_classes_)

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        x = self._design(cohort, not self.trees)
        out = self._predict(cohort, None)
        cls_index = int(np.bincount(out.argmax(1)).argmax()) if out.ndim == 2 else 0
        if self.task_name == "binary":
            cls_index = 0
        model = self.model_[0] if isinstance(self.model_, list) else self.model_
        if self.trees:
            v = model.shap(x, cls_index)
        else:
            v = model.shap(x, cls_index, self.task_name == "multiclass")
        return self._split_attr(v, transform_cohort(self.preprocessors_, cohort)[1])

    def describe(self) -> dict[str, Any]:
        if self.trees:
            bags = (
                {"bags": self.spec.evaluation.tree_bags}
                if self.spec.evaluation.tree_bags > 1
                else {}
            )
            return {**TREES[self.name], **(self.params or {}), **bags}
        m = self.model_[0] if isinstance(self.model_, list) else self.model_
        return {"C": getattr(m, "C", None)}

    def to_state(self):
        meta = self._common_meta()
        _, arrays = self._pre_state()
        arrays["prior"] = np.asarray(self.prior_, dtype=float)
        texts: dict[str, str] = {}
        if self.trees:
            meta["model"], texts = self.model_.state()
        else:
            models = self.model_ if isinstance(self.model_, list) else [self.model_]
            meta["model"] = {"per_label": isinstance(self.model_, list), "linear": []}
            for j, m in enumerate(models):
                mm, aa = m.state()
                meta["model"]["linear"].append(mm)
                arrays.update({f"lin{j}.{k}": v for k, v in aa.items()})
        return meta, arrays, texts

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> Classical:
        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        if c.trees:
            c.model_ = Boosted.from_state(meta["model"], texts)
        else:
            lins = []
            for j, mm in enumerate(meta["model"]["linear"]):
                sub = {
                    k[len(f"lin{j}.") :]: v for k, v in arrays.items() if k.startswith(f"lin{j}.")
                }
                lins.append(Linear.from_state(mm, sub))
            c.model_ = lins if meta["model"]["per_label"] else lins[0]
        return c


def _known_params(name: str, params: dict[str, Any] | None, trees: bool) -> None:
    """A parameter a learner would ignore is an error, not a silent default: the linear
    learners take none (their penalty is chosen by internal CV), the tree learners
    LightGBM's own."""
    if not params:
        return
    if not trees:
        raise ValueError(
            f"{name}: takes no parameters (its penalty is chosen by internal CV); got "
            f"{sorted(params)}"
        )
    import lightgbm as lgb

    unknown = sorted(set(params) - set(lgb.LGBMClassifier().get_params()))
    if unknown:
        raise ValueError(f"{name}: {unknown} are not LightGBM parameters")


@register_candidate("gbm")
class Trees(Classical):
    """The tree learners of :class:`Classical` (``gbm``, and ``rf`` below): their
    hyper-parameters can be searched (the linear models choose their penalty by internal
    CV instead)."""

    @classmethod
    def search_space(cls, spec: Any) -> dict[str, Param]:
        return {
            "n_estimators": Param("int", 50, 600, log=True),
            "learning_rate": Param("float", 0.01, 0.2, log=True),
            "num_leaves": Param("int", 4, 48, log=True),
            "min_child_samples": Param("int", 3, 40, log=True),
            "colsample_bytree": Param("float", 0.1, 1.0),
            "subsample": Param("float", 0.5, 1.0),
            "reg_lambda": Param("float", 1e-3, 30.0, log=True),
        }


@register_candidate("rf")
class Forest(Trees):
    """``rf``: a random forest needs a bag (``subsample`` < 1) or a feature subset
    (``colsample_bytree`` < 1) per tree, and has no learning rate to search."""

    @classmethod
    def search_space(cls, spec: Any) -> dict[str, Param]:
        return {
            "n_estimators": Param("int", 100, 800, log=True),
            "num_leaves": Param("int", 8, 64, log=True),
            "min_child_samples": Param("int", 2, 30, log=True),
            "colsample_bytree": Param("float", 0.1, 0.9),
            "subsample": Param("float", 0.4, 0.9),
        }

    def fit(self, cohort: Cohort) -> Forest:
        p = {**RF_DEFAULTS, **(self.params or {})}
        if p["subsample"] >= 1 and p["colsample_bytree"] >= 1:
            raise ValueError(
                "rf: subsample and colsample_bytree are both 1, so every tree would be the "
                "same; set either below 1"
            )
        return super().fit(cohort)


@register_candidate("lr_late")
class LateLinear(FeatureDesign, Candidate):
    """One logistic regression per modality; the mean of the present ones' probabilities.
    Binary: the mean is then recalibrated, ``logit p' = a + b logit(mean)``, with ``a``
    and ``b`` fitted on cross-fitted means of the training patients (each from models
    that did not see the patient; ``params={"calibrate": False}`` to skip). A mean of
    probabilities is under-confident where the modalities agree: on ROSMAP it had ECE
    0.20 where the single learners had 0.07-0.10 (BENCHMARKS). A monotone map: the
    ranking (AUROC) is unchanged."""

    family = "classical_late"
    complexity = 0
    tasks = ("binary", "multiclass", "multilabel", "regression")

    def _fit_models(
        self,
        task: str,
        x: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        y: np.ndarray,
        rows: np.ndarray,
    ) -> dict[str, Any]:
        """Each modality's learner on the patients ``rows`` that have it."""
        folds = self.spec.evaluation.selection_folds
        models: dict[str, Any] = {}
        for n in self.preprocessors_:
            use = rows[present[n][rows]]
            if not len(use) or (task in ("binary", "multiclass") and len(np.unique(y[use])) < 2):
                continue  # too few patients with this modality to learn from
            f = np.nan_to_num(self._flat(x, n)[use])
            models[n] = fit_linear(task, f, y[use], self.seed, folds)
        return models

    def _mean(
        self,
        models: dict[str, Any],
        x: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        prior: np.ndarray,
        n: int,
    ) -> np.ndarray:
        """The mean of the present modalities' outputs (``prior`` where none is)."""
        reg = self.task_name == "regression"
        k = self.n_classes_
        total = np.zeros(n) if reg else np.zeros((n, k))
        count = np.zeros(n)
        for name, m in models.items():
            rows = present[name]
            if rows.any():
                f = np.nan_to_num(self._flat(x, name)[rows])
                total[rows] += predict_linear(m, f, k)
                count[rows] += 1
        none = count == 0
        count[none] = 1
        out = total / (count if reg else count[:, None])
        if none.any():
            out[none] = prior[0] if reg else prior
        return out

    def fit(self, cohort: Cohort) -> LateLinear:
        t0 = time.perf_counter()
        params = dict(self.params or {})
        unknown = sorted(set(params) - {"calibrate"})
        if unknown:
            raise ValueError(f"lr_late: takes only 'calibrate' (true/false); got {unknown}")
        self._fit_common(cohort)
        x, present = transform_cohort(self.preprocessors_, cohort)
        y, everyone = cohort.y, np.arange(len(cohort))
        self.recalibration_: list[float] | None = None
        with limit_threads():
            self.models_ = self._fit_models(cohort.task, x, present, y, everyone)
            if cohort.task == "binary" and params.get("calibrate", True):
                self.recalibration_ = self._cross_fit(cohort, x, present)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _cross_fit(
        self, cohort: Cohort, x: dict[str, np.ndarray], present: dict[str, np.ndarray]
    ) -> list[float] | None:
        """``[a, b]`` of the recalibration, from out-of-fold means over the spec's
        ``selection_folds``; None when it cannot be fitted or would reverse the ranking."""
        y = cohort.y
        k = self.spec.evaluation.selection_folds
        if np.bincount(y.astype(int), minlength=2).min() < k:
            return None
        oof = np.full(len(y), np.nan)
        for a, b in inner_folds(y, k, self.seed, cohort.task, cohort.groups):
            models = self._fit_models(cohort.task, x, present, y, a)
            prior = np.bincount(y[a].astype(int), minlength=2) / len(a)
            sub_x = {n: v[b] for n, v in x.items()}
            sub_p = {n: v[b] for n, v in present.items()}
            oof[b] = self._mean(models, sub_x, sub_p, prior, len(b))[:, 1]
        stats = calibration_stats(y, oof)
        a, b = stats["calibration_intercept"], stats["calibration_slope"]
        if not (np.isfinite(a) and np.isfinite(b)) or b <= 0:
            return None
        return [float(a), float(b)]

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        plain = self._plain(cohort, None)
        return self._recalibrated(plain) if calibrated else plain

    def predict_both(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
        """Recalibrated and plain means (for the calibration report's before/after)."""
        plain = self._plain(cohort, None)
        return self._recalibrated(plain), plain

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self._recalibrated(self._plain(cohort, present))

    def _plain(self, cohort: Cohort, present: dict[str, np.ndarray] | None) -> np.ndarray:
        """The mean before recalibration; ``present`` None: the cohort's own masks."""
        x, known = transform_cohort(self.preprocessors_, cohort)
        present = known if present is None else masks_within(present, known)
        return self._mean(self.models_, x, present, self.prior_, len(cohort))

    def _recalibrated(self, out: np.ndarray) -> np.ndarray:
        rec = getattr(self, "recalibration_", None)
        if rec is None:
            return out
        p = np.clip(out[:, 1], 1e-9, 1 - 1e-9)
        q = _sigmoid(rec[0] + rec[1] * np.log(p / (1 - p)))
        return np.stack([1 - q, q], 1)

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        x, present = transform_cohort(self.preprocessors_, cohort)
        multiclass = self.task_name == "multiclass"
        cls_index = 0  # multiclass: the class predicted most often, as lr_early
        if multiclass:
            cls_index = int(np.bincount(self.predict_proba(cohort).argmax(1)).argmax())
        out = {}
        for name in self.preprocessors_:
            f = np.nan_to_num(self._flat(x, name))
            m = self.models_.get(name)
            if m is None:
                v = np.zeros_like(f)
            else:
                v = (m[0] if isinstance(m, list) else m).shap(f, cls_index, multiclass)
            v[~present[name]] = np.nan
            out[name] = v
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            n: getattr(m[0] if isinstance(m, list) else m, "C", None)
            for n, m in self.models_.items()
        }
        rec = getattr(self, "recalibration_", None)
        if rec is not None:
            out["recalibration"] = {"intercept": rec[0], "slope": rec[1]}
        return out

    def to_state(self):
        meta = self._common_meta()
        _, arrays = self._pre_state()
        arrays["prior"] = np.asarray(self.prior_, dtype=float)
        meta["models"] = {}
        meta["recalibration"] = getattr(self, "recalibration_", None)
        for n, m in self.models_.items():
            models = m if isinstance(m, list) else [m]
            meta["models"][n] = {"per_label": isinstance(m, list), "linear": []}
            for j, lin in enumerate(models):
                mm, aa = lin.state()
                meta["models"][n]["linear"].append(mm)
                arrays.update({f"lin.{n}.{j}.{k}": v for k, v in aa.items()})
        return meta, arrays, {}

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> LateLinear:
        c = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        c._restore_common(meta, arrays)
        c.models_ = {}
        for n, d in meta["models"].items():
            lins = []
            for j, mm in enumerate(d["linear"]):
                p = f"lin.{n}.{j}."
                lins.append(
                    Linear.from_state(
                        mm, {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}
                    )
                )
            c.models_[n] = lins if d["per_label"] else lins[0]
        rec = meta.get("recalibration")  # absent in bundles saved before it existed
        if rec is not None:
            rec = [float(v) for v in rec]
            if len(rec) != 2 or not np.isfinite(rec).all() or rec[1] <= 0:
                raise ValueError(f"lr_late: recalibration {rec}; expected [a, b > 0]")
        c.recalibration_ = rec
        return c
