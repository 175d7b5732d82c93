"""Images from a PACS over DICOMweb: QIDO-RS to find a patient's studies, WADO-RS to
fetch their instances into a local folder, then the ordinary DICOM readers
(:mod:`holomed.io.images`) read them, so preprocessing, its disk cache and lazy
loading work as for files.

An image modality reads from a PACS when its ``source`` is a DICOMweb URL::

    source: dicomweb://pacs.example.org:8042/dicom-web     # dicomwebs:// for HTTPS
    options:
      dicomweb:
        match: accession         # or patient: which DICOM key a table column holds
        column: accession        # that column (patient: default the id column)
        table: studies.csv       # default: the target table
        series_modality: [CT]    # optional series filters
        series_description: "*AX*"

``table`` lists the patients: an id column (the modality's ``id_column``, else ``id``
when the table has one, else its first column) and ``column``, holding each patient's
AccessionNumber (``match: accession``) or PatientID (``match: patient``); a patient may
have several rows (several studies). Studies are found by an exact match on that key
(values holding a QIDO wildcard ``*``, ``?`` or ``\\`` are refused, and the PACS's
answers are checked to match exactly); ``studies: latest`` keeps a patient's most recent
study only (default ``all``). Each study's series pass the filters (``series_modality``:
DICOM Modality values; ``series_description``: a case-insensitive shell pattern; without
``series_modality``, series without pixels (SR, KO, PR, ...) are left out). Each kept
series is one image of the patient's set: a file when the series has one instance, else
the folder of its instances (a volume).

Instances are written to ``cache_dir`` (default ``$HOLOMED_CACHE/dicomweb``, else
``~/.cache/holomed/dicomweb``) as ``<StudyInstanceUID>/<SeriesInstanceUID>/
<SOPInstanceUID>.dcm``, each through a temporary file renamed into place, so a file
there is always complete and a second read fetches nothing. UIDs from the server are
checked (digits and dots, at most 64 characters) before they name a path. The folder
holds patient data: it is created readable by its owner only.

Limits per patient: ``max_instances`` (default 2000), ``max_mb`` (default 2048 MB, counted
as bytes are received), ``timeout`` seconds per HTTP request (default 30). A patient
whose study is missing, over a limit, or fails on the server (an HTTP error, a timeout)
loses the modality with a counted reason, like a missing file; no identifier, URL query
or credential is in any reason. A PACS that refuses the credentials, or cannot be reached
at all, stops the reading with one :class:`~holomed.errors.CohortError`; after three
patients in a row the PACS could not be reached for, the others are marked without
trying.

Credentials never sit in the spec or on a command line (a URL with ``user:password@``
is refused): a YAML/JSON file ``{username, password}`` or ``{token}`` (a bearer token)
named by ``options.dicomweb.credentials`` or ``$HOLOMED_DICOMWEB_CREDENTIALS``, else
``$HOLOMED_DICOMWEB_USER`` and ``$HOLOMED_DICOMWEB_PASSWORD``, else
``$HOLOMED_DICOMWEB_TOKEN``; none: anonymous access.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holomed.errors import CohortError, HolomedError
from holomed.io.tables import read_ids
from holomed.spec.dicomweb import (  # noqa: F401 (the spec's DICOMweb settings, re-exported)
    CREDENTIALS_ENV,
    PASSWORD_ENV,
    SCHEMES,
    TOKEN_ENV,
    USER_ENV,
    DicomWebOptions,
    PacsUrl,
    check_modality,
    is_dicomweb,
    parse_options,
    parse_url,
)

MATCH_KEYS = {"patient": "PatientID", "accession": "AccessionNumber"}
MATCH_LABELS = {"patient": "patient id", "accession": "accession number"}
# series without pixels (structured reports, key objects, presentation states ...)
NON_IMAGE = frozenset(
    {"SR", "KO", "PR", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE",
     "SEG", "AU", "ECG", "HD", "PLAN", "RWV", "IVOCT"}
)  # fmt: skip
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
WILDCARDS = ("*", "?", "\\")
PAGE = 500  # QIDO results asked for per request
UNREACHABLE_IN_A_ROW = 3  # patients in a row the PACS failed to answer for: stop asking
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_DEFAULT = 'multipart/related; type="application/dicom"'
TAGS = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "PatientID": "00100020",
    "AccessionNumber": "00080050",
    "StudyDate": "00080020",
    "StudyTime": "00080030",
    "Modality": "00080060",
    "SeriesDescription": "0008103E",
    "SeriesNumber": "00200011",
    "InstanceNumber": "00200013",
    "NumberOfSeriesRelatedInstances": "00201209",
}


# -- errors ---------------------------------------------------------------------------


class DicomWebError(HolomedError):
    """A PACS request that failed. The message is safe to show: no identifier, URL query
    or credential."""


class PacsUnreachable(DicomWebError):
    """No answer: connection refused or failed, or a timeout."""


class PacsRefused(DicomWebError):
    """The PACS refused the credentials (HTTP 401 / 403)."""


class StudyNotFound(DicomWebError):
    """No study on the PACS for the key asked."""


class NoImageSeries(DicomWebError):
    """Studies found, but no series passes the filters (or none has an instance)."""


class OverLimit(DicomWebError):
    """A study over a limit: ``what`` is ``instances``, ``bytes`` or ``instance_bytes``;
    ``limit`` the limit."""

    def __init__(self, message: str, what: str, limit: int) -> None:
        super().__init__(message)
        self.what, self.limit = what, int(limit)


# -- credentials ----------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (``username`` / ``password``) or bearer (``token``) credentials; their
    ``repr`` hides the secrets."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    origin: str = ""

    def auth(self) -> Any:
        """A ``requests`` authentication object."""
        import requests

        if self.token:
            token = self.token

            class Bearer(requests.auth.AuthBase):
                def __call__(self, r: Any) -> Any:
                    r.headers["Authorization"] = f"Bearer {token}"
                    return r

            return Bearer()
        return requests.auth.HTTPBasicAuth(self.username or "", self.password or "")


def load_credentials(path: str | Path | None = None) -> Credentials | None:
    """Credentials from ``path``, else the file ``$HOLOMED_DICOMWEB_CREDENTIALS``, else
    ``$HOLOMED_DICOMWEB_USER`` + ``$HOLOMED_DICOMWEB_PASSWORD``, else
    ``$HOLOMED_DICOMWEB_TOKEN``; None when none is set. A file is a YAML/JSON mapping
    with ``username`` and ``password``, or ``token``. Errors name the file or the
    variable, never a value."""
    path = path or os.environ.get(CREDENTIALS_ENV) or None
    if path:
        import yaml

        p = Path(os.path.expanduser(str(path)))
        try:
            data = yaml.safe_load(p.read_text())
        except OSError as err:
            raise CohortError(f"{p}: PACS credentials file unreadable ({err.strerror})") from None
        except (yaml.YAMLError, UnicodeDecodeError):
            raise CohortError(f"{p}: PACS credentials file is not YAML/JSON") from None
        if not isinstance(data, dict):
            raise CohortError(
                f"{p}: PACS credentials file: expected a mapping with username and password, "
                "or token"
            )
        unknown = sorted(str(k) for k in data if k not in ("username", "password", "token"))
        if unknown:
            raise CohortError(
                f"{p}: PACS credentials file: unknown key(s) {unknown}; expected username "
                "and password, or token"
            )
        values = {k: None if data.get(k) is None else str(data[k]) for k in data}
        if values.get("token"):
            if values.get("username") or values.get("password"):
                raise CohortError(f"{p}: PACS credentials file: give username/password or token")
            return Credentials(token=values["token"], origin=str(p))
        if not values.get("username") or values.get("password") is None:
            raise CohortError(f"{p}: PACS credentials file: username and password are needed")
        return Credentials(values["username"], values["password"], origin=str(p))
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user or password:
        if not user or password is None:
            raise CohortError(f"PACS credentials: set both ${USER_ENV} and ${PASSWORD_ENV}")
        return Credentials(user, password, origin=f"${USER_ENV}")
    if os.environ.get(TOKEN_ENV):
        return Credentials(token=os.environ[TOKEN_ENV], origin=f"${TOKEN_ENV}")
    return None


# -- the client -----------------------------------------------------------------------


def _first(row: dict[str, Any], name: str) -> Any:
    """The first value of DICOM JSON attribute ``name`` in ``row``, else None."""
    item = row.get(TAGS[name]) or {}
    values = item.get("Value") or []
    return values[0] if values else None


def _uid(row: dict[str, Any], name: str) -> str:
    v = _first(row, name)
    uid = str(v).strip() if v is not None else ""
    if not uid or len(uid) > 64 or not UID.fullmatch(uid):
        raise DicomWebError(f"the PACS sent an invalid {name}")
    return uid


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


def check_key(value: Any, match: str) -> str:
    """A study key (patient id, accession number) as text: stripped, 1-64 characters,
    no QIDO wildcard or multi-value separator, no control character (``ValueError``
    without the value otherwise)."""
    label = MATCH_LABELS[match]
    text = "" if value is None else str(value).strip()
    if not text:
        raise ValueError(f"empty {label}")
    if len(text) > 64:
        raise ValueError(f"{label} longer than 64 characters")
    if any(c in text for c in WILDCARDS) or any(ord(c) < 32 for c in text):
        raise ValueError(f"{label} holds a wildcard (*, ?), a backslash or a control character")
    return text


@dataclass
class Limits:
    """Per fetch (one patient, or one request): instances, bytes in all, bytes of one
    instance (None: ``max_bytes``)."""

    max_instances: int = 2000
    max_bytes: int = 2048 * 2**20
    max_instance_bytes: int | None = None


@dataclass
class Fetched:
    """What :meth:`Pacs.fetch` wrote: ``paths`` one per series (a file for a series of
    one instance, else its folder), counts, bytes, and how many instances came over the
    network now (the others were in the folder already)."""

    paths: list[str]
    studies: int
    series: int
    instances: int
    bytes: int
    downloaded: int


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file in the same folder (named with a
    leading dot, which the series reader skips) renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_part(body: bytes, content_type: str) -> bytes:
    """The DICOM file in a WADO-RS answer: a ``multipart/related`` body of one part
    (or, as some servers send it, the bare ``application/dicom`` file)."""
    ctype = content_type.lower()
    if ctype.startswith("application/dicom"):
        return body
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not ctype.startswith("multipart/") or m is None:
        raise DicomWebError("the PACS answered with an unexpected content type")
    delim = b"\r\n--" + m.group(1).strip().encode("latin-1")
    parts = []
    for chunk in (b"\r\n" + body).split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        _head, sep, content = chunk.partition(b"\r\n\r\n")
        if sep:
            parts.append(content)
    if len(parts) != 1:
        raise DicomWebError(f"the PACS answered with {len(parts)} parts for one instance")
    return parts[0]


class Pacs:
    """A DICOMweb server: QIDO-RS searches through ``dicomweb-client``, WADO-RS instance
    retrieval streamed with its HTTP session (so the byte limits hold while receiving).
    ``timeout`` seconds per request; 429 / 503 / 504 answers are retried twice."""

    def __init__(
        self, url: str | PacsUrl, credentials: Credentials | None = None, timeout: float = 30.0
    ) -> None:
        import requests
        from dicomweb_client import DICOMwebClient

        # their debug / info lines carry query URLs (patient ids, accession numbers)
        for name in ("dicomweb_client", "urllib3.connectionpool"):
            quiet = logging.getLogger(name)
            if quiet.getEffectiveLevel() < logging.WARNING:
                quiet.setLevel(logging.WARNING)
        self.url = parse_url(url) if isinstance(url, str) else url
        self.timeout = float(timeout)
        self.session = requests.Session()
        if credentials is not None:
            self.session.auth = credentials.auth()
        self.client = DICOMwebClient(self.url.http, session=self.session, timeout=self.timeout)
        self.client.set_http_retry_params(
            retry=True, max_attempts=3, wait_exponential_multiplier=250
        )
        self.answered = False  # whether the server has answered a request yet

    def close(self) -> None:
        self.session.close()

    # -- errors ---------------------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        """``requests`` failures as :class:`DicomWebError` with a message that names
        no URL (a query holds the key searched for)."""
        import requests

        try:
            yield
        except DicomWebError:
            raise
        except requests.HTTPError as err:
            code = err.response.status_code if err.response is not None else 0
            if code in (401, 403):
                raise PacsRefused(f"the PACS refused the credentials (HTTP {code})") from None
            raise DicomWebError(f"the PACS answered HTTP {code}") from None
        except requests.Timeout:
            raise PacsUnreachable(
                f"the PACS did not answer within {self.timeout:g} s (timeout)"
            ) from None
        except requests.ConnectionError as err:
            what = "connection refused" if "refused" in str(err).lower() else "connection failed"
            raise PacsUnreachable(f"the PACS could not be reached ({what})") from None
        except requests.RequestException as err:
            raise DicomWebError(f"request to the PACS failed ({type(err).__name__})") from None
        except ValueError:  # not JSON, a malformed DICOM JSON answer
            raise DicomWebError("the PACS sent an answer that is not valid DICOMweb") from None

    # -- QIDO-RS ----------------------------------------------------------------------
    def _search(
        self, fn: Callable[..., list], key: str, expected: int | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """All results of a QIDO search, page by page (``limit`` / ``offset``), until a
        short page (with ``expected`` results reached), an empty one or one with nothing
        new (a server that ignores ``offset``)."""
        out: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            with self._errors():
                page = fn(limit=PAGE, offset=offset, **kw)
            self.answered = True
            if not isinstance(page, list):
                raise DicomWebError("the PACS sent an answer that is not valid DICOMweb")
            new = 0
            for row in page:
                if not isinstance(row, dict):
                    raise DicomWebError("the PACS sent an answer that is not valid DICOMweb")
                uid = _uid(row, key)
                if uid not in out:
                    out[uid] = row
                    new += 1
            offset += len(page)
            if not page or not new:
                break
            if len(page) < PAGE and (expected is None or len(out) >= expected):
                break
        return list(out.values())

    def studies(self, match: str, value: str) -> list[tuple[str, str]]:
        """``(StudyInstanceUID, date-time)`` of the studies whose PatientID or
        AccessionNumber (``match``) is exactly ``value``, oldest first."""
        name = MATCH_KEYS[match]
        value = check_key(value, match)
        rows = self._search(
            self.client.search_for_studies,
            "StudyInstanceUID",
            search_filters={name: value},
            fields=["StudyDate", "StudyTime", "AccessionNumber", "PatientID"],
        )
        found = []
        for r in rows:
            got = _first(r, name)
            if got is not None and str(got).strip() != value:
                continue  # a server matching loosely (case, fuzzy): not this study
            when = f"{_first(r, 'StudyDate') or ''}{_first(r, 'StudyTime') or ''}"
            found.append((_uid(r, "StudyInstanceUID"), when))
        return sorted(found, key=lambda s: (s[1], s[0]))

    def series(
        self, study: str, modalities: list[str] | None = None, description: str | None = None
    ) -> list[tuple[str, int | None]]:
        """``(SeriesInstanceUID, instance count or None)`` of a study's series that pass
        the filters, by SeriesNumber."""
        rows = self._search(
            self.client.search_for_series,
            "SeriesInstanceUID",
            study_instance_uid=study,
            fields=["Modality", "SeriesDescription", "SeriesNumber",
                    "NumberOfSeriesRelatedInstances"],
        )  # fmt: skip
        keep = []
        for r in rows:
            mod = str(_first(r, "Modality") or "").strip().upper()
            if modalities is not None and mod not in modalities:
                continue
            if modalities is None and mod in NON_IMAGE:
                continue
            if description is not None:
                desc = str(_first(r, "SeriesDescription") or "")
                if not fnmatch.fnmatchcase(desc.lower(), description.lower()):
                    continue
            n = _first(r, "NumberOfSeriesRelatedInstances")
            count = int(n) if isinstance(n, int | float | str) and str(n).isdigit() else None
            keep.append((_number(_first(r, "SeriesNumber")), _uid(r, "SeriesInstanceUID"), count))
        return [(uid, n) for _, uid, n in sorted(keep)]

    def instances(self, study: str, series: str, expected: int | None = None) -> list[str]:
        """SOPInstanceUIDs of a series, by InstanceNumber."""
        rows = self._search(
            self.client.search_for_instances,
            "SOPInstanceUID",
            expected=expected,
            study_instance_uid=study,
            series_instance_uid=series,
            fields=["InstanceNumber"],
        )
        keyed = [(_number(_first(r, "InstanceNumber")), _uid(r, "SOPInstanceUID")) for r in rows]
        return [uid for _, uid in sorted(keyed)]

    # -- WADO-RS ----------------------------------------------------------------------
    def retrieve(self, study: str, series: str, sop: str, path: Path, max_bytes: int) -> int:
        """One instance written to ``path`` (atomically); its size in bytes. More than
        ``max_bytes`` received (after content decoding) stops the transfer."""
        url = f"{self.url.http}/studies/{study}/series/{series}/instances/{sop}"
        with self._errors():
            resp = self.session.get(
                url, headers={"Accept": ACCEPT}, stream=True, timeout=self.timeout
            )
            if resp.status_code in (400, 406):  # no "any transfer syntax": the default one
                resp.close()
                resp = self.session.get(
                    url, headers={"Accept": ACCEPT_DEFAULT}, stream=True, timeout=self.timeout
                )
            with resp:
                if resp.status_code not in (401, 403):
                    self.answered = True
                resp.raise_for_status()
                ctype = resp.headers.get("Content-Type", "")
                buf = bytearray()
                slack = 64 * 2**10  # multipart headers and boundaries
                for chunk in resp.iter_content(2**16):
                    buf += chunk
                    if len(buf) > max_bytes + slack:
                        raise OverLimit(
                            f"an instance is larger than {max_bytes} bytes", "bytes", max_bytes
                        )
        data = _one_part(bytes(buf), ctype)
        if len(data) > max_bytes:
            raise OverLimit(f"an instance is larger than {max_bytes} bytes", "bytes", max_bytes)
        if len(data) < 132 or data[128:132] != b"DICM":
            raise DicomWebError("the PACS sent an instance that is not a DICOM Part 10 file")
        _atomic_write(path, data)
        return len(data)

    def fetch(
        self,
        match: str,
        keys: list[str],
        dest: str | Path,
        limits: Limits | None = None,
        series_modality: list[str] | None = None,
        series_description: str | None = None,
        studies: str = "all",
        reuse: bool = True,
    ) -> Fetched:
        """The studies whose PatientID / AccessionNumber (``match``) is one of ``keys``,
        their series that pass the filters, every instance written under ``dest`` as
        ``<study>/<series>/<instance>.dcm``. ``reuse``: a file already there is not
        fetched again (it is complete: files are renamed into place). ``limits`` hold
        for the whole call. Raises :class:`StudyNotFound`, :class:`NoImageSeries`,
        :class:`OverLimit` or another :class:`DicomWebError`."""
        limits = limits or Limits()
        max_one = limits.max_instance_bytes or limits.max_bytes
        dest = Path(dest)
        found: dict[str, str] = {}
        for k in dict.fromkeys(keys):
            for uid, when in self.studies(match, k):
                found.setdefault(uid, when)
        if not found:
            raise StudyNotFound(f"no study found on the PACS for the {MATCH_LABELS[match]}")
        order = sorted(found, key=lambda u: (found[u], u))
        if studies == "latest":
            order = order[-1:]
        plan: list[tuple[str, str, list[str]]] = []
        total = 0

        def over() -> OverLimit:
            return OverLimit(
                f"the study holds more than {limits.max_instances} instances",
                "instances",
                limits.max_instances,
            )

        for st in order:
            for se, count in self.series(st, series_modality, series_description):
                if count is not None and total + count > limits.max_instances:
                    raise over()
                sops = self.instances(st, se, expected=count)
                total += len(sops)
                if total > limits.max_instances:
                    raise over()
                if sops:
                    plan.append((st, se, sops))
        if not plan:
            raise NoImageSeries("no image series on the PACS passes the series filters")
        paths: list[str] = []
        nbytes = downloaded = 0
        for st, se, sops in plan:
            folder = dest / st / se
            for sop in sops:
                f = folder / f"{sop}.dcm"
                budget = min(max_one, limits.max_bytes - nbytes)
                if reuse and f.is_file():
                    size = f.stat().st_size
                else:
                    if budget <= 0:
                        raise OverLimit(
                            f"the study is larger than {limits.max_bytes} bytes",
                            "bytes",
                            limits.max_bytes,
                        )
                    try:
                        size = self.retrieve(st, se, sop, f, budget)
                    except OverLimit:  # say which limit: the instance's or the study's
                        if max_one <= limits.max_bytes - nbytes:
                            raise OverLimit(
                                f"an instance is larger than {max_one} bytes",
                                "instance_bytes",
                                max_one,
                            ) from None
                        raise OverLimit(
                            f"the study is larger than {limits.max_bytes} bytes",
                            "bytes",
                            limits.max_bytes,
                        ) from None
                    downloaded += 1
                nbytes += size
                if nbytes > limits.max_bytes:
                    raise OverLimit(
                        f"the study is larger than {limits.max_bytes} bytes",
                        "bytes",
                        limits.max_bytes,
                    )
                if size > max_one:
                    raise OverLimit(
                        f"an instance is larger than {max_one} bytes", "instance_bytes", max_one
                    )
            keep = {f"{sop}.dcm" for sop in sops}
            for old in folder.glob("*.dcm"):  # instances the PACS no longer lists
                if old.name not in keep:
                    old.unlink(missing_ok=True)
            paths.append(str(folder / f"{sops[0]}.dcm") if len(sops) == 1 else str(folder))
        return Fetched(paths, len(order), len(plan), total, nbytes, downloaded)


# -- the image modality's reader --------------------------------------------------------


def default_cache() -> Path:
    """``$HOLOMED_CACHE/dicomweb``, else ``~/.cache/holomed/dicomweb``."""
    root = os.environ.get("HOLOMED_CACHE") or Path.home() / ".cache" / "holomed"
    return Path(root) / "dicomweb"


def _table(mspec: Any, spec: Any, opts: DicomWebOptions) -> tuple[Any, str, str, str]:
    """The table naming the patients' keys: ``(frame, id column, key column, path)``."""
    import pandas as pd

    if opts.table:
        path = spec.resolve(opts.table)
    elif spec.target.source:
        path = spec.resolve(spec.target.source[0])
    else:
        raise CohortError(
            f"modality {mspec.name!r}: options.dicomweb.table: no table lists the patients "
            "(give options.dicomweb.table or target.source)"
        )
    if not path.exists():
        raise CohortError(f"{path}: table of modality {mspec.name!r} not found")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any parser failure becomes a named error
        raise CohortError(f"{path}: cannot be read as a table: {type(err).__name__}") from None
    cols = [str(c) for c in df.columns]
    idc = mspec.id_column or ("id" if "id" in cols else (cols[0] if cols else "id"))
    key = opts.key_column or idc
    missing = [c for c in dict.fromkeys((idc, key)) if c not in cols]
    if missing:
        raise CohortError(
            f"{path}: modality {mspec.name!r}: columns {missing} not found; columns are "
            f"{cols[:10]} (set id_column / options.dicomweb.column)"
        )
    return df, idc, key, str(path)


