"""The frames of an EHR cohort (:func:`ehr_frames`): the modality frames and the target
frame, with the counts of everything read, cut from the tables by DuckDB SQL."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from pydantic import ValidationError

from holomed.ehr.index import build_index
from holomed.ehr.series import build_series
from holomed.ehr.sql import ident
from holomed.ehr.tables import Tables
from holomed.errors import CohortError
from holomed.spec.ehr import EHRSpec, TabularSource, describe_errors


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
        raise CohortError(f"ehr: {describe_errors(err)}") from None
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
    tables = Tables(cfg, spec)
    try:
        feats, index_report, unit_entries, anchor_unit = build_index(cfg, tables)
        frames: dict[str, pd.DataFrame] = {}
        reports: dict[str, Any] = {}
        entries: list[dict] = list(unit_entries)
        for mi, (name, m) in enumerate(cfg.modalities.items()):
            if isinstance(m, TabularSource):
                cols = ", ".join(f"{c} AS {ident(f)}" for f, c in feats[name].items())
                df = tables.run(
                    f"SELECT _id AS id, {cols} FROM _hm_units WHERE _keep ORDER BY _id",
                    f"collecting modality {name!r}",
                ).df()
                df["id"] = df["id"].astype(str)
                frames[name] = df.set_index("id")
                reports[name] = {"kind": "tabular", "units": len(df), "features": len(feats[name])}
            else:
                long, rep, ent = build_series(cfg, mi, name, m, tables, anchor_unit)
                frames[name], reports[name] = long, rep
                entries += ent
        attr_cols = "".join(f", _a{i} AS {ident(a)}" for i, a in enumerate(cfg.attributes))
        group_col = ', _g AS "group"' if cfg.group is not None else ""
        target = tables.run(
            f"SELECT _id AS id, _y AS {ident(target_col)}{attr_cols}{group_col} "
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
