"""Tables: CSV, TSV, Parquet and AnnData ``.h5ad`` (samples x features) into a
DataFrame indexed by patient id (strings). Errors name the file and the id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from holomed.errors import CohortError

TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".pq", ".h5ad", ".gz"}


def _read_one(path: Path, id_column: str | None, options: dict[str, Any]) -> pd.DataFrame:
    if not path.exists():
        raise CohortError(f"{path}: file not found")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".h5ad"):
            import anndata

            ad = anndata.read_h5ad(path)
            x = ad.X.toarray() if hasattr(ad.X, "toarray") else ad.X
            df = pd.DataFrame(x, index=ad.obs_names.astype(str), columns=ad.var_names.astype(str))
            df.index.name = id_column or "id"
            return df
        if suffixes.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = options.get("sep") or ("\t" if ".tsv" in suffixes or ".txt" in suffixes else ",")
            header = "infer" if options.get("header", True) else None
            df = pd.read_csv(path, sep=sep, header=header, low_memory=False)
    except CohortError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure becomes a named error
        raise CohortError(f"{path}: cannot be read as a table: {err}") from None
    if df.shape[0] == 0:
        raise CohortError(f"{path}: the table has no rows")
    if id_column is None:
        if options.get("header", True) is False:
            # no header and no id column: ids are '<prefix><row number>' (e.g. MOGONET files)
            prefix = options.get("id_prefix", path.stem + "-")
            df.index = [f"{prefix}{i:04d}" for i in range(len(df))]
            df.columns = [str(c) for c in df.columns]
            return df
        id_column = df.columns[0]
    if id_column not in df.columns:
        raise CohortError(
            f"{path}: id column {id_column!r} not found; columns are {list(df.columns)[:10]}"
        )
    ids = df[id_column]
    if ids.isna().any():
        row = int(ids.isna().to_numpy().nonzero()[0][0])
        raise CohortError(f"{path}: row {row + 2} has no patient id in column {id_column!r}")
    df = df.drop(columns=[id_column])
    df.index = ids.astype(str).str.strip()
    df.index.name = str(id_column)
    df.columns = [str(c) for c in df.columns]
    return df


def read_table(
    paths: list[str | Path], id_column: str | None = None, options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Read one or more tables (row-wise concatenation) into a frame indexed by id.

    Duplicate ids raise :class:`CohortError` naming the file(s), the id and its count.
    """
    options = options or {}
    if not paths:
        raise CohortError("no source file given")
    frames, origin = [], []
    for p in paths:
        df = _read_one(Path(p), id_column, options)
        frames.append(df)
        origin += [str(p)] * len(df)
    df = pd.concat(frames, axis=0) if len(frames) > 1 else frames[0]
    counts = df.index.value_counts()
    dups = counts[counts > 1]
    if len(dups):
        pid = dups.index[0]
        files = sorted({o for o, i in zip(origin, df.index, strict=True) if i == pid})
        raise CohortError(
            f"patient {pid!r} has {dups.iloc[0]} rows in {', '.join(files)}; expected 1"
            + (f" ({len(dups)} duplicated ids in all)" if len(dups) > 1 else "")
        )
    return df
