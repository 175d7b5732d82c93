"""The ``timeseries`` kind: honest reading of long-form observations, the grid with
masks and deltas, fitting on training patients only, summary statistics, the three
encoders, and every fusion strategy end to end with a static table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.encoders import create_encoder
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.evaluation.compare import count_reasons
from holomed.fusion import fusion_names
from holomed.modalities import ModalityData
from holomed.modalities.timeseries import (
    Events,
    TimeseriesPreprocessor,
    check_timeseries,
    summary_statistics,
)
from holomed.model import Model
from holomed.spec import ModalitySpec, parse_spec

TS_ENCODERS = ("grud", "ts_transformer", "ts_summary")


def mspec(**kw) -> ModalitySpec:
    return ModalitySpec(name="vitals", kind="timeseries", **kw)


def long(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "time", "variable", "value"])


def packed(rows: list[tuple], **kw) -> pd.DataFrame:
    df, problems = check_timeseries(long(rows), mspec(**kw), "test.csv")
    assert not [p for p in problems if p.get("scope") != "value"], problems
    return df


def data_of(df: pd.DataFrame, ids: list[str]) -> ModalityData:
    vals = df.reindex(ids)
    return ModalityData("timeseries", vals, np.isin(ids, df.index), ["events"])


# -- reading ------------------------------------------------------------------------


def test_check_reports_every_unusable_value_with_counts_and_reasons():
    rows = [
        ("a", 0.5, "HR", 80),
        ("a", 1.0, "HR", -5),  # impossible
        ("a", 1.5, "HR", "abc"),  # not a number
        ("a", 2.0, "Temp", -1),  # sentinel
        ("a", 2.0, "Foo", 3),  # unknown variable
        ("b", np.nan, "HR", 70),  # unreadable time
        ("c", 1.0, "HR", None),  # empty value
    ]
    df, problems = check_timeseries(
        long(rows),
        mspec(columns=["HR", "Temp"], options={"ranges": {"HR": [1, 300]}, "sentinels": [-1]}),
        "vitals.csv",
    )
    assert list(df.index) == ["a"]
    ev = df.loc["a", "events"]
    assert isinstance(ev, Events) and len(ev) == 1 and ev.value[0] == 80
    reasons = count_reasons(problems)
    assert reasons["values of modality vitals: impossible value of 'HR' (outside [1, 300])"] == 1
    assert reasons["values of modality vitals: value is not a finite number"] == 1
    assert reasons["values of modality vitals: missing-value sentinel -1 of 'Temp'"] == 1
    assert reasons["values of modality vitals: unknown variable 'Foo'"] == 1
    assert reasons["values of modality vitals: unreadable time in vitals.csv"] == 1
    assert reasons["values of modality vitals: empty value"] == 1
    # b and c have nothing usable left: they lose the modality, and say so
    lost = {p["id"] for p in problems if p.get("scope") != "value"}
    assert lost == {"b", "c"}
    # every input row is either kept or counted
    counted = sum(p.get("count", 0) for p in problems if p.get("scope") == "value")
    assert counted + len(ev) == len(rows)


def test_missing_long_form_columns_is_an_error_naming_the_file():
    from holomed.errors import CohortError

    with pytest.raises(CohortError, match=r"vitals.csv.*\['variable'\]"):
        check_timeseries(pd.DataFrame({"id": [], "time": [], "value": []}), mspec(), "vitals.csv")


def test_read_long_wide_and_hhmm_files_through_the_spec(tmp_path):
    pd.DataFrame(
        {"pid": ["p1", "p1", "p2"], "t": ["00:30", "47:59", "01:00"], "param": ["HR"] * 3,
         "val": [80, 90, 70]}
    ).to_csv(tmp_path / "long.csv", index=False)  # fmt: skip
    pd.DataFrame(
        {"pid": ["p1", "p2"], "t": [0.5, 1.0], "HR": [80, np.nan], "SBP": [120, 110]}
    ).to_csv(tmp_path / "wide.csv", index=False)
    pd.DataFrame({"pid": ["p1", "p2", "p3"], "y": [0, 1, 0], "age": [50, 60, 70]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    opts = {"time_column": "t", "variable_column": "param", "value_column": "val"}
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "a",
                    "kind": "timeseries",
                    "source": "long.csv",
                    "id_column": "pid",
                    "options": {**opts, "time_unit": "hh:mm"},
                },
                {
                    "name": "b",
                    "kind": "timeseries",
                    "source": "wide.csv",
                    "id_column": "pid",
                    "options": {"time_column": "t", "format": "wide"},
                },
                {
                    "name": "s",
                    "kind": "tabular",
                    "source": "y.csv",
                    "id_column": "pid",
                    "columns": ["age"],
                },
            ],
            "target": {"source": "y.csv", "id_column": "pid", "column": "y"},
        },  # fmt: skip
        base_dir=str(tmp_path),
    )
    c = build_cohort(spec)
    ev = c.modalities["a"].values.loc["p1", "events"]
    np.testing.assert_allclose(ev.time, [0.5, 47 + 59 / 60], rtol=1e-6)
    assert c.modalities["a"].present.tolist() == [True, True, False]
    b = c.modalities["b"].values.loc["p2", "events"].frame()
    assert b["variable"].tolist() == ["SBP"]  # the empty wide cell is not an observation


# -- preprocessing ------------------------------------------------------------------


def test_grid_values_masks_and_deltas():
    df = packed(
        [
            ("a", 0.2, "HR", 10.0),
            ("a", 0.7, "HR", 20.0),  # same 1-h bin: mean 15
            ("a", 2.5, "HR", 30.0),
            ("a", 1.5, "SBP", 100.0),
            ("a", 9.0, "HR", 1000.0),  # outside the window
            ("b", 0.5, "HR", 50.0),
            ("b", 0.5, "SBP", 200.0),
        ]
    )
    pre = TimeseriesPreprocessor(window=[0, 4], resolution=1.0).fit(data_of(df, ["a", "b"]))
    assert pre.variables_ == ["HR", "SBP"] and pre.out_shape == (4, 7)
    # scaling statistics: observations inside the window of training patients only
    np.testing.assert_allclose(pre.mean_[0], np.mean([10, 20, 30, 50]))
    x = pre.transform(data_of(df, ["a", "b"]))
    hr, mask = x[0, :, 0] * pre.sd_[0] + pre.mean_[0], x[0, :, 2:4]
    np.testing.assert_allclose(hr[[0, 2]], [15, 30], rtol=1e-5)
    assert mask[:, 0].tolist() == [1, 0, 1, 0] and mask[:, 1].tolist() == [0, 1, 0, 0]
    assert x[0, 1, 0] == 0 and x[0, 3, 0] == 0  # unobserved -> training mean (0)
    # delta (hours since last observed before the step, / window): step centres .5,1.5,..
    delta_hr = x[0, :, 4] * 4
    np.testing.assert_allclose(delta_hr, [0.5, 1.0, 2.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(x[0, :, -1], [0.125, 0.375, 0.625, 0.875], atol=1e-6)


def test_fit_uses_present_rows_only_and_absent_rows_are_never_read():
    df = packed([("a", 0.5, "HR", 80.0), ("b", 0.5, "HR", 90.0), ("c", 0.5, "HR", 1e6)])
    ids = ["a", "b", "c"]
    d = data_of(df, ids)
    d = ModalityData("timeseries", d.values, np.array([True, True, False]), ["events"])
    pre = TimeseriesPreprocessor(window=[0, 2]).fit(d)
    np.testing.assert_allclose(pre.mean_, [85.0])
    x = pre.transform(d)
    assert np.isnan(x[2]).all() and np.isfinite(x[:2]).all()
    # nobody present (as when a modality is removed for an explanation)
    none = pre.transform(ModalityData("timeseries", d.values, np.zeros(3, bool), ["events"]))
    assert none.shape == (3, *pre.out_shape) and np.isnan(none).all()
    # the absent row may hold anything at all
    vals = d.values.copy()
    vals.iloc[2, 0] = "garbage"
    x2 = pre.transform(ModalityData("timeseries", vals, d.present, ["events"]))
    np.testing.assert_array_equal(x[:2], x2[:2])


def test_irregular_steps_are_left_padded_and_keep_the_latest():
    df = packed([("a", t, "HR", float(t)) for t in (1.0, 2.0, 3.0, 4.0)] + [("b", 5.0, "HR", 5.0)])
    pre = TimeseriesPreprocessor(window=[0, 10], resolution=None, max_steps=3)
    x = pre.fit(data_of(df, ["a", "b"])).transform(data_of(df, ["a", "b"]))
    assert x.shape == (2, 3, 4)
    hr = x[..., 0] * pre.sd_[0] + pre.mean_[0]
    np.testing.assert_allclose(hr[0], [2, 3, 4], rtol=1e-5)  # the oldest step dropped
    assert x[1, :2, 1].tolist() == [0, 0] and x[1, 2, 1] == 1  # b: padding, then its step
    np.testing.assert_allclose(x[0, :, -1], [0.2, 0.3, 0.4], atol=1e-6)


def test_log1p_state_round_trip_and_unknown_variables_ignored_at_transform():
    df = packed([("a", 0.5, "Urine", 100.0), ("b", 1.5, "Urine", 300.0)])
    pre = TimeseriesPreprocessor(window=[0, 2], log1p=["Urine"]).fit(data_of(df, ["a", "b"]))
    meta, arrays = pre.get_state()
    again = TimeseriesPreprocessor.from_state(meta, arrays)
    new = packed([("z", 0.5, "Urine", 200.0), ("z", 0.5, "NewLab", 5.0)])
    np.testing.assert_array_equal(
        pre.transform(data_of(new, ["z"])), again.transform(data_of(new, ["z"]))
    )
    assert again.feature_names_out_ == ["Urine", "mask:Urine", "delta:Urine", "time"]
    with pytest.raises(ValueError, match="log1p"):
        TimeseriesPreprocessor(log1p=["Nope"]).fit(data_of(df, ["a", "b"]))


def test_summary_statistics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(5, 12, 3))
    mask = rng.random((5, 12, 3)) < 0.4
    mask[0, :, 0] = False
    t = np.broadcast_to(np.linspace(0, 1, 12)[None, :, None], vals.shape)
    f = summary_statistics(vals, mask, t).reshape(5, 6, 3)
    for i in range(5):
        for j in range(3):
            obs = mask[i, :, j]
            if not obs.any():
                assert np.isnan(f[i, [0, 1, 2, 3, 5], j]).all() and f[i, 4, j] == 0
                continue
            v, tt = vals[i, obs, j], t[i, obs, j]
            np.testing.assert_allclose(f[i, :4, j], [v[-1], v.min(), v.max(), v.mean()], rtol=1e-5)
            assert f[i, 4, j] == pytest.approx(np.log1p(obs.sum()))
            if obs.sum() > 1:
                assert f[i, 5, j] == pytest.approx(
                    np.clip(np.polyfit(tt, v, 1)[0], -10, 10), rel=1e-4
                )


# -- encoders -----------------------------------------------------------------------


@pytest.mark.parametrize("name", TS_ENCODERS)
def test_encoders_shapes_determinism_and_unobserved_values_ignored(name):
    torch.manual_seed(0)
    nv, steps = 4, 6
    x = torch.randn(3, steps, 3 * nv + 1)
    mask = (torch.rand(3, steps, nv) < 0.5).float()
    x[..., nv : 2 * nv] = mask
    x[..., 2 * nv : 3 * nv] = torch.rand(3, steps, nv)
    torch.manual_seed(1)
    enc = create_encoder(name, 3 * nv + 1, hidden=8).eval()
    out = enc(x)
    assert out.embedding.shape == (3, 8) and torch.isfinite(out.embedding).all()
    if name != "ts_summary":
        assert out.tokens.shape == (3, steps, 8)
    # values where the mask is 0 are never read
    y = x.clone()
    y[..., :nv] = torch.where(mask > 0, y[..., :nv], torch.full_like(y[..., :nv], 1e6))
    torch.testing.assert_close(enc(y).embedding, out.embedding)
    torch.manual_seed(1)
    again = create_encoder(name, 3 * nv + 1, hidden=8).eval()
    torch.testing.assert_close(again(x).embedding, out.embedding)


def test_encoders_handle_a_patient_with_no_observation():
    x = torch.zeros(2, 5, 3 * 2 + 1)
    for name in TS_ENCODERS:
        e = create_encoder(name, 7, hidden=8).eval()(x)
        assert torch.isfinite(e.embedding).all(), name


def test_encoder_rejects_a_non_series_input():
    with pytest.raises(ValueError, match="3V \\+ 1"):
        create_encoder("grud", 11)


# -- end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def icu():
    """80 stays: the label depends on the late trend of 'lactate' (series) and on age."""
    rng = np.random.default_rng(1)
    n = 80
    ids = [f"S{i:03d}" for i in range(n)]
    age = rng.normal(60, 10, n)
    trend = rng.normal(size=n)
    y = ((trend + (age - 60) / 10 + rng.normal(0, 0.5, n)) > 0).astype(int)
    rows = []
    for i, pid in enumerate(ids[:70]):  # 10 stays have no series at all
        for t in np.sort(rng.uniform(0, 12, rng.integers(3, 15))):
            rows.append((pid, t, "lactate", 2 + trend[i] * t / 12 + rng.normal(0, 0.1)))
            if rng.random() < 0.5:
                rows.append((pid, t, "hr", rng.normal(90, 10)))
    frames = {
        "series": long(rows),
        "static": pd.DataFrame({"age": age}, index=ids),
    }
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "static",
                    "kind": "tabular",
                    "encoder": {"name": "mlp", "options": {"hidden": [8]}},
                },
                {
                    "name": "series",
                    "kind": "timeseries",
                    "preprocessing": {"window": [0, 12], "resolution": 2.0},
                    "encoder": {"name": "grud", "options": {"hidden": 8}},
                },
            ],
            "target": {"column": "y"},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"hidden": 8, "options": {"guided.guide": "static"}},
            "training": {"max_epochs": 3, "batch_size": 16, "val_fraction": 0.2},
        }  # fmt: skip
    )
    return spec, build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_strategy_trains_predicts_and_round_trips_with_a_series(icu, fusion, tmp_path):
    spec, cohort = icu
    assert cohort.modalities["series"].present.sum() == 70
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion=fusion, seed=0).fit(cohort.subset(tr))
    p = m.predict_proba(cohort.subset(te))
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    m.save(tmp_path / "b")
    np.testing.assert_allclose(load(tmp_path / "b").predict_proba(cohort.subset(te)), p, atol=1e-6)


@pytest.mark.parametrize("encoder", TS_ENCODERS)
def test_each_series_encoder_fits_with_attention_tokens(icu, encoder):
    spec, cohort = icu
    spec = spec.model_copy(deep=True)
    spec.modalities[1].encoder.name = encoder
    m = Model(spec, fusion="attention", seed=0).fit(cohort)
    ex = m.explain(cohort.subset(np.arange(10)))
    assert set(ex["contributions"]["global"]) == {"static", "series"}
    top = [f["feature"] for f in ex["features"]["series"]]
    assert top and set(top) <= set(m.preprocessors_["series"].feature_names_out_)


def test_classical_baselines_use_summary_statistics(icu):
    spec, cohort = icu
    ((tr, te),) = patient_splits(cohort, spec.split)
    for method in ("lr_early", "lr_late", "gbm"):
        bl = ClassicalBaseline(spec, method).fit(cohort.subset(tr))
        p = bl.predict_proba(cohort.subset(te))
        assert np.isfinite(p).all()
    names = bl.feature_names()["series"]
    assert "lactate:slope" in names and "hr:log_count" in names and len(names) == 12
