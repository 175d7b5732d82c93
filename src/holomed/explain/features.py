"""Feature attributions inside each modality, named by the modality's own features
(gene ids, CpG probes, lab names ...).

Neural models: Integrated Gradients (captum) on each modality's preprocessed input,
baseline 0 (the training mean after scaling), other modalities held as they are.
Absent modalities get no attribution. A preprocessor whose output is not a continuous
input (``differentiable = False``, e.g. text token ids) is attributed at its encoder's
``attribution_layer`` instead (captum's LayerIntegratedGradients, baseline
``encoder.attribution_baseline(x)``, reduced to one value per feature name by
``encoder.reduce_attribution``), a few patients at a time; an encoder without these
leaves that modality's attributions NaN, with a warning. Classical baselines: SHAP's
linear or tree explainers. A deletion curve checks faithfulness on real data: the metric as the
globally top-attributed features are reset to their baseline, against a random order.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from holomed.modalities.base import rows_mask
from holomed.scoring.metrics import compute_metrics


def _score_logit(out: torch.Tensor, target: int | None) -> torch.Tensor:
    return out[:, 0] if out.shape[1] == 1 else out[:, target or 0]


def model_inputs(model: Any, cohort: Any) -> tuple[dict, dict, dict]:
    """Preprocessed inputs (absent rows zeroed) as tensors, presence masks, raw arrays."""
    x, present = model.transform(cohort)
    xt = {
        k: torch.as_tensor(np.where(rows_mask(present[k], v.ndim), v, 0.0), dtype=torch.float32)
        for k, v in x.items()
    }
    return xt, {k: torch.as_tensor(v) for k, v in present.items()}, x


def modality_forward(model: Any, xt: dict, pt: dict, name: str, target: int | None):
    """The score as a function of one modality's input, others held as they are; captum
    stacks perturbed copies along the batch axis, so the rest is repeated to match.
    Without a ``target``: binary = the positive logit, multilabel = the mean logit,
    multiclass = each patient's predicted class (as modality Shapley uses)."""
    net = model.net_.eval()
    multilabel = model.task_.name == "multilabel"
    n = len(next(iter(pt.values())))
    pred = None
    if target is None and model.task_.name == "multiclass":
        with torch.no_grad():
            pred = net(xt, pt).argmax(1)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        k = inp.shape[0] // n
        xs = {m: (inp if m == name else v.repeat(k, *([1] * (v.dim() - 1)))) for m, v in xt.items()}
        ps = {m: v.repeat(k) for m, v in pt.items()}
        logits = net(xs, ps)
        if pred is not None:
            return logits.gather(1, pred.repeat(k)[:, None])[:, 0]
        return logits.mean(1) if multilabel and target is None else _score_logit(logits, target)

    return forward


def occlusion(
    model: Any,
    cohort: Any,
    modality: str,
    window: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
    target: int | None = None,
    perturbations_per_eval: int = 8,
    inputs: tuple[dict, dict, dict] | None = None,
) -> np.ndarray:
    """Occlusion (captum): per input element, the mean drop of the score when a sliding
    ``window`` of the modality's preprocessed input that covers it is reset to 0 (the
    training mean after scaling). ``window``/``stride`` follow the per-patient shape, e.g.
    ``(50, 1)`` = 0.1 s of one lead of a 500-Hz ECG, ``(1, 8, 8)`` = an 8x8 image patch.
    ``inputs``: the cohort's :func:`model_inputs`, when the caller has them already.
    Returns ``(n, *shape)``; rows of absent patients are NaN."""
    from captum.attr import Occlusion

    xt, pt, x = inputs if inputs is not None else model_inputs(model, cohort)
    if modality not in xt:
        raise ValueError(f"unknown modality {modality!r}; the model has {sorted(xt)}")
    shape = tuple(xt[modality].shape[1:])
    if len(window) != len(shape):
        raise ValueError(f"window {window} must have one size per input axis {shape}")
    stride = stride or window
    occ = Occlusion(modality_forward(model, xt, pt, modality, target))
    with torch.no_grad():
        attr = occ.attribute(
            xt[modality],
            sliding_window_shapes=tuple(window),
            strides=tuple(stride),
            baselines=0.0,
            perturbations_per_eval=perturbations_per_eval,
        )
    a = attr.numpy().astype(float)
    a[~pt[modality].numpy()] = np.nan
    return a


def integrated_gradients(
    model: Any, cohort: Any, n_steps: int = 32, target: int | None = None
) -> dict[str, np.ndarray]:
    """{modality: (n, p) attributions}; rows of absent patients are NaN."""
    from captum.attr import IntegratedGradients

    xt, pt, x = model_inputs(model, cohort)
    present = {k: v.numpy() for k, v in pt.items()}
    n = len(next(iter(present.values())))
    # a transformer inside the model (token text) re-runs for every step: one step per
    # pass keeps memory at one forward over the cohort instead of n_steps of them
    heavy = any(not getattr(p, "differentiable", True) for p in model.preprocessors_.values())
    out: dict[str, np.ndarray] = {}
    for name in xt:
        pre = model.preprocessors_[name]
        if not present[name].any():  # the same shape as when someone has it
            differentiable = getattr(pre, "differentiable", True)
            shape = x[name].shape if differentiable else (n, len(pre.feature_names_out_))
            out[name] = np.full(shape, np.nan)
            continue
        if not getattr(pre, "differentiable", True):
            out[name] = _layer_integrated_gradients(model, xt, pt, name, n_steps, target)
            continue
        forward = modality_forward(model, xt, pt, name, target)
        ig = IntegratedGradients(forward)
        with torch.enable_grad():
            attr = ig.attribute(
                xt[name],
                baselines=torch.zeros_like(xt[name]),
                n_steps=n_steps,
                internal_batch_size=max(n, 1) if heavy else None,
            )
        a = attr.detach().numpy().astype(float)
        a[~present[name]] = np.nan
        out[name] = a
    return out


