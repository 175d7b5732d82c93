"""Encoders by architecture, found through one registry."""

from holomed.encoders import image, mlp, signal, text, timeseries  # noqa: E402,F401
from holomed.encoders.base import ENCODERS, Encoded, create_encoder, encoder_names, register_encoder

__all__ = ["ENCODERS", "Encoded", "create_encoder", "encoder_names", "register_encoder"]
