"""Generative methods: synthetic cohorts (:mod:`holomed.generative.synthesize`).

Names are imported on first use, so ``import holomed.generative`` costs nothing and the
SDV library is only loaded when a generator is fitted. The synthesis function is exported
as ``synthesize_cohort``: ``holomed.generative.synthesize`` is its module."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "synthesize_cohort": ("holomed.generative.synthesize", "synthesize"),
    "evaluate_synthetic": ("holomed.generative.synthesize", "evaluate_synthetic"),
    "Generator": ("holomed.generative.synthesize", "Generator"),
    "SDVGenerator": ("holomed.generative.synthesize", "SDVGenerator"),
    "SynthesisError": ("holomed.generative.synthesize", "SynthesisError"),
    "make_generator": ("holomed.generative.synthesize", "make_generator"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'holomed.generative' has no attribute {name!r}")
