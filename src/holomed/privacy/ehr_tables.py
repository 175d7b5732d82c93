"""De-identify the raw EHR tables of a spec's ``ehr:`` section (``holomed deid --tables``).

:func:`holomed.privacy.cohort.deidentify_cohort` writes the frames one cohort trains on;
this module writes the *tables themselves* (MIMIC-IV style: patients, admissions,
icustays, labevents, chartevents, dictionaries), so that any later ``ehr:`` spec (other
windows, other items) can be cut from them. Settings: ``privacy.ehr_tables``
(:class:`holomed.spec.EhrTablesPrivacy`). One key, one patient, one identity:

- the **person** column (``subject_id``) gets the patient pseudonym every other modality
  gets, ``key.pseudonym(id)``; every other declared **id column** gets
  ``key.pseudonym(kind + ":" + id)`` (``kind``: the column name, or the kind declared for
  it), so the same admission gets the same pseudonym in every table (joins still work)
  and ids of different kinds never collide. Integral floats (``123.0``) are read as
  ``123``, as :mod:`holomed.ehr` reads keys;
- every **date/time** column (declared, or detected: a text column whose values are at
  least half date-like in the first chunk, or a Parquet date/timestamp column) moves by
  the row's person offset (``key.date_shift_days``, whole days in ``[-max_shift_days,
  -1]``), so intervals within a person are kept exactly across tables. A table without
  the person column finds the person through a linking table (``chartevents.stay_id`` ->
  ``icustays``); an id kind shared by several persons (providers) links nobody. A value
  that is not a date, or a row whose person is unknown, becomes missing and is counted;
  nothing is kept raw. Text dates are written ISO (``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS``, with
  fractions when present); Parquet keeps the column's type. Dates must lie between the
  years 1677 and 2262 (pandas' nanosecond range); others are counted as unreadable;
- **year** columns (``anchor_year``) move by the shift rounded to whole years;
- **free text** columns are dropped, or passed through the note de-identifier
  (:mod:`holomed.privacy.text`); **dropped** columns are removed;
- a table with none of these (``d_items``, ``d_labitems``) is scanned for date-like
  values and then copied byte for byte. Any other column is kept as written (CSV is read
  and written as text, so numbers keep their exact spelling).

Tables are read in chunks (CSV: pandas ``chunksize``; Parquet: pyarrow batches) and
written with the same relative path, format and compression (plain or ``.gz`` CSV,
Parquet) under ``OUT.partial``, renamed to ``OUT`` at the end with ``OUT/spec.yaml``
(the same spec, ``ehr.root`` = the new folder) and ``OUT/deid_report.json`` (counts per
table and column, never values). Bad input is a :class:`PrivacyError` naming the file
and the column: a missing file, a declared column not in the file, a declared date
column where no value is a date, a date-like value in an undeclared column after the
first chunk, an id of one kind tied to two persons.

Not covered: identifiers inside values of columns not declared (an id embedded in
``emar_id`` = ``<subject>-<n>`` must be declared as an id column), SQL literals in the
spec's expressions (a date or an id written in ``ehr.index.filter`` is not rewritten; a
raw person id found in the new spec is an error).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey
from holomed.privacy.outputs import write_linkage
from holomed.privacy.text import NoteDeidentifier
from holomed.runfiles import staged_folder
from holomed.spec.ehr import EHRSpec

CHUNK_ROWS = 200_000
# a whole cell that reads as a date or a date-time (ISO, or US month/day/year)
DATE_LIKE = (
    r"\s*(?:\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?|\d{1,2}/\d{1,2}/\d{4}(?: \d{1,2}:\d{2}(?::\d{2})?)?)\s*"
)
_INTEGRAL = re.compile(r"^(-?\d+)\.0*$")


@dataclass
class _File:
    src: Path
    dst: str  # relative to OUT


@dataclass
class _Table:
    alias: str
    files: list[_File]
    fmt: str  # csv | parquet
    sep: str
    new_path: str  # ehr.tables.<alias>.path in the new spec
    columns: list[str] = field(default_factory=list)


def _canon(s: pd.Series) -> pd.Series:
    """Ids as canonical text (trimmed; ``123.0`` -> ``123``; empty -> missing)."""
    if pd.api.types.is_float_dtype(s.dtype):

        def one(x: float) -> Any:
            if x != x:
                return None
            return str(int(x)) if np.isfinite(x) and float(x).is_integer() else repr(float(x))

        return s.map(one).astype("object")
    t = s.astype("object") if pd.api.types.is_object_dtype(s.dtype) else s.astype(str)
    t = t.where(s.notna(), None)
    # only values with a dot or a space can differ from their canonical text
    odd = t.str.contains(".", regex=False, na=False) | t.str.contains(" ", regex=False, na=False)
    if odd.any():
        fixed = t[odd].str.strip().str.replace(_INTEGRAL, r"\1", regex=True)
        t = t.copy()
        t[odd] = fixed.where(fixed != "", None)
    return t


def _where(t: _Table, f: _File) -> str:
    return f"{f.src} (table {t.alias!r})"


class _Run:
    """One de-identification run over the tables of one spec."""

    def __init__(self, spec: Any, key: PrivacyKey, tick: Callable[[str], None], chunk_rows: int):
        self.spec = spec
        self.cfg = EHRSpec.model_validate(spec.ehr)
        self.p = spec.privacy.ehr_tables
        self.key = key
        self.max_days = spec.privacy.max_shift_days
        self.tick = tick
        self.chunk_rows = chunk_rows
        self.kinds = {self.p.person: self.p.person, **self.p.id_columns}
        self._shift: dict[str, int] = {}
        self._pseud: dict[str, str] = {}
        self.persons: set[str] = set()
        self.not_links: set[str] = set()
        self._links: dict[str, dict[str, str]] = {}
        self.tables = self._resolve()
        self._check_settings()
        self._notes = self._tags = None
        self._hmac = hmac.new(key.secret, digestmod=hashlib.sha256)

    # -- files and settings ------------------------------------------------------------
    def _resolve(self) -> dict[str, _Table]:
        root = self.spec.resolve(self.cfg.root)
        tables = {}
        for alias, t in self.cfg.tables.items():
            raw = os.path.expandvars(os.path.expanduser(t.path))
            path = Path(raw) if Path(raw).is_absolute() else root / raw
            inside = not Path(raw).is_absolute() and ".." not in Path(raw).parts
            if any(ch in str(path) for ch in "*?["):
                srcs = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
                if not srcs:
                    raise PrivacyError(f"{path}: no file matches table {alias!r} (ehr.tables)")
            else:
                if not path.is_file():
                    raise PrivacyError(f"{path}: file of table {alias!r} not found (ehr.tables)")
                srcs = [path]
            if inside:
                files = [_File(s, str(s.relative_to(root))) for s in srcs]
                new_path = t.path
            else:
                files = [_File(s, f"tables/{alias}/{s.name}") for s in srcs]
                new_path = f"tables/{alias}/{Path(raw).name}"
            fmt = t.format or (
                "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"
            )
            sep = t.options.get("delim") or t.options.get("sep") or t.options.get("delimiter")
            sep = sep or ("\t" if ".tsv" in str(path).lower() else ",")
            for f in files:
                name = f.src.name.lower()
                if fmt == "csv" and name.endswith((".zst", ".bz2", ".xz", ".zip")):
                    raise PrivacyError(
                        f"{f.src}: compression not supported for de-identification (plain "
                        "or .gz CSV, or Parquet)"
                    )
            tables[alias] = _Table(alias, files, fmt, sep, new_path)
            tables[alias].columns = self._header(tables[alias], files[0])
            for f in files[1:]:
                if self._header(tables[alias], f) != tables[alias].columns:
                    raise PrivacyError(
                        f"{_where(tables[alias], f)}: columns differ from {files[0].src}"
                    )
        return tables

    def _header(self, t: _Table, f: _File) -> list[str]:
        try:
            if t.fmt == "parquet":
                import pyarrow.parquet as pq

                return list(pq.read_schema(f.src).names)
            return list(pd.read_csv(f.src, sep=t.sep, nrows=0, dtype=str).columns)
        except Exception as err:  # noqa: BLE001 - any reader failure names the file
            raise PrivacyError(f"{_where(t, f)}: cannot be read ({type(err).__name__})") from None

    def _check_settings(self) -> None:
        p = self.p
        for fld in ("date_columns", "year_columns", "drop_columns", "text_columns"):
            for alias, cols in getattr(p, fld).items():
                if alias not in self.tables:
                    raise PrivacyError(
                        f"privacy.ehr_tables.{fld}.{alias}: no table {alias!r} in ehr.tables "
                        f"({', '.join(self.tables)})"
                    )
                t = self.tables[alias]
                for c in cols:
                    if c not in t.columns:
                        raise PrivacyError(
                            f"{_where(t, t.files[0])}: column {c!r} (privacy.ehr_tables."
                            f"{fld}.{alias}) not found; columns are {t.columns[:30]}"
                        )
        for kind, alias in p.links.items():
            if alias not in self.tables:
                raise PrivacyError(f"privacy.ehr_tables.links.{kind}: no table {alias!r}")
            cols = self.tables[alias].columns
            if kind not in set(self.kinds.values()):
                raise PrivacyError(f"privacy.ehr_tables.links.{kind}: not an id kind")
            if not self._person_col(cols) or not any(self.kinds.get(c) == kind for c in cols):
                raise PrivacyError(
                    f"{self.tables[alias].files[0].src}: table {alias!r} "
                    f"(privacy.ehr_tables.links.{kind}) lacks the person column "
                    f"{p.person!r} or a {kind!r} column"
                )
        # what the cohort is keyed by must not stay raw
        keys = [("ehr.index.key", self.cfg.index.table, self.cfg.index.key)]
        for name, m in self.cfg.modalities.items():
            if m.kind == "timeseries":
                keys.append((f"ehr.modalities.{name}.key", m.table, m.key))
        for fld, alias, col in keys:
            if col in self.tables[alias].columns and col not in self.kinds:
                raise PrivacyError(
                    f"privacy.ehr_tables.id_columns: {col!r} ({fld}) is not declared; "
                    "the cohort's keys must be pseudonymised"
                )

    def _person_col(self, cols: list[str]) -> str | None:
        return next((c for c in cols if self.kinds.get(c) == self.p.person), None)

    # -- keys ---------------------------------------------------------------------------
    def _pseudonyms(self, values: pd.Series, kind: str) -> pd.Series:
        person = kind == self.p.person
        uniq = pd.unique(values.dropna())
        m = {}
        if person:
            for v in uniq:
                s = self._pseud.get(v)
                if s is None:
                    s = self._pseud[v] = self._mac(v)
                    self.persons.add(v)
                m[v] = s
        else:
            m = {v: self._mac(f"{kind}:{v}") for v in uniq}
        return values.map(m)

    def _mac(self, value: str) -> str:
        """``key.pseudonym(value)``, with the HMAC's keyed state computed once (a test
        checks that both agree)."""
        h = self._hmac.copy()
        h.update(("id:" + unicodedata.normalize("NFC", value).strip()).encode())
        return "P-" + h.hexdigest()[:20]

    def _days(self, persons: pd.Series) -> pd.Series:
        m = {}
        for v in pd.unique(persons.dropna()):
            d = self._shift.get(v)
            if d is None:
                d = self._shift[v] = self.key.date_shift_days(v, self.max_days)
            m[v] = d
        return persons.map(m).astype("float64")

    def _link(self, kind: str) -> dict[str, str]:
        """{id of ``kind`` -> person id} from the linking table: the one ``links`` names
        (an id there tied to two persons is an error), else the smallest table holding
        both columns (a kind whose ids are shared by persons, such as a provider, is then
        no link: empty)."""
        if kind in self._links:
            return self._links[kind]
        alias = self.p.links.get(kind)
        declared = alias is not None
        if alias is None:
            cands = [
                t
                for t in self.tables.values()
                if self._person_col(t.columns) and any(self.kinds.get(c) == kind for c in t.columns)
            ]
            if not cands:
                self._links[kind] = {}
                return {}
            alias = min(cands, key=lambda t: sum(f.src.stat().st_size for f in t.files)).alias
        t = self.tables[alias]
        pcol = self._person_col(t.columns)
        kcol = next(c for c in t.columns if self.kinds.get(c) == kind)
        self.tick(f"linking {kind} to {self.p.person} through table {alias!r}")
        link: dict[str, str] = {}
        for f in t.files:
            for df in self._chunks(t, f, [pcol, kcol]):
                pair = pd.DataFrame({"k": _canon(df[kcol]), "p": _canon(df[pcol])}).dropna()
                pair = pair.drop_duplicates()
                new = dict(zip(pair["k"], pair["p"], strict=True))
                clash = pair["k"].duplicated().any() or any(
                    link.get(k, p) != p for k, p in new.items()
                )
                if clash and declared:
                    raise PrivacyError(
                        f"{_where(t, f)}: a {kcol!r} value belongs to two {pcol!r} values; "
                        f"it cannot link rows to one person (privacy.ehr_tables.links.{kind})"
                    )
                if clash:
                    self.not_links.add(kind)
                    self._links[kind] = {}
                    return {}
                link.update(new)
        self._links[kind] = link
        return link

    # -- reading and writing ------------------------------------------------------------
    def _chunks(self, t: _Table, f: _File, usecols: list[str] | None = None):
        try:
            if t.fmt == "parquet":
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(f.src)
                for b in pf.iter_batches(batch_size=self.chunk_rows, columns=usecols):
                    yield b.to_pandas(date_as_object=False)
            else:
                yield from pd.read_csv(
                    f.src,
                    sep=t.sep,
                    dtype=str,
                    keep_default_na=False,
                    na_values=[""],
                    usecols=usecols,
                    chunksize=self.chunk_rows,
                )
        except PrivacyError:
            raise
        except Exception as err:  # noqa: BLE001 - a reader failure names the file
            raise PrivacyError(
                f"{_where(t, f)}: cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:120] if str(err) else ''})"
            ) from None

    def _notes_deid(self, tag: bool):
        if self._notes is None:
            lang, mode = self.spec.privacy.language, self.spec.privacy.notes
            self._notes = NoteDeidentifier(language=lang, mode=mode, key=self.key)
            self._tags = NoteDeidentifier(language=lang, mode="tag", key=self.key)
        return self._tags if tag else self._notes

    # -- one table ------------------------------------------------------------------------
    def table(self, t: _Table, out: Path) -> dict[str, Any]:
        p = self.p
        cols = t.columns
        drop = set(p.drop_columns.get(t.alias, []))
        text = [c for c in p.text_columns.get(t.alias, []) if c not in drop]
        if p.text == "drop":
            drop |= set(text)
            text = []
        ids = {c: self.kinds[c] for c in cols if c in self.kinds and c not in drop}
        dates = [c for c in p.date_columns.get(t.alias, []) if c not in drop]
        years = [c for c in p.year_columns.get(t.alias, []) if c not in drop]
        pcol = self._person_col(cols)
        via = None
        if pcol is None:  # a linking id: the first id column whose kind links to persons
            for c, kind in ids.items():
                if self._link(kind):
                    via = c
                    break
        c = Counter()
        counts: dict[str, Any] = {
            "format": t.fmt,
            "files": len(t.files),
            "rows": 0,
            "person": pcol or (f"via {via}" if via else None),
            "columns_dropped": sorted(drop & set(cols)),
            "ids_pseudonymised": Counter(),
            "dates_shifted": Counter(),
            "dates_unreadable_set_missing": Counter(),
            "dates_without_person_set_missing": Counter(),
            "years_shifted": Counter(),
            "text_entities": Counter(),
        }
        detected: list[str] = []
        first = True
        declared = set(dates) | set(years) | set(text) | set(ids) | drop
        for f in t.files:
            dst = out / f.dst
            dst.parent.mkdir(parents=True, exist_ok=True)
            writer = _Writer(dst, t)
            try:
                for df in self._chunks(t, f):
                    start = counts["rows"]
                    counts["rows"] += len(df)
                    df = df.drop(columns=[x for x in df.columns if x in drop])
                    # date-like values in columns nobody declared
                    for col in df.columns:
                        if col in declared or col in detected:
                            continue
                        typ = df[col].dtype
                        if pd.api.types.is_datetime64_any_dtype(typ):
                            detected.append(col)
                            continue
                        if not (
                            pd.api.types.is_object_dtype(typ) or isinstance(typ, pd.StringDtype)
                        ):
                            continue
                        s = df[col].dropna()
                        s = s.astype(str)
                        s = s[s.str.contains("-", regex=False) | s.str.contains("/", regex=False)]
                        n_like = int(s.str.fullmatch(DATE_LIKE).sum()) if len(s) else 0
                        if not n_like:
                            continue
                        n_given = int(df[col].notna().sum())
                        if first and p.detect_dates and n_like >= 0.5 * n_given:
                            detected.append(col)
                            continue
                        where = "" if first else f" from row {start + 1} on"
                        raise PrivacyError(
                            f"{_where(t, f)}: column {col!r} holds {n_like} date-like "
                            f"value(s){where} and is not declared; list it in privacy."
                            f"ehr_tables.date_columns, text_columns or drop_columns"
                        )
                    first = False
                    persons = None
                    if pcol is not None:
                        persons = _canon(df[pcol])
                    elif via is not None:
                        persons = _canon(df[via]).map(self._link(ids[via]))
                    days = (
                        self._days(persons)
                        if persons is not None
                        else pd.Series(np.nan, index=df.index)
                    )
                    for col in dates + detected:
                        self._shift_column(df, col, days, counts)
                    for col in years:
                        v = pd.to_numeric(df[col], errors="coerce")
                        v = v.where(v == np.trunc(v))
                        given = df[col].notna()
                        dy = np.round(days / 365.25)
                        new = (v + dy).where(v.notna() & dy.notna())
                        counts["years_shifted"][col] += int(new.notna().sum())
                        counts["dates_unreadable_set_missing"][col] += int((given & v.isna()).sum())
                        counts["dates_without_person_set_missing"][col] += int(
                            (v.notna() & dy.isna()).sum()
                        )
                        df[col] = new.astype("Int64")
                        if t.fmt == "csv":
                            df[col] = df[col].astype("string")
                    for col in text:
                        df[col] = self._text(df[col], persons, counts)
                    for col, kind in ids.items():
                        v = _canon(df[col])
                        df[col] = self._pseudonyms(v, kind)
                        counts["ids_pseudonymised"][col] += int(v.notna().sum())
                    writer.write(df)
                    if counts["rows"] >= self.chunk_rows:
                        self.tick(f"{t.alias}: {counts['rows']} rows")
                writer.close([x for x in cols if x not in drop])
            except BaseException:
                writer.close()
                raise
        for col in dates:
            shifted = counts["dates_shifted"][col]
            unreadable = counts["dates_unreadable_set_missing"][col]
            if unreadable and not shifted and not counts["dates_without_person_set_missing"][col]:
                raise PrivacyError(
                    f"{_where(t, t.files[0])}: column {col!r} (privacy.ehr_tables.date_columns."
                    f"{t.alias}) holds no readable date ({unreadable} value(s) unreadable)"
                )
        changed = bool(drop & set(cols) or ids or dates or detected or years or text)
        if not changed:  # a dictionary: nothing to change, so the file itself
            for f in t.files:
                shutil.copyfile(f.src, out / f.dst)
        counts["copied_unchanged"] = not changed
        counts["dates_detected"] = detected
        for k in list(counts):
            if isinstance(counts[k], Counter):
                counts[k] = {a: int(b) for a, b in counts[k].items() if b}
        return counts

    def _shift_column(self, df: pd.DataFrame, col: str, days: pd.Series, counts: dict) -> None:
        s = df[col]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            parsed, given, text = s, s.notna(), None
        else:
            text = s.astype("string").str.strip()
            given = text.notna() & (text != "")
            vals = text.where(given)
            try:
                parsed = pd.to_datetime(vals, format="ISO8601", errors="coerce")
            except (ValueError, TypeError):
                parsed = pd.to_datetime(vals, format="ISO8601", errors="coerce", utc=True)
            retry = given & parsed.isna() & vals.fillna("").str.fullmatch(DATE_LIKE)
            if retry.any():
                more = pd.to_datetime(vals[retry], format="mixed", errors="coerce")
                if getattr(more.dt, "tz", None) != getattr(parsed.dt, "tz", None):
                    more = pd.Series(pd.NaT, index=more.index, dtype=parsed.dtype)
                parsed = parsed.copy()
                parsed[retry] = more
        shifted = parsed + pd.to_timedelta(days, unit="D")
        counts["dates_shifted"][col] += int(shifted.notna().sum())
        counts["dates_unreadable_set_missing"][col] += int((given & parsed.isna()).sum())
        counts["dates_without_person_set_missing"][col] += int(
            (parsed.notna() & shifted.isna()).sum()
        )
        if text is None:
            df[col] = shifted
            return
        tz = getattr(shifted.dt, "tz", None)
        out = shifted.dt.strftime("%Y-%m-%d %H:%M:%S" + ("%z" if tz is not None else ""))
        frac = shifted.notna() & (shifted.dt.microsecond != 0)
        if frac.any():
            out = out.copy()
            out[frac] = shifted[frac].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
        date_only = ~text.fillna("").str.contains(":", regex=False)
        out = out.where(~date_only, out.str[:10])
        df[col] = out.where(shifted.notna(), None).astype("object")

    def _text(self, s: pd.Series, persons: pd.Series | None, counts: dict) -> pd.Series:
        out = []
        for i, v in enumerate(s):
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                out.append(None)
                continue
            pid = persons.iloc[i] if persons is not None else None
            pid = None if pid is None or pid is pd.NA or pid != pid else pid
            new, c = self._notes_deid(tag=pid is None).deidentify(str(v), pid)
            counts["text_entities"].update(c)
            out.append(new)
        return pd.Series(out, index=s.index, dtype="object")


class _Writer:
    """Chunks of one table to one file, in the source's format and compression."""

    def __init__(self, dst: Path, t: _Table) -> None:
        self.dst, self.t = dst, t
        self.fh = self.pq = None
        self.schema = None

    def write(self, df: pd.DataFrame) -> None:
        if self.t.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self.schema is None:
                fields = [
                    pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                    for f in table.schema
                ]
                self.schema = pa.schema(fields)
                self.pq = pq.ParquetWriter(self.dst, self.schema)
            self.pq.write_table(table.cast(self.schema))
            return
        if self.fh is None:
            if self.dst.name.lower().endswith(".gz"):
                self.fh = gzip.open(self.dst, "wt", compresslevel=6, newline="", encoding="utf-8")
            else:
                self.fh = open(self.dst, "w", newline="", encoding="utf-8")  # noqa: SIM115
            df.to_csv(self.fh, sep=self.t.sep, index=False)
        else:
            df.to_csv(self.fh, sep=self.t.sep, index=False, header=False)

    def close(self, columns: list[str] | None = None) -> None:
        """Finish the file; with ``columns`` (the run went through), a table without rows
        is still written, with its header."""
        if self.pq is not None:
            self.pq.close()
            self.pq = None
        elif self.fh is not None:
            self.fh.close()
            self.fh = None
        elif columns is not None:
            self.write(pd.DataFrame({c: pd.Series(dtype="object") for c in columns}))
            self.close()


