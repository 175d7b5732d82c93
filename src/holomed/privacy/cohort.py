"""``holomed deid``: an identified cohort in, a de-identified one out, modality by modality.

The cohort is read exactly as training reads it (the spec's files through each kind's
reader, or a registered dataset's loader), then written as plain files with a spec that
reads them:

- every patient id becomes its keyed pseudonym (:mod:`holomed.privacy.keys`), in every
  modality and in the label table, so the modalities still join;
- tables and omics: ``privacy.drop_columns`` removed, ``privacy.pseudonym_columns``
  pseudonymised, ``privacy.date_columns`` shifted by the patient's offset (a value that
  cannot be read as a date is set missing and counted, never kept), ages over 89 set to
  90 (``privacy.age_columns``; by default every column named age);
- notes: Presidio with clinical recognizers (:mod:`holomed.privacy.text`), surrogates or
  tags as ``privacy.notes`` says, dates shifted by the same per-patient offset;
- time series: the long form with pseudonymised ids; times are hours since the stay's
  start (relative, so nothing to shift);
- signals: EDF/EDF+/BDF and WFDB records through :mod:`holomed.privacy.signal` (header
  patient and recording fields emptied, the patient code and the file name → the
  pseudonym, start/base date shifted by the patient's offset, EDF+ annotation text through
  the note de-identifier — or ``[TEXT]`` with ``options.deid_annotations: drop`` — WFDB
  comments kept only for ``options.deid_keep_comments``, default ``Age`` (over 89 →
  ``90+``), ``Sex``, ``Dx``; samples untouched and checked). The table is rewritten with
  the new relative paths (``start``/``stop`` kept). A record the cohort's check cannot use
  (missing, truncated or unreadable file) is left out and counted in the report by reason,
  as training would leave it out; a file that fails while being de-identified stops the
  run with an error naming it (relative to the spec's folder). Several ids pointing at one
  file (windows of one recording) share one de-identified copy, keyed by the first id;
- images: DICOM through the PS3.15 Basic profile with modified dates
  (:mod:`holomed.privacy.dicom`; burned-in annotation is quarantined and reported); other
  formats are re-encoded from their pixels as PNG, which drops embedded metadata (EXIF,
  text chunks); their pixels are not inspected for burned-in text, and the report says so;
- the label table keeps only what the spec uses (target, split, group, attributes,
  score columns); a group column holding person ids is pseudonymised.

Everything is written under ``OUT.partial`` and renamed to ``OUT`` at the end: an
interrupted run leaves no folder that looks finished. The report (``deid_report.json``)
holds counts by modality and identifier type, never values. A linkage table (pseudonym,
id) is written only when asked, to a path outside ``OUT``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from holomed.cohort import read_modalities
from holomed.datasets import DATASETS
from holomed.ehr import ehr_frames
from holomed.errors import PrivacyError
from holomed.io.tables import read_table
from holomed.modalities import get_modality
from holomed.privacy.dicom import deidentify_dicom
from holomed.privacy.ehr_tables import deidentify_ehr_tables
from holomed.privacy.keys import PrivacyKey
from holomed.privacy.outputs import redact, write_linkage
from holomed.privacy.signal import (
    ANNOTATION_MODES,
    KEEP_COMMENTS,
    AnnotationTexts,
    deidentify_signal_record,
)
from holomed.privacy.text import NoteDeidentifier
from holomed.runfiles import staged_folder

SUPPORTED = ("tabular", "omics", "text", "image", "timeseries", "signal")


def raw_frames(
    spec: Any, excluded: list[dict] | None = None
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Each modality's frame as the cohort reader checks it (time series: the long form
    as read, times in hours since the stay's start), and the label table. The rows the
    check left out are appended to ``excluded`` when given."""
    frames = target = None
    if spec.ehr is not None:  # EHR tables: the cohort's frames, cut as for training
        frames, target = ehr_frames(spec)
    elif spec.dataset in DATASETS and not any(m.source for m in spec.modalities):
        frames, target = DATASETS.get(spec.dataset).frames(**spec.dataset_options)
    series = [m.name for m in spec.modalities if m.kind == "timeseries"]
    raw, problems = read_modalities(
        spec, frames, [m.name for m in spec.modalities if m.name not in series]
    )
    if excluded is not None:
        excluded.extend(problems)
    for m in spec.modalities:
        if m.kind == "timeseries":
            frame = m.frame or m.name
            long = frames[frame] if frames and frame in frames and not m.source else None
            raw[m.name] = long if long is not None else get_modality("timeseries").read(m, spec)
    if target is None:
        if not spec.target.source:
            raise PrivacyError("target.source: no label table given")
        target = read_table(
            [spec.resolve(s) for s in spec.target.source], spec.target.id_column, {}
        )
    return raw, target


