"""Tables: CSV, TSV, Parquet and AnnData ``.h5ad`` (samples x features) into a
DataFrame indexed by patient id (strings). Errors name the file and the id.

Ids are text, never numbers: a CSV's id column is read as written (``00007`` stays
``00007``; ``NA`` is an id, not a missing value), surrounding spaces are stripped and
the text is put in Unicode NFC form (:func:`id_text`), so that one patient's id is
spelled alike in every modality's file and in the label table."""

from __future__ import annotations

import unicodedata
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError

TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".pq", ".h5ad", ".gz"}


def _one_id(v: Any) -> str:
    # a number stored as float (a Parquet column with a gap) is written without '.0'
    if isinstance(v, float | np.floating) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def id_text(values: Any, where: str) -> pd.Series:
    """Patient ids as text: strings kept as written (no type inference), numbers (a
    Parquet or AnnData id column) written as integers when they are whole, surrounding
    spaces stripped, Unicode NFC form. Ids that NFC changed (a composed and a decomposed
    accent look alike but differ) raise a warning naming ``where`` and the first row, so
    that ids that look alike match across files. Missing ids stay missing (NaN)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    missing = s.isna().to_numpy()
    if pd.api.types.is_string_dtype(s) or s.dtype == object:
        text = s.map(lambda v: v if isinstance(v, str) else _one_id(v), na_action="ignore")
    else:
        text = s.map(_one_id, na_action="ignore")
    text = text.astype(object).where(~missing, np.nan)
    text = text.map(lambda v: v.strip(), na_action="ignore")
    ascii_only = text.map(lambda v: v.isascii(), na_action="ignore").fillna(True).all()
    if not ascii_only:
        nfc = text.map(lambda v: unicodedata.normalize("NFC", v), na_action="ignore")
        changed = (nfc != text).to_numpy() & ~missing
        if changed.any():
            row = int(changed.nonzero()[0][0])
            warnings.warn(
                f"{where}: {int(changed.sum())} patient id(s) were not in Unicode NFC form "
                f"and were normalised (first at data row {row + 1}); ids that look alike "
                "now match across files",
                UserWarning,
                stacklevel=2,
            )
        text = nfc
    return text


def read_ids(column: pd.Series, path: str | Path, name: Any) -> pd.Series:
    """A table's id column through :func:`id_text`; a row without an id (empty or
    blank) is a :class:`CohortError` naming the file, the row (as a spreadsheet counts
    it, header = row 1) and the column."""
    ids = id_text(column, str(path))
    blank = (ids.isna() | (ids == "")).to_numpy()
    if blank.any():
        row = int(blank.nonzero()[0][0])
        raise CohortError(f"{path}: row {row + 2} has no patient id in column {name!r}")
    return ids


def _unique_header(path: Path, sep: str) -> None:
    """pandas renames a repeated column name (``g002`` -> ``g002.1``): two columns of
    one name are an error naming the file and the column instead."""
    names = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0].tolist()
    seen: set[str] = set()
    for i, n in enumerate(names):
        if isinstance(n, str) and n in seen:
            raise CohortError(
                f"{path}: column {n!r} appears more than once in the header (again as "
                f"column {i + 1}); rename or remove the repeat"
            )
        seen.add(n)


def _read_one(path: Path, id_column: str | None, options: dict[str, Any]) -> pd.DataFrame:
    if not path.exists():
        raise CohortError(f"{path}: file not found")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".h5ad"):
            import anndata

            ad = anndata.read_h5ad(path)
            x = ad.X.toarray() if hasattr(ad.X, "toarray") else ad.X
            ids = id_text(pd.Series(list(ad.obs_names)), str(path))
            df = pd.DataFrame(x, index=ids.to_numpy(), columns=ad.var_names.astype(str))
            df.index.name = id_column or "id"
            return df
        if suffixes.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = options.get("sep") or ("\t" if ".tsv" in suffixes or ".txt" in suffixes else ",")
            header = "infer" if options.get("header", True) else None
            # the id column as written: no number parsing, no NA detection (files
            # without a header or an id column get row ids instead)
            key = 0 if id_column is None else id_column
            conv = {} if header is None and id_column is None else {key: str}
            df = pd.read_csv(path, sep=sep, header=header, low_memory=False, converters=conv)
            if header is not None:
                _unique_header(path, sep)
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
    ids = read_ids(df[id_column], path, id_column)
    del df[id_column]  # in place: ``drop`` would copy every other column (wide omics)
    df.index = pd.Index(ids.to_numpy(), dtype=object)
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
