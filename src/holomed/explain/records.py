"""One patient's prediction and explanation as JSON records: the shape the API answers
(:meth:`holomed.serve.app.ServedModel.explain_one`) and evidence drafts read
(:mod:`holomed.generative.evidence`). Numbers are finite floats or None (JSON has no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from holomed.survival import output_names

SCORE_MEANING = {
    "binary": "probability of the positive class",
    "multiclass": "probability of the predicted class",
    "multilabel": "mean label probability",
    "regression": "the prediction",
    "survival": "risk score (log relative hazard)",
}


def num(x: Any) -> float | None:
    """A finite float, else None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def score_meaning(task: str) -> str:
    """What the contributions' base and value are, for a task."""
    return SCORE_MEANING.get(task, "model output")


def output_record(
    task: str,
    row: Any,
    classes: Sequence[Any] = (),
    horizons: Sequence[float] = (),
    time_unit: str | None = None,
    calibration: str = "none",
) -> dict[str, Any]:
    """A prediction's outputs: probabilities and the predicted class (the labels at 0.5
    for multilabel) with the calibration method; the risk and survival at each horizon;
    or the regression value."""
    row = np.asarray(row, dtype=float)
    if task == "survival":
        names = output_names(list(horizons))
        return {
            "risk": num(row[0]),
            "survival": {
                n.removeprefix("survival_at_"): num(v)
                for n, v in zip(names[1:], row[1:], strict=True)
            },
            "time_unit": time_unit,
        }
    if row.ndim == 0 or task == "regression":
        return {"prediction": num(row if row.ndim == 0 else row.ravel()[0])}
    labels = [str(c) for c in classes]
    probs = {c: num(p) for c, p in zip(labels, row, strict=True)}
    if task == "multilabel":
        predicted: Any = [c for c, p in zip(labels, row, strict=True) if p >= 0.5]
    else:
        predicted = labels[int(np.nanargmax(row))]
    return {"probabilities": probs, "predicted": predicted, "calibration": calibration}


def explanation_record(why: dict[str, Any], used: Sequence[str], task: str) -> dict[str, Any]:
    """The first patient of an ``explain`` result (``Candidate.explain`` on a one-patient
    cohort): modality Shapley values and leave-one-out deltas of the modalities ``used``,
    the fusion's modality weights when it has them, the top features per modality."""
    used = set(used)
    c = why.get("contributions") or {}
    out: dict[str, Any] = {
        "contributions": {
            "method": c.get("method"),
            "score": score_meaning(task),
            "base": num((c.get("patient_base") or [None])[0]),
            "value": num((c.get("patient_score") or [None])[0]),
            "modalities": {
                m: {
                    "shapley": num(c["patient"][m][0]),
                    "leave_one_out": num((c.get("patient_loo", {}).get(m) or [None])[0]),
                }
                for m in c.get("modalities", [])
                if m in used
            },
        }
    }
    att = why.get("attention") or None
    if att and att.get("examples"):
        out["modality_weights"] = {
            n: num(w) for n, w in zip(att["names"], att["examples"][0]["weights"], strict=False)
        }
    feats = why.get("features") or {}
    out["top_features"] = {
        m: [{"feature": str(f["feature"]), "attribution": num(f.get("mean"))} for f in fs]
        for m, fs in feats.items()
        if m in used
    }
    out["features_method"] = why.get("features_method")
    return out
