"""Moved to :mod:`holomed.scoring.calibration` (the scoring layer); kept for imports."""

from holomed.scoring.calibration import *  # noqa: F403
from holomed.scoring.calibration import Calibrator, reliability  # noqa: F401