def _shift_dates(
    df: pd.DataFrame, cols: list[str], key: PrivacyKey, max_days: int, where: str
) -> Counter:
    counts: Counter = Counter()
    for c in cols:
        if c not in df.columns:
            raise PrivacyError(f"{where}: date column {c!r} (privacy.date_columns) not found")
        given = df[c].notna() & (df[c].astype("string").str.strip() != "")
        # a number is not a date (pandas would read 81 as 81 ns after 1970): a column of
        # numbers is refused, a stray number in a date column is set missing and counted
        number = given & pd.to_numeric(df[c], errors="coerce").notna()
        if given.any() and number[given].all():
            raise PrivacyError(
                f"{where}: column {c!r} (privacy.date_columns) holds numbers, not dates; "
                "list only columns of dates written as text (e.g. 2021-03-04)"
            )
        parsed = pd.to_datetime(df[c].where(given & ~number), errors="coerce", format="mixed")
        bad = given & parsed.isna()
        shifts = pd.to_timedelta([key.date_shift_days(i, max_days) for i in df.index], unit="D")
        out = (parsed + shifts).dt.strftime("%Y-%m-%d")
        df[c] = out.where(parsed.notna(), None)
        counts["dates_shifted"] += int(parsed.notna().sum())
        counts["dates_unparsed_set_missing"] += int(bad.sum())
    return counts


def _table(
    df: pd.DataFrame, name: str, spec: Any, key: PrivacyKey
) -> tuple[pd.DataFrame, dict[str, Any]]:
    p = spec.privacy
    where = f"modality {name!r}"
    drop = p.drop_columns.get(name, [])
    missing = [c for c in drop if c not in df.columns]
    if missing:
        raise PrivacyError(f"{where}: columns {missing} (privacy.drop_columns) not found")
    df = df.drop(columns=drop).copy()
    counts = Counter({"columns_dropped": len(drop)})
    for c in p.pseudonym_columns.get(name, []):
        if c not in df.columns:
            raise PrivacyError(f"{where}: column {c!r} (privacy.pseudonym_columns) not found")
        df[c] = [key.pseudonym(v) if pd.notna(v) else None for v in df[c]]
        counts["values_pseudonymised"] += int(df[c].notna().sum())
    counts += _shift_dates(df, p.date_columns.get(name, []), key, p.max_shift_days, where)
    counts += _cap_ages(df, name, p.age_columns, where)
    return df, dict(counts)


def _cap_ages(df: pd.DataFrame, name: str, age_columns: Any, where: str) -> Counter:
    """Ages over 89 set to 90 (HIPAA Safe Harbor aggregates them into one category, "90
    or older"); ``age_columns`` None: the columns named age in any case."""
    if age_columns is None:
        cols = [c for c in df.columns if str(c).strip().lower() == "age"]
    else:
        cols = list(age_columns.get(name, []))
    counts: Counter = Counter()
    for c in cols:
        if c not in df.columns:
            raise PrivacyError(f"{where}: column {c!r} (privacy.age_columns) not found")
        v = pd.to_numeric(df[c], errors="coerce")
        text = df[c].notna() & v.isna()
        if text.any():
            raise PrivacyError(
                f"{where}: column {c!r} (privacy.age_columns) holds text; ages must be "
                "numbers of years"
            )
        old = v > 89
        df.loc[old, c] = 90
        counts["ages_over_89_set_to_90"] += int(old.sum())
    return counts


def _notes(df: pd.DataFrame, spec: Any, key: PrivacyKey, tick: Callable[[str], None]):
    deid = NoteDeidentifier(language=spec.privacy.language, mode=spec.privacy.notes, key=key)
    counts: Counter = Counter()
    texts = []
    for i, (pid, text) in enumerate(zip(df.index, df["text"], strict=True)):
        if text is None or (isinstance(text, float) and pd.isna(text)):
            texts.append(None)
            continue
        new, c = deid.deidentify(str(text), str(pid))
        counts.update(c)
        texts.append(new)
        if (i + 1) % 50 == 0:
            tick(f"notes {i + 1}/{len(df)}")
    return pd.DataFrame({"text": texts}, index=df.index), {"entities": dict(counts)}


