"""Omics without a float64 copy of the whole matrix: the preprocessor's statistics, taken
over blocks of rows, equal a plain NumPy fit (the former implementation, kept here as
the oracle) to float rounding, whatever the block size; the loader keeps a float32 file
float32 and its block-wise non-finite check reports what the whole-frame one did."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import build_cohort
from holomed.modalities import ModalityData
from holomed.modalities import omics as omics_mod
from holomed.modalities.base import drop_nonfinite_rows, to_numeric
from holomed.modalities.omics import OmicsPreprocessor, check_omics
from holomed.spec import parse_spec

# -- the oracle: the former whole-matrix fit and transform ---------------------------


def reference_fit(pre: OmicsPreprocessor, data: ModalityData) -> dict:
    df = data.values[data.present]
    x = df.to_numpy(dtype=float)
    if pre.log1p:
        x = np.log1p(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature
        var = np.nanvar(x, 0)
        keep = np.nan_to_num(var, nan=0.0) > pre.min_variance
        if pre.variance_top_k and keep.sum() > pre.variance_top_k:
            order = np.argsort(-np.where(keep, var, -np.inf), kind="stable")
            keep = np.zeros_like(keep)
            keep[order[: pre.variance_top_k]] = True
        columns = [c for c, k in zip(df.columns, keep, strict=True) if k]
        x = x[:, keep]
        mean = np.nan_to_num(np.nanmean(x, 0))
    x = np.where(np.isnan(x), mean, x)
    sd = x.std(0) if pre.standardize else np.ones(x.shape[1])
    sd = np.where(sd > 1e-12, sd, 1.0)
    return {"columns": columns, "mean": mean, "sd": sd, "var": var}


def reference_transform(ref: dict, data: ModalityData, log1p: bool) -> np.ndarray:
    rows = np.asarray(data.present, bool)
    x = data.values[ref["columns"]][rows].to_numpy(dtype=float)
    if log1p:
        x = np.log1p(x)
    z = (np.where(np.isnan(x), ref["mean"], x) - ref["mean"]) / ref["sd"]
    out = np.full((len(rows), len(ref["columns"])), np.nan, np.float32)
    out[rows] = z
    return out


def matrix(n: int = 3000, p: int = 15, seed: int = 0, dtype=np.float64) -> ModalityData:
    """SYNTHETIC: features of very different scales and offsets (a one-pass sum of
    squares would lose digits), 10 % NaN, an all-NaN feature, a constant one (with
    gaps), a feature seen once; 15 % of patients absent."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * np.geomspace(1e-3, 1e3, p) + np.linspace(-50, 1e4, p)
    x = np.abs(x) if seed % 2 else x
    x[rng.random((n, p)) < 0.1] = np.nan
    x[:, 2] = np.nan  # never measured
    x[:, 4] = 7.0  # constant ...
    x[::3, 4] = np.nan  # ... with gaps
    present = rng.random(n) >= 0.15
    x[:, 6] = np.nan
    x[np.flatnonzero(present)[n // 3], 6] = 3.5  # one value: variance 0
    df = pd.DataFrame(
        x.astype(dtype), index=[f"S{i:05d}" for i in range(n)], columns=[f"g{j}" for j in range(p)]
    )
    df.iloc[~present] = 1e30  # absent rows hold junk that must never be read
    return ModalityData("omics", df, present, list(df.columns))


PARAMS = [
    {},
    {"standardize": False},
    {"min_variance": -1.0},  # keeps the all-NaN and constant features (mean 0, sd 1)
    {"min_variance": 0.5},
    {"variance_top_k": 5},
    {"log1p": True, "variance_top_k": 8},
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("block", [7 * 15, 1 << 20])  # 7 rows a block; one block
def test_blockwise_fit_equals_the_whole_matrix_fit(monkeypatch, params, dtype, block):
    monkeypatch.setattr(omics_mod, "BLOCK_VALUES", block)
    data = matrix(seed=1 if params.get("log1p") else 0, dtype=dtype)
    pre = OmicsPreprocessor(**params).fit(data)
    ref = reference_fit(OmicsPreprocessor(**params), data)
    assert pre.columns_ == ref["columns"]
    np.testing.assert_allclose(pre.mean_, ref["mean"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(pre.sd_, ref["sd"], rtol=1e-10, atol=0)
    got = pre.transform(data)
    want = reference_transform(ref, data, pre.log1p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[~data.present]).all() and not np.isnan(got[data.present]).any()


def test_edge_features_are_handled_as_before():
    data = matrix()
    pre = OmicsPreprocessor(min_variance=-1.0).fit(data)
    mean = dict(zip(pre.columns_, pre.mean_, strict=True))
    sd = dict(zip(pre.columns_, pre.sd_, strict=True))
    assert mean["g2"] == 0.0 and sd["g2"] == 1.0  # never measured: imputed 0, unscaled
    assert mean["g4"] == 7.0 and sd["g4"] == 1.0  # constant
    assert mean["g6"] == 3.5 and sd["g6"] == 1.0  # one value
    default = OmicsPreprocessor().fit(data)  # variance > 0 only
    assert {"g2", "g4", "g6"}.isdisjoint(default.columns_) and len(default.columns_) == 12


def test_a_constant_feature_has_variance_exactly_zero_whatever_the_blocks(monkeypatch):
    """0.1 is not a binary fraction: a mean by sums can miss it by one ulp, which made a
    constant feature's variance ~1e-33 > 0 depending on the summation order."""
    df = pd.DataFrame({"flat": np.full(1001, 0.1), "g": np.arange(1001.0)})
    data = ModalityData("omics", df, np.ones(1001, bool), list(df.columns))
    for block in (3, 64, 1 << 20):
        monkeypatch.setattr(omics_mod, "BLOCK_VALUES", block)
        assert OmicsPreprocessor().fit(data).columns_ == ["g"]


def test_the_block_size_changes_nothing_but_rounding(monkeypatch):
    data = matrix(n=2000, seed=3)
    fitted = {}
    for block in (1, 15 * 11, 1 << 20):
        monkeypatch.setattr(omics_mod, "BLOCK_VALUES", block)
        pre = OmicsPreprocessor(variance_top_k=10, reduce="pca", dim=3).fit(data)
        fitted[block] = (pre.columns_, pre.mean_, pre.sd_, pre.transform(data))
    base = fitted[1 << 20]
    for cols, mean, sd, out in fitted.values():
        assert cols == base[0]
        np.testing.assert_allclose(mean, base[1], rtol=1e-12)
        np.testing.assert_allclose(sd, base[2], rtol=1e-12)
        np.testing.assert_allclose(out, base[3], rtol=1e-4, atol=1e-5)


def test_fit_holds_no_float64_copy_of_the_matrix(monkeypatch):
    """What fit and transform hold beyond the output is a few blocks, not the matrix."""
    monkeypatch.setattr(omics_mod, "BLOCK_VALUES", 1 << 16)  # blocks of 0.5 MB as float64
    n, p = 200_000, 40  # float32 32 MB; a float64 copy would be 64 MB
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, p)).astype(np.float32))
    df.columns = [f"g{j}" for j in range(p)]
    present = rng.random(n) >= 0.2
    data = ModalityData("omics", df, present, list(df.columns))
    tracemalloc.start()
    try:
        pre = OmicsPreprocessor().fit(data)
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        out = pre.transform(data)
        _, transform_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    f64 = n * p * 8
    assert fit_peak < 0.1 * f64, fit_peak / 2**20
    # the output itself (float32, n x p) plus blocks
    assert transform_peak < out.nbytes + 0.1 * f64, transform_peak / 2**20


# -- loading --------------------------------------------------------------------------


class _M:
    name = "genes"


def test_the_blockwise_check_reports_what_the_whole_frame_check_did(monkeypatch):
    """Values too large for float32 or infinite become missing, counted per patient with
    the first column named; rows left empty are dropped; the caller's frame is untouched."""
    monkeypatch.setattr(omics_mod, "BLOCK_VALUES", 2 * 4)  # 2 rows a block
    df = pd.DataFrame(
        {
            "a": [1.0, 1e308, np.inf, np.nan, 5.0, np.nan, 7.0],
            "b": [1.0, -1e39, 2.0, np.nan, np.inf, np.nan, 3e38],
            "c": [1.0, 2.0, 3.0, np.nan, 4.0, -np.inf, 1.0],
            "d": [1.0, 2.0, 3.0, np.nan, 4.0, np.nan, 2.0],
        },
        index=[f"P{i}" for i in range(1, 8)],
    )
    before = df.copy()
    got, got_problems = check_omics(df, _M(), "genes.csv")
    want, want_problems = drop_nonfinite_rows(
        to_numeric(df, list(df.columns), "genes.csv"), list(df.columns), "genes", "genes.csv"
    )
    assert got_problems == want_problems
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(df, before)
    # values set to missing first, then the rows left empty (P6: both)
    assert [p["id"] for p in got_problems] == ["P2", "P3", "P5", "P6", "P4", "P6"]


def test_a_float32_file_stays_float32_and_other_numbers_become_float64():
    x = np.array([[1.5, np.inf], [np.nan, np.nan], [2.0, 3.0]], np.float32)
    df = pd.DataFrame(x, index=["A", "B", "C"], columns=["g1", "g2"])
    got, problems = check_omics(df, _M(), "g.parquet")
    assert (got.dtypes == np.float32).all() and got.index.tolist() == ["A", "C"]
    assert np.isnan(got.loc["A", "g2"]) and np.isinf(df.loc["A", "g2"])  # a copy was set
    assert [(p["id"], p.get("scope")) for p in problems] == [("A", "value"), ("B", None)]
    ints = pd.DataFrame({"g1": [1, 2], "g2": pd.array([3, None], dtype="Int64")}, index=["A", "B"])
    got, _ = check_omics(ints, _M(), "g.csv")
    want = to_numeric(ints, ["g1", "g2"], "g.csv")
    assert (got.dtypes == np.float64).all()
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    same = pd.DataFrame(np.ones((2, 2)), index=["A", "B"], columns=["g1", "g2"])
    assert check_omics(same, _M(), "g.csv")[0] is same  # nothing to convert: no copy


def test_a_float32_parquet_cohort_gives_the_float64_results(tmp_path: Path):
    """Loading keeps the file's float32; the fitted statistics and the model's inputs are
    those of the same values held as float64 (float32 -> float64 is exact)."""
    rng = np.random.default_rng(0)
    n, p = 400, 10
    ids = [f"P{i:04d}" for i in range(n)]
    x = rng.normal(size=(n, p)).astype(np.float32)
    x[rng.random((n, p)) < 0.1] = np.nan
    genes = pd.DataFrame(x, columns=[f"g{j}" for j in range(p)])
    genes.insert(0, "pid", ids)
    keep = rng.random(n) >= 0.2
    genes[keep].to_parquet(tmp_path / "genes.parquet", index=False)
    genes[keep].astype({c: np.float64 for c in genes.columns[1:]}).to_parquet(
        tmp_path / "genes64.parquet", index=False
    )
    pd.DataFrame({"pid": ids, "label": rng.integers(0, 2, n)}).to_parquet(
        tmp_path / "labels.parquet", index=False
    )
    pd.DataFrame({"pid": ids, "age": rng.normal(60, 9, n)}).to_parquet(
        tmp_path / "labs.parquet", index=False
    )  # every patient: those without genes stay in, with genes absent

    def cohort(source: str):
        spec = parse_spec(
            {
                "modalities": [
                    {"name": "genes", "kind": "omics", "source": source, "id_column": "pid"},
                    {
                        "name": "labs",
                        "kind": "tabular",
                        "source": "labs.parquet",
                        "id_column": "pid",
                    },
                ],
                "target": {"source": "labels.parquet", "id_column": "pid", "column": "label"},
            },
            base_dir=str(tmp_path),
        )
        return build_cohort(spec)

    c32, c64 = cohort("genes.parquet"), cohort("genes64.parquet")
    v32, v64 = c32.modalities["genes"].values, c64.modalities["genes"].values
    assert (v32.dtypes == np.float32).all() and (v64.dtypes == np.float64).all()
    assert v32.index.name == v64.index.name == "pid"
    assert c32.ids.tolist() == ids
    np.testing.assert_array_equal(c32.modalities["genes"].present, keep)
    assert v32.iloc[np.flatnonzero(~keep)].isna().all().all()
    np.testing.assert_array_equal(v32.to_numpy(float), v64.to_numpy())
    a = OmicsPreprocessor().fit(c32.modalities["genes"])
    b = OmicsPreprocessor().fit(c64.modalities["genes"])
    np.testing.assert_array_equal(a.mean_, b.mean_)
    np.testing.assert_array_equal(a.sd_, b.sd_)
    np.testing.assert_array_equal(
        a.transform(c32.modalities["genes"]), b.transform(c64.modalities["genes"])
    )
