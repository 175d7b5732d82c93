"""Tabular and omics preprocessors: fitted on training patients' present rows only,
documented transforms, and a fitted state that survives JSON + safetensors exactly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from holomed.cohort import build_cohort, carve_validation, unlabelled_cohort
from holomed.modalities import ModalityData
from holomed.modalities.omics import OmicsPreprocessor
from holomed.modalities.tabular import TabularPreprocessor
from holomed.model import Model
from holomed.spec import parse_spec

# -- helpers -------------------------------------------------------------------------


def tabular(n=40, seed=0, absent=()):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.normal(60, 10, n),
            "crp": rng.lognormal(1, 1, n),
            "sex": pd.array(rng.choice(["F", "M"], n), dtype="string"),
            "site": pd.array(rng.choice(["north", "south", "east"], n), dtype="string"),
        },
        index=[f"P{i:03d}" for i in range(n)],
    )
    df.loc[df.index[::5], "crp"] = np.nan  # crp has gaps, age has none
    present = np.ones(n, bool)
    present[list(absent)] = False
    return ModalityData("tabular", df, present, list(df.columns))


def omics(n=50, p=12, seed=0, absent=()):
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.5, 3.0, p)  # column j has sd scale[j]: known variance order
    x = rng.normal(size=(n, p)) * scale + 12  # positive (log1p-able)
    df = pd.DataFrame(x, index=[f"S{i:03d}" for i in range(n)], columns=[f"g{j}" for j in range(p)])
    present = np.ones(n, bool)
    present[list(absent)] = False
    return ModalityData("omics", df, present, list(df.columns))


def replace_rows(data: ModalityData, rows, value) -> ModalityData:
    """A copy with ``rows`` of every column set to ``value`` (numbers) / junk (text)."""
    df = data.values.copy()
    idx = df.index[list(rows)]
    for c in df.columns:
        df.loc[idx, c] = value if df[c].dtype.kind == "f" else "junk-category"
    return ModalityData(data.kind, df, data.present.copy(), list(data.feature_names))


def state_equal(a, b) -> None:
    (ma, aa), (mb, ab) = a.get_state(), b.get_state()
    assert json.dumps(ma, sort_keys=True) == json.dumps(mb, sort_keys=True)
    assert set(aa) == set(ab)
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k], err_msg=k)


def round_trip(pre):
    """Through the bundle's formats: meta as JSON text, arrays as safetensors bytes."""
    meta, arrays = pre.get_state()
    meta2 = json.loads(json.dumps(meta))
    arrays2 = st_load(st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    return type(pre).from_state(meta2, arrays2)


# -- tabular -------------------------------------------------------------------------


def test_tabular_fits_on_present_rows_only():
    absent = [1, 2, 3, 30]
    clean = tabular(absent=absent)
    ref = TabularPreprocessor().fit(clean.subset(np.nonzero(clean.present)[0]))
    for value in (1e9, -1e9, np.nan):
        state_equal(TabularPreprocessor().fit(replace_rows(clean, absent, value)), ref)
    # ...and the check can fail: the same rows marked present change the state
    loud = replace_rows(clean, absent, 1e9)
    loud.present[:] = True
    with pytest.raises(AssertionError):
        state_equal(TabularPreprocessor().fit(loud), ref)


def test_tabular_transform_leaves_fitted_state_unchanged_by_extreme_test_rows():
    train, test = tabular(seed=0), tabular(seed=1)
    pre = TabularPreprocessor().fit(train)
    before = round_trip(pre)
    out = pre.transform(replace_rows(test, range(10), 1e12))
    state_equal(pre, before)
    assert np.isfinite(out).all() and np.abs(out[:10, 0]).max() > 1e9  # not clipped away


def test_model_fits_preprocessors_on_training_patients_only(tiny_spec, tiny_cohort):
    """Model.fit sees the training cohort; its preprocessors see only the part not carved
    off for validation. Extreme values in the validation and the test patients do not
    move the fitted state."""
    train_idx = np.nonzero(tiny_cohort.split == "train")[0]
    test_idx = np.nonzero(tiny_cohort.split == "test")[0]
    train = tiny_cohort.subset(train_idx)
    cfg = tiny_spec.training
    fit_pos, val_pos = carve_validation(train.y, cfg.val_fraction, cfg.seed, train.task)
    assert len(val_pos) > 0
    spec = tiny_spec.model_copy(update={"training": cfg.model_copy(update={"max_epochs": 1})})
    ref = Model(spec).fit(train)
    direct = TabularPreprocessor().fit(train.subset(fit_pos).modalities["clinical"])
    state_equal(ref.preprocessors_["clinical"], direct)

    # extreme values in the validation patients' rows: same fitted state
    loud_val = dict(train.modalities)
    loud_val["clinical"] = replace_rows(train.modalities["clinical"], val_pos, 1e9)
    m = Model(spec).fit(dataclasses.replace(train, modalities=loud_val))
    for name in ref.preprocessors_:
        state_equal(m.preprocessors_[name], ref.preprocessors_[name])
    # predicting extreme test patients does not move it either
    loud_test = dict(tiny_cohort.modalities)
    loud_test["clinical"] = replace_rows(tiny_cohort.modalities["clinical"], test_idx, 1e9)
    m.predict_proba(dataclasses.replace(tiny_cohort, modalities=loud_test))
    for name in ref.preprocessors_:
        state_equal(m.preprocessors_[name], ref.preprocessors_[name])


def test_tabular_scaling_and_imputation():
    data = tabular()
    pre = TabularPreprocessor(impute="median", scale="standard").fit(data)
    out = pre.transform(data)
    assert pre.numeric_ == ["age", "crp"] and pre.categorical_ == ["sex", "site"]
    np.testing.assert_allclose(out[:, :2].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(out[:, :2].std(0), 1, atol=1e-5)
    crp = data.values["crp"]
    assert pre.fill_[1] == pytest.approx(np.nanmedian(crp))
    assert TabularPreprocessor(impute="mean").fit(data).fill_[1] == pytest.approx(crp.mean())
    mm = TabularPreprocessor(scale="minmax").fit(data).transform(data)
    assert mm[:, :2].min() == pytest.approx(0, abs=1e-6)
    assert mm[:, :2].max() == pytest.approx(1, abs=1e-6)
    raw = TabularPreprocessor(scale="none").fit(data).transform(data)
    np.testing.assert_allclose(raw[:, 0], data.values["age"], rtol=1e-6)


def test_tabular_one_hot_unseen_category_is_all_zeros():
    train = tabular()
    pre = TabularPreprocessor().fit(train)
    names = pre.feature_names_out_
    site_cols = [i for i, f in enumerate(names) if f.startswith("site=")]
    assert [names[i] for i in site_cols] == ["site=east", "site=north", "site=south"]
    test = tabular(n=4, seed=3)
    test.values["site"] = pd.array(["north", "west", pd.NA, "south"], dtype="string")
    out = pre.transform(test)[:, site_cols]
    assert out.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]
    # a known category gives exactly one 1 per categorical column
    tr = pre.transform(train)
    assert (tr[:, site_cols].sum(1) == 1).all()


def test_tabular_max_categories_keeps_the_most_frequent():
    df = pd.DataFrame(
        {"x": np.arange(10.0), "c": pd.array(list("aaaabbbccd"), dtype="string")},
        index=[f"P{i}" for i in range(10)],
    )
    pre = TabularPreprocessor(max_categories=2).fit(ModalityData("tabular", df, np.ones(10, bool)))
    assert pre.categories_["c"] == ["a", "b"]


def test_tabular_missing_indicators():
    train = tabular()
    pre = TabularPreprocessor().fit(train)
    assert pre.indicator_cols_ == ["crp"]  # age had no gap in training
    i = pre.feature_names_out_.index("crp__missing")
    test = tabular(n=5, seed=9)
    test.values["crp"] = [1.0, np.nan, 2.0, np.nan, 3.0]
    test.values["age"] = [np.nan, 50, 60, 70, 80]  # imputed, no indicator column
    out = pre.transform(test)
    assert out[:, i].tolist() == [0, 1, 0, 1, 0]
    assert np.isfinite(out).all()
    age0 = out[0, 0] * pre.scale_[0] + pre.loc_[0]
    assert age0 == pytest.approx(pre.fill_[0])
    off = TabularPreprocessor(indicators=False).fit(train)
    assert not any(f.endswith("__missing") for f in off.feature_names_out_)


def test_tabular_absent_rows_are_nan_and_present_rows_finite():
    data = tabular(absent=[0, 7])
    out = TabularPreprocessor().fit(data).transform(data)
    assert np.isnan(out[[0, 7]]).all()
    assert np.isfinite(np.delete(out, [0, 7], axis=0)).all()


def test_tabular_transform_needs_the_fitted_columns():
    pre = TabularPreprocessor().fit(tabular())
    data = tabular()
    data.values = data.values.drop(columns=["crp"])
    with pytest.raises(ValueError, match="crp"):
        pre.transform(data)


def test_tabular_without_present_rows_cannot_fit():
    with pytest.raises(ValueError, match="no training patient"):
        TabularPreprocessor().fit(tabular(n=3, absent=[0, 1, 2]))


@pytest.mark.parametrize(
    "params",
    [{}, {"impute": "mean", "scale": "minmax"}, {"indicators": False, "max_categories": 2}],
)
def test_tabular_state_round_trip(params):
    train, test = tabular(absent=[4]), tabular(seed=5, absent=[0, 3])
    test.values.loc[test.values.index[2], "site"] = "never-seen"
    pre = TabularPreprocessor(**params).fit(train)
    back = round_trip(pre)
    np.testing.assert_array_equal(back.transform(test), pre.transform(test))
    assert back.feature_names_out_ == pre.feature_names_out_
    state_equal(back, pre)


# -- omics ---------------------------------------------------------------------------


def test_omics_variance_top_k_keeps_the_most_variable():
    data = omics(p=12)
    pre = OmicsPreprocessor(variance_top_k=4).fit(data)
    var = data.values.var()
    assert sorted(pre.columns_) == sorted(var.nlargest(4).index)
    assert pre.columns_ == ["g8", "g9", "g10", "g11"]  # kept in their original order
    assert pre.transform(data).shape == (50, 4)


def test_omics_min_variance_drops_constant_features():
    data = omics(p=5)
    data.values["flat"] = 1.0
    pre = OmicsPreprocessor(min_variance=1e-8).fit(data)
    assert "flat" not in pre.columns_ and len(pre.columns_) == 5
    data.values.loc[:, :] = 2.0
    with pytest.raises(ValueError, match="removed every feature"):
        OmicsPreprocessor(min_variance=1e-8).fit(data)


def test_omics_standardises_and_imputes_with_training_mean():
    data = omics()
    data.values.iloc[3, 2] = np.nan
    pre = OmicsPreprocessor().fit(data)
    out = pre.transform(data)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    assert out[3, 2] == pytest.approx(0.0, abs=1e-6)  # the mean, standardised
    raw = OmicsPreprocessor(standardize=False).fit(data).transform(data)
    np.testing.assert_allclose(raw.mean(0), 0, atol=1e-5)  # centred, not scaled
    assert raw.std(0)[-1] > 2


def test_omics_log1p():
    data = omics()
    data.values = np.abs(data.values) * 100  # counts-like
    pre = OmicsPreprocessor(log1p=True, standardize=False).fit(data)
    out = pre.transform(data)
    expected = np.log1p(data.values.to_numpy())
    np.testing.assert_allclose(out, expected - expected.mean(0), rtol=1e-4, atol=1e-4)
    bad = omics()
    bad.values.iloc[0, 0] = -3.0
    with pytest.raises(ValueError, match="log1p needs values > -1"):
        OmicsPreprocessor(log1p=True).fit(bad)


def test_omics_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    train, test = omics(seed=0), omics(seed=1)
    pre = OmicsPreprocessor(reduce="pca", dim=3).fit(train)
    assert pre.feature_names_out_ == ["pc1", "pc2", "pc3"]
    x = train.values.to_numpy()
    mu, sd = x.mean(0), x.std(0)
    pca = PCA(n_components=3, random_state=0).fit((x - mu) / sd)
    expected = pca.transform((test.values.to_numpy() - mu) / sd)
    np.testing.assert_allclose(pre.transform(test), expected, rtol=1e-4, atol=1e-4)
    # dim larger than the data allows: capped at min(n, p)
    small = OmicsPreprocessor(reduce="pca", dim=50).fit(omics(n=8, p=12))
    assert small.out_dim == 8


def test_omics_autoencoder_reduce():
    train, test = omics(seed=0), omics(seed=1, absent=[2])
    kw = {"reduce": "autoencoder", "dim": 4, "ae_hidden": 16, "ae_epochs": 30}
    a = OmicsPreprocessor(seed=0, **kw).fit(train)
    b = OmicsPreprocessor(seed=0, **kw).fit(train)
    c = OmicsPreprocessor(seed=1, **kw).fit(train)
    out = a.transform(test)
    assert out.shape == (50, 4) and a.feature_names_out_ == ["ae1", "ae2", "ae3", "ae4"]
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    np.testing.assert_array_equal(b.transform(test), out)  # seeded
    assert not np.allclose(c.transform(test), out, equal_nan=True)
    assert out[~np.isnan(out[:, 0])].std() > 1e-3  # not a constant


def test_omics_bad_reduce_name():
    with pytest.raises(ValueError, match="reduce must be"):
        OmicsPreprocessor(reduce="umap").fit(omics())


def test_omics_fits_on_present_rows_only():
    absent = [0, 5, 6]
    clean = omics(absent=absent)
    for params in ({}, {"variance_top_k": 3}, {"reduce": "pca", "dim": 2}):
        ref = OmicsPreprocessor(**params).fit(clean.subset(np.nonzero(clean.present)[0]))
        for value in (1e9, np.nan):
            state_equal(OmicsPreprocessor(**params).fit(replace_rows(clean, absent, value)), ref)
        state_equal(ref, round_trip(ref))
        before = round_trip(ref)
        ref.transform(replace_rows(omics(seed=4), range(20), 1e12))  # extreme test rows
        state_equal(ref, before)


def test_omics_transform_needs_the_fitted_features():
    pre = OmicsPreprocessor().fit(omics())
    data = omics()
    data.values = data.values.drop(columns=["g3"])
    with pytest.raises(ValueError, match=r"omics input: lacks 1 column\(s\) .*\['g3'\]"):
        pre.transform(data)
    # a file without an id column: its first feature was read as the id, and said so
    data = omics()
    first = data.values.columns[0]
    data.values = data.values.set_index(first)
    data.values.attrs["source"] = "new_mrna.csv"
    with pytest.raises(ValueError, match=rf"new_mrna.csv: .*first column '{first}' was read as"):
        pre.transform(data)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"log1p": True, "variance_top_k": 5},
        {"reduce": "pca", "dim": 4},
        {"reduce": "autoencoder", "dim": 3, "ae_hidden": 8, "ae_epochs": 10},
    ],
)
def test_omics_state_round_trip(params):
    train, test = omics(seed=0, absent=[1]), omics(seed=2, absent=[0, 9])
    pre = OmicsPreprocessor(**params).fit(train)
    back = round_trip(pre)
    np.testing.assert_array_equal(back.transform(test), pre.transform(test))
    assert back.feature_names_out_ == pre.feature_names_out_
    state_equal(back, pre)