def _images(
    df: pd.DataFrame, name: str, folder: Path, key: PrivacyKey
) -> tuple[pd.DataFrame, dict[str, Any]]:
    from PIL import Image
    from pydicom.misc import is_dicom

    files = folder / f"{name}_files"
    files.mkdir(parents=True, exist_ok=True)
    rows, counts = [], Counter()
    for pid, paths in zip(df.index, df["paths"], strict=True):
        pseud = key.pseudonym(pid)
        for k, src in enumerate(paths if isinstance(paths, list | tuple) else [paths]):
            src = Path(src)
            if is_dicom(str(src)):
                dst = files / f"{pseud}_{k}.dcm"
                rep = deidentify_dicom(src, dst, key, str(pid))
                if rep.get("status") != "deidentified":
                    counts["dicom_quarantined"] += 1
                    continue
                counts["dicom_deidentified"] += 1
            else:
                dst = files / f"{pseud}_{k}.png"
                try:
                    with Image.open(src) as im:
                        im.load()
                        clean = Image.frombytes(im.mode, im.size, im.tobytes())
                        if im.mode == "P":
                            clean.putpalette(im.getpalette())
                except OSError as err:
                    raise PrivacyError(f"{src}: image unreadable ({err})") from None
                tmp = dst.with_suffix(".tmp")
                clean.save(tmp, format="PNG")
                os.replace(tmp, dst)
                counts["images_reencoded_without_metadata"] += 1
            rows.append({"patient_id": pseud, "path": f"{name}_files/{dst.name}"})
    if counts["images_reencoded_without_metadata"]:
        counts_note = "pixels of non-DICOM images were not inspected for burned-in text"
    else:
        counts_note = ""
    return pd.DataFrame(rows), {**dict(counts), **({"note": counts_note} if counts_note else {})}


# the generic part of the signal check's exclusion reasons (the rest names the file)
_SIGNAL_REASONS = (
    "no record path",
    "window bound is not a number",
    "record file not found",
    "unreadable or corrupt record",
    "record has no samples",
    "missing channel(s)",
    "empty or negative window",
    "window outside the record",
)


def _excluded_counts(excluded: list[dict], name: str) -> dict[str, int]:
    """Rows of modality ``name`` the cohort check left out, counted by generic reason."""
    counts: Counter = Counter()
    for e in excluded:
        if e.get("modality") != name:
            continue
        reason = str(e.get("reason", ""))
        known = next((r for r in _SIGNAL_REASONS if reason.startswith(r)), None)
        counts[known or _generic(reason)] += int(e.get("count", 1) or 1)
    return dict(counts)


def _generic(reason: str) -> str:
    """An exclusion reason without its particulars (file paths, values, counts): what
    the report may say. Column names stay (``non-finite value in column 'age'``)."""
    r = redact(reason)
    r = re.split(r" in (?:/|<data>|[\w.-]+/)|[ ]?\(|: ", r, maxsplit=1)[0]
    r = re.sub(r"\d+", "N", r).strip()
    return r or "other"


def _relative(path: str, spec: Any) -> str:
    """``path`` relative to the spec's folder (errors name files this way), else its name."""
    p = Path(path)
    if spec.base_dir:
        try:
            return str(p.resolve().relative_to(Path(spec.base_dir).resolve()))
        except ValueError:
            pass
    return p.name


