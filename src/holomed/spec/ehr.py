"""The spec's ``ehr:`` section as pydantic models (:class:`EHRSpec`), checked when the
spec loads: table aliases, SQL expressions (one each, nothing that ends a statement), the
tables each part names, and error messages that name each wrong field by its dotted path.
:mod:`holomed.ehr` cuts the cohort out of the tables this section describes."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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
        raise ValueError(describe_errors(err)) from None
    return model.model_dump(mode="json")


def describe_errors(err: ValidationError) -> str:
    """A validation's errors as one line: ``field.path: message (got value)`` each,
    joined by ``; ``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("tabular", "timeseries"))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{loc or '(ehr)'}: {msg}{got_s}")
    return "; ".join(lines)
