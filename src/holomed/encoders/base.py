"""Encoder contract and registry: an ``nn.Module`` with ``out_dim`` whose
``forward(x)`` returns :class:`Encoded` (an embedding ``(B, d)`` and, where it has
them, tokens ``(B, T, d)``). Encoders only ever see present patients' rows.

Optional fit-time hook: an encoder with a method ``fit_start(name, data)`` is called
once by the model's fit, after the network is built and before it trains, with
:class:`FitData` (the fit's training patients only, all modalities). It is for state
an encoder fits from data rather than by the network's loss (e.g. the image-text
alignment of ``aligned_image`` / ``aligned_text``); whatever it sets must live in the
module's state dict, so a saved model needs no hook to load."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from holomed.registry import Registry


@dataclass
class Encoded:
    """``embedding`` (B, d); optional ``tokens`` (B, T, d) with ``token_mask`` (B, T),
    True on real tokens (False on padding: empty image slots, empty note chunks), so
    attention never attends to padding; no mask = every token is real."""

    embedding: torch.Tensor
    tokens: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None


@dataclass
class FitData:
    """What ``fit_start`` hooks see: the fit's training patients (the validation
    carve-out excluded), never anyone else. ``fetch(rows)`` -> ``{"x": {modality:
    (k, ...) tensor}, "present": {modality: (k,) bool}, "y": (k, ...)}`` for positions
    ``rows`` (absent rows zero-filled); ``present`` (n,) per modality; ``y``, ``task``;
    ``ids`` (n,) the patients' (pseudonymised) ids; ``cohort_ids`` every patient given
    to the fit (the validation carve-out too: not evaluation patients, but not rows
    here either); ``groups`` (persons) or None;
    ``seed``; ``encoders`` every modality's encoder by modality name; ``shared`` a dict
    the hooks of one fit share (e.g. one alignment for a pair of encoders)."""

    fetch: Callable[[Any], dict[str, Any]]
    present: dict[str, np.ndarray]
    y: np.ndarray | None
    task: str
    ids: Sequence[Any] | None
    cohort_ids: Sequence[Any] | None
    groups: np.ndarray | None
    seed: int
    encoders: dict[str, nn.Module]
    shared: dict[str, Any] = field(default_factory=dict)


BUILTIN = ("aligned", "image", "mlp", "signal", "text", "timeseries")


def _builtins() -> None:
    """Import the modules of the built-in encoders (they register themselves)."""
    for module in BUILTIN:
        importlib.import_module(f"holomed.encoders.{module}")


ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder", loader=_builtins)
# per encoder, an input it accepts: (in_dim, per-patient shape); the compliance suite
# feeds every registered encoder this (vectors of 9 features unless declared)
EXAMPLE_INPUTS: dict[str, tuple[int, tuple[int, ...]]] = {}


def register_encoder(name: str, example: tuple[int, tuple[int, ...]] | None = None) -> Callable:
    """Register a factory ``f(in_dim, **options) -> nn.Module`` under ``name``.
    ``example`` = ``(in_dim, per-patient input shape)`` for encoders of sequences or
    images, e.g. ``(7, (12, 7))`` for 12 steps of 7 channels."""
    EXAMPLE_INPUTS[name] = example or (9, (9,))
    return ENCODERS.register(name)


def example_input(name: str) -> tuple[int, tuple[int, ...]]:
    ENCODERS.names()  # the built-ins registered (and their examples)
    return EXAMPLE_INPUTS.get(name, (9, (9,)))


def create_encoder(name: str, in_dim: int, **options) -> nn.Module:
    enc = ENCODERS.get(name)(in_dim, **options)
    if not isinstance(getattr(enc, "out_dim", None), int):
        raise TypeError(f"encoder {name!r} must declare an integer out_dim")
    return enc


def encoder_names() -> list[str]:
    return ENCODERS.names()


def mlp(dims: list[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> Dropout blocks. LayerNorm, not BatchNorm, so one
    patient's output never depends on the others in its batch."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_activation:
            layers += [nn.LayerNorm(b), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
