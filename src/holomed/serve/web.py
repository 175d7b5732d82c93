"""The clinician web page of ``holomed serve``: server-rendered HTML under ``/web``.

Pages (Jinja2 templates in ``serve/templates``, one style sheet and one small script in
``serve/static``, all served by this app; nothing from a CDN, no web font):

- ``GET/POST /web/login``: sign in with an API token (the form posts it; it never goes
  into a URL). The token is verified with the server's token store and role rules
  (:func:`holomed.serve.app.authorize_token`, as for a bearer header).
- ``GET /web/``: the models served; ``GET /web/models/{name}``: one patient's form, a
  section per modality saying what the model expects (each optional);
  ``POST /web/models/{name}/predict``: the result page (risk, calibration note, modality
  contributions as an inline SVG bar chart, top features, image saliency and signal
  attribution maps, a visible "missing" mark per absent modality, a labelled evidence
  draft of the result in sentences, each citing its JSON values
  (:mod:`holomed.generative.evidence`; fixed templates, no language model), the model
  card's intended use), laid out to print as a one-page patient report.
- ``GET/POST /web/admin/tokens``, ``POST /web/admin/tokens/{id}/revoke``: token
  management (admin; any other role gets 403).
- ``POST /web/logout``.

Sessions: signing in creates a random session id kept in an HttpOnly, SameSite=Strict
cookie (path ``/web``; ``Secure`` over HTTPS); the token stays in this process's memory
and is re-verified on every request, so a revoked token ends its sessions (at once when
revoked here, else within ``token_cache_seconds``). Sessions end after
``SESSION_IDLE_SECONDS`` without a request, after ``SESSION_MAX_SECONDS`` in all, on
sign-out and when the server restarts. Every POST carries the session's CSRF token in a
hidden field (the sign-in form: a double-submit cookie), and a POST whose ``Origin``
is another site is refused.

Predictions go through the API's own code: the same input reader and checks
(:class:`holomed.serve.app.InputReader`: file types by extension and content, sizes,
pixel counts, DICOM headers), the same explanation (:meth:`ServedModel.explain_one`) and
the same audit row per request (endpoint, token id, role, model, bundle hash, pseudonym,
modalities). Errors in one field are shown next to it, without a traceback.

Headers of every page: a strict Content-Security-Policy (``default-src 'self'``, images
also as ``data:`` URIs, no inline script or style), ``Cache-Control: no-store`` (pages
hold patient data), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import math
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from holomed.explain.maps import attribution_maps
from holomed.generative.evidence import bundle_audit, evidence_draft, model_facts
from holomed.privacy.outputs import redact
from holomed.serve.app import (
    AUDIT_KEY,
    IMAGE_EXT,
    ApiError,
    InputReader,
    PatientInput,
    ServedModel,
    ServerState,
    authorize_token,
    check_closed,
)
from holomed.serve.tokens import ROLES, TokenInfo

log = logging.getLogger("holomed.serve.web")

PREFIX = "/web"
COOKIE = "holomed_session"
LOGIN_COOKIE = "holomed_login"
SESSION_IDLE_SECONDS = 30 * 60
SESSION_MAX_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000
MAX_FORM_INPUTS = 24  # omics features shown as inputs at most (more: a CSV upload only)
TOP_FEATURES_SHOWN = 5  # per modality on the result page
MAX_SERIES_ROWS = 100_000  # observations in one uploaded time-series CSV

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not "no-referrer": with it, browsers send "Origin: null" on form posts
    "Referrer-Policy": "same-origin",
}
HERE = Path(__file__).parent
STATIC = {
    "web.css": "text/css; charset=utf-8",
    "web.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
KIND_NAMES = {
    "tabular": "table",
    "omics": "omics profile",
    "image": "image",
    "signal": "signal",
    "text": "clinical note",
    "timeseries": "time series",
}
CALIBRATION_NOTES = {
    "temperature": "Calibrated: the probabilities were recalibrated by temperature scaling, "
    "fitted on validation patients kept out of training.",
    "isotonic": "Calibrated: the probabilities were recalibrated by isotonic regression, "
    "fitted on validation patients kept out of training.",
    "none": "Not recalibrated: these are the model's own probabilities (no recalibration "
    "was fitted). Read them as a ranking of risk more than as an exact frequency.",
}
PROBABILITY_TASKS = ("binary", "multiclass", "multilabel")
ABSENT_LABELS = {"missing": "missing: not given", "unusable": "unusable: not used"}


# -- sessions -----------------------------------------------------------------------------


@dataclass
class Session:
    """One signed-in browser: the token (kept in this process only), a CSRF token."""

    id: str
    token: str
    token_id: str
    role: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Session id -> :class:`Session`, in memory (one server process)."""

    def __init__(self) -> None:
        self._items: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str, info: TokenInfo) -> Session:
        s = Session(secrets.token_urlsafe(32), token, info.id, info.role)
        with self._lock:
            self._expire()
            while len(self._items) >= MAX_SESSIONS:  # the oldest goes first
                self._items.pop(next(iter(self._items)))
            self._items[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                return None
            if now - s.seen > SESSION_IDLE_SECONDS or now - s.created > SESSION_MAX_SECONDS:
                del self._items[sid]
                return None
            s.seen = now
            return s

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)

    def drop_token(self, token_id: str) -> None:
        """End every session of a token (it was revoked)."""
        with self._lock:
            for k in [k for k, s in self._items.items() if s.token_id == token_id]:
                del self._items[k]

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [
            k
            for k, s in self._items.items()
            if now - s.seen > SESSION_IDLE_SECONDS or now - s.created > SESSION_MAX_SECONDS
        ]:
            del self._items[k]


