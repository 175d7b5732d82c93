"""``holomed serve``: trained bundles behind an authenticated, audited HTTP API (FastAPI).

Endpoints (all but ``/health`` need ``Authorization: Bearer <token>``, see
:mod:`holomed.serve.tokens` for roles):

- ``GET /health``: the process is up (no token);
- ``GET /ready``: models loaded, audit trail writable;
- ``GET /v1/models``, ``GET /v1/models/{name}``: what is served, the model card, the
  modalities and fields each model expects; ``GET /v1/models/{name}/metrics``
  (researcher): test metrics with their confidence intervals;
- ``POST /v1/models/{name}/predict`` and ``.../explain``: one patient, any subset of the
  model's modalities, as JSON (tables, omics, notes, time series) or as
  ``multipart/form-data`` (files: CSV for a table, DICOM / PNG / JPEG / NIfTI for
  images, EDF or WFDB ``.hea`` + ``.dat`` for signals, ``.txt`` for a note);
- ``GET /v1/audit/summary`` (researcher); ``GET/POST /v1/tokens``,
  ``POST /v1/tokens/{id}/revoke`` (admin);
- ``GET /docs``, ``GET /openapi.json``: the API description (Swagger UI's files served
  by the app itself, ``/docs/static/...``, none from a CDN; a token is needed unless
  the server runs with ``public_docs``);
- ``/web/...``: the clinician web page (:mod:`holomed.serve.web`), on the same token
  store, role rules, input checks and audit trail.

JSON body::

    {"patient_id": "A-17", "modalities": {"clinical": {"age": 61, "sex": "F"},
     "mrna": {"GENE1": 2.3}, "notes": "free text" or ["note 1", "note 2"],
     "vitals": [{"time": 1.5, "variable": "HR", "value": 88}]}, "notes": "..."}

A top-level ``notes`` goes to the model's text modality (when it has exactly one). A
table field left out is missing (imputed as in training); an omics feature the model
does not use is ignored and counted. Multipart: form fields ``patient_id``,
``modalities`` (the same JSON object as text) and ``notes``; each file's field name is
the modality it belongs to. With a PACS (``holomed serve --pacs``), ``accession`` or
``<modality>_accession`` (a form field or a JSON key) fetches an image study instead
of an upload (:mod:`holomed.serve.pacs`).

Patients: the response and the audit trail carry the patient's pseudonym, never the
id: HMAC-SHA256 under the site's privacy key (``$HOLOMED_PRIVACY_KEY`` or
``$HOLOMED_PRIVACY_KEY_FILE``, :mod:`holomed.privacy.keys`; stable across restarts), or,
without one, under a random key made when the server starts (``pseudonym_key:
"session"``: stable while the server runs, unlinkable after a restart). The raw id is
used for that only and never stored, logged or returned.

Uploads are checked before anything is decoded: the request's ``Content-Length`` and
then its streamed bytes (``max_request_bytes``, 413), the number and size of files
(``max_files``, ``max_file_bytes``, 413), each file's type by its extension AND its
leading bytes (422), an image's pixel (voxel) count from its header (``max_image_pixels``,
413: a decompression bomb is never decoded), a DICOM file's header (422 naming the
modality and file). Files are written under names the server chooses in a private
temporary folder, deleted when the request ends.

Inference: models are loaded once, at start. Predictions run in a worker thread, never
on the event loop; concurrent predictions of one model are run together as one batch
(up to ``max_batch`` patients; a batch that fails is re-run patient by patient, so one
bad input fails only its own request). Explanations run one patient at a time. JSON is
parsed and written with orjson when it is installed (several times faster on the
numbers of an omics profile), else with the standard library.

Access: a token's role must allow the endpoint (403); each token may make
``rate_limit_per_minute`` requests a minute (429 with ``Retry-After``). A refused token
is not rate limited, but at most two argon2 verifications run at once, so a flood of
wrong tokens cannot take the CPU from predictions.

Errors are JSON ``{"error": "..."}`` naming the field or modality; messages built from
exceptions are redacted (:func:`holomed.privacy.outputs.redact`: no quoted values, no
data or upload paths) and never carry a traceback. Every request, refused ones
included, is appended to the hash-chained audit trail (:mod:`holomed.serve.audit`).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from holomed.candidates import load_bundle
from holomed.cohort import Cohort, modality_data
from holomed.datasets import DATASETS
from holomed.errors import CohortError, HolomedError
from holomed.explain.records import explanation_record, output_record
from holomed.explain.records import num as _num
from holomed.modalities import get_modality
from holomed.modalities.base import category_text, finite32
from holomed.predictions import out_of_range
from holomed.privacy.keys import KEY_ENV, KEY_FILE_ENV, PrivacyKey, load_key
from holomed.privacy.outputs import redact
from holomed.serve.audit import AuditTrail
from holomed.serve.audit import summary as audit_counts
from holomed.serve.errors import TYPE_NAMES, ApiError, check_image_file
from holomed.serve.errors import quote as _q
from holomed.serve.pacs import audit_tags, fetch_accessions, is_accession_field, take_accessions
from holomed.serve.settings import ServeSettings, db_url, make_engine
from holomed.serve.tokens import ROLES, TokenInfo, TokenStore, token_id_of

log = logging.getLogger("holomed.serve")

AUDIT_KEY = "holomed.audit"
BODY_CLOSED = "holomed.body_closed"  # scope key: a multipart body's closing delimiter seen
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ID_CHARS = 256
ARGON2_AT_ONCE = 2  # token verifications (argon2) running at the same time, at most
# audit status of a request whose client hung up before its body was read ("client closed
# request", as nginx logs it): nothing was answered and no patient data was used
CLIENT_CLOSED = 499
TABLE_KINDS = ("tabular", "omics")
FILE_KINDS = ("image", "signal")
# extension -> file type; the leading bytes must say the same
IMAGE_EXT = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti_gz",
}
SIGNAL_EXT = {".edf": "edf", ".hea": "wfdb_header", ".dat": "wfdb_data"}
TABLE_EXT = {".csv": "csv"}
TEXT_EXT = {".txt": "text"}
# /docs: Swagger UI's own files (as packaged by fastapi-offline), served by the app
DOCS_STATIC = "/docs/static"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


class BodyTooLarge(StarletteHTTPException):
    """Raised while the request body is read once it passes ``max_request_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body exceeds the limit of {limit} bytes (max_request_bytes)"
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


try:  # several times faster at parsing numbers; the standard library otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is optional
    _orjson = None


def loads(data: bytes | str) -> Any:
    """JSON text -> object; NaN and Infinity (not JSON) are refused (ValueError)."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data, parse_constant=_reject_constant)


class Json(JSONResponse):
    """A JSON response rendered with orjson when it is installed."""

    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            return _orjson.dumps(content)
        return super().render(content)


def _clean_message(err: BaseException, folders: Sequence[Path | str] = ()) -> str:
    """An exception's message for a client: quoted values and data paths redacted, the
    request's upload folders named as such."""
    text = str(err).strip() or type(err).__name__
    for f in folders:
        text = text.replace(str(f), "<upload>")
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>", "<object>", text)  # no addresses
    return redact(text)


# -- pseudonyms -----------------------------------------------------------------------------


