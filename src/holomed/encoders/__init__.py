"""Encoders by architecture, found through one registry.

Importing this package is cheap: the registry's names (``ENCODERS``,
``create_encoder`` ...) are loaded on first use, and the built-in encoders register
themselves on the registry's first lookup, so importing one of its modules (e.g.
:mod:`holomed.encoders.pretrained`) does not load torch or the other encoders.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ENCODERS", "Encoded", "create_encoder", "encoder_names", "register_encoder"]


def __getattr__(name: str) -> Any:
    base = importlib.import_module("holomed.encoders.base")
    if name in __all__:
        return getattr(base, name)
    if name in base.BUILTIN or name == "pretrained":
        return importlib.import_module(f"holomed.encoders.{name}")
    raise AttributeError(f"module 'holomed.encoders' has no attribute {name!r}")
