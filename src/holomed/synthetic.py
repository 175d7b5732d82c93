"""A SYNTHETIC multimodal cohort with known ground truth, for tests, demos and
checking that fusion and explanation methods find what is there. Never a clinical
result.

Modalities: ``clinical`` (tabular: age, sex, site, 5 labs, some values missing),
``expression`` and ``methylation`` (omics) and ``noise`` (omics, no signal). The
label's log-odds are

    1.0 * clinical_signal + 3.0 * expression_signal + 1.5 * methylation_signal
    + interaction * expression[g_int] * methylation[cg_int]

where each ``*_signal`` is a scaled sum (sd 1) of a few features of that modality and the last
term is a cross-modal interaction that only a model seeing both modalities at once
(early or joint fusion) can use: with ``interaction_only=True`` it is the whole signal.
``missing`` is the chance that each non-clinical modality is absent for a patient.

With ``survival=True`` the target is also a time to event: exponential times whose log
hazard is half that log-odds (without its noise term: column ``true_log_hazard``), with
baseline rate 0.1 per month, independently censored by exponential times of rate
``censoring`` x 0.05 per month and administratively at 36 months (columns ``time``,
``event``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.datasets.base import Dataset, register_dataset

GROUND_TRUTH = {
    "signal_modalities": ["expression", "clinical", "methylation"],
    "no_signal_modalities": ["noise"],
    "interaction": ["expression:g005", "methylation:cg005"],
    # the label's log-odds per unit of each feature with a main effect (the features are
    # standard normal, age has sd 12 years); every other feature has none
    "main_effects": {
        **{f"expression:g{i:03d}": 1.5 for i in range(4)},
        **{f"methylation:cg{i:03d}": round(1.5 / np.sqrt(3), 4) for i in range(3)},
        "clinical:lab0": 0.8,
        "clinical:age": 0.05,
    },
}


def make_synthetic(
    n_patients: int = 600,
    seed: int = 0,
    missing: float = 0.2,
    noise: float = 1.0,
    interaction: float = 1.0,
    interaction_only: bool = False,
    survival: bool = False,
    censoring: float = 1.0,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, Any]]:
    """(frames by modality, target frame with label/sex/site/split columns, ground truth)."""
    rng = np.random.default_rng(seed)
    n = n_patients
    ids = [f"SYN-{i:05d}" for i in range(n)]
    expr = rng.normal(size=(n, 50))
    meth = rng.normal(size=(n, 40))
    junk = rng.normal(size=(n, 30))
    age = rng.normal(62, 12, n).round(0)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["north", "south", "east"], n)
    labs = rng.normal(size=(n, 5))
    clin_sig = 0.8 * labs[:, 0] + 0.6 * (age - 62) / 12  # sd 1
    expr_sig = expr[:, :4].sum(1) / 2  # sd 1
    meth_sig = meth[:, :3].sum(1) / np.sqrt(3)  # sd 1
    logit = 1.0 * clin_sig + 3.0 * expr_sig + 1.5 * meth_sig
    inter = expr[:, 5] * meth[:, 5]
    logit = interaction * inter * 1.5 if interaction_only else logit + interaction * inter
    true_log_hazard = 0.5 * logit
    logit = logit + rng.normal(scale=0.3, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    # from a stream of their own: the other columns do not depend on ``survival``
    rng_t = np.random.default_rng([seed, 1])
    t_event = rng_t.exponential(1.0, n) / (0.1 * np.exp(true_log_hazard))
    t_censor = rng_t.exponential(1.0, n) / (0.05 * max(censoring, 1e-9))
    expr += rng.normal(scale=0.5 * noise, size=expr.shape) * (noise > 1)
    frames = {
        "clinical": pd.DataFrame(
            {"age": age, "sex": sex, "site": site, **{f"lab{i}": labs[:, i] for i in range(5)}},
            index=ids,
        ),
        "expression": pd.DataFrame(expr, index=ids, columns=[f"g{i:03d}" for i in range(50)]),
        "methylation": pd.DataFrame(meth, index=ids, columns=[f"cg{i:03d}" for i in range(40)]),
        "noise": pd.DataFrame(junk, index=ids, columns=[f"z{i:03d}" for i in range(30)]),
    }
    lab_missing = rng.random((n, 5)) < 0.1
    frames["clinical"].loc[:, [f"lab{i}" for i in range(5)]] = np.where(lab_missing, np.nan, labs)
    for name in ("expression", "methylation", "noise"):
        keep = rng.random(n) >= missing
        frames[name] = frames[name].loc[keep]
    split = np.where(rng.random(n) < 0.25, "test", "train")
    target = pd.DataFrame(
        {"label": np.where(y == 1, "event", "no_event"), "sex": sex, "site": site, "split": split},
        index=ids,
    )
    if survival:
        t_obs = np.minimum.reduce([t_event, t_censor, np.full(n, 36.0)])
        target["time"] = np.maximum(t_obs, 1e-3).round(4)
        target["event"] = (t_event <= np.minimum(t_censor, 36.0)).astype(int)
        target["true_log_hazard"] = true_log_hazard
    truth = dict(GROUND_TRUTH, interaction_weight=interaction, interaction_only=interaction_only)
    return frames, target, truth


def synthetic_spec_dict(**dataset_options: Any) -> dict[str, Any]:
    # small linear embeddings: with a few hundred patients and mostly-noise features, wide
    # MLP encoders overfit within a few epochs (the ROSMAP tuning found the same)
    small = {
        "encoder": {
            "name": "mlp",
            "options": {
                "hidden": 32,
                "out_dim": 16,
                "dropout": 0.3,
                "input_dropout": 0.2,
                "last_activation": False,
            },
        }
    }
    return {
        "dataset": "synthetic",
        "description": "SYNTHETIC cohort with known ground truth (not clinical data)",
        "dataset_options": dataset_options,
        "modalities": [
            {"name": "clinical", "kind": "tabular", "categorical": ["sex", "site"], **small},
            {"name": "expression", "kind": "omics", **small},
            {"name": "methylation", "kind": "omics", **small},
            {"name": "noise", "kind": "omics", **small},
        ],
        "target": {"column": "label", "task": "binary", "classes": ["no_event", "event"]},
        "attributes": ["sex", "site"],
        "split": {"method": "predefined", "column": "split"},
        "fusion": {"name": "joint", "hidden": 32, "dropout": 0.2, "modality_dropout": 0.2},
        # no validation carve-out: with ~440 training patients, early stopping on ~90 of
        # them stopped near the initial weights (5-fold CV AUROC on training patients of
        # joint fusion 0.611 +- 0.071 with the carve-out, 0.737 +- 0.025 with a fixed
        # budget of 40 epochs; benchmarks/neural_small_cohort.py)
        "training": {
            "max_epochs": 40,
            "batch_size": 64,
            "lr": 0.003,
            "patience": 15,
            "weight_decay": 0.01,
            "val_fraction": 0.0,
        },
        "evaluation": {"seeds": 2, "n_bootstrap": 200, "selection_folds": 2},
    }


# The demo's cohort: the cross-modal interaction as strong as the strongest modality. At
# the generator's default weight (1.0) the interaction is worth about 0.015 test AUROC
# even with the true coefficients, less than 440 training patients can resolve, so no
# model could show that it uses it; at 3.0 it is worth about 0.06
# (benchmarks/demo_interaction.py).
DEMO_OPTIONS: dict[str, Any] = {"interaction": 3.0}
# the task's default candidates (holomed.candidate.DEFAULT_CANDIDATES) and the sparse
# bilinear fusion ``lr_cross``, which can learn a product of two modalities' features
DEMO_CANDIDATES = ["lr_early", "lr_late", "gbm", "lr_l1", "lr_cross", "stack", "ensemble"]


def demo_spec_dict() -> dict[str, Any]:
    """The quick start's spec: the synthetic cohort with :data:`DEMO_OPTIONS`, and
    ``lr_cross`` among the candidates."""
    d = synthetic_spec_dict(**DEMO_OPTIONS)
    d["evaluation"]["candidates"] = list(DEMO_CANDIDATES)
    # 5 inner folds, as CPSC's small cohort: with 2, each inner fit saw ~220 of the 439
    # training patients, too few to find a product among ~6,000 (lr_cross inner-CV
    # AUROC 0.788 with 2 folds, 0.828 with 5)
    d["evaluation"]["selection_folds"] = 5
    return d


def synthetic_survival_spec_dict(**dataset_options: Any) -> dict[str, Any]:
    """The synthetic cohort with its time-to-event target (months; horizons 3, 6, 12)."""
    d = synthetic_spec_dict(survival=True, **dataset_options)
    d["description"] = "SYNTHETIC cohort, time to event (not clinical data)"
    d["target"] = {
        "column": "time",
        "event": "event",
        "task": "survival",
        "time_unit": "months",
        "horizons": [3, 6, 12],
    }
    d["evaluation"]["selection_metric"] = "c_index"
    return d


def write_synthetic(folder: str | Path, demo: bool = False, **options: Any) -> Path:
    """Write the synthetic cohort as CSV files + ``spec.yaml`` that reads them; returns
    the spec path. Shows the file-based route end to end. ``demo``: the quick start's
    cohort and candidates (:func:`demo_spec_dict`)."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if demo:
        options = {**DEMO_OPTIONS, **options}
    frames, target, truth = make_synthetic(**options)
    for name, df in frames.items():
        df.rename_axis("patient_id").to_csv(folder / f"{name}.csv")
    target.rename_axis("patient_id").to_csv(folder / "labels.csv")
    spec = demo_spec_dict() if demo else synthetic_spec_dict()
    spec.pop("dataset_options")
    spec["dataset"] = "synthetic-files"
    for m in spec["modalities"]:
        m["source"] = f"{m['name']}.csv"
        m["id_column"] = "patient_id"
    spec["target"].update({"source": "labels.csv", "id_column": "patient_id"})
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    return folder / "spec.yaml"


@dataclass
class Synthetic(Dataset):
    def frames(self, **options: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        frames, target, _ = make_synthetic(**options)
        return frames, target


SYNTHETIC = register_dataset(
    Synthetic(
        name="synthetic",
        options=None,  # make_synthetic's keywords
        description="SYNTHETIC multimodal cohort with known ground truth (generated, not clinical)",
        synthetic=True,
    )
)
