"""Heads and losses per task: ``binary`` (1 logit), ``multiclass`` (K logits),
``multilabel`` (K logits), ``regression`` (1 output on the standardised target),
``survival``: either 1 output, the log relative hazard, trained by the Cox partial
likelihood with Efron's ties from torchsurv (curves from a Breslow baseline hazard set
after training, see :mod:`holomed.survival`), or K outputs, the logits of the discrete
hazard in K time intervals (logistic hazard, Gensheimer & Narasimhan 2019; Kvamme et al.
2019), trained by its censored likelihood."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from holomed.survival import Baseline, pack

TASKS = ("binary", "multiclass", "multilabel", "regression", "survival")


@dataclass
class Task:
    """Task settings learned from the training labels (class weights, target scale)."""

    name: str
    n_classes: int = 2
    class_weights: list[float] | None = None
    y_mean: float = 0.0
    y_sd: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def n_outputs(self) -> int:
        if self.name == "survival" and self.extra.get("head") == "discrete":
            return len(self.extra["cuts"])
        return self.n_classes if self.name in ("multiclass", "multilabel") else 1

    @classmethod
    def fit(cls, name: str, y: np.ndarray, n_classes: int, balance: bool) -> Task:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
        if name == "survival":
            return cls(name, 1)
        if name == "regression":
            sd = float(np.std(y))
            return cls(name, 1, None, float(np.mean(y)), sd if sd > 1e-12 else 1.0)
        if name == "multilabel":  # per-label positive weight = negatives / positives
            pos = y.sum(0).astype(float)
            w = ((len(y) - pos) / np.maximum(pos, 1)).tolist() if balance else None
            return cls(name, n_classes, w)
        yv = np.asarray(y, dtype=float)
        if not np.isfinite(yv).all():
            raise ValueError(f"fit: {int((~np.isfinite(yv)).sum())} training label(s) are missing")
        if ((yv < 0) | (yv >= n_classes) | (yv != np.round(yv))).any():
            raise ValueError(f"fit: training labels outside the {n_classes} classes")
        counts = np.bincount(yv.astype(int), minlength=n_classes).astype(float)
        if (counts > 0).sum() < 2:
            raise ValueError(
                "fit: the training patients hold one class only; a classifier needs two"
            )
        weights = None
        if balance:
            weights = (counts.sum() / (n_classes * np.maximum(counts, 1))).tolist()
        return cls(name, n_classes, weights)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        if self.name == "binary":
            pw = None
            if weighted and self.class_weights:
                pw = torch.tensor(
                    self.class_weights[1] / self.class_weights[0], device=logits.device
                )
            return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), pos_weight=pw)
        if self.name == "multilabel":
            pw = (
                torch.tensor(self.class_weights, device=logits.device, dtype=logits.dtype)
                if weighted and self.class_weights
                else None
            )
            return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=pw)
        if self.name == "multiclass":
            w = (
                torch.tensor(self.class_weights, device=logits.device, dtype=logits.dtype)
                if weighted and self.class_weights
                else None
            )
            return F.cross_entropy(logits, y.long(), weight=w)
        if self.name == "survival" and self.extra.get("head") == "discrete":
            return logistic_hazard_loss(logits, y, self.extra["cuts"])
        if self.name == "survival":
            return cox_loss(logits[:, 0], y)
        return F.mse_loss(logits[:, 0], (y.float() - self.y_mean) / self.y_sd)

    def output(self, logits: torch.Tensor) -> np.ndarray:
        """Probabilities (n, K) for classification; predictions (n,) for regression."""
        if self.name == "binary":
            p = torch.sigmoid(logits[:, 0]).double().numpy()
            return np.stack([1 - p, p], 1)
        if self.name == "multiclass":
            return torch.softmax(logits.double(), 1).numpy()
        if self.name == "multilabel":
            return torch.sigmoid(logits.double()).numpy()
        if self.name == "survival" and self.extra.get("head") == "discrete":
            return discrete_output(logits, self.extra["cuts"], self.extra.get("horizons", []))
        if self.name == "survival":
            risk = logits[:, 0].double().numpy()
            horizons = self.extra.get("horizons", [])
            if "baseline" not in self.extra:  # before the baseline is set: risk only
                return pack(risk, np.full((len(risk), len(horizons)), np.nan))
            base = Baseline.from_json(self.extra["baseline"])
            return pack(base.centre(risk), base.survival(risk, horizons))
        return logits[:, 0].double().numpy() * self.y_sd + self.y_mean

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "n_classes": self.n_classes,
            "class_weights": self.class_weights,
            "y_mean": self.y_mean,
            "y_sd": self.y_sd,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict) -> Task:
        extra = dict(d.get("extra") or {})
        if "baseline" in extra:  # checked on load: a bad file names itself
            Baseline.from_json(extra["baseline"])
        return cls(d["name"], d["n_classes"], d["class_weights"], d["y_mean"], d["y_sd"], extra)


def cox_loss(log_hz: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Efron's ties) of a batch; 0 (with a
    gradient path) for a batch without events."""
    from torchsurv.loss.cox import neg_partial_log_likelihood

    event = y[:, 1] > 0
    if not bool(event.any()):
        return (log_hz * 0.0).sum()
    with warnings.catch_warnings():  # "ties detected: using Efron" is the intent here
        warnings.simplefilter("ignore", UserWarning)
        return neg_partial_log_likelihood(
            log_hz.float()[:, None], event, y[:, 0].float(), ties_method="efron", reduction="mean"
        )


def time_cuts(y: np.ndarray, bins: int) -> list[float]:
    """Right ends of the discrete-time intervals: quantiles of the event times, the last
    one the longest follow-up (so every time falls in an interval)."""
    events = y[y[:, 1] > 0, 0]
    q = np.quantile(events, np.linspace(0, 1, bins + 1)[1:]) if len(events) else []
    cuts = np.unique(np.append(np.asarray(q, dtype=float), float(y[:, 0].max())))
    return cuts.tolist()


def logistic_hazard_loss(logits: torch.Tensor, y: torch.Tensor, cuts: list[float]) -> torch.Tensor:
    """Negative log-likelihood of the discrete hazards: a patient whose time falls in
    interval j survived intervals < j, then had the event in j (event) or survived j too
    (censored)."""
    c = torch.as_tensor(cuts, dtype=y.dtype, device=y.device)
    j = torch.searchsorted(c, y[:, 0].contiguous()).clamp(max=len(cuts) - 1)
    k = torch.arange(len(cuts), device=y.device)[None, :]
    at_risk = (k <= j[:, None]).to(logits.dtype)
    target = ((k == j[:, None]) & (y[:, 1:2] > 0)).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * at_risk).sum(1).mean()


def discrete_output(logits: torch.Tensor, cuts: list[float], horizons: list[float]) -> np.ndarray:
    """Risk (the cumulative hazard over all intervals) and S at each horizon: the
    product of (1 - hazard) over the intervals that end at or before it."""
    h = torch.sigmoid(logits.double()).numpy()
    log_s = np.cumsum(np.log1p(-np.clip(h, 0, 1 - 1e-12)), axis=1)  # S at each cut
    idx = np.searchsorted(np.asarray(cuts), np.asarray(horizons, dtype=float), side="right") - 1
    surv = np.where(idx[None, :] >= 0, np.exp(log_s[:, np.clip(idx, 0, None)]), 1.0)
    return pack(-log_s[:, -1], surv)