class WebError(Exception):
    """A page that cannot be shown: an HTML error page with ``status``, or a redirect to
    sign-in (``login``)."""

    def __init__(self, status: int, message: str, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.login = login


# -- rendering ------------------------------------------------------------------------------


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["PREFIX"] = PREFIX
    env.filters["fid"] = field_id
    return env


def field_id(key: str) -> str:
    """The HTML id of a form field (``m0.c1`` -> ``f-m0-c1``)."""
    return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


_ENV: Any = None


def _templates() -> Any:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template as an HTML response with the page headers (CSP and the rest)."""
    context.setdefault("session", None)
    context.setdefault("can_admin", False)
    html = _templates().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=dict(HEADERS))


def _state(request: Request) -> ServerState:
    return request.app.state.holomed


def _sessions(request: Request) -> Sessions:
    return request.app.state.holomed_web_sessions


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _same_origin(request: Request) -> None:
    """A cross-site POST is refused (SameSite=Strict cookies already keep the session
    out of it; this also covers the sign-in form)."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by older browsers; SameSite and the CSRF token remain
        return
    o = urlsplit(origin)
    if origin == "null" or (o.scheme, o.netloc) != (
        request.url.scheme,
        request.headers.get("host", ""),
    ):
        raise WebError(403, "This form was sent from another site and was refused.")


async def signed_in(request: Request, permission: str) -> tuple[Session, TokenInfo]:
    """The request's session and token record when its token may do ``permission``:
    sign-in when there is no live session or the token stopped working; 403 or 429
    pages as the API gives them."""
    sessions = _sessions(request)
    s = sessions.get(request.cookies.get(COOKIE))
    if s is None:
        raise WebError(401, "Please sign in.", login=True)
    try:
        info = await authorize_token(request, _state(request), s.token, permission)
    except ApiError as err:
        if err.status == 401:
            sessions.drop(s.id)
            raise WebError(401, "Your token is no longer valid.", login=True) from None
        if err.status == 403:
            raise WebError(
                403,
                f"Your role ({s.role}) may not open this page; it needs {permission!r} access.",
            ) from None
        raise WebError(err.status, err.message) from None
    s.role = info.role
    return s, info


def _check_csrf(form: Any, s: Session) -> None:
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), s.csrf.encode()):
        raise WebError(
            400,
            "This form has expired (its security token did not match). "
            "Go back, reload the page and send it again.",
        )


def error_labels(secs: list[Section]) -> dict[str, str]:
    """Form field name -> what the error summary calls it."""
    out = {"patient_id": "Patient id"}
    for sec in secs:
        out.update({c.key: f"{sec.name}, {c.name}" for c in sec.cells})
        out[sec.file_key] = f"{sec.name}, file"
        out[sec.text_key] = f"{sec.name}, note"
        out[sec.anchor] = sec.name
    return out


def _page_context(s: Session, info: TokenInfo, **more: Any) -> dict[str, Any]:
    return {"session": s, "can_admin": info.can("tokens"), **more}


def _served(request: Request, name: str) -> ServedModel:
    m = _state(request).models.get(name)
    if m is None:
        raise WebError(404, f"There is no model named {name[:64]!r} on this server.")
    ctx = request.scope.get(AUDIT_KEY)
    if ctx is not None:
        ctx["model"], ctx["bundle_hash"] = m.name, m.hash
    return m


# -- what each modality takes -----------------------------------------------------------


@dataclass
class Cell:
    """One input of a table section."""

    key: str  # the form field name
    name: str  # the column
    kind: str  # number | category
    options: list[str] = field(default_factory=list)


@dataclass
class Section:
    """One modality of the form."""

    index: int
    name: str
    kind: str
    kind_name: str
    expects: str
    cells: list[Cell] = field(default_factory=list)
    file: bool = False
    multiple: bool = False
    accept: str = ""
    text: bool = False
    details: list[str] = field(default_factory=list)

    @property
    def file_key(self) -> str:
        return f"m{self.index}.file"

    @property
    def text_key(self) -> str:
        return f"m{self.index}.text"

    @property
    def anchor(self) -> str:
        return f"mod-{self.index}"


