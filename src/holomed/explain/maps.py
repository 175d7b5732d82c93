"""Attribution maps for modalities with a spatial or temporal layout: occlusion (captum)
over signals ``(L, C)`` and images ``(M, C+1, H, W)`` / ``(M, C+1, D, H, W)``, drawn as
PNG files for a few patients (signal traces with the attribution shaded behind them,
image saliency overlays). Other kinds are explained by Integrated Gradients over their
named features (:mod:`holomed.explain.features`).

Occlusion windows are coarse on purpose: 1/50 of the record per channel for signals,
1/8 of each side of the first image's intensity channels (1/4 for volumes; only the
first image of a set is occluded, as only it is drawn). The
presence channel of an image set is never occluded, so "image absent" is not what is
measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from holomed.explain.drawing import image_saliency_plot, signal_attribution_plot
from holomed.explain.features import modality_forward, model_inputs, occlusion

MAP_KINDS = ("signal", "image")


def _window(kind: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window, stride) for captum's Occlusion over one patient's input ``shape``."""
    if kind == "signal":
        w = (max(1, shape[0] // 50), 1)
        return w, w
    spatial = shape[2:]
    g = 8 if len(spatial) == 2 else 4
    w = (1, 1, *[max(1, s // g) for s in spatial])
    return w, w


def attribution_maps(
    model: Any,
    cohort: Any,
    out_dir: Path | str,
    n_patients: int = 2,
    prefix: str = "attribution",
) -> list[dict[str, Any]]:
    """Occlusion maps of every signal and image modality for the first ``n_patients``
    patients that have it; writes ``out_dir/<prefix>_<modality>_<k>.png`` and returns
    ``[{modality, kind, patient, file, method, window}]`` (``file`` relative to
    ``out_dir``). Modalities of other kinds are skipped; nothing is written for them."""
    out_dir = Path(out_dir)
    kinds = {m.name: m.kind for m in model.modality_specs()}
    records: list[dict[str, Any]] = []
    for name, kind in kinds.items():
        if kind not in MAP_KINDS or name not in cohort.modalities:
            continue
        dims = len(model.preprocessors_[name].out_shape)
        if (kind == "signal" and dims != 2) or (kind == "image" and dims < 4):
            continue  # a vector (e.g. a signal's rhythm features): explained by features
        rows = np.flatnonzero(cohort.modalities[name].present)[:n_patients]
        if len(rows) == 0:
            continue
        sub = cohort.subset(rows)
        inputs = model_inputs(model, sub)  # preprocessed once, for the occlusion and the plot
        x = inputs[2]
        shape = tuple(x[name].shape[1:])
        window, stride = _window(kind, shape)
        if kind == "image":  # the presence channel (last) is not occluded
            a = _image_occlusion(model, inputs, name, window)
        else:
            a = occlusion(model, sub, name, window, stride, inputs=inputs)
        pre = model.preprocessors_[name]
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(range(len(rows))):
            pid = str(sub.ids[i])
            path = out_dir / f"{prefix}_{name}_{k}.png"
            title = f"{name}: occlusion attribution, patient {pid}"
            if kind == "signal":
                signal_attribution_plot(
                    x[name][i],
                    a[i],
                    list(pre.feature_names_out_),
                    path,
                    fs=getattr(pre, "fs_", None),
                    title=title,
                )
            else:
                img, att = x[name][i][0, 0], a[i][0, 0]
                if img.ndim == 3:  # a volume: its middle slice along the first axis
                    mid = img.shape[0] // 2
                    img, att = img[mid], att[mid]
                    title += f" (slice {mid})"
                image_saliency_plot(img, att, path, title=title)
            records.append(
                {
                    "modality": name,
                    "kind": kind,
                    "patient": pid,
                    "file": path.name,
                    "method": "occlusion (captum)",
                    "window": list(window),
                }
            )
    return records


def _image_occlusion(
    model: Any, inputs: tuple[dict, dict, dict], name: str, window: tuple[int, ...]
) -> np.ndarray:
    """Occlusion of the first image's intensity channels (the one drawn): the presence
    channel and the other slots of the set are put back in every perturbed copy.
    Returns ``(n, 1, C, ...)``."""
    import torch
    from captum.attr import Occlusion

    xt, pt, _ = inputs
    full = xt[name]
    presence, others = full[:, :1, -1:], full[:, 1:]
    fwd = modality_forward(model, xt, pt, name, None)

    def tile(t: torch.Tensor, k: int) -> torch.Tensor:
        return t.repeat(k, *([1] * (t.dim() - 1)))

    def forward(intensity: torch.Tensor) -> torch.Tensor:
        k = intensity.shape[0] // full.shape[0]
        first = torch.cat([intensity, tile(presence, k)], 2)
        return fwd(torch.cat([first, tile(others, k)], 1))

    occ = Occlusion(forward)
    with torch.no_grad():
        attr = occ.attribute(
            full[:, :1, :-1].contiguous(),
            sliding_window_shapes=window,
            strides=window,
            baselines=0.0,
            perturbations_per_eval=8,
        )
    a = attr.numpy().astype(float)
    a[~pt[name].numpy()] = np.nan
    return a
