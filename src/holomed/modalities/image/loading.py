"""Steps 1-3 of each image, per patient, through the disk cache: the part of the image
preprocessor that depends on the settings only, not on the fit (:class:`ImageLoader`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from holomed.errors import CohortError
from holomed.io.images import Image, read_image, register_image, resample, to_ras
from holomed.modalities.image.cache import (
    CACHE_VERSION,
    cache_root,
    entry_file,
    entry_key,
    file_sha256,
    read_entry,
    write_entry,
)
from holomed.modalities.image.channels import CHANNELS, channel_slots
from holomed.modalities.image.reading import NONFINITE
from holomed.modalities.image.registration import REGISTER_RECIPE, REGISTER_SEED, register_mode
from holomed.modalities.image.steps import fit_geometry, scale_intensity, voxel_grid


class ImageLoader:
    """A patient's images through steps 1-3 (read and turned to RAS, registered, scaled,
    put on the output grid), from the disk cache when it has them; with ``as_channels``
    placed in the channel slots. Mixed into
    :class:`~holomed.modalities.image.preprocessor.ImagePreprocessor`, whose settings
    (``size_``, ``spacing``, ``window``, ``percentile``, ``zscore``, ``ras``,
    ``register``, ``register_reference``, ``as_channels``, ``cache_dir``) and fitted
    ``max_images_`` / ``channel_names_`` it reads; it keeps the counters and records
    (``cache_hits_``, ``registration_``, ``missing_channels_``, ...) that
    :meth:`_init_counters` sets."""

    def _register_mode(self) -> str | None:
        return register_mode(self.register)

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
        the record also holds the image's ``grid`` (see
        :func:`~holomed.modalities.image.steps.voxel_grid`)."""
        img = self._read(path)
        record = None
        if fixed is not None:
            img, record = register_image(
                fixed(), img, self._register_mode() or "rigid", seed=REGISTER_SEED
            )
            self.registered_ += 1
        if self._channel_mode():
            record = {**(record or {}), "grid": voxel_grid(img, self.spacing)}
        self.decoded_ += 1
        if not np.isfinite(img.array).all():  # the check refuses these (NIfTI); never silent
            raise CohortError(
                f"{path}: {NONFINITE}; leave the file out of the table or fix its pixels"
            )
        a = scale_intensity(img.array.astype(np.float32), self.window, self.zscore, self.percentile)
        return fit_geometry(img, a, self.size_, self.spacing)[None].astype(np.float32), record

    def _hasher(self, path: str) -> str:
        """sha256 of the file's bytes (a folder: its files' names and bytes), remembered
        per (path, size, modification time) - of every file, for a folder, so a slice
        rewritten in place is seen."""
        return file_sha256(path, self._digests)

    def _digest(self, path: str, reference: str | None = None) -> str:
        """Cache key: the file's bytes + the settings (+ the reference's bytes for an
        image registered to it)."""
        return entry_key(
            self._hasher(path),
            self._settings(),
            None if reference is None else self._hasher(reference),
        )

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
        root = cache_root(self.cache_dir)
        f = entry_file(root, key)
        if f.exists():
            try:
                arr, record = read_entry(f, reference is not None or self._channel_mode())
                if reference is not None:
                    record.update(moving=str(path), reference=str(reference))
                self.cache_hits_ += 1
                return arr, record
            except (OSError, ValueError):
                pass  # a damaged cache entry (or a missing record) is rebuilt
        self.cache_misses_ += 1
        arr, record = self._decode(path, fixed)
        try:
            write_entry(f, arr, record)
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
        channel must be on the reference's grid already
        (:func:`~holomed.modalities.image.steps.voxel_grid`), else a :class:`CohortError`
        names the patient and both files."""
        names = self.channel_names_
        slots, missing, _ = channel_slots(cell, labels, names, strict=True)
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

    def _init_counters(self) -> None:
        self.cache_hits_ = 0
        self.cache_misses_ = 0
        self.decoded_ = 0
        self.truncated_ = 0
        self.registered_ = 0
        self.registration_: dict[str, list[dict[str, Any]]] = {}
        self.missing_channels_: dict[str, dict[str, str]] = {}
        self._digests: dict[tuple, Any] = {}
