"""What patient-level splits and bootstrap resamples stratify on, from the target alone."""

from __future__ import annotations

import numpy as np


def strata(y: np.ndarray | None, task: str) -> np.ndarray | None:
    """What splits stratify on: the class for binary/multiclass, the event indicator for
    survival, nothing otherwise."""
    if y is not None and task == "survival":
        return np.asarray(y)[:, 1].astype(int)
    return None if y is None or task in ("regression", "multilabel") else y
