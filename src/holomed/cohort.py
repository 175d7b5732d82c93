"""The cohort: patient index x modalities, a presence mask per modality, the target,
and attributes (sex, age band, site ...) kept apart from features.

Loading reports every patient excluded and why (``cohort.excluded``); nothing
disappears silently. Patients lacking one modality stay in, with ``present=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.datasets import DATASETS
from holomed.ehr import ehr_frames
from holomed.errors import CohortError
from holomed.io.tables import read_table
from holomed.modalities import ModalityData, get_modality
from holomed.privacy.outputs import activate, pseudonymise_cohort, spec_key
from holomed.scoring.strata import strata
from holomed.spec import Spec, SplitSpec, load_spec


@dataclass
class Cohort:
    """``ids`` (n,) strings; ``modalities`` {name: ModalityData}; ``y`` (n,) class index
    (classification) or float (regression); ``attributes`` DataFrame indexed by id."""

    ids: np.ndarray
    modalities: dict[str, ModalityData]
    y: np.ndarray | None = None
    task: str = "binary"
    classes: list[str] | None = None
    attributes: pd.DataFrame | None = None
    split: np.ndarray | None = None
    excluded: list[dict[str, Any]] = field(default_factory=list)
    name: str = "cohort"
    # existing risk scores (e.g. SAPS-I, SOFA) kept for baselines only, never inputs
    scores: pd.DataFrame | None = None
    # (n,) person of each row when rows are admissions/epochs (``split.group``)
    groups: np.ndarray | None = None
    # what a dataset or EHR reader counted while reading (rows kept, dropped and why)
    reading: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=str)
        for name, m in self.modalities.items():
            if len(m) != len(self.ids):
                raise CohortError(
                    f"modality {name!r} has {len(m)} rows; the cohort has {len(self.ids)} patients"
                )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    def presence(self) -> dict[str, np.ndarray]:
        return {k: m.present for k, m in self.modalities.items()}

    def index_of(self, ids: Any) -> np.ndarray:
        pos = {p: i for i, p in enumerate(self.ids)}
        try:
            return np.array([pos[str(p)] for p in ids], dtype=int)
        except KeyError as err:
            raise CohortError(f"patient {err.args[0]!r} is not in cohort {self.name!r}") from None

    def subset(self, idx: Any) -> Cohort:
        """Rows by position (int array) or by id (strings)."""
        idx = np.asarray(idx)
        if idx.size == 0:
            idx = np.zeros(0, dtype=int)  # an empty list is positions, not floats
        elif idx.dtype.kind in "US O":
            idx = self.index_of(idx)
        elif idx.dtype == bool:
            if len(idx) != len(self):
                raise IndexError(f"subset: a mask of {len(idx)} rows for {len(self)} patients")
            idx = np.flatnonzero(idx)
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"subset: positions must be integers, ids or a mask; got {idx.dtype}")
        elif len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset: positions outside 0..{len(self) - 1}")
        return Cohort(
            ids=self.ids[idx],
            modalities={k: m.subset(idx) for k, m in self.modalities.items()},
            y=None if self.y is None else self.y[idx],
            task=self.task,
            classes=self.classes,
            attributes=None if self.attributes is None else self.attributes.iloc[idx],
            split=None if self.split is None else self.split[idx],
            excluded=[],
            name=self.name,
            scores=None if self.scores is None else self.scores.iloc[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def with_presence(self, present: dict[str, np.ndarray]) -> Cohort:
        """A shallow copy whose masks are replaced (simulated missingness). A mask only
        hides rows: it never makes absent data present (as ``masks_within``). A modality
        the cohort does not have, or a mask of another length, is an error naming it."""
        unknown = sorted(set(present) - set(self.modalities))
        if unknown:
            raise CohortError(
                f"masks for {unknown}: the cohort has no such modality "
                f"(it has {sorted(self.modalities)})"
            )
        mods = dict(self.modalities)
        for k, mask in present.items():
            mask = np.asarray(mask, dtype=bool)
            m = self.modalities[k]
            if mask.shape != m.present.shape:
                raise CohortError(
                    f"mask for {k!r}: {mask.shape[0] if mask.ndim else 0} values for "
                    f"{len(m.present)} patients"
                )
            mods[k] = m.masked(mask & m.present)
        return replace(self, modalities=mods)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "patients": int(len(self)),
            "task": self.task,
            "modalities": {
                k: {
                    "kind": m.kind,
                    "present": int(m.present.sum()),
                    "coverage": round(float(m.present.mean()) if len(m) else 0.0, 4),
                    "features": len(m.feature_names),
                }
                for k, m in self.modalities.items()
            },
            "excluded": len(self.excluded),
        }
        if self.groups is not None:
            out["groups"] = int(len(np.unique(self.groups)))
        if self.reading:
            out["reading"] = self.reading
        if self.y is not None and self.task == "survival":
            out["events"] = int(self.y[:, 1].sum())
            out["censored"] = int(len(self.y) - self.y[:, 1].sum())
            out["median_follow_up"] = float(np.median(self.y[:, 0]))
        elif self.y is not None and self.classes is not None and self.y.ndim == 2:
            out["classes"] = {c: int(n) for c, n in zip(self.classes, self.y.sum(0), strict=True)}
        elif self.y is not None and self.classes is not None:
            counts = np.bincount(self.y.astype(int), minlength=len(self.classes))
            out["classes"] = {c: int(n) for c, n in zip(self.classes, counts, strict=True)}
        return out


# -- building a cohort from a spec ---------------------------------------------------


def _encode_multilabel(
    labels: pd.Series, classes: list[str] | None, sep: str, where: str
) -> tuple[np.ndarray, list[str]]:
    """'AF;RBBB' cells -> (n, L) 0/1 matrix; an empty cell is a patient with no label set."""
    sets = [
        [t.strip() for t in str(v).split(sep) if t.strip()] if pd.notna(v) else [] for v in labels
    ]
    seen = sorted({t for s in sets for t in s})
    classes = list(classes) if classes is not None else seen
    unknown = sorted(set(seen) - set(classes))
    if unknown:
        raise CohortError(f"{where}: labels {unknown} are not among classes {classes}")
    if len(classes) < 1:
        raise CohortError(f"{where}: a multilabel task needs at least one label")
    y = np.zeros((len(sets), len(classes)), dtype=np.int64)
    col = {c: j for j, c in enumerate(classes)}
    for i, s in enumerate(sets):
        for t in s:
            y[i, col[t]] = 1
    return y, classes


def _encode_target(
    labels: pd.Series, task: str, classes: list[str] | None, where: str, sep: str = ";"
) -> tuple[np.ndarray, list[str] | None]:
    if task == "multilabel":
        return _encode_multilabel(labels, classes, sep, where)
    if task == "regression":
        num = pd.to_numeric(labels, errors="coerce")
        bad = num.isna()
        if bad.any():
            pid = labels.index[bad.to_numpy().nonzero()[0][0]]
            raise CohortError(
                f"{where}: target of patient {pid!r} is not a number: {labels[pid]!r}"
            )
        return num.to_numpy(dtype=np.float32), None

    def norm(v: Any) -> str:
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    text = labels.map(norm)
    if classes is None:
        values = labels.unique()
        try:
            order = sorted(values, key=float)
        except (TypeError, ValueError):
            order = sorted(values, key=str)
        classes = list(dict.fromkeys(norm(v) for v in order))
    unknown = sorted(set(text) - set(classes))
    if unknown:
        who = _some_ids(text.index[text.isin(unknown).to_numpy()])
        raise CohortError(
            f"{where}: target values {unknown} are not among classes {classes} (patients {who})"
        )
    if task == "binary" and len(classes) != 2:
        raise CohortError(f"{where}: a binary task needs 2 classes; found {classes}")
    if task == "multiclass" and len(classes) < 2:
        raise CohortError(f"{where}: a multiclass task needs >= 2 classes; found {classes}")
    lookup = {c: i for i, c in enumerate(classes)}
    return text.map(lookup).to_numpy(dtype=np.int64), list(classes)


def read_modalities(
    spec: Spec, frames: dict[str, pd.DataFrame] | None = None, only: list[str] | None = None
) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """Each modality's checked frame (indexed by id) and the rows it had to drop."""
    excluded: list[dict[str, Any]] = []
    raw: dict[str, pd.DataFrame] = {}
    reported: set[str] = set()
    for m in spec.modalities:
        if only is not None and m.name not in only:
            continue
        kind = get_modality(m.kind)
        frame = m.frame or m.name
        if m.frame and not m.source and (frames is None or m.frame not in frames):
            have = ", ".join(sorted(frames or {})) or "none"
            raise CohortError(
                f"modality {m.name!r}: frame {m.frame!r} is not one of dataset "
                f"{spec.dataset!r}'s frames ({have})"
            )
        if frames is not None and frame in frames and not m.source:
            df, where = frames[frame], f"dataset {spec.dataset!r} modality {m.name!r}"
            # what the dataset's own reader removed or could not read (counts + reasons),
            # once per frame however many modalities read it
            if frame not in reported:
                excluded += [dict(e) for e in df.attrs.get("reading_report", [])]
                reported.add(frame)
            if kind.columns_are_inputs:  # as for files: one row per patient, `columns:`
                _unique_ids(df.index, where)
                if m.columns is not None:
                    lost = [c for c in m.columns if c not in df.columns]
                    if lost:
                        raise CohortError(f"{where}: columns not found: {lost}")
                    df = df[list(m.columns)]
        else:
            df = kind.read(m, spec)  # a table's reader refuses repeated ids itself
            where = _source_text(spec, m)
        if df.shape[0] == 0:
            raise CohortError(f"{where}: modality {m.name!r} is empty (no patients)")
        df, problems = kind.check(df, m, where)
        excluded += [{"scope": "modality", **p} for p in problems]
        raw[m.name] = df
    return raw, excluded


