"""Channels of one image (``as_channels``) and the names of every output element:
which names the channels get (:func:`channel_names`), which of a patient's images fills
which channel slot (:func:`channel_slots`), and the element names ``img0:T2:z3:y7:x1``
(:class:`ElementNames`) that attributions are read by."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from holomed.modalities.image.reading import blank

CHANNELS = ("gray",)
PRESENT = "image_present"
MAX_IMAGES = 16

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


def channel_slots(
    cell: Any, labels: Any, names: list[str] | None, strict: bool = False
) -> tuple[list[str | None], dict[int, str], list[tuple[str, str]]]:
    """A patient's images placed in the channel slots: ``(slots, missing, left_out)``.

    Without ``labels`` by position (the k-th listed image is channel k; a blank entry
    keeps its slot empty; with ``names`` unknown, as many slots as images); with
    ``labels`` (each image's channel name) by name. ``missing`` gives the reason of each
    empty slot (:data:`NO_IMAGE` or :data:`UNUSABLE`); ``left_out`` lists ``(path,
    reason)`` of images no slot takes (beyond the channels, an unknown or repeated
    name). ``strict``: an unknown or repeated name is a ``ValueError`` instead."""
    paths = [None if blank(p) else str(p) for p in _listed(cell)]
    if labels is None or (not isinstance(labels, list | tuple | np.ndarray) and blank(labels)):
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
        lab = None if blank(lab) else str(lab).strip()
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
