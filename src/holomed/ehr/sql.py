"""SQL text for DuckDB: quoted identifiers and literals, and the expressions that
turn keys into canonical text and times into numbers, chosen by the column's type."""

from __future__ import annotations

from typing import Any

from holomed.errors import CohortError

INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
INT_TYPES |= {"UINTEGER", "UBIGINT", "UHUGEINT"}
FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
TIME_TYPES = ("TIMESTAMP", "DATE")  # prefixes: TIMESTAMP_S, TIMESTAMP WITH TIME ZONE ...


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A Python value as a SQL literal (for reader options)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def key_text_sql(expr: str, typ: str) -> str:
    """An identifier value as canonical text: integers as digits (a float 123.0 as
    '123'), text trimmed."""
    if typ in FLOAT_TYPES or typ.startswith("DECIMAL"):
        return (
            f"CASE WHEN ({expr}) = trunc({expr}) THEN CAST(CAST({expr} AS HUGEINT) AS VARCHAR) "
            f"ELSE CAST({expr} AS VARCHAR) END"
        )
    if typ == "VARCHAR":
        return f"nullif(trim({expr}), '')"
    return f"CAST({expr} AS VARCHAR)"


def time_sql(expr: str, typ: str, what: str) -> tuple[str, str]:
    """A time as a number: milliseconds since 1970 for timestamps (and text that parses
    as one), else the number itself in hours. Returns (sql, 'ms' | 'hours')."""
    if typ == "TIMESTAMP WITH TIME ZONE":  # an instant: no time-zone setting involved
        return f"epoch_ms({expr})", "ms"
    if typ.startswith(TIME_TYPES):
        return f"epoch_ms(CAST({expr} AS TIMESTAMP))", "ms"
    if typ == "VARCHAR":
        return f"epoch_ms(TRY_CAST(trim({expr}) AS TIMESTAMP))", "ms"
    if typ in INT_TYPES or typ in FLOAT_TYPES or typ.startswith("DECIMAL"):
        return f"CAST({expr} AS DOUBLE)", "hours"
    raise CohortError(f"{what}: a time must be a timestamp or a number of hours; got type {typ}")


def is_numeric(typ: str) -> bool:
    """Whether a DuckDB type holds numbers (integers, floats, decimals)."""
    return typ in INT_TYPES or typ in FLOAT_TYPES or typ.startswith("DECIMAL")


def first_line(err: Exception) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
