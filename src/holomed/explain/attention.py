"""What the fusions and set encoders attended to: per-patient modality weights of the
fusions that expose them and the pooling weights of encoders that pool a set per patient
(images of a patient's set, chunks of a note), read from the last forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from holomed.cohort import Cohort


def attention_readout(model: Any, cohort: Cohort, n_examples: int = 5) -> dict[str, Any] | None:
    """Per-patient modality weights of fusions that expose them (attention, late,
    hybrid, ...): their mean over patients and a few example patients; and, under
    ``set_pooling``, the weights of encoders that pool a set per patient (images of a
    patient's set, chunks of a note). ``None`` when the model has neither."""
    x, present = model.transform(cohort)
    x = {k: np.asarray(v) for k, v in x.items()}  # lazy arrays too: one batch, weights align
    model.logits(x, present, batch_size=max(len(cohort), 1))
    out: dict[str, Any] = {}
    w = model.net_.fusion.attention_weights
    if w is not None:
        w = w.detach().numpy()
        out.update(
            names=getattr(model.net_.fusion, "group_names", list(present)),
            mean=w.mean(0).round(4).tolist(),
            examples=[
                {"id": str(cohort.ids[i]), "weights": w[i].round(4).tolist()}
                for i in range(min(n_examples, len(w)))
            ],
        )
    pooling = set_pooling_readout(model, cohort, present, n_examples)
    if pooling:
        out["set_pooling"] = pooling
    return out or None


SLOT_MEANING = {
    "image": "images of the patient's set, in file order",
    "text": "chunks of the patient's notes, in order",
}


def set_pooling_readout(
    model: Any, cohort: Cohort, present: dict[str, np.ndarray], n_examples: int = 5
) -> dict[str, Any]:
    """The last forward pass's set-pooling weights of each encoder that keeps them
    (``last_weights_``, ``(n present, slots)``, 0 on padding slots), per patient."""
    kinds = {m.name: m.kind for m in model.modality_specs()}
    out: dict[str, Any] = {}
    for name, enc in model.net_.encoders.items():
        w = getattr(enc, "last_weights_", None)
        rows = np.flatnonzero(present[name])
        if w is None or w.dim() != 2 or w.shape[1] < 2 or len(w) != len(rows):
            continue
        w = w.detach().cpu().numpy()
        used = w > 0
        n_used = used.sum(1)
        multi = n_used > 1
        out[name] = {
            "slots": SLOT_MEANING.get(kinds.get(name, ""), "pooled set elements"),
            "n_patients": int(len(rows)),
            "mean_slots_used": round(float(n_used.mean()), 2) if len(rows) else None,
            # how concentrated the pooling is where there is a choice (> 1 element)
            "mean_max_weight": round(float(w[multi].max(1).mean()), 4) if multi.any() else None,
            "examples": [
                {"id": str(cohort.ids[rows[i]]), "weights": w[i][used[i]].round(4).tolist()}
                for i in range(min(n_examples, len(rows)))
            ],
        }
    return out