def modality_data(
    spec: Spec, raw: dict[str, pd.DataFrame], ids: list[str], release: bool = False
) -> dict[str, ModalityData]:
    """Checked frames by modality (see :func:`read_modalities`) aligned to ``ids``: each
    modality's values and presence mask; a patient missing from a frame is absent.

    ``release``: each frame is taken out of ``raw`` once aligned, so that a wide frame
    and its aligned copy are held together one modality at a time, not all at once."""
    out = {}
    index = pd.Index(ids)
    for m in spec.modalities:
        if m.name not in raw:
            continue
        df = raw.pop(m.name) if release else raw[m.name]
        out[m.name] = ModalityData(
            kind=m.kind,
            values=df.reindex(ids),  # a list: the frame's index keeps its name
            present=index.isin(df.index),  # hashed: np.isin on text is quadratic
            feature_names=[str(c) for c in df.attrs.get("feature_names", df.columns)],
        )
        del df
    return out


def _without_usable_rows(excluded: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """One ``scope: patient`` entry per patient whose every modality row was unusable
    (so it is not in ``ids``): prediction lists these patients with an empty score and
    the reason rather than losing them."""
    kept = {str(i) for i in ids}
    done = {str(e["id"]) for e in excluded if e.get("scope") == "patient"}
    lost = dict.fromkeys(
        str(e["id"])
        for e in excluded
        if e.get("scope", "modality") == "modality" and str(e["id"]) not in kept | done
    )
    why = "all of its modality rows were unusable (see modality exclusions)"
    return [{"id": pid, "reason": why, "scope": "patient"} for pid in lost]


def unlabelled_cohort(spec: Spec, sources: dict[str, list[str]]) -> Cohort:
    """New patients for prediction: the named modalities' files (others absent for all);
    ids are the union of the files' ids, in order of first appearance. A modality that
    reads another's dataset frame (``frame``) reads that modality's file unless it is
    given one of its own."""
    unknown = sorted(set(sources) - set(spec.modality_names))
    if unknown:
        raise CohortError(
            f"input names unknown modalities {unknown}; the model has {spec.modality_names}"
        )
    files = {
        m.name: sources.get(m.name) or (sources.get(m.frame) if m.frame else None)
        for m in spec.modalities
    }
    mods = [
        m.model_copy(update={"source": [str(p) for p in files[m.name]], "frame": None})
        for m in spec.modalities
        if files[m.name]
    ]
    sub = spec.model_copy(update={"modalities": mods})
    raw, excluded = read_modalities(sub)
    ids = list(dict.fromkeys(i for df in raw.values() for i in df.index))
    if not ids:
        raise CohortError("no patient in the input files")
    excluded += _without_usable_rows(excluded, ids)
    return private(
        spec,
        Cohort(
            ids=np.asarray(ids, dtype=str),
            modalities=modality_data(sub, raw, ids, release=True),
            y=None,
            task=spec.target.task,
            classes=spec.target.classes,
            excluded=excluded,
            name=spec.dataset,
        ),
    )


def _source_text(spec: Spec, m: Any) -> str:
    """Where a modality's rows come from, for messages: its files, else the dataset."""
    if m.source:
        return ", ".join(str(spec.resolve(s)) for s in m.source)
    return f"dataset {spec.dataset!r}"


def _unique_ids(index: pd.Index, where: str) -> None:
    """One row per patient in a frame given in memory (files are checked when read)."""
    dup = index[index.duplicated()]
    if len(dup):
        raise CohortError(
            f"{where}: patient {str(dup[0])!r} has more than one row "
            f"({dup.nunique()} repeated id(s)); expected 1"
        )


def _some_ids(ids: Any, k: int = 3) -> str:
    """The first ``k`` ids, quoted, and how many more: for error messages."""
    ids = [str(i) for i in ids]
    more = f" and {len(ids) - k} more" if len(ids) > k else ""
    return ", ".join(repr(i) for i in ids[:k]) + more


def design_columns(spec: Spec) -> dict[str, str]:
    """Columns that must never be model inputs, with the spec field naming each: the
    target (and event), the split and group columns, and existing risk scores."""
    t, sp = spec.target, spec.split
    out = {t.column: "target.column"}
    if t.event:
        out[t.event] = "target.event"
    if sp.method == "predefined" and sp.column:
        out[sp.column] = "split.column"
    if sp.group:
        out[sp.group] = "split.group"
    for c in spec.evaluation.score_baselines:
        out[c] = "evaluation.score_baselines"
    return out


def _no_outcome_inputs(spec: Spec, raw: dict[str, pd.DataFrame]) -> None:
    """A table or omics frame whose columns are all inputs must not hold the outcome,
    the split or a risk score (e.g. the label table reused as a modality's source):
    the model would read its own label. An error naming the modality, file and column."""
    design = design_columns(spec)
    for m in spec.modalities:
        df = raw.get(m.name)
        if df is None or not get_modality(m.kind).columns_are_inputs:
            continue
        names = [str(c) for c in df.attrs.get("feature_names", df.columns)]
        hits = [c for c in names if c in design]
        if hits:
            c = hits[0]
            raise CohortError(
                f"{_source_text(spec, m)}: modality {m.name!r} has column {c!r}, the spec's "
                f"{design[c]}; "
                "a model input must not hold the outcome, the split or a risk score. "
                f"Name the modality's input columns in 'columns:' or remove {c!r} from "
                "its file"
            )


def build_cohort(
    spec: Spec,
    frames: dict[str, pd.DataFrame] | None = None,
    target: pd.DataFrame | None = None,
) -> Cohort:
    """A cohort from a spec: modality files through their kinds' readers, or frames a
    dataset loader provides (``frames`` by modality name, ``target`` indexed by id).

    Raises :class:`CohortError` for unusable input (missing file, duplicate ids, text in
    a numeric column, empty modality); reports excluded patients in ``cohort.excluded``.
    """
    raw, excluded = read_modalities(spec, frames)

    t = spec.target
    if target is None:
        if not t.source:
            raise CohortError("target.source: no label table given")

        tpaths = [spec.resolve(s) for s in t.source]
        target = read_table(tpaths, t.id_column, {})
        twhere = ", ".join(map(str, tpaths))
    else:
        twhere = f"dataset {spec.dataset!r} labels"
        _unique_ids(target.index, twhere)
    if t.column not in target.columns:
        raise CohortError(
            f"{twhere}: target column {t.column!r} not found; "
            f"columns are {list(target.columns)[:10]}"
        )
    for a in spec.attributes:
        if a not in target.columns:
            raise CohortError(f"{twhere}: attribute column {a!r} not found")
    group_col = spec.split.group
    if group_col is not None and group_col not in target.columns:
        raise CohortError(f"{twhere}: split.group column {group_col!r} not found")
    for a in spec.evaluation.score_baselines:
        if a not in target.columns:
            raise CohortError(
                f"{twhere}: score column {a!r} (evaluation.score_baselines) not found"
            )

    _no_outcome_inputs(spec, raw)
    in_any = set().union(*(set(df.index) for df in raw.values())) if raw else set()
    dropped_any = {p["id"] for p in excluded if p.get("scope") != "value"}
    if t.task == "survival":
        surv, dropped = survival_target(target, t, twhere)
        excluded.extend(dropped)
        labelled = surv.index
    else:
        labelled = target.index[target[t.column].notna()]
        for pid in target.index[target[t.column].isna()]:
            excluded.append(
                {
                    "id": str(pid),
                    "reason": f"missing label in column {t.column!r}",
                    "scope": "patient",
                }
            )
    for pid in sorted(in_any - set(target.index)):
        excluded.append({"id": str(pid), "reason": "not in the label table", "scope": "patient"})
    ids = [p for p in labelled if p in in_any]
    for pid in labelled:
        if pid not in in_any:
            why = (
                "all of its modality rows were unusable (see modality exclusions)"
                if pid in dropped_any
                else "no data in any modality"
            )
            excluded.append({"id": str(pid), "reason": why, "scope": "patient"})
    if not ids:
        raise CohortError(f"{twhere}: no patient has both a label and data in any modality")

    if t.task in ("binary", "multiclass"):
        _require_two_classes(target.loc[ids, t.column], t, twhere, len(target) - len(ids))
    if t.task == "survival":
        y, classes = surv.loc[ids].to_numpy(dtype=float), None
        _check_survival(y, t, twhere)
    else:
        y, classes = _encode_target(
            target.loc[ids, t.column], t.task, t.classes, twhere, t.separator
        )
    in_ids = {n: df.index for n, df in raw.items()}  # for the error below
    modalities = modality_data(spec, raw, ids, release=True)  # ``raw`` is not used after
    for name, md in modalities.items():
        if not md.present.any():
            src = _source_text(spec, next(m for m in spec.modalities if m.name == name))
            theirs = _some_ids(in_ids.get(name, []))
            raise CohortError(
                f"{src}: modality {name!r}: none of its ids match a labelled patient "
                f"(its ids: {theirs}; labelled: {_some_ids(ids)}, in {twhere}); ids are "
                "compared as text, so '7' and '007' differ"
            )
    split = None
    if spec.split.method == "predefined":
        col = spec.split.column
        if not col or col not in target.columns:
            raise CohortError(f"{twhere}: split.column {col!r} not found for a predefined split")
        raw_split = target.loc[ids, col]
        split = raw_split.astype(str).str.strip().str.lower().to_numpy()
        split[raw_split.isna().to_numpy()] = "(empty)"
        bad = sorted(set(split) - {"train", "val", "test"})
        if bad:
            who = _some_ids(np.asarray(ids, dtype=object)[np.isin(split, bad)])
            raise CohortError(
                f"{twhere}: split column {col!r} has values {bad} (patients {who}); "
                "expected train, val or test"
            )
    attributes = target.loc[ids, list(spec.attributes)] if spec.attributes else None
    return Cohort(
        ids=np.asarray(ids, dtype=str),
        modalities=modalities,
        y=y,
        task=t.task,
        classes=classes,
        attributes=attributes,
        split=split,
        excluded=excluded,
        name=spec.dataset,
        scores=_scores(target.loc[ids], spec.evaluation.score_baselines, twhere),
        groups=_groups(target.loc[ids], group_col, twhere),
        reading=dict(target.attrs.get("ehr_report", target.attrs.get("reading_summary", {}))),
    )


def survival_target(
    target: pd.DataFrame, t: Any, where: str
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Time and event (columns ``time``, ``event``) of every row with a usable survival
    target, and the rows left out with their reason: a missing time or event, or a time
    <= 0 (no time at risk). An event that is not 0/1 or a time that is not a number is
    a named error: it signals a wrong column, not a patient to drop."""
    if t.event is None:  # one column "time,event"
        parts = target[t.column].astype("string").str.split(",", n=1, expand=True)
        if parts.shape[1] < 2:
            raise CohortError(
                f"{where}: target column {t.column!r} must hold 'time,event' (e.g. '12.5,1') "
                "when target.event is not given"
            )
        time_raw, event_raw = parts[0].str.strip(), parts[1].str.strip()
        ename = t.column
    else:
        if t.event not in target.columns:
            raise CohortError(f"{where}: event column {t.event!r} (target.event) not found")
        time_raw, event_raw, ename = target[t.column], target[t.event], t.event
    time = pd.to_numeric(time_raw, errors="coerce")
    event = pd.to_numeric(event_raw, errors="coerce")
    for raw, num, col in ((time_raw, time, t.column), (event_raw, event, ename)):
        bad = num.isna() & raw.notna() & (raw.astype("string").str.strip() != "")
        if bad.any():
            pid = target.index[bad.to_numpy().nonzero()[0][0]]
            raise CohortError(
                f"{where}: column {col!r} of patient {pid!r} is not a number: {raw[pid]!r} "
                f"({int(bad.sum())} such row(s))"
            )
    bad = event.notna() & ~event.isin([0, 1])
    if bad.any():
        pid = target.index[bad.to_numpy().nonzero()[0][0]]
        raise CohortError(
            f"{where}: event column {ename!r} must be 0 (censored) or 1 (event); patient "
            f"{pid!r} has {event_raw[pid]} ({int(bad.sum())} such row(s))"
        )
    if not np.isfinite(time.dropna().to_numpy(dtype=float)).all():
        raise CohortError(f"{where}: time column {t.column!r} holds an infinite value")
    excluded = []
    for pid in target.index[time.isna() | event.isna()]:
        excluded.append(
            {"id": str(pid), "reason": "missing survival time or event", "scope": "patient"}
        )
    for pid in target.index[time.notna() & event.notna() & (time <= 0)]:
        excluded.append(
            {
                "id": str(pid),
                "reason": f"survival time {float(time[pid]):g} <= 0 (no time at risk)",
                "scope": "patient",
            }
        )
    ok = time.notna() & event.notna() & (time > 0)
    out = pd.DataFrame({"time": time[ok].astype(float), "event": event[ok].astype(float)})
    return out, excluded


def _check_survival(y: np.ndarray, t: Any, where: str) -> None:
    """At least one event, and every horizon within the observed follow-up."""
    if y[:, 1].sum() == 0:
        raise CohortError(
            f"{where}: all {len(y)} patients are censored (no event in {t.event or t.column!r}); "
            "a survival model cannot be learnt or scored without events"
        )
    last = float(y[:, 0].max())
    beyond = [h for h in t.horizons if h >= last]
    if beyond:
        raise CohortError(
            f"{where}: target.horizons {beyond} are at or beyond the last observed time "
            f"({last:g} {t.time_unit}); survival there cannot be estimated"
        )


def _require_two_classes(labels: pd.Series, t: Any, where: str, left_out: int) -> None:
    """A classification target needs two classes among the cohort's patients (after
    exclusions): one class cannot be learnt or scored (AUROC is undefined), so it is an
    error naming the column and the class counts rather than a failure deep in training."""

    def norm(v: Any) -> str:
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    counts = labels.map(norm).value_counts()
    if len(counts) >= 2:
        return
    shown = {str(c): 0 for c in t.classes or []}
    shown.update({str(k): int(n) for k, n in counts.items()})
    gone = f"; {left_out} row(s) of the label table left out, see cohort.excluded"
    raise CohortError(
        f"{where}: target column {t.column!r} has a single class among the {len(labels)} "
        f"patients with a label and data (class counts {shown}{gone if left_out else ''}); "
        f"a {t.task} task needs at least 2 classes"
    )


def _groups(target: pd.DataFrame, column: str | None, where: str) -> np.ndarray | None:
    if column is None:
        return None
    g = target[column]
    if g.isna().any():
        pid = target.index[g.isna().to_numpy().nonzero()[0][0]]
        raise CohortError(f"{where}: patient {pid!r} has no value in group column {column!r}")
    return g.astype(str).to_numpy()


def _scores(target: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame | None:
    if not columns:
        return None
    out = pd.DataFrame(index=target.index)
    for c in columns:
        num = pd.to_numeric(target[c], errors="coerce")
        text = target[c].notna() & num.isna()
        if text.any():
            pid = target.index[text.to_numpy().nonzero()[0][0]]
            raise CohortError(f"{where}: score {c!r} of patient {pid!r} is not a number")
        out[c] = num
    return out


def load_cohort(spec: Spec | str | Path) -> Cohort:
    """The cohort a spec describes: a registered dataset's frames when ``spec.dataset``
    names one and modalities have no ``source``, else the files the spec names."""
    if isinstance(spec, str | Path):  # a spec file's path
        spec = load_spec(spec)
    if not isinstance(spec, Spec):
        raise TypeError(
            f"load_cohort takes a Spec (holomed.load_spec(path) or parse_spec(dict)) or a "
            f"spec file's path; got {type(spec).__name__}"
        )
    if spec.ehr is not None:
        frames, target = ehr_frames(spec)
        return private(spec, build_cohort(spec, frames, target))
    if spec.dataset in DATASETS and not any(m.source for m in spec.modalities):
        frames, target = dataset_frames(spec, spec.dataset_options)
        return private(spec, build_cohort(spec, frames, target))
    unsourced = [m.name for m in spec.modalities if not m.source]
    if unsourced and spec.dataset not in DATASETS:
        raise CohortError(
            f"modalities {unsourced} have no 'source' file, and spec.dataset "
            f"{spec.dataset!r} is not a registered dataset that provides them "
            f"('holomed datasets list' names those)"
        )
    return private(spec, build_cohort(spec))


def dataset_frames(spec: Spec, options: dict[str, Any]) -> tuple[Any, Any]:
    """A registered dataset's frames with ``options``; an option it does not take is an
    error naming ``dataset_options``."""
    ds = DATASETS.get(spec.dataset)
    unknown = sorted(set(options) - set(ds.options)) if ds.options is not None else []
    if unknown:
        raise CohortError(
            f"dataset_options of {spec.dataset!r}: {unknown} not understood; it takes "
            f"{', '.join(ds.options) or 'none'}"
        )
    try:
        return ds.frames(**options)
    except TypeError as err:
        if "argument" not in str(err):
            raise
        raise CohortError(f"dataset_options of {spec.dataset!r}: {err}") from None


def private(spec: Spec, cohort: Cohort) -> Cohort:
    """With ``privacy.pseudonymise``, the cohort under keyed pseudonyms (and printed errors
    redacted from now on, see :mod:`holomed.privacy.outputs`); else unchanged."""
    if not spec.privacy.pseudonymise:
        return cohort

    activate([spec.base_dir or ""])
    return pseudonymise_cohort(cohort, spec_key(spec))


def dataset_cohort(spec: Spec, **options: Any) -> Cohort:
    """The spec's registered dataset read with other options — typically another folder
    (``path=.../set-b``) for a model trained on the default one. Labelled when that
    folder's target frame has labels (so it can be evaluated), else unlabelled."""
    if spec.dataset not in DATASETS:
        raise CohortError(
            f"-d/--dataset-option reads a registered dataset's folder, and this model's "
            f"spec.dataset {spec.dataset!r} is not one (it was trained on files): give its "
            "inputs as -i MODALITY=FILE"
        )
    frames, target = dataset_frames(spec, {**spec.dataset_options, **options})
    col = spec.target.column
    if target is not None and col in target.columns and target[col].notna().any():
        return private(spec, build_cohort(spec, frames, target))
    raw, excluded = read_modalities(spec, frames)
    ids = list(dict.fromkeys(i for df in raw.values() for i in df.index))
    if not ids:
        raise CohortError(f"dataset {spec.dataset!r} with {options}: no patient found")
    excluded += _without_usable_rows(excluded, ids)
    return private(
        spec,
        Cohort(
            ids=np.asarray(ids, dtype=str),
            modalities=modality_data(spec, raw, ids, release=True),
            task=spec.target.task,
            classes=spec.target.classes,
            excluded=excluded,
            name=spec.dataset,
        ),
    )


# -- patient-level splits -------------------------------------------------------------


def patient_splits(
    cohort: Cohort, split: SplitSpec, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) pairs; one row is one patient, so no patient is ever on
    both sides. ``predefined`` -> 1 pair ('val' rows count as training patients)."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    n = len(cohort)
    if split.method == "predefined":
        if cohort.split is None:
            raise CohortError("split.method is 'predefined' but the cohort has no split column")
        tr, te = np.nonzero(cohort.split != "test")[0], np.nonzero(cohort.split == "test")[0]
        if not len(tr) or not len(te):
            raise CohortError("predefined split needs both train and test patients")
        return [(tr, te)]
    strat = strata(cohort.y, cohort.task)
    if cohort.groups is not None:
        return _group_splits(cohort, split, strat, seed)
    if split.method == "holdout":
        tr, te = train_test_split(
            np.arange(n), test_size=split.test_size, random_state=seed, stratify=strat
        )
        return [(np.sort(tr), np.sort(te))]
    kf = (
        StratifiedKFold(split.n_folds, shuffle=True, random_state=seed)
        if strat is not None
        else KFold(split.n_folds, shuffle=True, random_state=seed)
    )
    return [(tr, te) for tr, te in kf.split(np.zeros(n), strat)]


def _group_folds(
    n_folds: int, strat: np.ndarray | None, groups: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds in which each group sits wholly on one side, stratified when possible."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise CohortError(f"{n_groups} groups cannot make {n_folds} group-wise folds")
    x = np.zeros(len(groups))
    if strat is not None:
        kf = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in kf.split(x, strat, groups)]
    kf = GroupKFold(n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in kf.split(x, None, groups)]


def _group_splits(
    cohort: Cohort, split: SplitSpec, strat: np.ndarray | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    if split.method == "holdout":  # one fold of about test_size, groups kept whole
        k = max(2, round(1 / split.test_size))
        return _group_folds(k, strat, cohort.groups, seed)[:1]
    return _group_folds(split.n_folds, strat, cohort.groups, seed)


def inner_folds(
    y: np.ndarray | None,
    n_folds: int,
    seed: int,
    task: str,
    groups: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over positions 0..len(y)-1, stratified for classification, group-wise when
    ``groups`` is given."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n, strat = len(y), strata(y, task)
    if groups is not None:
        return _group_folds(n_folds, strat, groups, seed)
    if strat is None:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), strat))


def carve_validation(
    y: np.ndarray, frac: float, seed: int, task: str, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of training patients into (fit, validation), stratified, and
    group-wise when ``groups`` is given."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    idx = np.arange(n)
    if frac <= 0 or n < 10:
        return idx, np.array([], dtype=int)
    strat = strata(y, task)
    if groups is not None:
        k = max(2, round(1 / frac))
        if len(np.unique(groups)) >= k:
            a, b = _group_folds(k, strat, groups, seed)[0]
            return np.sort(a), np.sort(b)
    try:
        a, b = train_test_split(idx, test_size=frac, random_state=seed, stratify=strat)
    except ValueError:  # a class too small to stratify
        a, b = train_test_split(idx, test_size=frac, random_state=seed)
    return np.sort(a), np.sort(b)


def count_reasons(excluded: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in excluded:
        if e.get("scope") == "value":  # values set to missing; 'count' of them
            key = f"values of modality {e['modality']}: {e['reason']}"
        elif "modality" in e:
            key = f"modality {e['modality']}: {e['reason'].split(' in ')[0]}"
        else:
            key = f"{e.get('scope', 'patient')}: {e['reason']}"
        out[key] = out.get(key, 0) + int(e.get("count", 1))
    return out
