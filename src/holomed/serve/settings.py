"""Settings of ``holomed serve`` and the database that holds its tokens and audit trail.

Every setting has a default, may be set in the environment as ``HOLOMED_SERVE_<NAME>``
(e.g. ``HOLOMED_SERVE_MAX_REQUEST_BYTES=10000000``) and is overridden by the command
line. The database URL comes from ``--db``, else ``$HOLOMED_SERVE_DB``, else the SQLite
file ``holomed-serve.db`` in ``--state-dir`` (default: the current folder). A value
without ``://`` is read as the path of an SQLite file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from holomed.spec.dicomweb import parse_url

DB_ENV = "HOLOMED_SERVE_DB"
DB_FILE = "holomed-serve.db"
ENV_PREFIX = "HOLOMED_SERVE_"


@dataclass
class ServeSettings:
    """Limits and tuning of one server. Sizes in bytes, times in seconds unless named."""

    # -- uploads (checked before anything is decoded) -----------------------------------
    max_request_bytes: int = 32 * 2**20  # a whole request body; larger: 413
    max_file_bytes: int = 16 * 2**20  # one uploaded file; larger: 413
    max_files: int = 16  # files in one multipart request; more: 413
    max_fields: int = 64  # non-file form fields in one multipart request
    max_image_pixels: int = 40_000_000  # pixels (2D) or voxels (3D) of one image; more: 413
    # -- access -------------------------------------------------------------------------
    rate_limit_per_minute: int = 600  # requests per token per minute; beyond: 429
    token_cache_seconds: float = 30.0  # how long a verified token is trusted without argon2
    # -- inference ----------------------------------------------------------------------
    max_batch: int = 64  # concurrent predictions of one model run as one batch of at most
    top_features: int = 10  # features per modality in an explanation
    # -- audit --------------------------------------------------------------------------
    audit_flush_seconds: float = 0.02  # the audit writer commits at least this often
    # where uploaded files are written while a request is served (default: the system's)
    upload_dir: str | None = None
    # -- PACS (holomed.serve.pacs): studies fetched by accession number instead of uploads -
    pacs: str | None = None  # dicomweb://host[:port]/path (dicomwebs:// for HTTPS)
    # a YAML/JSON file {username, password} or {token}; default: $HOLOMED_DICOMWEB_* variables
    pacs_credentials: str | None = None
    pacs_timeout: float = 30.0  # seconds per request to the PACS

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Defaults, then ``HOLOMED_SERVE_<NAME>`` variables, then ``overrides`` (those
        that are not None)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or not raw.strip():
                continue
            kind = type(getattr(cls, f.name)) if getattr(cls, f.name) is not None else str
            try:
                values[f.name] = kind(raw.strip())
            except ValueError:
                raise ValueError(
                    f"${ENV_PREFIX}{f.name.upper()}: expected {kind.__name__}; got {raw!r}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        out = cls(**values)
        out.check()
        return out

    def check(self) -> None:
        """Every limit positive (a named error otherwise)."""
        for name in (
            "max_request_bytes",
            "max_file_bytes",
            "max_files",
            "max_fields",
            "max_image_pixels",
            "rate_limit_per_minute",
            "max_batch",
            "top_features",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"serve setting {name}: must be >= 1; got {getattr(self, name)}")
        if self.token_cache_seconds < 0 or self.audit_flush_seconds <= 0:
            raise ValueError(
                "serve settings token_cache_seconds (>= 0) and audit_flush_seconds (> 0)"
            )
        if self.pacs:
            try:
                parse_url(self.pacs)
            except ValueError as err:  # the message never repeats the URL
                raise ValueError(f"serve setting pacs: {err}") from None
        if not self.pacs_timeout > 0:
            raise ValueError(f"serve setting pacs_timeout: must be > 0; got {self.pacs_timeout}")


def db_url(db: str | None = None, state_dir: str | Path | None = None) -> str:
    """The database URL: ``db``, else ``$HOLOMED_SERVE_DB``, else SQLite in ``state_dir``
    (default: the current folder). A value without ``://`` is an SQLite file path."""
    url = db or os.environ.get(DB_ENV)
    if not url:
        folder = Path(state_dir) if state_dir else Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        url = str(folder / DB_FILE)
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def make_engine(url: str) -> Any:
    """A SQLAlchemy engine for ``url``. SQLite files use write-ahead logging (readers such
    as ``holomed audit verify`` do not block the server) and wait up to 30 s for a lock."""
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as its scheme only
        return url.split("://", 1)[0] + "://..."
