"""Scoring: metrics, bootstrap CIs, calibration and curves — pure functions of arrays,
the lowest layer every model and harness builds on. Each metric's name and direction
(``LOWER_IS_BETTER``) live here, once.

The names below are imported on first use (PEP 562), so that a light module of this
package (:mod:`holomed.scoring.strata`) does not load scikit-learn's metrics."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LOWER_IS_BETTER", "calibration_stats", "compute_metrics", "metric_names", "summarise"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("holomed.scoring.metrics"), name)
    raise AttributeError(f"module 'holomed.scoring' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