def sections(m: ServedModel) -> list[Section]:
    """The form's sections: one per modality, saying what the model expects."""
    out = []
    for i, name in enumerate(m.modalities):
        e = m.expects[name]
        kind = e["kind"]
        sec = Section(i, name, kind, KIND_NAMES.get(kind, kind), "")
        if kind == "tabular":
            sec.cells = [Cell(f"m{i}.c{j}", c, "number") for j, c in enumerate(e["numeric"])]
            n = len(sec.cells)
            sec.cells += [
                Cell(f"m{i}.c{n + j}", c, "category", [str(v) for v in opts])
                for j, (c, opts) in enumerate(e["categorical"].items())
            ]
            sec.expects = (
                f"{len(sec.cells)} fields. Leave a field empty when it is not known (the "
                "model fills it in as it did in training). Or upload a CSV file with a "
                "header row and one row for this patient instead."
            )
            sec.file, sec.accept = True, ".csv,text/csv"
        elif kind == "omics":
            feats = e["features"]
            if len(feats) <= MAX_FORM_INPUTS:
                sec.cells = [Cell(f"m{i}.c{j}", c, "number") for j, c in enumerate(feats)]
            sec.expects = (
                f"{len(feats)} numeric features. Upload a CSV file with a header row and one "
                "row for this patient"
                + (", or type the values below." if sec.cells else ".")
                + " Features left out are filled in as in training."
            )
            sec.details = [str(f) for f in feats]
            sec.file, sec.accept = True, ".csv,text/csv"
        elif kind == "image":
            k = int(e.get("max_images") or 1)
            sec.expects = "Accepted files: DICOM (.dcm), PNG, JPEG, NIfTI (.nii, .nii.gz); " + (
                f"up to {k} images." if k > 1 else "one image."
            )
            sec.file, sec.multiple = True, k > 1
            sec.accept = ",".join(sorted(IMAGE_EXT))
        elif kind == "signal":
            ch = e.get("channels") or []
            fs = e.get("fs_hz")
            sec.expects = (
                "One EDF file (.edf), or a WFDB record: its .hea header together with its "
                ".dat file."
                + (f" Channels: {', '.join(ch)}." if ch else "")
                + (f" Sampled at {fs:g} Hz." if fs else "")
            )
            sec.file, sec.multiple, sec.accept = True, True, ".edf,.hea,.dat"
        elif kind == "text":
            sec.expects = "Free text of the clinical note(s)."
            sec.text = True
        elif kind == "timeseries":
            var = e.get("variables") or []
            sec.expects = (
                "A CSV file with the columns time (hours), variable and value, one row per "
                "observation." + (f" Variables: {', '.join(var)}." if var else "")
            )
            sec.file, sec.accept = True, ".csv,text/csv"
        else:
            sec.expects = "This kind of data cannot be entered on the web page."
        out.append(sec)
    return out


# -- reading the form -------------------------------------------------------------------


def _field_of(message: str, sec: Section) -> str:
    """The input an error message names (``field 'age'``), else the section's file input
    or text area."""
    hit = re.search(r"(?:field|feature) (['\"])(.*?)\1", message)
    if hit:
        for c in sec.cells:
            if c.name == hit.group(2):
                return c.key
    return sec.text_key if sec.text else (sec.file_key if sec.file else sec.anchor)


def _is_upload(v: Any) -> bool:
    return hasattr(v, "read") and hasattr(v, "filename")


def _series_rows(data: bytes, filename: str, label: str) -> list[dict[str, Any]]:
    """An uploaded time-series CSV (time, variable, value) as the API's JSON rows."""
    if not filename.lower().endswith(".csv"):
        raise ApiError(422, f"{label}: file type not accepted here; expected .csv")
    if b"\0" in data:
        raise ApiError(422, f"{label}: binary content where a CSV file was expected")
    try:
        text = data.decode("utf-8-sig")
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any decoding or parser error is the client's
        raise ApiError(422, f"{label}: not a readable CSV table ({type(err).__name__})") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    need = ("time", "variable", "value")
    if not all(c in cols for c in need):
        raise ApiError(422, f"{label}: expected the columns time, variable, value")
    if len(df) == 0 or len(df) > MAX_SERIES_ROWS:
        raise ApiError(422, f"{label}: expected 1 to {MAX_SERIES_ROWS} observations")
    return [{k: row[cols[k]] for k in need} for _, row in df.iterrows()]


