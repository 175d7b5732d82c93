"""A timeseries modality cut from an events table (:func:`build_series`): events
matched to the index units, windowed around the anchor time, their items named by a
dictionary, and every event counted under one status of :data:`STATUSES`."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from holomed.ehr.sql import ident, is_numeric, key_text_sql, time_sql
from holomed.ehr.tables import Tables
from holomed.errors import CohortError
from holomed.spec.ehr import EHRSpec, TimeseriesSource

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


def _vocabulary(
    m: TimeseriesSource, mname: str, tables: Tables, var_col: str | None
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
            f"SELECT DISTINCT {key_text_sql(ident(kcol), ktype)} AS k, "
            f"CAST({ident(lcol)} AS VARCHAR) "
            f"FROM {ident(d.table)} WHERE k IS NOT NULL",
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


def build_series(
    cfg: EHRSpec, mi: int, mname: str, m: TimeseriesSource, tables: Tables, anchor_unit: str
) -> tuple[pd.DataFrame, dict[str, Any], list[dict]]:
    """The long frame (id, time hours, variable, value) of one timeseries modality, its
    counts and its per-unit value report."""
    field = f"modalities.{mname}"
    table = m.table
    tq = ident(table)
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
    t_sql, unit = time_sql(f"({m.time})", types["t"], f"ehr.{field}.time {m.time!r}")
    if unit != anchor_unit:
        raise CohortError(
            f"ehr.{field}.time: {m.time!r} is "
            f"{'a timestamp' if unit == 'ms' else 'a number of hours'} but the anchor time "
            f"{cfg.index.time!r} is not; both must be timestamps or both hours"
        )
    vt = types["v"]
    if is_numeric(vt):
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
            SELECT {key_text_sql(f"{tq}.{ident(kcol)}", ktype)} AS _k, {t_sql} AS _t,
                   {key_text_sql(f"({m.variable})", types["var"])} AS _item,
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
