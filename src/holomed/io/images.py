"""Image readers: DICOM (one file, or a folder holding one series), NIfTI, PNG/JPEG.

Every reader returns an :class:`Image`: the pixel array as float32, the spacing of each
array axis in mm, the affine that maps array indices to RAS+ patient coordinates (mm)
where the format has one, and the file it came from. Array axes:

- 2D (PNG/JPEG, single-frame DICOM): ``(H, W)`` = (rows, columns); PNG/JPEG have no
  physical spacing, so it is 1 mm per pixel by convention (``spacing_known=False``);
- DICOM series / multi-frame DICOM: ``(D, H, W)`` = (slices, rows, columns), slices
  sorted along the slice normal by ``ImagePositionPatient`` (``InstanceNumber`` when
  positions are missing); the slice spacing is the median gap between slice positions
  (``SliceThickness`` when there is one slice);
- NIfTI: the file's voxel axes; the affine is the file's (sform/qform).

DICOM values are modality values: ``RescaleSlope``/``RescaleIntercept`` applied (CT in
Hounsfield units). PNG/JPEG are converted to 8-bit grayscale (PIL ``"L"``).

Any unreadable, truncated or corrupt file raises :class:`~holomed.errors.CohortError`
naming the file. :func:`resample` (scipy ``ndimage.zoom``, linear) changes the spacing
while keeping the physical extent (shape x spacing); :func:`to_ras` reorders and flips
axes so they run toward Right, Anterior, Superior (nibabel's orientation tools), for
any image with an affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from holomed.errors import CohortError

RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI = (".nii", ".nii.gz")
DICOM = (".dcm", ".dicom", ".ima")


@dataclass
class Image:
    """``array`` float32 ``(H, W)`` or ``(D, H, W)``; ``spacing`` mm per array axis;
    ``affine`` (4, 4) index -> RAS+ mm, or None; ``source`` the file or folder."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    source: str
    spacing_known: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def extent(self) -> tuple[float, ...]:
        """Physical size of each axis in mm (shape x spacing)."""
        return tuple(float(n * s) for n, s in zip(self.array.shape, self.spacing, strict=True))

    @property
    def orientation(self) -> str | None:
        """Axis codes of the affine, e.g. ``"RAS"`` or ``"LPS"``; None without one."""
        if self.affine is None:
            return None
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def image_format(path: str | Path) -> str:
    """``dicom_series`` (a folder), ``nifti``, ``dicom`` or ``raster``, by name; a file
    with another suffix is probed for the DICOM preamble."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom_series"
    if name.endswith(NIFTI):
        return "nifti"
    if name.endswith(RASTER):
        return "raster"
    if name.endswith(DICOM):
        return "dicom"
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError as err:
        raise CohortError(f"{p}: cannot open image file: {err}") from None
    if head[128:132] == b"DICM":
        return "dicom"
    raise CohortError(
        f"{p}: unknown image format; expected a DICOM file or folder, NIfTI (.nii, .nii.gz) "
        f"or {', '.join(RASTER)}"
    )


def read_image(path: str | Path) -> Image:
    """Any supported image, dispatched on :func:`image_format`."""
    p = Path(path)
    if not p.exists():
        raise CohortError(f"{p}: image file not found")
    fmt = image_format(p)
    return {
        "dicom_series": read_dicom_series,
        "nifti": read_nifti,
        "dicom": read_dicom,
        "raster": read_raster,
    }[fmt](p)


# -- raster -------------------------------------------------------------------------


def read_raster(path: str | Path) -> Image:
    """PNG/JPEG/... as 8-bit grayscale ``(H, W)`` float32 in [0, 255]."""
    from PIL import Image as PILImage

    p = Path(path)
    try:
        with PILImage.open(p) as im:
            im.load()
            arr = np.asarray(im.convert("L"), dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as err:
        raise CohortError(f"{p}: unreadable image file: {err}") from None
    return Image(arr, (1.0, 1.0), None, str(p), spacing_known=False)


# -- DICOM --------------------------------------------------------------------------


def _dcmread(p: Path, stop_before_pixels: bool = False):
    import pydicom

    try:
        return pydicom.dcmread(p, stop_before_pixels=stop_before_pixels)
    except Exception as err:  # pydicom raises many types on corrupt input
        raise CohortError(f"{p}: unreadable DICOM file: {err}") from None


def _pixels(ds, p: Path) -> np.ndarray:
    try:
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as err:  # truncated pixel data, unsupported transfer syntax ...
        raise CohortError(f"{p}: DICOM pixel data unreadable: {err}") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr * slope + intercept


def _dicom_affine(ds, slice_step: float, normal: np.ndarray | None = None) -> np.ndarray | None:
    """Index (slice, row, col) -> RAS+ mm from the DICOM geometry (LPS in the file)."""
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    ps = ds.get("PixelSpacing")
    if iop is None or ipp is None or ps is None:
        return None
    row_cos = np.asarray(iop[:3], float)  # direction of increasing column index
    col_cos = np.asarray(iop[3:], float)  # direction of increasing row index
    n = np.cross(row_cos, col_cos) if normal is None else normal
    lps = np.eye(4)
    lps[:3, 0] = n * slice_step
    lps[:3, 1] = col_cos * float(ps[0])
    lps[:3, 2] = row_cos * float(ps[1])
    lps[:3, 3] = np.asarray(ipp, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_dicom(path: str | Path) -> Image:
    """One DICOM file: ``(H, W)`` (or ``(frames, H, W)`` for multi-frame) with
    rescale applied; spacing from ``PixelSpacing`` (and ``SliceThickness``)."""
    p = Path(path)
    ds = _dcmread(p)
    arr = _pixels(ds, p)
    ps = ds.get("PixelSpacing")
    known = ps is not None
    row_sp, col_sp = (float(ps[0]), float(ps[1])) if known else (1.0, 1.0)
    thick = float(ds.get("SliceThickness", 0) or 0) or None
    meta = {"modality": str(ds.get("Modality", "")), "slice_thickness": thick}
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) > 1:  # colour: to gray
        arr = arr.mean(-1)
    if arr.ndim == 2:
        return Image(arr, (row_sp, col_sp), _dicom_affine(ds, thick or 1.0), str(p), known, meta)
    step = thick or 1.0
    return Image(arr, (step, row_sp, col_sp), _dicom_affine(ds, step), str(p), known, meta)


def read_dicom_series(folder: str | Path) -> Image:
    """The DICOM files of a folder (one series) stacked into ``(D, H, W)``."""
    d = Path(folder)
    files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise CohortError(f"{d}: DICOM series folder holds no file")
    slices = [(f, _dcmread(f)) for f in files]
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(uids) > 1:
        raise CohortError(f"{d}: folder holds {len(uids)} DICOM series; expected one")
    first = slices[0][1]
    iop = first.get("ImageOrientationPatient")
    have_pos = all(ds.get("ImagePositionPatient") is not None for _, ds in slices)
    normal = None
    if iop is not None and have_pos:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        keys = [
            float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for _, ds in slices
        ]
    else:
        keys = [float(ds.get("InstanceNumber", i) or i) for i, (_, ds) in enumerate(slices)]
    order = np.argsort(keys, kind="stable")
    slices = [slices[i] for i in order]
    keys = [keys[i] for i in order]
    arrays = [_pixels(ds, f) for f, ds in slices]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise CohortError(f"{d}: slices of different sizes {sorted(shapes)}")
    vol = np.stack(arrays, 0).astype(np.float32)
    ps = first.get("PixelSpacing")
    row_sp, col_sp = (float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0)
    thick = float(first.get("SliceThickness", 0) or 0) or 1.0
    if normal is not None and len(keys) > 1:
        gaps = np.diff(keys)
        if np.any(np.abs(gaps) < 1e-6):
            raise CohortError(f"{d}: two slices share one position; not a single series")
        step = float(np.median(gaps))
    else:
        step = thick
    affine = _dicom_affine(slices[0][1], step, normal) if normal is not None else None
    meta = {"modality": str(first.get("Modality", "")), "slices": len(arrays)}
    return Image(vol, (step, row_sp, col_sp), affine, str(d), ps is not None, meta)


# -- NIfTI --------------------------------------------------------------------------


def read_nifti(path: str | Path) -> Image:
    """A NIfTI-1/2 file; 4D images keep their first volume (``meta['volumes']``)."""
    import nibabel as nib

    p = Path(path)
    try:
        img = nib.load(str(p))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # truncated gzip, bad header ...
        raise CohortError(f"{p}: unreadable NIfTI file: {err}") from None
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    meta: dict[str, Any] = {}
    if arr.ndim == 4:
        meta["volumes"] = int(arr.shape[3])
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise CohortError(f"{p}: NIfTI image with {arr.ndim} dimensions; expected 2 to 4")
    return Image(arr, zooms[: arr.ndim], np.asarray(img.affine, float), str(p), True, meta)


def write_nifti(image: Image, path: str | Path) -> Path:
    """Save ``image`` as NIfTI (its affine, or a diagonal one from its spacing)."""
    import nibabel as nib

    aff = image.affine
    if aff is None:
        aff = np.diag([*image.spacing, *([1.0] * (4 - len(image.spacing)))])
    nib.save(nib.Nifti1Image(image.array.astype(np.float32), aff), str(path))
    return Path(path)


# -- geometry -----------------------------------------------------------------------


def resample(image: Image, spacing: float | tuple[float, ...], order: int = 1) -> Image:
    """The image on a grid of ``spacing`` mm (one value per axis, or one for all) with
    its physical extent kept: each axis gets ``round(extent / spacing)`` samples and the
    spacing actually used is ``extent / samples`` (within half a voxel of the request).
    Interpolation: ``scipy.ndimage.zoom`` (order 1 = linear, ``grid_mode`` so voxel
    edges, not centres, line up)."""
    from scipy import ndimage

    arr = image.array
    target = (float(spacing),) * arr.ndim if np.isscalar(spacing) else tuple(map(float, spacing))
    if len(target) != arr.ndim:
        raise ValueError(
            f"spacing {target} has {len(target)} values; the image has {arr.ndim} axes"
        )
    if any(t <= 0 for t in target):
        raise ValueError(f"spacing must be > 0 mm; got {target}")
    extent = np.asarray(image.extent)
    shape = np.maximum(1, np.round(extent / np.asarray(target))).astype(int)
    factors = shape / np.asarray(arr.shape)
    if np.allclose(factors, 1):
        return image
    out = ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True)
    new_sp = tuple(float(e / s) for e, s in zip(extent, out.shape, strict=True))
    aff = None
    if image.affine is not None:  # same corner, scaled axes
        aff = image.affine.copy()
        scale = np.asarray(new_sp) / np.asarray(image.spacing)
        aff[:3, : arr.ndim] = image.affine[:3, : arr.ndim] * scale
        half = 0.5 * (np.asarray(new_sp) / np.asarray(image.spacing) - 1)
        aff[:3, 3] = image.affine[:3, 3] + image.affine[:3, : arr.ndim] @ half
    return Image(out.astype(np.float32), new_sp, aff, image.source, image.spacing_known, image.meta)


def to_ras(image: Image) -> Image:
    """Axes reordered and flipped so they run toward R, A, S (3D images with an affine;
    others are returned as they are)."""
    import nibabel as nib
    from nibabel import orientations as ornt

    if image.affine is None or image.array.ndim != 3:
        return image
    cur = ornt.io_orientation(image.affine)
    tr = ornt.ornt_transform(cur, ornt.axcodes2ornt(("R", "A", "S")))
    if np.array_equal(tr, [[0, 1], [1, 1], [2, 1]]):
        return image
    arr = ornt.apply_orientation(image.array, tr)
    aff = image.affine @ ornt.inv_ornt_aff(tr, image.array.shape)
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(aff))
    return Image(
        np.ascontiguousarray(arr, dtype=np.float32),
        spacing,
        aff,
        image.source,
        image.spacing_known,
        image.meta,
    )