# -- real data -----------------------------------------------------------------------


def test_rosmap_omics_preprocessing(shared_dataset, monkeypatch):
    """ROSMAP mRNA: fitted on the 245 training samples only; reduction and round trip on
    real data."""
    root = shared_dataset("rosmap").parent
    monkeypatch.setenv("HOLOMED_DATA", str(root))
    from holomed.datasets import DATASETS

    frames, target = DATASETS.get("rosmap").frames(download=False)
    mrna = frames["mrna"]
    assert mrna.shape == (351, 200)
    train = (target.loc[mrna.index, "split"] == "train").to_numpy()
    assert train.sum() == 245
    data = ModalityData("omics", mrna, np.ones(len(mrna), bool), list(mrna.columns))
    fit_rows = np.nonzero(train)[0]
    pre = OmicsPreprocessor(variance_top_k=50, reduce="pca", dim=10).fit(data.subset(fit_rows))
    out = pre.transform(data)
    assert out.shape == (351, 10) and np.isfinite(out).all()
    np.testing.assert_allclose(out[train].mean(0), 0, atol=1e-4)  # centred on training rows
    # test samples do not enter the fit: mark them absent and make them extreme
    loud = mrna.copy()
    loud.iloc[~train] = 1e9
    other = OmicsPreprocessor(variance_top_k=50, reduce="pca", dim=10).fit(
        ModalityData("omics", loud, train.copy(), list(mrna.columns))
    )
    state_equal(other, pre)
    np.testing.assert_array_equal(round_trip(pre).transform(data), out)


