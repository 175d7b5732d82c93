"""The index: one row per unit of prediction (the index table and its joins), with
its anchor time, target, group, attributes and tabular features, kept in DuckDB's
temp table ``_hm_units`` (:func:`build_index`)."""

from __future__ import annotations

from typing import Any

from holomed.ehr.sql import TIME_TYPES, ident, key_text_sql, time_sql
from holomed.ehr.tables import Tables
from holomed.errors import CohortError
from holomed.spec.ehr import EHRSpec, TabularSource


def _index_from(cfg: EHRSpec, tables: Tables) -> str:
    idx = cfg.index.table
    sql = f"FROM {ident(idx)} AS {ident(idx)}"
    before = [idx]
    for i, j in enumerate(cfg.joins):
        t = ident(j.table)
        if isinstance(j.keys, list):
            for c in j.keys:
                tables.column(j.table, c, f"joins.{i}.keys")
                if not any(c.lower() in tables.columns[a] for a in before):
                    raise CohortError(
                        f"ehr.joins.{i}.keys: column {c!r} not found in "
                        f"{tables.scope_text(before)} (the index side of the join)"
                    )
            sql += f" LEFT JOIN {t} AS {t} USING ({', '.join(ident(c) for c in j.keys)})"
        else:
            conds = []
            for left, right in j.keys.items():
                tables.column(j.table, right, f"joins.{i}.keys")
                tables.types(sql, before, {"k": (left, f"joins.{i}.keys")})
                conds.append(f"({left}) = {t}.{ident(right)}")
            sql += f" LEFT JOIN {t} AS {t} ON {' AND '.join(conds)}"
        before.append(j.table)
    return sql


def _check_unique(cfg: EHRSpec, tables: Tables, key_sql: str) -> None:
    """One row per index unit: a repeated key in the index table, or a join matching
    several rows, is an error naming the file."""
    n, distinct = tables.run(
        "SELECT count(_id), count(DISTINCT _id) FROM _hm_index", "counting index keys"
    ).fetchone()
    if n == distinct:
        return
    idx = cfg.index.table
    row = tables.run(
        f"SELECT {key_sql} AS k, count(*) AS n FROM {ident(idx)} AS {ident(idx)} "
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
        keys = ", ".join(ident(c) for c in cols)
        notnull = " AND ".join(f"{ident(c)} IS NOT NULL" for c in cols)
        row = tables.run(
            f"SELECT {keys}, count(*) AS n FROM {ident(j.table)} WHERE {notnull} GROUP BY ALL "
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


def build_index(
    cfg: EHRSpec, tables: Tables
) -> tuple[dict[str, dict[str, str]], dict[str, Any], list[dict], str | None]:
    """The temp table ``_hm_units``: one row per index key with its anchor time, the
    filter, target, group, attributes, tabular features and timeseries index keys.
    Returns ({tabular modality: {feature: internal column}}, the index report, per-unit
    report entries, the anchor's time unit)."""
    idx = cfg.index.table
    scope = [idx] + [j.table for j in cfg.joins]
    from_sql = _index_from(cfg, tables)
    key_col, key_type = tables.column(idx, cfg.index.key, "index.key")
    key_ref = f"{ident(idx)}.{ident(key_col)}"

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

    select = [f"{key_text_sql(key_ref, key_type)} AS _id"]
    anchor_unit = None
    for name, (e, field) in exprs.items():
        typ = types[name]
        if name == "_t0":
            sql, anchor_unit = time_sql(f"({e})", typ, f"ehr.{field} {e!r}")
        elif name == "_ok":
            if typ not in ("BOOLEAN", '"NULL"'):
                raise CohortError(f"ehr.{field}: {e!r} must be a condition; it gives {typ}")
            sql = f"coalesce(({e}), false)"
        elif name == "_g" or name.startswith("_k"):
            sql = key_text_sql(f"({e})", typ)
        else:
            if name.startswith("_f") and typ.startswith((*TIME_TYPES, "INTERVAL", "TIME")):
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
    _check_unique(cfg, tables, key_text_sql(f"{ident(idx)}.{ident(key_col)}", key_type))
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
