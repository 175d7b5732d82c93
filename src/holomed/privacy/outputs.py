"""Private by default in outputs (``privacy: {pseudonymise: true}``).

The cohort's ids are replaced by keyed pseudonyms as soon as it is read, so every output
made from it (results, predictions, explanations, the report, bundles' cards) carries
pseudonyms; exclusion reasons lose quoted raw values and absolute paths; errors printed
while privacy is active are redacted the same way. The same key gives the same pseudonym
in every run, so predictions can be joined back only by whoever holds the key.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey, load_key

_ACTIVE = {"on": False, "roots": []}
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
# names of the data's structure, not of patients: kept by :func:`redact` when quoted
# right after one of these words ("column 'crp'", "modality 'labs'")
_NAMES = re.compile(
    r"(?:columns?|modality|modalities|field|kind|encoder|fusion|candidate) "
    r"(?:\[(?:'[^'\n]*', )*)?$"
)


def activate(roots: list[str] | None = None) -> None:
    """From now on in this process, :func:`redact` applies to printed errors; ``roots``
    (data folders) are shown as placeholders."""
    _ACTIVE["on"] = True
    _ACTIVE["roots"] = [r for r in roots or [] if r]


def deactivate() -> None:
    """Printed errors unredacted again (the state :func:`activate` set is per process:
    a library caller running several commands in one process resets it between them)."""
    _ACTIVE["on"] = False
    _ACTIVE["roots"] = []


def active() -> bool:
    return bool(_ACTIVE["on"] or os.environ.get("HOLOMED_PRIVACY"))


def redact(text: str) -> str:
    """``text`` without quoted values (ids, cell values, names) and with the data roots
    replaced by placeholders: what may be shown when privacy is on."""
    text = str(text)

    def hide(m: re.Match) -> str:
        return m.group(0) if _NAMES.search(text, 0, m.start()) else "<value>"

    out = _QUOTED.sub(hide, text)
    roots = [*_ACTIVE["roots"], os.environ.get("HOLOMED_DATA", "")]
    for root in sorted({r for r in roots if r}, key=len, reverse=True):
        out = out.replace(str(Path(root)), "<data>")
    return out


def spec_key(spec: Any) -> PrivacyKey:
    """The key of a spec's ``privacy.key_file`` (relative to the spec), else the
    environment's."""
    kf = spec.privacy.key_file
    return load_key(spec.resolve(kf) if kf else None)


def pseudonymise_cohort(cohort: Any, key: PrivacyKey) -> Any:
    """The same cohort with every id (patients, groups, exclusions) replaced by its
    pseudonym and exclusion reasons redacted."""
    mapping = {str(i): key.pseudonym(i) for i in cohort.ids}

    def pid(i: Any) -> str:
        return mapping.get(str(i)) or key.pseudonym(i)

    ids = np.asarray([mapping[str(i)] for i in cohort.ids], dtype=str)
    mods = {}
    for name, m in cohort.modalities.items():
        values = m.values
        if hasattr(values, "index") and hasattr(values, "copy"):  # frames indexed by id
            values = values.copy()
            values.index = [pid(i) for i in values.index]
        mods[name] = replace(m, values=values)
    excluded = []
    for e in cohort.excluded:
        e = {k: v for k, v in e.items() if k not in ("path", "file")}
        if "id" in e and e["id"] is not None:
            e["id"] = pid(e["id"])
        if "reason" in e:
            e["reason"] = redact(e["reason"])
        excluded.append(e)

    def reindexed(df: Any) -> Any:
        if df is None:
            return None
        df = df.copy()
        df.index = [pid(i) for i in df.index]
        return df

    groups = None
    if cohort.groups is not None:
        groups = np.asarray([key.pseudonym(g) for g in cohort.groups], dtype=str)
    return replace(
        cohort,
        ids=ids,
        modalities=mods,
        attributes=reindexed(cohort.attributes),
        scores=reindexed(cohort.scores),
        excluded=excluded,
        groups=groups,
        reading={},
    )


def write_linkage(path: Path, pseudonyms: list[str], ids: list[str]) -> None:
    """The (pseudonym, id) linkage table: the one file that re-identifies, so it is
    readable by its owner only (mode 0600) and never replaces an existing file."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PrivacyError(f"{path}: exists; the linkage table is never overwritten") from None
    with os.fdopen(fd, "w", newline="") as fh:
        pd.DataFrame({"pseudonym": pseudonyms, "id": ids}).to_csv(fh, index=False)