async def read_form(
    request: Request, m: ServedModel, secs: list[Section], s: Session
) -> tuple[PatientInput, dict[str, str], dict[str, str]]:
    """The submitted patient, checked by the API's reader: (input, field errors, values
    to show again). Errors are keyed by the input's form name (``""``: the whole form)."""
    state = _state(request)
    st = state.settings
    n_inputs = sum(len(x.cells) for x in secs) + len(secs) + 4
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    item = PatientInput()
    try:
        form = await request.form(
            max_files=st.max_files,
            max_fields=st.max_fields + n_inputs,
            max_part_size=st.max_request_bytes,
        )
    except StarletteHTTPException as err:
        if err.status_code == 413:
            errors[""] = f"The files are too large: {err.detail}."
        elif "Too many files" in str(err.detail):
            errors[""] = f"Too many files: at most {st.max_files} in one request."
        else:
            errors[""] = f"The form could not be read ({err.detail})."
        return item, errors, values
    try:
        _check_csrf(form, s)
        try:
            check_closed(request)
        except ApiError:
            errors[""] = "The upload was cut short before its end; send the form again."
            return item, errors, values
        for k, v in form.multi_items():
            if isinstance(v, str) and k not in ("csrf", "patient_id"):  # the raw id: never
                values[k] = v
        reader = InputReader(m)
        pid = form.get("patient_id")
        try:
            item.pseudonym = state.pseudonyms(pid.strip() or None if isinstance(pid, str) else None)
        except ApiError as err:
            errors["patient_id"] = err.message.replace("patient_id: ", "")
        uploads: dict[str, list[tuple[str, bytes]]] = {}
        for sec in secs:
            label = f"modality {sec.name!r}"
            files = []
            for u in form.getlist(sec.file_key) if sec.file else []:
                if not _is_upload(u) or not u.filename:
                    continue  # an empty file input
                size = u.size if u.size is not None else 0
                if size > st.max_file_bytes:
                    errors[sec.file_key] = (
                        f"{u.filename[:80]!r} is {size} bytes; at most {st.max_file_bytes} "
                        "bytes a file."
                    )
                    break
                files.append((u.filename, await u.read()))
            if sec.file_key in errors:
                continue
            cells = {c.name: values.get(c.key, "").strip() for c in sec.cells}
            cells = {k: v for k, v in cells.items() if v}
            if files and cells:
                errors[sec.file_key] = "Give the fields or a CSV file, not both."
                continue
            if sec.kind in ("tabular", "omics") and cells:
                bad = False
                for c in sec.cells:  # each value through the API's own checks
                    if c.name in cells:
                        try:
                            reader.table(
                                sec.name, sec.kind, {c.name: cells[c.name]}, PatientInput(), label
                            )
                        except ApiError as err:
                            errors[c.key] = _short(err.message, label)
                            bad = True
                if not bad:
                    try:
                        reader.table(sec.name, sec.kind, cells, item, label)
                    except ApiError as err:
                        errors[_field_of(err.message, sec)] = _short(err.message, label)
            elif sec.text:
                note = values.get(sec.text_key, "")
                if note.strip():
                    try:
                        reader.modality(sec.name, note, item)
                    except ApiError as err:
                        errors[sec.text_key] = _short(err.message, label)
            elif sec.kind == "timeseries" and files:
                try:
                    rows = _series_rows(files[0][1], files[0][0], f"{label}, file 1")
                    reader.modality(sec.name, rows, item)
                except ApiError as err:
                    errors[sec.file_key] = _short(err.message, label)
            elif files:
                uploads[sec.name] = files
        if uploads:
            item.folder = Path(tempfile.mkdtemp(prefix="holomed-upload-", dir=st.upload_dir))

            def store() -> None:
                by_name = {x.name: x for x in secs}
                for name, parts in uploads.items():  # one modality at a time: errors by field
                    try:
                        assert item.folder is not None
                        reader.files({name: parts}, item, item.folder)
                    except ApiError as err:
                        sec = by_name[name]
                        errors[sec.file_key] = _short(err.message, f"modality {name!r}")

            await run_in_threadpool(store)
    except BaseException:
        item.cleanup()
        raise
    finally:
        await form.close()
    return item, errors, values


