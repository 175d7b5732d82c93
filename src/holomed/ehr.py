"""Cohorts from relational EHR tables (CSV, CSV.gz, Parquet), joined and windowed by
DuckDB SQL.

The spec's ``ehr:`` section names the tables, the unit of prediction (the *index*: one
row of one table, e.g. an admission, with its anchor time), the tables joined to it,
the target, the attributes kept for subgroup analysis, and how each modality is cut
from the tables::

    ehr:
      root: $HOLOMED_DATA/mimic_iv_demo           # relative to the spec file
      tables:
        admissions: hosp/admissions.csv.gz        # alias: path under root
        patients: hosp/patients.csv.gz
        labevents: hosp/labevents.csv.gz
        d_labitems: hosp/d_labitems.csv.gz
      index: {table: admissions, key: hadm_id, time: admittime, filter: "anchor_age >= 18"}
      joins: [{table: patients, keys: subject_id}]   # left joins; one row per index unit
      target: hospital_expire_flag                 # column or SQL expression
      group: subject_id                            # -> column 'group' of the target frame
      attributes: {sex: gender, age: anchor_age}   # name: column or SQL expression
      modalities:
        demographics: {kind: tabular, columns: [gender, anchor_age, insurance]}
        labs:
          kind: timeseries
          table: labevents
          key: hadm_id          # events column holding the index key
          time: charttime
          variable: itemid
          value: valuenum       # numeric value; value_text only explains what is not
          value_text: value
          dictionary: {table: d_labitems, key: itemid, label: label}
          items: [50912, 50983]
          window: [0, 24]       # hours after the anchor time, [start, end)

Expressions (``filter``, ``target``, ``group``, ``attributes``, tabular ``columns``,
timeseries ``time``/``variable``/``value``/``filter``/``index_key``) are DuckDB SQL over
the tables in scope, referred to by alias: the index table and its joins, or the events
table. A bare name is a column. The connection may read only the folders of the listed
tables (DuckDB's ``enable_external_access = false`` with ``allowed_directories``).

Output of :func:`ehr_frames` (what :func:`holomed.cohort.build_cohort` takes):

- ``frames[name]`` for a ``tabular`` modality: one row per index unit, indexed by the
  index key as text (index name ``id``), one column per feature;
- ``frames[name]`` for a ``timeseries`` modality: long form, columns ``id`` (str),
  ``time`` (float, hours since the unit's anchor time), ``variable`` (str), ``value``
  (float), sorted by id, time, variable;
- ``target``: indexed by id, the target column (named as the spec's
  ``target.column``), the attribute columns and, when ``group`` is set, ``group``.

Reading is honest: nothing is dropped without being counted. The counts are in
``target.attrs["ehr_report"]`` (a plain dict, see :func:`ehr_frames`); the per-unit
losses (a unit without anchor time, values that are not numbers per unit and variable)
are also in one modality frame's ``attrs["reading_report"]``, which ``build_cohort``
copies into ``cohort.excluded``. Each event is counted once, under the first reason that
applies, in this order: ``no_key``, ``unmatched_key`` (its key is no index unit),
``unit_excluded`` (its unit failed the index filter or has no anchor time),
``item_not_selected``, ``excluded_by_filter``, ``no_time``, ``before_window``,
``after_window``, ``non_numeric``, else ``kept``. With ``index_key`` (events matched on a
column other than the index key, e.g. labs by ``subject_id``), an event that matches
several units is counted once per unit.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from holomed.errors import CohortError

__all__ = ["EHRSpec", "ehr_frames", "validate_ehr"]

STATUSES = (
    "no_key",
    "unmatched_key",
    "unit_excluded",
    "item_not_selected",
    "excluded_by_filter",
    "no_time",
    "before_window",
    "after_window",
    "non_numeric",
    "kept",
)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
_INT_TYPES |= {"UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_TIME_TYPES = ("TIMESTAMP", "DATE")  # prefixes: TIMESTAMP_S, TIMESTAMP WITH TIME ZONE ...


# -- the spec section ------------------------------------------------------------------


def _one_expression(v: str) -> str:
    """One SQL expression: not empty, and no statement separator or comment outside
    quotes (an expression is spliced into a SELECT; it must not end it)."""
    s = v.strip()
    if not s:
        raise ValueError("empty SQL expression")
    bare = re.sub(r"'(?:[^']|'')*'", "''", s)
    bare = re.sub(r'"(?:[^"]|"")*"', '""', bare)
    for bad in (";", "--", "/*"):
        if bad in bare:
            raise ValueError(f"SQL expression {v!r} contains {bad!r}; one expression is expected")
    return s


def _column_name(v: str) -> str:
    s = v.strip()
    if not s:
        raise ValueError("empty column name")
    return s


Expr = Annotated[str, AfterValidator(_one_expression)]
Column = Annotated[str, AfterValidator(_column_name)]


def _named(v: Any) -> Any:
    """``[a, t.b]`` -> ``{a: a, b: t.b}``: a list of columns names each output after
    its column (without the table alias)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        return v
    out: dict[str, Any] = {}
    for item in v:
        if not isinstance(item, str):
            raise ValueError(f"expected column names; got {item!r}")
        name = item.strip().split(".")[-1].strip('"')
        if name in out:
            raise ValueError(f"column {name!r} is listed twice")
        out[name] = item
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableSpec(_Strict):
    """One table: ``path`` under ``root`` (CSV, CSV.gz, TSV, Parquet or a glob of them);
    ``format`` when the suffix does not say; ``options`` go to DuckDB's ``read_csv`` /
    ``read_parquet`` (e.g. ``{types: {value: VARCHAR}}``)."""

    path: str
    format: Literal["csv", "parquet"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class IndexSpec(_Strict):
    """The unit of prediction: one row of ``table`` per unit, identified by ``key``;
    ``time`` is its anchor (column or expression; timestamps, or numbers in hours);
    ``filter`` a condition over the index table and its joins (units failing it are
    counted, not kept)."""

    table: str
    key: Column
    time: Expr | None = None
    filter: Expr | None = None


class JoinSpec(_Strict):
    """A left join of ``table`` to the index: ``keys`` is a column both have (or a list
    of them), or ``{index-side column or expression: column of table}``. Each unit must
    match at most one row. (Not ``on``: YAML reads a bare ``on`` as ``true``.)"""

    table: str
    keys: list[Column] | dict[str, Column]

    @field_validator("keys", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("keys")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if not v:
            raise ValueError("no join column given")
        return v


class TabularSource(_Strict):
    """Static features: ``columns``, a list of columns or ``{feature: expression}`` over
    the index table and its joins."""

    kind: Literal["tabular"]
    columns: dict[str, Expr]

    @field_validator("columns", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return _named(v)

    @field_validator("columns")
    @classmethod
    def _some(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("no column given")
        return v


class DictionarySpec(_Strict):
    """A dictionary table naming the items: ``key`` (default: the events' variable
    column) -> ``label``."""

    table: str
    key: Column | None = None
    label: Column = "label"


class TimeseriesSource(_Strict):
    """Events: ``table`` with ``key`` (the column holding the index key, or with
    ``index_key`` another index-side column/expression it matches), ``time``,
    ``variable`` (item code), ``value`` (numeric, or text parsed as a number) and
    optionally ``value_text`` (the raw text, used only to report what is not a number).
    ``items`` selects variables by code (a list, or ``{code: name}`` to name them);
    ``dictionary`` labels codes; ``window`` keeps ``start <= hours since anchor < end``;
    ``filter`` is a condition over the events table."""

    kind: Literal["timeseries"]
    table: str
    key: Column
    index_key: Expr | None = None
    time: Expr
    variable: Expr
    value: Expr
    value_text: Expr | None = None
    dictionary: DictionarySpec | None = None
    items: list[str] | dict[str, str] | None = None
    window: tuple[float, float] | None = None
    filter: Expr | None = None

    @field_validator("items", mode="before")
    @classmethod
    def _codes(cls, v: Any) -> Any:
        def code(x: Any) -> str:
            if isinstance(x, bool) or not isinstance(x, str | int | float):
                raise ValueError(f"an item code is a number or text; got {x!r}")
            if isinstance(x, float) and x.is_integer():
                x = int(x)
            return str(x).strip()

        if isinstance(v, list):
            return [code(x) for x in v]
        if isinstance(v, dict):
            return {code(k): str(n) for k, n in v.items()}
        return v

    @field_validator("items")
    @classmethod
    def _items_ok(cls, v: Any) -> Any:
        if v is not None and not v:
            raise ValueError("empty item selection; omit 'items' to keep every item")
        if isinstance(v, list) and len(set(v)) < len(v):
            raise ValueError(f"items listed twice: {sorted({x for x in v if v.count(x) > 1})}")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"window [{v[0]}, {v[1]}] is empty; expected [start, end] hours")
        return v


ModalitySource = Annotated[TabularSource | TimeseriesSource, Field(discriminator="kind")]


class EHRSpec(_Strict):
    """The whole ``ehr:`` section (see the module docstring)."""

    root: str = "."
    tables: dict[str, TableSpec]
    index: IndexSpec
    joins: list[JoinSpec] = Field(default_factory=list)
    target: Expr
    group: Expr | None = None
    attributes: dict[str, Expr] = Field(default_factory=dict)
    modalities: dict[str, ModalitySource]

    @field_validator("tables", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"path": p} if isinstance(p, str) else p for k, p in v.items()}
        return v

    @field_validator("tables")
    @classmethod
    def _aliases(cls, v: dict[str, TableSpec]) -> dict[str, TableSpec]:
        if not v:
            raise ValueError("no table given")
        for alias in v:
            if not _ALIAS.match(alias):
                raise ValueError(
                    f"table alias {alias!r} must start with a letter and hold letters, "
                    "digits or '_'"
                )
        return v

    @field_validator("attributes", mode="before")
    @classmethod
    def _attr_names(cls, v: Any) -> Any:
        return _named(v)

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("no modality given")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"modality name {name!r} must be letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _references(self) -> EHRSpec:
        known = set(self.tables)

        def need(alias: str, field: str) -> None:
            if alias not in known:
                raise ValueError(
                    f"{field}: table {alias!r} is not in 'tables' ({', '.join(sorted(known))})"
                )

        need(self.index.table, "index.table")
        seen = {self.index.table}
        for i, j in enumerate(self.joins):
            need(j.table, f"joins.{i}.table")
            if j.table in seen:
                raise ValueError(f"joins.{i}.table: table {j.table!r} is already in the index")
            seen.add(j.table)
        for name, m in self.modalities.items():
            if isinstance(m, TimeseriesSource):
                need(m.table, f"modalities.{name}.table")
                if m.dictionary is not None:
                    need(m.dictionary.table, f"modalities.{name}.dictionary.table")
                if self.index.time is None:
                    raise ValueError(
                        f"modalities.{name}: a timeseries needs the anchor time 'index.time'"
                    )
        return self


def validate_ehr(section: dict[str, Any]) -> dict[str, Any]:
    """The ``ehr:`` section checked and normalised (tables as ``{path, format, options}``,
    column lists as ``{name: column}``, item codes as text). Raises ``ValueError`` whose
    message names each wrong field by its dotted path under ``ehr``."""
    try:
        model = EHRSpec.model_validate(section)
    except ValidationError as err:
        raise ValueError(_describe(err)) from None
    return model.model_dump(mode="json")


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("tabular", "timeseries"))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{loc or '(ehr)'}: {msg}{got_s}")
    return "; ".join(lines)


# -- SQL helpers ------------------------------------------------------------------------


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    """A Python value as a SQL literal (for reader options)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_lit(str(k))}: {_lit(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def _key_sql(expr: str, typ: str) -> str:
    """An identifier value as canonical text: integers as digits (a float 123.0 as
    '123'), text trimmed."""
    if typ in _FLOAT_TYPES or typ.startswith("DECIMAL"):
        return (
            f"CASE WHEN ({expr}) = trunc({expr}) THEN CAST(CAST({expr} AS HUGEINT) AS VARCHAR) "
            f"ELSE CAST({expr} AS VARCHAR) END"
        )
    if typ == "VARCHAR":
        return f"nullif(trim({expr}), '')"
    return f"CAST({expr} AS VARCHAR)"


def _time_sql(expr: str, typ: str, what: str) -> tuple[str, str]:
    """A time as a number: milliseconds since 1970 for timestamps (and text that parses
    as one), else the number itself in hours. Returns (sql, 'ms' | 'hours')."""
    if typ == "TIMESTAMP WITH TIME ZONE":  # an instant: no time-zone setting involved
        return f"epoch_ms({expr})", "ms"
    if typ.startswith(_TIME_TYPES):
        return f"epoch_ms(CAST({expr} AS TIMESTAMP))", "ms"
    if typ == "VARCHAR":
        return f"epoch_ms(TRY_CAST(trim({expr}) AS TIMESTAMP))", "ms"
    if typ in _INT_TYPES or typ in _FLOAT_TYPES or typ.startswith("DECIMAL"):
        return f"CAST({expr} AS DOUBLE)", "hours"
    raise CohortError(f"{what}: a time must be a timestamp or a number of hours; got type {typ}")


def _is_numeric(typ: str) -> bool:
    return typ in _INT_TYPES or typ in _FLOAT_TYPES or typ.startswith("DECIMAL")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class _Tables:
    """An in-memory DuckDB connection with one view per table, limited to reading the
    tables' folders."""

    def __init__(self, cfg: EHRSpec, spec: Any) -> None:
        import duckdb

        self.duckdb = duckdb
        self.con = duckdb.connect()
        try:
            self._open(cfg, spec)
        except BaseException:
            self.con.close()
            raise

    def _open(self, cfg: EHRSpec, spec: Any) -> None:
        duckdb = self.duckdb
        root = spec.resolve(cfg.root)
        self.paths: dict[str, str] = {}
        self.columns: dict[str, dict[str, tuple[str, str]]] = {}
        folders = set()
        for alias, t in cfg.tables.items():
            raw = os.path.expandvars(os.path.expanduser(t.path))
            path = Path(raw) if Path(raw).is_absolute() else root / raw
            where = f"ehr.tables.{alias}"
            hint = ""
            if "$" in str(path):
                hint = " (an environment variable in the path is not set)"
            if any(ch in str(path) for ch in "*?["):
                if not glob.glob(str(path), recursive=True):
                    raise CohortError(f"{path}: no file matches table {alias!r} ({where}){hint}")
                folder = Path(re.split(r"[*?\[]", str(path))[0]).parent
            else:
                if not path.is_file():
                    raise CohortError(f"{path}: file of table {alias!r} not found ({where}){hint}")
                folder = path.parent
            folders.add(str(folder.resolve()) + os.sep)
            self.paths[alias] = str(path)
            fmt = t.format or (
                "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"
            )
            reader = "read_parquet" if fmt == "parquet" else "read_csv"
            opts = "".join(f", {k} = {_lit(v)}" for k, v in t.options.items())
            try:
                self.con.execute(
                    f"CREATE VIEW {_q(alias)} AS SELECT * FROM {reader}({_lit(str(path))}{opts})"
                )
                cols = self.con.execute(f"DESCRIBE {_q(alias)}").fetchall()
            except duckdb.Error as err:
                raise CohortError(
                    f"{path}: cannot read table {alias!r} ({where}): {_first_line(err)}"
                ) from None
            self.columns[alias] = {c[0].lower(): (c[0], str(c[1])) for c in cols}
        spill = Path(tempfile.gettempdir()) / f"holomed-duckdb-{os.getpid()}"
        self.con.execute(f"SET temp_directory = {_lit(str(spill))}")
        self.con.execute(f"SET allowed_directories = {_lit(sorted(folders))}")
        self.con.execute("SET enable_external_access = false")

    # -- checks that name the file and the column ---------------------------------------
    def column(self, alias: str, col: str, field: str) -> tuple[str, str]:
        """(name as stored, DuckDB type) of a column; CohortError naming file + column."""
        found = self.columns[alias].get(col.lower())
        if found is None:
            names = [c for c, _ in self.columns[alias].values()]
            raise CohortError(
                f"{self.paths[alias]}: column {col!r} not found in table {alias!r} "
                f"(ehr.{field}); columns are {names[:30]}"
            )
        return found

    def _scope_text(self, scope: list[str]) -> str:
        return ", ".join(f"{a} ({self.paths[a]})" for a in scope)

    def types(self, from_sql: str, scope: list[str], exprs: dict[str, tuple[str, str]]) -> dict:
        """DuckDB types of ``{name: (expression, field)}`` over ``from_sql``, binding only
        (nothing is read). A wrong expression raises CohortError naming its field, the
        missing column and the files in scope."""
        if not exprs:
            return {}
        cols = ", ".join(f"({e}) AS {_q(n)}" for n, (e, _) in exprs.items())
        try:
            rows = self.con.execute(f"DESCRIBE SELECT {cols} {from_sql}").fetchall()
            return {r[0]: str(r[1]) for r in rows}
        except self.duckdb.Error:
            pass
        for n, (e, field) in exprs.items():  # find the culprit
            try:
                self.con.execute(f"DESCRIBE SELECT ({e}) AS {_q(n)} {from_sql}")
            except self.duckdb.Error as err:
                raise self._expr_error(err, e, field, scope) from None
        raise CohortError(f"ehr: the expressions over {self._scope_text(scope)} do not bind")

    def _expr_error(self, err: Exception, expr: str, field: str, scope: list[str]) -> CohortError:
        msg = str(err)
        m = re.search(r'Referenced column "([^"]+)" not found', msg)
        if m:
            return CohortError(
                f"ehr.{field}: column {m.group(1)!r} (in {expr!r}) not found in "
                f"{self._scope_text(scope)}"
            )
        m = re.search(r'"([^"]+)" does not have a column named "([^"]+)"', msg)
        if m and m.group(1) in self.paths:
            return CohortError(
                f"{self.paths[m.group(1)]}: column {m.group(2)!r} not found in table "
                f"{m.group(1)!r} (ehr.{field}: {expr!r})"
            )
        return CohortError(
            f"ehr.{field}: SQL expression {expr!r} is not valid over "
            f"{self._scope_text(scope)}: {_first_line(err)}"
        )

    def run(self, sql: str, what: str) -> Any:
        try:
            return self.con.execute(sql)
        except self.duckdb.Error as err:
            raise CohortError(f"ehr: {what}: {_first_line(err)}") from None


# -- building the frames ------------------------------------------------------------------


def _index_from(cfg: EHRSpec, tables: _Tables) -> str:
    idx = cfg.index.table
    sql = f"FROM {_q(idx)} AS {_q(idx)}"
    before = [idx]
    for i, j in enumerate(cfg.joins):
        t = _q(j.table)
        if isinstance(j.keys, list):
            for c in j.keys:
                tables.column(j.table, c, f"joins.{i}.keys")
                if not any(c.lower() in tables.columns[a] for a in before):
                    raise CohortError(
                        f"ehr.joins.{i}.keys: column {c!r} not found in "
                        f"{tables._scope_text(before)} (the index side of the join)"
                    )
            sql += f" LEFT JOIN {t} AS {t} USING ({', '.join(_q(c) for c in j.keys)})"
        else:
            conds = []
            for left, right in j.keys.items():
                tables.column(j.table, right, f"joins.{i}.keys")
                tables.types(sql, before, {"k": (left, f"joins.{i}.keys")})
                conds.append(f"({left}) = {t}.{_q(right)}")
            sql += f" LEFT JOIN {t} AS {t} ON {' AND '.join(conds)}"
        before.append(j.table)
    return sql


def _check_unique(cfg: EHRSpec, tables: _Tables, key_sql: str) -> None:
    """One row per index unit: a repeated key in the index table, or a join matching
    several rows, is an error naming the file."""
    n, distinct = tables.run(
        "SELECT count(_id), count(DISTINCT _id) FROM _hm_index", "counting index keys"
    ).fetchone()
    if n == distinct:
        return
    idx = cfg.index.table
    row = tables.run(
        f"SELECT {key_sql} AS k, count(*) AS n FROM {_q(idx)} AS {_q(idx)} "
        "WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1 ORDER BY n DESC, k LIMIT 1",
        "checking index keys",
    ).fetchone()
    if row is not None:
        raise CohortError(
            f"{tables.paths[idx]}: key {cfg.index.key!r} = {row[0]!r} has {row[1]} rows in "
            f"table {idx!r} (ehr.index.key); expected one row per index unit"
        )
    for i, j in enumerate(cfg.joins):
        cols = j.keys if isinstance(j.keys, list) else list(j.keys.values())
        keys = ", ".join(_q(c) for c in cols)
        notnull = " AND ".join(f"{_q(c)} IS NOT NULL" for c in cols)
        row = tables.run(
            f"SELECT {keys}, count(*) AS n FROM {_q(j.table)} WHERE {notnull} GROUP BY ALL "
            "HAVING count(*) > 1 ORDER BY n DESC LIMIT 1",
            f"checking join keys of {j.table!r}",
        ).fetchone()
        if row is not None:
            shown = ", ".join(f"{c} = {v!r}" for c, v in zip(cols, row[:-1], strict=True))
            raise CohortError(
                f"{tables.paths[j.table]}: {row[-1]} rows of table {j.table!r} have "
                f"{shown} (ehr.joins.{i}.keys); a join must match at most one row per unit"
            )
    raise CohortError(f"ehr: the joins repeat index units ({n} rows for {distinct} keys)")


def _build_index(
    cfg: EHRSpec, tables: _Tables
) -> tuple[dict[str, dict[str, str]], dict[str, Any], list[dict], str | None]:
    """The temp table ``_hm_units``: one row per index key with its anchor time, the
    filter, target, group, attributes, tabular features and timeseries index keys.
    Returns ({tabular modality: {feature: internal column}}, the index report, per-unit
    report entries, the anchor's time unit)."""
    idx = cfg.index.table
    scope = [idx] + [j.table for j in cfg.joins]
    from_sql = _index_from(cfg, tables)
    key_col, key_type = tables.column(idx, cfg.index.key, "index.key")
    key_ref = f"{_q(idx)}.{_q(key_col)}"

    exprs: dict[str, tuple[str, str]] = {"_y": (cfg.target, "target")}
    if cfg.index.time is not None:
        exprs["_t0"] = (cfg.index.time, "index.time")
    if cfg.index.filter is not None:
        exprs["_ok"] = (cfg.index.filter, "index.filter")
    if cfg.group is not None:
        exprs["_g"] = (cfg.group, "group")
    for i, (a, e) in enumerate(cfg.attributes.items()):
        exprs[f"_a{i}"] = (e, f"attributes.{a}")
    feats: dict[str, dict[str, str]] = {}
    for mi, (mname, m) in enumerate(cfg.modalities.items()):
        if isinstance(m, TabularSource):
            feats[mname] = {}
            for fi, (f, e) in enumerate(m.columns.items()):
                if e.strip() == cfg.target.strip():
                    raise CohortError(
                        f"ehr.modalities.{mname}.columns.{f}: {e!r} is the target; a "
                        "feature must not be the label"
                    )
                exprs[f"_f{mi}_{fi}"] = (e, f"modalities.{mname}.columns.{f}")
                feats[mname][f] = f"_f{mi}_{fi}"
        elif m.index_key is not None:
            exprs[f"_k{mi}"] = (m.index_key, f"modalities.{mname}.index_key")
    types = tables.types(from_sql, scope, exprs)

    select = [f"{_key_sql(key_ref, key_type)} AS _id"]
    anchor_unit = None
    for name, (e, field) in exprs.items():
        typ = types[name]
        if name == "_t0":
            sql, anchor_unit = _time_sql(f"({e})", typ, f"ehr.{field} {e!r}")
        elif name == "_ok":
            if typ not in ("BOOLEAN", '"NULL"'):
                raise CohortError(f"ehr.{field}: {e!r} must be a condition; it gives {typ}")
            sql = f"coalesce(({e}), false)"
        elif name == "_g" or name.startswith("_k"):
            sql = _key_sql(f"({e})", typ)
        else:
            if name.startswith("_f") and typ.startswith((*_TIME_TYPES, "INTERVAL", "TIME")):
                raise CohortError(
                    f"ehr.{field}: {e!r} is a {typ}; a feature must be a number or a "
                    "category (e.g. hours between two times: "
                    "date_diff('minute', a, b) / 60.0)"
                )
            sql = f"({e})"
        select.append(f"{sql} AS {name}")
    tables.run(
        f"CREATE TEMP TABLE _hm_index AS SELECT {', '.join(select)} {from_sql}",
        f"reading the index table {idx!r} ({tables.paths[idx]})",
    )
    _check_unique(cfg, tables, _key_sql(f"{_q(idx)}.{_q(key_col)}", key_type))
    ok = "_ok" if "_ok" in exprs else "true"
    has_t0 = "_t0 IS NOT NULL" if "_t0" in exprs else "true"
    tables.run(
        "CREATE TEMP TABLE _hm_units AS SELECT *, "
        f"({ok} AND {has_t0}) AS _keep, {ok} AS _passes FROM _hm_index WHERE _id IS NOT NULL",
        "selecting index units",
    )
    rows, no_key = tables.run(
        "SELECT count(*), count(*) - count(_id) FROM _hm_index", "counting"
    ).fetchone()
    filtered, no_anchor, units, no_target = tables.run(
        "SELECT count(*) FILTER (WHERE NOT _passes), "
        "count(*) FILTER (WHERE _passes AND NOT _keep), count(*) FILTER (WHERE _keep), "
        "count(*) FILTER (WHERE _keep AND _y IS NULL) FROM _hm_units",
        "counting index units",
    ).fetchone()
    report = {
        "table": idx,
        "file": tables.paths[idx],
        "rows": int(rows),
        "no_key": int(no_key),
        "excluded_by_filter": int(filtered),
        "no_anchor_time": int(no_anchor),
        "units": int(units),
        "no_target": int(no_target),
    }
    entries = []
    if no_anchor:
        lost = tables.run(
            "SELECT _id FROM _hm_units WHERE _passes AND NOT _keep ORDER BY _id", "listing"
        ).fetchall()
        why = f"no anchor time {cfg.index.time!r} in {tables.paths[idx]}"
        entries = [{"id": r[0], "reason": why, "scope": "patient"} for r in lost]
    return feats, report, entries, anchor_unit


def _vocabulary(
    m: TimeseriesSource, mname: str, tables: _Tables, var_col: str | None
) -> tuple[pd.DataFrame | None, list[str]]:
    """(item code -> variable name) for the selected items (or every dictionary item),
    and the selected codes that have no label. Dictionary labels shared by several
    selected codes become ``label (code)``; names given in ``items`` are kept as given
    (codes given one name are merged on purpose)."""
    labels: dict[str, str] = {}
    if m.dictionary is not None:
        d = m.dictionary
        field = f"modalities.{mname}.dictionary"
        key = d.key or var_col
        if key is None:
            raise CohortError(
                f"ehr.{field}.key: give the dictionary's key column (the events' variable "
                f"{m.variable!r} is an expression)"
            )
        kcol, ktype = tables.column(d.table, key, f"{field}.key")
        lcol, _ = tables.column(d.table, d.label, f"{field}.label")
        pairs = tables.run(
            f"SELECT DISTINCT {_key_sql(_q(kcol), ktype)} AS k, CAST({_q(lcol)} AS VARCHAR) "
            f"FROM {_q(d.table)} WHERE k IS NOT NULL",
            f"reading the dictionary {d.table!r}",
        ).fetchall()
        for k, lab in pairs:
            if k in labels and labels[k] != lab:
                raise CohortError(
                    f"{tables.paths[d.table]}: item {k!r} has two labels ({labels[k]!r}, "
                    f"{lab!r}) in column {lcol!r} (ehr.{field})"
                )
            labels[k] = lab if lab is not None and lab.strip() else k
    if m.items is None and not labels:
        return None, []
    if isinstance(m.items, dict):
        names = dict(m.items)
        unlabelled: list[str] = []
    else:
        codes = list(m.items) if m.items is not None else sorted(labels)
        unlabelled = [c for c in codes if c not in labels] if m.dictionary is not None else []
        names = {c: labels.get(c, c) for c in codes}
        counts: dict[str, int] = {}
        for n in names.values():
            counts[n] = counts.get(n, 0) + 1
        names = {c: (f"{n} ({c})" if counts[n] > 1 else n) for c, n in names.items()}
    vocab = pd.DataFrame({"item": list(names), "variable": list(names.values())}, dtype=object)
    return vocab, unlabelled


def _build_series(
    cfg: EHRSpec, mi: int, mname: str, m: TimeseriesSource, tables: _Tables, anchor_unit: str
) -> tuple[pd.DataFrame, dict[str, Any], list[dict]]:
    """The long frame (id, time hours, variable, value) of one timeseries modality, its
    counts and its per-unit value report."""
    field = f"modalities.{mname}"
    table = m.table
    tq = _q(table)
    kcol, ktype = tables.column(table, m.key, f"{field}.key")
    var_col = None
    if re.fullmatch(r'"?[A-Za-z_][A-Za-z0-9_ ]*"?', m.variable.strip()):
        var_col = tables.column(table, m.variable.strip().strip('"'), f"{field}.variable")[0]
    for name in ("time", "value", "value_text"):
        e = getattr(m, name)
        if e is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", e.strip()):
            tables.column(table, e.strip(), f"{field}.{name}")
    exprs = {"t": (m.time, f"{field}.time"), "var": (m.variable, f"{field}.variable")}
    exprs["v"] = (m.value, f"{field}.value")
    if m.value_text is not None:
        exprs["txt"] = (m.value_text, f"{field}.value_text")
    if m.filter is not None:
        exprs["ok"] = (m.filter, f"{field}.filter")
    from_sql = f"FROM {tq} AS {tq}"
    types = tables.types(from_sql, [table], exprs)
    t_sql, unit = _time_sql(f"({m.time})", types["t"], f"ehr.{field}.time {m.time!r}")
    if unit != anchor_unit:
        raise CohortError(
            f"ehr.{field}.time: {m.time!r} is "
            f"{'a timestamp' if unit == 'ms' else 'a number of hours'} but the anchor time "
            f"{cfg.index.time!r} is not; both must be timestamps or both hours"
        )
    vt = types["v"]
    if _is_numeric(vt):
        v_sql = f"CAST(({m.value}) AS DOUBLE)"
    elif vt == "VARCHAR":
        v_sql = f"TRY_CAST(trim({m.value}) AS DOUBLE)"
    else:
        raise CohortError(f"ehr.{field}.value: {m.value!r} gives {vt}; expected a number or text")
    txt = f"CAST(({m.value_text}) AS VARCHAR)" if m.value_text else f"CAST(({m.value}) AS VARCHAR)"
    if "ok" in exprs and types["ok"] not in ("BOOLEAN", '"NULL"'):
        raise CohortError(f"ehr.{field}.filter: {m.filter!r} must be a condition")
    ok = f"coalesce(({m.filter}), false)" if m.filter else "true"

    vocab, unlabelled = _vocabulary(m, mname, tables, var_col)
    vjoin, var_out, selected = "", "_hm_e._item", "true"
    if vocab is not None:
        tables.con.register(f"_hm_vocab{mi}", vocab)
        vjoin = f"LEFT JOIN _hm_vocab{mi} AS _hm_v ON _hm_e._item = _hm_v.item"
        var_out = "coalesce(_hm_v.variable, _hm_e._item)"
        if m.items is not None:
            selected = "_hm_v.item IS NOT NULL"
    ukey = f"_k{mi}" if m.index_key is not None else "_id"
    scale = " / 3600000.0" if unit == "ms" else ""
    rel = f"(_hm_e._t - _hm_u._t0){scale}"
    lo, hi = m.window if m.window is not None else (None, None)
    before = f"WHEN {rel} < {lo!r} THEN 'before_window'" if lo is not None else ""
    after = f"WHEN {rel} >= {hi!r} THEN 'after_window'" if hi is not None else ""
    sql = f"""
        CREATE TEMP TABLE _hm_events AS
        WITH _hm_e AS (
            SELECT {_key_sql(f"{tq}.{_q(kcol)}", ktype)} AS _k, {t_sql} AS _t,
                   {_key_sql(f"({m.variable})", types["var"])} AS _item,
                   {v_sql} AS _v, {txt} AS _txt, {ok} AS _ok
            {from_sql}
        ), _hm_s AS (
            SELECT _hm_u._id, {rel} AS _time, {var_out} AS _var, _hm_e._v, _hm_e._txt,
                CASE
                    WHEN _hm_e._k IS NULL THEN 'no_key'
                    WHEN _hm_u._id IS NULL THEN 'unmatched_key'
                    WHEN NOT _hm_u._keep THEN 'unit_excluded'
                    WHEN NOT ({selected}) THEN 'item_not_selected'
                    WHEN NOT _hm_e._ok THEN 'excluded_by_filter'
                    WHEN _hm_e._t IS NULL THEN 'no_time'
                    {before}
                    {after}
                    WHEN _hm_e._v IS NULL OR NOT isfinite(_hm_e._v) THEN 'non_numeric'
                    ELSE 'kept'
                END AS _status
            FROM _hm_e
            LEFT JOIN (SELECT {ukey} AS _uk, _id, _t0, _keep FROM _hm_units) AS _hm_u
                ON _hm_e._k = _hm_u._uk
            {vjoin}
        )
        SELECT _status,
            CASE WHEN _status IN ('kept', 'non_numeric') THEN _id END AS _id,
            CASE WHEN _status = 'kept' THEN _time END AS _time,
            CASE WHEN _status IN ('kept', 'non_numeric') THEN _var END AS _var,
            CASE WHEN _status = 'kept' THEN _v END AS _v,
            CASE WHEN _status = 'non_numeric' THEN _txt END AS _txt
        FROM _hm_s
    """
    tables.run(sql, f"reading events of table {table!r} ({tables.paths[table]})")
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in tables.run(
        "SELECT _status, count(*) FROM _hm_events GROUP BY 1", "counting events"
    ).fetchall():
        counts[status] = int(n)
    long = tables.run(
        "SELECT _id AS id, _time AS time, _var AS variable, _v AS value FROM _hm_events "
        "WHERE _status = 'kept' ORDER BY id, time, variable",
        "collecting events",
    ).df()
    bad = tables.run(
        "SELECT _id, _var, count(*) FROM _hm_events WHERE _status = 'non_numeric' "
        "GROUP BY ALL ORDER BY 1, 2",
        "counting non-numeric values",
    ).fetchall()
    texts = tables.run(
        "SELECT coalesce(_txt, '(empty)') AS t, count(*) AS n FROM _hm_events "
        "WHERE _status = 'non_numeric' GROUP BY t ORDER BY n DESC, t LIMIT 10",
        "listing non-numeric values",
    ).fetchall()
    tables.run("DROP TABLE _hm_events", "cleaning up")
    if vocab is not None:
        tables.con.unregister(f"_hm_vocab{mi}")

    long = long.astype({"id": str, "time": float, "variable": str, "value": float})
    long = long.reset_index(drop=True)
    units = tables.run("SELECT count(*) FROM _hm_units WHERE _keep", "counting units").fetchone()[0]
    with_events = int(long["id"].nunique())
    wanted = list(vocab["variable"].unique()) if m.items is not None and vocab is not None else []
    report = {
        "kind": "timeseries",
        "table": table,
        "file": tables.paths[table],
        "rows": int(sum(counts.values())),
        **counts,
        "non_numeric_values": {str(t): int(n) for t, n in texts},
        "window_hours": list(m.window) if m.window is not None else None,
        "variables": int(long["variable"].nunique()),
        "variables_without_events": sorted(set(wanted) - set(long["variable"])),
        "items_without_label": unlabelled,
        "units_with_events": with_events,
        "units_without_events": int(units) - with_events,
    }
    where = tables.paths[table]
    entries = [
        {
            "id": str(pid),
            "modality": mname,
            "reason": f"value of {var!r} is not a number in {where}",
            "scope": "value",
            "count": int(n),
        }
        for pid, var, n in bad
    ]
    return long, report, entries


def ehr_frames(spec: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """``({modality name: frame}, target frame)`` from the spec's ``ehr`` section (see
    the module docstring for the frames' shapes).

    ``target.attrs["ehr_report"]`` holds the counts: ``index`` (rows read, rows without
    key, excluded by the filter, without anchor time, units kept, units without target),
    ``modalities`` (per timeseries modality: event rows per status of :data:`STATUSES`,
    the most frequent non-numeric texts, variables selected but never observed, units
    with and without events; per tabular modality its units and features) and
    ``seconds`` (wall time). Raises :class:`CohortError` naming the file and the column
    for a missing table or column, and the field for an expression that does not bind.
    """
    if spec.ehr is None:
        raise CohortError("the spec has no 'ehr' section")
    try:
        cfg = EHRSpec.model_validate(spec.ehr)
    except ValidationError as err:
        raise CohortError(f"ehr: {_describe(err)}") from None
    by_name = {m.name: m for m in spec.modalities}
    for name, m in cfg.modalities.items():
        if name not in by_name:
            raise CohortError(
                f"ehr.modalities.{name}: the spec has no modality {name!r}; its modalities "
                f"are {list(by_name)}"
            )
        if by_name[name].kind != m.kind:
            raise CohortError(
                f"ehr.modalities.{name}: kind {m.kind!r} but the spec's modality {name!r} is "
                f"of kind {by_name[name].kind!r}"
            )
    for m in spec.modalities:
        if not m.source and m.name not in cfg.modalities:
            raise CohortError(
                f"modality {m.name!r} has no 'source' and ehr.modalities does not describe it"
            )
    target_col = spec.target.column
    clash = {target_col, "group"} & set(cfg.attributes)
    if clash:
        raise CohortError(
            f"ehr.attributes: {sorted(clash)} is also the target column or 'group'; rename it"
        )
    missing = [a for a in spec.attributes if a not in cfg.attributes]
    if missing:
        raise CohortError(
            f"attributes {missing} are not produced by ehr.attributes ({list(cfg.attributes)})"
        )

    start = time.perf_counter()
    tables = _Tables(cfg, spec)
    try:
        feats, index_report, unit_entries, anchor_unit = _build_index(cfg, tables)
        frames: dict[str, pd.DataFrame] = {}
        reports: dict[str, Any] = {}
        entries: list[dict] = list(unit_entries)
        for mi, (name, m) in enumerate(cfg.modalities.items()):
            if isinstance(m, TabularSource):
                cols = ", ".join(f"{c} AS {_q(f)}" for f, c in feats[name].items())
                df = tables.run(
                    f"SELECT _id AS id, {cols} FROM _hm_units WHERE _keep ORDER BY _id",
                    f"collecting modality {name!r}",
                ).df()
                df["id"] = df["id"].astype(str)
                frames[name] = df.set_index("id")
                reports[name] = {"kind": "tabular", "units": len(df), "features": len(feats[name])}
            else:
                long, rep, ent = _build_series(cfg, mi, name, m, tables, anchor_unit)
                frames[name], reports[name] = long, rep
                entries += ent
        attr_cols = "".join(f", _a{i} AS {_q(a)}" for i, a in enumerate(cfg.attributes))
        group_col = ', _g AS "group"' if cfg.group is not None else ""
        target = tables.run(
            f"SELECT _id AS id, _y AS {_q(target_col)}{attr_cols}{group_col} "
            "FROM _hm_units WHERE _keep ORDER BY _id",
            "collecting the target",
        ).df()
    finally:
        tables.con.close()
    target["id"] = target["id"].astype(str)
    target = target.set_index("id")
    # one frame carries the per-unit entries (tabular preferred: small, cheap to copy)
    holder = next((n for n, m in cfg.modalities.items() if m.kind == "tabular"), None)
    holder = holder or next(iter(cfg.modalities))
    frames[holder].attrs["reading_report"] = entries
    target.attrs["ehr_report"] = {
        "index": index_report,
        "modalities": reports,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return frames, target
