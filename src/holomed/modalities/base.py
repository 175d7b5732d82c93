"""What every modality kind shares: the per-patient data container with its presence
mask, the preprocessor contract, and the kind registry.

Adding a kind (``timeseries``, ``signal``, ``image``, ``text``) is one module that
builds a :class:`ModalityKind` and calls :func:`register_modality`; nothing else
changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.tables import read_table
from holomed.registry import Registry

if TYPE_CHECKING:
    from holomed.spec import ModalitySpec, Spec


def rows_mask(present: np.ndarray, ndim: int) -> np.ndarray:
    """``present`` (n,) shaped to broadcast over an (n, ...) array of ``ndim`` dims."""
    return np.asarray(present, bool).reshape(-1, *([1] * (ndim - 1)))


class LazyRows:
    """A preprocessed array ``(n, *shape)`` that is not held in memory: rows are built
    on demand (``rows(idx)``), e.g. from a disk cache, so training and prediction touch
    one batch at a time. Anything else that needs the whole array gets it through
    ``np.asarray`` (``__array__``), so code written for arrays keeps working."""

    dtype = np.dtype(np.float32)

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.shape = (int(n), *shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, idx: Any) -> np.ndarray:
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis or i is None for i in parts):  # rare: index the whole array
            return np.asarray(self)[idx]
        rest: tuple = ()
        if isinstance(idx, tuple):  # rows first, then the rest within them
            idx, rest = idx[0], idx[1:]
        if isinstance(idx, (int, np.integer)):
            out = self.rows(np.asarray([idx]))[0]
        else:
            out = self.rows(np.arange(len(self))[idx])
            rest = (slice(None), *rest) if rest else ()
        return out[rest] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __getattr__(self, name: str) -> Any:
        # other ndarray methods (reshape, copy, astype ...) act on the whole array
        if name.startswith("__") or name in ("rows", "shape"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)


@dataclass
class ModalityData:
    """One modality over a cohort's patients, row ``i`` = patient ``ids[i]``.

    ``values`` holds what the kind's reader produced, aligned to the cohort's ids: a
    DataFrame (tables, omics), or for lazy kinds a list of per-patient paths. ``present``
    is ``(n,)`` bool; a row with ``present[i] == False`` is never read downstream.
    """

    kind: str
    values: Any
    present: np.ndarray
    feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.present = np.asarray(self.present, dtype=bool)

    def __len__(self) -> int:
        return len(self.present)

    def subset(self, idx: np.ndarray) -> ModalityData:
        idx = np.asarray(idx)
        if isinstance(self.values, pd.DataFrame):
            vals: Any = self.values.iloc[idx]
        elif isinstance(self.values, np.ndarray):
            vals = self.values[idx]
        else:
            vals = [self.values[i] for i in idx]
        return ModalityData(self.kind, vals, self.present[idx].copy(), list(self.feature_names))

    def masked(self, present: np.ndarray) -> ModalityData:
        """The same data with another presence mask (used to simulate missingness)."""
        return ModalityData(self.kind, self.values, np.asarray(present, bool), self.feature_names)


class Preprocessor:
    """scikit-learn style: ``fit(data) -> self`` on training patients (present rows
    only), ``transform(data) -> (n, out_dim) float32`` with NaN rows where the modality
    is absent. Fitted state saves as JSON + arrays, never pickle."""

    kind: str = ""

    def fit(self, data: ModalityData) -> Preprocessor:
        raise NotImplementedError

    def transform(self, data: ModalityData) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, data: ModalityData) -> np.ndarray:
        return self.fit(data).transform(data)

    @property
    def out_dim(self) -> int:
        return len(self.feature_names_out_)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Per-patient shape of ``transform``'s output: ``(p,)`` for vectors; kinds with
        sequences or images override it, e.g. ``(T, C)`` or ``(C, H, W)``."""
        return (self.out_dim,)

    feature_names_out_: list[str]

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """``transform``'s output as one vector per patient for classical baselines:
        ``(n, q)`` features and their names. Vector kinds return ``x`` itself; sequence
        kinds override it with summary statistics (NaN where undefined)."""
        if x.ndim == 2:
            return x, list(self.feature_names_out_)
        flat = x.reshape(len(x), -1)
        return flat, [f"f{i}" for i in range(flat.shape[1])]

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        raise NotImplementedError


