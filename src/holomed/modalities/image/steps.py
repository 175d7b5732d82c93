"""Steps 2 and 3 of one image, functions of the settings only (see the kind's
docstring): intensities scaled (:func:`scale_intensity`), the image put on the output
grid (:func:`fit_geometry`), and the voxel grid an image is on before step 3
(:func:`voxel_grid`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from holomed.io.images import Image, resample, resampled_shape


def voxel_grid(img: Image, spacing: float | Sequence[float] | None) -> list[int]:
    """The voxel grid an image is on before step 3: its shape, or with ``spacing`` (mm)
    the shape it is resampled to."""
    if spacing is None:
        return [int(s) for s in img.array.shape]
    return list(resampled_shape(img, spacing))


def scale_intensity(
    a: np.ndarray,
    window: Sequence[float] | None,
    zscore: bool,
    percentile: Sequence[float] | None,
) -> np.ndarray:
    """Step 2: ``window: [lo, hi]`` clipped and scaled to [0, 1]; or ``zscore`` (per
    image); or ``percentile: [p_lo, p_hi]`` (default ``[0.5, 99.5]``) clipped and scaled
    to [0, 1] (a constant image gives 0)."""
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if hi <= lo:
            raise ValueError(f"window {window}: high must exceed low")
        return (np.clip(a, lo, hi) - lo) / (hi - lo)
    if zscore:
        sd = float(a.std())
        return (a - float(a.mean())) / (sd if sd > 1e-8 else 1.0)
    p = percentile if percentile is not None else (0.5, 99.5)
    lo, hi = np.percentile(a, [float(p[0]), float(p[1])])
    if hi - lo < 1e-8:
        return np.zeros_like(a)
    return (np.clip(a, lo, hi) - lo) / (hi - lo)


def fit_geometry(
    img: Image,
    a: np.ndarray,
    size: Sequence[int],
    spacing: float | Sequence[float] | None,
) -> np.ndarray:
    """Step 3: ``a`` (the intensities of ``img``) on the output grid ``size``. With
    ``spacing`` (mm) resampled with its physical extent kept, then centre-cropped /
    zero-padded to ``size``; without it resized to ``size`` (bilinear / trilinear,
    antialiased in 2D). Float32 of shape ``size``."""
    import torch
    import torch.nn.functional as F

    size = tuple(size)
    if spacing is not None:
        a = resample(Image(a, img.spacing, img.affine, img.source), spacing).array
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
