"""Provenance of a run: package versions and the model-card fields every run records
(intended use, limitations, whether the data are synthetic)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

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


# A bundle records which patients it was trained on as a *sketch*, not a list: each id's
# keyed hash (HMAC-SHA256 under a random salt kept in the card) sets one bit of a bitmap
# with about as many bits as patients, so that 40-63 % of the bits are set. Any id, of a
# patient or not, hits a set bit with that chance, so holding the bundle and enumerating
# ids (record numbers are short) tells next to nothing about who was in it; but scoring
# a group of patients shows how many more hits there are than chance, which estimates
# how many of them were training patients (``predict`` then says its metrics are not
# held-out). Hand-written: a 20-line Bloom filter with one hash; no library offers this
# privacy-minded use of one.
SKETCH_Z = 4.0  # a group is flagged when the estimate is this many SDs above none


def _buckets(ids: Sequence[Any], salt: str, m: int) -> np.ndarray:
    key = bytes.fromhex(salt)
    digests = (hmac.new(key, str(i).encode(), hashlib.sha256).digest() for i in ids)
    return np.array([int.from_bytes(d[:8], "big") % m for d in digests], dtype=np.int64)


def training_patients(ids: Sequence[Any]) -> dict[str, Any]:
    """The card's sketch of its training patients (module comment above): ``n``,
    ``salt``, ``buckets`` (a power of two >= n, at least 64) and the ``bitmap``
    (base64 of the packed bits)."""
    m = max(64, 1 << max(0, math.ceil(math.log2(max(len(ids), 1)))))
    salt = os.urandom(16).hex()
    bits = np.zeros(m, dtype=bool)
    bits[_buckets(ids, salt, m)] = True
    return {
        "n": len(ids),
        "salt": salt,
        "buckets": m,
        "bitmap": base64.b64encode(np.packbits(bits).tobytes()).decode(),
    }


def seen_in_training(card: dict[str, Any] | None, ids: Sequence[Any]) -> dict[str, Any] | None:
    """How many of ``ids`` look like training patients of the bundle whose card is
    ``card``, from its sketch: ``hits`` beyond the ``chance`` rate of a bit being set,
    as an ``estimate`` with an approximate 95 % interval, and ``flag`` when it lies
    :data:`SKETCH_Z` standard deviations above none. None: the card has no sketch."""
    rec = (card or {}).get("training_patients")
    if not isinstance(rec, dict) or not rec.get("bitmap") or not ids:
        return None
    m = int(rec["buckets"])
    bits = np.unpackbits(np.frombuffer(base64.b64decode(rec["bitmap"]), np.uint8))[:m]
    chance = float(bits.mean())
    n = len(ids)
    hits = int(bits[_buckets(ids, str(rec["salt"]), m)].sum())
    if chance >= 1.0:  # every bit set: the sketch cannot tell
        return None
    est = (hits - chance * n) / (1 - chance)
    sd = math.sqrt(max(n * chance * (1 - chance), 1e-12)) / (1 - chance)
    return {
        "scored": n,
        "hits": hits,
        "chance": round(chance, 4),
        "estimate": int(round(min(max(est, 0.0), n))),
        "ci": [int(max(0.0, math.floor(est - 1.96 * sd))), int(min(n, math.ceil(est + 1.96 * sd)))],
        "flag": bool(est - SKETCH_Z * sd > 0),
    }


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
