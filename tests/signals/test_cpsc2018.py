"""The real CPSC 2018 sample ($HOLOMED_DATA/cpsc2018_ecg): checksums, frames, label and
demographic counts as published in SOURCE.md, the example spec's cohort, reading speed,
a short fit and a classical baseline on signal summary features."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from holomed.cohort import load_cohort, patient_splits
from holomed.datasets import DATASETS, DatasetError
from holomed.datasets.cpsc2018 import CPSC2018, read_manifest
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.modalities.signal import RECORD_CACHE, SignalPreprocessor
from holomed.model import Model
from holomed.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpsc2018.yaml"
LABELS = {
    "RBBB": 32,
    "AF": 24,
    "Normal": 20,
    "STD": 19,
    "PVC": 18,
    "STE": 13,
    "PAC": 13,
    "LBBB": 8,
    "I-AVB": 7,
}


@pytest.fixture
def folder(shared_dataset) -> Path:
    return shared_dataset("cpsc2018_ecg")


@pytest.fixture
def frames(folder):
    return DATASETS.get("cpsc2018").frames(download=False)


def test_shipped_manifest_is_the_published_one(folder):
    text = (folder / "SOURCE.md").read_text()
    published = dict(
        (m.group(2), m.group(1))
        for m in re.finditer(r"^([0-9a-f]{64})  (records/\S+)$", text, re.MULTILINE)
    )
    assert len(published) == 300 and read_manifest("cpsc2018.sha256") == published
    assert DATASETS.get("cpsc2018").files == published


def test_frames_match_the_published_counts(frames):
    mods, target = frames
    ecg, demo = mods["ecg"], mods["demographics"]
    assert len(ecg) == len(demo) == len(target) == 150
    assert ecg.index[0] == "A0001" and ecg.index[-1] == "A0150"
    labels = target["label"].str.split(";").explode().value_counts().to_dict()
    assert labels == LABELS and sum(labels.values()) == 154
    assert demo["sex"].value_counts().to_dict() == {"Female": 79, "Male": 71}
    assert demo["age"].min() == 11 and demo["age"].max() == 92
    assert demo.attrs["reading_report"] == []  # every age and sex parses
    assert Path(ecg["path"].iloc[0] + ".hea").is_file()


def test_a_changed_file_fails_verification(folder, tmp_path, monkeypatch):
    root = tmp_path / "data" / "cpsc2018_ecg" / "records"
    root.mkdir(parents=True)
    for f in (folder / "records").iterdir():
        (root / f.name).symlink_to(f)
    (root / "A0007.hea").unlink()
    text = (folder / "records" / "A0007.hea").read_text()
    (root / "A0007.hea").write_text(text.replace("#Age: ", "#Age: 1"))
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetError, match=r"A0007\.hea: sha256"):
        DATASETS.get("cpsc2018").frames(download=False)


def test_download_fetches_the_flat_source_into_the_records_layout(folder, tmp_path, monkeypatch):
    files = read_manifest("cpsc2018.sha256")
    pick = {k: files[k] for k in ("records/A0003.hea", "records/A0003.mat")}
    ds = CPSC2018("cpsc2018", "test", base_url=(folder / "records").as_uri() + "/", files=pick)
    assert (
        DATASETS.get("cpsc2018")
        .url("records/A0001.hea")
        .endswith("5f923133dbfae3302ce9d34bd7877fb7a8d33eda/input_directory/A0001.hea")
    )
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HOLOMED_DATA", raising=False)
    got = ds.locate()
    assert got == tmp_path / "cache" / "cpsc2018" and (got / "records" / "A0003.mat").is_file()


def test_example_cohort_and_reading_speed(folder):
    spec = load_spec(EXAMPLE)
    cohort = load_cohort(spec)
    s = cohort.summary()
    assert s["patients"] == 150 and s["classes"] == {k: LABELS[k] for k in sorted(LABELS)}
    assert s["modalities"]["ecg"]["present"] == 150 and not cohort.excluded
    # whole records, 12 leads, 500 Hz, up to 60 s: read, filtered, z-scored, uncached
    pre = SignalPreprocessor(bandpass=[0.5, 40], cache_mb=0).fit(cohort.modalities["ecg"])
    t0 = time.perf_counter()
    x = pre.transform(cohort.modalities["ecg"])
    seconds = time.perf_counter() - t0
    assert x.shape == (150, 30000, 12) and pre.fs_ == 500.0
    assert pre.feature_names_out_[:3] == ["I", "II", "III"] and pre.feature_names_out_[-1] == "V6"
    assert seconds < 15, f"transforming 150 records took {seconds:.1f} s"
    del x


def test_a_short_fit_and_a_baseline_on_signal_features(folder):
    spec = load_spec(EXAMPLE)
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split)[0]
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"max_epochs": 2})})
    RECORD_CACHE.clear()
    m = Model(short, fusion="joint", seed=0).fit(cohort.subset(tr))
    p = m.predict_proba(cohort.subset(te))
    assert p.shape == (len(te), 9) and np.isfinite(p).all()
    bl = ClassicalBaseline(spec, "lr_early", modalities=["ecg"]).fit(cohort.subset(tr))
    q = bl.predict_proba(cohort.subset(te))
    assert q.shape == (len(te), 9) and np.isfinite(q).all()
    assert "II:power_0.5-4Hz" in bl.feature_names()["ecg"]


def test_the_registry_name_is_accepted_as_the_folder_name_too(folder, tmp_path, monkeypatch):
    """``$HOLOMED_DATA/cpsc2018`` (the registry name) is accepted as well."""
    alt = tmp_path / "cpsc2018"
    shutil.copytree(folder / "records", alt / "records", symlinks=True)
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path))
    assert DATASETS.get("cpsc2018").locate(download=False) == alt
