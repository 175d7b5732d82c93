"""Decision-level fusion over any learner (stacking).

For every modality ``m`` and every learner family ``l`` (``params.learners``, default
logistic regression and LightGBM; any registered candidate name works, neural ones too),
a base learner is trained on the training patients who have ``m``. Its out-of-fold
(cross-fitted) predictions on the training patients feed a mask-aware meta-learner: per
base learner, the log-odds of its prediction where the patient has ``m`` and 0 where
not, plus one presence indicator per modality, so a patient without a modality gets no
vote from its learners and the meta-learner knows which votes are there. The meta-learner
is an L2 logistic regression (C by CV; ridge for regression). After cross-fitting, every
base learner is refitted on all its training patients.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from holomed.candidate import (
    Candidate,
    make_candidate,
    pack_members,
    prefixed,
    register_candidate,
    sub_state,
    unpack_members,
)
from holomed.candidates.classical import Linear, fit_linear, predict_linear
from holomed.cohort import Cohort, inner_folds
from holomed.model import masks_within
from holomed.tasks import Task

DEFAULT_LEARNERS = ("lr_early", "gbm")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@register_candidate("stack")
class Stack(Candidate):
    family = "stacking"
    complexity = 2
    tasks = ("binary", "multiclass", "multilabel", "regression")

    def _learners(self) -> list[str]:
        return list((self.params or {}).get("learners", DEFAULT_LEARNERS))

    def _votes(self, out: np.ndarray) -> np.ndarray:
        """A base learner's output as meta features (n, q)."""
        t = self.task_.name
        if t == "regression":
            return ((out - self.task_.y_mean) / self.task_.y_sd)[:, None]
        if t == "multilabel":
            return _logit(out)
        if out.shape[1] == 2:
            return _logit(out[:, 1])[:, None]
        lp = np.log(np.clip(out, 1e-4, 1))
        return lp - lp.mean(1, keepdims=True)

    def _meta_x(self, votes: list[np.ndarray | None], present: dict[str, np.ndarray]) -> np.ndarray:
        cols = [np.nan_to_num(v) for v in votes if v is not None]
        cols.append(np.stack([present[m] for m in self.names_], 1).astype(float))
        return np.concatenate(cols, 1)

    def fit(self, cohort: Cohort) -> Stack:
        t0 = time.perf_counter()
        if cohort.y is None:
            raise ValueError("fit needs a cohort with labels")
        self.names_ = list(self.modalities or self.spec.modality_names)
        n_classes = len(cohort.classes or []) or 1
        self.task_ = Task.fit(cohort.task, cohort.y, n_classes, False)
        self.classes_ = cohort.classes
        units = [(m, lr) for m in self.names_ for lr in self._learners()]
        present = cohort.presence()
        k = int((self.params or {}).get("folds", self.spec.evaluation.selection_folds))
        folds = inner_folds(cohort.y, k, self.seed, cohort.task, cohort.groups)
        oof: list[np.ndarray | None] = []
        for m, learner in units:
            col = None
            for a, b in folds:
                base = self._fit_unit(cohort.subset(a), m, learner)
                rows = b[present[m][b]]
                if base is None or not len(rows):
                    continue
                v = self._votes(base.predict_proba(cohort.subset(rows)))
                if col is None:
                    col = np.zeros((len(cohort), v.shape[1]))
                if v.shape[1] != col.shape[1]:  # never broadcast one vote into several
                    raise ValueError(
                        f"stack: {learner} on {m!r} gave {v.shape[1]} vote column(s) in one "
                        f"inner fold and {col.shape[1]} in another"
                    )
                col[rows] = v
            oof.append(col)
        self.units_, self.bases_ = [], []
        kept_oof = []
        for (m, learner), col in zip(units, oof, strict=True):
            base = self._fit_unit(cohort, m, learner) if col is not None else None
            if base is None:
                continue
            self.units_.append((m, learner))
            self.bases_.append(base)
            kept_oof.append(col)
        x = self._meta_x(kept_oof, present)
        self.meta_ = fit_linear(cohort.task, x, cohort.y, self.seed, k)
        self.preprocessors_ = {}
        for b in self.bases_:
            self.preprocessors_.update(b.preprocessors_)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit_unit(self, cohort: Cohort, m: str, learner: str) -> Candidate | None:
        rows = np.flatnonzero(cohort.modalities[m].present)
        y = cohort.y[rows]
        if len(rows) < 4 or (cohort.task in ("binary", "multiclass") and len(np.unique(y)) < 2):
            return None
        return make_candidate(self.spec, learner, self.seed, [m]).fit(cohort.subset(rows))

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        return self.predict_present(cohort, cohort.presence())

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        have = cohort.presence()
        known = {m: have.get(m, np.zeros(len(cohort), bool)) for m in self.names_}
        present = masks_within(present, known)  # unnamed: its own; never beyond the data
        t = self.task_
        width = t.n_classes if t.name == "multilabel" or (t.name == "multiclass") else 1
        votes = []
        for (m, _), base in zip(self.units_, self.bases_, strict=True):
            rows = np.flatnonzero(present[m])
            v = np.zeros((len(cohort), width))
            if len(rows):
                v[rows] = self._votes(base.predict_proba(cohort.subset(rows)))
            votes.append(v)
        return predict_linear(self.meta_, self._meta_x(votes, present), t.n_classes)

    def describe(self) -> dict[str, Any]:
        meta = self.meta_[0] if isinstance(self.meta_, list) else self.meta_
        return {
            "learners": [f"{lr}:{m}" for m, lr in self.units_],
            "meta_coef": np.round(meta.coef[0], 4).tolist(),
        }

    def to_state(self):
        metas = self.meta_ if isinstance(self.meta_, list) else [self.meta_]
        meta: dict[str, Any] = {
            "family": self.family,
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "modalities": self.names_,
            "task": self.task_.to_json(),
            "classes": self.classes_,
            "units": [list(u) for u in self.units_],
            "meta_learner": {"per_label": isinstance(self.meta_, list), "linear": []},
        }
        packed, arrays, texts = pack_members(self.bases_, "u")
        meta["bases"] = packed["members"]
        for j, lin in enumerate(metas):
            mm, aa = lin.state()
            meta["meta_learner"]["linear"].append(mm)
            arrays.update(prefixed(f"meta{j}.", aa))
        return meta, arrays, texts

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> Stack:
        s = cls(spec, meta["name"], meta["seed"], meta["modalities"], meta.get("params"))
        s.names_ = list(meta["modalities"])
        s.task_ = Task.from_json(meta["task"])
        s.classes_ = meta["classes"]
        s.units_ = [tuple(u) for u in meta["units"]]
        s.bases_ = unpack_members(spec, meta["bases"], arrays, texts, "u")
        lins = []
        for j, mm in enumerate(meta["meta_learner"]["linear"]):
            a, _ = sub_state(f"meta{j}.", arrays, {})
            lins.append(Linear.from_state(mm, a))
        s.meta_ = lins if meta["meta_learner"]["per_label"] else lins[0]
        s.preprocessors_ = {}
        for b in s.bases_:
            s.preprocessors_.update(b.preprocessors_)
        return s
