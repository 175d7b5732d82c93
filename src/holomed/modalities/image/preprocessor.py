"""The image kind's preprocessor: :class:`ImagePreprocessor` (fit on the training
patients, transform any), and :class:`LazyImages`, its output read from the disk cache
batch by batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.io.images import read_image, to_ras
from holomed.modalities.base import LazyRows, ModalityData, Preprocessor
from holomed.modalities.image.channels import (
    CHANNELS,
    MAX_IMAGES,
    PRESENT,
    ElementNames,
    channel_names,
    channel_slots,
)
from holomed.modalities.image.features import flat_image_features
from holomed.modalities.image.loading import ImageLoader
from holomed.modalities.image.reading import blank
from holomed.modalities.image.registration import registration_summary


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


class LazyImages(LazyRows):
    """A patient-by-patient view of :meth:`ImagePreprocessor.transform`: rows are read
    from the disk cache when a batch asks for them."""

    def __init__(self, pre: ImagePreprocessor, data: ModalityData) -> None:
        super().__init__(len(data), pre.out_shape)
        self.pre, self.data = pre, data

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.pre.rows(self.data, idx)


class ImagePreprocessor(ImageLoader, Preprocessor):
    """Read, orient, scale intensities, resample/resize, cache; standardise with the
    training pixels' statistics. See :mod:`holomed.modalities.image` for the
    options."""

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
            first = read_image(next(p for c in cells for p in c if not blank(p)))
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
        self.registration_summary_ = registration_summary(self.registration_) if mode else None
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
        self.registration_summary_ = registration_summary(self.registration_) if mode else None
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
                self.truncated_ += len(channel_slots(cells[i], labels[i], self.channel_names_)[2])
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
        chans = self._image_channels() if self._channel_mode() else None
        return flat_image_features(x, len(self.size_), chans)

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