def _short(message: str, label: str) -> str:
    """An API message without the modality's name (the field is beside it)."""
    text = message
    for prefix in (f"{label}, ", f"{label} ", f"{label}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = re.sub(r"^\((?:tabular|omics|text|timeseries|image|signal)\)[: ]*", "", text)
    text = re.sub(r"^file \d+: ", "", text)
    text = re.sub(r"^(?:field|feature) (['\"]).*?\1: ", "", text)
    return text[:1].upper() + text[1:] if text else message


# -- the result -------------------------------------------------------------------------


def _pct(p: float | None) -> str:
    return "not available" if p is None else f"{100.0 * p:.1f} %"


def _signed(v: float, scale: float, unit: str) -> str:
    x = v * scale
    return f"{x:+.1f} {unit}".strip() if unit == "pts" else f"{x:+.3g}"


@dataclass
class Bar:
    """One row of the contributions chart (``value`` None: the modality gave nothing)."""

    name: str
    status: str
    value: float | None
    label: str
    y: int = 0
    x: float = 0.0
    width: float = 0.0
    positive: bool = True
    text_x: float = 0.0
    anchor: str = "start"


def contribution_chart(
    result: dict[str, Any], statuses: dict[str, str], task: str
) -> dict[str, Any]:
    """The inline SVG bar chart of modality contributions: geometry computed here, drawn
    by the template (no script). Shapley values of the modalities used; the others are
    rows marked with their status."""
    c = result.get("contributions") or {}
    mods = c.get("modalities") or {}
    probability = task in PROBABILITY_TASKS
    scale, unit = (100.0, "pts") if probability else (1.0, "")
    bars = []
    for name, status in statuses.items():
        v = (mods.get(name) or {}).get("shapley")
        if status == "used" and v is not None:
            word = "raises" if v > 0 else ("lowers" if v < 0 else "does not change")
            bars.append(Bar(name, status, v, f"{_signed(v, scale, unit)} ({word})"))
        else:
            bars.append(Bar(name, status, None, ABSENT_LABELS.get(status, "no contribution")))
    label_w, plot_w, row_h, top = 150, 420, 30, 34
    width = label_w + plot_w + 20
    zero = label_w + plot_w / 2
    biggest = max([abs(b.value) for b in bars if b.value is not None] or [0.0]) or 1.0
    half = plot_w / 2 - 95  # room for the value's text beside the bar
    for k, b in enumerate(bars):
        b.y = top + k * row_h
        if b.value is None:
            b.text_x, b.anchor = zero, "middle"
            continue
        w = abs(b.value) / biggest * half
        b.positive = b.value >= 0
        b.width = max(w, 1.0)
        b.x = zero if b.positive else zero - b.width
        b.text_x = (b.x + b.width + 6) if b.positive else (b.x - 6)
        b.anchor = "start" if b.positive else "end"
    height = top + len(bars) * row_h + 10
    base, value = c.get("base"), c.get("value")
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "zero": zero,
        "label_x": label_w - 10,
        "top": top,
        "row_h": row_h,
        "unit": "percentage points" if probability else "score units",
        "score": c.get("score") or "model output",
        "method": c.get("method"),
        "base": (_pct(base) if probability else f"{base:.3g}") if base is not None else None,
        "value": (_pct(value) if probability else f"{value:.3g}") if value is not None else None,
    }


def risk_view(m: ServedModel, result: dict[str, Any]) -> dict[str, Any]:
    """The headline number of the result and its wording, by task."""
    task = result.get("task")
    out: dict[str, Any] = {"task": task, "rows": [], "interval": None, "note": None}
    if task == "binary":
        probs = result.get("probabilities") or {}
        pos = m.classes[-1] if m.classes else None
        p = probs.get(pos) if pos is not None else None
        out.update(
            headline=_pct(p),
            value=p,
            label=f"Risk of {pos!s}" if pos is not None else "Risk",
            rows=[(c, _pct(v)) for c, v in probs.items()],
        )
    elif task in ("multiclass", "multilabel"):
        probs = result.get("probabilities") or {}
        pred = result.get("predicted")
        if task == "multiclass":
            out.update(
                headline=_pct(probs.get(pred)), value=probs.get(pred), label=f"Most likely: {pred}"
            )
        else:
            shown = ", ".join(pred) if pred else "none above 50 %"
            out.update(headline=shown, value=None, label="Labels above 50 %")
        out["rows"] = [(c, _pct(v)) for c, v in probs.items()]
    elif task == "survival":
        r = result.get("risk")
        out.update(
            headline="not available" if r is None else f"{r:.3g}",
            value=r,
            label="Risk score (log relative hazard)",
        )
        unit = result.get("time_unit") or ""
        out["rows"] = [
            (f"Survival at {h} {unit}".strip(), _pct(v))
            for h, v in (result.get("survival") or {}).items()
        ]
    else:
        v = result.get("prediction")
        out.update(
            headline="not available" if v is None else f"{v:.4g}", value=v, label="Prediction"
        )
    interval = result.get("interval")
    if isinstance(interval, list | tuple) and len(interval) == 2:
        lo, hi = interval
        if task in PROBABILITY_TASKS:
            out["interval"] = f"{_pct(lo)} to {_pct(hi)}"
        else:
            out["interval"] = f"{lo:.3g} to {hi:.3g}"
    cal = result.get("calibration")
    if cal is not None:
        out["note"] = CALIBRATION_NOTES.get(str(cal), f"Calibration: {cal}.")
    return out


