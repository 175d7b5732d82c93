"""The candidate contract: every model the harness evaluates, selects, saves and serves.

A candidate is one family's answer to "predict this target from these modalities":
a neural fusion (:class:`holomed.model.Model`), a classical learner (logistic
regression, LightGBM), a stack of per-modality learners or an ensemble of other
candidates. They share one life cycle, so that selection, explanation, calibration,
bundles and serving never ask which family won:

- ``__init__(spec, name, seed=0, modalities=None, params=None)`` stores and does nothing;
- ``fit(cohort) -> self`` on labelled patients (preprocessors fitted on them only);
- ``predict_proba(cohort)`` for any pattern of missing modalities: ``(n, K)``
  probabilities, ``(n,)`` for regression; never NaN;
- ``predict_present(cohort, present)``: the same with modalities masked per patient
  (modality Shapley values, robustness curves);
- ``to_state() -> (meta, arrays, texts)`` and ``from_state(spec, meta, arrays, texts)``:
  JSON, numeric arrays (safetensors) and text model files (LightGBM's own format); no
  pickle anywhere;
- ``search_space(spec)``: what a hyper-parameter search may vary (:class:`Param`);
- ``feature_attributions(cohort)``: ``{modality: (n, features)}`` where the family has
  them (linear and tree SHAP, integrated gradients), else ``None``.

``fit`` must set the fitted attributes the shared code reads: ``task_``
(:class:`holomed.tasks.Task`), ``classes_``, ``preprocessors_`` (``{modality:
Preprocessor}``, what the bundle's card and ``predict`` describe) and ``fit_seconds_``;
``to_state`` must put ``task`` and ``classes`` in ``meta``. Until ``fit`` has run, any
fitted attribute raises :class:`~holomed.errors.NotFittedError`.

Candidates are found by name in one registry (:func:`register_candidate`,
:func:`make_candidate`); neural fusions are registered under their fusion names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from holomed.bundle import save_bundle
from holomed.errors import CohortError, NotFittedError, RegistryError
from holomed.explain.features import top_features
from holomed.explain.modality import modality_shapley
from holomed.fusion import fusion_names
from holomed.registry import builtin
from holomed.scoring.metrics import compute_metrics
from holomed.scoring.survival import metric_context
from holomed.spec import Spec

State = tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]


@dataclass(frozen=True)
class Param:
    """One searchable hyper-parameter: ``float`` / ``int`` in ``[low, high]`` (``log``
    scale optional) or ``categorical`` over ``choices``."""

    kind: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw a value from an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


def require_spec(spec: Any) -> None:
    """A candidate is built from a :class:`~holomed.spec.Spec`, not a path or a dict."""
    if not isinstance(spec, Spec):
        raise TypeError(
            f"a candidate takes a Spec (holomed.load_spec(path)); got {type(spec).__name__}"
        )


def _label(c: Any) -> str:
    d = c.__dict__
    return str(d.get("name") or d.get("fusion_name") or type(c).__name__)


class Candidate:
    """Base class of every candidate family (see module doc)."""

    family: ClassVar[str] = "abstract"
    # how complex the family is, for the one-standard-error selection rule (lower is
    # simpler): linear 0, boosted trees 1, stacks 2, networks 3, ensembles 4
    complexity: ClassVar[int] = 3
    # the tasks this family can learn
    tasks: ClassVar[tuple[str, ...]] = (
        "binary",
        "multiclass",
        "multilabel",
        "regression",
        "survival",
    )

    def __getattr__(self, attr: str) -> Any:
        # only for attributes not found: a fitted one (``name_``) means fit() never ran
        if attr.endswith("_") and not attr.startswith("__"):
            raise NotFittedError(
                f"candidate {_label(self)!r} is not fitted "
                f"(no {attr}); call fit() first, or load a saved bundle"
            )
        prop = getattr(type(self), attr, None)
        if isinstance(prop, property) and prop.fget is not None:
            return prop.fget(self)  # its own error (not fitted), not a bare AttributeError
        raise AttributeError(attr)

    @classmethod
    def complexity_of(cls, name: str) -> int:
        """The complexity rank of the candidate ``name`` of this class."""
        return cls.complexity

    def __init__(
        self,
        spec: Spec,
        name: str,
        seed: int = 0,
        modalities: list[str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        require_spec(spec)
        self.spec = spec
        self.name = name
        self.seed = seed
        self.modalities = modalities
        self.params = params

    # -- the contract ------------------------------------------------------------------
    def fit(self, cohort: Any) -> Candidate:
        raise NotImplementedError

    def predict_proba(self, cohort: Any, calibrated: bool = True) -> np.ndarray:
        raise NotImplementedError

    def predict_present(self, cohort: Any, present: dict[str, np.ndarray]) -> np.ndarray:
        return self.predict_proba(cohort.with_presence(present))

    def predict_both(self, cohort: Any) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated, uncalibrated) outputs; families with a recalibration step
        override this to share one pass over the inputs."""
        return self.predict_proba(cohort), self.predict_proba(cohort, calibrated=False)

    def predictor(self, cohort: Any):
        """``f(present) -> outputs`` for repeated masking of one cohort (families that
        can transform the inputs once override this)."""
        return lambda present: self.predict_present(cohort, present)

    def to_state(self) -> State:
        raise NotImplementedError

    @classmethod
    def from_state(
        cls, spec: Spec, meta: dict[str, Any], arrays: dict[str, np.ndarray], texts: dict[str, str]
    ) -> Candidate:
        raise NotImplementedError

    @classmethod
    def search_space(cls, spec: Spec) -> dict[str, Param]:
        return {}

    def feature_attributions(self, cohort: Any) -> dict[str, np.ndarray] | None:
        return None

    def feature_names(self) -> dict[str, list[str]]:
        return {}

    def explain(self, cohort: Any, top_k: int = 15) -> dict[str, Any]:
        """Why these predictions, for any family: per-patient and global modality Shapley
        values with leave-one-out deltas, and the top features per modality from the
        family's own attributions (``features_method`` says which)."""
        attr = self.feature_attributions(cohort)
        return {
            "contributions": modality_shapley(self, cohort),
            "attention": None,
            "features": top_features(attr, self.feature_names(), top_k) if attr else {},
            "features_method": self.attribution_method,
        }

    attribution_method: ClassVar[str] = "SHAP (exact linear / LightGBM TreeSHAP)"

    def describe(self) -> dict[str, Any]:
        return dict(self.params or {})

    # -- shared helpers ----------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self.task_.name

    @property
    def modality_names_(self) -> list[str]:
        return list(self.preprocessors_)

    def predict(self, cohort: Any) -> np.ndarray:
        out = self.predict_proba(cohort)
        if self.task_name == "multilabel":
            return (out >= 0.5).astype(int)
        return out if self.task_name == "regression" else out.argmax(1)

    def evaluate(self, cohort: Any) -> dict[str, float]:
        if cohort.y is None:
            raise CohortError("evaluate needs a cohort with labels")
        if len(cohort) == 0:
            raise CohortError("evaluate: the cohort has no patient")
        mine, theirs = getattr(self, "classes_", None), getattr(cohort, "classes", None)
        if mine and theirs and [str(c) for c in mine] != [str(c) for c in theirs]:
            raise CohortError(
                f"the cohort's classes {list(theirs)} are not the model's {list(mine)} (in "
                "this order): its labels would be read as other classes"
            )
        y = np.asarray(cohort.y, dtype=float)
        if self.task_name != "survival" and not np.isfinite(y).all():
            raise CohortError(f"evaluate: {int((~np.isfinite(y)).sum())} label(s) are missing")
        # survival: the censoring distribution of the evaluated patients themselves
        ctx = metric_context(self.task_name, self.spec.target.horizons, None)
        return compute_metrics(self.task_name, cohort.y, self.predict_proba(cohort), **ctx)

    def save(self, path: Any, card: dict[str, Any] | None = None) -> Any:
        return save_bundle(self, Path(path), card)


