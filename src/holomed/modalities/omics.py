"""``omics``: samples x features matrices (gene expression, methylation, miRNA) from
CSV/TSV/Parquet or AnnData ``.h5ad``.

Preprocessing, fitted on training patients only: optional ``log1p``; a variance filter
(keep the ``variance_top_k`` most variable features and/or those above
``min_variance``); mean imputation of missing entries; standardisation; optional
reduction to ``dim`` components by PCA (scikit-learn) or by an autoencoder trained on
the training rows (the bottleneck becomes the features).

Memory: a cohort's matrix can be most of the process (1M patients x 100 features is
400 MB as float32). Loading keeps a float32 source float32 and checks it for non-finite
values block by block; the preprocessor computes its statistics over blocks of rows
(two passes, float64 sums), so neither holds a float64 copy of the whole matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.modalities.base import (
    ModalityData,
    ModalityKind,
    Preprocessor,
    empty_row_reason,
    finite32,
    nonfinite_problems,
    read_sources,
    refuse_missing_columns,
    refuse_nonfinite,
    register_modality,
    to_numeric,
    with_columns,
)

# values per block of rows (8 MB as float64): statistics, checks and transforms work
# on blocks this size, never on a float64 copy of the whole matrix
BLOCK_VALUES = 1 << 20
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _row_blocks(positions: np.ndarray, width: int) -> Iterator[np.ndarray]:
    """``positions`` in consecutive blocks of about :data:`BLOCK_VALUES` values."""
    step = max(1, BLOCK_VALUES // max(1, width))
    for s in range(0, len(positions), step):
        yield positions[s : s + step]


def _as_float(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The omics frame as floats. Already float32 or float64: kept as it is (a float32
    file stays float32, no float64 copy). Other numbers (ints, bools, nullable ints): one
    float64 copy. Text anywhere: :func:`~holomed.modalities.base.to_numeric`, whose
    error names the file, column, patient and value."""
    dtypes = list(df.dtypes)
    if all(isinstance(t, np.dtype) and t in _FLOATS for t in dtypes) and len(set(dtypes)) == 1:
        return df
    if all(pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in dtypes):
        out = df.astype(np.float64)
        out.attrs = dict(df.attrs)
        return out
    hint = "omics values are numbers: fix or blank the value, or drop the column"
    return to_numeric(df, list(df.columns), where, hint)


def _drop_nonfinite(df: pd.DataFrame, modality: str, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """What :func:`~holomed.modalities.base.drop_nonfinite_rows` does to an all-float
    frame - the same problems, reasons and result - read block by block: a copy of the
    frame is made only when a value has to be set to missing."""
    problems: list[dict] = []
    n, p = df.shape
    if not n:
        return df, problems
    columns = list(df.columns)
    bad_rows: list[np.ndarray] = []
    bad_cols: list[np.ndarray] = []
    empty = np.zeros(n, bool)
    had_bad = np.zeros(n, bool)
    for rows in _row_blocks(np.arange(n), p):
        x = df.iloc[rows[0] : rows[-1] + 1].to_numpy()
        nan = np.isnan(x)
        bad = ~(np.isfinite(x) if x.dtype == np.float32 else finite32(x)) & ~nan
        if bad.any():
            ids = df.index[rows[0] : rows[-1] + 1]
            problems += nonfinite_problems(bad, ids, columns, modality, where)
            rr, cc = np.nonzero(bad)
            bad_rows.append(rr + rows[0])
            bad_cols.append(cc)
            had_bad[rows[0] : rows[-1] + 1] = bad.any(axis=1)
        empty[rows[0] : rows[-1] + 1] = (nan | bad).all(axis=1)
    if bad_rows:
        x = df.to_numpy(copy=True)  # the caller's frame is never written to
        x[np.concatenate(bad_rows), np.concatenate(bad_cols)] = np.nan
        df = with_columns(df, columns, x)
    for i in np.nonzero(empty)[0]:
        why = empty_row_reason(where, bool(had_bad[i]))
        problems.append({"id": str(df.index[i]), "modality": modality, "reason": why})
    return (df.loc[~empty] if empty.any() else df), problems


def check_omics(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    if df.shape[1] == 0:
        raise CohortError(f"{where}: modality {mspec.name!r} has no feature columns")
    return _drop_nonfinite(_as_float(df, where), mspec.name, where)


def _autoencoder(in_dim: int, dim: int, hidden: int):
    import torch.nn as nn

    enc = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
    dec = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, in_dim))
    return enc, dec