@dataclass(frozen=True)
class ModalityKind:
    """A kind bundles a reader, a default preprocessor, a default encoder.
    ``encoder_for`` (optional) picks the default encoder from the preprocessing options
    when they change the output's nature (text as tokens needs ``minilm``)."""

    name: str
    read: Callable[[ModalitySpec, Spec], pd.DataFrame]
    check: Callable[[pd.DataFrame, ModalitySpec, str], tuple[pd.DataFrame, list[dict]]]
    preprocessor: type[Preprocessor]
    default_encoder: str = "mlp"
    encoder_for: Callable[[dict], str | None] | None = None
    # (preprocessing, encoder name) -> why they do not fit together, or None
    encoder_check: Callable[[dict, str], str | None] | None = None
    # every column of the kind's frame is a model input (tables, omics): such a frame
    # must not hold the target, the split or a risk-score column (checked at training)
    columns_are_inputs: bool = False

    def default_encoder_for(self, preprocessing: Any) -> str:
        if self.encoder_for is not None and isinstance(preprocessing, dict):
            return self.encoder_for(preprocessing) or self.default_encoder
        return self.default_encoder


MODALITIES: Registry[ModalityKind] = Registry("modality kind")


def register_modality(kind: ModalityKind) -> ModalityKind:
    MODALITIES.register(kind.name)(kind)
    return kind


def get_modality(name: str) -> ModalityKind:
    return MODALITIES.get(name)


def modality_names() -> list[str]:
    return MODALITIES.names()


# -- helpers shared by table-like kinds ---------------------------------------------


