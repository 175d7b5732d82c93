"""The tables of the ``ehr:`` section opened in DuckDB (:class:`Tables`), with the
checks that name the file, the column and the field of the spec."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from holomed.ehr.sql import first_line, ident, literal
from holomed.errors import CohortError
from holomed.spec.ehr import EHRSpec


class Tables:
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
            opts = "".join(f", {k} = {literal(v)}" for k, v in t.options.items())
            try:
                self.con.execute(
                    f"CREATE VIEW {ident(alias)} AS SELECT * "
                    f"FROM {reader}({literal(str(path))}{opts})"
                )
                cols = self.con.execute(f"DESCRIBE {ident(alias)}").fetchall()
            except duckdb.Error as err:
                raise CohortError(
                    f"{path}: cannot read table {alias!r} ({where}): {first_line(err)}"
                ) from None
            self.columns[alias] = {c[0].lower(): (c[0], str(c[1])) for c in cols}
        spill = Path(tempfile.gettempdir()) / f"holomed-duckdb-{os.getpid()}"
        self.con.execute(f"SET temp_directory = {literal(str(spill))}")
        self.con.execute(f"SET allowed_directories = {literal(sorted(folders))}")
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

    def scope_text(self, scope: list[str]) -> str:
        return ", ".join(f"{a} ({self.paths[a]})" for a in scope)

    def types(self, from_sql: str, scope: list[str], exprs: dict[str, tuple[str, str]]) -> dict:
        """DuckDB types of ``{name: (expression, field)}`` over ``from_sql``, binding only
        (nothing is read). A wrong expression raises CohortError naming its field, the
        missing column and the files in scope."""
        if not exprs:
            return {}
        cols = ", ".join(f"({e}) AS {ident(n)}" for n, (e, _) in exprs.items())
        try:
            rows = self.con.execute(f"DESCRIBE SELECT {cols} {from_sql}").fetchall()
            return {r[0]: str(r[1]) for r in rows}
        except self.duckdb.Error:
            pass
        for n, (e, field) in exprs.items():  # find the culprit
            try:
                self.con.execute(f"DESCRIBE SELECT ({e}) AS {ident(n)} {from_sql}")
            except self.duckdb.Error as err:
                raise self._expr_error(err, e, field, scope) from None
        raise CohortError(f"ehr: the expressions over {self.scope_text(scope)} do not bind")

    def _expr_error(self, err: Exception, expr: str, field: str, scope: list[str]) -> CohortError:
        msg = str(err)
        m = re.search(r'Referenced column "([^"]+)" not found', msg)
        if m:
            return CohortError(
                f"ehr.{field}: column {m.group(1)!r} (in {expr!r}) not found in "
                f"{self.scope_text(scope)}"
            )
        m = re.search(r'"([^"]+)" does not have a column named "([^"]+)"', msg)
        if m and m.group(1) in self.paths:
            return CohortError(
                f"{self.paths[m.group(1)]}: column {m.group(2)!r} not found in table "
                f"{m.group(1)!r} (ehr.{field}: {expr!r})"
            )
        return CohortError(
            f"ehr.{field}: SQL expression {expr!r} is not valid over "
            f"{self.scope_text(scope)}: {first_line(err)}"
        )

    def run(self, sql: str, what: str) -> Any:
        try:
            return self.con.execute(sql)
        except self.duckdb.Error as err:
            raise CohortError(f"ehr: {what}: {first_line(err)}") from None
