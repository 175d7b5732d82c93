"""Plots rendered from results JSON only (never recomputed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUP_COLOURS = {
    "fusion": "#1f77b4",
    "single": "#2ca02c",
    "without": "#9467bd",
    "baseline": "#7f7f7f",
    "classical": "#555555",
    "stacking": "#17becf",
    "ensemble": "#d62728",
    "selected": "#000000",
}


def leaderboard_plot(results: dict[str, Any], path: Path, metric: str | None = None) -> Path:
    metric = metric or results["selection_metric"]
    names = results["leaderboard"]
    ent = results["strategies"]
    means = [ent[n]["metrics"][metric]["mean"] for n in names]
    lo = [m - ent[n]["metrics"][metric]["ci"][0] for n, m in zip(names, means, strict=True)]
    hi = [ent[n]["metrics"][metric]["ci"][1] - m for n, m in zip(names, means, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    colours = [GROUP_COLOURS.get(ent[n]["group"], "k") for n in names]
    ax.barh(range(len(names)), means, xerr=[lo, hi], color=colours, capsize=3)
    ax.set_yticks(
        range(len(names)), [n + (" *" if n == results["selected"] else "") for n in names]
    )
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (mean over {len(results['seeds'])} seeds, 95% bootstrap CI)")
    title = f"{results['dataset']}: {metric}" + (
        "  [SYNTHETIC DATA]" if results.get("synthetic") else ""
    )
    ax.set_title(title + "   (* selected by CV on train)", fontsize=9)
    lo_x = min(m - e for m, e in zip(means, lo, strict=True))
    ax.set_xlim(max(0.0, lo_x - 0.05), None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def robustness_plot(curve: dict[str, Any], path: Path, metric: str | None = None) -> Path:
    metric = metric or curve["metrics"][0]
    scen = curve["scenarios"]
    fig, axes = plt.subplots(
        1, len(scen), figsize=(3.2 * len(scen), 3.2), sharey=True, squeeze=False
    )
    rates = [100 * r for r in curve["rates"]]
    for ax, sc in zip(axes[0], scen, strict=True):
        for name, d in curve["curves"].items():
            style = "--" if name.startswith("baseline") else "-"
            ax.plot(rates, d[sc][metric]["mean"], style, marker="o", ms=3, label=name)
        ax.set_title(f"missing: {sc}", fontsize=9)
        ax.set_xlabel("% of test patients")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"{curve['dataset']}: missing-modality robustness", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    import numpy as np

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
    import numpy as np

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