class OmicsPreprocessor(Preprocessor):
    kind = "omics"

    def __init__(
        self,
        log1p: bool = False,
        variance_top_k: int | None = None,
        min_variance: float = 0.0,
        standardize: bool = True,
        reduce: str | None = None,
        dim: int = 32,
        ae_hidden: int = 128,
        ae_epochs: int = 300,
        seed: int = 0,
    ) -> None:
        self.log1p = log1p
        self.variance_top_k = variance_top_k
        self.min_variance = min_variance
        self.standardize = standardize
        self.reduce = reduce
        self.dim = dim
        self.ae_hidden = ae_hidden
        self.ae_epochs = ae_epochs
        self.seed = seed

    def _base(self, x: np.ndarray) -> np.ndarray:
        """A block of rows as float64 in C order (sums over rows then run in one order,
        whatever the frame's layout), through ``log1p`` when asked."""
        x = np.asarray(x, dtype=float, order="C")
        if self.log1p:
            with np.errstate(invalid="ignore"):
                if (x <= -1).any():  # NaN compares False, as ``nanmin`` ignores it
                    raise ValueError("log1p needs values > -1; this omics matrix has smaller ones")
            x = np.log1p(x)
        return x

    def _blocks(
        self, df: pd.DataFrame, rows: np.ndarray, cols: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, float64 block) over ``rows`` of ``df`` (columns ``cols``); the
        blocks depend on the rows read only, so the same rows give the same sums."""
        if cols is not None and np.array_equal(cols, np.arange(df.shape[1])):
            cols = None  # every column, in order
        width = df.shape[1] if cols is None else len(cols)
        for pos in _row_blocks(rows, width):
            # consecutive rows (the usual case) as a slice: a view, not a copy
            at: Any = slice(pos[0], pos[-1] + 1) if pos[-1] - pos[0] + 1 == len(pos) else pos
            part = df.iloc[at]
            if cols is not None:  # rows first: ``iloc[rows, cols]`` copies whole columns
                part = part.iloc[:, cols]
            x = part.to_numpy(dtype=float)
            refuse_nonfinite(x, part.index, part.columns)
            yield pos, self._base(x)

    def fit(self, data: ModalityData) -> OmicsPreprocessor:
        if self.reduce not in (None, "pca", "autoencoder"):
            raise ValueError(
                f"omics reduce must be null, 'pca' or 'autoencoder'; got {self.reduce!r}"
            )
        df: pd.DataFrame = data.values
        rows = np.flatnonzero(data.present)
        if len(rows) == 0:
            raise ValueError("omics preprocessor: no training patient has this modality")
        # pass 1: counts, sums, extremes per feature; pass 2: squares about the mean.
        # Over blocks of rows in float64: no float64 copy of the training matrix.
        p = df.shape[1]
        count, total = np.zeros(p), np.zeros(p)
        low, high = np.full(p, np.inf), np.full(p, -np.inf)
        for _, x in self._blocks(df, rows):
            nan = np.isnan(x)
            count += (~nan).sum(0)
            total += np.where(nan, 0.0, x).sum(0)
            low = np.fmin(low, np.where(nan, np.inf, x).min(0))
            high = np.fmax(high, np.where(nan, -np.inf, x).max(0))
        seen = count > 0
        mean = np.divide(total, count, out=np.full(p, np.nan), where=seen)
        squares = np.zeros(p)
        for _, x in self._blocks(df, rows):
            d = x - mean
            squares += np.where(np.isnan(d), 0.0, d * d).sum(0)
        squares[low == high] = 0.0  # a constant feature: exactly 0, whatever the rounding
        # ``nanvar`` (ddof 0): NaN for a feature without any value
        var = np.divide(squares, count, out=np.full(p, np.nan), where=seen)
        keep = np.nan_to_num(var, nan=0.0) > self.min_variance
        if self.variance_top_k and keep.sum() > self.variance_top_k:
            order = np.argsort(-np.where(keep, var, -np.inf), kind="stable")
            keep = np.zeros_like(keep)
            keep[order[: self.variance_top_k]] = True
        self.columns_ = [c for c, k in zip(df.columns, keep, strict=True) if k]
        if not self.columns_:
            raise ValueError("omics variance filter removed every feature")
        self.mean_ = np.nan_to_num(mean[keep])
        if self.standardize:
            # the std of the mean-imputed column: its imputed entries add nothing
            sd = np.sqrt(squares[keep] / len(rows))
        else:
            sd = np.ones(len(self.columns_))
        self.sd_ = np.where(sd > 1e-12, sd, 1.0)
        self.arrays_: dict[str, np.ndarray] = {}
        if self.reduce == "pca":
            from sklearn.decomposition import PCA

            z = self._standardised(df, rows, np.flatnonzero(keep), np.float64)
            k = min(self.dim, *z.shape)
            pca = PCA(n_components=k, random_state=self.seed).fit(z)
            self.arrays_ = {"pca_components": pca.components_, "pca_mean": pca.mean_}
            self.feature_names_out_ = [f"pc{i + 1}" for i in range(k)]
        elif self.reduce == "autoencoder":
            # the network trains in float32: the matrix is built as float32 directly
            self._fit_autoencoder(self._standardised(df, rows, np.flatnonzero(keep), np.float32))
            self.feature_names_out_ = [f"ae{i + 1}" for i in range(self.dim)]
        else:
            self.feature_names_out_ = list(self.columns_)
        return self

    def _standardised(
        self, df: pd.DataFrame, rows: np.ndarray, cols: np.ndarray, dtype: Any
    ) -> np.ndarray:
        """Imputed, standardised ``rows`` x ``cols`` (the fitted features), built block
        by block into one array of ``dtype``."""
        z = np.empty((len(rows), len(cols)), dtype)
        s = 0
        for pos, x in self._blocks(df, rows, cols):
            z[s : s + len(pos)] = (np.where(np.isnan(x), self.mean_, x) - self.mean_) / self.sd_
            s += len(pos)
        return z

    def _fit_autoencoder(self, z: np.ndarray) -> None:
        import torch

        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        enc, dec = _autoencoder(z.shape[1], self.dim, self.ae_hidden)
        xt = torch.as_tensor(z, dtype=torch.float32)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, weight_decay=1e-4)
        for _ in range(self.ae_epochs):
            noisy = xt + 0.1 * torch.randn(xt.shape, generator=g)  # denoising objective
            loss = torch.nn.functional.mse_loss(dec(enc(noisy)), xt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.arrays_ = {f"ae.{k}": v.detach().numpy() for k, v in enc.state_dict().items()}

    def transform(self, data: ModalityData) -> np.ndarray:
        df: pd.DataFrame = data.values
        refuse_missing_columns(df, [c for c in self.columns_ if c not in df.columns], "omics")
        out = np.full((len(df), len(self.feature_names_out_)), np.nan, np.float32)
        rows = np.flatnonzero(np.asarray(data.present, bool))
        if not len(rows):
            return out
        if not df.columns.is_unique:  # positions are ambiguous: select by name once
            df = df[self.columns_]
        cols = df.columns.get_indexer(self.columns_)
        enc = None
        if self.reduce == "autoencoder":
            import torch

            enc, _ = _autoencoder(len(self.columns_), self.dim, self.ae_hidden)
            enc.load_state_dict({k[3:]: torch.as_tensor(v) for k, v in self.arrays_.items()})
        for pos, x in self._blocks(df, rows, cols):  # absent rows are never read
            z = (np.where(np.isnan(x), self.mean_, x) - self.mean_) / self.sd_
            if self.reduce == "pca":
                z = (z - self.arrays_["pca_mean"]) @ self.arrays_["pca_components"].T
            elif enc is not None:
                import torch

                with torch.no_grad():
                    z = enc(torch.as_tensor(z, dtype=torch.float32)).numpy()
            out[pos] = z
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            k: getattr(self, k)
            for k in (
                "log1p",
                "variance_top_k",
                "min_variance",
                "standardize",
                "reduce",
                "dim",
                "ae_hidden",
                "ae_epochs",
                "seed",
            )
        }
        meta = {
            "params": params,
            "columns": self.columns_,
            "feature_names_out": self.feature_names_out_,
        }
        return meta, {"mean": self.mean_, "sd": self.sd_, **self.arrays_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> OmicsPreprocessor:
        p = cls(**meta["params"])
        p.columns_, p.feature_names_out_ = list(meta["columns"]), list(meta["feature_names_out"])
        p.mean_, p.sd_ = arrays["mean"], arrays["sd"]
        p.arrays_ = {k: v for k, v in arrays.items() if k not in ("mean", "sd")}
        return p


OMICS = register_modality(
    ModalityKind(
        name="omics",
        read=read_sources,
        check=check_omics,
        preprocessor=OmicsPreprocessor,
        default_encoder="mlp",
        columns_are_inputs=True,
    )
)
