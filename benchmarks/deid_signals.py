"""Signal de-identification speed: files/s of ``deidentify_signal_record`` (one process, one
thread) on

- ``edf``: N generated EDF+ night recordings (30 min, 6 channels: 2 EEG + EOG + chin EMG
  at 100 Hz, respiration and SpO2 at 1 Hz, 30-s data records, 60 hypnogram annotations
  plus two free-text annotations holding a name; identifying header fields), annotation
  text through the note de-identifier;
- ``wfdb``: real CPSC 2018 12-lead ECG records (WFDB ``.hea`` + ``.mat``, 500 Hz, 10-60
  s) from ``$HOLOMED_DATA/cpsc2018_ecg/records`` (generated 12-lead records of 30 s when
  the data are absent; the results file says which);
- ``edf_shipped``: pyedflib's shipped ``test_generator.edf`` (EDF+, 11 channels, 600 s,
  identifying header), copied N times.

Each set: min and median of 3 runs, each into a fresh folder, with the samples read back
and compared (``verify=True``, the default). The note de-identifier's model load is timed
apart, before the runs. Afterwards every output is checked with
``check_signal_record`` against its original; the total of findings must be 0.

    OMP_NUM_THREADS=1 python benchmarks/deid_signals.py --edf 20 --wfdb 50 \
        --out benchmarks/results/privacy/deid_signals.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyedflib
import wfdb

from holomed.privacy.keys import PrivacyKey
from holomed.privacy.signal import AnnotationTexts, check_signal_record, deidentify_signal_record
from holomed.privacy.text import NoteDeidentifier

STAGES = ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage R"]


def make_edf(path: Path, i: int, seconds: int = 1800) -> None:
    rng = np.random.default_rng(i)
    chans = [
        ("EEG Fpz-Cz", "uV", 100),
        ("EEG Pz-Oz", "uV", 100),
        ("EOG horizontal", "uV", 100),
        ("EMG submental", "uV", 100),
        ("Resp oro-nasal", "mV", 1),
        ("SpO2", "%", 1),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = pyedflib.EdfWriter(str(path), len(chans), file_type=pyedflib.FILETYPE_EDFPLUS)
        w.setPatientCode(f"MRN{i:06d}")
        w.setPatientName(f"Patient_Benchname{i}")
        w.setSex(i % 2)
        w.setBirthdate(dt.date(1950 + i % 40, 1 + i % 12, 1 + i % 28))
        w.setTechnician("Tech_Whitlock")
        w.setEquipment("SomnoHospital")
        w.setAdmincode(f"ADM{i}")
        w.setStartdatetime(dt.datetime(2019, 1 + i % 12, 1 + i % 28, 22, 30, 0))
        w.setSignalHeaders(
            [
                {
                    "label": lab,
                    "dimension": unit,
                    "sample_frequency": fs,
                    "physical_max": 500.0,
                    "physical_min": -500.0,
                    "digital_max": 32767,
                    "digital_min": -32768,
                    "transducer": "",
                    "prefilter": "",
                }
                for lab, unit, fs in chans
            ]
        )
        w.setDatarecordDuration(30)
        w.writeSamples([rng.normal(0, 60, seconds * fs) for _, _, fs in chans])
        for k in range(seconds // 30):
            w.writeAnnotation(30.0 * k, 30.0, STAGES[(k // 4 + i) % len(STAGES)])
        w.writeAnnotation(5.0, -1, f"Lights off, Benchname{i} in bed")
        w.writeAnnotation(1795.0, -1, "Dr. Halloway checked leads")
        w.close()


def make_wfdb(folder: Path, i: int) -> Path:
    rng = np.random.default_rng(i)
    name = f"B{i:04d}"
    wfdb.wrsamp(
        name,
        fs=500,
        units=["mV"] * 12,
        sig_name=["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"],
        d_signal=rng.integers(-2000, 2000, (15000, 12)),
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        comments=[f"Age: {30 + i % 70}", "Sex: Male", "Dx: AF", "Rx: Unknown", "Hx: Unknown"],
        base_time=dt.time(11, 39, 16),
        base_date=dt.date(2020, 2, 5),
        write_dir=str(folder),
    )
    return folder / name


def _run(items: list[tuple[Path, str]], dst: Path, key: PrivacyKey, texts: AnnotationTexts):
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    out = []
    t = time.perf_counter()
    for src, pid in items:
        rep = deidentify_signal_record(src, dst, key, pid, texts=texts)
        out.append((src, dst / rep["name"]))
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edf", type=int, default=20, help="generated EDF+ files")
    ap.add_argument("--wfdb", type=int, default=50, help="WFDB records (real when available)")
    ap.add_argument("--shipped", type=int, default=20, help="copies of pyedflib's test EDF")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="runs/bench/deid_signals.json")
    a = ap.parse_args()
    key = PrivacyKey(os.urandom(32))
    results: dict[str, object] = {
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "pyedflib": pyedflib.__version__,
        "wfdb": wfdb.__version__,
        "platform": platform.platform(),
        "verify_samples": True,
        "sets": {},
    }
    notes = NoteDeidentifier(mode="surrogate", key=key)
    t = time.perf_counter()
    notes.deidentify("Lights off, Marion Halloway in bed", "warm-up")
    results["note_model_load_seconds"] = round(time.perf_counter() - t, 2)
    with tempfile.TemporaryDirectory(prefix="deid-signals-") as tmp:
        tmp = Path(tmp)
        sets: dict[str, tuple[list[tuple[Path, str]], str]] = {}
        t = time.perf_counter()
        if a.edf:
            (tmp / "edf").mkdir()
            items = []
            for i in range(a.edf):
                p = tmp / "edf" / f"Benchname{i}_night.edf"
                make_edf(p, i)
                items.append((p, f"MRN{i:06d}"))
            sets["edf"] = (items, "generated EDF+ PSG, 30 min, 6 channels, 62 annotations")
        if a.wfdb:
            root = os.environ.get("HOLOMED_DATA")
            real = Path(root) / "cpsc2018_ecg" / "records" if root else None
            if real is not None and real.is_dir():
                recs = sorted(p.with_suffix("") for p in real.glob("*.hea"))[: a.wfdb]
                what = f"real CPSC 2018 records ({len(recs)}), 12 leads, 500 Hz, .mat"
            else:
                (tmp / "wfdb").mkdir()
                recs = [make_wfdb(tmp / "wfdb", i) for i in range(a.wfdb)]
                what = f"generated 12-lead WFDB records ({len(recs)}), 30 s, 500 Hz, .dat"
            sets["wfdb"] = ([(r, r.name) for r in recs], what)
        if a.shipped:
            shipped = Path(pyedflib.__file__).parent / "data" / "test_generator.edf"
            (tmp / "shipped").mkdir()
            items = []
            for i in range(a.shipped):
                p = tmp / "shipped" / f"copy{i}.edf"
                shutil.copyfile(shipped, p)
                items.append((p, f"S{i}"))
            sets["edf_shipped"] = (items, "pyedflib test_generator.edf, EDF+, 11 ch, 600 s")
        results["generate_seconds"] = round(time.perf_counter() - t, 2)
        for name, (items, what) in sets.items():
            texts = AnnotationTexts("deidentify", notes, key)
            times, out = [], []
            for _ in range(a.runs):
                texts.cache.clear()  # every run analyses the annotation texts again
                seconds, out = _run(items, tmp / f"out-{name}", key, texts)
                times.append(seconds)
            rates = sorted(round(len(items) / s, 2) for s in times)
            mb = (
                sum(
                    f.stat().st_size
                    for src, _ in items
                    for f in ([src] if src.suffix else src.parent.glob(f"{src.name}.*"))
                )
                / 2**20
            )
            t = time.perf_counter()
            findings = sum(len(check_signal_record(d, original=s)) for s, d in out)
            check_s = time.perf_counter() - t
            row = {
                "what": what,
                "files": len(items),
                "input_megabytes": round(mb, 1),
                "files_per_second_min": rates[0],
                "files_per_second_median": statistics.median(rates),
                "files_per_second_runs": [round(len(items) / s, 2) for s in times],
                "megabytes_per_second_median": round(mb / statistics.median(times), 1),
                "checker_findings_total": findings,
                "checker_files_per_second": round(len(items) / check_s, 1),
            }
            results["sets"][name] = row
            print(name, json.dumps(row), flush=True)
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")
    bad = [n for n, r in results["sets"].items() if r["checker_findings_total"]]
    if bad:
        raise SystemExit(f"checker findings left in {bad}")


if __name__ == "__main__":
    main()
