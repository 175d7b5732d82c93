"""The served application: the REST API (:mod:`holomed.serve.app`) with the clinician web
page (:mod:`holomed.serve.web`) mounted under ``/web``. The web page builds on the API's
pieces, so the two are put together here, above both."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from holomed.serve.app import create_api
from holomed.serve.web import install


def create_app(bundles: Any, *args: Any, **kwargs: Any) -> FastAPI:
    """:func:`holomed.serve.app.create_api` (same arguments) with the web page installed."""
    app = create_api(bundles, *args, **kwargs)
    install(app)
    return app
