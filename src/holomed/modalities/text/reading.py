"""Reading and checking clinical notes: tables (a column of text, or one file per row) to
one row per patient, with what could not be used reported (see
:mod:`holomed.modalities.text`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.tables import read_ids
from holomed.modalities.base import ModalityData


def _read_frame(path: Path, options: dict[str, Any]) -> pd.DataFrame:
    if not path.exists():
        raise CohortError(f"{path}: file not found")
    name = path.name.lower()
    enc = options.get("encoding", "utf-8")
    errors = options.get("encoding_errors", "replace")
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = options.get("sep") or ("\t" if name.endswith((".tsv", ".tsv.gz")) else ",")
        return pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, encoding=enc, encoding_errors=errors
        )
    except Exception as err:  # noqa: BLE001 - any parser failure becomes a named error
        raise CohortError(f"{path}: cannot be read as a table: {err}") from None


def read_text(mspec: Any, spec: Any) -> pd.DataFrame:
    """Tables -> long form: one row per note with columns ``id``, ``text`` (None when
    unreadable), ``problem`` (why, or None) and ``order``. Duplicate ids are allowed:
    they are several notes of one patient. ``options``: ``text_column`` (default
    ``text``) or ``path_column``; ``order_column``; ``encoding``, ``encoding_errors``
    (default ``replace``: undecodable bytes become U+FFFD); ``sep``."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    o = mspec.options
    parts = []
    for s in mspec.source:
        path = spec.resolve(s)
        df = _read_frame(path, o)
        if df.shape[0] == 0:
            raise CohortError(f"{path}: the table has no rows")
        idc = mspec.id_column or df.columns[0]
        col = o.get("path_column") or o.get("text_column", "text")
        missing = [c for c in (idc, col, o.get("order_column")) if c and c not in df.columns]
        if missing:
            raise CohortError(
                f"{path}: modality {mspec.name!r}: columns not found: {missing}; "
                f"columns are {list(df.columns)[:10]}"
            )
        ids = read_ids(df[idc], path, idc)
        out = pd.DataFrame({"id": ids.to_numpy()})
        if o.get("path_column"):
            texts, problems = [], []
            for p in df[col]:
                t, why = _read_note(path.parent, p, o)
                texts.append(t)
                problems.append(why)
            out["text"], out["problem"] = texts, problems
        else:
            out["text"] = df[col].to_numpy(dtype=object)
            out["problem"] = None
        out["order"] = df[o["order_column"]].to_numpy() if o.get("order_column") else 0
        out.attrs["where"] = str(path)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def _read_note(folder: Path, p: Any, options: dict[str, Any]) -> tuple[str | None, str | None]:
    if p is None or (isinstance(p, float) and np.isnan(p)) or not str(p).strip():
        return None, "no file named in the path column"
    path = Path(str(p).strip())
    path = path if path.is_absolute() else folder / path
    try:
        text = path.read_text(
            encoding=options.get("encoding", "utf-8"),
            errors=options.get("encoding_errors", "replace"),
        )
    except FileNotFoundError:  # file names may carry identifiers: not repeated here
        return None, "note file not found"
    except (OSError, UnicodeError) as err:
        return None, f"unreadable note file ({type(err).__name__})"
    return text, None


def _blank(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or not str(v).strip()


def check_text(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """Notes -> one row per patient (column ``text``) and the report of what could not be
    used. Accepts the long form of :func:`read_text` (column ``id``) or a frame indexed
    by patient id whose ``options.text_column`` (or ``text``) holds the notes."""
    if not isinstance(df, pd.DataFrame):
        raise CohortError(f"{where}: modality {mspec.name!r}: expected a table of notes")
    o = mspec.options
    col = o.get("text_column", "text")
    col = col if col in df.columns else "text"
    if col not in df.columns:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: no note column {col!r}; "
            f"columns are {list(df.columns)[:10]}"
        )
    ids = (df["id"] if "id" in df.columns else pd.Series(df.index, index=df.index)).astype(str)
    ids = ids.str.strip().to_numpy()
    texts = df[col].to_numpy(dtype=object)
    why = df["problem"].to_numpy(dtype=object) if "problem" in df.columns else [None] * len(df)
    order = df["order"].to_numpy() if "order" in df.columns else np.zeros(len(df))
    sep = str(o.get("separator", "\n\n"))
    dedupe = bool(o.get("deduplicate", True))
    name = mspec.name

    notes: dict[str, list[tuple[Any, int, str]]] = {}
    issues: dict[str, dict[str, int]] = {}
    for i, (pid, t, w) in enumerate(zip(ids, texts, why, strict=True)):
        notes.setdefault(pid, [])
        reason = w if w else ("empty note" if _blank(t) else None)
        if reason:
            issues.setdefault(pid, {}).setdefault(reason, 0)
            issues[pid][reason] += 1
            continue
        notes[pid].append((order[i], i, str(t).strip()))

    problems: list[dict] = []
    keep: dict[str, str] = {}
    for pid, items in notes.items():
        bad = issues.get(pid, {})
        if not items:
            detail = "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in bad.items())
            problems.append(
                {"id": pid, "modality": name, "reason": f"no usable note in {where}: {detail}"}
            )
            continue
        for r, n in bad.items():  # the patient keeps the modality; its lost notes counted
            problems.append(
                {"id": pid, "modality": name, "reason": r, "scope": "value", "count": int(n)}
            )
        items = sorted(items, key=lambda x: (_sort_key(x[0]), x[1]))
        seq = [t for _, _, t in items]
        if dedupe:
            seq = list(dict.fromkeys(seq))
        keep[pid] = sep.join(seq)
    out = pd.DataFrame({"text": list(keep.values())}, index=pd.Index(list(keep), name="id"))
    out.attrs["feature_names"] = ["text"]
    return out, problems


def _sort_key(v: Any) -> tuple[int, Any]:
    """Numbers before text, each in their own order (order columns may mix them)."""
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def note_texts(data: ModalityData) -> list[Any]:
    vals = data.values
    if isinstance(vals, pd.DataFrame):
        return list(vals["text"]) if "text" in vals.columns else list(vals.iloc[:, 0])
    return list(vals)
