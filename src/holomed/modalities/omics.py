"""``omics``: samples x features matrices (gene expression, methylation, miRNA) from
CSV/TSV/Parquet or AnnData ``.h5ad``.

Preprocessing, fitted on training patients only: optional ``log1p``; a variance filter
(keep the ``variance_top_k`` most variable features and/or those above
``min_variance``); mean imputation of missing entries; standardisation; optional
reduction to ``dim`` components by PCA (scikit-learn) or by an autoencoder trained on
the training rows (the bottleneck becomes the features).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.modalities.base import (
    ModalityData,
    ModalityKind,
    Preprocessor,
    drop_nonfinite_rows,
    read_sources,
    register_modality,
    to_numeric,
)


def check_omics(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    if df.shape[1] == 0:
        raise CohortError(f"{where}: modality {mspec.name!r} has no feature columns")
    df = to_numeric(df, list(df.columns), where)
    return drop_nonfinite_rows(df, list(df.columns), mspec.name, where)


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

    def _base(self, df: pd.DataFrame) -> np.ndarray:
        x = df.to_numpy(dtype=float)
        if self.log1p:
            if np.nanmin(x) <= -1:
                raise ValueError("log1p needs values > -1; this omics matrix has smaller ones")
            x = np.log1p(x)
        return x

    def fit(self, data: ModalityData) -> OmicsPreprocessor:
        if self.reduce not in (None, "pca", "autoencoder"):
            raise ValueError(
                f"omics reduce must be null, 'pca' or 'autoencoder'; got {self.reduce!r}"
            )
        df: pd.DataFrame = data.values[data.present]
        if len(df) == 0:
            raise ValueError("omics preprocessor: no training patient has this modality")
        x = self._base(df)
        var = np.nanvar(x, 0)
        keep = np.nan_to_num(var, nan=0.0) > self.min_variance
        if self.variance_top_k and keep.sum() > self.variance_top_k:
            order = np.argsort(-np.where(keep, var, -np.inf), kind="stable")
            keep = np.zeros_like(keep)
            keep[order[: self.variance_top_k]] = True
        self.columns_ = [c for c, k in zip(df.columns, keep, strict=True) if k]
        if not self.columns_:
            raise ValueError("omics variance filter removed every feature")
        x = x[:, keep]
        self.mean_ = np.nan_to_num(np.nanmean(x, 0))
        x = np.where(np.isnan(x), self.mean_, x)
        sd = x.std(0) if self.standardize else np.ones(x.shape[1])
        self.sd_ = np.where(sd > 1e-12, sd, 1.0)
        z = (x - self.mean_) / self.sd_
        self.arrays_: dict[str, np.ndarray] = {}
        if self.reduce == "pca":
            from sklearn.decomposition import PCA

            k = min(self.dim, *z.shape)
            pca = PCA(n_components=k, random_state=self.seed).fit(z)
            self.arrays_ = {"pca_components": pca.components_, "pca_mean": pca.mean_}
            self.feature_names_out_ = [f"pc{i + 1}" for i in range(k)]
        elif self.reduce == "autoencoder":
            self._fit_autoencoder(z)
            self.feature_names_out_ = [f"ae{i + 1}" for i in range(self.dim)]
        else:
            self.feature_names_out_ = list(self.columns_)
        return self

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
        missing = [c for c in self.columns_ if c not in df.columns]
        if missing:
            raise ValueError(
                f"omics input lacks {len(missing)} fitted features, e.g. {missing[:3]}"
            )
        out = np.full((len(df), len(self.feature_names_out_)), np.nan, np.float32)
        rows = np.asarray(data.present, bool)
        if not rows.any():
            return out
        x = self._base(df[self.columns_][rows])  # absent rows are never read
        z = (np.where(np.isnan(x), self.mean_, x) - self.mean_) / self.sd_
        if self.reduce == "pca":
            z = (z - self.arrays_["pca_mean"]) @ self.arrays_["pca_components"].T
        elif self.reduce == "autoencoder":
            import torch

            enc, _ = _autoencoder(len(self.columns_), self.dim, self.ae_hidden)
            enc.load_state_dict({k[3:]: torch.as_tensor(v) for k, v in self.arrays_.items()})
            with torch.no_grad():
                z = enc(torch.as_tensor(z, dtype=torch.float32)).numpy()
        out[rows] = z
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
    )
)
