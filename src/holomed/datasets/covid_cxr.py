"""COVID-19 image data collection (Cohen et al., MELBA 2020; arXiv:2006.11988): chest
X-rays, sparse clinical variables and free-text case notes from publications and
websites. Registered as ``covid_cxr``; files in ``$HOLOMED_DATA/covid_cxr_multimodal``
(or the cache folder of that name).

What is read, and verified file by file against the shipped sha256 manifest, is a
derived subset: ``metadata.csv`` (upstream, byte for byte, commit 0f7245db), 306
chest X-rays whose licence allows redistribution, converted to 8-bit grayscale and
downscaled with Lanczos so the longer side is 256 px (``images_256/<stem>_<ext>.png``),
and ``images_manifest.csv`` linking each PNG to its metadata row(s).

Without a local copy, :meth:`CovidCXR.download` rebuilds the subset from the originals
in GitHub ``ieee8023/covid-chestxray-dataset`` at that commit: ``metadata.csv``, then
each selected image (X-ray rows with a kept licence, less the 9 unavailable ones)
converted the same way (PIL ``convert("L")``, Lanczos to ``round(side * 256 /
longer side)``, PNG saved with ``optimize=True``) and checked against the manifest; a
file whose bytes differ (another Pillow's resampling, a changed upstream file) is an
error naming it. ``images_manifest.csv`` is not rebuilt: the row-to-image links are then
derived from ``metadata.csv`` with the same selection rules (:func:`staged_rows`, which
reproduces the shipped links exactly). The download path could not be exercised here
(no network): the selection, names and sizes are checked against the local copy, the
PNG encoding against the staged files.

One row per patient id (156): a patient's X-rays form one image set. Modalities:

- ``xray`` (image): ``paths``, the patient's staged PNGs (views and follow-ups);
- ``clinical`` (tabular): age, sex, temperature, pO2_saturation, leukocyte_count,
  neutrophil_count, lymphocyte_count — per patient the value of its earliest staged row
  (by ``offset``) that has one; very sparse;
- ``notes`` (text): the distinct ``clinical_notes`` of its staged rows, in offset order.

Target frame: ``finding`` = 1 when any of the patient's staged rows is COVID-19
(``"COVID-19, ARDS"`` included), else 0; ``findings`` (the original labels);
``survival`` (``N`` if any row says N, else ``Y`` if any says Y, else missing);
``group`` = the person: upstream patient ids 339 and 340 duplicate 285 and 287 (same
people, same images), so they share a group and a split keeps them together (use
``split.group: group``); attributes ``sex`` and ``age_band``.

Metadata rows that are not in the subset are reported with counts in the cohort's
exclusions: CT rows, X-rays whose licence was not kept, and 9 X-rays unavailable when
the subset was made; a patient id with no staged X-ray at all is reported as excluded.

Caveat: COVID-19 and non-COVID images come from different sources, so the label is
confounded with the image source; results on this data test the fusion pipeline and
missing-modality handling, and are not clinical claims.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from importlib import resources
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from holomed.datasets.base import Dataset, DatasetError, cache_dir, register_dataset, sha256

FOLDER = "covid_cxr_multimodal"
CLINICAL = (
    "age",
    "sex",
    "temperature",
    "pO2_saturation",
    "leukocyte_count",
    "neutrophil_count",
    "lymphocyte_count",
)
KEPT_LICENCES = ("CC BY", "CC BY 3.0", "CC BY 4.0", "CC BY-SA", "CC BY-NC-SA", "CC BY-NC-SA 4.0")
UNAVAILABLE = (
    "covid-19-pneumonia-14-PA.png",
    "parapneumonic-effusion-1-PA.png",
    "parapneumonic-effusion-1-L.png",
    "chlamydia-pneumonia-PA.png",
    "chlamydia-pneumonia-L.png",
    "cavitating-pneumonia-4-day28-PA.png",
    "cavitating-pneumonia-4-day28-L.png",
    "pneumocystis-jiroveci-pneumonia-4-PA.png",
    "covid-19-pneumonia-24-day6.jpg",
)
SAME_PERSON = {"339": "285", "340": "287"}  # upstream duplicates (same people and images)
COMMIT = "0f7245db6f5aa4001ea75cf69fe6cfe091928403"
RAW = f"https://raw.githubusercontent.com/ieee8023/covid-chestxray-dataset/{COMMIT}/"
LONG_SIDE = 256


def _manifest() -> dict[str, str]:
    text = resources.files("holomed.datasets").joinpath("manifests", "covid_cxr.sha256")
    return {f: h for h, f in (ln.split() for ln in text.read_text().splitlines() if ln.strip())}


def age_band(age: pd.Series) -> pd.Series:
    bands = pd.cut(age, [-np.inf, 50, 70, np.inf], right=False, labels=["<50", "50-70", ">70"])
    return bands.astype(object).where(age.notna(), "unknown")


def staged_name(filename: str) -> str:
    """``images/x.JPG`` upstream -> ``images_256/x_jpg.png`` here."""
    stem, _, ext = str(filename).rpartition(".")
    return f"images_256/{stem}_{ext.lower()}.png"


def staged_size(width: int, height: int) -> tuple[int, int]:
    """Longer side to 256 px, the other rounded in proportion; never upscaled."""
    longer = max(width, height)
    if longer <= LONG_SIDE:
        return int(width), int(height)
    return round(width * LONG_SIDE / longer), round(height * LONG_SIDE / longer)


def stage_image(data: bytes) -> bytes:
    """An original image file -> the staged PNG's bytes (8-bit gray, Lanczos)."""
    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        gray = im.convert("L")
    size = staged_size(*gray.size)
    if size != gray.size:
        gray = gray.resize(size, Image.LANCZOS)
    buf = BytesIO()
    gray.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def staged_rows(meta: pd.DataFrame) -> pd.DataFrame:
    """The subset's selection from ``metadata.csv``: ``metadata_rows`` (``;``-joined
    0-based rows) and ``staged_file`` per image, in first-row order."""
    lic = meta["license"].fillna("").astype(str).str.strip()
    keep = (
        (meta["modality"].astype(str).str.strip() == "X-ray")
        & (meta["folder"].astype(str).str.strip() == "images")
        & lic.isin(KEPT_LICENCES)
        & ~meta["filename"].astype(str).isin(UNAVAILABLE)
    )
    files: dict[str, list[int]] = {}
    for i, f in zip(meta.index[keep], meta.loc[keep, "filename"], strict=True):
        files.setdefault(staged_name(f), []).append(int(i))
    return pd.DataFrame(
        {
            "metadata_rows": [";".join(map(str, r)) for r in files.values()],
            "staged_file": list(files),
            "filename": [meta.loc[r[0], "filename"] for r in files.values()],
        }
    )


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def _why_not_staged(row: pd.Series) -> str:
    if str(row.get("modality", "")).strip() == "CT":
        return "metadata row is a CT, not a chest X-ray"
    if str(row.get("filename", "")) in UNAVAILABLE:
        return "X-ray not in the subset: image unavailable when the subset was made"
    if str(row.get("license", "")).strip() not in KEPT_LICENCES:
        return "X-ray not in the subset: licence does not allow redistribution"
    return "metadata row without a staged image"