class Pseudonyms:
    """Patient id -> pseudonym: the site's privacy key when one is configured, else a
    random key made now (``scope`` says which)."""

    def __init__(self, key: PrivacyKey | None = None) -> None:
        if key is None:
            if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV):
                key = load_key()
        self.scope = "site" if key is not None else "session"
        self._key = key or PrivacyKey(secrets.token_bytes(32))

    def __call__(self, patient_id: Any) -> str | None:
        if patient_id is None:
            return None
        if isinstance(patient_id, bool) or not isinstance(patient_id, str | int):
            raise ApiError(422, "patient_id: expected a text or an integer id")
        text = str(patient_id).strip()
        if not text or len(text) > MAX_ID_CHARS:
            raise ApiError(422, f"patient_id: expected 1 to {MAX_ID_CHARS} characters")
        return self._key.pseudonym(text)


# -- rate limit -----------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per API token: ``per_minute`` requests a minute, bursts of as many."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(key, (self.capacity, now))
            level = min(self.capacity, level + (now - last) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate


# -- one patient's input -----------------------------------------------------------------


@dataclass
class PatientInput:
    """One request's patient: pseudonym (the raw id is not kept) and data per modality.
    ``tables`` hold field -> value (numbers as float; omics: the values in the order of
    the model's features, NaN where not given), ``notes`` lists of notes,
    ``series`` (time, variable, value) rows, ``files`` validated paths in ``folder``."""

    pseudonym: str | None = None
    tables: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    series: dict[str, list[tuple[float, str, float]]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    folder: Path | None = None
    warnings: list[str] = field(default_factory=list)
    field_report: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sent(self) -> list[str]:
        return sorted({*self.tables, *self.notes, *self.series, *self.files})

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# -- uploaded files ------------------------------------------------------------------------


def _suffix(filename: str | None) -> str:
    name = (filename or "").lower().strip()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def sniff(head: bytes) -> str | None:
    """The file type its leading bytes (at least 348) say, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 348:
        for order in ("little", "big"):
            if int.from_bytes(head[:4], order) == 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
                return "nifti"
            if int.from_bytes(head[:4], order) == 540 and head[4:8] in (b"n+2\0", b"ni2\0"):
                return "nifti"
    if head.startswith(b"0       "):
        return "edf"
    return None


def _utf8(data: bytes, label: str) -> str:
    if b"\0" in data:
        raise ApiError(422, f"{label}: binary content where UTF-8 text was expected")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(422, f"{label}: not valid UTF-8 text") from None


def _file_type(data_head: bytes, suffix: str, allowed: dict[str, str], label: str) -> str:
    """The file's type when its extension is allowed and its bytes agree (422 if not)."""
    if suffix not in allowed:
        raise ApiError(
            422,
            f"{label}: file type {suffix or '(no extension)'!r} not accepted here; expected "
            f"{', '.join(sorted(allowed))}",
        )
    kind = allowed[suffix]
    seen = sniff(data_head)
    expect = {"nifti_gz": "gzip", "edf": "edf", "png": "png", "jpeg": "jpeg", "dicom": "dicom"}
    if kind == "nifti":
        ok = seen == "nifti"
    elif kind in expect:
        ok = seen == expect[kind]
    else:  # text, CSV, WFDB: no magic number; text is checked when read
        ok = seen in (None, "edf") if kind != "wfdb_data" else True
    if not ok:
        raise ApiError(
            422,
            f"{label}: the file's content is not {TYPE_NAMES[kind]} as its extension "
            f"{suffix!r} says" + (f" (it looks like {seen})" if seen else ""),
        )
    return kind


def _nifti_gz_header(path: Path, label: str) -> None:
    """A gzip file whose first decompressed bytes are a NIfTI header (read 544 bytes
    only)."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(544)
    except (OSError, EOFError) as err:
        raise ApiError(422, f"{label}: broken gzip data ({type(err).__name__})") from None
    if sniff(head) != "nifti":
        raise ApiError(422, f"{label}: gzip file that does not hold a NIfTI image")


def rewrite_wfdb_header(text: str, record: str, data_file: str, label: str) -> str:
    """A single-segment WFDB header renamed to ``record`` reading ``data_file`` (the
    client's names are not kept). Multi-segment records and headers naming several data
    files are refused."""
    lines = text.splitlines()
    out, seen_record, signals, names = [], False, 0, set()
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            out.append(line)
            continue
        parts = s.split()
        if not seen_record:
            if "/" in parts[0]:
                raise ApiError(422, f"{label}: multi-segment WFDB records are not accepted")
            try:
                signals = int(parts[1]) if len(parts) > 1 else 0
            except ValueError:
                raise ApiError(422, f"{label}: WFDB header without a signal count") from None
            out.append(" ".join([record, *parts[1:]]))
            seen_record = True
            continue
        if signals > 0:
            names.add(parts[0])
            out.append(" ".join([data_file, *parts[1:]]))
            signals -= 1
            continue
        out.append(line)
    if not seen_record:
        raise ApiError(422, f"{label}: WFDB header without a record line")
    if len(names) > 1:
        raise ApiError(422, f"{label}: WFDB header naming several data files; send one")
    return "\n".join(out) + "\n"


# -- a served model ------------------------------------------------------------------------


def bundle_hash(path: Path) -> str:
    """SHA-256 of the bundle's manifest file list (the sha256 of every file), canonical
    JSON: the same bundle content gives the same hash wherever it is."""
    manifest = json.loads((path / "manifest.json").read_text())
    files = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(files.encode()).hexdigest()


def _expects(model: Any, spec: Any) -> dict[str, dict[str, Any]]:
    """What each modality takes, for clients (``GET /v1/models/{name}``)."""
    out: dict[str, dict[str, Any]] = {}
    by_name = {m.name: m for m in spec.modalities}
    for name, pre in model.preprocessors_.items():
        m = by_name.get(name)
        kind = getattr(pre, "kind", None) or (m.kind if m else "?")
        d: dict[str, Any] = {"kind": kind}
        if kind == "tabular":
            d["input"] = "JSON object of field -> value, or a CSV file with one row"
            d["numeric"] = [str(c) for c in pre.numeric_]
            d["categorical"] = {str(c): list(v) for c, v in pre.categories_.items()}
        elif kind == "omics":
            d["input"] = "JSON object of feature -> number, or a CSV file with one row"
            d["features"] = [str(c) for c in pre.columns_]
        elif kind == "text":
            d["input"] = "JSON text or list of texts (several notes), or .txt files"
        elif kind == "timeseries":
            d["input"] = "JSON list of {time (hours), variable, value}"
            d["variables"] = [str(v) for v in getattr(pre, "variables_", [])]
        elif kind == "image":
            d["input"] = "multipart files: " + ", ".join(sorted(IMAGE_EXT))
            d["max_images"] = int(getattr(pre, "max_images_", 1) or 1)
            if getattr(pre, "channel_names_", None):  # as_channels: one file per channel
                d["channels"] = [str(c) for c in pre.channel_names_]
        elif kind == "signal":
            d["input"] = "multipart files: one .edf, or a WFDB .hea with its .dat"
            d["channels"] = [str(c) for c in getattr(pre, "channels_", [])]
            d["fs_hz"] = _num(getattr(pre, "fs_", None))
        out[name] = d
    return out


class Batcher:
    """Runs ``run(items) -> results`` in a worker thread on the items queued while the
    previous batch ran (at most ``max_batch``): concurrent requests share one model
    call. One runner per event loop."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_batch: int) -> None:
        self._run = run
        self._max = max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._worker(self._queue))
        fut = loop.create_future()
        assert self._queue is not None
        self._queue.put_nowait((item, fut))
        return await fut

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def _worker(self, queue: asyncio.Queue) -> None:
        import anyio

        while True:
            batch = [await queue.get()]
            while len(batch) < self._max and not queue.empty():
                batch.append(queue.get_nowait())
            live = [(i, f) for i, f in batch if not f.done()]
            if not live:
                continue
            try:
                results = await anyio.to_thread.run_sync(self._run, [i for i, _ in live])
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for _, f in live:
                    if not f.done():
                        f.set_exception(err)
                continue
            self.batches += 1
            self.items += len(live)
            for (_, f), r in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(r)


class ServedModel:
    """One loaded bundle: the candidate, its card, hash and input description."""

    def __init__(self, name: str, path: Path, settings: ServeSettings) -> None:
        self.name = name
        self.path = Path(path)
        self.settings = settings
        self.model = load_bundle(self.path)
        self.spec = self.model.spec
        self.hash = bundle_hash(self.path)
        try:
            self.card = json.loads((self.path / "card.json").read_text())
        except (OSError, ValueError):
            self.card = {}
        self.kinds = {m.name: m.kind for m in self.spec.modalities}
        self.modalities = list(self.model.preprocessors_)
        self.expects = _expects(self.model, self.spec)
        self.feature_sets = {
            n: frozenset(d.get("features") or d.get("numeric") or [])
            for n, d in self.expects.items()
        }
        self.positions = {
            n: {f: j for j, f in enumerate(d["features"])}
            for n, d in self.expects.items()
            if d["kind"] == "omics"
        }
        self.task = self.model.task_.name
        self.classes = [str(c) for c in (self.model.classes_ or [])]
        # probabilities are the bundle's calibrated ones: its recalibration (temperature or
        # isotonic, fitted on validation patients) or "none" (the learner's own)
        cal = getattr(self.model, "calibrator_", None)
        self.calibration = str(getattr(cal, "method", None) or "none")
        self.synthetic = bool(self.card.get("synthetic")) or _synthetic_dataset(self.spec.dataset)
        self.lock = threading.Lock()
        self._subspecs: dict[frozenset, Any] = {}
        self._sub_lock = threading.Lock()
        self.batcher = Batcher(self.predict_batch, settings.max_batch)

    # -- description -------------------------------------------------------------------
    @property
    def intended_use(self) -> str | None:
        return self.card.get("intended_use")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bundle_hash": self.hash,
            "task": self.task,
            "classes": self.classes or None,
            "family": getattr(self.model, "family", None),
            "candidate": getattr(self.model, "name", None),
            "dataset": self.card.get("dataset", self.spec.dataset),
            "modalities": self.modalities,
            "intended_use": self.intended_use,
        }

    def metrics(self) -> dict[str, Any]:
        c = self.card
        return {
            "metrics_test": c.get("metrics_test"),
            "evaluation": c.get("evaluation"),
            "n_train": c.get("n_train"),
            "n_test": c.get("n_test"),
            "calibration": c.get("calibration"),
        }

    def details(self, with_metrics: bool) -> dict[str, Any]:
        card = {
            k: v
            for k, v in self.card.items()
            # training_patients: the sketch predict checks scored patients against
            if k
            not in (
                "metrics_test", "evaluation", "calibration", "n_train", "n_test",
                "training_patients",
            )
        }  # fmt: skip
        out = {**self.summary(), "card": card, "expects": self.expects}
        if self.task == "survival":
            out["horizons"] = list(self.spec.target.horizons)
            out["time_unit"] = getattr(self.spec.target, "time_unit", None)
        out["metrics"] = self.metrics() if with_metrics else None
        return out

    # -- the cohort of a batch ---------------------------------------------------------
    def _subspec(self, names: frozenset) -> Any:
        with self._sub_lock:
            sub = self._subspecs.get(names)
            if sub is None:
                mods = [
                    m.model_copy(update={"source": []})
                    for m in self.spec.modalities
                    if m.name in names
                ]
                sub = self.spec.model_copy(update={"modalities": mods})
                self._subspecs[names] = sub
            return sub

    def _frames(self, items: list[PatientInput], ids: list[str]) -> dict[str, pd.DataFrame]:
        frames: dict[str, pd.DataFrame] = {}
        for name in self.modalities:
            rows = [(sid, it) for sid, it in zip(ids, items, strict=True) if name in it.sent]
            if not rows:
                continue
            kind = self.kinds.get(name)
            index = pd.Index([sid for sid, _ in rows], name="id")
            if kind == "omics":
                cols = self.expects[name]["features"]
                x = np.array([it.tables[name] for _, it in rows], dtype=float)
                frames[name] = pd.DataFrame(x, index=index, columns=pd.Index(cols, dtype=object))
            elif kind == "tabular":
                e = self.expects[name]
                cols = [*e["numeric"], *e["categorical"]]
                data = {
                    c: pd.Series([it.tables[name].get(c) for _, it in rows], index=index)
                    for c in cols
                }
                df = pd.DataFrame(data, index=index)
                for c in e["numeric"]:
                    try:
                        df[c] = df[c].astype(float)
                    except (TypeError, ValueError):
                        pass  # the kind's check names the column and the value's patient
                frames[name] = df
            elif kind == "text":
                long = [(sid, t, k) for sid, it in rows for k, t in enumerate(it.notes[name])]
                frames[name] = pd.DataFrame(
                    {
                        "id": [r[0] for r in long],
                        "text": [r[1] for r in long],
                        "problem": [None] * len(long),
                        "order": [r[2] for r in long],
                    }
                )
            elif kind == "timeseries":
                long = [(sid, *obs) for sid, it in rows for obs in it.series[name]]
                frames[name] = pd.DataFrame(long, columns=["id", "time", "variable", "value"])
            elif kind == "image":
                frames[name] = pd.DataFrame(
                    {"paths": [list(it.files[name]) for _, it in rows]}, index=index
                )
            elif kind == "signal":
                frames[name] = pd.DataFrame(
                    {"path": [it.files[name][0] for _, it in rows]}, index=index
                )
        return frames

    def _checked(
        self, sub: Any, frames: dict[str, pd.DataFrame]
    ) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
        """Each modality's frame through its kind's ``check`` (as
        :func:`holomed.cohort.read_modalities` does), except an omics frame of float
        values that are all finite as float32 or missing, with no empty row: the check
        would return it unchanged and report nothing, so it is used as it is."""
        raw: dict[str, pd.DataFrame] = {}
        excluded: list[dict[str, Any]] = []
        for m in sub.modalities:
            df = frames[m.name]
            if df.shape[0] == 0:
                raise CohortError(f"modality {m.name!r} is empty (no patients)")
            if m.kind == "omics" and df.shape[1] and all(t == np.float64 for t in df.dtypes):
                x = df.to_numpy()
                nan = np.isnan(x)
                if (finite32(x) | nan).all() and not nan.all(axis=1).any():
                    raw[m.name] = df
                    continue
            where = f"dataset {self.spec.dataset!r} modality {m.name!r}"
            df, problems = get_modality(m.kind).check(df, m, where)
            excluded += [{"scope": "modality", **p} for p in problems]
            raw[m.name] = df
        return raw, excluded

    def cohort(self, items: list[PatientInput], ids: list[str]) -> Any:
        """The batch as an unlabelled cohort (ids are slot names, never patient ids),
        through the kinds' own checks."""
        frames = self._frames(items, ids)
        for m in self.spec.modalities:  # a modality reading another's frame reads its upload
            if m.frame in frames and m.name not in frames:
                frames[m.name] = frames[m.frame]
        sub = self._subspec(frozenset(frames))
        raw, excluded = self._checked(sub, frames)
        return Cohort(
            ids=np.asarray(ids, dtype=str),
            modalities=modality_data(sub, raw, ids),
            y=None,
            task=self.spec.target.task,
            classes=self.spec.target.classes,
            excluded=excluded,
            name=self.spec.dataset,
        )

    def _usage(self, cohort: Any, i: int, item: PatientInput) -> dict[str, Any]:
        sid = str(cohort.ids[i])
        used = [
            n for n in self.modalities if n in cohort.modalities and cohort.modalities[n].present[i]
        ]
        folders = [item.folder] if item.folder else []
        unusable: dict[str, str] = {}
        warnings = list(item.warnings)
        for e in cohort.excluded:
            if str(e.get("id")) != sid:
                continue
            reason = _clean_message(Exception(e.get("reason", "")), folders)
            m = e.get("modality")
            if e.get("scope", "modality") == "modality" and m:
                unusable[str(m)] = reason
            else:
                warnings.append(f"modality {m!r}: {reason}" if m else reason)
        return {
            "used": used,
            "missing": [n for n in self.modalities if n not in item.sent],
            "unusable": unusable,
            "warnings": warnings,
        }

    def _outputs(self, row: np.ndarray) -> dict[str, Any]:
        t = self.spec.target
        return output_record(
            self.task, row, self.classes, t.horizons or (), getattr(t, "time_unit", None),
            self.calibration,
        )  # fmt: skip

    def _answer(
        self,
        cohort: Any,
        i: int,
        item: PatientInput,
        row: Any,
        far: dict[str, dict[str, list[int]]] | None = None,
    ) -> dict[str, Any]:
        usage = self._usage(cohort, i, item)
        if not usage["used"]:
            why = "; ".join(f"{m}: {r}" for m, r in usage["unusable"].items())
            raise ApiError(422, "no usable modality" + (f" ({why})" if why else ""))
        odd = [f"{m}.{c}" for m, cols in (far or {}).items() for c, rows in cols.items()
               if i in rows]  # fmt: skip
        if odd:
            usage["warnings"].append(
                f"values far outside the range the model was trained on: {', '.join(odd)}; "
                "a unit or typing error? The prediction is unreliable"
            )
        if not np.isfinite(np.asarray(row, dtype=float)).all():
            raise ApiError(
                422,
                "the model's output is not a number for this patient"
                + (f": values far outside the training range ({', '.join(odd)})" if odd else "")
                + "; check the values and their units",
            )
        out = {
            "model": self.name,
            "bundle_hash": self.hash,
            "task": self.task,
            "patient": item.pseudonym,
            **self._outputs(row),
            "modalities": {
                "used": usage["used"],
                "missing": usage["missing"],
                "unusable": usage["unusable"],
                "fields": item.field_report,
            },
            "warnings": usage["warnings"],
            "intended_use": self.intended_use,
        }
        if self.synthetic:
            out["synthetic_data"] = True
        return out

    # -- inference (worker threads) ----------------------------------------------------
    def predict_batch(self, items: list[PatientInput]) -> list[dict[str, Any] | ApiError]:
        """Predictions for a batch; on a failure, each patient again on its own so that
        one bad input fails only its own request."""
        if len(items) > 1:
            try:
                return self._predict(items)
            except Exception:  # noqa: BLE001 - retried one by one just below
                pass
        out: list[dict[str, Any] | ApiError] = []
        for it in items:
            try:
                out.extend(self._predict([it]))
            except ApiError as err:
                out.append(err)
            except Exception as err:  # noqa: BLE001 - becomes the request's error
                out.append(self._error(err, it))
        return out

    def _predict(self, items: list[PatientInput]) -> list[dict[str, Any] | ApiError]:
        ids = [f"slot{k}" for k in range(len(items))]
        with self.lock:
            cohort = self.cohort(items, ids)
            proba = np.asarray(self.model.predict_proba(cohort))
            far = out_of_range(self.model)
        out: list[dict[str, Any] | ApiError] = []
        for i, it in enumerate(items):
            try:
                out.append(self._answer(cohort, i, it, proba[i], far))
            except ApiError as err:
                out.append(err)
        return out

    def explain_one(self, item: PatientInput) -> dict[str, Any]:
        """Prediction plus modality Shapley values (and leave-one-out deltas), the
        fusion's modality weights when it has them, and the top features per modality."""
        try:
            with self.lock:
                cohort = self.cohort([item], ["slot0"])
                proba = np.asarray(self.model.predict_proba(cohort))
                far = out_of_range(self.model)
                out = self._answer(cohort, 0, item, proba[0], far)  # before explaining
                why = self.model.explain(cohort, top_k=self.settings.top_features)
        except ApiError:
            raise
        except Exception as err:  # noqa: BLE001 - becomes the request's error
            raise self._error(err, item) from None
        out.update(explanation_record(why, out["modalities"]["used"], self.task))
        return out

    def _error(self, err: Exception, item: PatientInput) -> ApiError:
        folders = [item.folder] if item.folder else []
        if isinstance(err, HolomedError | ValueError | KeyError | OSError):
            return ApiError(422, _clean_message(err, folders))
        log.error(
            "model %s failed: %s: %s\n%s",
            self.name,
            type(err).__name__,
            _clean_message(err, folders),
            "".join(traceback.format_tb(err.__traceback__)),
        )
        return ApiError(500, "internal error while running the model (logged on the server)")


def _synthetic_dataset(name: str) -> bool:
    """Whether ``name`` is a registered dataset of generated (synthetic) data."""
    try:
        return bool(DATASETS.get(name).synthetic)
    except Exception:  # noqa: BLE001 - not a registered dataset
        return False


# -- reading a request's patient ------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _number(v: Any, label: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool):
        raise ApiError(422, f"{label}: expected a number; got true/false")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return math.nan
        try:
            x = float(s)
        except ValueError:
            raise ApiError(422, f"{label}: expected a number; got text") from None
        if not math.isfinite(x):
            raise ApiError(422, f"{label}: expected a finite number")
        return x
    raise ApiError(422, f"{label}: expected a number; got {type(v).__name__}")


class InputReader:
    """Turns a request's modalities into a :class:`PatientInput`, checking each against
    what the model expects (named errors, 422)."""

    def __init__(self, served: ServedModel) -> None:
        self.m = served

    def modality(self, name: str, value: Any, item: PatientInput) -> None:
        if name not in self.m.expects:
            raise ApiError(
                422,
                f"modalities: {_q(name)} is not a modality of model {self.m.name!r}; it has "
                f"{', '.join(self.m.modalities)}",
            )
        kind = self.m.expects[name]["kind"]
        label = f"modality {name!r}"
        if kind in TABLE_KINDS:
            self.table(name, kind, value, item, label)
        elif kind == "text":
            notes = [value] if isinstance(value, str) else value
            if not isinstance(notes, list) or not all(isinstance(t, str) for t in notes):
                raise ApiError(422, f"{label} (text): expected a text or a list of texts")
            notes = [t for t in notes if t.strip()]
            if not notes:
                raise ApiError(422, f"{label} (text): empty note")
            item.notes.setdefault(name, []).extend(notes)
        elif kind == "timeseries":
            self.series(name, value, item, label)
        elif kind in FILE_KINDS:
            raise ApiError(
                422,
                f"{label} ({kind}) takes files: send multipart/form-data with a file field "
                f"named {name!r}",
            )
        else:
            raise ApiError(422, f"{label}: modality kind {kind!r} is not served over HTTP")

    def table(self, name: str, kind: str, value: Any, item: PatientInput, label: str) -> None:
        if not isinstance(value, dict):
            raise ApiError(422, f"{label} ({kind}): expected an object of field -> value")
        e = self.m.expects[name]
        if name in item.tables:
            raise ApiError(422, f"{label}: given twice")
        row: dict[str, Any] = {}
        if kind == "omics":  # a list of values in the order of the model's features
            pos = self.m.positions[name]
            vec = [math.nan] * len(pos)
            ignored = 0
            for k, v in value.items():
                j = pos.get(k)
                if j is None:
                    ignored += 1
                elif type(v) is float or type(v) is int:  # the common case, checked fast
                    vec[j] = float(v)
                else:
                    vec[j] = _number(v, f"{label}, feature {_q(k)}")
            given = sum(1 for v in vec if v == v)  # NaN != NaN
            report = {"given": given, "expected": len(pos), "ignored": ignored}
            if not given:
                raise ApiError(422, f"{label} ({kind}): no field has a value")
            item.tables[name] = vec
            item.field_report[name] = report
            return
        else:
            numeric, categorical = self.m.feature_sets[name], e["categorical"]
            unknown = [k for k in value if k not in numeric and k not in categorical]
            if unknown:
                shown = ", ".join(_q(k) for k in unknown[:5])
                raise ApiError(
                    422,
                    f"{label}: unknown field(s) {shown}; expected fields: "
                    f"{', '.join([*e['numeric'], *categorical])}",
                )
            for k, v in value.items():
                if k in numeric:
                    row[k] = _number(v, f"{label}, field {_q(k)}")
                elif v is None or (isinstance(v, str) and not v.strip()):
                    row[k] = None
                elif isinstance(v, bool) or not isinstance(v, str | int | float):
                    raise ApiError(422, f"{label}, field {_q(k)}: expected a category (text)")
                else:
                    row[k] = category_text(v)
                    if row[k] not in categorical[k]:
                        item.warnings.append(
                            f"{label}, field {_q(k)}: a category not seen in training "
                            "(encoded as no category)"
                        )
            fields = [*e["numeric"], *categorical]
            have = [
                k
                for k in fields
                if row.get(k) is not None and not (isinstance(row[k], float) and math.isnan(row[k]))
            ]
            report = {"given": len(have), "missing": [k for k in fields if k not in have]}
        if not report["given"]:
            raise ApiError(422, f"{label} ({kind}): no field has a value")
        item.tables[name] = row
        item.field_report[name] = report

    def series(self, name: str, value: Any, item: PatientInput, label: str) -> None:
        if not isinstance(value, list) or not value:
            raise ApiError(422, f"{label} (timeseries): expected a list of observations")
        rows = []
        for k, obs in enumerate(value):
            if not isinstance(obs, dict) or not {"time", "variable", "value"} <= set(obs):
                raise ApiError(422, f"{label}, observation {k}: expected {{time, variable, value}}")
            t = _number(obs["time"], f"{label}, observation {k}, time")
            if not isinstance(obs["variable"], str):
                raise ApiError(422, f"{label}, observation {k}, variable: expected text")
            v = _number(obs["value"], f"{label}, observation {k}, value")
            rows.append((t, obs["variable"].strip(), v))
        item.series[name] = rows

    def body(self, obj: Any, pseudonyms: Pseudonyms, item: PatientInput) -> None:
        """The JSON body (or multipart fields as one object)."""
        if not isinstance(obj, dict):
            raise ApiError(422, "body: expected a JSON object")
        extra = [k for k in obj if k not in ("patient_id", "modalities", "notes")]
        if extra:
            raise ApiError(
                422,
                f"body: unknown key(s) {', '.join(_q(k) for k in extra[:5])}; expected "
                "patient_id, modalities, notes",
            )
        item.pseudonym = pseudonyms(obj.get("patient_id"))
        mods = obj.get("modalities") or {}
        if not isinstance(mods, dict):
            raise ApiError(422, "modalities: expected an object of modality -> data")
        for name, value in mods.items():
            self.modality(str(name), value, item)
        if obj.get("notes") is not None:
            texts = [n for n, d in self.m.expects.items() if d["kind"] == "text"]
            if len(texts) != 1:
                raise ApiError(
                    422,
                    "notes: the model has "
                    + (
                        "no text modality"
                        if not texts
                        else f"several text modalities ({', '.join(texts)}); "
                        "send notes under modalities.<name>"
                    ),
                )
            self.modality(texts[0], obj["notes"], item)

    # -- multipart files ---------------------------------------------------------------
    def files(
        self, uploads: dict[str, list[tuple[str, bytes]]], item: PatientInput, folder: Path
    ) -> None:
        """Validate and store uploaded files (``{field: [(filename, bytes)]}``) in
        ``folder`` under names chosen here; tables and notes are read into ``item``."""
        max_px = self.m.settings.max_image_pixels
        for name, parts in uploads.items():
            if name not in self.m.expects:
                raise ApiError(
                    422,
                    f"file field {_q(name)} is not a modality of model {self.m.name!r}; it "
                    f"has {', '.join(self.m.modalities)}",
                )
            kind = self.m.expects[name]["kind"]
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]
            if kind == "image":
                paths = []
                for k, (fname, data) in enumerate(parts):
                    label = f"modality {name!r}, file {k + 1}"
                    suffix = _suffix(fname)
                    t = _file_type(data[:1024], suffix, IMAGE_EXT, label)
                    path = folder / f"{safe}_{k}{suffix}"
                    path.write_bytes(data)
                    if t == "nifti_gz":
                        _nifti_gz_header(path, label)
                    check_image_file(path, t, label, max_px)
                    paths.append(str(path))
                item.files[name] = paths
                most = int(self.m.expects[name].get("max_images") or 1)
                channels = self.m.expects[name].get("channels")
                if not channels and len(paths) > most:  # the first ``most`` are read: say so
                    item.warnings.append(
                        f"modality {name!r}: the model reads at most {most} image(s) per "
                        f"patient; files {most + 1} to {len(paths)} were not used"
                    )
            elif kind == "signal":
                item.files[name] = [self._signal(name, parts, folder, safe)]
            elif kind in TABLE_KINDS:
                if len(parts) != 1:
                    raise ApiError(422, f"modality {name!r}: send one CSV file")
                fname, data = parts[0]
                label = f"modality {name!r}, file 1"
                _file_type(data[:1024], _suffix(fname), TABLE_EXT, label)
                self.table(name, kind, self._csv_row(name, _utf8(data, label), label), item,
                           f"modality {name!r}")  # fmt: skip
            elif kind == "text":
                notes = []
                for k, (fname, data) in enumerate(parts):
                    label = f"modality {name!r}, file {k + 1}"
                    _file_type(data[:1024], _suffix(fname), TEXT_EXT, label)
                    notes.append(_utf8(data, label))
                self.modality(name, notes, item)
            else:
                raise ApiError(422, f"modality {name!r} ({kind}) does not take files")

    def _csv_row(self, name: str, text: str, label: str) -> dict[str, Any]:
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except Exception as err:  # noqa: BLE001 - any parser error is the client's
            raise ApiError(
                422, f"{label}: not a readable CSV table ({type(err).__name__})"
            ) from None
        if len(df) != 1:
            raise ApiError(
                422, f"{label}: expected a header and one row (one patient); got {len(df)} rows"
            )
        m = next((s for s in self.m.spec.modalities if s.name == name), None)
        idc = (m.id_column if m is not None else None) or "id"
        df = df.drop(columns=[c for c in (idc, "id", "patient_id") if c in df.columns])
        return {str(k): (None if str(v).strip() == "" else v) for k, v in df.iloc[0].items()}

    def _signal(self, name: str, parts: list[tuple[str, bytes]], folder: Path, safe: str) -> str:
        label = f"modality {name!r}"
        types = [
            _file_type(d[:1024], _suffix(f), SIGNAL_EXT, f"{label}, file {k + 1}")
            for k, (f, d) in enumerate(parts)
        ]
        if types == ["edf"]:
            path = folder / f"{safe}.edf"
            path.write_bytes(parts[0][1])
            return str(path)
        if sorted(types) == ["wfdb_data", "wfdb_header"]:
            head = parts[types.index("wfdb_header")][1]
            data = parts[types.index("wfdb_data")][1]
            record = f"{safe}_rec"
            text = rewrite_wfdb_header(
                _utf8(head, f"{label}, WFDB header"), record, f"{record}.dat", label
            )
            (folder / f"{record}.hea").write_text(text)
            (folder / f"{record}.dat").write_bytes(data)
            return str(folder / record)
        raise ApiError(
            422, f"{label} (signal): send one .edf file, or one .hea with its one .dat file"
        )


