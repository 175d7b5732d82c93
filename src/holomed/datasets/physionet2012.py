"""PhysioNet/CinC Challenge 2012: in-hospital mortality from the first 48 h of an ICU
stay (Silva et al., CinC 2012). One file per stay (``<RecordID>.txt``: ``Time,Parameter,
Value``; ``Time`` is ``hh:mm`` since ICU admission) and an outcomes table.

Modalities: ``static`` (tabular: Age, Gender, Height, ICUType, Weight at admission) and
``series`` (timeseries: the 36 vitals and labs, long form). The label is pinned to
``In-hospital_death``. ``SAPS-I`` and ``SOFA`` travel in the target frame as severity
scores for baselines and are never inputs; ``Length_of_stay`` is not read.

Survival variant (``examples/physionet2012_survival.yaml``): ``Survival`` is, per the
challenge's description, the number of days from ICU admission to death, or -1 when the
patient is not known to have died (out-of-hospital deaths come from death records). The
target columns ``survival_days`` and ``died`` censor administratively at
``follow_up_days`` (dataset option, default 365): a death on day 1..365 is an event at
that day; -1 or a later death is censored at 365 days. This assumes the death records
cover every patient's first year; a death on day 0 (time 0, no time at risk) is reported
and left out by the survival task. Attributes for subgroup audits: ``sex``, ``age``,
``age_band`` (<50, 50-70, >70) and ``icu_type``.

Honest reading: ``-1`` means missing in this data and never becomes a number;
physiologically impossible values (a heart rate of 0, a temperature of -17.8 C, a pH of
735) are removed; an unknown parameter, an unreadable line or file, an empty record, a
record without an outcome (or an outcome without a record) are reported with counts and
reasons in the cohort's exclusions. Any set folder loads by path
(``dataset_options: {path: .../set-b, outcomes: .../Outcomes-b.txt}``).
"""

from __future__ import annotations

import io
import tarfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from holomed.datasets.base import Dataset, DatasetError, register_dataset, sha256
from holomed.modalities.timeseries import parse_time

STATIC = ("Age", "Gender", "Height", "ICUType", "Weight")
SERIES = (
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine",
    "DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP",
    "MechVent", "Mg", "NIDiasABP", "NIMAP", "NISysABP", "Na", "PaCO2", "PaO2",
    "Platelets", "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine",
    "WBC", "pH", "Weight",
)  # fmt: skip
ICU_TYPES = {1: "coronary care", 2: "cardiac surgery recovery", 3: "medical", 4: "surgical"}

# Physiologically possible values (units of the challenge data). Values outside are
# recording or unit errors; they are removed and counted, never used as numbers.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "Age": (15, 120), "Height": (100, 250), "Weight": (20, 350),
    "ALP": (1, 5000), "ALT": (1, 20000), "AST": (1, 20000), "Albumin": (0.5, 7),
    "BUN": (0.5, 300), "Bilirubin": (0, 80), "Cholesterol": (20, 1000),
    "Creatinine": (0.05, 30), "DiasABP": (1, 250), "FiO2": (0.21, 1), "GCS": (3, 15),
    "Glucose": (5, 2500), "HCO3": (1, 60), "HCT": (5, 75), "HR": (1, 300), "K": (1, 12),
    "Lactate": (0.1, 35), "MAP": (1, 300), "MechVent": (0, 1), "Mg": (0.3, 12),
    "NIDiasABP": (1, 250), "NIMAP": (1, 300), "NISysABP": (1, 300), "Na": (90, 200),
    "PaCO2": (5, 150), "PaO2": (10, 700), "Platelets": (1, 2500), "RespRate": (1, 100),
    "SaO2": (20, 100), "SysABP": (1, 300), "Temp": (24, 45), "TroponinI": (0, 100),
    "TroponinT": (0, 100), "Urine": (0, 10000), "WBC": (0.05, 300), "pH": (6.5, 8.0),
}  # fmt: skip


def _manifest(name: str) -> dict[str, str]:
    text = resources.files("holomed.datasets").joinpath("manifests", name).read_text()
    return {f: h for h, f in (line.split() for line in text.splitlines() if line.strip())}


def _report(rows: list[dict], pid: str, reason: str, count: int = 1, scope: str = "value",
            modality: str | None = None) -> None:  # fmt: skip
    e = {"id": pid, "reason": reason, "scope": scope, "count": count}
    if modality:
        e["modality"] = modality
    rows.append(e)


