"""Registration of a patient's co-acquired images (``register``): the mode asked for
(:func:`register_mode`), the recipe and seed that make it reproducible (both enter the
cache key), and the summary of the recorded transforms (:func:`registration_summary`).
The registration itself is :func:`holomed.io.images.register_image`."""

from __future__ import annotations

from typing import Any

import numpy as np

from holomed.io.images import REGISTRATIONS

# the registration recipe (metric, optimiser, pyramid, sampling seed) enters the cache
# key; bump it when io.images.register_image changes what it computes
REGISTER_RECIPE = "sitk-mattes32-rsgd-pyramid-v1"
REGISTER_SEED = 0


def register_mode(mode: Any) -> str | None:
    """``register`` as one of :data:`~holomed.io.images.REGISTRATIONS` (lower case), or
    None for no registration (``null``, ``false``, ``none``)."""
    if mode is None or mode is False or str(mode).lower() in ("none", "null", ""):
        return None
    if str(mode).lower() not in REGISTRATIONS:
        raise ValueError(f"register: {mode!r} is not one of {', '.join(REGISTRATIONS)} or null")
    return str(mode).lower()


def registration_summary(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median / max of the recorded transforms' translation (mm, its norm) and rotation
    (degrees), mean metric before / after and seconds, over all registered images."""
    done = [r for recs in records.values() for r in recs if r.get("type")]
    out: dict[str, Any] = {
        "images": len(done),
        "skipped": sum(1 for recs in records.values() for r in recs if not r.get("type")),
    }
    if done:
        tr = np.array([np.linalg.norm(r["translation_mm"]) for r in done])
        rot = np.array([r["rotation_deg"] for r in done])
        out.update(
            translation_mm={"median": float(np.median(tr)), "max": float(tr.max())},
            rotation_deg={"median": float(np.median(rot)), "max": float(rot.max())},
            metric_before=float(np.mean([r["metric_before"] for r in done])),
            metric_after=float(np.mean([r["metric_after"] for r in done])),
            seconds=float(np.mean([r["seconds"] for r in done if "seconds" in r] or [0.0])),
        )
    return out
