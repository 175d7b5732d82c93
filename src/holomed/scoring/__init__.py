"""Scoring: metrics, bootstrap CIs, calibration and curves — pure functions of arrays,
the lowest layer every model and harness builds on. Each metric's name and direction
(``LOWER_IS_BETTER``) live here, once."""

from holomed.scoring.metrics import (
    LOWER_IS_BETTER,
    calibration_stats,
    compute_metrics,
    metric_names,
    summarise,
)

__all__ = ["LOWER_IS_BETTER", "calibration_stats", "compute_metrics", "metric_names", "summarise"]
