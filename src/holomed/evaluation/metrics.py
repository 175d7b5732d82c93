"""Moved to :mod:`holomed.scoring.metrics` (the scoring layer); kept for imports."""

from holomed.scoring.metrics import *  # noqa: F403
from holomed.scoring.metrics import (  # noqa: F401
    calibration_stats,
    ece,
    multilabel_metrics,
)