# -- the application ----------------------------------------------------------------------


class ServerState:
    """Everything the endpoints share."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        settings: ServeSettings,
        engine: Any,
        pseudonyms: Pseudonyms,
    ) -> None:
        self.models = models
        self.settings = settings
        self.engine = engine
        self.tokens = TokenStore(engine, settings.token_cache_seconds)
        self.audit = AuditTrail(engine, settings.audit_flush_seconds)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.pseudonyms = pseudonyms
        self.started = _now()
        self._verifying: dict[str, asyncio.Future] = {}
        self._argon = threading.BoundedSemaphore(ARGON2_AT_ONCE)

    def _verify_now(self, token: str) -> TokenInfo | None:
        with self._argon:  # argon2 checks are costly: a flood of wrong tokens waits here
            return self.tokens.verify(token, fresh=True)

    def _verification(self, token: str) -> asyncio.Future:
        """The running verification of ``token`` (one at a time per token, however many
        requests present it at once)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        loop = asyncio.get_running_loop()
        fut = self._verifying.get(key)
        if fut is None or fut.done() or fut.get_loop() is not loop:
            fut = asyncio.ensure_future(run_in_threadpool(self._verify_now, token))
            self._verifying[key] = fut
            fut.add_done_callback(
                lambda f: self._verifying.pop(key, None) if self._verifying.get(key) is f else None
            )
        return fut

    async def verify(self, token: str) -> TokenInfo | None:
        return await asyncio.shield(self._verification(token))

    def verify_later(self, token: str) -> None:
        fut = self._verification(token)
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    def close(self) -> None:
        for m in self.models.values():
            m.batcher.stop()
        self.audit.close()


