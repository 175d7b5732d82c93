"""Signal de-identification (EDF/EDF+ and WFDB): header fields, keyed date shifts,
annotation text, comment allow-list, untouched samples, the independent checker, bad
input, interrupted writes, and ``holomed deid`` on a cohort with signal modalities."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyedflib
import pytest
import wfdb
import yaml
from typer.testing import CliRunner

from holomed.cli import app
from holomed.errors import PrivacyError
from holomed.privacy import signal as sig
from holomed.privacy.cohort import deidentify_cohort
from holomed.privacy.keys import PrivacyKey
from holomed.privacy.signal import (
    check_signal_record,
    deidentify_edf,
    deidentify_signal_record,
    deidentify_wfdb,
    is_scoring_vocabulary,
)
from holomed.spec import load_spec

KEY = PrivacyKey(b"holomed-signal-test-key-0123456789")
runner = CliRunner()

NAME = "Johnathan_Pemberton"
CODE = "MRN-470011"
START = dt.datetime(2020, 5, 6, 22, 15, 30)
ANNOTATIONS = [
    (0.0, -1.0, "Lights off, Johnathan Pemberton asleep"),
    (30.0, 30.0, "Sleep stage W"),
    (60.5, 30.0, "Sleep stage 1"),
    (75.25, -1.0, "Dr. Halloway adjusted leads"),
]
# every identifying value written into the inputs (searched for in every output byte)
EDF_NEEDLES = [
    CODE,
    "Johnathan",
    "Pemberton",
    "Halloway",
    "04-MAR-1950",
    "lives_at_12_Elm",
    "ADM-8812",
    "Whitlock",
    "SomnoHospital",
    "ward_seven",
    "06-MAY-2020",
    "06.05.20",
]


def _edf(
    path: Path,
    start: dt.datetime = START,
    annotations: list[tuple[float, float, str]] | None = None,
    file_type: int = pyedflib.FILETYPE_EDFPLUS,
    records: int = 120,
) -> Path:
    """An EDF+ file with two channels at 100 and 10 Hz, identifying header fields and
    annotations (one holding a name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = pyedflib.EdfWriter(str(path), 2, file_type=file_type)
        w.setPatientCode(CODE)
        w.setPatientName(NAME)
        w.setSex(1)
        w.setBirthdate(dt.date(1950, 3, 4))
        w.setPatientAdditional("lives_at_12_Elm")
        w.setAdmincode("ADM-8812")
        w.setTechnician("Whitlock")
        w.setEquipment("SomnoHospital")
        w.setRecordingAdditional("ward_seven")
        w.setStartdatetime(start)
        w.setSignalHeaders(
            [
                {
                    "label": "EEG Fpz-Cz",
                    "dimension": "uV",
                    "sample_frequency": 100,
                    "physical_max": 250.0,
                    "physical_min": -250.0,
                    "digital_max": 32767,
                    "digital_min": -32768,
                    "transducer": "AgAgCl electrode",
                    "prefilter": "HP:0.5Hz",
                },
                {
                    "label": "Resp oro-nasal",
                    "dimension": "mV",
                    "sample_frequency": 10,
                    "physical_max": 5.0,
                    "physical_min": -5.0,
                    "digital_max": 2047,
                    "digital_min": -2048,
                    "transducer": "",
                    "prefilter": "",
                },
            ]
        )
        t = np.arange(records * 100) / 100
        eeg = 80 * np.sin(2 * np.pi * 1.3 * t) + 20 * np.sin(2 * np.pi * 11 * t)
        resp = 3 * np.sin(2 * np.pi * 0.25 * np.arange(records * 10) / 10)
        w.writeSamples([eeg, resp])
        if file_type in (pyedflib.FILETYPE_EDFPLUS, pyedflib.FILETYPE_BDFPLUS):
            for onset, duration, text in ANNOTATIONS if annotations is None else annotations:
                w.writeAnnotation(onset, duration, text)
        w.close()
    return path


WFDB_COMMENTS = [
    "Age: 93",
    "Sex: Female",
    "Dx: AF,RBBB",
    "Name: Marion Thornbury",
    "Rx: metoprolol from Dr. Ashcombe",
    "Referred by Beatrix Ashcombe",
]
WFDB_NEEDLES = ["thornbury_marion", "Thornbury", "Marion", "Ashcombe", "metoprolol", "12/03/2021"]


def _wfdb(folder: Path, name: str = "thornbury_marion", age: str = "93") -> Path:
    """A two-lead WFDB record (format 16) whose name and comments identify the patient."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 2000
    t = np.arange(n) / 500
    d = np.stack(
        [(400 * np.sin(2 * np.pi * 1.2 * t)).astype(int), (np.arange(n) % 97 - 48) * 7], 1
    ).astype(np.int16)
    comments = [c if not c.startswith("Age") else f"Age: {age}" for c in WFDB_COMMENTS]
    wfdb.wrsamp(
        name,
        fs=500,
        units=["mV", "mV"],
        sig_name=["II", "V1"],
        d_signal=d,
        fmt=["16", "16"],
        adc_gain=[1000.0, 1000.0],
        baseline=[0, 0],
        comments=comments,
        base_time=dt.time(11, 39, 16),
        base_date=dt.date(2021, 3, 12),
        write_dir=str(folder),
    )
    return folder / name


def _bytes_hits(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    hits = {}
    for f in folder.rglob("*"):
        if f.is_file():
            blob = f.read_bytes().lower()
            left = [s for s in needles if s.lower().encode() in blob]
            if left:
                hits[f.name] = left
    return hits


def _edf_samples(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    r = pyedflib.EdfReader(str(path))
    try:
        n = r.signals_in_file
        dig = [r.readSignal(i, digital=True) for i in range(n)]
        phys = [r.readSignal(i) for i in range(n)]
        heads = [r.getSignalHeader(i) for i in range(n)]
    finally:
        r.close()
    return dig, phys, heads


def _edf_start_and_annotations(path: Path) -> tuple[dt.datetime, tuple]:
    r = pyedflib.EdfReader(str(path))
    try:
        start = r.getStartdatetime()
        ann = r.readAnnotations()
    finally:
        r.close()
    return start, ann


# -- EDF ------------------------------------------------------------------------------


def test_edf_fields_dates_annotations_and_samples(tmp_path: Path) -> None:
    src = _edf(tmp_path / "in" / "Johnathan_Pemberton_night1.edf")
    out = tmp_path / "out"
    out.mkdir()
    assert len(check_signal_record(src)) >= 3  # the checker sees the identified input
    rep = deidentify_edf(src, out, KEY, "MRN-470011")
    dst = out / rep["name"]
    assert dst.name == f"{KEY.pseudonym('MRN-470011')}.edf"
    assert [f.name for f in out.iterdir()] == [dst.name]  # no temporary file left
    assert _bytes_hits(out, EDF_NEEDLES) == {}
    assert check_signal_record(dst, original=src) == []
    # counts by identifier type, never values
    c = rep["counts"]
    for field in (
        "patient_code",
        "patient_name",
        "patient_sex",
        "patient_birthdate",
        "patient_additional",
        "admin_code",
        "technician",
        "equipment",
        "recording_additional",
    ):
        assert c[field] == 1, field
    assert c["start_dates_shifted"] == 1 and c["file_names_pseudonymised"] == 1
    assert c["annotations"] == 4 and c["annotations_kept_as_vocabulary"] == 2
    assert rep["entities"].get("NAME", 0) >= 2
    assert "Pemberton" not in json.dumps(rep)
    # the patient field is "<pseudonym> X X X"; the start moved by the keyed shift, the
    # time of day and every onset kept
    head = dst.read_bytes()[:256].decode("latin-1")
    assert head[8:88].split() == [KEY.pseudonym("MRN-470011"), "X", "X", "X"]
    start, (onsets, durations, texts) = _edf_start_and_annotations(dst)
    assert start == START + dt.timedelta(days=KEY.date_shift_days("MRN-470011"))
    assert start.time() == START.time() and start.date() != START.date()
    assert list(onsets) == [a[0] for a in ANNOTATIONS]
    assert list(durations) == [a[1] for a in ANNOTATIONS]
    assert texts[1:3].tolist() == ["Sleep stage W", "Sleep stage 1"]
    assert texts[0].startswith("Lights off, ") and texts[3].startswith("Dr. ")
    # samples: digital values identical, physical to the digital resolution
    d0, p0, h0 = _edf_samples(src)
    d1, p1, h1 = _edf_samples(dst)
    for i, h in enumerate(h0):
        assert np.array_equal(d0[i], d1[i])
        step = (h["physical_max"] - h["physical_min"]) / (h["digital_max"] - h["digital_min"])
        assert np.abs(p0[i] - p1[i]).max() <= step / 2
        assert {k: h1[i][k] for k in ("label", "dimension", "transducer", "prefilter")} == {
            k: h[k] for k in ("label", "dimension", "transducer", "prefilter")
        }
    # same key, same patient: the same file, byte for byte; another key moves it elsewhere
    again = tmp_path / "again"
    again.mkdir()
    deidentify_edf(src, again, KEY, "MRN-470011")
    assert (again / dst.name).read_bytes() == dst.read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    rep2 = deidentify_edf(src, other, PrivacyKey(b"another-signal-key-0123456789abcdef"), CODE)
    assert rep2["name"] != rep["name"]


def test_edf_drop_mode_plain_edf_and_the_1985_limit(tmp_path: Path) -> None:
    # an id whose shift crosses 1 January 1985 from a start in early 1985
    pid = next(f"P{i}" for i in range(1000) if KEY.date_shift_days(f"P{i}") < -40)
    src = _edf(tmp_path / "early.edf", start=dt.datetime(1985, 2, 1, 23, 0, 5))
    out = tmp_path / "out"
    out.mkdir()
    rep = deidentify_edf(src, out, KEY, pid, annotations="drop")
    assert rep["counts"]["start_dates_clamped_to_1985"] == 1
    assert rep["counts"]["annotation_texts_dropped"] == 2
    start, (onsets, _, texts) = _edf_start_and_annotations(out / rep["name"])
    assert start == dt.datetime(1985, 1, 1, 23, 0, 5)  # time of day kept
    assert texts.tolist() == ["[TEXT]", "Sleep stage W", "Sleep stage 1", "[TEXT]"]
    assert list(onsets) == [a[0] for a in ANNOTATIONS]
    assert check_signal_record(out / rep["name"], original=src) == []
    assert _bytes_hits(out, EDF_NEEDLES[:-2]) == {}
    # plain EDF (no annotations possible): the same header rules
    plain = _edf(tmp_path / "plain.edf", file_type=pyedflib.FILETYPE_EDF)
    rep = deidentify_edf(plain, out, KEY, "X1")
    assert check_signal_record(out / rep["name"], original=plain) == []
    assert rep["counts"]["patient_field"] == 1 and rep["counts"]["recording_field"] == 1
    d0, _, _ = _edf_samples(plain)
    d1, _, _ = _edf_samples(out / rep["name"])
    assert all(np.array_equal(a, b) for a, b in zip(d0, d1, strict=True))


def test_scoring_vocabulary_is_kept_free_text_is_not() -> None:
    for text in (
        "Sleep stage W",
        "Sleep stage N3",
        "Sleep stage ?",
        "Movement time",
        "Lights off",
        "SpO2 desaturation",
    ):
        assert is_scoring_vocabulary(text), text
    for text in ("Dr. Halloway", "Lights off 06/05/2020", "Marion", "MRN 4471", ""):
        assert not is_scoring_vocabulary(text), text


def test_checker_flags_what_is_not_allowed(tmp_path: Path) -> None:
    src = _edf(tmp_path / "a.edf")
    out = tmp_path / "out"
    out.mkdir()
    dst = out / deidentify_edf(src, out, KEY, "MRN-1")["name"]
    # the original's start date written back into the header is caught
    raw = bytearray(dst.read_bytes())
    raw[168:176] = b"06.05.20"
    raw[88:168] = b"Startdate 06-MAY-2020 X X X".ljust(80)
    bad = out / dst.name.replace(".edf", "_1.edf")
    bad.write_bytes(bytes(raw))
    found = check_signal_record(bad, original=src)
    assert any("start date: equals" in f for f in found)
    # a technician left in the recording field, a name in the patient field
    raw[88:168] = b"Startdate 06-MAY-2020 X Whitlock X".ljust(80)
    raw[8:88] = b"MRN-470011 M 04-MAR-1950 Johnathan_Pemberton".ljust(80)
    bad.write_bytes(bytes(raw))
    found = check_signal_record(bad, original=src)
    assert any(f.startswith("patient field") for f in found)
    assert any(f.startswith("recording field") for f in found)
    assert any(f.startswith("header: holds a value") for f in found)
    assert not any("Whitlock" in f or "Pemberton" in f for f in found)  # no values


# -- WFDB -----------------------------------------------------------------------------


def test_wfdb_header_comments_dates_and_samples(tmp_path: Path) -> None:
    src = _wfdb(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    assert len(check_signal_record(src)) >= 4
    rep = deidentify_wfdb(src, out, KEY, "MRN-55")
    p = KEY.pseudonym("MRN-55")
    assert rep["name"] == p
    assert sorted(f.name for f in out.iterdir()) == [f"{p}.dat", f"{p}.hea"]
    assert _bytes_hits(out, WFDB_NEEDLES) == {}
    assert check_signal_record(out / p, original=src) == []
    hea = (out / f"{p}.hea").read_text()
    comments = [line for line in hea.splitlines() if line.startswith("#")]
    assert comments == ["# Age: 90+", "# Sex: Female", "# Dx: AF,RBBB"]
    c = rep["counts"]
    assert c["comments_dropped"] == 3 and c["ages_over_89_to_90_plus"] == 1
    assert c["base_dates_shifted"] == 1 and c["record_names_pseudonymised"] == 1
    a = wfdb.rdrecord(str(src), physical=False)
    b = wfdb.rdrecord(str(out / p), physical=False)
    assert np.array_equal(a.d_signal, b.d_signal)
    assert b.base_time == a.base_time  # the time of day is kept
    days = (b.base_date - a.base_date).days
    assert days == KEY.date_shift_days("MRN-55")
    assert b.sig_name == a.sig_name and b.adc_gain == a.adc_gain and b.fs == a.fs
    # an age of 89 or less stays; unknown stays; a sentence is no age
    assert sig._age("74") == "74" and sig._age("Unknown") == "Unknown"
    assert sig._age("89") == "89" and sig._age("90") == "90+" and sig._age("ninety") is None


def test_wfdb_checker_flags_comments_ages_and_prefix(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rep = deidentify_wfdb(_wfdb(tmp_path / "in"), out, KEY, "A1")
    hea = out / f"{rep['name']}.hea"
    text = hea.read_text()
    hea.write_text(text + "# Age: 95\n# Rx: something\nfree text line\n")
    found = check_signal_record(out / rep["name"])
    assert any("age over 89" in f for f in found)
    assert any("allow-list" in f for f in found)
    assert any("after the signal lines" in f for f in found)
    # a wider allow-list, given to both sides
    out2 = tmp_path / "out2"
    out2.mkdir()
    rep = deidentify_wfdb(_wfdb(tmp_path / "in"), out2, KEY, "A1", keep_comments=["Age", "Rx"])
    assert "# Rx: metoprolol" in (out2 / f"{rep['name']}.hea").read_text()
    assert check_signal_record(out2 / rep["name"], allowed_comments=["age", "rx"]) == []


def test_mat_prefix_is_kept_other_prefixes_blanked(tmp_path: Path) -> None:
    src = _wfdb(tmp_path / "in", name="rec1")
    # move the samples behind a 16-byte prefix holding a name
    dat = tmp_path / "in" / "rec1.dat"
    dat.write_bytes(b"Thornbury Marion" + dat.read_bytes())
    hea = tmp_path / "in" / "rec1.hea"
    hea.write_text(hea.read_text().replace("rec1.dat 16 ", "rec1.dat 16+16 "))
    out = tmp_path / "out"
    out.mkdir()
    rep = deidentify_wfdb(src, out, KEY, "A2")
    assert rep["counts"]["data_file_prefix_bytes_blanked"] == 16
    assert _bytes_hits(out, ["Thornbury"]) == {}
    assert check_signal_record(out / rep["name"]) == []


# -- bad input and interrupted writes -------------------------------------------------


def test_bad_inputs_are_named_errors_and_leave_nothing(tmp_path: Path) -> None:
    good = _edf(tmp_path / "in" / "good.edf")
    out = tmp_path / "out"
    out.mkdir()
    trunc = tmp_path / "in" / "trunc.edf"
    trunc.write_bytes(good.read_bytes()[:-700])
    with pytest.raises(PrivacyError, match=r"^in/trunc\.edf: unreadable EDF file"):
        deidentify_signal_record(trunc, out, KEY, "A", where="in/trunc.edf")
    junk = tmp_path / "in" / "junk.edf"
    junk.write_bytes(b"not an edf file" * 40)
    with pytest.raises(PrivacyError, match=r"junk\.edf: unreadable EDF file"):
        deidentify_signal_record(junk, out, KEY, "A", where="in/junk.edf")
    with pytest.raises(PrivacyError, match=r"in/gone\.edf: EDF file not found"):
        deidentify_signal_record(tmp_path / "gone.edf", out, KEY, "A", where="in/gone.edf")
    discont = tmp_path / "in" / "discont.edf"
    raw = bytearray(good.read_bytes())
    raw[192:197] = b"EDF+D"
    discont.write_bytes(bytes(raw))
    with pytest.raises(PrivacyError, match="discontinuous"):
        deidentify_signal_record(discont, out, KEY, "A")
    rec = _wfdb(tmp_path / "w", name="rec2")
    (tmp_path / "w" / "rec2.dat").unlink()
    with pytest.raises(PrivacyError, match=r"^w/rec2\.dat: WFDB data file not found"):
        deidentify_signal_record(rec, out, KEY, "A", where="w/rec2")
    rec = _wfdb(tmp_path / "w", name="rec3")
    dat = tmp_path / "w" / "rec3.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(PrivacyError, match=r"rec3\.dat: WFDB data file truncated"):
        deidentify_signal_record(rec, out, KEY, "A", where="w/rec3")
    with pytest.raises(PrivacyError, match=r"w/nothing\.hea: not an EDF file"):
        deidentify_signal_record(tmp_path / "w" / "nothing", out, KEY, "A", where="w/nothing")
    assert list(out.iterdir()) == []  # nothing half-written, no temporary file


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_edf_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    src = _edf(tmp_path / "a.edf")
    out = tmp_path / "out"
    out.mkdir()

    def fail(self, *a, **k):
        raise error

    monkeypatch.setattr(pyedflib.EdfWriter, "writeAnnotation", fail)
    with pytest.raises(type(error) if isinstance(error, KeyboardInterrupt) else PrivacyError):
        deidentify_edf(src, out, KEY, "A")
    assert list(out.iterdir()) == []


def test_interrupted_wfdb_write_leaves_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _wfdb(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()

    def fail(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sig, "_verify_wfdb", fail)
    with pytest.raises(KeyboardInterrupt):
        deidentify_wfdb(src, out, KEY, "A")
    assert list(out.iterdir()) == []


# -- the cohort: library and CLI ------------------------------------------------------


def _cohort(root: Path) -> tuple[Path, list[str]]:
    """Five patients: EEG (EDF+) windows for four (two windows of one night share a
    file), ECG (WFDB) for five, one of whose data file is missing; a clinical table and
    labels."""
    ids = [f"MRN00{i}" for i in range(5)]
    eeg_rows = []
    for i, pid in enumerate(ids[:3]):
        f = _edf(root / "eeg" / f"{pid}_Pemberton.edf", start=START + dt.timedelta(days=i))
        eeg_rows.append({"patient_id": pid, "path": f"eeg/{f.name}", "start": 0, "stop": 60})
    eeg_rows.append({"patient_id": ids[3], "path": eeg_rows[2]["path"], "start": 60, "stop": 120})
    pd.DataFrame(eeg_rows).to_csv(root / "eeg.csv", index=False)
    ecg_rows = []
    for pid in ids:
        _wfdb(root / "ecg", name=f"{pid}_thornbury")
        ecg_rows.append({"patient_id": pid, "path": f"ecg/{pid}_thornbury"})
    (root / "ecg" / f"{ids[4]}_thornbury.dat").unlink()
    pd.DataFrame(ecg_rows).to_csv(root / "ecg.csv", index=False)
    pd.DataFrame({"patient_id": ids, "age": [50, 61, 72, 45, 38]}).to_csv(
        root / "clinical.csv", index=False
    )
    pd.DataFrame({"patient_id": ids, "label": [0, 1, 0, 1, 1]}).to_csv(
        root / "labels.csv", index=False
    )
    spec = {
        "dataset": "identified-signals",
        "modalities": [
            {"name": "clinical", "kind": "tabular", "source": "clinical.csv"},
            {"name": "eeg", "kind": "signal", "source": "eeg.csv", "id_column": "patient_id"},
            {"name": "ecg", "kind": "signal", "source": "ecg.csv", "id_column": "patient_id"},
        ],
        "target": {"source": "labels.csv", "id_column": "patient_id", "column": "label"},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml", ids


def test_holomed_deid_cli_on_a_signal_cohort(tmp_path: Path) -> None:
    spec_path, ids = _cohort(tmp_path / "data")
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(KEY.secret)
    out = tmp_path / "deid"
    r = runner.invoke(app, ["deid", str(spec_path), "--out", str(out), "--key-file", str(key_file)])
    assert r.exit_code == 0, r.output[-2000:]
    assert "ecg: 1 row(s) left out" in r.output
    needles = [*ids, *EDF_NEEDLES, *WFDB_NEEDLES, "_Pemberton", "_thornbury"]
    assert _bytes_hits(out, needles) == {}
    report = json.loads((out / "deid_report.json").read_text())
    eeg, ecg = report["modalities"]["eeg"], report["modalities"]["ecg"]
    assert eeg["records"] == {"edf": 3} and eeg["patients"] == 4
    assert eeg["patient_name"] == 3 and eeg["start_dates_shifted"] == 3
    assert eeg["annotation_entities"]["NAME"] >= 6
    assert ecg["records"] == {"wfdb": 4} and ecg["excluded_by_check"] == {
        "unreadable or corrupt record": 1  # its .dat is missing
    }
    assert ecg["comments_dropped"] == 12 and ecg["ages_over_89_to_90_plus"] == 4
    # the tables: pseudonyms, new relative paths, windows kept; shared file shared
    eeg_t = pd.read_csv(out / "eeg.csv")
    assert list(eeg_t.columns) == ["patient_id", "path", "start", "stop"]
    assert list(eeg_t["patient_id"]) == [KEY.pseudonym(i) for i in ids[:4]]
    assert (
        eeg_t["path"].iloc[3] == eeg_t["path"].iloc[2] == f"eeg_files/{KEY.pseudonym(ids[2])}.edf"
    )
    assert list(eeg_t["start"]) == [0, 0, 0, 60] and list(eeg_t["stop"]) == [60, 60, 60, 120]
    ecg_t = pd.read_csv(out / "ecg.csv")
    assert list(ecg_t.columns) == ["patient_id", "path"]
    assert list(ecg_t["path"]) == [f"ecg_files/{KEY.pseudonym(i)}" for i in ids[:4]]
    # every written record passes the independent checker against its original
    data = tmp_path / "data"
    for pid, p in zip(eeg_t["patient_id"][:3], eeg_t["path"][:3], strict=True):
        orig = data / "eeg" / f"{ids[[KEY.pseudonym(i) for i in ids].index(pid)]}_Pemberton.edf"
        assert check_signal_record(out / p, original=orig) == []
    for pid, p in zip(ids[:4], ecg_t["path"], strict=True):
        assert check_signal_record(out / p, original=data / "ecg" / f"{pid}_thornbury") == []
    # dates: each file moved by its patient's keyed shift, intervals kept
    for i, pid in enumerate(ids[:3]):
        start, _ = _edf_start_and_annotations(out / "eeg_files" / f"{KEY.pseudonym(pid)}.edf")
        shift = dt.timedelta(days=KEY.date_shift_days(pid))
        assert start == START + dt.timedelta(days=i) + shift
    # the de-identified spec reads every record back, nothing left out
    from holomed.cohort import read_modalities

    new = load_spec(out / "spec.yaml")
    assert new.modalities[1].options["path_column"] == "path"
    raw, excluded = read_modalities(new)
    assert excluded == [] and len(raw["eeg"]) == 4 and len(raw["ecg"]) == 4


def test_deid_cohort_same_key_same_output_and_bad_option(tmp_path: Path) -> None:
    spec_path, ids = _cohort(tmp_path / "data")
    (tmp_path / "data" / "ecg" / f"{ids[4]}_thornbury.hea").unlink()
    spec = load_spec(spec_path)
    a = deidentify_cohort(spec, tmp_path / "a", KEY)
    b = deidentify_cohort(spec, tmp_path / "b", KEY)
    assert a["modalities"]["ecg"]["excluded_by_check"] == {"record file not found": 1}
    for f in (tmp_path / "a").rglob("*"):
        if f.is_file() and f.suffix in (".edf", ".hea", ".dat", ".csv"):
            assert (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes() == f.read_bytes()
    assert a["modalities"]["eeg"] == b["modalities"]["eeg"]
    spec.modalities[1].options["deid_annotations"] = "keep"
    with pytest.raises(PrivacyError, match="deid_annotations"):
        deidentify_cohort(spec, tmp_path / "c", KEY)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_a_record_failing_mid_run_stops_with_its_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path, ids = _cohort(tmp_path / "data")
    real = sig._verify_edf

    def fail_on_second(tmp, info, start, where):
        if where.endswith(f"{ids[1]}_Pemberton.edf"):
            raise PrivacyError(f"{where}: the de-identified file differs from the input")
        return real(tmp, info, start, where)

    monkeypatch.setattr(sig, "_verify_edf", fail_on_second)
    with pytest.raises(PrivacyError, match=rf"^eeg/{ids[1]}_Pemberton\.edf: "):
        deidentify_cohort(load_spec(spec_path), tmp_path / "out", KEY)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


# -- real files ------------------------------------------------------------------------


def test_real_cpsc_records(tmp_path: Path) -> None:
    from conftest import require_shared_data

    folder = require_shared_data("cpsc2018_ecg") / "records"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("A0001", "A0002", "A0003"):
        rep = deidentify_wfdb(folder / name, out, KEY, name)
        p = out / rep["name"]
        assert check_signal_record(p, original=folder / name) == []
        a = wfdb.rdrecord(str(folder / name), physical=False)
        b = wfdb.rdrecord(str(p), physical=False)
        assert np.array_equal(a.d_signal, b.d_signal)
        assert (p.with_suffix(".mat")).read_bytes() == (folder / f"{name}.mat").read_bytes()
        text = p.with_suffix(".hea").read_text()
        assert name not in text and "Rx" not in text and "Unknown" not in text


def test_shipped_edf_file(tmp_path: Path) -> None:
    """pyedflib's shipped EDF+ test file, whose header names "Hans Muller" (patient) and
    "Mr. Spotty" (technician)."""
    out = tmp_path / "out"
    out.mkdir()
    shipped = Path(pyedflib.__file__).parent / "data" / "test_generator.edf"
    local = tmp_path / shipped.name
    shutil.copyfile(shipped, local)
    rep = deidentify_edf(local, out, KEY, "hans")
    assert check_signal_record(out / rep["name"], original=local) == []
    assert _bytes_hits(out, ["Muller", "Spotty", "abcxyz99"]) == {}
