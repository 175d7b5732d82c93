"""Sleep-EDF (sleep-cassette layout) on small PSG + hypnogram EDF files written here:
30-s epochs from the annotations, R&K 3+4 -> N3, unscored/movement epochs reported with
counts, wake trimming, checksums from a SHA256SUMS.txt manifest, and the epochs as a
``signal`` modality through a model."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from holomed.cohort import load_cohort, patient_splits
from holomed.datasets import DATASETS, DatasetError
from holomed.datasets.sleep_edf import CHANNELS, STAGES, parse_sums
from holomed.model import Model
from holomed.spec import parse_spec

START = datetime(2020, 1, 1, 22, 0, 0)
SECONDS = 600
HYPNOGRAM = [  # onset s, duration s, description -> W x3, N1, N2 x2, N3 x2, REM x2, W x8
    (0, 90, "Sleep stage W"),
    (90, 30, "Sleep stage 1"),
    (120, 60, "Sleep stage 2"),
    (180, 30, "Sleep stage 3"),
    (210, 30, "Sleep stage 4"),
    (240, 30, "Sleep stage ?"),
    (270, 60, "Sleep stage R"),
    (330, 30, "Movement time"),
    (360, 210, "Sleep stage W"),
    (570, 60, "Sleep stage W"),  # its second epoch runs past the end of the PSG
]
RECORDS = {"SC4001": ("E0", "EC", 0), "SC4011": ("E0", "EH", 0), "SC4012": ("E0", "EJ", 30)}


def _psg(path: Path) -> None:
    t = np.arange(0, SECONDS, 0.01)
    signals = {
        "EEG Fpz-Cz": (t % 100) - 50,  # a ramp: each epoch's first sample names its start
        "EEG Pz-Oz": np.sin(2 * np.pi * 10 * t) * 20,
        "EOG horizontal": np.sin(2 * np.pi * 0.5 * t) * 40,
        "EMG submental": np.linspace(0, 5, SECONDS),  # 1 Hz envelope, as in the cassette
    }
    rates = {"EEG Fpz-Cz": 100, "EEG Pz-Oz": 100, "EOG horizontal": 100, "EMG submental": 1}
    headers = [
        {
            "label": k,
            "dimension": "uV",
            "sample_frequency": rates[k],
            "physical_min": -500.0,
            "physical_max": 500.0,
            "digital_min": -32768,
            "digital_max": 32767,
        }
        for k in signals
    ]
    pyedflib.highlevel.write_edf(
        str(path),
        [np.ascontiguousarray(v, float) for v in signals.values()],
        headers,
        header={"startdate": START},
    )


def _hypnogram(path: Path, shift: float) -> None:
    w = pyedflib.EdfWriter(str(path), 0, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setStartdatetime(START + timedelta(seconds=shift))
    for onset, dur, desc in HYPNOGRAM:
        w.writeAnnotation(onset, dur, desc)
    w.close()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    folder = root / "sleep_edf" / "sleep-cassette"
    folder.mkdir(parents=True)
    lines = []
    for rec, (psg_tag, hyp_tag, shift) in RECORDS.items():
        psg, hyp = folder / f"{rec}{psg_tag}-PSG.edf", folder / f"{rec}{hyp_tag}-Hypnogram.edf"
        _psg(psg)
        _hypnogram(hyp, shift)
        for f in (psg, hyp):
            lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  sleep-cassette/{f.name}")
    lines.append(f"{'0' * 64}  sleep-telemetry/ST7011J0-PSG.edf")  # other study: ignored
    (root / "sleep_edf" / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def sleep(data_root, monkeypatch):
    monkeypatch.setenv("HOLOMED_DATA", str(data_root))
    monkeypatch.setenv("HOLOMED_CACHE", str(data_root / "no_cache"))
    return DATASETS.get("sleep_edf")


def test_manifest_pairs_psg_and_hypnogram_files(data_root):
    pairs = parse_sums((data_root / "sleep_edf" / "SHA256SUMS.txt").read_text())
    assert list(pairs) == ["SC4001", "SC4011", "SC4012"]
    assert pairs["SC4011"]["Hypnogram"][0] == "SC4011EH-Hypnogram.edf"


def test_epochs_labels_and_reported_exclusions(sleep):
    frames, target = sleep.frames(download=False, trim_wake=None)
    psg = frames["psg"]
    one = target[target["record"] == "SC4001"]
    assert one["label"].value_counts().to_dict() == {"W": 11, "N2": 2, "N3": 2, "REM": 2, "N1": 1}
    assert set(target["label"]) <= set(STAGES) and len(psg) == len(target) == 18 + 18 + 17
    assert psg.loc["SC4001-e3", ["start", "stop"]].tolist() == [90.0, 120.0]
    assert target.loc["SC4001-e3", "label"] == "N1"
    assert "SC4001-e8" not in psg.index  # 'Sleep stage ?' at 240 s
    assert target.loc["SC4011-e0", "subject"] == target.loc["SC4012-e1", "subject"] == "01"
    assert target.loc["SC4012-e1", "night"] == 2
    # the hypnogram of SC4012 starts 30 s after its PSG: epochs shift by one
    assert psg.loc["SC4012-e4", ["start", "stop"]].tolist() == [120.0, 150.0]
    assert target.loc["SC4012-e4", "label"] == "N1"
    report = {(e["id"], e["reason"]): e["count"] for e in psg.attrs["reading_report"]}
    assert report[("SC4001", "unscored epoch (stage ?)")] == 1
    assert report[("SC4001", "movement time")] == 1
    assert report[("SC4001", "epoch past the end of the PSG")] == 1
    assert report[("SC4012", "epoch past the end of the PSG")] == 2


def test_wake_is_trimmed_around_sleep_and_subjects_select_records(sleep):
    _, target = sleep.frames(download=False, trim_wake=1.0, subjects=[0])
    assert set(target["record"]) == {"SC4001"}
    assert (target["label"] == "W").sum() == 3  # 2 before sleep, 1 after
    _, all_w = sleep.frames(download=False, trim_wake=None, records=["SC4001"])
    assert len(all_w) - len(target) == 8


def test_checksums_are_verified_and_a_manifest_is_required(sleep, data_root, tmp_path):
    f = next((data_root / "sleep_edf" / "sleep-cassette").glob("SC4011*-PSG.edf"))
    good = f.read_bytes()
    try:
        f.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(DatasetError, match=r"SC4011E0-PSG\.edf: sha256"):
            sleep.frames(download=False)
    finally:
        f.write_bytes(good)
    sums = data_root / "sleep_edf" / "SHA256SUMS.txt"
    moved = tmp_path / "sums.txt"
    moved.write_text(sums.read_text())
    sums.unlink()
    try:
        with pytest.raises(DatasetError, match="no SHA256SUMS.txt"):
            sleep.frames(download=False)
        _, target = sleep.frames(download=False, manifest=str(moved), records=["SC4001"])
        assert len(target) == 18
    finally:
        sums.write_text(moved.read_text())


def test_epochs_as_a_signal_modality_through_a_model(sleep):
    spec = parse_spec(
        {
            "dataset": "sleep_edf",
            "dataset_options": {"download": False, "trim_wake": None},
            "modalities": [
                {
                    "name": "psg",
                    "kind": "signal",
                    "preprocessing": {"channels": CHANNELS, "normalise": "none"},
                    "encoder": {"name": "cnn_gru", "options": {"width": 8, "hidden": 8}},
                }
            ],
            "target": {"column": "label", "task": "multiclass", "classes": list(STAGES)},
            "split": {"method": "kfold", "n_folds": 2, "group": "subject"},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 2, "batch_size": 16},
        }
    )
    cohort = load_cohort(spec)
    assert len(cohort) == 53 and cohort.modalities["psg"].present.all()
    reasons = {(e["id"], e["reason"]): e.get("count") for e in cohort.excluded}
    assert reasons[("SC4001", "movement time")] == 1
    for tr, te in patient_splits(cohort, spec.split):  # a subject's nights stay together
        assert not set(cohort.groups[tr]) & set(cohort.groups[te])
    m = Model(spec, seed=0).fit(cohort)
    x = m.preprocessors_["psg"].transform(cohort.modalities["psg"])
    assert x.shape == (53, 3000, 3) and m.preprocessors_["psg"].feature_names_out_ == CHANNELS
    i = int(np.nonzero(cohort.ids == "SC4001-e3")[0][0])  # starts at 90 s: ramp at 40
    assert x[i, 0, 0] == pytest.approx(40.0, abs=0.1) and x[i, -1, 0] == pytest.approx(-30, 0.1)
    emg = x[i, :, 2]  # the 1 Hz envelope, resampled to 100 Hz: 5 * 90/599 ... 5 * 120/599
    assert emg[1000:2000].min() > 0.7 and emg[1000:2000].max() < 1.0
    p = m.predict_proba(cohort)
    assert p.shape == (53, 5) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_missing_files_download_from_the_source_and_are_verified(data_root, tmp_path, monkeypatch):
    """No local copy: the manifest and the record's two files come from the source (here a
    file:// mirror of the PhysioNet layout) into the cache, each checked by sha256."""
    from dataclasses import replace

    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "cache"))
    src = data_root / "sleep_edf"
    sleep = replace(
        DATASETS.get("sleep_edf"),
        base_url=(src / "sleep-cassette").as_uri() + "/",
        sums_url=(src / "SHA256SUMS.txt").as_uri(),
    )
    _, target = sleep.frames(records=["SC4001"], trim_wake=None)
    assert len(target) == 18
    got = sorted(p.name for p in (tmp_path / "cache" / "sleep_edf").rglob("*.edf"))
    assert got == ["SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf"]
    # a corrupted source file is refused, and nothing half-written stays in the cache
    bad = tmp_path / "bad"
    (bad / "sleep-cassette").mkdir(parents=True)
    for f in (src / "sleep-cassette").glob("SC4011*"):
        blob = f.read_bytes()
        (bad / "sleep-cassette" / f.name).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    broken = replace(sleep, base_url=(bad / "sleep-cassette").as_uri() + "/")
    with pytest.raises(DatasetError, match="does not match"):
        broken.frames(records=["SC4011"])
    assert not list((tmp_path / "cache").rglob("SC4011*"))