def _model_names(bundles: Sequence[str | Path] | Mapping[str, str | Path]) -> dict[str, Path]:
    """``NAME=PATH`` items, paths or a mapping -> {name: path}; a bundle folder named
    ``bundle`` is named after its parent folder."""
    items: list[tuple[str | None, Path]] = []
    if isinstance(bundles, Mapping):
        items = [(str(k), Path(v)) for k, v in bundles.items()]
    else:
        for b in bundles:
            s = str(b)
            if "=" in s and not Path(s).exists():
                k, v = s.split("=", 1)
                items.append((k.strip(), Path(v.strip())))
            else:
                items.append((None, Path(s)))
    out: dict[str, Path] = {}
    for name, path in items:
        if name is None:
            p = path.resolve()
            name = p.parent.name if p.name == "bundle" else p.name
        if not NAME.match(name):
            raise ValueError(
                f"model name {name!r}: use letters, digits, '_', '-' or '.' (at most 64); "
                "give one as NAME=PATH"
            )
        if name in out:
            raise ValueError(f"model name {name!r} given twice; name them with NAME=PATH")
        out[name] = path
    if not out:
        raise ValueError("no bundle to serve")
    return out


PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "patient_id": {
                            "type": ["string", "integer"],
                            "description": "pseudonymised at once; never stored or returned",
                        },
                        "modalities": {
                            "type": "object",
                            "description": "modality -> data: an object of field -> value "
                            "(tables, omics), a text or list of texts (notes), a list of "
                            "{time, variable, value} (time series)",
                        },
                        "notes": {
                            "type": ["string", "array"],
                            "description": "notes for the model's text modality",
                        },
                    },
                },
                "example": {
                    "patient_id": "A-17",
                    "modalities": {"clinical": {"age": 61, "sex": "F"}},
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "patient_id": {"type": "string"},
                        "modalities": {"type": "string", "description": "JSON object as text"},
                        "notes": {"type": "string"},
                    },
                    "additionalProperties": {
                        "type": "string",
                        "format": "binary",
                        "description": "files; the field name is the modality",
                    },
                }
            },
        },
    }
}


