"""The spec's DICOMweb settings, checked when the spec loads: a PACS URL
(``dicomweb[s]://host[:port]/root``, never with credentials in it) and an image
modality's ``options.dicomweb``. The client that reads from the PACS is
:mod:`holomed.io.dicomweb`, which documents every option."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
USER_ENV = "HOLOMED_DICOMWEB_USER"
PASSWORD_ENV = "HOLOMED_DICOMWEB_PASSWORD"
TOKEN_ENV = "HOLOMED_DICOMWEB_TOKEN"
CREDENTIALS_ENV = "HOLOMED_DICOMWEB_CREDENTIALS"


# -- the URL --------------------------------------------------------------------------


@dataclass(frozen=True)
class PacsUrl:
    """A parsed ``dicomweb[s]://host[:port]/root``. ``str()`` gives it back as written
    (without credentials, which are refused anyway); :attr:`http` the HTTP(S) base URL."""

    secure: bool
    host: str
    port: int | None
    root: str

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def http(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self._netloc}{self.root}"

    def __str__(self) -> str:
        return f"{'dicomwebs' if self.secure else 'dicomweb'}://{self._netloc}{self.root}"


def is_dicomweb(source: Any) -> bool:
    """Whether a source names a DICOMweb server (``dicomweb://`` or ``dicomwebs://``)."""
    return isinstance(source, str) and source.strip().lower().startswith(
        tuple(f"{s}://" for s in SCHEMES)
    )


def parse_url(url: str) -> PacsUrl:
    """``dicomweb://host[:port]/root`` (``dicomwebs://`` for HTTPS) -> :class:`PacsUrl`.
    A ``ValueError`` (which never repeats the URL: it may hold a password) for another
    scheme, no host, a bad port, a query or fragment, or credentials in the URL."""
    text = str(url).strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a PACS URL is dicomweb://host[:port]/path (or dicomwebs:// for HTTPS)")
    parts = urllib.parse.urlsplit("http://" + rest)
    if "@" in parts.netloc:
        raise ValueError(
            "credentials do not belong in the PACS URL: put them in a credentials file "
            f"(options.dicomweb.credentials or ${CREDENTIALS_ENV}) or in ${USER_ENV} / "
            f"${PASSWORD_ENV}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the PACS URL has an invalid port") from None
    if not parts.hostname:
        raise ValueError("the PACS URL has no host (dicomweb://host[:port]/path)")
    if parts.query or parts.fragment:
        raise ValueError("the PACS URL takes no query (?...) or fragment (#...)")
    root = re.sub(r"/+", "/", parts.path).rstrip("/")
    return PacsUrl(scheme.lower() == "dicomwebs", parts.hostname, port, root)


# -- spec options ---------------------------------------------------------------------


class DicomWebOptions(BaseModel):
    """``options.dicomweb`` of an image modality whose source is a DICOMweb URL."""

    model_config = ConfigDict(extra="forbid", strict=True)

    match: Literal["patient", "accession"] = "patient"
    column: str | None = None
    table: str | None = None
    studies: Literal["all", "latest"] = "all"
    series_modality: list[str] | None = None
    series_description: str | None = None
    credentials: str | None = None
    cache_dir: str | None = None
    max_instances: int = Field(2000, ge=1)
    max_mb: float = Field(2048.0, gt=0)
    timeout: float = Field(30.0, gt=0, le=3600)

    @field_validator("series_modality", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("series_modality")
    @classmethod
    def _codes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = [c.strip().upper() for c in v]
        bad = [c for c in out if not re.fullmatch(r"[A-Z0-9_]{1,16}", c)]
        if bad or not out:
            raise ValueError(
                f"expected DICOM Modality codes such as CT, MR, CR, DX; got {bad or 'none'}"
            )
        return out

    @property
    def key_column(self) -> str | None:
        """The table column with the key: ``column``, else ``accession`` for
        ``match: accession``, else None (the id column)."""
        return self.column or ("accession" if self.match == "accession" else None)


def parse_options(raw: Any) -> DicomWebOptions:
    """``options.dicomweb`` validated; a ``ValueError`` naming each wrong field
    (``options.dicomweb.match: ...``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("options.dicomweb: expected a mapping (match, column, table, ...)")
    try:
        return DicomWebOptions.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"unknown option; expected one of {', '.join(DicomWebOptions.model_fields)}"
            lines.append(f"options.dicomweb.{loc}: {msg}")
        raise ValueError("; ".join(lines)) from None


def check_modality(mspec: Any) -> None:
    """Spec-time checks of a modality with a DICOMweb source: an image modality, one
    source, a URL without credentials, valid ``options.dicomweb`` (checked too when the
    source is files, e.g. a PACS-trained model given files, where they go unused). A
    ``ValueError`` naming the modality and the field."""
    sources = list(mspec.source or [])
    web = [s for s in sources if is_dicomweb(s)]
    opts = (mspec.options or {}).get("dicomweb")
    who = f"modality {mspec.name!r}"
    if not web:  # options kept from a PACS-trained model given files: checked, unused
        if opts is not None:
            try:
                parse_options(opts)
            except ValueError as err:
                raise ValueError(f"{who}: {err}") from None
        return
    if mspec.kind != "image":
        raise ValueError(f"{who}: a DICOMweb source serves image modalities only")
    if len(sources) != 1:
        raise ValueError(f"{who}: source: give one DICOMweb URL and no other source")
    try:
        parse_url(web[0])
    except ValueError as err:
        raise ValueError(f"{who}: source: {err}") from None
    other = sorted(k for k in mspec.options if k not in ("dicomweb",))
    if other:
        raise ValueError(
            f"{who}: options {other} do not apply to a DICOMweb source (options.dicomweb does)"
        )
    try:
        parse_options(opts)
    except ValueError as err:
        raise ValueError(f"{who}: {err}") from None
