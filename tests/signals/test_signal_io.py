"""Signal readers: EDF and WFDB round trips, channel selection, windows, mixed rates,
annotations, and named errors for missing, corrupt and truncated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyedflib
import pytest
import wfdb

from holomed.errors import CohortError
from holomed.io.signals import (
    parse_comments,
    read_annotations,
    read_header,
    read_signal,
    select_channels,
    signal_format,
)


def write_edf(path: Path, signals: dict[str, np.ndarray], fs: dict[str, float] | float) -> Path:
    """EDF+ with one signal per label, physical range +-500 (16-bit)."""
    labels = list(signals)
    rates = fs if isinstance(fs, dict) else dict.fromkeys(labels, fs)
    headers = [
        {
            "label": lab,
            "dimension": "uV",
            "sample_frequency": rates[lab],
            "physical_min": -500.0,
            "physical_max": 500.0,
            "digital_min": -32768,
            "digital_max": 32767,
        }
        for lab in labels
    ]
    data = [np.ascontiguousarray(signals[k], dtype=np.float64) for k in labels]
    pyedflib.highlevel.write_edf(str(path), data, headers)
    return path


def write_wfdb(folder: Path, name: str, x: np.ndarray, names: list[str], fs: float = 500.0,
               comments: list[str] | None = None) -> Path:  # fmt: skip
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(names),
        sig_name=names,
        p_signal=x,
        fmt=["16"] * len(names),
        adc_gain=[1000.0] * len(names),
        baseline=[0] * len(names),
        comments=comments or [],
        write_dir=str(folder),
    )
    return folder / name


@pytest.fixture
def edf(tmp_path):
    t = np.arange(0, 20, 1 / 100)
    sig = {
        "EEG Fpz-Cz": 100 * np.sin(2 * np.pi * 5 * t),
        "EOG horizontal": 50 * np.cos(2 * np.pi * 1 * t),
        "Resp": 10 * t - 100,
    }
    return write_edf(tmp_path / "rec.edf", sig, 100.0), sig


@pytest.fixture
def record(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)).round(3)
    rec = write_wfdb(
        tmp_path, "A0001", x, ["I", "II", "V1"], comments=["Age: 74", "Sex: Male", "Dx: RBBB,AF"]
    )
    return rec, x


def test_edf_round_trip_in_physical_units(edf):
    path, sig = edf
    s = read_signal(path)
    assert s.data.dtype == np.float32 and s.data.shape == (2000, 3)
    assert s.fs == 100.0 and s.channels == ["EEG Fpz-Cz", "EOG horizontal", "Resp"]
    for j, k in enumerate(sig):
        np.testing.assert_allclose(s.data[:, j], sig[k], atol=0.05)  # 16-bit quantisation
    h = read_header(path)
    assert (h.n_samples, h.duration, h.format) == (2000, 20.0, "edf")


def test_edf_channel_selection_order_window_and_loose_names(edf):
    path, sig = edf
    s = read_signal(path, ["resp", "eeg  fpz-cz"], start=2.0, stop=3.5)
    assert s.channels == ["Resp", "EEG Fpz-Cz"] and s.data.shape == (150, 2)
    np.testing.assert_allclose(s.data[:, 1], sig["EEG Fpz-Cz"][200:350], atol=0.05)


def test_missing_channel_names_the_file_and_the_channels_it_has(edf, record):
    with pytest.raises(CohortError, match=r"rec\.edf.*\['EMG submental'\].*EOG horizontal"):
        read_signal(edf[0], ["EEG Fpz-Cz", "EMG submental"])
    with pytest.raises(CohortError, match=r"A0001.*\['V6'\].*'II'"):
        read_signal(record[0], ["V6"])
    with pytest.raises(CohortError, match="x.edf"):
        select_channels(["a"], ["b"], "x.edf")


def test_edf_channels_at_lower_rates_are_resampled_to_the_highest(tmp_path):
    t = np.arange(0, 30, 1 / 100)
    emg = np.linspace(-10, 10, 30)  # a 1 Hz envelope, as in the Sleep-EDF cassette files
    path = write_edf(
        tmp_path / "mixed.edf",
        {"EEG": np.sin(2 * np.pi * 3 * t), "EMG submental": emg},
        {"EEG": 100.0, "EMG submental": 1.0},
    )
    assert read_header(path).channel_fs == [100.0, 1.0]
    s = read_signal(path, ["EMG submental", "EEG"], start=10, stop=20)
    assert s.fs == 100.0 and s.data.shape == (1000, 2)
    assert s.meta["channel_fs"] == [1.0, 100.0]
    # the slow ramp survives resampling away from the window's edges
    np.testing.assert_allclose(s.data[200:800, 0], np.interp(
        np.arange(200, 800) / 100 + 10, np.arange(30), emg), atol=0.3)  # fmt: skip


def test_wfdb_round_trip_comments_channels_and_window(record):
    rec, x = record
    for path in (rec, f"{rec}.hea"):
        s = read_signal(path)
        assert s.fs == 500.0 and s.channels == ["I", "II", "V1"]
        np.testing.assert_allclose(s.data, x, atol=1e-3)
    assert s.meta["Age"] == "74" and s.meta["Sex"] == "Male" and s.meta["Dx"] == "RBBB,AF"
    w = read_signal(rec, ["V1", "I"], start=0.5, stop=1.0)
    assert w.data.shape == (250, 2)
    np.testing.assert_allclose(w.data, x[250:500][:, [2, 0]], atol=1e-3)
    h = read_header(rec)
    assert (h.n_samples, h.duration, h.format) == (1000, 2.0, "wfdb")


def test_header_comments_parse_with_or_without_spaces():
    meta = parse_comments(["#Age: 74", "# Sex: Female", "Dx: STD,PVC", "free text here"])
    assert meta == {"Age": "74", "Sex": "Female", "Dx": "STD,PVC", "comment": "free text here"}


def test_corrupt_truncated_and_missing_files_raise_errors_naming_the_file(edf, record, tmp_path):
    path, _ = edf
    blob = path.read_bytes()
    (tmp_path / "trunc.edf").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "junk.edf").write_bytes(b"not an edf file" * 40)
    for name in ("trunc.edf", "junk.edf"):
        with pytest.raises(CohortError, match=name):
            read_header(tmp_path / name)
        with pytest.raises(CohortError, match=name):
            read_signal(tmp_path / name)
    with pytest.raises(CohortError, match="absent.edf: EDF file not found"):
        read_signal(tmp_path / "absent.edf")

    rec, _ = record
    dat = Path(f"{rec}.dat")
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(CohortError, match=r"A0001\.dat is truncated"):
        read_header(rec)
    dat.unlink()
    with pytest.raises(CohortError, match=r"A0001\.dat not found"):
        read_signal(rec)
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(CohortError, match=r"bad\.hea: unreadable WFDB header"):
        read_header(tmp_path / "bad")
    with pytest.raises(CohortError, match=r"nothing.xyz: not an EDF file \(.edf"):
        signal_format(tmp_path / "nothing.xyz")


def test_annotations_of_a_hypnogram(tmp_path):
    w = pyedflib.EdfWriter(str(tmp_path / "h.edf"), 0, file_type=pyedflib.FILETYPE_EDFPLUS)
    for onset, dur, desc in [(60, 90, "Sleep stage 1"), (0, 60, "Sleep stage W")]:
        w.writeAnnotation(onset, dur, desc)
    w.close()
    ann = read_annotations(tmp_path / "h.edf")
    assert ann["description"].tolist() == ["Sleep stage W", "Sleep stage 1"]
    assert ann["onset"].tolist() == [0.0, 60.0] and ann["duration"].tolist() == [60.0, 90.0]
    assert "start_datetime" in ann.attrs
