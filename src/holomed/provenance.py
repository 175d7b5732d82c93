"""Provenance of a run: package versions and the model-card fields every run records
(intended use, limitations, whether the data are synthetic)."""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
from collections.abc import Sequence
from typing import Any

import holomed
from holomed.datasets import DATASETS

DEFAULT_USE = (
    "Research use only. Not a medical device; predictions must not drive clinical "
    "decisions without prospective validation."
)


def versions() -> dict[str, str]:
    import lightning
    import numpy
    import pandas
    import sklearn
    import torch

    return {
        "holomed": holomed.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }


def run_card(spec: Any) -> dict[str, Any]:
    """Intended use, limitations (the dataset's and the spec's notes) and whether the data
    are synthetic: the model-card fields every run records."""
    ds = DATASETS.get(spec.dataset) if spec.dataset in DATASETS else None
    synthetic = bool((ds is not None and ds.synthetic) or spec.dataset.startswith("synthetic"))
    limitations = []
    if synthetic:
        limitations.append("SYNTHETIC data: a check of the method, not a clinical result.")
    if ds is not None:
        limitations += list(ds.notes)
        if ds.citation:
            limitations.append(
                f"Data: {ds.description}. Cite: {ds.citation}. Licence: {ds.licence}."
            )
    limitations += list(spec.notes)
    if spec.description:
        limitations.append(spec.description)
    return {"intended_use": DEFAULT_USE, "limitations": limitations, "synthetic": synthetic}


# a bundle records (keyed, truncated digests of) the patients it was trained on, so that
# scoring them again can be flagged as not held-out; above this many it records none
MAX_RECORDED_PATIENTS = 200_000


def _digests(ids: Sequence[Any], salt: str) -> list[str]:
    key = bytes.fromhex(salt)
    return [hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest()[:16] for i in ids]


def training_patients(ids: Sequence[Any]) -> dict[str, Any] | None:
    """What a bundle's card records of its training patients: a random salt and the
    HMAC-SHA256 of each id under it, cut to 64 bits. Whoever holds an id can test it;
    the list names nobody. None above :data:`MAX_RECORDED_PATIENTS`."""
    if len(ids) > MAX_RECORDED_PATIENTS:
        return None
    salt = os.urandom(16).hex()
    return {"n": len(ids), "salt": salt, "hmac64": _digests(ids, salt)}


def seen_in_training(card: dict[str, Any] | None, ids: Sequence[Any]) -> int | None:
    """How many of ``ids`` were training patients of the bundle whose card is ``card``
    (None: the card records no training patients)."""
    rec = (card or {}).get("training_patients")
    if not isinstance(rec, dict) or not rec.get("salt"):
        return None
    known = set(rec.get("hmac64") or [])
    return sum(d in known for d in _digests(ids, str(rec["salt"])))


def model_card(res: dict[str, Any], data: dict[str, Any], excluded: int) -> dict[str, Any]:
    """The bundle's card from a fit run's results: test metrics with CIs, how they were
    evaluated, the cohort summary, calibration, limitations (the bundle adds its intended
    use, dataset and versions)."""
    cal = res.get("calibration")
    return {
        "metrics_test": {
            k: {"value": v["mean"], "ci": v["ci"]} for k, v in res.get("metrics", {}).items()
        },
        "evaluation": res.get("evaluation"),
        # trained on all patients: the held-out metrics of the run that chose it
        "estimate": {**res["estimate"], "from": res.get("selected_by")}
        if res.get("estimate")
        else None,
        "data": data,
        "excluded": excluded,
        "n_train": res["n_train"],
        "n_test": res["n_test"],
        "calibration": {
            k: cal.get(k) for k in ("method", "temperature", "calibration_in_the_large")
        }
        if cal
        else {"method": "none"},  # not recalibrated: the card says so, as every answer
        "limitations": res["limitations"],
        # the subgroup audit of the test evaluation: the deployed model's caveats
        # (evidence drafts name the patient's subgroup when the audit flags it)
        "fairness": res.get("fairness"),
    }
