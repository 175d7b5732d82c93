"""Plots rendered from results JSON only (never recomputed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from holomed.scoring.metrics import CHANCE  # noqa: E402

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


# the score of a model that ranks at random, for metrics where it is fixed


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
    k = len(results["seeds"])
    ax.set_xlabel(f"{metric} ({f'mean over {k} seeds' if k > 1 else 'one seed'}, 95% bootstrap CI)")
    title = f"{results['dataset']}: {metric}" + (
        "  [SYNTHETIC DATA]" if results.get("synthetic") else ""
    )
    ax.set_title(title + "   (* selected by CV on train)", fontsize=9)
    lo_x = min(m - e for m, e in zip(means, lo, strict=True))
    ax.set_xlim(max(0.0, lo_x - 0.05), None)
    if metric in CHANCE and ax.get_xlim()[0] <= CHANCE[metric]:  # the axis does not start at 0
        ax.axvline(CHANCE[metric], color="grey", ls=":", lw=1)
        ax.text(CHANCE[metric], -0.6, " chance", color="grey", fontsize=7, va="bottom")
    groups = list(dict.fromkeys(ent[n]["group"] for n in names))
    ax.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS.get(g, "k")) for g in groups],
        labels=groups, fontsize=7, loc="lower right",
    )  # fmt: skip
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
        random = sc == "random"
        ax.set_xlabel("% chance each is removed" if random else "% of test patients losing it")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    tag = "  [SYNTHETIC DATA]" if curve.get("synthetic") else ""
    fig.suptitle(f"{curve['dataset']}: missing-modality robustness{tag}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
