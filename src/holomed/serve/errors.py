"""What the serving API tells a client about a request it cannot serve: the error
type with its HTTP status, how client-supplied names are quoted, and the header checks
of an uploaded or fetched image (shared by the upload path and the PACS fetch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TYPE_NAMES = {
    "png": "PNG",
    "jpeg": "JPEG",
    "dicom": "DICOM (Part 10, with the 'DICM' preamble)",
    "nifti": "NIfTI",
    "nifti_gz": "gzip-compressed NIfTI",
    "edf": "EDF/EDF+",
    "wfdb_header": "WFDB header (text)",
    "wfdb_data": "WFDB signal data",
    "csv": "CSV (UTF-8 text)",
    "text": "UTF-8 text",
}


class ApiError(Exception):
    """A request that cannot be served: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def quote(name: Any) -> str:
    """A client-supplied name quoted for a message, shortened."""
    s = str(name)
    return repr(s if len(s) <= 64 else s[:61] + "...")


def check_image_file(path: Path, kind: str, label: str, max_pixels: int) -> None:
    """Header-level checks of an image whose type was matched: pixel (voxel) count
    within ``max_pixels`` (413), a readable DICOM / NIfTI / raster header (422)."""
    count = 0
    if kind in ("png", "jpeg"):
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                w, h = im.size
                count = int(w) * int(h) * int(getattr(im, "n_frames", 1) or 1)
        except PILImage.DecompressionBombError:
            raise ApiError(
                413, f"{label}: image too large to decode (decompression bomb)"
            ) from None
        except Exception as err:  # noqa: BLE001 - any reader error: unusable
            raise ApiError(
                422, f"{label}: not a readable {TYPE_NAMES[kind]} image ({type(err).__name__})"
            ) from None
    elif kind == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                raise ApiError(422, f"{label}: DICOM file without an image (no Rows/Columns)")
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            count = int(ds.Rows) * int(ds.Columns) * frames * samples
        except ApiError:
            raise
        except Exception as err:  # noqa: BLE001 - pydicom raises many types
            raise ApiError(
                422, f"{label}: not a readable DICOM file ({type(err).__name__})"
            ) from None
    elif kind in ("nifti", "nifti_gz"):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            count = int(np.prod([int(d) for d in img.shape])) if img.shape else 0
        except Exception as err:  # noqa: BLE001 - nibabel raises many types
            raise ApiError(
                422, f"{label}: not a readable NIfTI file ({type(err).__name__})"
            ) from None
    if count > max_pixels:
        raise ApiError(
            413,
            f"{label}: image of {count} pixels (voxels) exceeds the limit of {max_pixels} "
            "(max_image_pixels); it was not decoded",
        )
    if count <= 0:
        raise ApiError(422, f"{label}: image without pixels")