def feature_tables(
    result: dict[str, Any], m: ServedModel, mapped: set[str]
) -> list[dict[str, Any]]:
    """Top features per modality used (image and signal modalities with a map are shown
    as the map instead of pixel or sample names)."""
    out = []
    for name, feats in (result.get("top_features") or {}).items():
        if name in mapped or not feats:
            continue
        rows = []
        for f in feats[:TOP_FEATURES_SHOWN]:
            a = f.get("attribution")
            if a is None or not math.isfinite(a):
                effect, shown = "unknown", "n/a"
            else:
                effect = "raises" if a > 0 else ("lowers" if a < 0 else "no effect")
                shown = f"{a:+.3g}" if a else "0"
            rows.append({"feature": f.get("feature"), "attribution": shown, "effect": effect})
        out.append(
            {"modality": name, "kind": KIND_NAMES.get(m.kinds.get(name, ""), ""), "rows": rows}
        )
    return out


def attribution_images(m: ServedModel, item: PatientInput, used: list[str]) -> list[dict]:
    """Occlusion maps (PNG, as data: URIs) of the image and signal modalities used, drawn
    by the report's own plots (:func:`holomed.explain.maps.attribution_maps`). Neural
    models only; a failure leaves the panel out (logged)."""
    kinds = [m.kinds.get(n) for n in used]
    if getattr(m.model, "family", None) != "neural" or not {"image", "signal"} & set(kinds):
        return []

    pid = item.pseudonym or "without id"
    try:
        with tempfile.TemporaryDirectory(
            prefix="holomed-web-maps-", dir=m.settings.upload_dir
        ) as tmp:
            with m.lock:
                cohort = m.cohort([item], [pid])
                records = attribution_maps(m.model, cohort, tmp, n_patients=1, prefix="web")
            out = []
            for r in records:
                data = (Path(tmp) / r["file"]).read_bytes()
                out.append(
                    {
                        "modality": r["modality"],
                        "kind": r["kind"],
                        "method": r["method"],
                        "src": "data:image/png;base64," + base64.b64encode(data).decode(),
                    }
                )
            return out
    except Exception as err:  # noqa: BLE001 - a missing map must not fail the page
        log.error(
            "attribution maps of model %s failed: %s: %s",
            m.name,
            type(err).__name__,
            redact(str(err)),
        )
        return []


_FILE_AUDITS: dict[tuple[str, str], tuple[dict[str, Any] | None, str | None]] = {}


def served_audit(m: ServedModel) -> tuple[dict[str, Any] | None, str | None]:
    """The subgroup audit of a served bundle's test evaluation and where it was found
    (:func:`holomed.generative.evidence.bundle_audit`); a results.json beside the bundle
    is read once per bundle hash."""
    if isinstance(m.card.get("fairness"), dict):
        return bundle_audit(m.path, m.card)
    key = (str(m.path), m.hash)
    if key not in _FILE_AUDITS:
        _FILE_AUDITS[key] = bundle_audit(m.path, m.card)
    return _FILE_AUDITS[key]


def form_attributes(m: ServedModel, item: PatientInput, names: list[str]) -> dict[str, Any]:
    """The patient's attributes the audit groups by (``names``), where a table field of
    that name was given (the form has no other place for them)."""
    out: dict[str, Any] = {}
    for name, table in item.tables.items():
        if m.kinds.get(name) != "tabular" or not isinstance(table, dict):
            continue
        for a in names:
            v = table.get(a)
            if a not in out and v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[a] = v
    return out


def evidence_view(m: ServedModel, item: PatientInput, result: dict[str, Any]) -> dict | None:
    """The evidence draft of this result (:mod:`holomed.generative.evidence`: fixed
    templates over the result, the model card and the subgroup audit; no language
    model), as the template shows it. A failure leaves the block out (logged)."""
    try:
        audit, where = served_audit(m)
        names = list((audit or {}).get("attributes") or {})
        draft = evidence_draft(
            result,
            m.card,
            audit,
            form_attributes(m, item, names),
            model_facts(m.model),
            dict(m.spec.evaluation.attribute_bins),
            {"audit": where or "none found"},
        )
    except Exception as err:  # noqa: BLE001 - a missing draft must not fail the page
        log.error(
            "evidence draft of model %s failed: %s: %s",
            m.name,
            type(err).__name__,
            redact(str(err)),
        )
        return None
    return {
        "label": draft.label,
        "sentences": [
            {
                "kind": st.kind,
                "text": st.text,
                "sources": [
                    {"path": src["path"], "value": _source_value(src["value"])}
                    for src in st.sources
                ],
            }
            for st in draft.sentences
        ],
        "audit": where,
    }


def _source_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def _fields_note(report: dict[str, Any] | None) -> str | None:
    """What the API's field report says of a table: the fields not given (tables), the
    features given of those expected (omics)."""
    if not report:
        return None
    if report.get("missing"):
        return "fields not given: " + ", ".join(str(x) for x in report["missing"])
    if "expected" in report:
        note = f"{report.get('given', 0)} of {report['expected']} features given"
        if report.get("ignored"):
            note += f", {report['ignored']} not used by the model ignored"
        return note
    return None


