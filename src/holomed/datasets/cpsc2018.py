"""CPSC 2018 12-lead ECG, records A0001-A0150 as redistributed in the PhysioNet/CinC
Challenge 2020 (early release, text diagnoses): WFDB headers + MATLAB v4 ``.mat``
samples, 500 Hz, 10-60 s, with age, sex and one or more diagnoses per record.

Folder name: ``$HOLOMED_DATA/cpsc2018_ecg`` (or ``.../cpsc2018``, or the cache), with
the records under ``records/``. The sha256 of all 300 files ship with the package
(``manifests/cpsc2018.sha256``); the download source is the challenge's example
repository at the commit that still held them.

``frames()`` gives two modalities, ``ecg`` (kind ``signal``: one row per record with its
``path``) and ``demographics`` (``age`` in years as a number, ``sex``), and the target
frame: ``label`` = the diagnoses joined by ``;`` (multilabel), plus ``age`` and ``sex``
as attributes for subgroup analysis. An age that is not a number ('NaN', 'Unknown') or
a sex other than Male/Female is left missing and reported (``reading_report`` of the
demographics frame, which the cohort lists among its exclusions, scope ``value``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.datasets.base import (
    Dataset,
    cache_dir,
    download_file,
    register_dataset,
    sha256,
)
from holomed.io.signals import read_wfdb_header


def read_manifest(name: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-format file shipped in
    ``holomed/datasets/manifests``."""
    text = resources.files("holomed.datasets").joinpath("manifests", name).read_text()
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, fname = line.split(maxsplit=1)
            out[fname.strip().lstrip("*")] = digest.lower()
    return out


def parse_age(text: Any) -> float:
    """Years as a float; anything else ('NaN', 'Unknown', '', out of 0-130) -> NaN."""
    try:
        v = float(str(text).strip())
    except ValueError:
        return float("nan")
    return v if np.isfinite(v) and 0 <= v <= 130 else float("nan")


@dataclass
class CPSC2018(Dataset):
    """Files under ``records/`` locally; flat (``A0001.hea``) at the download source."""

    folder: str = "cpsc2018_ecg"

    def candidates(self) -> list[Path]:
        out = []
        if os.environ.get("HOLOMED_DATA"):
            root = Path(os.environ["HOLOMED_DATA"])
            out += [root / self.folder, root / self.name]
        out.append(cache_dir() / self.name)
        return out

    def url(self, fname: str) -> str:
        return self.base_url + Path(fname).name

    def download(self, dest: Path) -> Path:
        for fname, digest in self.files.items():
            target = dest / fname
            if target.exists() and sha256(target) == digest:
                continue
            download_file(
                self.url(fname),
                target,
                digest,
                self.name,
                f" Place the files in $HOLOMED_DATA/{self.folder} instead.",
            )
        return dest

    def frames(self, **options: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        folder = self.locate(download=options.get("download", True))
        records = sorted({str(Path(f).with_suffix("")) for f in self.files})
        rows = []
        for rec in records:
            h = read_wfdb_header(folder / rec)
            dx = [d.strip() for d in h.meta.get("Dx", "").split(",") if d.strip()]
            sex = h.meta.get("Sex", "").strip()
            rows.append(
                {
                    "id": Path(rec).name,
                    "path": str(folder / rec),
                    "age_text": h.meta.get("Age", ""),
                    "age": parse_age(h.meta.get("Age", "")),
                    "sex": sex if sex in ("Male", "Female") else np.nan,
                    "label": ";".join(dx) if dx else np.nan,
                }
            )
        df = pd.DataFrame(rows).set_index("id")
        report = [
            {
                "id": rid,
                "modality": "demographics",
                "reason": f"age is not a number ({df.loc[rid, 'age_text']!r}); left missing",
                "scope": "value",
                "count": 1,
            }
            for rid in df.index[df["age"].isna()]
        ] + [
            {
                "id": rid,
                "modality": "demographics",
                "reason": "sex is neither Male nor Female; left missing",
                "scope": "value",
                "count": 1,
            }
            for rid in df.index[df["sex"].isna()]
        ]
        frames = {
            "ecg": df[["path"]].copy(),
            "demographics": df[["age", "sex"]].copy(),
        }
        frames["demographics"].attrs["reading_report"] = report
        return frames, df[["label", "sex", "age"]].copy()


CPSC = register_dataset(
    CPSC2018(
        name="cpsc2018",
        description="CPSC 2018 12-lead ECG (150 records, 500 Hz) + age/sex; 9 diagnoses, "
        "multilabel",
        base_url="https://raw.githubusercontent.com/physionetchallenges/python-classifier-2020/"
        "5f923133dbfae3302ce9d34bd7877fb7a8d33eda/input_directory/",
        files=read_manifest("cpsc2018.sha256"),
        licence="CC BY 4.0 (PhysioNet/CinC Challenge 2020 data)",
        citation="Liu et al., J Med Imaging Health Inform 8(7):1368 (2018); Perez Alday et al., "
        "Physiol Meas 41:124003 (2020); Goldberger et al., Circulation 101:e215 (2000)",
        notes=(
            "150 of the 6,877 CPSC 2018 training records: label counts are small (I-AVB 7, "
            "LBBB 8), so per-label metrics and their intervals are noisy.",
            "Records last 10-60 s; the example spec keeps the first 10 s at 100 Hz.",
        ),
    )
)