# -- regressions: each bug found gets the test that would have caught it ------------


def test_omics_log1p_transform_ignores_absent_rows():
    """Absent rows are never read: not even log1p's domain check looks at them."""
    data = omics()
    pre = OmicsPreprocessor(log1p=True).fit(data)
    later = omics(seed=1, absent=[0])
    later.values.iloc[0] = -5.0  # absent: must never be read
    out = pre.transform(later)
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()


def test_numeric_category_codes_match_between_training_and_new_files(tmp_path):
    """Integer category codes read as floats (a file with a gap: '1.0') and as ints (a
    new file without one: '1') are the same category."""
    rng = np.random.default_rng(0)
    n = 30
    site = rng.choice([1, 2, 3], n).astype(float)
    site[0] = np.nan  # one gap: pandas reads the column as float
    ids = [f"P{i}" for i in range(n)]
    pd.DataFrame({"pid": ids, "age": rng.normal(size=n), "site": site}).to_csv(
        tmp_path / "clin.csv", index=False
    )
    pd.DataFrame({"pid": ids, "label": rng.choice(["a", "b"], n)}).to_csv(
        tmp_path / "y.csv", index=False
    )
    pd.DataFrame({"pid": ["N1", "N2"], "age": [0.1, 0.2], "site": [1, 2]}).to_csv(
        tmp_path / "new.csv", index=False
    )
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "clin",
                    "kind": "tabular",
                    "source": "clin.csv",
                    "id_column": "pid",
                    "categorical": ["site"],
                }
            ],
            "target": {"source": "y.csv", "id_column": "pid"},
        },
        base_dir=str(tmp_path),
    )
    pre = TabularPreprocessor().fit(build_cohort(spec).modalities["clin"])
    new = unlabelled_cohort(spec, {"clin": [str(tmp_path / "new.csv")]})
    one_hot = pre.transform(new.modalities["clin"])[:, -len(pre.categories_["site"]) :]
    assert one_hot.sum(1).tolist() == [1.0, 1.0]