def read_set(folder: Path) -> tuple[pd.DataFrame, list[dict]]:
    """All ``*.txt`` records of a set folder as one long frame (id, time in hours,
    parameter, value), and the records that could not be read."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DatasetError(f"{folder}: no record files (*.txt) found")
    chunks, report = [], []
    for f in files:
        rid = f.stem
        try:
            text = f.read_text()
        except (OSError, UnicodeDecodeError) as err:
            _report(report, rid, f"unreadable record file {f.name}: {err}", scope="patient")
            continue
        lines = text.strip().splitlines()
        if not lines or lines[0].strip().replace(" ", "") != "Time,Parameter,Value":
            _report(report, rid, f"record file {f.name} has no 'Time,Parameter,Value' header",
                    scope="patient")  # fmt: skip
            continue
        if len(lines) == 1:
            _report(report, rid, f"record file {f.name} holds no data", scope="patient")
            continue
        chunks.append("".join(f"{rid},{ln}\n" for ln in lines[1:]))
    if not chunks:
        raise DatasetError(f"{folder}: none of {len(files)} record files could be read")
    df = pd.read_csv(
        io.StringIO("".join(chunks)),
        names=["id", "Time", "Parameter", "Value"],
        dtype={"id": str, "Time": str, "Parameter": str, "Value": str},
        on_bad_lines="warn",
        engine="c",
    )
    df["time"] = parse_time(df["Time"], "hh:mm", str(folder))
    df["value"] = pd.to_numeric(df["Value"], errors="coerce")
    bad = df["time"].isna() | df["value"].isna() | df["Parameter"].isna()
    for pid, n in df.loc[bad, "id"].value_counts().items():
        _report(report, str(pid), "unreadable line (time, parameter or value)", int(n),
                modality="series")  # fmt: skip
    df = df.loc[~bad, ["id", "time", "Parameter", "value"]]
    return df.rename(columns={"Parameter": "variable"}), report


def split_record(long: pd.DataFrame, report: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long frame -> (static descriptors by id, series long form), with
    sentinels, impossible values and unknown parameters removed and reported."""
    known = set(STATIC) | set(SERIES) | {"RecordID"}
    unknown = ~long["variable"].isin(known)
    for (pid, var), n in long.loc[unknown].groupby(["id", "variable"]).size().items():
        _report(report, str(pid), f"unknown parameter {var!r}", int(n), modality="series")
    long = long.loc[~unknown]
    is_static = long["variable"].isin(STATIC) & (long["time"] == 0)
    # Weight at 00:00 is the admission descriptor; later Weight rows are a series
    static_rows = long.loc[is_static].drop_duplicates(["id", "variable"], keep="first")
    static = static_rows.pivot(index="id", columns="variable", values="value")
    static = static.reindex(columns=list(STATIC))
    series = long.loc[~is_static & long["variable"].isin(SERIES)]

    def clean(frame: pd.DataFrame, modality: str) -> pd.DataFrame:
        sentinel = frame["value"] == -1
        for (pid, var), n in frame.loc[sentinel].groupby(["id", "variable"]).size().items():
            _report(report, str(pid), f"missing-value sentinel -1 of {var!r}", int(n),
                    modality=modality)  # fmt: skip
        lo = frame["variable"].map(lambda v: PLAUSIBLE.get(v, (-np.inf, np.inf))[0])
        hi = frame["variable"].map(lambda v: PLAUSIBLE.get(v, (-np.inf, np.inf))[1])
        bad = ~sentinel & ((frame["value"] < lo) | (frame["value"] > hi))
        for (pid, var), n in frame.loc[bad].groupby(["id", "variable"]).size().items():
            lo_v, hi_v = PLAUSIBLE[var]
            _report(report, str(pid), f"impossible value of {var!r} (outside [{lo_v}, {hi_v}])",
                    int(n), modality=modality)  # fmt: skip
        return frame.loc[~sentinel & ~bad]

    srows = static_rows.loc[static_rows["variable"].isin(["Age", "Height", "Weight"])]
    keep_static = clean(srows, "static")
    gone = srows.index.difference(keep_static.index)
    for idx in gone:
        r = srows.loc[idx]
        static.loc[r["id"], r["variable"]] = np.nan
    series = clean(series, "series")
    gender = static["Gender"].map({0.0: "female", 1.0: "male"})
    icu = static["ICUType"].map(ICU_TYPES)
    for col, mapped in (("Gender", gender), ("ICUType", icu)):
        odd = static[col].notna() & mapped.isna()
        for pid in static.index[odd & (static[col] != -1)]:
            _report(report, str(pid), f"unknown code {static.loc[pid, col]!r} of {col!r}",
                    modality="static")  # fmt: skip
        for pid in static.index[static[col] == -1]:
            _report(report, str(pid), f"missing-value sentinel -1 of {col!r}", modality="static")
    static = static.assign(Gender=gender, ICUType=icu)
    static.index = static.index.astype(str)
    return static, series.reset_index(drop=True)


