"""Errors as a command line shows them: one line, redacted under privacy, exit code 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from holomed.errors import HolomedError
from holomed.privacy.outputs import active, redact


def error_text(err: Exception) -> str:
    """One printable line for ``err``: holomed's own errors, and ``ValueError``,
    ``OSError`` and ``LookupError`` (which name the value, file or key) as they are;
    others with their type; redacted while privacy is on (no ids, cell values or data
    paths)."""
    text = str(err).strip() or "(no message)"
    if active():
        text = redact(text)
    if not isinstance(err, HolomedError | ValueError | OSError | LookupError):
        text = f"{type(err).__name__}: {text}"
    return text


@contextmanager
def cli_guard() -> Iterator[None]:
    """For a command line: any error becomes ``error: <error_text>`` on stderr and exit
    code 2, never a traceback (``HOLOMED_DEBUG=1`` shows it)."""
    import typer

    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported, never a traceback
        if os.environ.get("HOLOMED_DEBUG"):
            raise
        typer.secho(f"error: {error_text(err)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
