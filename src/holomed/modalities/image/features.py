"""Flat features of preprocessed images (what the classical candidates read): summary
statistics and a coarse thumbnail per image, or per channel with ``as_channels``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STATS = ("mean", "sd", "p05", "p25", "p50", "p75", "p95")


def flat_image_features(
    x: np.ndarray, nd: int, channels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Flat features of ``x`` (``(n, M, C + 1, *size)``, ``nd`` spatial axes: 2 or 3). Per
    image: mean, sd and 5/25/50/75/95th percentiles of its (standardised) pixels, and a
    4x4 (2D) or 2x2x2 (3D) thumbnail of block means; averaged over the patient's images;
    plus the number of images. NaN rows for absent patients.

    With ``channels`` (the ``as_channels`` names, ``x`` of shape ``(n, 1, K + 1,
    *size)``), the same per channel (``T2:mean``, ``T2:thumb:z0y1x0``) and ``T2:present``
    (0 for a channel filled in, read as one that is 0 everywhere)."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(x)  # a lazy view is read once, not patient by patient
    n = len(x)
    grid = (4, 4) if nd == 2 else (2, 2, 2)
    names = list(STATS) + [
        "thumb:" + "".join(f"{a}{v}" for a, v in zip("zyx"[-nd:], ix, strict=True))
        for ix in np.ndindex(*grid)
    ]
    pool = F.adaptive_avg_pool2d if nd == 2 else F.adaptive_avg_pool3d
    if channels is not None:
        chans = tuple(channels)
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
