"""Modality kinds, one module each, found through one registry."""

from holomed.modalities import image, omics, signal, tabular, text, timeseries  # noqa: E402,F401
from holomed.modalities.base import (
    MODALITIES,
    ModalityData,
    ModalityKind,
    Preprocessor,
    get_modality,
    modality_names,
    register_modality,
)

__all__ = [
    "MODALITIES",
    "ModalityData",
    "ModalityKind",
    "Preprocessor",
    "get_modality",
    "modality_names",
    "register_modality",
]