def _first(values: pd.Series):
    v = values.dropna()
    return v.iloc[0] if len(v) else np.nan


@dataclass
class CovidCXR(Dataset):
    def candidates(self) -> list[Path]:
        out = []
        if os.environ.get("HOLOMED_DATA"):
            out.append(Path(os.environ["HOLOMED_DATA"]) / FOLDER)
        out.append(cache_dir() / FOLDER)
        return out

    def locate(self, download: bool = True) -> Path:
        # images_manifest.csv is verified where it exists but not required: a rebuilt
        # copy (download) derives the same links from metadata.csv
        self.files = self.files or {
            f: h for f, h in _manifest().items() if f != "images_manifest.csv"
        }
        return super().locate(download)

    def verify(self, folder: Path) -> Path:
        super().verify(folder)
        digest = _manifest()["images_manifest.csv"]
        if (folder / "images_manifest.csv").exists():
            got = sha256(folder / "images_manifest.csv")
            if got != digest:
                raise DatasetError(
                    f"{folder / 'images_manifest.csv'}: sha256 {got} does not match {digest}"
                )
        return folder

    def download(self, dest: Path, fetch=_fetch) -> Path:
        """Rebuild the subset in ``dest`` from the upstream originals (see the module
        docstring); every written file matches the shipped sha256 or nothing is kept."""
        manifest = _manifest()
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "images_256").mkdir(exist_ok=True)

        def get(url: str) -> bytes:
            try:
                return fetch(url)
            except OSError as err:
                raise DatasetError(
                    f"dataset {self.name!r}: cannot download {url}: {err}. Place the verified "
                    f"folder {FOLDER!r} under $HOLOMED_DATA instead."
                ) from None

        def put(name: str, data: bytes, origin: str) -> None:
            target = dest / name
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(data)
            if sha256(tmp) != manifest[name]:
                tmp.unlink()
                raise DatasetError(
                    f"{target}: rebuilt from {origin}, its sha256 does not match the manifest "
                    "(a different upstream file, or another Pillow's resampling); place the "
                    f"verified folder {FOLDER!r} under $HOLOMED_DATA instead"
                )
            tmp.rename(target)

        target = dest / "metadata.csv"
        if not (target.exists() and sha256(target) == manifest["metadata.csv"]):
            put("metadata.csv", get(RAW + "metadata.csv"), RAW + "metadata.csv")
        meta = pd.read_csv(dest / "metadata.csv", dtype={"patientid": str}, low_memory=False)

        sel = staged_rows(meta)
        for name, original in zip(sel["staged_file"], sel["filename"], strict=True):
            f = dest / name
            if f.exists() and sha256(f) == manifest[name]:
                continue
            url = RAW + "images/" + quote(str(original))
            put(name, stage_image(get(url)), url)
        return self.verify(dest)

    def frames(self, **options) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        path = options.get("path")
        if path is None:
            folder = self.locate(download=options.get("download", True))
        else:
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise DatasetError(f"{folder}: dataset folder not found (dataset_options.path)")
            if options.get("verify", True):
                self.files = self.files or {
                    f: h for f, h in _manifest().items() if f != "images_manifest.csv"
                }
                self.verify(folder)
        meta = pd.read_csv(folder / "metadata.csv", dtype={"patientid": str}, low_memory=False)
        if (folder / "images_manifest.csv").exists():
            man = pd.read_csv(folder / "images_manifest.csv", dtype=str)
        else:
            man = staged_rows(meta)
        return build_frames(meta, man, folder)


