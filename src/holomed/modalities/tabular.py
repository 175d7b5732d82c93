"""``tabular``: clinical tables (labs, demographics, lifestyle) from CSV/Parquet.

Numeric columns: median (or mean) imputation with missing-indicator columns, then
standard (or min-max) scaling. Categorical columns: one-hot, unseen categories map to
all zeros; ``transform`` counts them per column in ``unknown_categories_`` (values are
never kept). Everything is fitted on the training patients' present rows only.

The fitted state is a handful of arrays, so it is written by hand on numpy rather than
pickled scikit-learn objects: the bundle must load without executing code.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.modalities.base import (
    ModalityData,
    ModalityKind,
    Preprocessor,
    category_text,
    drop_nonfinite_rows,
    read_sources,
    refuse_missing_columns,
    refuse_nonfinite,
    register_modality,
    to_numeric,
)


def _split_columns(df: pd.DataFrame, categorical: list[str]) -> tuple[list[str], list[str]]:
    """Numeric vs categorical: declared categoricals, plus text columns in which no
    value parses as a number (a column mixing numbers and text is an error later)."""
    cat = [c for c in df.columns if c in set(categorical)]
    num = []
    for c in df.columns:
        if c in cat:
            continue
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            num.append(c)
        elif pd.to_numeric(s.dropna(), errors="coerce").notna().any() or s.dropna().empty:
            num.append(c)
        else:
            cat.append(c)
    return num, cat


def check_tabular(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    if df.shape[1] == 0:
        raise CohortError(f"{where}: modality {mspec.name!r} has no feature columns")
    unknown = [c for c in mspec.categorical if c not in df.columns]
    if unknown:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: categorical columns {unknown} are not in "
            f"the table; its columns are {list(df.columns)[:10]}"
        )
    num, cat = _split_columns(df, list(mspec.categorical))
    df = to_numeric(df, num, where)
    for c in cat:
        df[c] = df[c].map(category_text).astype("string")
    return drop_nonfinite_rows(df, num, mspec.name, where)


def _numbers(col: pd.Series) -> bool:
    """A column of numbers: numeric dtype, or (an object column) only numbers and gaps."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return True
    vals = col.dropna()
    return len(vals) > 0 and bool(
        vals.map(lambda v: isinstance(v, int | float | np.number) and not isinstance(v, bool)).all()
    )