def _new_spec(spec: Any, tables: dict[str, _Table]) -> dict[str, Any]:
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["dataset"] = f"{spec.dataset}-deid"
    d["description"] = (d.get("description") or "") + " (tables de-identified by holomed deid)"
    d["ehr"]["root"] = "."
    for alias, t in tables.items():
        d["ehr"]["tables"][alias]["path"] = t.new_path
    d["privacy"] = {"pseudonymise": False, "notes": spec.privacy.notes}
    return d


def deidentify_ehr_tables(
    spec: Any,
    out: Path | str,
    key: PrivacyKey,
    linkage: Path | str | None = None,
    tick: Callable[[str], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    """De-identify every table of ``spec.ehr.tables`` into ``out`` (module doc): the same
    layout and formats, ``out/spec.yaml`` reading them and ``out/deid_report.json``
    (returned). ``linkage``: where to write the (pseudonym, person id) table, outside
    ``out``; only when given."""
    import yaml

    tick = tick or (lambda _m: None)
    if spec.ehr is None:
        raise PrivacyError("--tables: the spec has no 'ehr' section")
    if spec.privacy.ehr_tables is None:
        raise PrivacyError(
            "privacy.ehr_tables: not set; declare the person column, the id columns and "
            "the date, text and dropped columns of the EHR tables"
        )
    own = [m.name for m in spec.modalities if m.source]
    if own:
        raise PrivacyError(
            f"modalities {own} read their own files; de-identifying the tables covers only "
            "what ehr.tables holds (run `holomed deid` without --tables for the cohort)"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PrivacyError(f"{out}: exists and is not empty; give a new folder")
    if linkage is not None:
        linkage = Path(linkage).resolve()
        if out.resolve() == linkage or out.resolve() in linkage.parents:
            raise PrivacyError(f"{linkage}: the linkage table must be written outside {out}")
        if linkage.exists():
            raise PrivacyError(f"{linkage}: exists; the linkage table is never overwritten")
    t0 = time.perf_counter()
    run = _Run(spec, key, tick, chunk_rows)
    report: dict[str, Any] = {"tables": {}}
    with staged_folder(out) as partial:
        rows = 0
        for alias, t in run.tables.items():
            tick(f"de-identifying table {alias} ({len(t.files)} file(s))")
            ts = time.perf_counter()
            rep = run.table(t, partial)
            rep["seconds"] = round(time.perf_counter() - ts, 3)
            report["tables"][alias] = rep
            rows += rep["rows"]
        new = yaml.safe_dump(_new_spec(spec, run.tables), sort_keys=False)
        tokens = set(re.findall(r"[A-Za-z0-9_.-]+", new))
        leaked = [p for p in run.persons if len(p) >= 5 and p in tokens]
        if leaked:
            raise PrivacyError(
                f"the spec names {len(leaked)} raw person id(s) (in an ehr expression?); "
                "rewrite it without ids before de-identifying"
            )
        seconds = time.perf_counter() - t0
        report.update(
            patients=len(run.persons),
            rows=rows,
            seconds=round(seconds, 2),
            rows_per_second=round(rows / seconds, 1) if seconds > 0 else None,
            id_kinds_not_linking_one_person=sorted(run.not_links),
            key="keyed HMAC-SHA256 (the key is in no output)",
            max_shift_days=run.max_days,
        )
        (partial / "spec.yaml").write_text(new)
        (partial / "deid_report.json").write_text(json.dumps(report, indent=1))
        if linkage is not None:
            ids = sorted(run.persons)
            write_linkage(linkage, [key.pseudonym(i) for i in ids], ids)
    return report
