"""``image``: 2D images (X-ray, PNG/JPEG/DICOM) or 3D volumes (CT/MR, NIfTI or DICOM
series), several per patient (views, sequences, follow-ups) treated as a set, or, with
``as_channels``, co-acquired sequences stacked as the channels of one image.

The modality's frame is indexed by patient id with a column ``paths``: the list of a
patient's image files (a DICOM series is a folder). From files, ``read`` takes a table
with an id column and a path column (``options.path_column``, default ``path``); a
patient may have several rows (one per image); relative paths resolve against the
table's folder, then the spec's. With ``source: dicomweb://host/path`` the images come
from a PACS (:mod:`holomed.io.dicomweb`, ``options.dicomweb``): each patient's studies
are fetched into a local folder, and patients it could not serve are reported by
``check`` with their reason.

``check`` probes every file without decoding pixels (header of DICOM/NIfTI, PIL's
integrity check of PNG/JPEG) and reports each missing or unreadable file (``scope:
value``, with the file); a patient loses the modality only when none of its images is
usable. Pixels are decoded lazily, at ``transform`` time, only for present rows; a
file that passed the probe but whose pixels cannot be decoded (truncated pixel data) is
then an error naming the file, never a silently blank image.

:class:`ImagePreprocessor` (fitted on training patients only), per image:

1. read (:mod:`holomed.io.images`); volumes with an affine turned to RAS (``ras``);
2. intensity: ``window: [lo, hi]`` (e.g. CT in HU) clipped and scaled to [0, 1]; or
   ``zscore: true`` (per image); or, by default, ``percentile: [p_lo, p_hi]`` (default
   ``[0.5, 99.5]``, suited to X-rays whose grey levels have no physical unit) clipped
   and scaled to [0, 1];
3. geometry: with ``spacing`` (mm, one per axis or one for all) the image is resampled
   with its physical extent kept and centre-cropped / zero-padded to ``size``; without
   it, it is resized to ``size`` (bilinear / trilinear, antialiased in 2D). ``size`` is
   ``[H, W]`` or ``[D, H, W]`` (default ``[224, 224]`` for 2D, ``[64, 64, 64]`` for 3D);
4. standardised with the training pixels' mean and sd (fitted), so 0 is the training
   mean (the baseline of the attributions).

Registration of co-acquired images (MR sequences, PET/CT, 2D views too): with
``register: rigid`` or ``affine`` (default ``null``: none), every image of a patient's
set but the reference, ``register_reference`` (default 0: the patient's first usable
image, in table order), is registered to it between steps 1 and 2
(:func:`holomed.io.images.register_image`: SimpleITK, Mattes mutual information, so it
works across contrasts; a 3-level pyramid; a fixed sampling seed and one thread, so it
is reproducible; started from the shared scanner coordinates). The moving image is
resampled onto the reference's grid (the reference read, turned to RAS and, with
``spacing``, resampled to it) and then goes through steps 2-3 like the reference, so
both end on the same voxels. The transform of each image is kept in ``registration_``
(``{patient id: [record, ...]}``, each record with ``image`` (its index in the set),
``type``, ``matrix``, ``translation_mm``, ``rotation_deg``, ITK's parameters, the grid
``spacing``, the metric before / after and the seconds it took; see
:func:`~holomed.io.images.register_image`); a patient without the reference slot keeps
its images in scanner space, recorded as ``skipped``. A summary over the training
patients (counts, median / max translation and rotation) is ``registration_summary_``,
saved with the state. A registration that fails (no overlap, a constant image) is an
error naming the file. ``registered_`` counts registrations run (not read from cache).

Channels of one image (``as_channels``; default ``null``: a set). Co-acquired volumes
(MR T1 / T2 / FLAIR, PET + CT) can be stacked as the channels of ONE image instead of
kept as set elements: ``as_channels: [T1, T2, FLAIR]`` names the ``K`` channels, in the
order of a patient's rows in the table (the k-th row is channel k; a sequence a patient
lacks needs its row with an empty path to keep the later ones in place); with the reader
option ``options.channel_column: <column>`` each row names its channel and images are
matched by name. ``as_channels: true`` names ``max_images`` channels (default: the most
images a training patient has) ``ch0``, ``ch1``, ... by position.

Every image goes through steps 1-3 on its own (intensity scaled per image, so each
sequence gets its own scale), and all must land on the same voxels before they are
stacked: with ``register`` every channel is registered onto the reference channel's grid
(``register_reference``: an index or a channel name; a patient without that channel
uses its first one); without ``register`` every channel must already be on the
reference's grid (same voxel counts after turning to RAS and, with ``spacing``,
resampling to it: images that differ only in voxel size need ``spacing``), and one
that is not is a :class:`~holomed.errors.CohortError` naming the patient and both files
(voxel counts are compared, not affines: images of one grid are taken as
co-registered).

Output per patient ``(1, K + 1, *size)``: the ``K`` channels and ONE presence channel
for the image as a whole. Standardisation is per channel (``mean_`` / ``sd_`` of shape
``(K,)``, over the training patients that have that channel; a channel none has is an
error). A patient lacking some channel(s) keeps the modality with those channels 0 (the
training mean); each is in the cohort's report (``scope: value``: ``no image for channel
'FLAIR'; filled with 0 ...`` or the unusable file's reason), in ``missing_channels_``
(``{patient id: {channel: reason}}``, the patients processed so far) counted by
:meth:`~ImagePreprocessor.channel_report`, and over the training patients in
``channel_summary_`` (saved with the state); a patient with no usable image loses the
modality as before. Images beyond the ``K`` channels, or named for an unknown or an
already filled channel, are left out and reported when the cohort is checked
(``truncated_`` counts images beyond ``K`` at ``transform``; an unchecked frame with
such a name is an error).

Feature names name the channel (``img0:T2:z3:y7:x1``), so attributions say which
sequence mattered (:meth:`~ImagePreprocessor.channel_importance` sums them per channel).
``out_dim`` is ``K + 1``: ``cnn2d`` / ``cnn3d`` read the ``K`` channels with their first
convolution; ``efficientnet_lite0`` takes ``K`` = 1 or 3 (read as R, G, B) and refuses
other counts. The names enter the cache key (``as_channels`` in the settings), and each
cached image keeps its grid next to it, so the grid check needs no decoding either.

Steps 1-3 depend on the settings only, not on the fit: their result is cached on disk
(``cache_dir``; key = sha256 of the file's bytes + the settings, which include
``register`` / ``register_reference`` and ``as_channels`` when set, + for a registered
image the reference's bytes), so a second transform decodes nothing; a registered image's
record is cached next to its array. ``cache_hits_`` / ``cache_misses_`` count lookups;
``decoded_`` counts images decoded.

Memory: with a ``cache_dir``, a transform whose array would exceed ``lazy_mb`` MB (default
1024; ``null`` = never) returns a :class:`LazyImages` instead of the array. Training and
prediction then read one batch of patients at a time from the cache, so peak memory does
not grow with the cohort; code that needs the whole array still gets it with
``np.asarray``.

Output (the set layout; for ``as_channels`` see above) ``(n, max_images, C + 1, H, W)``
(or ``(..., D, H, W)``) float32: ``C`` image channels (``gray``) and a presence channel
(``image_present``: 1 on a real image, 0 on a padding slot, whose pixels are 0 too). A
patient's first ``max_images`` images are kept (default: the most any training patient
has, at most 16; ``truncated_`` counts the images left out). Rows of absent patients are
NaN. ``feature_names_out_`` names every element (``img0:gray:y12:x40``) so attributions
can be read per pixel; ``out_dim`` (what encoders are built for) is the channel count
``C + 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.dicomweb import is_dicomweb
from holomed.io.images import (
    REGISTRATIONS,
    Image,
    image_format,
    read_image,
    register_image,
    resample,
    resampled_shape,
    to_ras,
)
from holomed.io.tables import read_ids
from holomed.modalities.base import (
    LazyRows,
    ModalityData,
    ModalityKind,
    Preprocessor,
    register_modality,
)

CHANNELS = ("gray",)
PRESENT = "image_present"
STATS = ("mean", "sd", "p05", "p25", "p50", "p75", "p95")
CACHE_VERSION = 1
MAX_IMAGES = 16
# the registration recipe (metric, optimiser, pyramid, sampling seed) enters the cache
# key; bump it when io.images.register_image changes what it computes
REGISTER_RECIPE = "sitk-mattes32-rsgd-pyramid-v1"
REGISTER_SEED = 0


# -- reading and checking -----------------------------------------------------------


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
        from holomed.io.dicomweb import read_dicomweb

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
            (i, _resolve(v, path.parent, spec), None if _blank(c) else str(c).strip())
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


def _blank(v: Any) -> bool:
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


def check_images(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """Keep each patient's usable files; report the others (``scope: value`` with the
    file) and the patients left with none."""
    if "paths" not in df.columns:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: an image frame needs a column 'paths' "
            f"(list of files per patient); columns are {list(df.columns)[:10]}"
        )
    # patients a PACS could not serve (holomed.io.dicomweb), each with its reason
    fetched = [dict(p) for p in df.attrs.get("dicomweb_report", ())]
    option = (getattr(mspec, "preprocessing", None) or {}).get("as_channels")
    if option is not None and option is not False:
        out, problems = _check_channels(df, mspec, where, option)
        return out, fetched + problems
    name = mspec.name
    max_images = (getattr(mspec, "preprocessing", None) or {}).get("max_images")
    problems: list[dict] = []
    keep_ids, keep_paths = [], []
    for pid, paths in zip(df.index.astype(str), df["paths"], strict=True):
        if isinstance(paths, str | Path):
            paths = [paths]
        if not isinstance(paths, list | tuple | np.ndarray):
            paths = []
        good = []
        for p in paths:
            if p is None or (isinstance(p, float) and np.isnan(p)):
                problems.append(
                    {"id": pid, "modality": name, "reason": "empty image path", "scope": "value",
                     "count": 1}
                )  # fmt: skip
                continue
            why = probe(p)
            if why is None:
                good.append(str(p))
            else:
                problems.append(
                    {"id": pid, "modality": name, "reason": why, "scope": "value", "count": 1,
                     "file": str(p)}
                )  # fmt: skip
        if good:
            keep_ids.append(pid)
            keep_paths.append(good)
            if max_images is not None and len(good) > int(max_images):  # kept, not used
                problems.append(
                    {"id": pid, "modality": name, "scope": "value",
                     "reason": f"images beyond max_images ({int(max_images)}) not used",
                     "count": len(good) - int(max_images)}
                )  # fmt: skip
        else:
            problems.append({"id": pid, "modality": name, "reason": f"no usable image in {where}"})
    out = pd.DataFrame({"paths": keep_paths}, index=pd.Index(keep_ids, name="id"))
    return out, fetched + problems


# -- channels of one image (as_channels) ----------------------------------------------

NO_IMAGE = "no image for this channel in the table"
UNUSABLE = "empty image path or unusable image file (see the cohort's report)"
FILLED = "filled with 0 (the training mean)"


def channel_names(
    option: Any, max_images: int | None = None, most: int | None = None
) -> list[str] | None:
    """The channel names ``as_channels`` asks for: a list of names as given; ``true``:
    ``ch0``, ``ch1``, ... (``max_images`` of them, or ``most``, the most images a
    training patient has, at most 16; None while neither is known); ``null`` / ``false``:
    None (the set layout)."""
    if option is None or option is False:
        return None
    if option is True:
        k = max_images or (min(int(most), MAX_IMAGES) if most else None)
        return None if k is None else [f"ch{i}" for i in range(int(k))]
    if isinstance(option, str) or not isinstance(option, list | tuple) or not option:
        raise ValueError(
            f"as_channels: {option!r}; expected true or a list of channel names "
            "(e.g. [T1, T2, FLAIR])"
        )
    names = [str(c).strip() if isinstance(c, str) else c for c in option]
    bad = [c for c in names if not isinstance(c, str) or not c or ":" in c or c == PRESENT]
    if bad:
        raise ValueError(
            f"as_channels: {bad[0]!r} is not a usable channel name (a non-empty text "
            f"without ':', other than {PRESENT!r})"
        )
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"as_channels: channel names {dup} appear more than once")
    if max_images is not None and int(max_images) != len(names):
        raise ValueError(
            f"as_channels names {len(names)} channels but max_images is {max_images}; "
            "leave max_images out (it is the channel count)"
        )
    return names


def _listed(cell: Any) -> list:
    if isinstance(cell, str | Path):
        return [cell]
    if isinstance(cell, list | tuple | np.ndarray):
        return list(cell)
    return []


def _slots(
    cell: Any, labels: Any, names: list[str] | None, strict: bool = False
) -> tuple[list[str | None], dict[int, str], list[tuple[str, str]]]:
    """A patient's images placed in the channel slots: ``(slots, missing, left_out)``.

    Without ``labels`` by position (the k-th listed image is channel k; a blank entry
    keeps its slot empty; with ``names`` unknown, as many slots as images); with
    ``labels`` (each image's channel name) by name. ``missing`` gives the reason of each
    empty slot (:data:`NO_IMAGE` or :data:`UNUSABLE`); ``left_out`` lists ``(path,
    reason)`` of images no slot takes (beyond the channels, an unknown or repeated
    name). ``strict``: an unknown or repeated name is a ``ValueError`` instead."""
    paths = [None if _blank(p) else str(p) for p in _listed(cell)]
    if labels is None or (not isinstance(labels, list | tuple | np.ndarray) and _blank(labels)):
        k = len(paths) if names is None else len(names)
        slots = paths[:k] + [None] * (k - len(paths))
        missing = {j: UNUSABLE if j < len(paths) else NO_IMAGE for j in range(k) if not slots[j]}
        left = [(p, f"more images than the {k} channels") for p in paths[k:] if p]
        return slots, missing, left
    if names is None:
        raise ValueError("images named by channel need as_channels to list the channel names")
    labs = _listed(labels)
    if len(labs) != len(paths):
        raise ValueError(f"{len(paths)} image paths but {len(labs)} channel names")
    slots = [None] * len(names)
    seen: set[int] = set()
    left: list[tuple[str, str]] = []
    for p, lab in zip(paths, labs, strict=True):
        lab = None if _blank(lab) else str(lab).strip()
        if p is None and lab is None:  # a placeholder (a checked frame's empty slot)
            continue
        why = None
        if lab not in names:
            why = f"image of unknown channel {lab!r}; the channels are {', '.join(names)}"
        elif names.index(lab) in seen:
            why = f"a second image for channel {lab!r}"
        if why is not None:
            if strict:
                raise ValueError(f"{why} ({p})")
            left.append((p or "", why))
            continue
        seen.add(names.index(lab))
        slots[names.index(lab)] = p
    missing = {j: UNUSABLE if j in seen else NO_IMAGE for j in range(len(names)) if not slots[j]}
    return slots, missing, left


def _check_channels(
    df: pd.DataFrame, mspec: Any, where: str, option: Any
) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`check_images` for ``as_channels``: each patient's images placed in the
    channel slots (a missing or unusable one leaves its slot empty, reported with the
    channel it leaves blank); a patient loses the modality only when no slot holds a
    usable image."""
    name = mspec.name
    pre = getattr(mspec, "preprocessing", None) or {}
    try:
        names = channel_names(option, pre.get("max_images"))
    except ValueError as err:
        raise CohortError(f"modality {name!r}: preprocessing.{err}") from None
    labelled = "channels" in df.columns
    if labelled and names is None:
        raise CohortError(
            f"{where}: modality {name!r}: images named by channel (options.channel_column) "
            "need as_channels to list the channel names"
        )
    problems: list[dict] = []
    keep_ids, keep_paths, keep_labels = [], [], []
    labels = df["channels"] if labelled else [None] * len(df)
    for pid, cell, labs in zip(df.index.astype(str), df["paths"], labels, strict=True):
        slots, missing, left = _slots(cell, labs if labelled else None, names)
        for p, why in left:
            problems.append(
                {"id": pid, "modality": name, "reason": f"{why}: left out", "scope": "value",
                 "count": 1, "file": p}
            )  # fmt: skip
        found: list[dict] = []
        for k, p in enumerate(slots):
            why = probe(p) if p else None
            if why is not None:
                slots[k] = None
                found.append({"reason": why, "file": p, "k": k})
            elif not p:
                blank = missing.get(k) == UNUSABLE
                found.append({"reason": "empty image path" if blank else None, "k": k})
        for f in found:
            ch = names[f["k"]] if names else f"ch{f['k']}"
            if not any(slots):  # the patient loses the modality: reported as for sets
                reason = f["reason"]
            elif f["reason"]:
                reason = f"{f['reason']}; channel {ch!r} {FILLED}"
            else:
                reason = f"no image for channel {ch!r}; {FILLED}"
            if reason:
                entry = {"id": pid, "modality": name, "reason": reason, "scope": "value",
                         "count": 1}  # fmt: skip
                if f.get("file"):
                    entry["file"] = f["file"]
                problems.append(entry)
        if any(slots):
            keep_ids.append(pid)
            keep_paths.append(slots)
            # slots in the order of the names; a slot no row named has no name either
            keep_labels.append([None if missing.get(k) == NO_IMAGE else c
                                for k, c in enumerate(names or [])])  # fmt: skip
            continue
        problems.append({"id": pid, "modality": name, "reason": f"no usable image in {where}"})
    out = pd.DataFrame({"paths": keep_paths}, index=pd.Index(keep_ids, name="id"))
    if labelled:
        out["channels"] = keep_labels
    return out, problems


# -- preprocessing ------------------------------------------------------------------


class ElementNames(Sequence):
    """Names of every element of an ``(M, C, *spatial)`` output, made on demand:
    ``img0:gray:y3:x7`` (``z`` first in 3D)."""

    def __init__(self, shape: tuple[int, ...], channels: tuple[str, ...]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.channels = tuple(channels)

    def __len__(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        idx = np.unravel_index(i, self.shape)
        axes = ("z", "y", "x")[-(len(self.shape) - 2) :]
        where = ":".join(f"{a}{int(v)}" for a, v in zip(axes, idx[2:], strict=True))
        return f"img{int(idx[0])}:{self.channels[int(idx[1])]}:{where}"


def _paths_of(data: ModalityData) -> list:
    vals = data.values
    return list(vals["paths"]) if isinstance(vals, pd.DataFrame) else list(vals)


def _ids_of(data: ModalityData) -> list[str]:
    """Patient ids (the frame's index), or ``row<i>`` when the values carry none."""
    vals = data.values
    if isinstance(vals, pd.DataFrame):
        return [str(i) for i in vals.index]
    return [f"row{i}" for i in range(len(data))]


def _labels_of(data: ModalityData, present_only: bool = False) -> list:
    """Each row's channel names (column ``channels``, from ``options.channel_column``),
    or None per row when the values carry none."""
    vals = data.values
    if isinstance(vals, pd.DataFrame) and "channels" in vals.columns:
        out = list(vals["channels"])
    else:
        out = [None] * len(data)
    return [v for v, p in zip(out, data.present, strict=True) if p] if present_only else out


def _cell(paths: Any, i: int) -> list:
    if isinstance(paths, str | Path):
        paths = [paths]
    if not isinstance(paths, list | tuple | np.ndarray) or not len(paths):
        raise ValueError(f"row {i} is marked present but lists no image")
    return list(paths)


def _summary(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median / max of the recorded transforms' translation (mm, its norm) and rotation
    (degrees), mean metric before / after and seconds, over all registered images."""
    done = [r for recs in records.values() for r in recs if r.get("type")]
    out: dict[str, Any] = {
        "images": len(done),
        "skipped": sum(1 for recs in records.values() for r in recs if not r.get("type")),
    }
    if done:
        tr = np.array([np.linalg.norm(r["translation_mm"]) for r in done])
        rot = np.array([r["rotation_deg"] for r in done])
        out.update(
            translation_mm={"median": float(np.median(tr)), "max": float(tr.max())},
            rotation_deg={"median": float(np.median(rot)), "max": float(rot.max())},
            metric_before=float(np.mean([r["metric_before"] for r in done])),
            metric_after=float(np.mean([r["metric_after"] for r in done])),
            seconds=float(np.mean([r["seconds"] for r in done if "seconds" in r] or [0.0])),
        )
    return out


class LazyImages(LazyRows):
    """A patient-by-patient view of :meth:`ImagePreprocessor.transform`: rows are read
    from the disk cache when a batch asks for them."""

    def __init__(self, pre: ImagePreprocessor, data: ModalityData) -> None:
        super().__init__(len(data), pre.out_shape)
        self.pre, self.data = pre, data

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.pre.rows(self.data, idx)


class ImagePreprocessor(Preprocessor):
    """Read, orient, scale intensities, resample/resize, cache; standardise with the
    training pixels' statistics. See the module docstring for the options."""

    kind = "image"

    def __init__(
        self,
        size: list[int] | None = None,
        spacing: float | list[float] | None = None,
        window: list[float] | None = None,
        percentile: list[float] | None = None,
        zscore: bool = False,
        max_images: int | None = None,
        cache_dir: str | None = None,
        ras: bool = True,
        register: str | None = None,
        register_reference: int | str = 0,
        as_channels: bool | list[str] | None = None,
        lazy_mb: float | None = 1024,
    ) -> None:
        self.size = size
        self.spacing = spacing
        self.window = window
        self.percentile = percentile
        self.zscore = zscore
        self.max_images = max_images
        self.cache_dir = cache_dir
        self.ras = ras
        self.register = register
        self.register_reference = register_reference
        self.as_channels = as_channels
        self.lazy_mb = lazy_mb

    # -- per image (depends on the settings only) ------------------------------------
    def _register_mode(self) -> str | None:
        mode = self.register
        if mode is None or mode is False or str(mode).lower() in ("none", "null", ""):
            return None
        if str(mode).lower() not in REGISTRATIONS:
            raise ValueError(f"register: {mode!r} is not one of {', '.join(REGISTRATIONS)} or null")
        return str(mode).lower()

    def _settings(self) -> dict[str, Any]:
        out = {
            "v": CACHE_VERSION,
            "size": list(self.size_),
            "spacing": self.spacing,
            "window": self.window,
            "percentile": self.percentile,
            "zscore": self.zscore,
            "ras": self.ras,
        }
        mode = self._register_mode()
        if mode is not None:  # only when set, so caches written without it stay valid
            out["register"] = mode
            ref = self._reference_slot() if self._channel_mode() else self.register_reference
            out["register_reference"] = int(ref)
            out["register_recipe"] = REGISTER_RECIPE
        if self._channel_mode():  # entries then carry their grid (``<key>.json``)
            out["as_channels"] = list(self.channel_names_)
        return out

    def _channel_mode(self) -> bool:
        return self.as_channels is not None and self.as_channels is not False

    def _image_channels(self) -> tuple[str, ...]:
        """Names of the image channels: ``as_channels``' names, or ``gray``."""
        names = getattr(self, "channel_names_", None)
        return tuple(names) if names else CHANNELS

    def _reference_slot(self) -> int:
        """``register_reference`` as a channel index (it may name the channel)."""
        names, r = self.channel_names_, self.register_reference
        if isinstance(r, str):
            if r not in names:
                raise ValueError(
                    f"register_reference {r!r} is not one of the channels {', '.join(names)}"
                )
            return names.index(r)
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or not 0 <= r < len(names):
            raise ValueError(
                f"register_reference: {r!r}; expected a channel name or an index 0 to "
                f"{len(names) - 1}"
            )
        return int(r)

    def _grid(self, img: Image) -> list[int]:
        """The voxel grid an image is on before step 3: its shape, or with ``spacing``
        the shape it is resampled to."""
        if self.spacing is None:
            return [int(s) for s in img.array.shape]
        return list(resampled_shape(img, self.spacing))

    def _intensity(self, a: np.ndarray) -> np.ndarray:
        if self.window is not None:
            lo, hi = float(self.window[0]), float(self.window[1])
            if hi <= lo:
                raise ValueError(f"window {self.window}: high must exceed low")
            return (np.clip(a, lo, hi) - lo) / (hi - lo)
        if self.zscore:
            sd = float(a.std())
            return (a - float(a.mean())) / (sd if sd > 1e-8 else 1.0)
        p = self.percentile if self.percentile is not None else (0.5, 99.5)
        lo, hi = np.percentile(a, [float(p[0]), float(p[1])])
        if hi - lo < 1e-8:
            return np.zeros_like(a)
        return (np.clip(a, lo, hi) - lo) / (hi - lo)

    def _geometry(self, img: Image, a: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        size = tuple(self.size_)
        if self.spacing is not None:
            a = resample(Image(a, img.spacing, img.affine, img.source), self.spacing).array
            out = np.zeros(size, np.float32)
            src, dst = [], []
            for n, m in zip(a.shape, size, strict=True):
                if n >= m:
                    s = (n - m) // 2
                    src.append(slice(s, s + m))
                    dst.append(slice(0, m))
                else:
                    s = (m - n) // 2
                    src.append(slice(0, n))
                    dst.append(slice(s, s + n))
            out[tuple(dst)] = a[tuple(src)]
            return out
        if a.shape == size:
            return a.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
        mode = "bilinear" if a.ndim == 2 else "trilinear"
        r = F.interpolate(t, size=size, mode=mode, align_corners=False, antialias=a.ndim == 2)
        return r[0, 0].numpy()

    def _read(self, path: str) -> Image:
        """Step 1: read, turned to RAS; the dimension checked against ``size``."""
        img = read_image(path)
        if self.ras:
            img = to_ras(img)
        if img.array.ndim != len(self.size_):
            raise CohortError(
                f"{path}: image has {img.array.ndim} dimensions; this modality's images have "
                f"{len(self.size_)} (size {list(self.size_)})"
            )
        return img

    def _reference(self, path: str) -> Image:
        """The grid images are registered onto: the reference read, turned to RAS and,
        with ``spacing``, resampled to it (intensities as read)."""
        img = self._read(path)
        return img if self.spacing is None else resample(img, self.spacing)

    def _decode(
        self, path: str, fixed: Callable[[], Image] | None = None
    ) -> tuple[np.ndarray, dict[str, Any] | None]:
        """One image through steps 1-3: ``(C, *size)`` float32; registered first (and
        its record returned) when ``fixed`` gives the reference. With ``as_channels``
        the record also holds the image's ``grid`` (see :meth:`_grid`)."""
        img = self._read(path)
        record = None
        if fixed is not None:
            img, record = register_image(
                fixed(), img, self._register_mode() or "rigid", seed=REGISTER_SEED
            )
            self.registered_ += 1
        if self._channel_mode():
            record = {**(record or {}), "grid": self._grid(img)}
        self.decoded_ += 1
        if not np.isfinite(img.array).all():  # the check refuses these (NIfTI); never silent
            raise CohortError(
                f"{path}: {NONFINITE}; leave the file out of the table or fix its pixels"
            )
        a = self._intensity(img.array.astype(np.float32))
        return self._geometry(img, a)[None].astype(np.float32), record

    def _hasher(self, path: str) -> str:
        """sha256 of the file's bytes (a folder: its files' names and bytes), remembered
        per (path, size, modification time) - of every file, for a folder, so a slice
        rewritten in place is seen."""
        p = Path(path)
        try:
            files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
            stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        except OSError as err:
            raise CohortError(f"{path}: image file not found or unreadable ({err})") from None
        stamp = (str(p), tuple(stats))
        hit = self._digests.get(stamp)
        if hit is not None:
            return hit
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() if p.is_dir() else b"")
            with open(f, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
        self._digests[stamp] = h.hexdigest()
        return self._digests[stamp]

    def _digest(self, path: str, reference: str | None = None) -> str:
        """Cache key: the file's bytes + the settings (+ the reference's bytes for an
        image registered to it)."""
        h = hashlib.sha256(self._hasher(path).encode())
        h.update(json.dumps(self._settings(), sort_keys=True).encode())
        if reference is not None:
            h.update(b"registered to " + self._hasher(reference).encode())
        return h.hexdigest()

    def _load(
        self,
        path: str,
        reference: str | None = None,
        fixed: Callable[[], Image] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Steps 1-3 of one image, from the cache when it has them. An image registered
        to ``reference`` (whose grid ``fixed`` gives) keeps its registration record next
        to its array (``<key>.json``); with ``as_channels`` every image keeps one (its
        grid at least)."""
        if not self.cache_dir:
            return self._decode(path, fixed)
        key = self._digest(path, reference)
        root = Path(os.path.expandvars(os.path.expanduser(str(self.cache_dir))))
        f = root / key[:2] / f"{key}.npy"
        side = f.with_suffix(".json")
        if f.exists():
            try:
                arr = np.load(f, allow_pickle=False)
                record = None
                if reference is not None or self._channel_mode():
                    record = json.loads(side.read_text())
                    record["cached"] = True
                if reference is not None:
                    record.update(moving=str(path), reference=str(reference))
                self.cache_hits_ += 1
                return arr, record
            except (OSError, ValueError):
                pass  # a damaged cache entry (or a missing record) is rebuilt
        self.cache_misses_ += 1
        arr, record = self._decode(path, fixed)
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            if record is not None:
                tmp = side.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(record))
                os.replace(tmp, side)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, f)
        except OSError as err:  # e.g. a bundle's cache folder missing on another machine
            if not getattr(self, "_cache_warned", False):
                warnings.warn(
                    f"image cache {root} is not writable ({err}); images are decoded "
                    "without caching",
                    stacklevel=2,
                )
                self._cache_warned = True
        return arr, record

    def _patient(self, pid: str, paths: Sequence) -> list[np.ndarray]:
        """A patient's images (the first ``max_images_``) through steps 1-3; with
        ``register``, every image but the reference is registered to it and its record
        goes to ``registration_[pid]``."""
        paths = [str(p) for p in paths[: self.max_images_]]
        if self._register_mode() is None or len(paths) < 2:
            return [self._load(p)[0] for p in paths]
        r = int(self.register_reference)
        if r >= len(paths):  # no reference: left in scanner space, and said so
            self.registration_[pid] = [
                {"image": k, "moving": p, "type": None,
                 "skipped": f"the patient has no image {r} (register_reference)"}
                for k, p in enumerate(paths)
            ]  # fmt: skip
            return [self._load(p)[0] for p in paths]
        ref = paths[r]
        grid: list[Image] = []

        def fixed() -> Image:  # read once per patient, only when a registration runs
            if not grid:
                grid.append(self._reference(ref))
            return grid[0]

        out, records = [], []
        for k, p in enumerate(paths):
            if k == r:
                out.append(self._load(p)[0])
                continue
            a, rec = self._load(p, ref, fixed)
            out.append(a)
            records.append({"image": k, **(rec or {})})
        self.registration_[pid] = records
        return out

    def _channels(self, pid: str, cell: Any, labels: Any) -> list[np.ndarray | None]:
        """A patient's images as the channels of one image (``as_channels``), each
        through steps 1-3 (``(1, *size)``), None for a missing channel (its reason goes
        to ``missing_channels_[pid]``). With ``register``, every channel but the
        reference (``register_reference``, or the first channel the patient has when it
        lacks that one) is registered onto the reference's grid; without it, every
        channel must be on the reference's grid already (:meth:`_grid`), else a
        :class:`CohortError` names the patient and both files."""
        names = self.channel_names_
        slots, missing, _ = _slots(cell, labels, names, strict=True)
        if missing:
            self.missing_channels_[pid] = {names[k]: why for k, why in missing.items()}
        else:
            self.missing_channels_.pop(pid, None)
        have = [k for k, p in enumerate(slots) if p]
        if not have:
            listed = ", ".join(names)
            raise ValueError(f"patient {pid!r} is marked present but has none of {listed}")
        r = self._reference_slot()
        r = r if slots[r] else have[0]
        ref = str(slots[r])
        out: list[np.ndarray | None] = [None] * len(names)
        if self._register_mode() is None or len(have) < 2:
            grids = {}
            for k in have:
                out[k], rec = self._load(str(slots[k]))
                grids[k] = list((rec or {}).get("grid", []))
            for k in have:
                if grids[k] != grids[r]:
                    raise CohortError(
                        f"patient {pid!r}: channel {names[k]!r} ({slots[k]}) is on a grid of "
                        f"{'x'.join(map(str, grids[k]))} voxels but the reference channel "
                        f"{names[r]!r} ({ref}) on {'x'.join(map(str, grids[r]))}; channels "
                        "stacked by as_channels must share one grid: set register (rigid or "
                        "affine) to resample them onto the reference's grid, or spacing "
                        "when they only differ in voxel size"
                    )
            if self._register_mode() is not None:
                self.registration_[pid] = []
            return out
        grid: list[Image] = []

        def fixed() -> Image:  # read once per patient, only when a registration runs
            if not grid:
                grid.append(self._reference(ref))
            return grid[0]

        records = []
        for k in have:
            if k == r:
                out[k] = self._load(ref)[0]
                continue
            out[k], rec = self._load(str(slots[k]), ref, fixed)
            rec = {key: v for key, v in (rec or {}).items() if key != "grid"}
            records.append({"image": k, "channel": names[k], "reference_channel": names[r], **rec})
        self.registration_[pid] = records
        return out

    def channel_report(self) -> list[dict[str, Any]]:
        """Missing channels of the patients processed so far (``missing_channels_``),
        counted: ``[{channel, reason, count}]``, most frequent first."""
        counts: dict[tuple[str, str], int] = {}
        for miss in self.missing_channels_.values():
            for ch, why in miss.items():
                counts[(ch, why)] = counts.get((ch, why), 0) + 1
        return [
            {"channel": ch, "reason": why, "count": n}
            for (ch, why), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def channel_importance(self, attributions: np.ndarray) -> dict[str, float]:
        """Share of the absolute attribution (e.g. Integrated Gradients of this
        modality's input, ``(n, *out_shape)``) that falls on each image channel: which
        sequence mattered. Summed over voxels and slots, averaged over the patients that
        have the modality (NaN rows), normalised to sum to 1; the presence channel is
        left out."""
        a = np.asarray(attributions, np.float64)
        a = a.reshape(len(a), *self.out_shape)
        rows = ~np.isnan(a.reshape(len(a), -1)).all(1)
        mag = np.nan_to_num(np.abs(a[rows][:, :, :-1]))
        per = mag.sum(axis=tuple(i for i in range(mag.ndim) if i != 2))
        total = float(per.sum())
        share = per / total if total > 0 else per
        return {ch: float(v) for ch, v in zip(self._image_channels(), share, strict=True)}

    def _init_counters(self) -> None:
        self.cache_hits_ = 0
        self.cache_misses_ = 0
        self.decoded_ = 0
        self.truncated_ = 0
        self.registered_ = 0
        self.registration_: dict[str, list[dict[str, Any]]] = {}
        self.missing_channels_: dict[str, dict[str, str]] = {}
        self._digests: dict[tuple, Any] = {}

    # -- fit / transform ---------------------------------------------------------------
    def fit(self, data: ModalityData) -> ImagePreprocessor:
        self._init_counters()
        mode = self._register_mode()
        rows = [
            (pid, _cell(c, i))
            for i, (pid, c, p) in enumerate(
                zip(_ids_of(data), _paths_of(data), data.present, strict=True)
            )
            if p
        ]
        cells = [c for _, c in rows]
        if not cells:
            raise ValueError("no training patient has an image")
        if self.size is not None:
            self.size_ = [int(s) for s in self.size]
        else:  # the first training image says 2D or 3D
            first = read_image(next(p for c in cells for p in c if not _blank(p)))
            ndim = (to_ras(first) if self.ras else first).array.ndim
            self.size_ = [224, 224] if ndim == 2 else [64, 64, 64]
        if len(self.size_) not in (2, 3):
            raise ValueError(f"size {self.size_}: expected [H, W] or [D, H, W]")
        if self.spacing is not None and not np.isscalar(self.spacing):
            if len(self.spacing) != len(self.size_):
                raise ValueError(f"spacing {self.spacing} needs one value per axis of {self.size_}")
        most = max(len(c) for c in cells)
        if self._channel_mode():
            return self._fit_channels(rows, _labels_of(data, present_only=True), most)
        self.channel_names_ = None
        self.max_images_ = int(self.max_images or min(most, MAX_IMAGES))
        ref = self.register_reference
        if mode is not None and (
            isinstance(ref, bool) or not isinstance(ref, int | np.integer) or not 0 <= ref
        ):
            raise ValueError(f"register_reference: {ref!r}; expected an image index >= 0")
        if mode is not None and ref >= self.max_images_:
            raise ValueError(
                f"register_reference {ref} is not among the {self.max_images_} images kept "
                f"per patient (max_images)"
            )
        s1 = s2 = cnt = 0.0
        for pid, paths in rows:
            for arr in self._patient(pid, paths):
                a = arr.astype(np.float64)
                s1 += a.sum()
                s2 += (a * a).sum()
                cnt += a.size
        mean = s1 / cnt
        sd = float(np.sqrt(max(s2 / cnt - mean**2, 0.0)))
        self.mean_ = np.array([mean], np.float32)
        self.sd_ = np.array([sd if sd > 1e-8 else 1.0], np.float32)
        self.registration_summary_ = _summary(self.registration_) if mode else None
        self.channel_summary_ = None
        self._names()
        return self

    def _fit_channels(
        self, rows: list[tuple[str, list]], labels: list[Any], most: int
    ) -> ImagePreprocessor:
        """``fit`` for ``as_channels``: one slot, the channels named, and the mean / sd
        of each channel over the training patients that have it."""
        names = channel_names(self.as_channels, self.max_images, most)
        self.channel_names_ = list(names or [])
        self.max_images_ = 1
        self._reference_slot()  # checked before anything is read
        k = len(self.channel_names_)
        s1, s2, cnt = np.zeros(k), np.zeros(k), np.zeros(k)
        for (pid, cell), labs in zip(rows, labels, strict=True):
            for c, arr in enumerate(self._channels(pid, cell, labs)):
                if arr is None:
                    continue
                a = arr.astype(np.float64)
                s1[c] += a.sum()
                s2[c] += (a * a).sum()
                cnt[c] += a.size
        empty = [n for n, c in zip(self.channel_names_, cnt, strict=True) if not c]
        if empty:
            raise ValueError(
                f"as_channels: no training patient has an image for channel(s) {empty}"
            )
        mean = s1 / cnt
        sd = np.sqrt(np.maximum(s2 / cnt - mean**2, 0.0))
        self.mean_ = mean.astype(np.float32)
        self.sd_ = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
        mode = self._register_mode()
        self.registration_summary_ = _summary(self.registration_) if mode else None
        self.channel_summary_ = {
            "channels": list(self.channel_names_),
            "patients": len(rows),
            "complete": len(rows) - sum(pid in self.missing_channels_ for pid, _ in rows),
            "missing": self.channel_report(),
        }
        self._names()
        return self

    def _names(self) -> None:
        self.channels_ = (*self._image_channels(), PRESENT)
        self.feature_names_out_ = ElementNames(self.out_shape, self.channels_)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """``(max_images, C + 1, *size)``; with ``as_channels`` ``(1, K + 1, *size)``."""
        return (self.max_images_, len(self._image_channels()) + 1, *self.size_)

    @property
    def out_dim(self) -> int:
        """Channels per image (image channels + the presence channel): what encoders are
        built for."""
        return len(self._image_channels()) + 1

    def transform(self, data: ModalityData) -> np.ndarray:
        """``(n, *out_shape)``; NaN rows for absent patients. With a disk cache and an
        array larger than ``lazy_mb`` MB, a :class:`LazyImages` is returned instead: rows
        are read from the cache per batch, so memory does not grow with the cohort."""
        if not hasattr(self, "cache_hits_"):
            self._init_counters()
        cells = _paths_of(data)
        labels = _labels_of(data) if self._channel_mode() else None
        for i in np.nonzero(data.present)[0]:  # images beyond the set, counted once
            if labels is not None:
                self.truncated_ += len(_slots(cells[i], labels[i], self.channel_names_)[2])
            else:
                self.truncated_ += max(0, len(_cell(cells[i], i)) - self.max_images_)
        size_mb = len(data) * int(np.prod(self.out_shape)) * 4 / 2**20
        if self.cache_dir and self.lazy_mb is not None and size_mb > self.lazy_mb:
            return LazyImages(self, data)  # type: ignore[return-value]
        return self.rows(data, np.arange(len(data)))

    def rows(self, data: ModalityData, idx: np.ndarray) -> np.ndarray:
        """The preprocessed rows ``idx`` of ``data``."""
        if not hasattr(self, "cache_hits_"):
            self._init_counters()
        idx = np.asarray(idx, dtype=int)
        out = np.full((len(idx), *self.out_shape), np.nan, np.float32)
        cells, ids = _paths_of(data), _ids_of(data)
        if self._channel_mode():
            labels = _labels_of(data)
            k = len(self.channel_names_)
            for r, i in enumerate(idx):
                if not data.present[i]:
                    continue
                out[r] = 0.0  # a missing channel stays 0: the training mean
                for j, a in enumerate(self._channels(ids[i], cells[i], labels[i])):
                    if a is not None:
                        out[r, 0, j] = (a[0] - self.mean_[j]) / self.sd_[j]
                out[r, 0, k] = 1.0
            return out
        c = len(CHANNELS)
        for r, i in enumerate(idx):
            if not data.present[i]:
                continue
            out[r] = 0.0
            for k, a in enumerate(self._patient(ids[i], _cell(cells[i], i))):
                out[r, k, :c] = (a - self.mean_[0]) / self.sd_[0]
                out[r, k, c] = 1.0
        return out

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per image: mean, sd and 5/25/50/75/95th percentiles of its (standardised)
        pixels, and a 4x4 (2D) or 2x2x2 (3D) thumbnail of block means; averaged over the
        patient's images; plus the number of images. NaN rows for absent patients.

        With ``as_channels``, the same per channel (``T2:mean``, ``T2:thumb:z0y1x0``) and
        ``T2:present`` (0 for a channel filled in, read as one that is 0 everywhere)."""
        import torch
        import torch.nn.functional as F

        x = np.asarray(x)  # a lazy view is read once, not patient by patient
        n = len(x)
        nd = len(self.size_)
        grid = (4, 4) if nd == 2 else (2, 2, 2)
        names = list(STATS) + [
            "thumb:" + "".join(f"{a}{v}" for a, v in zip("zyx"[-nd:], ix, strict=True))
            for ix in np.ndindex(*grid)
        ]
        pool = F.adaptive_avg_pool2d if nd == 2 else F.adaptive_avg_pool3d
        if self._channel_mode():
            chans = self._image_channels()
            k = len(chans)
            cols = [f"{c}:{s}" for c in chans for s in names] + [f"{c}:present" for c in chans]
            out = np.full((n, len(cols)), np.nan, np.float32)
            rows = ~np.isnan(x.reshape(n, -1)[:, :1]).all(1) if n else np.zeros(0, bool)
            if rows.any():
                imgs = np.ascontiguousarray(x[rows][:, 0, :k], np.float32)  # (r, K, *size)
                flat = imgs.reshape(len(imgs), k, -1)
                stats = np.concatenate(
                    [flat.mean(-1)[..., None], flat.std(-1)[..., None]]
                    + [np.moveaxis(np.percentile(flat, [5, 25, 50, 75, 95], axis=-1), 0, -1)],
                    -1,
                )
                thumb = pool(torch.from_numpy(imgs), grid).reshape(len(imgs), k, -1).numpy()
                feats = np.concatenate([stats, thumb], -1).reshape(len(imgs), -1)
                out[rows] = np.concatenate([feats, (flat != 0).any(-1)], 1)
            return out, cols
        out = np.full((n, len(names) + 1), np.nan, np.float32)
        rows = ~np.isnan(x.reshape(n, -1)[:, :1]).all(1) if n else np.zeros(0, bool)
        for i in np.nonzero(rows)[0]:
            valid = x[i, :, -1].reshape(x.shape[1], -1).max(1) > 0.5
            if not valid.any():
                out[i, -1] = 0
                continue
            imgs = x[i, valid, 0]
            flat = imgs.reshape(len(imgs), -1)
            stats = np.concatenate(
                [flat.mean(1, keepdims=True), flat.std(1, keepdims=True)]
                + [np.percentile(flat, [5, 25, 50, 75, 95], axis=1).T],
                1,
            )
            t = torch.from_numpy(np.ascontiguousarray(imgs))[:, None]
            thumb = pool(t, grid).reshape(len(imgs), -1).numpy()
            out[i, :-1] = np.concatenate([stats, thumb], 1).mean(0)
            out[i, -1] = valid.sum()
        return out, [*names, "n_images"]

    # -- state -----------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "size": self.size,
            "spacing": self.spacing,
            "window": self.window,
            "percentile": self.percentile,
            "zscore": self.zscore,
            "max_images": self.max_images,
            "cache_dir": self.cache_dir,
            "ras": self.ras,
            "register": self.register,
            "register_reference": self.register_reference,
            "lazy_mb": self.lazy_mb,
            "size_": list(self.size_),
            "max_images_": self.max_images_,
            "registration_summary_": getattr(self, "registration_summary_", None),
        }
        if self._channel_mode():  # only when set: states without it read as before
            meta["as_channels"] = (
                list(self.as_channels) if isinstance(self.as_channels, list | tuple) else True
            )
            meta["channel_names_"] = list(self.channel_names_)
            meta["channel_summary_"] = self.channel_summary_
        return meta, {"mean": self.mean_, "sd": self.sd_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        p = cls(
            size=meta["size"],
            spacing=meta["spacing"],
            window=meta["window"],
            percentile=meta["percentile"],
            zscore=meta["zscore"],
            max_images=meta["max_images"],
            cache_dir=meta["cache_dir"],
            ras=meta["ras"],
            register=meta.get("register"),  # bundles saved before registration existed
            register_reference=meta.get("register_reference") or 0,
            as_channels=meta.get("as_channels"),  # states saved before channels existed
            lazy_mb=meta.get("lazy_mb", 1024),
        )
        p.registration_summary_ = meta.get("registration_summary_")
        names = meta.get("channel_names_")
        p.channel_names_ = [str(c) for c in names] if names else None
        p.channel_summary_ = meta.get("channel_summary_")
        p.size_ = [int(s) for s in meta["size_"]]
        p.max_images_ = int(meta["max_images_"])
        p.mean_ = np.asarray(arrays["mean"], np.float32)
        p.sd_ = np.asarray(arrays["sd"], np.float32)
        p._init_counters()
        p._names()
        return p


IMAGE = register_modality(
    ModalityKind(
        "image",
        read=read_images,
        check=check_images,
        preprocessor=ImagePreprocessor,
        default_encoder="cnn2d",
    )
)
