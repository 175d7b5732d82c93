"""Serving trained bundles over HTTP: ``holomed serve`` (FastAPI under uvicorn) with API
tokens (:mod:`~holomed.serve.tokens`), a hash-chained audit trail
(:mod:`~holomed.serve.audit`) and upload limits (:mod:`~holomed.serve.settings`).

``create_app`` is imported lazily so that importing this package (the command line
does) does not import FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from holomed.serve.server import create_app

        return create_app
    raise AttributeError(name)