# -- registry ---------------------------------------------------------------------------
CANDIDATES: dict[str, type[Candidate]] = {}
ALIASES = {"lr": "lr_early", "logistic": "lr_early", "lightgbm": "gbm", "lasso": "lr_l1"}


def register_candidate(*names: str):
    """Class decorator: make a candidate family creatable by these names."""

    def deco(cls: type[Candidate]) -> type[Candidate]:
        for n in names:  # as the other registries: a name is never silently replaced
            if n in CANDIDATES and CANDIDATES[n] is not cls:
                raise RegistryError(f"candidate {n!r} is already registered")
            CANDIDATES[n] = cls
        return cls

    return deco


def canonical(name: str) -> str:
    """``baseline:gbm`` and ``lr`` name the candidates ``gbm`` and ``lr_early``."""
    name = name.strip().removeprefix("baseline:")
    return ALIASES.get(name, name)


CLASSICAL = ("lr_early", "lr_late", "gbm", "cox", "coxnet", "xgb_cox", "rsf", "km")
# the candidates a comparison selects from besides the fusions, per task, unless
# ``evaluation.candidates`` names them
DEFAULT_CANDIDATES = ["lr_early", "lr_late", "gbm", "lr_l1", "stack", "ensemble"]
SURVIVAL_CANDIDATES = ["cox", "coxnet", "xgb_cox", "rsf", "km", "ensemble"]