def _signals(
    df: pd.DataFrame,
    mspec: Any,
    spec: Any,
    folder: Path,
    key: PrivacyKey,
    tick: Callable[[str], None],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    name = mspec.name
    opts = mspec.options
    mode = opts.get("deid_annotations", "deidentify")
    if mode not in ANNOTATION_MODES:
        raise PrivacyError(
            f"modality {name!r}: options.deid_annotations is {mode!r}; expected one of "
            f"{list(ANNOTATION_MODES)}"
        )
    keep = opts.get("deid_keep_comments", list(KEEP_COMMENTS))
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise PrivacyError(
            f"modality {name!r}: options.deid_keep_comments must be a list of comment keys"
        )
    notes = NoteDeidentifier(language=spec.privacy.language, mode=spec.privacy.notes, key=key)
    texts = AnnotationTexts(mode, notes, key)
    files = folder / f"{name}_files"
    files.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    counts: Counter = Counter()
    entities: Counter = Counter()
    formats: Counter = Counter()
    rows = []
    windows = any(df[c].notna().any() for c in ("start", "stop") if c in df.columns)
    for i, (pid, src) in enumerate(zip(df.index, df["path"], strict=True)):
        src = str(src)
        if src not in done:
            rep = deidentify_signal_record(
                src,
                files,
                key,
                pid,
                where=_relative(src, spec),
                annotations=mode,
                keep_comments=keep,
                max_shift_days=spec.privacy.max_shift_days,
                texts=texts,
            )
            done[src] = f"{name}_files/{rep['name']}"
            counts.update(rep["counts"])
            entities.update(rep["entities"])
            formats[rep["format"]] += 1
        row = {"patient_id": key.pseudonym(pid), "path": done[src]}
        if windows:
            row["start"] = df["start"].iloc[i] if "start" in df.columns else None
            row["stop"] = df["stop"].iloc[i] if "stop" in df.columns else None
        rows.append(row)
        if (i + 1) % 50 == 0:
            tick(f"signals {i + 1}/{len(df)}")
    rep = {"records": dict(formats), **dict(counts)}
    if entities:
        rep["annotation_entities"] = dict(entities)
    return pd.DataFrame(rows, columns=["patient_id", "path", *(["start", "stop"] * windows)]), rep


def _labels(target: pd.DataFrame, spec: Any, key: PrivacyKey) -> tuple[pd.DataFrame, dict]:
    t = spec.target
    keep = [t.column, t.event, spec.split.column if spec.split.method == "predefined" else None]
    keep += [spec.split.group, *spec.attributes, *spec.evaluation.score_baselines]
    cols = [c for c in dict.fromkeys(k for k in keep if k) if c in target.columns]
    df = target[cols].copy()
    counts: Counter = Counter(
        {"columns_kept": len(cols), "columns_left_out": len(target.columns) - len(cols)}
    )
    group = spec.split.group
    if group and group in df.columns:
        df[group] = [key.pseudonym(v) if pd.notna(v) else None for v in df[group]]
    df2, c = _table(df, "target", spec, key)
    counts.update(c)
    return df2, dict(counts)


def _new_spec(spec: Any, written: dict[str, str]) -> dict[str, Any]:
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["dataset"] = f"{spec.dataset}-deid"
    d["dataset_options"] = {}
    d["ehr"] = None
    d["description"] = (d.get("description") or "") + " (de-identified by holomed deid)"
    # the spec's free-text caveats may name patients ("ids 339/340 duplicate 285/287")
    d["notes"] = (
        [f"{len(spec.notes)} note(s) of the identified spec left out: free text may name patients"]
        if spec.notes
        else []
    )
    for m in d["modalities"]:
        m["source"] = [written[m["name"]]]
        m["frame"] = None  # it reads its own written file now
        m["id_column"] = "patient_id"
        opts = {k: v for k, v in (m.get("options") or {}).items()}
        if m["kind"] == "text":
            opts = {k: v for k, v in opts.items() if k not in ("path_column", "order_column")}
            opts["text_column"] = "text"
        if m["kind"] == "image":
            opts["path_column"] = "path"
        if m["kind"] == "signal":
            for k in ("deid_annotations", "deid_keep_comments", "start_column", "stop_column"):
                opts.pop(k, None)
            opts["path_column"] = "path"
        if m["kind"] == "timeseries":  # written long, times in hours
            for k in ("time_column", "variable_column", "value_column", "format"):
                opts.pop(k, None)
            opts["time_unit"] = "hours"
        m["options"] = opts
    d["target"]["source"] = ["labels.csv"]
    d["target"]["id_column"] = "patient_id"
    d["privacy"] = {"pseudonymise": False, "notes": spec.privacy.notes}
    return d


def deidentify_cohort(
    spec: Any,
    out: Path | str,
    key: PrivacyKey,
    linkage: Path | str | None = None,
    tick: Callable[[str], None] | None = None,
    tables: bool | None = None,
) -> dict[str, Any]:
    """De-identify the cohort ``spec`` describes into ``out`` (module doc); returns the
    report written as ``out/deid_report.json``.

    ``tables``: for a spec with an ``ehr:`` section, de-identify the raw EHR tables
    themselves (:mod:`holomed.privacy.ehr_tables`) rather than the frames the cohort
    trains on; ``None`` (default) does so when ``privacy.ehr_tables`` is set."""
    import yaml

    if tables is None:
        tables = spec.ehr is not None and spec.privacy.ehr_tables is not None
    if tables:
        return deidentify_ehr_tables(spec, out, key, linkage=linkage, tick=tick)
    tick = tick or (lambda _m: None)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PrivacyError(f"{out}: exists and is not empty; give a new folder")
    bad = [m.name for m in spec.modalities if m.kind not in SUPPORTED]
    if bad:
        raise PrivacyError(
            f"modalities {bad}: de-identification supports kinds {list(SUPPORTED)} so far"
        )
    if linkage is not None:
        linkage = Path(linkage).resolve()
        if out.resolve() in linkage.parents:
            raise PrivacyError(f"{linkage}: the linkage table must be written outside {out}")
        if linkage.exists():
            raise PrivacyError(f"{linkage}: exists; the linkage table is never overwritten")
    t0 = time.perf_counter()
    excluded: list[dict] = []
    raw, target = raw_frames(spec, excluded)
    report: dict[str, Any] = {"modalities": {}, "patients": 0}
    written: dict[str, str] = {}
    ids: set[str] = set()
    by_frame: dict[str, str] = {}  # a dataset frame read by several modalities: one copy
    with staged_folder(out) as partial:
        for m in spec.modalities:
            frame = None if m.source else (m.frame or m.name)
            if frame in by_frame:
                written[m.name] = by_frame[frame]
                report["modalities"][m.name] = {"kind": m.kind, "same_file_as": frame}
                continue
            df = raw[m.name]
            ids.update(map(str, df["id"] if m.kind == "timeseries" else df.index))
            n = df["id"].nunique() if m.kind == "timeseries" else len(df)
            tick(f"de-identifying {m.name} ({m.kind}, {n} patients)")
            if m.kind == "image":
                table, rep = _images(df, m.name, partial, key)
            elif m.kind == "signal":
                table, rep = _signals(df, m, spec, partial, key, tick)
            else:
                if m.kind == "text":
                    df, rep = _notes(df, spec, key, tick)
                    table = df.copy()
                    table.insert(0, "patient_id", [key.pseudonym(i) for i in df.index])
                elif m.kind == "timeseries":  # long form; times are hours since the start
                    long = df[["id", "time", "variable", "value"]]
                    table = long.drop(columns="id")
                    table.insert(0, "patient_id", [key.pseudonym(i) for i in long["id"]])
                    rep = {"observations": int(len(table))}
                    df = pd.DataFrame(index=pd.Index(long["id"].unique()))
                else:
                    df, rep = _table(df, m.name, spec, key)
                    table = df.copy()
                    table.insert(0, "patient_id", [key.pseudonym(i) for i in df.index])
            fname = f"{m.name}.csv"
            table.to_csv(partial / fname, index=False)
            written[m.name] = fname
            if frame is not None:
                by_frame[frame] = fname
            report["modalities"][m.name] = {"kind": m.kind, "patients": int(len(df)), **rep}
            left_out = _excluded_counts(excluded, m.name)
            if left_out:
                report["modalities"][m.name]["excluded_by_check"] = left_out
                tick(f"{m.name}: {sum(left_out.values())} row(s) left out ({left_out})")
        labels, rep = _labels(target, spec, key)
        ids.update(map(str, labels.index))
        labels.insert(0, "patient_id", [key.pseudonym(i) for i in labels.index])
        labels.to_csv(partial / "labels.csv", index=False)
        report["labels"] = rep
        report["patients"] = len(ids)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        report["key"] = "keyed HMAC-SHA256 (the key is in no output)"
        (partial / "spec.yaml").write_text(
            yaml.safe_dump(_new_spec(spec, written), sort_keys=False)
        )
        (partial / "deid_report.json").write_text(json.dumps(report, indent=1))
        if linkage is not None:
            write_linkage(linkage, [key.pseudonym(i) for i in sorted(ids)], sorted(ids))
    return report