class TokenRequest(BaseModel):
    """A new token's role and a name saying who or what holds it (no other keys)."""

    model_config = {"extra": "forbid"}

    role: str = Field(description="clinician, researcher or admin")
    name: str = Field("", max_length=200)


def create_api(
    bundles: Sequence[str | Path] | Mapping[str, str | Path],
    settings: ServeSettings | None = None,
    db: str | None = None,
    state_dir: str | Path | None = None,
    privacy_key: PrivacyKey | None = None,
    public_docs: bool = False,
) -> FastAPI:
    """The API over ``bundles`` (paths, ``NAME=PATH`` items or {name: path}), with tokens
    and the audit trail in the database ``db`` (see
    :func:`holomed.serve.settings.db_url`). Models are loaded here, once. The served
    application, with the clinician web page, is :func:`holomed.serve.server.create_app`."""
    settings = settings or ServeSettings.from_env()
    settings.check()
    # pydicom logs the values it finds invalid in a header: never in this server's logs
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    engine = make_engine(db_url(db, state_dir))
    models = {n: ServedModel(n, p, settings) for n, p in _model_names(bundles).items()}
    state = ServerState(models, settings, engine, Pseudonyms(privacy_key))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        for m in models.values():
            m.batcher.stop()
        await run_in_threadpool(state.audit.close)

    app = FastAPI(
        title="holomed serve",
        description=(__doc__ or "").split("\n\n")[0],
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.holomed = state
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(AuditMiddleware, state=state)
    _handlers(app)

    def require(permission: str) -> Callable[..., Any]:
        async def dependency(request: Request) -> TokenInfo:
            return await _authorize(request, state, permission)

        return dependency

    any_role = Depends(require("models"))

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """The process is up (no token needed)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["service"])
    async def ready(_t: TokenInfo = any_role) -> JSONResponse:
        """Models loaded and the audit trail writable (503 otherwise)."""

        def db_ok() -> bool:
            from sqlalchemy import text

            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - any failure: not ready
                return False

        ok_db = await run_in_threadpool(db_ok)
        ok = ok_db and state.audit.healthy and bool(models)
        body = {
            "ready": ok,
            "models": list(models),
            "audit": "ok" if state.audit.healthy and ok_db else "failing",
            "pseudonym_key": state.pseudonyms.scope,
            "started": state.started,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    if public_docs:
        docs_auth: list[Any] = []
    else:
        docs_auth = [any_role]

    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_auth)
    async def docs() -> HTMLResponse:
        # Swagger UI's script and style from the fastapi-offline package, served below:
        # FastAPI's default loads them from a CDN, which an offline network cannot reach
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="holomed serve",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get(DOCS_STATIC + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        # public code of the Swagger UI (no patient data, no model): no token, as a
        # browser loads it from a script tag; only these files, never a path
        kind = DOCS_ASSETS.get(name)
        if kind is None:
            raise ApiError(404, f"no such file {_q(name)}")
        from importlib.resources import files

        data = (files("fastapi_offline") / "static" / name).read_bytes()
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=86400"})

    def served(request: Request, name: str) -> ServedModel:
        m = models.get(name)
        if m is None:
            raise ApiError(404, f"no model named {_q(name)}; served: {', '.join(models)}")
        ctx = request.scope.get(AUDIT_KEY)
        if ctx is not None:
            ctx["model"], ctx["bundle_hash"] = m.name, m.hash
        return m

    @app.get("/v1/models", tags=["models"])
    async def list_models(_t: TokenInfo = any_role) -> JSONResponse:
        """The models served."""
        return JSONResponse({"models": [m.summary() for m in models.values()]})

    @app.get("/v1/models/{name}", tags=["models"])
    async def model_details(request: Request, name: str, t: TokenInfo = any_role) -> JSONResponse:
        """A model's card, the modalities and fields it expects, and (researcher or
        admin) its test metrics with confidence intervals."""
        return JSONResponse(served(request, name).details(t.can("metrics")))

    @app.get("/v1/models/{name}/metrics", tags=["models"])
    async def model_metrics(
        request: Request, name: str, _t: TokenInfo = Depends(require("metrics"))
    ) -> JSONResponse:
        """Test metrics with their 95 % bootstrap CIs, calibration (researcher)."""
        return JSONResponse(served(request, name).metrics())

    async def patient(request: Request, m: ServedModel) -> PatientInput:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        item = PatientInput()
        reader = InputReader(m)
        ctx = request.scope.get(AUDIT_KEY, {})
        try:
            if ctype == "application/json":
                body = await request.body()
                try:
                    obj = loads(body)
                except (ValueError, UnicodeDecodeError) as err:
                    msg = err.msg if isinstance(err, json.JSONDecodeError) else "not JSON"
                    raise ApiError(422, f"body: not valid JSON ({msg})") from None
                accessions = take_accessions(obj)  # studies from the PACS (serve.pacs)
                reader.body(obj, state.pseudonyms, item)
                if accessions:
                    await fetch_accessions(state, m, item, accessions)
            elif ctype == "multipart/form-data":
                await _multipart(request, reader, item, state)
            else:
                raise ApiError(
                    415, "send application/json or multipart/form-data (files); got "
                    + (_q(ctype) if ctype else "no content type")
                )  # fmt: skip
        except BaseException:
            item.cleanup()
            raise
        finally:
            ctx["patient"] = item.pseudonym
            ctx["modalities"] = item.sent + audit_tags(item)
        if not item.sent:
            item.cleanup()
            raise ApiError(
                422, f"no modality given; model {m.name!r} takes {', '.join(m.modalities)}"
            )
        return item

    @app.post("/v1/models/{name}/predict", tags=["inference"], openapi_extra=PREDICT_DOC)
    async def predict(
        request: Request, name: str, _t: TokenInfo = Depends(require("predict"))
    ) -> JSONResponse:
        """Calibrated probabilities (or risk and survival, or a value), the predicted
        label, the modalities used, missing or unusable, for one patient."""
        m = served(request, name)
        item = await patient(request, m)
        try:
            result = await m.batcher.submit(item)
        finally:
            if item.folder is not None:
                await run_in_threadpool(item.cleanup)
        if isinstance(result, ApiError):
            raise result
        result["pseudonym_key"] = state.pseudonyms.scope
        return Json(result)

    @app.post("/v1/models/{name}/explain", tags=["inference"], openapi_extra=PREDICT_DOC)
    async def explain(
        request: Request, name: str, _t: TokenInfo = Depends(require("explain"))
    ) -> JSONResponse:
        """The prediction with modality Shapley values, leave-one-out deltas, modality
        weights (attention-type fusions) and the top features per modality."""
        m = served(request, name)
        item = await patient(request, m)
        try:
            result = await run_in_threadpool(m.explain_one, item)
        finally:
            if item.folder is not None:
                await run_in_threadpool(item.cleanup)
        result["pseudonym_key"] = state.pseudonyms.scope
        return Json(result)

    @app.get("/v1/audit/summary", tags=["audit"])
    async def audit_summary(
        since: str | None = None, _t: TokenInfo = Depends(require("audit"))
    ) -> JSONResponse:
        """Request counts by endpoint, status, role, model and day; no pseudonyms."""
        await run_in_threadpool(state.audit.flush, 5.0)
        try:
            counts = await run_in_threadpool(audit_counts, engine, since)
        except ValueError as err:  # a 'since' that is no ISO time
            raise ApiError(422, str(err)) from None
        return JSONResponse(counts)

    @app.get("/v1/tokens", tags=["tokens"])
    async def tokens_list(_t: TokenInfo = Depends(require("tokens"))) -> JSONResponse:
        """Every token's id, name, role, creation time and revocation (never secrets)."""
        rows = await run_in_threadpool(state.tokens.list_tokens)
        return JSONResponse({"tokens": [r.public() for r in rows]})

    @app.post("/v1/tokens", tags=["tokens"], status_code=201)
    async def tokens_create(
        body: TokenRequest, _t: TokenInfo = Depends(require("tokens"))
    ) -> JSONResponse:
        """A new token; the response is the only place it is ever shown."""
        if body.role not in ROLES:
            raise ApiError(422, f"role: expected one of {', '.join(ROLES)}")
        info, token = await run_in_threadpool(state.tokens.create, body.role, body.name)
        return JSONResponse({**info.public(), "token": token}, status_code=201)

    @app.post("/v1/tokens/{token_id}/revoke", tags=["tokens"])
    async def tokens_revoke(
        token_id: str, _t: TokenInfo = Depends(require("tokens"))
    ) -> JSONResponse:
        """Revoke a token (effective at once in this server)."""
        try:
            info = await run_in_threadpool(state.tokens.revoke, token_id)
        except LookupError:
            raise ApiError(404, f"no token with id {_q(token_id)}") from None
        return JSONResponse(info.public())

    return app