def result_view(
    m: ServedModel, result: dict[str, Any], maps: list[dict], evidence: dict | None = None
) -> dict[str, Any]:
    mods = result.get("modalities") or {}
    used, missing = set(mods.get("used") or []), set(mods.get("missing") or [])
    unusable = mods.get("unusable") or {}
    statuses = {}
    for n in m.modalities:
        statuses[n] = (
            "used"
            if n in used
            else "unusable"
            if n in unusable
            else "missing"
            if n in missing
            else "not used"
        )
    rows = []
    for n, st in statuses.items():
        rows.append(
            {
                "name": n,
                "kind": KIND_NAMES.get(m.kinds.get(n, ""), m.kinds.get(n, "")),
                "status": st,
                "reason": unusable.get(n),
                "fields": _fields_note((mods.get("fields") or {}).get(n)),
            }
        )
    mapped = {x["modality"] for x in maps}
    map_kinds = {x["kind"] for x in maps}
    return {
        "maps_title": "Where in the "
        + " and ".join(k for k in ("image", "signal") if k in map_kinds),
        "risk": risk_view(m, result),
        "chart": contribution_chart(result, statuses, m.task),
        "statuses": rows,
        "features": feature_tables(result, m, mapped),
        "features_method": result.get("features_method"),
        "maps": maps,
        "warnings": result.get("warnings") or [],
        "patient": result.get("patient"),
        "pseudonym_key": result.get("pseudonym_key"),
        "synthetic": bool(result.get("synthetic_data")),
        "intended_use": result.get("intended_use") or m.intended_use,
        "limitations": [str(x) for x in (m.card.get("limitations") or [])][:4],
        "weights": result.get("modality_weights"),
        "evidence": evidence,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def model_view(m: ServedModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "task": m.task,
        "classes": m.classes,
        "modalities": [(n, KIND_NAMES.get(m.kinds.get(n, ""), "")) for n in m.modalities],
        "intended_use": m.intended_use,
        "synthetic": m.synthetic,
        "hash": m.hash[:12],
        "dataset": m.card.get("dataset", m.spec.dataset),
    }


# -- routes ---------------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def _login_page(
    request: Request, status: int = 200, error: str | None = None, note: str | None = None
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(32)
    r = render("login.html", status, csrf=nonce, error=error, note=note)
    r.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=f"{PREFIX}/login",
    )
    return r


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=dict(HEADERS))


@router.get("/")
async def root() -> RedirectResponse:
    return _redirect(f"{PREFIX}/")


@router.get(f"{PREFIX}/login")
async def login_form(request: Request, expired: int = 0) -> Response:
    if _sessions(request).get(request.cookies.get(COOKIE)) is not None:
        return _redirect(f"{PREFIX}/")
    note = "Your session has ended; please sign in again." if expired else None
    return _login_page(request, note=note)


@router.post(f"{PREFIX}/login")
async def login(request: Request) -> Response:
    _same_origin(request)
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    sent, kept = form.get("csrf"), request.cookies.get(LOGIN_COOKIE)
    if not (isinstance(sent, str) and kept and hmac.compare_digest(sent.encode(), kept.encode())):
        return _login_page(request, 400, note="The sign-in form expired; please try again.")
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    if not token:
        return _login_page(request, 422, error="Enter your access token.")
    try:
        info = await authorize_token(request, _state(request), token, "models")
    except ApiError as err:
        if err.status == 401:
            return _login_page(request, 401, error="This token is not valid or was revoked.")
        return _login_page(request, err.status, error=err.message)
    sessions = _sessions(request)
    sessions.drop(request.cookies.get(COOKIE))  # a new session id at each sign-in
    s = sessions.create(token, info)
    r = _redirect(f"{PREFIX}/")
    r.set_cookie(
        COOKIE, s.id, httponly=True, samesite="strict", secure=_secure(request), path=PREFIX
    )
    r.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login", httponly=True, samesite="strict")
    return r


@router.post(f"{PREFIX}/logout")
async def logout(request: Request) -> Response:
    _same_origin(request)
    s, _info = await signed_in(request, "models")
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    _check_csrf(form, s)
    _sessions(request).drop(s.id)
    r = _login_page(request, note="You have signed out.")
    r.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return r


@router.get(f"{PREFIX}/")
async def models_page(request: Request) -> Response:
    s, info = await signed_in(request, "models")
    models = [model_view(m) for m in _state(request).models.values()]
    return render("models.html", **_page_context(s, info, models=models))


