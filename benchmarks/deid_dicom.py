"""DICOM de-identification speed: files/s of ``deidentify_dicom_folder`` on N CT-like files
(pydicom's CT_small.dcm, 128x128, 179 private attributes, copied with new patient ids,
UIDs and dates; 10 files per patient in patient/study folders), for each worker count:
min and median of 3 runs, each into a fresh folder. Afterwards every output file is
verified with ``check_dicom``; the total of its findings must be 0.

    OMP_NUM_THREADS=1 python benchmarks/deid_dicom.py --n 300 --workers 1,2 \
        --out runs/bench/deid_dicom.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from holomed.privacy.dicom import check_dicom, deidentify_dicom_folder
from holomed.privacy.keys import PrivacyKey

FILES_PER_PATIENT = 10


def make_files(root: Path, n: int) -> None:
    """``n`` copies of CT_small.dcm with new Patient ID, study/series/instance UIDs and
    dates: root/<patient id>/<study uid>/<instance uid>.dcm."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base = "1.2.826.0.1.3680043.2.1143.9"
    for i in range(n):
        p = i // FILES_PER_PATIENT
        ds = template.copy()
        ds.PatientID = f"BENCH{p:05d}"
        ds.PatientName = f"Bench^Patient{p}"
        ds.StudyInstanceUID = f"{base}.{p + 1}"
        ds.SeriesInstanceUID = f"{base}.{p + 1}.1"
        ds.SOPInstanceUID = f"{base}.{p + 1}.1.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i % FILES_PER_PATIENT + 1
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = f"2020{1 + p % 12:02d}15"
        folder = root / ds.PatientID / ds.StudyInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="number of files")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="runs/bench/deid_dicom.json")
    a = ap.parse_args()
    key = PrivacyKey(os.urandom(32))
    results: dict[str, object] = {
        "files": a.n,
        "file": "CT_small.dcm (pydicom), 128x128 int16, 179 private attributes",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "pydicom": pydicom.__version__,
        "platform": platform.platform(),
        "by_workers": {},
    }
    with tempfile.TemporaryDirectory(prefix="deid-bench-") as tmp:
        src = Path(tmp) / "src"
        t = time.perf_counter()
        make_files(src, a.n)
        results["generate_seconds"] = round(time.perf_counter() - t, 2)
        dst = Path(tmp) / "dst"
        for workers in (int(w) for w in a.workers.split(",")):
            rates, report = [], {}
            for _ in range(a.runs):
                shutil.rmtree(dst, ignore_errors=True)
                report = deidentify_dicom_folder(src, dst, key, workers=workers)
                rates.append(report["files_per_second"])
            t = time.perf_counter()
            findings = sum(len(check_dicom(p)) for p in dst.rglob("*.dcm"))
            check_s = time.perf_counter() - t
            row = {
                "files_per_second_min": min(rates),
                "files_per_second_median": statistics.median(rates),
                "files_per_second_runs": rates,
                "deidentified": report["deidentified"],
                "quarantined": report["quarantined"],
                "failed": report["failed"],
                "checker_findings_total": findings,
                "checker_files_per_second": round(a.n / check_s, 1),
            }
            results["by_workers"][str(workers)] = row
            print(f"workers={workers}", json.dumps(row), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    bad = [w for w, r in results["by_workers"].items() if r["checker_findings_total"]]
    if bad:
        raise SystemExit(f"checker findings left with workers={bad}")


if __name__ == "__main__":
    main()