def _closing_delimiter(scope: dict) -> bytes | None:
    """``--BOUNDARY--`` of a multipart request, the boundary read from ``Content-Type`` by
    the parser Starlette uses (``python_multipart``); None for other requests."""
    from python_multipart.multipart import parse_options_header

    ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"")
    kind, options = parse_options_header(ctype)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return None
    return b"--" + boundary + b"--"


def check_closed(request: Request) -> None:
    """A multipart body must contain its closing delimiter (``--BOUNDARY--``; an epilogue
    may follow; :class:`BodyLimit` watches for it). The parser drops a last part that
    never ended, so a body cut short would be read as a request without that file:
    refused instead (the API and the web form alike)."""
    if request.scope.get(BODY_CLOSED) is False:
        raise ApiError(
            400,
            "multipart body: it ends before its closing boundary (--BOUNDARY--), so its "
            "last part is incomplete; nothing was predicted, send the whole request again",
        )


async def _multipart(
    request: Request, reader: InputReader, item: PatientInput, state: ServerState
) -> None:
    s = state.settings
    try:
        form = await request.form(
            max_files=s.max_files, max_fields=s.max_fields, max_part_size=s.max_request_bytes
        )
    except StarletteHTTPException as err:
        if err.status_code == 400 and "Too many files" in str(err.detail):
            raise ApiError(413, f"more than {s.max_files} files (max_files)") from None
        if err.status_code == 400:
            raise ApiError(400, f"multipart body: {err.detail}") from None
        raise
    try:
        check_closed(request)
        fields: dict[str, Any] = {}
        uploads: dict[str, list[tuple[str, Any]]] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read") and hasattr(value, "filename"):
                size = value.size if value.size is not None else 0
                if size > s.max_file_bytes:
                    raise ApiError(
                        413,
                        f"file field {_q(key)}: {size} bytes exceeds the limit of "
                        f"{s.max_file_bytes} (max_file_bytes)",
                    )
                uploads.setdefault(key, []).append((value.filename or "", value))
            else:
                if key in fields:
                    raise ApiError(422, f"form field {_q(key)} given twice")
                fields[key] = value
        obj: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "modalities":
                try:
                    obj[key] = loads(value)
                except ValueError:
                    raise ApiError(422, "modalities: the form field is not valid JSON") from None
            elif key in ("patient_id", "notes") or is_accession_field(key):
                obj[key] = value
            else:
                raise ApiError(
                    422,
                    f"form field {_q(key)}: unknown; expected patient_id, modalities, notes, "
                    "accession or files named after modalities",
                )
        accessions = take_accessions(obj)  # studies from the PACS (serve.pacs)
        reader.body(obj, state.pseudonyms, item)
        if uploads:
            item.folder = Path(tempfile.mkdtemp(prefix="holomed-upload-", dir=s.upload_dir))

            def store() -> None:
                read = {k: [(f, u.file.read()) for f, u in parts] for k, parts in uploads.items()}
                clash = sorted(set(read) & set(item.sent))
                if clash:
                    raise ApiError(
                        422, f"modality {clash[0]!r} given both as a file and as a field"
                    )
                assert item.folder is not None
                reader.files(read, item, item.folder)

            await run_in_threadpool(store)
        if accessions:
            await fetch_accessions(state, reader.m, item, accessions)
    finally:
        await form.close()