def default_candidates(task: str) -> list[str]:
    return list(SURVIVAL_CANDIDATES if task == "survival" else DEFAULT_CANDIDATES)


def candidate_entry(name: str) -> str:
    """The results entry of a candidate: classical learners keep their historical names
    (``baseline:gbm``), everything else its own."""
    name = canonical(name)
    return f"baseline:{name}" if name in CLASSICAL else name


def candidate_names() -> list[str]:
    builtin("candidate")  # every built-in family registered, whatever was imported
    return sorted(set(CANDIDATES) | set(fusion_names()))


def candidate_class(name: str) -> type[Candidate]:
    name = canonical(name)
    builtin("candidate")
    if name not in CANDIDATES:  # a fusion registered after import: the neural family
        neural = [c for c in CANDIDATES.values() if c.family == "neural"]
        if neural and name in fusion_names():
            return neural[0]
        import difflib

        known = sorted({*CANDIDATES, *fusion_names()})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown candidate {name!r}{hint}; expected one of {', '.join(sorted(CANDIDATES))}"
        )
    return CANDIDATES[name]


def _learning(task: str) -> list[str]:
    """The registered candidates that can learn ``task``."""
    return [c for c in candidate_names() if task in candidate_class(c).tasks]


def check_spec_candidates(spec: Spec) -> None:
    """The candidates a spec names (``evaluation.candidates``, ``evaluation.search.
    candidates``) exist and can learn its task: an error naming the field, before any data
    is read."""
    task = spec.target.task
    ev = spec.evaluation
    for where, names in (
        ("evaluation.candidates", ev.candidates),
        ("evaluation.search.candidates", ev.search.candidates),
    ):
        for n in names or []:
            try:
                cls = candidate_class(n)
            except ValueError:
                raise ValueError(
                    f"{where}: unknown candidate {n!r}; for a {task} task one of "
                    f"{', '.join(_learning(task))}"
                ) from None
            if task not in cls.tasks:
                raise ValueError(f"{where}: candidate {n!r} cannot learn a {task} task")


def make_candidate(
    spec: Spec,
    name: str,
    seed: int = 0,
    modalities: list[str] | None = None,
    params: dict[str, Any] | None = None,
) -> Candidate:
    """A fresh (unfitted) candidate by registry name; one that cannot learn the spec's
    task is refused, naming those that can."""
    require_spec(spec)
    cls = candidate_class(name)
    task = spec.target.task
    unknown = sorted(set(modalities or []) - set(spec.modality_names))
    if unknown:
        raise ValueError(
            f"candidate {canonical(name)!r}: modalities {unknown} are not in the spec "
            f"({', '.join(spec.modality_names)})"
        )
    if task not in cls.tasks:
        raise ValueError(
            f"candidate {canonical(name)!r} cannot learn a {task} task; for it: "
            f"{', '.join(_learning(task))}"
        )
    return cls(spec, canonical(name), seed, modalities, params)


def candidate_from_state(
    spec: Spec, meta: dict[str, Any], arrays: dict[str, np.ndarray], texts: dict[str, str]
) -> Candidate:
    family = meta.get("family")
    named = CANDIDATES.get(canonical(str(meta.get("name", ""))))
    if named is not None and named.family == family:  # e.g. Trees, not Classical, for gbm
        return named.from_state(spec, meta, arrays, texts)
    for cls in sorted(set(CANDIDATES.values()), key=lambda c: c.__name__):
        if cls.family == family:
            return cls.from_state(spec, meta, arrays, texts)
    raise ValueError(f"unknown candidate family {family!r}")


def sub_state(prefix: str, arrays: dict[str, np.ndarray], texts: dict[str, str]) -> tuple:
    """The arrays and texts of one member (keys starting with ``prefix``), unprefixed."""
    a = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    t = {k[len(prefix) :]: v for k, v in texts.items() if k.startswith(prefix)}
    return a, t


def prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in d.items()}


def pack_members(members: list[Candidate], prefix: str) -> State:
    """The states of member candidates (of a stack or an ensemble): their metadata in
    order, and their arrays and texts under ``{prefix}{i}.``."""
    metas: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    texts: dict[str, str] = {}
    for i, m in enumerate(members):
        mm, aa, tt = m.to_state()
        metas.append(mm)
        arrays.update(prefixed(f"{prefix}{i}.", aa))
        texts.update(prefixed(f"{prefix}{i}.", tt))
    return {"members": metas}, arrays, texts


def unpack_members(
    spec: Spec,
    metas: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    texts: dict[str, str],
    prefix: str,
) -> list[Candidate]:
    """The member candidates written by :func:`pack_members`."""
    out = []
    for i, mm in enumerate(metas):
        a, t = sub_state(f"{prefix}{i}.", arrays, texts)
        out.append(candidate_from_state(spec, mm, a, t))
    return out
