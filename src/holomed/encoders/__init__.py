"""Encoders by architecture, found through one registry."""

from holomed.encoders import mlp, signal, text, timeseries  # noqa: E402,F401  (registration)
from holomed.encoders.base import ENCODERS, Encoded, create_encoder, encoder_names, register_encoder

__all__ = ["ENCODERS", "Encoded", "create_encoder", "encoder_names", "register_encoder"]