async def _authorize(request: Request, state: ServerState, permission: str) -> TokenInfo:
    """The request's bearer token record when it may do ``permission`` (401, 403 or 429
    else); the token's id and role go into the audit row."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    return await authorize_token(request, state, token, permission)


async def authorize_token(
    request: Request, state: ServerState, token: str, permission: str
) -> TokenInfo:
    """``token``'s record when it may do ``permission`` (401, 403 or 429 else), however
    the request presented it (a bearer header, the web page's session); the token's id
    and role go into the audit row."""
    ctx = request.scope.get(AUDIT_KEY, {})
    ctx["token_id"] = token_id_of(token)
    hit = state.tokens.cached(token)
    if hit is None:
        info = await state.verify(token)
    else:
        info = hit
        if hit and state.tokens.due(token):  # re-verified in the background, not awaited
            state.verify_later(token)
    if not info:
        raise ApiError(
            401, "invalid or revoked token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    ctx["role"] = info.role
    if not info.can(permission):
        raise ApiError(
            403, f"role {info.role!r} may not use this endpoint (needs {permission!r} access)"
        )
    wait = state.limiter.check(info.id)
    if wait > 0:
        raise ApiError(
            429,
            f"rate limit of {state.settings.rate_limit_per_minute} requests a minute reached "
            f"for this token; retry in {math.ceil(wait)} s",
            {"Retry-After": str(math.ceil(wait))},
        )
    return info


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_r: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, err: StarletteHTTPException) -> JSONResponse:
        detail = err.detail if isinstance(err.detail, str) else "request refused"
        if err.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint"
        return JSONResponse(
            {"error": detail}, status_code=err.status_code, headers=dict(err.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_r: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_r: Request, err: Exception) -> JSONResponse:
        log.error(
            "internal error: %s: %s\n%s",
            type(err).__name__,
            redact(str(err)),
            "".join(traceback.format_tb(err.__traceback__)),
        )
        return JSONResponse({"error": "internal error (logged on the server)"}, status_code=500)


# -- ASGI middleware -----------------------------------------------------------------------


class BodyLimit:
    """Refuses a request body over ``limit`` bytes: at once when ``Content-Length`` says
    so (no byte of it is read), else as soon as the streamed bytes pass it. The one
    reader of the raw stream, it also records whether a multipart body's closing
    delimiter went by (``scope[BODY_CLOSED]``, see :func:`check_closed`)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
        limit = self.limit
        seen = 0
        # a multipart body: whether its closing delimiter (--BOUNDARY--) went by
        closing = _closing_delimiter(scope)
        tail = b""
        if closing is not None:
            scope[BODY_CLOSED] = False

        async def limited() -> dict:
            nonlocal seen, tail
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            msg = await receive()
            if msg.get("type") == "http.request":
                chunk = msg.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    raise BodyTooLarge(limit)
                if closing is not None and not scope[BODY_CLOSED]:
                    window = tail + chunk  # the delimiter may straddle two chunks
                    scope[BODY_CLOSED] = closing in window
                    tail = window[-len(closing) :]
            return msg

        await self.app(scope, limited, send)


class AuditMiddleware:
    """One audit row per HTTP request, whatever its outcome (a refused token, a body too
    large, an unknown route, an internal error). A client that hangs up before its body
    was read in full is not an error of the server: nothing is answered or logged as an
    error, and the row says ``CLIENT_CLOSED`` (499). A client that sent its whole body and
    left before the answer is audited with the answer's status (it was served)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        started = time.time()
        ctx: dict[str, Any] = {}
        scope[AUDIT_KEY] = ctx
        status = [500]
        answered = [False]

        async def send_status(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                answered[0] = True
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            # the request's uploads are closed and deleted on the way out (the form
            # parser's spooled files, PatientInput.cleanup); uvicorn drops any reply
            if not answered[0]:
                status[0] = CLIENT_CLOSED
            log.info("a client hung up before its request was read")
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) if route is not None else None
            endpoint = f"{scope.get('method', '?')} {path or '(no route)'}"
            model = ctx.get("model")
            if model is None and path and "{name}" in path:
                name = (scope.get("path_params") or {}).get("name")
                if name in self.state.models:
                    model = name
            bhash = ctx.get("bundle_hash") or (
                self.state.models[model].hash if model in self.state.models else None
            )
            self.state.audit.record(
                time=started,
                endpoint=endpoint,
                status=status[0],
                latency_ms=(time.perf_counter() - t0) * 1000.0,
                token_id=ctx.get("token_id"),
                role=ctx.get("role"),
                model=model,
                bundle_hash=bhash,
                patient=ctx.get("patient"),
                modalities=ctx.get("modalities"),
            )