# input elements per pass of layer attributions (patients x steps x per-patient input):
# bounds the memory of one pass's graph, e.g. 4 patients x 8 chunks x 256 tokens x 1 step
LAYER_BLOCK = 2**14


def _layer_integrated_gradients(
    model: Any, xt: dict, pt: dict, name: str, n_steps: int, target: int | None
) -> np.ndarray:
    """(n, len(feature names)) attributions of a non-differentiable input, through its
    encoder's ``attribution_layer``; NaN for absent patients (see the module doc)."""
    pre = model.preprocessors_[name]
    n = len(pt[name])
    enc = model.net_.encoders[name]
    layer = getattr(enc, "attribution_layer", None)
    if layer is None or not hasattr(enc, "reduce_attribution"):
        warnings.warn(
            f"modality {name!r}: no feature attributions; its input is not differentiable "
            f"and its encoder ({type(enc).__name__}) declares no attribution_layer",
            stacklevel=3,
        )
        return np.full((n, len(pre.feature_names_out_)), np.nan)
    from captum.attr import LayerIntegratedGradients

    rows_all = np.flatnonzero(pt[name].numpy())
    per_row = int(np.prod(xt[name].shape[1:]))
    block = max(1, LAYER_BLOCK // per_row)
    out: np.ndarray | None = None
    for s in range(0, len(rows_all), block):
        rows = rows_all[s : s + block]
        r = torch.as_tensor(rows)
        xb = {k: v.index_select(0, r) for k, v in xt.items()}
        pb = {k: v.index_select(0, r) for k, v in pt.items()}
        forward = modality_forward(model, xb, pb, name, target)
        # captum batches by the layer's output rows (e.g. chunks), whole steps per pass
        seen: list[int] = []
        hook = layer.register_forward_hook(lambda _m, _i, o, seen=seen: seen.append(len(o)))
        try:
            with torch.no_grad():
                forward(xb[name])
        finally:
            hook.remove()
        steps = max(1, min(n_steps, LAYER_BLOCK // (len(rows) * per_row)))
        lig = LayerIntegratedGradients(forward, layer)
        base = getattr(enc, "attribution_baseline", torch.zeros_like)(xb[name])
        with torch.enable_grad():
            attr = lig.attribute(
                xb[name],
                baselines=base,
                n_steps=n_steps,
                internal_batch_size=steps * max(1, sum(seen)),
            )
        a = enc.reduce_attribution(attr.detach(), xb[name]).numpy().astype(float)
        if out is None:
            out = np.full((n, *a.shape[1:]), np.nan)
        out[rows] = a
    return out


def baseline_shap(baseline: Any, cohort: Any) -> dict[str, np.ndarray]:
    """SHAP values of a classical candidate, per modality (its
    ``feature_attributions``: exact linear SHAP or LightGBM's TreeSHAP)."""
    return baseline.feature_attributions(cohort)


def top_features(
    attr: dict[str, np.ndarray], names: dict[str, list[str]], k: int = 15
) -> dict[str, list[dict[str, float | str]]]:
    """Per modality, the k features with the largest mean |attribution| over the
    patients who have the modality, with the mean signed attribution. Attributions of
    shape (n, ..., F) with F names (e.g. channels of a series) are summed over the middle
    axes first."""
    out = {}
    for m, a in attr.items():
        n = a.shape[0]
        if a.ndim > 2 and len(names[m]) == a.shape[-1]:  # e.g. (n, T, C): sum over time
            absval = np.abs(a).reshape(n, -1, a.shape[-1]).sum(1)
            a = a.reshape(n, -1, a.shape[-1]).sum(1)
        else:
            a = a.reshape(n, -1)
            absval = np.abs(a)
        rows = ~np.isnan(a).all(1)
        if not rows.any():
            out[m] = []
            continue
        mag = absval[rows].mean(0)
        sign = a[rows].mean(0)
        order = np.argsort(-mag)[:k]
        out[m] = [
            {"feature": names[m][i], "mean_abs": float(mag[i]), "mean": float(sign[i])}
            for i in order
        ]
    return out


def deletion_curve(
    model: Any,
    cohort: Any,
    attr: dict[str, np.ndarray],
    steps: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200),
    metric: str = "auroc",
    seed: int = 0,
) -> dict[str, Any]:
    """Metric as the top-k features (by global mean |attribution|, across modalities)
    are reset to baseline 0, vs. the same number of features in a random order."""
    x, present = model.transform(cohort)
    keys = [(m, j) for m, a in attr.items() for j in range(a.shape[1])]
    mag = np.array(
        [
            np.nanmean(np.abs(attr[m][:, j])) if (~np.isnan(attr[m][:, j])).any() else 0.0
            for m, j in keys
        ]
    )
    ranked = [keys[i] for i in np.argsort(-mag)]
    rng = np.random.default_rng(seed)
    shuffled = [keys[i] for i in rng.permutation(len(keys))]
    steps = tuple(s for s in steps if s <= len(keys))

    def run(order: list[tuple[str, int]]) -> list[float]:
        vals = []
        for k in steps:
            xx = {m: v.copy() for m, v in x.items()}
            for m, j in order[:k]:
                xx[m][:, j] = 0.0
            out = model.output(model.logits(xx, present))
            vals.append(float(compute_metrics(cohort.task, cohort.y, out)[metric]))
        return vals

    return {"metric": metric, "k": list(steps), "top_first": run(ranked), "random": run(shuffled)}
