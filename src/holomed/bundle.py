"""A trained model as a directory: ``spec.yaml``, ``weights.safetensors`` (network
weights and preprocessing arrays), ``state.json`` (preprocessing settings, task,
input sizes) and ``card.json`` (data summary, metrics, intended use). Loading parses
YAML/JSON and reads tensors; it never unpickles or imports anything from the bundle.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from holomed.errors import BundleError
from holomed.evaluation.calibration import Calibrator
from holomed.modalities import get_modality
from holomed.spec import parse_spec
from holomed.tasks import Task

SCHEMA_VERSION = 1
DEFAULT_USE = (
    "Research use only. Not a medical device; predictions must not drive clinical "
    "decisions without prospective validation."
)


def versions() -> dict[str, str]:
    import lightning
    import numpy
    import pandas
    import sklearn

    import holomed

    return {
        "holomed": holomed.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }


def run_card(spec: Any) -> dict[str, Any]:
    """Intended use, limitations (the dataset's and the spec's notes) and whether the data
    are synthetic: the model-card fields every run records."""
    from holomed.datasets import DATASETS

    ds = DATASETS.get(spec.dataset) if spec.dataset in DATASETS else None
    synthetic = bool((ds is not None and ds.synthetic) or spec.dataset.startswith("synthetic"))
    limitations = []
    if synthetic:
        limitations.append("SYNTHETIC data: a check of the method, not a clinical result.")
    if ds is not None:
        limitations += list(ds.notes)
        if ds.citation:
            limitations.append(
                f"Data: {ds.description}. Cite: {ds.citation}. Licence: {ds.licence}."
            )
    limitations += list(spec.notes)
    if spec.description:
        limitations.append(spec.description)
    return {"intended_use": DEFAULT_USE, "limitations": limitations, "synthetic": synthetic}


def save_bundle(model: Any, path: Path, card: dict[str, Any] | None = None) -> Path:
    if not hasattr(model, "net_"):
        raise BundleError("the model is not fitted; call fit() before save()")
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"net.{k}": v.detach().cpu().contiguous() for k, v in model.net_.state_dict().items()
    }
    pre_state = {}
    for name, pre in model.preprocessors_.items():
        meta, arrays = pre.get_state()
        pre_state[name] = {"kind": pre.kind, "meta": meta}
        for k, a in arrays.items():
            tensors[f"pre.{name}.{k}"] = torch.as_tensor(np.ascontiguousarray(a))
    save_file(tensors, str(path / "weights.safetensors"))
    spec = model.spec.model_copy(deep=True)
    if spec.fusion.name != model.fusion_name:  # the saved strategy's own options, unprefixed
        used = model._fusion_kwargs()
        spec.fusion.options = {
            k: used[k] for k in used if k not in ("hidden", "dropout", "imputation", "kinds")
        }
        spec.fusion.name = model.fusion_name
    spec.training.seed = model.seed_
    (path / "spec.yaml").write_text(spec.to_yaml())
    state = {
        "schema_version": SCHEMA_VERSION,
        "fusion": model.fusion_name,
        "seed": model.seed_,
        "modalities": list(model.preprocessors_),
        "in_dims": model.in_dims_,
        "in_sizes": model.in_sizes_,
        "task": model.task_.to_json(),
        "classes": model.classes_,
        "preprocessors": pre_state,
        "history": model.history_,
        "calibration": model.calibrator_.to_json(),
    }
    (path / "state.json").write_text(json.dumps(state, indent=2))
    card = {
        "schema_version": SCHEMA_VERSION,
        "intended_use": DEFAULT_USE,
        "dataset": spec.dataset,
        "fusion": model.fusion_name,
        "task": model.task_.name,
        "classes": model.classes_,
        "modalities": {
            n: {"kind": p.kind, "features_in": p.out_dim} for n, p in model.preprocessors_.items()
        },
        "versions": versions(),
        **(card or {}),
    }
    (path / "card.json").write_text(json.dumps(card, indent=2, default=str))
    return path


def load_bundle(path: Path) -> Any:
    from holomed.model import Model

    for f in ("spec.yaml", "state.json", "weights.safetensors"):
        if not (path / f).exists():
            raise BundleError(f"{path}: not a holomed bundle (missing {f})")
    state = json.loads((path / "state.json").read_text())
    if state.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: bundle schema {state.get('schema_version')} is not "
            f"{SCHEMA_VERSION}; re-save it with this holomed version"
        )
    spec = parse_spec(
        yaml.safe_load((path / "spec.yaml").read_text()), where=str(path / "spec.yaml")
    )
    tensors = load_file(str(path / "weights.safetensors"))
    model = Model(spec, fusion=state["fusion"], seed=state["seed"], modalities=state["modalities"])
    model.preprocessors_ = {}
    for name in state["modalities"]:
        ps = state["preprocessors"][name]
        prefix = f"pre.{name}."
        arrays = {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
        model.preprocessors_[name] = get_modality(ps["kind"]).preprocessor.from_state(
            ps["meta"], arrays
        )
    model.in_dims_ = {k: int(v) for k, v in state["in_dims"].items()}
    model.in_sizes_ = {k: int(v) for k, v in state.get("in_sizes", state["in_dims"]).items()}
    model.task_ = Task.from_json(state["task"])
    model.classes_ = state["classes"]
    model.history_ = state.get("history", {})
    model.calibrator_ = Calibrator.from_json(state.get("calibration"))
    model.net_ = model._build_net()
    net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        model.net_.load_state_dict(net_state, strict=True)
    except RuntimeError as err:
        raise BundleError(f"{path}: weights do not match the spec: {err}") from None
    model.net_.eval()
    return model
