"""holomed: multimodal healthcare AI -- cohorts, fusion, missing modalities, honest evaluation.

The public names below are imported on first use (PEP 562), so that ``import holomed``
and commands that only read a cohort (``holomed validate``) do not pay for torch and
Lightning."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Cohort": "holomed.cohort",
    "build_cohort": "holomed.cohort",
    "load_cohort": "holomed.cohort",
    "patient_splits": "holomed.cohort",
    "register_encoder": "holomed.encoders",
    "fusion_names": "holomed.fusion",
    "register_fusion": "holomed.fusion",
    "ModalityData": "holomed.modalities",
    "register_modality": "holomed.modalities",
    "Model": "holomed.model",
    "load": "holomed.candidates",
    "Spec": "holomed.spec",
    "SpecError": "holomed.spec",
    "load_spec": "holomed.spec",
    "parse_spec": "holomed.spec",
    "make_candidate": "holomed.candidates",
    "register_candidate": "holomed.candidates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'holomed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
