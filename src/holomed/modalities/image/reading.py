"""Reading an image modality's table of files, and probing each file without decoding
its pixels: the paths of each patient (:func:`read_images`) and why a file cannot be
used (:func:`probe`), NaN / inf voxels of a NIfTI included."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.dicomweb import is_dicomweb, read_dicomweb
from holomed.io.images import image_format
from holomed.io.tables import read_ids


def _resolve(value: Any, folder: Path, spec: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return None
    q = Path(os.path.expandvars(os.path.expanduser(str(value).strip())))
    if q.is_absolute():
        return str(q)
    first = folder / q
    if not first.exists():
        other = spec.resolve(str(q))
        if other.exists():
            return str(other)
    return str(first)


def read_images(mspec: Any, spec: Any) -> pd.DataFrame:
    """Tables of (id, path) rows -> a frame indexed by id with column ``paths`` (lists,
    in the tables' row order). Several rows per patient are several images. With
    ``options.channel_column`` the frame also has ``channels``: each image's channel
    name (for ``as_channels``), aligned with ``paths``."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    if any(is_dicomweb(s) for s in mspec.source):  # a PACS (holomed.io.dicomweb)
        return read_dicomweb(mspec, spec)
    idc = mspec.id_column or "id"
    pcol = mspec.options.get("path_column", "path")
    ccol = mspec.options.get("channel_column")
    rows: list[tuple[str, str | None, Any]] = []
    for s in mspec.source:
        path = spec.resolve(s)
        if not path.exists():
            raise CohortError(f"{path}: table of modality {mspec.name!r} not found")
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            df = pd.read_csv(path, sep=sep, converters={idc: str})  # ids as written
        miss = [c for c in (idc, pcol, *([ccol] if ccol else [])) if c not in df.columns]
        if miss:
            raise CohortError(
                f"{path}: modality {mspec.name!r}: columns {miss} not found; columns are "
                f"{list(df.columns)[:10]} (set id_column / options.path_column / "
                f"options.channel_column)"
            )
        ids = read_ids(df[idc], path, idc)
        labels = df[ccol] if ccol else [None] * len(df)
        rows += [
            (i, _resolve(v, path.parent, spec), None if blank(c) else str(c).strip())
            for i, v, c in zip(ids, df[pcol], labels, strict=True)
        ]
    out: dict[str, list] = {}
    chans: dict[str, list] = {}
    for pid, p, c in rows:
        out.setdefault(pid, []).append(p)
        chans.setdefault(pid, []).append(c)
    frame = pd.DataFrame({"paths": list(out.values())}, index=pd.Index(list(out), name="id"))
    if ccol:  # each image's channel name, matched to ``as_channels`` by name
        frame["channels"] = list(chans.values())
    return frame


def blank(v: Any) -> bool:
    """No value: None, NaN or an empty string."""
    return v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip()


NONFINITE = "non-finite voxel values (NaN or inf) in the image"


def _may_be_nonfinite(img: Any) -> bool:
    """A NIfTI whose voxels can hold NaN / inf: floating-point data, or integers with a
    scaling (slope / intercept) applied."""
    proxy = img.dataobj
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)
    return img.get_data_dtype().kind in "fc" or slope != 1.0 or inter != 0.0


def _finite_voxels(img: Any) -> bool:
    """Every voxel finite as float32 (what the reader returns), read in slabs so a
    large volume is never held twice."""
    proxy = img.dataobj
    shape = img.shape
    if not shape:
        return True
    step = max(1, int(2**24 // max(1, int(np.prod(shape[1:])))))  # ~16 M voxels a slab
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, shape[0], step):
            slab = np.asarray(proxy[a : a + step], dtype=np.float32)
            if not np.isfinite(slab).all():
                return False
    return True


def probe(path: str | Path) -> str | None:
    """Why the file cannot be used (not found, unreadable header, NaN / inf voxels), or
    None. Pixels are not decoded (PNG/JPEG get PIL's integrity check), except those of
    a floating-point (or scaled) NIfTI, which are read once to refuse NaN / inf voxels:
    such an image would turn the patient's predictions into NaN."""
    p = Path(path)
    if not p.exists():
        return "image file not found"
    try:
        fmt = image_format(p)
        if fmt == "raster":
            from PIL import Image as PILImage

            with PILImage.open(p) as im:
                im.verify()
        elif fmt == "dicom":
            import pydicom

            ds = pydicom.dcmread(p, stop_before_pixels=True)
            if "Rows" not in ds:
                return "DICOM file without an image"
        elif fmt == "nifti":
            import nibabel as nib

            img = nib.load(str(p))
            if _may_be_nonfinite(img) and not _finite_voxels(img):
                return NONFINITE
        elif not any(f.is_file() for f in p.iterdir()):
            return "DICOM series folder is empty"
    except Exception as err:  # noqa: BLE001  any reader error means unusable
        return f"unreadable image file ({type(err).__name__})"
    return None
