"""``image``: 2D images (X-ray, PNG/JPEG/DICOM) or 3D volumes (CT/MR, NIfTI or DICOM
series), several per patient (views, sequences, follow-ups) treated as a set.

The modality's frame is indexed by patient id with a column ``paths``: the list of a
patient's image files (a DICOM series is a folder). From files, ``read`` takes a table
with an id column and a path column (``options.path_column``, default ``path``); a
patient may have several rows (one per image); relative paths resolve against the
table's folder, then the spec's.

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

Steps 1-3 depend on the settings only, not on the fit: their result is cached on disk
(``cache_dir``; key = sha256 of the file's bytes + the settings, which include
``register`` / ``register_reference`` when set, + for a registered image the
reference's bytes), so a second transform decodes nothing; a registered image's record
is cached next to its array. ``cache_hits_`` / ``cache_misses_`` count lookups;
``decoded_`` counts images decoded.

Output ``(n, max_images, C + 1, H, W)`` (or ``(..., D, H, W)``) float32: ``C`` image
channels (``gray``) and a presence channel (``image_present``: 1 on a real image, 0 on a
padding slot, whose pixels are 0 too). A patient's first ``max_images`` images are kept
(default: the most any training patient has, at most 16; ``truncated_`` counts the
images left out). Rows of absent patients are NaN. ``feature_names_out_`` names every
element (``img0:gray:y12:x40``) so attributions can be read per pixel; ``out_dim`` (what
encoders are built for) is the channel count ``C + 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.images import (
    REGISTRATIONS,
    Image,
    image_format,
    read_image,
    register_image,
    resample,
    to_ras,
)
from holomed.modalities.base import ModalityData, ModalityKind, Preprocessor, register_modality

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
    in the tables' row order). Several rows per patient are several images."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    idc = mspec.id_column or "id"
    pcol = mspec.options.get("path_column", "path")
    rows: list[tuple[str, str | None]] = []
    for s in mspec.source:
        path = spec.resolve(s)
        if not path.exists():
            raise CohortError(f"{path}: table of modality {mspec.name!r} not found")
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            df = pd.read_csv(path, sep=sep, dtype={idc: str})
        miss = [c for c in (idc, pcol) if c not in df.columns]
        if miss:
            raise CohortError(
                f"{path}: modality {mspec.name!r}: columns {miss} not found; columns are "
                f"{list(df.columns)[:10]} (set id_column / options.path_column)"
            )
        ids = df[idc].astype(str).str.strip()
        rows += [(i, _resolve(v, path.parent, spec)) for i, v in zip(ids, df[pcol], strict=True)]
    out: dict[str, list] = {}
    for pid, p in rows:
        out.setdefault(pid, []).append(p)
    return pd.DataFrame({"paths": list(out.values())}, index=pd.Index(list(out), name="id"))


def probe(path: str | Path) -> str | None:
    """Why the file cannot be used (not found, unreadable header), or None; pixels are
    not decoded (PNG/JPEG get PIL's integrity check)."""
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

            nib.load(str(p))
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
    name = mspec.name
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
        else:
            problems.append({"id": pid, "modality": name, "reason": f"no usable image in {where}"})
    out = pd.DataFrame({"paths": keep_paths}, index=pd.Index(keep_ids, name="id"))
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
        register_reference: int = 0,
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
            out["register_reference"] = int(self.register_reference)
            out["register_recipe"] = REGISTER_RECIPE
        return out

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
        its record returned) when ``fixed`` gives the reference."""
        img = self._read(path)
        record = None
        if fixed is not None:
            img, record = register_image(
                fixed(), img, self._register_mode() or "rigid", seed=REGISTER_SEED
            )
            self.registered_ += 1
        self.decoded_ += 1
        a = self._intensity(img.array.astype(np.float32))
        return self._geometry(img, a)[None].astype(np.float32), record

    def _hasher(self, path: str):
        """sha256 of the file's bytes (a folder: its files' names and bytes), remembered
        per (path, size, modification time)."""
        p = Path(path)
        st = p.stat()
        stamp = (str(p), st.st_size, st.st_mtime_ns)
        hit = self._digests.get(stamp)
        if hit is not None:
            return hit
        h = hashlib.sha256()
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode() if p.is_dir() else b"")
            with open(f, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
        self._digests[stamp] = h
        return h

    def _digest(self, path: str, reference: str | None = None) -> str:
        """Cache key: the file's bytes + the settings (+ the reference's bytes for an
        image registered to it)."""
        h = self._hasher(path).copy()
        h.update(json.dumps(self._settings(), sort_keys=True).encode())
        if reference is not None:
            h.update(b"registered to " + self._hasher(reference).hexdigest().encode())
        return h.hexdigest()

    def _load(
        self,
        path: str,
        reference: str | None = None,
        fixed: Callable[[], Image] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Steps 1-3 of one image, from the cache when it has them. An image registered
        to ``reference`` (whose grid ``fixed`` gives) keeps its registration record next
        to its array (``<key>.json``)."""
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
                if reference is not None:
                    record = json.loads(side.read_text())
                    record.update(moving=str(path), reference=str(reference), cached=True)
                self.cache_hits_ += 1
                return arr, record
            except (OSError, ValueError):
                pass  # a damaged cache entry (or a missing record) is rebuilt
        self.cache_misses_ += 1
        arr, record = self._decode(path, fixed)
        f.parent.mkdir(parents=True, exist_ok=True)
        if record is not None:
            tmp = side.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, side)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, f)
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

    def _init_counters(self) -> None:
        self.cache_hits_ = 0
        self.cache_misses_ = 0
        self.decoded_ = 0
        self.truncated_ = 0
        self.registered_ = 0
        self.registration_: dict[str, list[dict[str, Any]]] = {}
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
            first = read_image(cells[0][0])
            ndim = (to_ras(first) if self.ras else first).array.ndim
            self.size_ = [224, 224] if ndim == 2 else [64, 64, 64]
        if len(self.size_) not in (2, 3):
            raise ValueError(f"size {self.size_}: expected [H, W] or [D, H, W]")
        if self.spacing is not None and not np.isscalar(self.spacing):
            if len(self.spacing) != len(self.size_):
                raise ValueError(f"spacing {self.spacing} needs one value per axis of {self.size_}")
        most = max(len(c) for c in cells)
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
        self._names()
        return self

    def _names(self) -> None:
        self.channels_ = (*CHANNELS, PRESENT)
        self.feature_names_out_ = ElementNames(self.out_shape, self.channels_)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.max_images_, len(CHANNELS) + 1, *self.size_)

    @property
    def out_dim(self) -> int:
        """Channels per image (image channels + the presence channel): what encoders are
        built for."""
        return len(CHANNELS) + 1

    def transform(self, data: ModalityData) -> np.ndarray:
        if not hasattr(self, "cache_hits_"):
            self._init_counters()
        n, m, c = len(data), self.max_images_, len(CHANNELS)
        out = np.full((n, *self.out_shape), np.nan, np.float32)
        cells, ids = _paths_of(data), _ids_of(data)
        for i in np.nonzero(data.present)[0]:
            paths = _cell(cells[i], i)
            out[i] = 0.0
            self.truncated_ += max(0, len(paths) - m)
            for k, a in enumerate(self._patient(ids[i], paths)):
                out[i, k, :c] = (a - self.mean_[0]) / self.sd_[0]
                out[i, k, c] = 1.0
        return out

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per image: mean, sd and 5/25/50/75/95th percentiles of its (standardised)
        pixels, and a 4x4 (2D) or 2x2x2 (3D) thumbnail of block means; averaged over the
        patient's images; plus the number of images. NaN rows for absent patients."""
        import torch
        import torch.nn.functional as F

        n = len(x)
        nd = len(self.size_)
        grid = (4, 4) if nd == 2 else (2, 2, 2)
        names = list(STATS) + [
            "thumb:" + "".join(f"{a}{v}" for a, v in zip("zyx"[-nd:], ix, strict=True))
            for ix in np.ndindex(*grid)
        ]
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
            pool = F.adaptive_avg_pool2d if nd == 2 else F.adaptive_avg_pool3d
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
            "size_": list(self.size_),
            "max_images_": self.max_images_,
            "registration_summary_": getattr(self, "registration_summary_", None),
        }
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
        )
        p.registration_summary_ = meta.get("registration_summary_")
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
