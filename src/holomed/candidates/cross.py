"""``lr_cross``: sparse bilinear (tensor) fusion, the linear form of Tensor Fusion
(Zadeh et al., 2017), with an L1 penalty.

The design is ``lr_l1``'s (every modality's features, absent = the training mean, 0
after scaling, plus presence indicators) joined by the products of every pair of
features from two different modalities: the outer product of each pair of modalities.
A cross-modal interaction (a gene whose effect depends on a methylation site) is then
one coefficient, and the L1 penalty (chosen by stratified CV on the training patients,
as ``lr_l1``'s) keeps the few products that carry signal. An absent modality's products
are 0: a patient without it gets no interaction term from it.

When the outer products would hold more than ``max_products`` columns (wide omics),
the widest modalities are first reduced to their leading principal components
(whitened, fitted on the training patients that have the modality; unsupervised, so no
label leaks into the reduction) until the products fit. The main effects always use
every feature. The reductions are stored as arrays.

Attributions sum to the logit (without intercept and presence terms). A main term gives
``coef * x``, the exact SHAP value with the training mean (0 after scaling) as the
background; a product term ``c * a * b`` of unreduced modalities gives half to each
factor, again exact. Through a reduction, a product's half-share is carried back to the
original features along the components, centred at the training mean of the patients
who have the modality: an exact decomposition of the term, but not the Shapley value of
a feature whose scaled mean is not 0 (one-hot and missing-indicator columns).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from holomed.candidate import Param, register_candidate
from holomed.candidates.classical import Classical, Linear, fit_linear, predict_linear
from holomed.cohort import Cohort
from holomed.threads import limit_threads

MAX_PRODUCTS = 8192


def _products(widths: dict[str, int]) -> int:
    return sum(widths[a] * widths[b] for a, b in itertools.combinations(widths, 2))


def _caps(widths: dict[str, int], budget: int) -> dict[str, int]:
    """Per-modality widths after reduction: the widest is lowered (water-filling) until
    the pairwise products fit ``budget``; a modality is never widened. A budget below one
    product per pair of modalities is an error."""
    caps = dict(widths)
    while _products(caps) > budget:
        widest = max(caps, key=lambda n: caps[n])
        if caps[widest] <= 1:
            pairs = len(caps) * (len(caps) - 1) // 2
            raise ValueError(
                f"lr_cross: max_products {budget} is below one product for each of the "
                f"{pairs} pairs of modalities; give at least {_products(caps)}"
            )
        caps[widest] -= 1
    return caps


@register_candidate("lr_cross")
class CrossLinear(Classical):
    """L1 logistic regression on every modality's features and on the products of
    features of every pair of modalities (see module doc)."""

    family = "classical"
    complexity = 1
    tasks = ("binary", "multiclass", "multilabel", "regression")

    @classmethod
    def complexity_of(cls, name: str) -> int:
        return cls.complexity

    @classmethod
    def search_space(cls, spec: Any) -> dict[str, Param]:
        return {}

    @property
    def trees(self) -> bool:
        return False

    def fit(self, cohort: Cohort) -> CrossLinear:
        t0 = time.perf_counter()
        params = dict(self.params or {})
        budget = int(params.pop("max_products", MAX_PRODUCTS))
        if params:
            raise ValueError(
                f"{self.name}: takes only max_products (its penalty is chosen by internal "
                f"CV); got {sorted(params)}"
            )
        if budget < 1:
            raise ValueError(f"{self.name}: max_products must be at least 1, got {budget}")
        self._fit_common(cohort)
        blocks, present = self._blocks(cohort, True)
        caps = _caps({n: b.shape[1] for n, b in blocks.items()}, budget)
        self.reduce_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for n, b in blocks.items():
            if caps[n] < b.shape[1]:
                self.reduce_[n] = _whitened_pca(b[present[n]], caps[n], n)
        with limit_threads():
            x = self._cross_design(blocks, present)
            folds = self.spec.evaluation.selection_folds
            self.model_ = fit_linear(cohort.task, x, cohort.y, self.seed, folds, l1=True)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    # -- design ---------------------------------------------------------------------
    def _factors(self, blocks: dict[str, np.ndarray], present: dict) -> dict[str, np.ndarray]:
        out = {}
        for n, v in blocks.items():
            if n in self.reduce_:
                mu, w = self.reduce_[n]
                u = (v - mu) @ w
                u[~present[n]] = 0.0
                out[n] = u
            else:
                out[n] = v
        return out

    def _pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.preprocessors_, 2))

    def _cross_design(self, blocks: dict[str, np.ndarray], present: dict) -> np.ndarray:
        u = self._factors(blocks, present)
        n = len(next(iter(blocks.values())))
        parts = [blocks[m] for m in self.preprocessors_]
        parts.append(np.stack([present[m] for m in self.preprocessors_], 1).astype(float))
        for a, b in self._pairs():
            parts.append((u[a][:, :, None] * u[b][:, None, :]).reshape(n, -1))
        return np.concatenate(parts, 1)

    def _predict(self, cohort: Cohort, present: dict | None) -> np.ndarray:
        blocks, present = self._blocks(cohort, True, present)
        with limit_threads():
            return predict_linear(self.model_, self._cross_design(blocks, present), self.n_classes_)

    # -- explanation ------------------------------------------------------------------
    def interactions(self, top: int = 10) -> list[dict[str, Any]]:
        """The largest product coefficients, as ``{"a": "mod:feature", "b":
        "mod:feature", "coef": c}``; a reduced modality's factor is named by its
        principal component (``mod:PC1``). The first label's for multilabel; class 0's
        row for multiclass."""
        lin = self.model_[0] if isinstance(self.model_, list) else self.model_
        coef = lin.coef[0]
        names = self.feature_names()
        start = sum(len(v) for v in names.values()) + len(names)
        width = {n: self._width(n) for n in names}
        out = []
        for a, b in self._pairs():
            k = width[a] * width[b]
            block = coef[start : start + k].reshape(width[a], width[b])
            start += k
            for i, j in zip(*np.nonzero(block), strict=True):
                la = names[a][i] if a not in self.reduce_ else f"PC{i + 1}"
                lb = names[b][j] if b not in self.reduce_ else f"PC{j + 1}"
                out.append({"a": f"{a}:{la}", "b": f"{b}:{lb}", "coef": float(block[i, j])})
        out.sort(key=lambda d: -abs(d["coef"]))
        return out[:top]

    def _width(self, name: str) -> int:
        if name in self.reduce_:
            return self.reduce_[name][1].shape[1]
        return len(self.feature_names()[name])

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        blocks, present = self._blocks(cohort, True)
        out = self._predict(cohort, None)
        cls_index = 0
        if self.task_name == "multiclass":
            cls_index = int(np.bincount(out.argmax(1)).argmax())
        lin: Linear = self.model_[0] if isinstance(self.model_, list) else self.model_
        coef = lin.class_coef(cls_index, self.task_name == "multiclass")
        u = self._factors(blocks, present)
        attr, start = {}, 0
        for n in self.preprocessors_:
            p = blocks[n].shape[1]
            attr[n] = blocks[n] * coef[start : start + p][None, :]
            start += p
        start += len(self.preprocessors_)  # presence indicators: no feature's share
        for a, b in self._pairs():
            ka, kb = u[a].shape[1], u[b].shape[1]
            c = coef[start : start + ka * kb].reshape(ka, kb)
            start += ka * kb
            # the term sum_ij c_ij u_a,i u_b,j: half to each factor
            ga = 0.5 * u[a] * (u[b] @ c.T)  # (n, ka): each a-factor's half
            gb = 0.5 * u[b] * (u[a] @ c)
            attr[a] += self._back(a, blocks[a], u[b] @ c.T, ga)
            attr[b] += self._back(b, blocks[b], u[a] @ c, gb)
        for n, v in attr.items():
            v[~present[n]] = np.nan
        return attr

    def _back(self, name: str, x: np.ndarray, partner: np.ndarray, g: np.ndarray) -> np.ndarray:
        """A factor's half-share back on the original features: for a reduced modality
        u = (x - mu) W, so feature f gets 0.5 * (x_f - mu_f) * sum_i W_fi * partner_i."""
        if name not in self.reduce_:
            return g
        mu, w = self.reduce_[name]
        return 0.5 * (x - mu) * (partner @ w.T)

    def describe(self) -> dict[str, Any]:
        m = self.model_[0] if isinstance(self.model_, list) else self.model_
        return {
            "C": getattr(m, "C", None),
            "reduced": {n: int(w.shape[1]) for n, (_, w) in self.reduce_.items()},
            "top_interactions": self.interactions(5),
        }

    # -- state ------------------------------------------------------------------------
    def to_state(self):
        meta, arrays, texts = super().to_state()
        meta["reduced"] = sorted(self.reduce_)
        for n, (mu, w) in self.reduce_.items():
            arrays[f"cross.{n}.mu"] = np.ascontiguousarray(mu)
            arrays[f"cross.{n}.w"] = np.ascontiguousarray(w)
        return meta, arrays, texts

    @classmethod
    def from_state(cls, spec, meta, arrays, texts) -> CrossLinear:
        c = super().from_state(spec, meta, arrays, texts)
        c.reduce_ = {n: (arrays[f"cross.{n}.mu"], arrays[f"cross.{n}.w"]) for n in meta["reduced"]}
        return c


def _whitened_pca(x: np.ndarray, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W): ``(x - mean) @ W`` are the ``k`` leading principal components of the
    training rows ``x`` (``name``'s present ones), each with unit variance (components of
    zero variance are 0); none when fewer than 2 patients have the modality."""
    if len(x) < 2:  # no spread to reduce: no products from this modality
        return np.zeros(x.shape[1]), np.zeros((x.shape[1], 0))
    mu = x.mean(0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    k = min(k, len(s))
    sd = s[:k] / np.sqrt(len(x) - 1)
    scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-12)
    return mu, vt[:k].T * scale[None, :]