def read_outcomes(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DatasetError(f"{path}: outcomes file not found")
    out = pd.read_csv(path, dtype={"RecordID": str})
    need = ["RecordID", "In-hospital_death"]
    miss = [c for c in need if c not in out.columns]
    if miss:
        raise DatasetError(f"{path}: columns {miss} not found; columns are {list(out.columns)}")
    out["RecordID"] = out["RecordID"].str.strip()
    dup = out["RecordID"][out["RecordID"].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: RecordID {dup.iloc[0]!r} appears more than once")
    return out.set_index("RecordID")


def survival_columns(days: pd.Series, follow_up: float) -> tuple[pd.Series, pd.Series]:
    """(time, event) with administrative censoring at ``follow_up`` days (module doc);
    a missing or unreadable value stays missing (reported by the survival task)."""
    d = pd.to_numeric(days, errors="coerce")
    died = d.ge(0) & d.le(follow_up)
    time = d.where(died, follow_up).where(d.notna())
    return time.astype(float), died.astype(float).where(d.notna())


def age_band(age: pd.Series) -> pd.Series:
    bands = pd.cut(age, [-np.inf, 50, 70, np.inf], right=False, labels=["<50", "50-70", ">70"])
    return bands.astype(object).where(age.notna(), "unknown")


@dataclass
class PhysioNet2012(Dataset):
    def locate(self, download: bool = True) -> Path:
        self.files = self.files or _manifest("physionet2012-a.sha256")
        return super().locate(download)

    def download(self, dest: Path) -> Path:
        """Outcomes file + the set's tarball from PhysioNet, extracted into ``dest``;
        every extracted file is then checked against the shipped sha256 manifest."""
        dest.mkdir(parents=True, exist_ok=True)
        for fname in ("Outcomes-a.txt", "set-a.tar.gz"):
            url = self.base_url + fname
            try:
                with urllib.request.urlopen(url, timeout=120) as r:
                    data = r.read()
            except OSError as err:
                raise DatasetError(
                    f"dataset {self.name!r}: cannot download {url}: {err}. "
                    f"Place the files in $HOLOMED_DATA/{self.name} instead."
                ) from None
            if fname.endswith(".tar.gz"):
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                    tar.extractall(dest, filter="data")
            else:
                (dest / fname).write_bytes(data)
        return self.verify(dest)

    def frames(self, **options) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        path = options.get("path")
        if path is None:
            folder = self.locate(download=options.get("download", True)) / "set-a"
            outcomes = folder.parent / "Outcomes-a.txt"
        else:
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise DatasetError(f"{folder}: set folder not found (dataset_options.path)")
            outcomes = options.get("outcomes")
            if outcomes is None:
                letter = folder.name.split("-")[-1]
                outcomes = folder.parent / f"Outcomes-{letter}.txt"
            outcomes = Path(outcomes).expanduser()
            manifest = options.get("manifest")
            if manifest:  # verify a local copy against a sha256sum-style manifest
                self._verify_manifest(Path(manifest), folder.parent)
        long, report = read_set(folder)
        static, series = split_record(long, report)
        target = read_outcomes(outcomes)
        score_cols = [c for c in ("SAPS-I", "SOFA") if c in target.columns]
        t = target[["In-hospital_death", *score_cols]].copy()
        for c in score_cols:
            t[c] = pd.to_numeric(t[c], errors="coerce").where(lambda s: s >= 0)
        t["In-hospital_death"] = pd.to_numeric(t["In-hospital_death"], errors="coerce")
        if "Survival" in target.columns:
            t["survival_days"], t["died"] = survival_columns(
                target["Survival"], float(options.get("follow_up_days", 365))
            )
        t["sex"] = static["Gender"].reindex(t.index).fillna("unknown")
        t["age"] = static["Age"].reindex(t.index)
        t["age_band"] = age_band(t["age"])
        t["icu_type"] = static["ICUType"].reindex(t.index).fillna("unknown")
        for pid in sorted(set(t.index) - set(long["id"]) - {r["id"] for r in report}):
            _report(report, pid, "outcome without a record file", scope="patient")
        for pid in sorted(set(static.index) - set(series["id"])):
            _report(report, pid, "no series observation in its record", scope="modality",
                    modality="series")  # fmt: skip
        static.attrs["reading_report"] = report
        return {"static": static, "series": series}, t

    @staticmethod
    def _verify_manifest(manifest: Path, root: Path) -> None:
        for line in manifest.read_text().splitlines():
            if not line.strip():
                continue
            digest, fname = line.split()
            f = root / fname
            if not f.exists():
                raise DatasetError(f"{f}: listed in {manifest} but not found")
            if sha256(f) != digest:
                raise DatasetError(f"{f}: sha256 does not match {manifest}")


PHYSIONET2012 = register_dataset(
    PhysioNet2012(
        name="physionet2012",
        options=("path", "outcomes", "manifest", "download", "follow_up_days"),
        description="PhysioNet/CinC 2012 ICU stays: static descriptors + 36 irregular series "
        "(first 48 h), in-hospital death",
        base_url="https://physionet.org/files/challenge-2012/1.0.0/",
        licence="Open Data Commons Attribution License v1.0 (ODC-By 1.0)",
        citation="Silva et al., Computing in Cardiology 39:245-248 (2012); Goldberger et "
        "al., Circulation 101(23):e215-e220 (2000)",
        notes=(
            "Adult ICU stays of >= 48 h from MIMIC-II (one hospital, 2001-2008): results may "
            "not transfer to other hospitals, eras or populations.",
            "SAPS-I and SOFA are severity scores reported as baselines, never model inputs.",
        ),
    )
)