def read_sources(mspec: ModalitySpec, spec: Spec) -> pd.DataFrame:
    """Read a modality's source files (tables) into a frame indexed by patient id."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    paths = [spec.resolve(s) for s in mspec.source]
    for p in paths:
        if Path(p).is_dir():
            raise CohortError(
                f"{p}: modality {mspec.name!r}: 'source' is a folder; give a table file "
                "(CSV, TSV, Parquet or .h5ad)"
            )
    df = read_table(paths, mspec.id_column, mspec.options)
    if mspec.columns is not None:
        missing = [c for c in mspec.columns if c not in df.columns]
        if missing:
            raise CohortError(f"{paths[0]}: modality {mspec.name!r}: columns not found: {missing}")
        df = df[list(mspec.columns)]
    df.attrs["source"] = ", ".join(map(str, paths))  # for errors once the frame moves on
    return df


def with_columns(df: pd.DataFrame, columns: list[str], x: np.ndarray) -> pd.DataFrame:
    """``df`` with ``columns`` replaced by the float array ``x`` ``(n, len(columns))``,
    built in one step (assigning column by column is quadratic on wide omics)."""
    new = pd.DataFrame(x, index=df.index, columns=pd.Index(columns, dtype=object), copy=False)
    if len(columns) == df.shape[1] and list(df.columns) == list(columns):
        out = new
    else:
        rest = df.drop(columns=columns)
        out = pd.concat([new, rest], axis=1)[list(df.columns)]
    out.attrs = dict(df.attrs)
    return out


def to_numeric(
    df: pd.DataFrame,
    columns: list[str],
    where: str,
    hint: str = "declare it in 'categorical' if it is a category",
) -> pd.DataFrame:
    """Columns as float; text in a numeric column raises an error naming the file,
    column, patient and the offending value.

    Vectorised: numeric columns are converted as one block, and only text (object)
    columns are parsed, so 50,000 omics features take a fraction of a second."""
    columns = list(columns)
    if not columns:
        return df.copy()
    sub = df[columns]
    is_num = np.array(
        [pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in sub.dtypes],
        dtype=bool,
    )
    x = np.empty((len(df), len(columns)), dtype=float)
    if is_num.any():
        x[:, is_num] = sub.iloc[:, np.nonzero(is_num)[0]].astype(float).to_numpy(dtype=float)
    text_pos = np.nonzero(~is_num)[0]
    if len(text_pos):
        raw = sub.iloc[:, text_pos]
        values = raw.to_numpy(dtype=object)
        flat = pd.to_numeric(pd.Series(values.ravel()), errors="coerce")  # one call
        num = flat.to_numpy(dtype=float, na_value=np.nan).reshape(values.shape)
        cand = np.isnan(num) & raw.notna().to_numpy()
        if cand.any():
            rr, cc = np.nonzero(cand)
            text = np.array([str(v).strip() != "" for v in values[rr, cc]], dtype=bool)
            rr, cc = rr[text], cc[text]
            if len(cc):
                first = int(cc.min())  # the first such column, in the columns' order
                rows = rr[cc == first]
                i, col = int(rows.min()), columns[int(text_pos[first])]
                pid = df.index[i]
                raise CohortError(
                    f"{where}: column {col!r} is numeric but patient {pid!r} has text "
                    f"{values[i, first]!r} ({len(rows)} such value(s)); {hint}"
                )
        x[:, text_pos] = num
    return with_columns(df, columns, x)


def category_text(v: Any) -> Any:
    """One spelling per category: 1, 1.0 and ' 1' all become '1' (a file with a gap
    reads integer codes as floats); missing stays missing."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return pd.NA
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def finite32(x: np.ndarray) -> np.ndarray:
    """Where ``x`` stays finite as float32 (the dtype models see): False for NaN,
    +/-inf and numbers beyond float32's range (``1e308`` would become inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(np.asarray(x, dtype=float).astype(np.float32))


def refuse_missing_columns(df: Any, missing: Sequence[Any], what: str) -> None:
    """An input table without columns the model was fitted on: an error naming the file
    (when the reader recorded it), a few of the columns and, when the first of them was
    read as the patient id (a file without an id column), that too."""
    if not missing:
        return
    where = df.attrs.get("source") or f"{what} input"
    why = ""
    if df.index.name is not None and str(df.index.name) in {str(c) for c in missing}:
        why = (
            f"; its first column {str(df.index.name)!r} was read as the patient id: put an "
            "id column first (or name it in the spec's id_column)"
        )
    raise ValueError(
        f"{where}: lacks {len(missing)} column(s) the model was trained on, e.g. "
        f"{[str(c) for c in missing[:3]]} (a value may be empty, the column must be there)" + why
    )


def refuse_nonfinite(x: np.ndarray, ids: Sequence[Any], columns: Sequence[Any]) -> None:
    """A preprocessor's rows ``x`` (one per id in ``ids``) must hold finite numbers or NaN:
    the file readers leave other rows out and report them, so this only catches a cohort
    built in code, whose infinities would turn into NaN outputs or extreme scores. The
    error names the patient and column (the caller adds the modality)."""
    with np.errstate(invalid="ignore"):
        bad = ~finite32(x) & ~np.isnan(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"patient {str(ids[i])!r}, column {str(columns[j])!r}: a value that is not a "
            f"finite number ({int(bad.sum())} in all); mark it missing (NaN) or the "
            "modality absent for that patient"
        )


def nonfinite_problems(
    bad: np.ndarray, ids: Sequence[Any], columns: Sequence[str], modality: str, where: str
) -> list[dict]:
    """One ``scope: value`` problem per row of ``bad`` (rows x columns, True where a cell is
    not finite once converted to float32) that has such a cell: the row's id, its first
    such column and how many there are."""
    problems = []
    per_row = bad.sum(axis=1)
    for i in np.nonzero(per_row)[0]:
        first = int(np.nonzero(bad[i])[0][0])
        k = int(per_row[i])
        reason = (
            f"non-finite value (inf, or too large for float32) in column "
            f"{columns[first]!r} of {where}; set to missing"
            + (f" (and {k - 1} other column(s))" if k > 1 else "")
        )
        problems.append(
            {"id": str(ids[i]), "modality": modality, "reason": reason, "scope": "value",
             "count": k}
        )  # fmt: skip
    return problems


def empty_row_reason(where: str, had_nonfinite: bool) -> str:
    """Why a row lost its modality: no value at all, or only values that were not finite
    numbers (``inf``, or beyond float32's range)."""
    if had_nonfinite:
        return f"no usable value in {where}: its values were infinite or beyond float32's range"
    return f"no value at all in {where}"


def drop_nonfinite_rows(
    values: pd.DataFrame, numeric: list[str], modality: str, where: str
) -> tuple[pd.DataFrame, list[dict]]:
    """Non-finite numbers become missing; rows with no value at all lose this modality.

    A numeric cell that is not finite once converted to float32 - +/-inf, or a float64
    too large for float32 (``1e308``), which the model would see as inf - is set to
    missing (imputed later like any missing value) and counted per patient as a
    ``scope: value`` entry naming the column. A row left with no value at all is
    reported and dropped (the patient loses the modality)."""
    problems: list[dict] = []
    if not len(values):
        return values, problems
    numeric = list(numeric)
    had_bad = np.zeros(len(values), bool)
    if numeric:
        num = values[numeric].to_numpy(dtype=float)
        bad = ~finite32(num) & ~np.isnan(num)
        if bad.any():
            problems += nonfinite_problems(bad, values.index, numeric, modality, where)
            had_bad = bad.any(axis=1)
            num = num.copy()  # ``to_numpy`` may be a view of the caller's frame
            num[bad] = np.nan
            values = with_columns(values, numeric, num)
    empty_rows = values.isna().all(axis=1).to_numpy()
    for i in np.nonzero(empty_rows)[0]:
        why = empty_row_reason(where, bool(had_bad[i]))
        problems.append({"id": str(values.index[i]), "modality": modality, "reason": why})
    return (values.loc[~empty_rows] if empty_rows.any() else values), problems
