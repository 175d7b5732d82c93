"""Modality kinds, one module each, found through one registry."""

from holomed.modalities.base import (
    MODALITIES,
    ModalityData,
    ModalityKind,
    Preprocessor,
    get_modality,
    modality_names,
    register_modality,
)
from holomed.modalities import omics, tabular  # noqa: E402,F401  (registration)

__all__ = [
    "MODALITIES",
    "ModalityData",
    "ModalityKind",
    "Preprocessor",
    "get_modality",
    "modality_names",
    "register_modality",
]
