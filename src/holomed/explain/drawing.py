"""Drawings of attribution maps as PNG files: a multichannel signal with its attribution
shaded behind each trace, and an image with its saliency overlaid (used by
:mod:`holomed.explain.maps`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def signal_attribution_plot(
    signal: Any,
    attribution: Any,
    channels: list[str],
    path: Path,
    fs: float | None = None,
    title: str = "",
    max_channels: int = 12,
) -> Path:
    """One patient's multichannel signal ``(L, C)`` with its attribution ``(L, C)``
    shaded behind each trace (red raises the score, blue lowers it)."""
    x, a = np.asarray(signal, float), np.asarray(attribution, float)
    if x.shape != a.shape or x.ndim != 2:
        raise ValueError(f"signal {x.shape} and attribution {a.shape} must both be (L, C)")
    c = min(x.shape[1], max_channels)
    t = np.arange(x.shape[0]) / (fs or 1.0)
    lim = float(np.nanmax(np.abs(a[:, :c]))) or 1.0
    fig, axes = plt.subplots(c, 1, figsize=(9, 0.8 * c + 1), sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        lo, hi = float(np.nanmin(x[:, j])), float(np.nanmax(x[:, j]))
        pad = 0.05 * (hi - lo or 1.0)
        ax.imshow(
            a[None, :, j],
            aspect="auto",
            cmap="coolwarm",
            vmin=-lim,
            vmax=lim,
            extent=(t[0], t[-1], lo - pad, hi + pad),
            alpha=0.6,
        )
        ax.plot(t, x[:, j], color="k", lw=0.6)
        ax.set_ylabel(channels[j], rotation=0, ha="right", fontsize=7)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("seconds" if fs else "samples")
    fig.suptitle(title or "attribution over time (red raises the score)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_saliency_plot(image: Any, attribution: Any, path: Path, title: str = "") -> Path:
    """A 2-D image with its attribution (same H x W) overlaid: |attribution| as a heat
    map over the grey image, beside the image alone."""
    img, a = np.asarray(image, float), np.asarray(attribution, float)
    if img.shape != a.shape or img.ndim != 2:
        raise ValueError(f"image {img.shape} and attribution {a.shape} must both be (H, W)")
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax in axes:
        ax.imshow(img, cmap="gray")
        ax.axis("off")
    mag = np.abs(a)
    axes[1].imshow(mag, cmap="inferno", alpha=0.55, vmin=0, vmax=float(mag.max()) or 1.0)
    axes[0].set_title("image", fontsize=9)
    axes[1].set_title(title or "saliency (|attribution|)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
