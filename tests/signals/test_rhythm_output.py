"""``preprocessing.output: rhythm`` (the signal kind's heart-rhythm features as a vector
for networks) and the spec's ``frame`` (two modalities reading one dataset frame), on
synthetic WFDB records with a known beat train: regular (class 0) or irregular (class 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_rhythm import ecg  # same folder (rootdir-relative import)
from test_signal_io import write_wfdb

from holomed.cohort import build_cohort
from holomed.errors import CohortError
from holomed.modalities import ModalityData
from holomed.modalities.signal import RHYTHM_FEATURES, SignalPreprocessor
from holomed.model import Model
from holomed.spec import parse_spec

FS = 100.0
N = 40


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """N records of 10 s, 3 leads at 100 Hz; odd ones irregular (AF-like); P000 flat (no
    beat can be found)."""
    folder = tmp_path_factory.mktemp("rhythm")
    rng = np.random.default_rng(0)
    paths, y = {}, []
    for i in range(N):
        pid = f"P{i:03d}"
        if i % 2:
            beats = np.cumsum(rng.uniform(0.45, 1.2, 20))
        else:
            beats = np.arange(0.3, 10.0, rng.uniform(0.7, 1.0))
        x = ecg(beats[beats < 9.8], seed=i) if i else np.zeros((1000, 3))
        paths[pid] = str(write_wfdb(folder, pid, x, ["I", "II", "III"], fs=FS))
        y.append(i % 2)
    ids = list(paths)
    frame = pd.DataFrame({"path": pd.Series(paths)})
    target = pd.DataFrame({"y": np.where(np.array(y) == 1, "irregular", "regular")}, index=ids)
    return frame, target, np.array(y)


def data(frame: pd.DataFrame, absent: int = 0) -> ModalityData:
    present = np.ones(len(frame), bool)
    present[:absent] = False
    return ModalityData("signal", frame, present, ["path"])


def test_rhythm_output_is_a_scaled_vector_with_a_found_flag(records):
    frame, _, y = records
    pre = SignalPreprocessor(fs=FS, duration=10.0, output="rhythm").fit(data(frame.iloc[:30]))
    assert pre.out_shape == (len(RHYTHM_FEATURES) + 1,)
    assert pre.feature_names_out_[-1] == "rhythm:found"
    x = pre.transform(data(frame, absent=2))
    assert x.shape == (N, 8) and x.dtype == np.float32
    assert np.isnan(x[:2]).all() and np.isfinite(x[2:]).all()  # absent rows stay NaN
    full = pre.transform(data(frame))
    assert full[0, -1] == 0 and (full[0, :-1] == 0).all()  # flat record: mean, not found
    assert (full[1:, -1] == 1).all()
    cv = full[1:, RHYTHM_FEATURES.index("rr_cv")]
    irregular = y[1:] == 1
    assert cv[irregular].min() > cv[~irregular].max()  # the irregular beats stand out
    # training records: clipped to their percentiles and standardised
    train = pre.transform(data(frame.iloc[1:30]))[:, :-1]
    assert np.abs(train.mean(0)).max() < 0.2 and np.abs(train).max() < 6
    # flat features (classical candidates) are the same vector; the state round-trips
    flat, names = pre.flat_features(full)
    np.testing.assert_array_equal(flat, full)
    assert names == pre.feature_names_out_
    meta, arrays = pre.get_state()
    again = SignalPreprocessor.from_state(meta, arrays)
    np.testing.assert_array_equal(again.transform(data(frame)), full)


def test_output_must_be_known(records):
    frame, _, _ = records
    with pytest.raises(ValueError, match="output must be one of"):
        SignalPreprocessor(fs=FS, duration=10.0, output="beats").fit(data(frame.iloc[:5]))


def spec(frame_name: str = "ecg") -> dict:
    return {
        "modalities": [
            {"name": "ecg", "kind": "signal", "preprocessing": {"fs": FS, "duration": 10.0},
             "encoder": {"name": "resnet1d", "options": {"width": 4, "blocks": 1}}},
            {"name": "beats", "kind": "signal", "frame": frame_name,
             "preprocessing": {"fs": FS, "duration": 10.0, "output": "rhythm"}},
        ],
        "target": {"column": "y", "classes": ["regular", "irregular"]},
        "split": {"method": "holdout", "test_size": 0.25},
        "fusion": {"name": "late", "hidden": 8},
        "training": {"max_epochs": 25, "lr": 0.02, "batch_size": 16, "patience": 25},
    }  # fmt: skip


def test_two_modalities_read_one_frame_and_a_network_learns_the_rhythm(records):
    frame, target, y = records
    s = parse_spec(spec())
    assert s.modalities[1].encoder.name == "mlp"  # the default encoder of rhythm vectors
    cohort = build_cohort(s, {"ecg": frame}, target)
    assert set(cohort.modalities) == {"ecg", "beats"}
    beats, raw = cohort.modalities["beats"], cohort.modalities["ecg"]
    np.testing.assert_array_equal(beats.present, raw.present)
    only = parse_spec({**spec(), "modalities": [spec()["modalities"][1]]})
    c1 = build_cohort(only, {"ecg": frame}, target)
    rows = np.arange(N)
    model = Model(only, seed=0).fit(c1.subset(rows[:30]))
    p = model.predict_proba(c1.subset(rows[30:]))[:, 1]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[30:], p) > 0.9


def test_a_frame_the_dataset_lacks_is_a_named_error(records):
    frame, target, _ = records
    with pytest.raises(CohortError, match="frame 'ekg' is not one of dataset"):
        build_cohort(parse_spec(spec("ekg")), {"ecg": frame}, target)


def test_frame_and_source_together_are_refused():
    from holomed.spec import SpecError

    d = spec()
    d["modalities"][1]["source"] = "ecg.csv"
    with pytest.raises(SpecError, match="'frame' names a frame of the spec's dataset"):
        parse_spec(d)


def test_new_patients_from_files_feed_a_frame_modality_from_its_frames_file(records, tmp_path):
    """``holomed predict -i ecg=FILE``: the modality reading the ecg frame reads that file
    too, unless it is given one of its own."""
    from holomed.cohort import unlabelled_cohort

    frame, _, _ = records
    table = tmp_path / "ecg.csv"
    frame.iloc[:6].rename_axis("id").reset_index().to_csv(table, index=False)
    cohort = unlabelled_cohort(parse_spec(spec()), {"ecg": [str(table)]})
    assert len(cohort) == 6
    assert cohort.modalities["beats"].present.all() and cohort.modalities["ecg"].present.all()
    only = unlabelled_cohort(parse_spec(spec()), {"beats": [str(table)]})
    assert "ecg" not in only.modalities and only.modalities["beats"].present.all()


def test_a_fit_run_with_a_rhythm_modality_saves_its_bundle_and_maps_only_samples(records, tmp_path):
    """Occlusion maps are drawn for the samples modality; the rhythm vector is explained by
    its named features, and the fit run (which draws the maps) completes and saves."""
    from holomed.explain.maps import attribution_maps

    frame, target, _ = records
    d = spec()
    d["training"].update({"max_epochs": 2, "patience": 2})
    s = parse_spec(d)
    cohort = build_cohort(s, {"ecg": frame}, target)
    model = Model(s, seed=0).fit(cohort.subset(np.arange(30)))
    maps = attribution_maps(model, cohort.subset(np.arange(30, 34)), tmp_path, n_patients=1)
    assert [m["modality"] for m in maps] == ["ecg"]
    assert (tmp_path / maps[0]["file"]).exists()
    top = model.explain(cohort.subset(np.arange(30, 40)))["features"]
    assert any(f.startswith("rhythm:") for f in [r["feature"] for r in top.get("beats", [])])


def test_a_served_model_feeds_a_frame_modality_from_the_upload_it_reads(records, tmp_path):
    """The API takes the ECG once; the modality reading its frame is not absent."""
    from holomed.serve.app import PatientInput, ServedModel
    from holomed.serve.settings import ServeSettings

    frame, target, _ = records
    d = spec()
    d["training"].update({"max_epochs": 1, "patience": 1})
    d["evaluation"] = {"explain": False}
    s = parse_spec(d)
    cohort = build_cohort(s, {"ecg": frame}, target)
    Model(s, seed=0).fit(cohort.subset(np.arange(30))).save(tmp_path / "b")
    served = ServedModel("m", tmp_path / "b", ServeSettings())
    items = [PatientInput(files={"ecg": [frame["path"].iloc[i]]}) for i in (3, 4)]
    batch = served.cohort(items, ["s0", "s1"])
    assert batch.modalities["beats"].present.all() and batch.modalities["ecg"].present.all()


def test_a_rhythm_vector_with_a_samples_encoder_is_refused_when_the_spec_is_read():
    from holomed.spec import SpecError

    d = spec()
    d["modalities"][1]["encoder"] = {"name": "resnet1d"}
    with pytest.raises(SpecError, match="modality 'beats': preprocessing.output: rhythm"):
        parse_spec(d)
