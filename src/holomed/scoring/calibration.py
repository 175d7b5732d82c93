"""Calibration: reliability curves, and post-hoc recalibration fitted on validation
patients only — temperature scaling (one scalar dividing the logits; the ranking, hence
AUROC, is unchanged) or, for binary tasks, isotonic regression (stored as its
breakpoints, applied by interpolation, so a bundle needs no pickle)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("none", "temperature", "isotonic")


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Binary: observed event rate vs mean predicted risk per risk bin; multiclass:
    accuracy vs confidence of the top class. Equal-width bins; empty bins dropped."""
    if proba.shape[1] == 2:
        conf, hit = proba[:, 1], (np.asarray(y) == 1).astype(float)
    else:
        conf, hit = proba.max(1), (proba.argmax(1) == np.asarray(y)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    out: dict[str, list] = {"predicted": [], "observed": [], "count": [], "bin_lo": []}
    for b in range(bins):
        m = which == b
        if m.any():
            out["predicted"].append(float(conf[m].mean()))
            out["observed"].append(float(hit[m].mean()))
            out["count"].append(int(m.sum()))
            out["bin_lo"].append(float(edges[b]))
    return out


def fit_temperature(logits: torch.Tensor, y: np.ndarray, task: str) -> float:
    """The temperature T > 0 minimising the validation negative log-likelihood."""
    logits = logits.detach().double()
    yt = torch.as_tensor(y)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def nll() -> torch.Tensor:
        opt.zero_grad()
        z = logits / log_t.exp()
        if task == "binary":
            loss = F.binary_cross_entropy_with_logits(z[:, 0], yt.double())
        elif task == "multilabel":  # one temperature shared by all labels
            loss = F.binary_cross_entropy_with_logits(z, yt.double())
        else:
            loss = F.cross_entropy(z, yt.long())
        loss.backward()
        return loss

    opt.step(nll)
    t = float(log_t.detach().exp())
    return t if np.isfinite(t) and 0.05 < t < 20 else 1.0


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


class Calibrator:
    """Post-hoc calibration of a model's logits; its state is plain JSON."""

    def __init__(self, method: str = "temperature") -> None:
        if method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}; got {method!r}")
        self.method = method
        self.temperature = 1.0
        self.isotonic: dict[str, list[float]] | None = None

    def fit(self, logits: torch.Tensor, y: np.ndarray, task: str) -> Calibrator:
        if task == "regression" or self.method == "none" or len(y) < 10:
            self.method = "none" if task == "regression" or len(y) < 10 else self.method
            return self
        if len(np.unique(y)) < 2:
            self.method = "none"
            return self
        if self.method == "isotonic" and task != "binary":
            raise ValueError("isotonic calibration is for binary tasks; use temperature")
        if self.method == "temperature":
            self.temperature = fit_temperature(logits, y, task)
        else:
            p = torch.sigmoid(logits[:, 0].double()).numpy()
            self.isotonic = fit_isotonic(p, y)
        return self

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature if self.method == "temperature" else logits

    def proba(self, proba: np.ndarray) -> np.ndarray:
        """Applies isotonic mapping to (n, 2) probabilities (temperature acts on logits)."""
        if self.method != "isotonic" or self.isotonic is None:
            return proba
        p = np.interp(proba[:, 1], self.isotonic["x"], self.isotonic["y"])
        return np.stack([1 - p, p], 1)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature, "isotonic": self.isotonic}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Calibrator:
        c = cls((d or {}).get("method", "none"))
        c.temperature = float((d or {}).get("temperature", 1.0))
        c.isotonic = (d or {}).get("isotonic")
        return c
