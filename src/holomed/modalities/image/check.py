"""``check`` of the image kind: each patient's files probed (header only), the
unusable ones reported with their reason, and a patient kept while one image (or, with
``as_channels``, one channel) is usable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.modalities.image.channels import (
    FILLED,
    NO_IMAGE,
    UNUSABLE,
    channel_names,
    channel_slots,
)
from holomed.modalities.image.reading import probe


def check_images(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """Keep each patient's usable files; report the others (``scope: value`` with the
    file) and the patients left with none."""
    if "paths" not in df.columns:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: an image frame needs a column 'paths' "
            f"(list of files per patient); columns are {list(df.columns)[:10]}"
        )
    # patients a PACS could not serve (holomed.io.dicomweb), each with its reason
    fetched = [dict(p) for p in df.attrs.get("dicomweb_report", ())]
    option = (getattr(mspec, "preprocessing", None) or {}).get("as_channels")
    if option is not None and option is not False:
        out, problems = check_channels(df, mspec, where, option)
        return out, fetched + problems
    name = mspec.name
    max_images = (getattr(mspec, "preprocessing", None) or {}).get("max_images")
    problems: list[dict] = []
    keep_ids, keep_paths = [], []
    for pid, paths in zip(df.index.astype(str), df["paths"], strict=True):
        if isinstance(paths, str | Path):
            paths = [paths]
        if not isinstance(paths, list | tuple | np.ndarray):
            paths = []
        good = []
        for p in paths:
            if p is None or (isinstance(p, float) and np.isnan(p)):
                problems.append(
                    {"id": pid, "modality": name, "reason": "empty image path", "scope": "value",
                     "count": 1}
                )  # fmt: skip
                continue
            why = probe(p)
            if why is None:
                good.append(str(p))
            else:
                problems.append(
                    {"id": pid, "modality": name, "reason": why, "scope": "value", "count": 1,
                     "file": str(p)}
                )  # fmt: skip
        if good:
            keep_ids.append(pid)
            keep_paths.append(good)
            if max_images is not None and len(good) > int(max_images):  # kept, not used
                problems.append(
                    {"id": pid, "modality": name, "scope": "value",
                     "reason": f"images beyond max_images ({int(max_images)}) not used",
                     "count": len(good) - int(max_images)}
                )  # fmt: skip
        else:
            problems.append({"id": pid, "modality": name, "reason": f"no usable image in {where}"})
    out = pd.DataFrame({"paths": keep_paths}, index=pd.Index(keep_ids, name="id"))
    return out, fetched + problems


def check_channels(
    df: pd.DataFrame, mspec: Any, where: str, option: Any
) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`check_images` for ``as_channels``: each patient's images placed in the
    channel slots (a missing or unusable one leaves its slot empty, reported with the
    channel it leaves blank); a patient loses the modality only when no slot holds a
    usable image."""
    name = mspec.name
    pre = getattr(mspec, "preprocessing", None) or {}
    try:
        names = channel_names(option, pre.get("max_images"))
    except ValueError as err:
        raise CohortError(f"modality {name!r}: preprocessing.{err}") from None
    labelled = "channels" in df.columns
    if labelled and names is None:
        raise CohortError(
            f"{where}: modality {name!r}: images named by channel (options.channel_column) "
            "need as_channels to list the channel names"
        )
    problems: list[dict] = []
    keep_ids, keep_paths, keep_labels = [], [], []
    labels = df["channels"] if labelled else [None] * len(df)
    for pid, cell, labs in zip(df.index.astype(str), df["paths"], labels, strict=True):
        slots, missing, left = channel_slots(cell, labs if labelled else None, names)
        for p, why in left:
            problems.append(
                {"id": pid, "modality": name, "reason": f"{why}: left out", "scope": "value",
                 "count": 1, "file": p}
            )  # fmt: skip
        found: list[dict] = []
        for k, p in enumerate(slots):
            why = probe(p) if p else None
            if why is not None:
                slots[k] = None
                found.append({"reason": why, "file": p, "k": k})
            elif not p:
                blank = missing.get(k) == UNUSABLE
                found.append({"reason": "empty image path" if blank else None, "k": k})
        for f in found:
            ch = names[f["k"]] if names else f"ch{f['k']}"
            if not any(slots):  # the patient loses the modality: reported as for sets
                reason = f["reason"]
            elif f["reason"]:
                reason = f"{f['reason']}; channel {ch!r} {FILLED}"
            else:
                reason = f"no image for channel {ch!r}; {FILLED}"
            if reason:
                entry = {"id": pid, "modality": name, "reason": reason, "scope": "value",
                         "count": 1}  # fmt: skip
                if f.get("file"):
                    entry["file"] = f["file"]
                problems.append(entry)
        if any(slots):
            keep_ids.append(pid)
            keep_paths.append(slots)
            # slots in the order of the names; a slot no row named has no name either
            keep_labels.append([None if missing.get(k) == NO_IMAGE else c
                                for k, c in enumerate(names or [])])  # fmt: skip
            continue
        problems.append({"id": pid, "modality": name, "reason": f"no usable image in {where}"})
    out = pd.DataFrame({"paths": keep_paths}, index=pd.Index(keep_ids, name="id"))
    if labelled:
        out["channels"] = keep_labels
    return out, problems