def read_dicomweb(mspec: Any, spec: Any) -> Any:
    """The image modality's frame from a PACS: indexed by id, column ``paths`` (the
    fetched series, see the module's description). Patients whose studies could not be
    fetched are left out, each with its reason in ``frame.attrs["dicomweb_report"]``
    (``{id, modality, reason}``), which the image kind's check adds to the cohort's
    report; ``frame.attrs["dicomweb_summary"]`` counts patients, studies, instances and
    what was fetched now."""
    import pandas as pd

    url = parse_url(mspec.source[0])
    opts = parse_options((mspec.options or {}).get("dicomweb"))
    df, idc, key, where = _table(mspec, spec, opts)
    ids = read_ids(df[idc], where, idc)
    keys: dict[str, list[str]] = {}
    for pid, v in zip(ids, df[key], strict=True):
        keys.setdefault(pid, [])
        text = "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()
        if text:
            keys[pid].append(text)
    cred_file = str(spec.resolve(opts.credentials)) if opts.credentials else None
    pacs = Pacs(url, load_credentials(cred_file), opts.timeout)
    cache = spec.resolve(opts.cache_dir) if opts.cache_dir else default_cache()
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    limits = Limits(opts.max_instances, int(opts.max_mb * 2**20))
    label = MATCH_LABELS[opts.match]
    report: list[dict[str, Any]] = []
    out: dict[str, list[str]] = {}
    summary = {"patients": 0, "studies": 0, "series": 0, "instances": 0, "downloaded": 0,
               "bytes": 0, "seconds": 0.0}  # fmt: skip
    t0 = time.perf_counter()
    unreachable, down = 0, None
    try:
        for pid, ks in keys.items():
            reason = None
            if not ks:
                reason = f"no {label} given (column {key!r} of the table)"
            elif down is not None:
                reason = f"{down} (not asked again after {UNREACHABLE_IN_A_ROW} patients)"
            else:
                try:
                    good = [check_key(k, opts.match) for k in ks]
                    got = pacs.fetch(
                        opts.match,
                        good,
                        cache,
                        limits,
                        opts.series_modality,
                        opts.series_description,
                        opts.studies,
                    )
                except ValueError as err:  # a key with a wildcard ...
                    reason = f"unusable {label}: {err}"
                except PacsRefused as err:
                    raise CohortError(f"{url}: modality {mspec.name!r}: {err}") from None
                except PacsUnreachable as err:
                    if not pacs.answered:
                        raise CohortError(f"{url}: modality {mspec.name!r}: {err}") from None
                    unreachable += 1
                    reason = str(err)
                    if unreachable >= UNREACHABLE_IN_A_ROW:
                        down = str(err)
                except OverLimit as err:
                    option = {"instances": "max_instances"}.get(err.what, "max_mb")
                    reason = f"{err} (options.dicomweb.{option})"
                    unreachable = 0
                except DicomWebError as err:
                    reason = str(err)
                    unreachable = 0
                else:
                    unreachable = 0
                    out[pid] = got.paths
                    summary["patients"] += 1
                    for k in ("studies", "series", "instances", "downloaded", "bytes"):
                        summary[k] += getattr(got, k)
            if reason is not None:
                report.append({"id": pid, "modality": mspec.name, "reason": reason})
    finally:
        pacs.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if not out:
        counts: dict[str, int] = {}
        for r in report:
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        why = "; ".join(f"{n} x {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise CohortError(
            f"{url}: modality {mspec.name!r}: no study fetched for any of the {len(keys)} "
            f"patient(s) of {where} ({why or 'no patient'})"
        )
    frame = pd.DataFrame({"paths": list(out.values())}, index=pd.Index(list(out), name="id"))
    frame.attrs["dicomweb_report"] = report
    frame.attrs["dicomweb_summary"] = summary
    return frame