def build_frames(
    meta: pd.DataFrame, man: pd.DataFrame, folder: Path
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The three modality frames and the target frame from the two tables."""
    meta = meta.copy()
    meta["patientid"] = meta["patientid"].astype(str).str.strip()
    row_file: dict[int, str] = {}
    for rows, staged in zip(man["metadata_rows"], man["staged_file"], strict=True):
        for r in str(rows).split(";"):
            row_file[int(r)] = str(folder / staged)
    staged_idx = sorted(row_file)
    bad = [r for r in staged_idx if r not in meta.index]
    if bad:
        raise DatasetError(f"{folder}/images_manifest.csv: metadata rows {bad[:5]} do not exist")
    st = meta.loc[staged_idx].copy()
    st["path"] = [row_file[r] for r in staged_idx]
    st["offset"] = pd.to_numeric(st["offset"], errors="coerce")
    st = st.sort_values(["patientid", "offset"], kind="stable", na_position="last")
    ids = list(dict.fromkeys(st["patientid"]))

    report: list[dict] = []
    rest = meta.drop(index=staged_idx)
    rest_reasons = rest.apply(_why_not_staged, axis=1)
    staged_ids = set(ids)
    for (pid, why), n in rest.groupby([rest["patientid"], rest_reasons]).size().items():
        if pid in staged_ids:
            report.append(
                {"id": str(pid), "modality": "xray", "reason": why, "scope": "value",
                 "count": int(n)}
            )  # fmt: skip
    for pid, reasons in rest_reasons.groupby(rest["patientid"]):
        if pid not in staged_ids:
            kinds = "; ".join(sorted(set(reasons)))
            report.append(
                {"id": str(pid), "scope": "patient", "count": 1,
                 "reason": f"no staged chest X-ray ({kinds})"}
            )  # fmt: skip

    g = st.groupby("patientid", sort=False)
    xray = pd.DataFrame(
        {"paths": [list(dict.fromkeys(g.get_group(p)["path"])) for p in ids]},
        index=pd.Index(ids, name="id"),
    )
    xray.attrs["reading_report"] = report
    clin = g[list(CLINICAL)].agg(_first).reindex(ids)
    for c in CLINICAL:
        if c != "sex":
            clin[c] = pd.to_numeric(clin[c], errors="coerce")
    clin["sex"] = clin["sex"].where(clin["sex"].isin(["M", "F"]))
    clin.index.name = "id"
    notes_rows = st.dropna(subset=["clinical_notes"])
    notes = (
        notes_rows.groupby("patientid", sort=False)["clinical_notes"]
        .agg(lambda s: "\n".join(dict.fromkeys(str(v).strip() for v in s)))
        .to_frame("text")
    )
    notes.index.name = "id"

    finding = st["finding"].astype(str).str.strip()
    covid = finding.str.startswith("COVID-19").groupby(st["patientid"]).any()
    surv = st["survival"].astype(str).str.strip()

    def survival(s: pd.Series) -> object:
        return "N" if (s == "N").any() else ("Y" if (s == "Y").any() else np.nan)

    target = pd.DataFrame(index=pd.Index(ids, name="id"))
    target["finding"] = covid.reindex(ids).astype(int)
    target["findings"] = finding.groupby(st["patientid"]).agg(lambda s: "; ".join(dict.fromkeys(s)))
    target["survival"] = surv.groupby(st["patientid"]).agg(survival).reindex(ids)
    target["group"] = [SAME_PERSON.get(p, p) for p in ids]
    target["sex"] = clin["sex"].fillna("unknown")
    target["age"] = clin["age"]
    target["age_band"] = age_band(clin["age"])
    target["n_images"] = xray["paths"].map(len)
    target.attrs["reading_summary"] = {
        "metadata_rows": int(len(meta)),
        "staged_rows": int(len(st)),
        "images": int(sum(len(p) for p in xray["paths"])),
        "patients": len(ids),
        "persons": int(target["group"].nunique()),
        "rows_not_staged": {k: int(v) for k, v in rest_reasons.value_counts().items()},
    }
    return {"xray": xray, "clinical": clin, "notes": notes}, target


COVID_CXR = register_dataset(
    CovidCXR(
        name="covid_cxr",
        options=("path", "download", "verify"),
        description="COVID-19 image data collection: chest X-ray sets (256 px), sparse "
        "clinical variables, clinical notes; COVID-19 vs other findings",
        base_url="https://github.com/ieee8023/covid-chestxray-dataset",
        licence="metadata CC BY-NC-SA 4.0 (non-commercial); each image keeps its own "
        "licence (column 'license'): CC BY / BY-SA / BY-NC-SA",
        citation="Cohen J.P. et al., COVID-19 Image Data Collection: Prospective Predictions "
        "Are the Future, MELBA 1 (2020), arXiv:2006.11988",
        notes=(
            "COVID-19 and non-COVID images come from different publications and sites: the "
            "label is confounded with the image source. A fusion/missing-modality test bed, "
            "not a clinical benchmark.",
            "Upstream patient ids 339 and 340 duplicate 285 and 287; split by 'group'.",
        ),
    )
)
