"""Studies fetched from a PACS instead of uploaded: ``holomed serve --pacs
dicomweb://host[:port]/path`` and, in a predict or explain request, an accession number
for an image modality.

Fields: ``accession`` (the model's image modality, when it has exactly one) or
``<modality>_accession`` (e.g. ``ct_accession``), as a multipart form field or a key of
the JSON body. The study is found and fetched over DICOMweb
(:class:`holomed.io.dicomweb.Pacs`: QIDO-RS by exact AccessionNumber, WADO-RS per
instance) into the request's private upload folder, deleted when the request ends, with
the series filters of the modality's spec (``options.dicomweb``, when the model was
trained from a PACS). The upload limits hold for what is fetched: at most ``max_files``
instances (with the files uploaded), ``max_request_bytes`` in all, ``max_file_bytes``
per instance (counted while receiving), ``max_image_pixels`` per image (a series: its
slices together), 413 beyond; each instance's DICOM header is checked as an upload's is.

Errors: no study for that accession number, or no image series in it: 422; the PACS
unreachable or too slow: 503; the PACS refusing this server's credentials, or another
PACS failure: 502. Messages name the modality, never the accession number.

Audit and response: the audit row's modalities list ``<modality>:pacs:A-<pseudonym>``
and the response's ``modalities.fields.<modality>`` says ``source: pacs`` with the same
``accession_pseudonym`` and the counts fetched. The pseudonym is the keyed HMAC of the
server (:class:`holomed.serve.app.Pseudonyms`), taken of ``"accession:" + number`` so it
never equals a patient's pseudonym; the number itself is not kept.

Credentials: ``--pacs-credentials FILE`` (``pacs_credentials``), else the
``$HOLOMED_DICOMWEB_*`` variables (:func:`holomed.io.dicomweb.load_credentials`); never
in the URL, never printed.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from holomed.io.dicomweb import (
    DicomWebError,
    Limits,
    NoImageSeries,
    OverLimit,
    Pacs,
    PacsRefused,
    PacsUnreachable,
    StudyNotFound,
    check_key,
    load_credentials,
    parse_options,
    parse_url,
)
from holomed.serve.errors import ApiError, check_image_file
from holomed.serve.errors import quote as _q

log = logging.getLogger("holomed.serve")

SUFFIX = "_accession"
_LOCK = threading.Lock()


def is_accession_field(key: str) -> bool:
    """``accession`` or ``<modality>_accession``."""
    return key == "accession" or (key.endswith(SUFFIX) and len(key) > len(SUFFIX))


def take_accessions(obj: Any) -> dict[str, Any]:
    """The accession fields of a request body (removed from it)."""
    if not isinstance(obj, dict):
        return {}
    return {k: obj.pop(k) for k in [k for k in obj if isinstance(k, str) and is_accession_field(k)]}


def describe(settings: Any) -> str:
    """One line for the server's start: the PACS and where its credentials come from
    (never the credentials). Loads them, so an unusable file stops the start."""
    url = parse_url(settings.pacs)
    cred = load_credentials(settings.pacs_credentials)
    how = f"credentials from {cred.origin}" if cred else "no credentials (anonymous)"
    return f"PACS for accession numbers: {url} ({how}; timeout {settings.pacs_timeout:g} s)"


class PacsSource:
    """The server's PACS: one :class:`~holomed.io.dicomweb.Pacs` client per worker
    thread (an HTTP session is not shared between threads)."""

    def __init__(self, settings: Any) -> None:
        self.url = parse_url(settings.pacs)
        self.credentials = load_credentials(settings.pacs_credentials)
        self.timeout = float(settings.pacs_timeout)
        self._local = threading.local()

    def client(self) -> Pacs:
        pacs = getattr(self._local, "pacs", None)
        if pacs is None:
            pacs = self._local.pacs = Pacs(self.url, self.credentials, self.timeout)
        return pacs


def source_of(state: Any) -> PacsSource:
    """The server's :class:`PacsSource`, made on first use (503 when no PACS is set or
    its credentials cannot be read)."""
    src = getattr(state, "_pacs_source", None)
    if src is not None:
        return src
    with _LOCK:
        src = getattr(state, "_pacs_source", None)
        if src is None:
            try:
                src = PacsSource(state.settings)
            except Exception as err:  # noqa: BLE001 - the server's configuration
                log.error("PACS set-up failed: %s", err)
                raise ApiError(
                    503, "the server's PACS settings are unusable (see the server's log)"
                ) from None
            state._pacs_source = src
    return src


def audit_tags(item: Any) -> list[str]:
    """``<modality>:pacs:<accession pseudonym>`` for each study fetched from the PACS."""
    return [
        f"{name}:pacs:{rep.get('accession_pseudonym')}"
        for name, rep in item.field_report.items()
        if isinstance(rep, dict) and rep.get("source") == "pacs"
    ]


def _targets(m: Any, fields: dict[str, Any]) -> dict[str, str]:
    """Accession fields -> {image modality: accession number}, checked (422)."""
    images = [n for n, d in m.expects.items() if d.get("kind") == "image"]
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key == "accession":
            if len(images) != 1:
                raise ApiError(
                    422,
                    f"accession: model {m.name!r} has "
                    + ("no image modality" if not images else
                       f"several image modalities ({', '.join(images)}); send "
                       f"<modality>{SUFFIX}"),
                )  # fmt: skip
            name = images[0]
        else:
            name = key[: -len(SUFFIX)]
            if name not in images:
                raise ApiError(
                    422,
                    f"form field {_q(key)}: {_q(name)} is not an image modality of model "
                    f"{m.name!r}" + (f"; its image modalities: {', '.join(images)}"
                                     if images else "; it has none"),
                )  # fmt: skip
        if name in out:
            raise ApiError(422, f"modality {name!r}: accession number given twice")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ApiError(422, f"{key}: expected the accession number as text")
        try:
            out[name] = check_key(value, "accession")
        except ValueError as err:
            raise ApiError(422, f"{key}: {err}") from None
    return out


def _filters(m: Any, name: str) -> dict[str, Any]:
    """The series filters of the modality's spec (``options.dicomweb``), if any."""
    mspec = next((s for s in m.spec.modalities if s.name == name), None)
    raw = (mspec.options or {}).get("dicomweb") if mspec is not None else None
    if raw is None:
        return {}
    try:
        o = parse_options(raw)
    except ValueError:
        return {}
    return {
        "series_modality": o.series_modality,
        "series_description": o.series_description,
        "studies": o.studies,
    }


