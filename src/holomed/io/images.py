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
while keeping the physical extent (shape x spacing), and :func:`resampled_shape` says
which shape that gives without interpolating; :func:`to_ras` reorders and flips
axes so they run toward Right, Anterior, Superior (nibabel's orientation tools), for
any image with an affine.

:func:`register_image` (SimpleITK) registers one image to another (rigid or affine,
Mattes mutual information, multi-resolution, fixed sampling seed, one thread, so the
result is reproducible) and resamples it onto the other's grid; it returns the transform
as a JSON-ready record. Images of co-acquired series (MR sequences, PET/CT) are started
from their shared scanner coordinates.
"""

from __future__ import annotations

import time
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


def resampled_shape(image: Image, spacing: float | tuple[float, ...]) -> tuple[int, ...]:
    """The array shape :func:`resample` gives ``image`` at ``spacing`` mm (one value per
    axis, or one for all): ``round(extent / spacing)`` samples per axis, at least 1.
    Nothing is interpolated, so it is cheap."""
    nd = image.array.ndim
    target = (float(spacing),) * nd if np.isscalar(spacing) else tuple(map(float, spacing))
    if len(target) != nd:
        raise ValueError(f"spacing {target} has {len(target)} values; the image has {nd} axes")
    if any(t <= 0 for t in target):
        raise ValueError(f"spacing must be > 0 mm; got {target}")
    shape = np.maximum(1, np.round(np.asarray(image.extent) / np.asarray(target)))
    return tuple(int(v) for v in shape)


def resample(image: Image, spacing: float | tuple[float, ...], order: int = 1) -> Image:
    """The image on a grid of ``spacing`` mm (one value per axis, or one for all) with
    its physical extent kept: each axis gets ``round(extent / spacing)`` samples and the
    spacing actually used is ``extent / samples`` (within half a voxel of the request).
    Interpolation: ``scipy.ndimage.zoom`` (order 1 = linear, ``grid_mode`` so voxel
    edges, not centres, line up)."""
    from scipy import ndimage

    arr = image.array
    extent = np.asarray(image.extent)
    shape = np.asarray(resampled_shape(image, spacing))
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


# -- registration -------------------------------------------------------------------

REGISTRATIONS = ("rigid", "affine")
MIN_SAMPLES, MAX_SAMPLES = 20_000, 50_000  # metric sample points per pyramid level
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's patient frame)


def _to_sitk(image: Image):
    """``image`` as a SimpleITK image whose index (i, j[, k]) is the array's index
    (i, j[, k]). A 3D image with an affine gets its geometry (RAS -> ITK's LPS); others
    are placed on an axis-aligned grid of their spacing with the first voxel at 0 mm."""
    import SimpleITK as sitk

    arr = np.ascontiguousarray(image.array.T, dtype=np.float32)
    out = sitk.GetImageFromArray(arr)  # SimpleITK reads arrays as (..., y, x)
    if image.array.ndim == 3 and image.affine is not None:
        lps = _LPS @ np.asarray(image.affine, float)
        lin = lps[:3, :3]
        sp = np.linalg.norm(lin, axis=0)
        out.SetSpacing([float(s) for s in sp])
        out.SetDirection([float(v) for v in (lin / sp).ravel()])
        out.SetOrigin([float(v) for v in lps[:3, 3]])
    else:
        out.SetSpacing([float(s) for s in image.spacing])
    return out


def _levels(shape: tuple[int, ...]) -> tuple[list[int], list[float]]:
    """Shrink factors (4, 2, 1 as the image allows: >= 16 voxels per axis at the coarsest
    level) and Gaussian smoothing sigmas (voxels of the full grid) of the pyramid."""
    shrink = [f for f in (4, 2) if min(shape) // f >= 16] + [1]
    return shrink, [f / 2.0 if f > 1 else 0.0 for f in shrink]


def _voxels(shape: tuple[int, ...], factor: int) -> int:
    return int(np.prod([max(1, -(-n // factor)) for n in shape]))


def _rotation_deg(lin: np.ndarray) -> float:
    """Angle (degrees) of the rotation part (polar decomposition) of a linear map."""
    u, _, vt = np.linalg.svd(lin)
    r = u @ vt
    if len(r) == 2:
        return float(np.degrees(abs(np.arctan2(r[1, 0], r[0, 0]))))
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def register_image(
    fixed: Image,
    moving: Image,
    transform: str = "rigid",
    seed: int = 0,
    bins: int = 32,
    sampling: float = 0.25,
    iterations: int = 200,
) -> tuple[Image, dict[str, Any]]:
    """Register ``moving`` to ``fixed`` (SimpleITK) and resample it onto ``fixed``'s grid.

    ``transform``: ``rigid`` (rotation + translation) or ``affine`` (a rigid stage, then a
    full affine started from it). The metric is Mattes mutual information (``bins``
    histogram bins), so images of different contrasts (MR sequences, PET, CT) can be
    matched; it is evaluated on a random ``sampling`` fraction of the fixed image's voxels
    (kept within ``MIN_SAMPLES``-``MAX_SAMPLES`` points per level) drawn with ``seed``,
    and ITK runs on one thread while it registers, so a result does not vary between runs
    or machines. Optimiser:
    regular-step gradient descent (first step 2, last 0.001, in units of physical shift,
    mm; the step x 0.8 on each reversal; parameter scales from physical shifts), at most
    ``iterations`` steps per level of a multi-resolution pyramid (shrink 4, 2, 1 as the
    size allows; smoothing sigma half the shrink factor, in voxels). The start is the
    identity in patient space: co-acquired images already share scanner coordinates (3D
    images with an affine; other images are placed by their spacing with their first
    voxel at the origin). Linear interpolation; what falls outside ``moving`` is filled
    with its minimum.

    Returns the moved image (``fixed``'s grid: its array shape, spacing and affine; the
    source stays ``moving``'s) and a JSON-ready record: ``type``, ``reference`` and
    ``moving`` (the files), ``space`` (``"RAS mm"``, or ``"image mm"`` without an
    affine), ``matrix`` (homogeneous, maps a point of the reference to the point of the
    moving image it samples), ``translation_mm`` and ``center_mm`` (ITK's centred form:
    ``y = A (x - c) + c + t``), ``rotation_deg`` (of the rotation part), the ITK
    ``itk_transform`` name with its ``parameters`` / ``fixed_parameters`` (LPS for 3D
    with an affine), ``spacing`` and ``shape`` of the reference grid, ``metric_before`` /
    ``metric_after`` (Mattes MI at full resolution, lower is better), ``iterations`` (at
    the finest level, summed over the stages), ``stop`` (the optimiser's reason),
    ``note`` (set when an affine stage that did not improve the metric was dropped for
    the rigid result) and ``seconds``. Failure (no overlap, a constant image, divergence)
    raises :class:`~holomed.errors.CohortError` naming the moving file.
    """
    import SimpleITK as sitk

    if transform not in REGISTRATIONS:
        raise ValueError(f"register: {transform!r} is not one of {', '.join(REGISTRATIONS)}")
    nd = fixed.array.ndim
    if moving.array.ndim != nd:
        raise CohortError(
            f"{moving.source}: cannot register a {moving.array.ndim}D image to the {nd}D "
            f"reference {fixed.source}"
        )
    for img in (fixed, moving):
        if float(np.ptp(img.array)) <= 0 or not np.isfinite(img.array).all():
            raise CohortError(
                f"{img.source}: registration impossible: the image is constant or not finite"
            )
    t0 = time.perf_counter()
    fx, mv = _to_sitk(fixed), _to_sitk(moving)
    center = fx.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fx.GetSize()])
    rigid = sitk.Euler3DTransform() if nd == 3 else sitk.Euler2DTransform()
    rigid.SetCenter(center)
    shrink, sigmas = _levels(fixed.array.shape)

    itk_seed = int(seed) + 1  # SimpleITK reads seed 0 as "seed from the wall clock"

    def frac(voxels: int) -> float:  # enough points for a 2D histogram, not too many
        return min(1.0, max(float(sampling), MIN_SAMPLES / voxels), MAX_SAMPLES / voxels)

    def method(levels: bool, step: float = 2.0):
        r = sitk.ImageRegistrationMethod()
        r.SetNumberOfThreads(1)
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
        r.SetMetricSamplingStrategy(r.RANDOM)
        if levels:
            r.SetMetricSamplingPercentagePerLevel(
                [frac(_voxels(fixed.array.shape, f)) for f in shrink], itk_seed
            )
        else:
            r.SetMetricSamplingPercentage(frac(fixed.array.size), itk_seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=step,
            minStep=1e-3,
            numberOfIterations=int(iterations),
            relaxationFactor=0.8,
            gradientMagnitudeTolerance=1e-8,
        )
        r.SetOptimizerScalesFromPhysicalShift()
        if levels:
            r.SetShrinkFactorsPerLevel(shrink)
            r.SetSmoothingSigmasPerLevel(sigmas)
            r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        return r

    def metric(tx) -> float:
        r = method(False)
        r.SetInitialTransform(tx, inPlace=False)
        return float(r.MetricEvaluate(fx, mv))

    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    # one thread: ITK's threaded sums (metric, smoothing) otherwise vary in their last
    # bits from run to run, which the optimiser amplifies
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        before = metric(rigid)
        stages = [rigid]
        if transform == "affine":
            stages.append(sitk.AffineTransform(nd))
        iters, note, after = 0, None, before
        tx = None
        for stage in stages:
            if tx is not None:  # the affine stage starts from the rigid result
                stage.SetCenter(tx.GetCenter())
                stage.SetMatrix(tx.GetMatrix())
                stage.SetTranslation(tx.GetTranslation())
            r = method(True, 2.0 if tx is None else 0.5)
            r.SetInitialTransform(stage, inPlace=True)
            r.Execute(fx, mv)
            iters += int(r.GetOptimizerIteration())
            stop = r.GetOptimizerStopConditionDescription()
            value = metric(stage)
            if tx is not None and not value < after:
                note = "the affine stage did not improve on the rigid result, which is kept"
                break
            tx, after = stage, value
        fill = float(np.min(moving.array))
        out = sitk.Resample(mv, fx, tx, sitk.sitkLinear, fill, sitk.sitkFloat32)
    except RuntimeError as err:  # ITK's exceptions: no overlap, all samples outside ...
        msg = " ".join(str(err).split())[-300:]
        raise CohortError(
            f"{moving.source}: {transform} registration to {fixed.source} failed: {msg}"
        ) from None
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    params = [float(v) for v in tx.GetParameters()]
    if not np.isfinite(params).all() or not np.isfinite(after):
        raise CohortError(
            f"{moving.source}: {transform} registration to {fixed.source} failed: the "
            f"optimiser diverged (parameters {params})"
        )
    lin = np.asarray(tx.GetMatrix(), float).reshape(nd, nd)
    c = np.asarray(tx.GetCenter(), float)
    t = np.asarray(tx.GetTranslation(), float)
    mat = np.eye(nd + 1)
    mat[:nd, :nd] = lin
    mat[:nd, nd] = c + t - lin @ c
    affine = nd == 3 and fixed.affine is not None
    if affine:  # ITK works in LPS; report RAS, as the affines are
        mat, c, t = _LPS @ mat @ _LPS, c * _LPS[:3, :3].diagonal(), t * _LPS[:3, :3].diagonal()
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(out).T, dtype=np.float32)
    moved = Image(
        arr,
        tuple(float(s) for s in fixed.spacing),
        None if fixed.affine is None else np.asarray(fixed.affine, float).copy(),
        moving.source,
        moving.spacing_known,
        {**moving.meta, "registered_to": fixed.source},
    )
    record = {
        "type": transform,
        "reference": fixed.source,
        "moving": moving.source,
        "space": "RAS mm" if affine else "image mm",
        "matrix": mat.tolist(),
        "translation_mm": t.tolist(),
        "center_mm": c.tolist(),
        "rotation_deg": _rotation_deg(lin),
        "itk_transform": tx.GetName(),
        "parameters": params,
        "fixed_parameters": [float(v) for v in tx.GetFixedParameters()],
        "spacing": [float(s) for s in fixed.spacing],
        "shape": [int(s) for s in fixed.array.shape],
        "metric_before": before,
        "metric_after": after,
        "iterations": iters,
        "stop": stop,
        "note": note,
        "seconds": time.perf_counter() - t0,
    }
    return moved, record