@router.get(f"{PREFIX}/models/{{name}}")
async def model_page(request: Request, name: str) -> Response:
    s, info = await signed_in(request, "predict")
    m = _served(request, name)
    return render(
        "model.html",
        **_page_context(
            s, info, model=model_view(m), sections=sections(m), errors={}, values={}, labels={}
        ),
    )


@router.post(f"{PREFIX}/models/{{name}}/predict")
async def predict_page(request: Request, name: str) -> Response:
    _same_origin(request)
    s, info = await signed_in(request, "explain")
    m = _served(request, name)
    secs = sections(m)
    ctx = request.scope.get(AUDIT_KEY, {})
    item, errors, values = await read_form(request, m, secs, s)
    ctx["patient"], ctx["modalities"] = item.pseudonym, item.sent
    try:
        if not errors and not item.sent:
            errors[""] = (
                "Give at least one modality: this model takes " + ", ".join(m.modalities) + "."
            )
        result = None
        if not errors:
            try:
                result = await run_in_threadpool(m.explain_one, item)
            except ApiError as err:
                if err.status >= 500:
                    errors[""] = "The model could not be run (the error is logged on the server)."
                else:
                    errors[""] = err.message
        if result is None:
            status = 500 if errors.get("", "").startswith("The model could not") else 422
            return render(
                "model.html",
                status,
                **_page_context(
                    s,
                    info,
                    model=model_view(m),
                    sections=secs,
                    errors=errors,
                    values=values,
                    labels=error_labels(secs),
                ),
            )
        result["pseudonym_key"] = _state(request).pseudonyms.scope
        maps = await run_in_threadpool(
            attribution_images, m, item, list(result["modalities"]["used"])
        )
        evidence = await run_in_threadpool(evidence_view, m, item, result)
    finally:
        if item.folder is not None:
            await run_in_threadpool(item.cleanup)
    view = result_view(m, result, maps, evidence)
    return render("result.html", **_page_context(s, info, model=model_view(m), r=view))


@router.get(f"{PREFIX}/admin/tokens")
async def tokens_page(request: Request) -> Response:
    s, info = await signed_in(request, "tokens")
    rows = await run_in_threadpool(_state(request).tokens.list_tokens)
    return render(
        "tokens.html", **_page_context(s, info, tokens=rows, roles=ROLES, created=None, error=None)
    )


@router.post(f"{PREFIX}/admin/tokens")
async def tokens_create(request: Request) -> Response:
    _same_origin(request)
    s, info = await signed_in(request, "tokens")
    form = await request.form(max_files=0, max_fields=6, max_part_size=4096)
    _check_csrf(form, s)
    state = _state(request)
    role, name = str(form.get("role") or ""), str(form.get("name") or "").strip()
    created, error, status = None, None, 200
    if role not in ROLES:
        error, status = f"Choose a role: {', '.join(ROLES)}.", 422
    elif len(name) > 200:
        error, status = "The name takes at most 200 characters.", 422
    else:
        new, token = await run_in_threadpool(state.tokens.create, role, name)
        created = {"info": new, "token": token}
    rows = await run_in_threadpool(state.tokens.list_tokens)
    return render(
        "tokens.html",
        status,
        **_page_context(s, info, tokens=rows, roles=ROLES, created=created, error=error),
    )


@router.post(f"{PREFIX}/admin/tokens/{{token_id}}/revoke")
async def tokens_revoke(request: Request, token_id: str) -> Response:
    _same_origin(request)
    s, _info = await signed_in(request, "tokens")
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    _check_csrf(form, s)
    try:
        await run_in_threadpool(_state(request).tokens.revoke, token_id)
    except LookupError:
        raise WebError(404, "There is no token with this id.") from None
    _sessions(request).drop_token(token_id)
    return _redirect(f"{PREFIX}/admin/tokens")


@router.get(f"{PREFIX}/static/{{name}}")
async def static(name: str) -> Response:
    kind = STATIC.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    data = (HERE / "static" / name).read_bytes()
    return Response(data, media_type=kind, headers={**HEADERS, "Cache-Control": "no-cache"})


async def _web_error(request: Request, err: WebError) -> Response:
    if err.login:
        return _redirect(f"{PREFIX}/login" + ("?expired=1" if request.cookies.get(COOKIE) else ""))
    s = _sessions(request).get(request.cookies.get(COOKIE))
    titles = {400: "Form expired", 403: "Not allowed", 404: "Not found", 429: "Too many requests"}
    return render(
        "error.html",
        err.status,
        session=s,
        title=titles.get(err.status, "Error"),
        message=err.message,
        status=err.status,
    )


def install(app: FastAPI) -> None:
    """Add the web page to ``app`` (built by :func:`holomed.serve.app.create_api`);
    :func:`holomed.serve.server.create_app` does this."""
    app.state.holomed_web_sessions = Sessions()
    app.include_router(router)
    app.add_exception_handler(WebError, _web_error)