def _pixels(path: Path, label: str, max_pixels: int) -> int:
    """Pixels (voxels) of a fetched image from its DICOM headers (every instance
    checked as an upload is); 413 beyond ``max_pixels``."""
    import pydicom

    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    total = 0
    for f in files:
        check_image_file(f, "dicom", label, max_pixels)
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        total += (
            int(ds.Rows)
            * int(ds.Columns)
            * int(getattr(ds, "NumberOfFrames", 1) or 1)
            * int(getattr(ds, "SamplesPerPixel", 1) or 1)
        )
    if total > max_pixels:
        raise ApiError(
            413,
            f"{label}: image of {total} pixels (voxels) exceeds the limit of {max_pixels} "
            "(max_image_pixels); it was not decoded",
        )
    return total


def fetch_now(state: Any, m: Any, item: Any, fields: dict[str, Any]) -> None:
    """Fetch the studies the accession ``fields`` name into ``item`` (its upload
    folder, its files, its field report); runs in a worker thread."""
    s = state.settings
    if not s.pacs:
        raise ApiError(
            422,
            "accession: this server has no PACS (start it with holomed serve --pacs "
            "dicomweb://host:port/path)",
        )
    wanted = _targets(m, fields)
    clash = sorted(set(wanted) & set(item.sent))
    if clash:
        raise ApiError(422, f"modality {clash[0]!r} given both as data and as an accession number")
    src = source_of(state)
    if item.folder is None:
        item.folder = Path(tempfile.mkdtemp(prefix="holomed-upload-", dir=s.upload_dir))
    files = sum(len(v) for v in item.files.values())
    used = 0
    for name, accession in wanted.items():
        label = f"modality {name!r} (PACS)"
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]
        limits = Limits(
            max_instances=max(0, s.max_files - files),
            max_bytes=max(0, s.max_request_bytes - used),
            max_instance_bytes=s.max_file_bytes,
        )
        pseudonym = "A-" + str(state.pseudonyms(f"accession:{accession}")).removeprefix("P-")
        # in the audit row whatever happens next (see audit_tags)
        item.field_report[name] = {"source": "pacs", "accession_pseudonym": pseudonym}
        if limits.max_instances < 1 or limits.max_bytes < 1:
            raise ApiError(413, f"{label}: no room left within max_files / max_request_bytes")
        try:
            got = src.client().fetch(
                "accession",
                [accession],
                item.folder / f"pacs_{safe}",
                limits,
                reuse=False,
                **_filters(m, name),
            )
        except OverLimit as err:
            setting = {"instances": "max_files", "bytes": "max_request_bytes"}.get(
                err.what, "max_file_bytes"
            )
            raise ApiError(413, f"{label}: {err} ({setting})") from None
        except (StudyNotFound, NoImageSeries) as err:
            raise ApiError(422, f"{label}: {err}") from None
        except PacsUnreachable as err:
            raise ApiError(503, f"{label}: {err}") from None
        except PacsRefused as err:
            raise ApiError(
                502, f"{label}: {err}: the server's PACS credentials need fixing"
            ) from None
        except DicomWebError as err:
            raise ApiError(502, f"{label}: {err}") from None
        files += got.instances
        used += got.bytes
        for k, p in enumerate(got.paths):
            _pixels(Path(p), f"{label}, series {k + 1}", s.max_image_pixels)
        item.files[name] = list(got.paths)
        item.field_report[name] = {
            "source": "pacs",
            "accession_pseudonym": pseudonym,
            "studies": got.studies,
            "series": got.series,
            "instances": got.instances,
        }


async def fetch_accessions(state: Any, m: Any, item: Any, fields: dict[str, Any]) -> None:
    """:func:`fetch_now` in a worker thread (the requests block)."""
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(fetch_now, state, m, item, fields)
