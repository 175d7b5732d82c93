"""Encoder contract and registry: an ``nn.Module`` with ``out_dim`` whose
``forward(x)`` returns :class:`Encoded` (an embedding ``(B, d)`` and, where it has
them, tokens ``(B, T, d)``). Encoders only ever see present patients' rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from holomed.registry import Registry


@dataclass
class Encoded:
    embedding: torch.Tensor
    tokens: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")


def register_encoder(name: str) -> Callable:
    """Register a factory ``f(in_dim, **options) -> nn.Module`` under ``name``."""
    return ENCODERS.register(name)


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