class TabularPreprocessor(Preprocessor):
    kind = "tabular"
    OPTION_CHOICES = {"scale": ("standard", "minmax", "none"), "impute": ("median", "mean")}

    def __init__(
        self,
        impute: str = "median",
        scale: str = "standard",
        indicators: bool = True,
        max_categories: int = 50,
        categorical: list[str] | None = None,
    ) -> None:
        self.impute = impute
        self.scale = scale
        self.indicators = indicators
        self.max_categories = max_categories
        self.categorical = categorical

    def fit(self, data: ModalityData) -> TabularPreprocessor:
        df: pd.DataFrame = data.values[data.present]
        if len(df) == 0:
            raise ValueError("tabular preprocessor: no training patient has this modality")
        cat = self.categorical
        if cat is None:  # the checker left numeric columns as float, categories as text
            cat = [c for c in df.columns if not _numbers(df[c])]
        self.categorical_ = [c for c in df.columns if c in cat]
        self.numeric_ = [c for c in df.columns if c not in self.categorical_]
        x = df[self.numeric_].to_numpy(dtype=float)
        refuse_nonfinite(x, df.index, self.numeric_)
        with warnings.catch_warnings():  # a column no training patient has: filled with 0
            warnings.simplefilter("ignore", RuntimeWarning)
            center = np.nanmedian(x, 0) if self.impute == "median" else np.nanmean(x, 0)
        self.fill_ = np.nan_to_num(center, nan=0.0)
        filled = np.where(np.isnan(x), self.fill_, x)
        if self.scale == "standard":
            self.loc_, sd = filled.mean(0), filled.std(0)
        elif self.scale == "minmax":
            self.loc_, sd = filled.min(0), filled.max(0) - filled.min(0)
        else:
            self.loc_, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        with warnings.catch_warnings():  # the training range (plausibility of new values)
            warnings.simplefilter("ignore", RuntimeWarning)
            self.low_, self.high_ = np.nanmin(x, 0), np.nanmax(x, 0)
        nan_cols = np.isnan(x).any(0) if self.indicators else np.zeros(x.shape[1], bool)
        self.indicator_cols_ = [c for c, m in zip(self.numeric_, nan_cols, strict=True) if m]
        self.categories_ = {}
        for c in self.categorical_:
            vc = df[c].dropna().astype(str).value_counts()
            self.categories_[c] = sorted(vc.index[: self.max_categories].tolist())
        self.feature_names_out_ = (
            list(self.numeric_)
            + [f"{c}__missing" for c in self.indicator_cols_]
            + [f"{c}={v}" for c in self.categorical_ for v in self.categories_[c]]
        )
        return self

    def transform(self, data: ModalityData) -> np.ndarray:
        df: pd.DataFrame = data.values
        cols = self.numeric_ + self.categorical_
        refuse_missing_columns(df, [c for c in cols if c not in df.columns], "tabular")
        present = np.asarray(data.present, bool)
        x = np.full((len(df), len(self.numeric_)), np.nan)
        if present.any():  # absent rows are never read (they may hold anything)
            rows = np.flatnonzero(present)
            x[present] = df[self.numeric_].iloc[rows].to_numpy(dtype=float)
            refuse_nonfinite(x[present], df.index[rows], self.numeric_)
        nan = np.isnan(x)
        self.out_of_range_ = self._far(x)
        x = (np.where(nan, self.fill_, x) - self.loc_) / self.scale_
        parts = [x]
        if self.indicator_cols_:
            idx = [self.numeric_.index(c) for c in self.indicator_cols_]
            parts.append(nan[:, idx].astype(float))
        # columns of this input the model does not read (counted so that predict says so)
        used = set(self.numeric_) | set(self.categorical_)
        self.unused_columns_ = [str(c) for c in df.columns if c not in used]
        self.unknown_categories_ = {}
        for c in self.categorical_:
            s = df[c].map(category_text).astype("string")
            # a category the training patients did not have (or beyond max_categories)
            # becomes all zeros; counted so that predict can say so (counts, not values)
            unknown = int((s.notna() & ~s.isin(self.categories_[c]) & data.present).sum())
            if unknown:
                self.unknown_categories_[c] = unknown
            parts.append(
                np.stack([(s == v).fillna(False).to_numpy(bool) for v in self.categories_[c]], 1)
                if self.categories_[c]
                else np.zeros((len(df), 0))
            )
        out = np.concatenate(parts, axis=1).astype(np.float32)
        out[~data.present] = np.nan
        return out

    def _far(self, x: np.ndarray) -> dict[str, list[int]]:
        """Rows (positions) per column whose value lies beyond the training range by more
        than that range's own width: a unit or typing error more likely than a patient
        (age 1e30, a weight in grams). Counted, never changed; bundles saved before the
        range was kept check nothing."""
        low, high = getattr(self, "low_", None), getattr(self, "high_", None)
        if low is None or high is None or x.size == 0:
            return {}
        width = np.where(high > low, high - low, np.maximum(np.abs(high), 1.0))
        with np.errstate(invalid="ignore"):
            far = (x < low - width) | (x > high + width)
        far &= np.isfinite(low) & np.isfinite(high)
        return {c: np.flatnonzero(far[:, j]).tolist() for j, c in enumerate(self.numeric_)
                if far[:, j].any()}  # fmt: skip

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "impute": self.impute,
            "scale": self.scale,
            "indicators": self.indicators,
            "max_categories": self.max_categories,
            "numeric": self.numeric_,
            "categorical": self.categorical_,
            "indicator_cols": self.indicator_cols_,
            "categories": self.categories_,
            "feature_names_out": self.feature_names_out_,
        }
        arrays = {"fill": self.fill_, "loc": self.loc_, "scale": self.scale_}
        if getattr(self, "low_", None) is not None:
            arrays.update(low=self.low_, high=self.high_)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TabularPreprocessor:
        p = cls(meta["impute"], meta["scale"], meta["indicators"], meta["max_categories"])
        p.numeric_, p.categorical_ = list(meta["numeric"]), list(meta["categorical"])
        p.indicator_cols_, p.categories_ = list(meta["indicator_cols"]), dict(meta["categories"])
        p.feature_names_out_ = list(meta["feature_names_out"])
        p.fill_, p.loc_, p.scale_ = arrays["fill"], arrays["loc"], arrays["scale"]
        p.low_, p.high_ = arrays.get("low"), arrays.get("high")  # older bundles: none
        return p


TABULAR = register_modality(
    ModalityKind(
        name="tabular",
        read=read_sources,
        check=check_tabular,
        preprocessor=TabularPreprocessor,
        default_encoder="mlp",
        columns_are_inputs=True,
    )
)
