"""The audit trail of ``holomed serve``: one hash-chained row per request.

Each row of table ``audit`` holds the request's time (UTC), token id and role (for a
refused token: the public id it claims when it is well formed, and no role; a token's
text is never kept), endpoint (method and route template, never the raw path), model name and bundle
hash, the patient's pseudonym (never the raw id), the modalities sent, the HTTP status
and the latency in milliseconds; ``seq`` numbers rows 1, 2, 3 ... without gaps.

Chain: ``hash = sha256(previous row's hash + canonical JSON of this row)`` (canonical:
keys sorted, no spaces, ASCII; the first row's previous hash is 64 zeros). Table
``audit_head`` keeps the last row's ``seq`` and ``hash``, written in the same
transaction, so rows deleted from the end are detected too. :func:`verify_chain`
recomputes the chain and names the first row edited or missing.

Rows are written by one background thread (:class:`AuditTrail`) in small transactions
(every ``flush_seconds``, default 20 ms), so a request never waits for the database;
:meth:`AuditTrail.flush` waits until every row recorded so far is committed, and the
server flushes on shutdown. The price: rows of the last few milliseconds before a crash
(a killed process, a power cut) can be lost; the chain stays intact. Several writers
(processes) may share one database: a writer that loses a race for the next ``seq``
re-reads the head and retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

log = logging.getLogger("holomed.serve.audit")

GENESIS = "0" * 64
FIELDS = (
    "seq",
    "time",
    "token_id",
    "role",
    "endpoint",
    "model",
    "bundle_hash",
    "patient",
    "modalities",
    "status",
    "latency_ms",
)

metadata = MetaData()
audit_table = Table(
    "audit",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("time", String(32), nullable=False),
    Column("token_id", String(12), nullable=True),
    Column("role", String(20), nullable=True),
    Column("endpoint", String(200), nullable=False),
    Column("model", String(200), nullable=True),
    Column("bundle_hash", String(64), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("modalities", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("hash", String(64), nullable=False),
)
head_table = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


def canonical(row: dict[str, Any]) -> str:
    """The row's fields (``FIELDS``) as canonical JSON: what its hash covers."""
    return json.dumps(
        {k: row.get(k) for k in FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def row_hash(previous: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((previous + canonical(row)).encode()).hexdigest()


def normalise(
    *,
    time: str,
    endpoint: str,
    status: int,
    latency_ms: float,
    token_id: str | None = None,
    role: str | None = None,
    model: str | None = None,
    bundle_hash: str | None = None,
    patient: str | None = None,
    modalities: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """One audit row (without ``seq`` and ``hash``) with the types stored, so that the
    hash computed now is the hash recomputed from the database later."""
    return {
        "time": str(time),
        "token_id": None if token_id is None else str(token_id)[:12],
        "role": None if role is None else str(role)[:20],
        "endpoint": str(endpoint)[:200],
        "model": None if model is None else str(model)[:200],
        "bundle_hash": None if bundle_hash is None else str(bundle_hash)[:64],
        "patient": None if patient is None else str(patient)[:64],
        "modalities": json.dumps(sorted({str(m) for m in modalities or []})),
        "status": int(status),
        "latency_ms": round(float(latency_ms), 3),
    }


def _head(conn: Any) -> tuple[int, str, bool]:
    """(seq, hash) of the chain's last row - from the head table, else the last row, else
    the genesis - and whether the head table has its row."""
    head = conn.execute(
        select(head_table.c.seq, head_table.c.hash).where(head_table.c.id == 1).with_for_update()
    ).first()
    if head is not None:
        return int(head[0]), str(head[1]), True
    last = conn.execute(
        select(audit_table.c.seq, audit_table.c.hash).order_by(audit_table.c.seq.desc()).limit(1)
    ).first()
    return (int(last[0]), str(last[1]), False) if last is not None else (0, GENESIS, False)


_CREATED: weakref.WeakSet = weakref.WeakSet()


def ensure_tables(engine: Any) -> None:
    """Create the audit tables if they are missing (once per engine)."""
    if engine not in _CREATED:
        metadata.create_all(engine)
        _CREATED.add(engine)


def append_rows(engine: Any, rows: list[dict[str, Any]], attempts: int = 20) -> list[int]:
    """Append ``rows`` (from :func:`normalise`) to the chain in one transaction; their
    ``seq`` numbers. Retries when another writer took the next ``seq`` first."""
    ensure_tables(engine)
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                seq, prev, had_head = _head(conn)
                out = []
                for r in rows:
                    seq += 1
                    row = {**r, "seq": seq}
                    row["hash"] = prev = row_hash(prev, row)
                    out.append(row)
                conn.execute(insert(audit_table), out)
                if had_head:
                    conn.execute(
                        update(head_table).where(head_table.c.id == 1).values(seq=seq, hash=prev)
                    )
                else:
                    conn.execute(insert(head_table).values(id=1, seq=seq, hash=prev))
            return [r["seq"] for r in out]
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    return []  # pragma: no cover - the loop returns or raises


class AuditTrail:
    """Records audit rows without blocking the caller; one thread writes them."""

    def __init__(self, engine: Any, flush_seconds: float = 0.02) -> None:
        self.engine = engine
        self.flush_seconds = float(flush_seconds)
        ensure_tables(engine)
        self._rows: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._recorded = 0
        self.written = 0
        self.failures = 0  # consecutive failed writes (the database unreachable)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._start()

    def _start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="holomed-audit", daemon=True)
        self._thread.start()

    def record(self, **fields: Any) -> None:
        """Queue one row: the fields of :func:`normalise`, ``time`` as ISO text or as
        seconds since the epoch (formatted by the writer). Restarts the writer after
        :meth:`close`."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._rows.append(fields)
            self._recorded += 1

    @property
    def healthy(self) -> bool:
        return self.failures == 0

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row recorded so far is committed; False on timeout."""
        target = self._recorded
        end = time.monotonic() + timeout
        self._wake.set()
        while self.written < target:
            if time.monotonic() > end:
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self.flush(timeout)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            if not self._rows:
                if self._stop:
                    return
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                continue
            raw = []
            while self._rows and len(raw) < 5000:
                raw.append(self._rows.popleft())
            batch = [_normalised(r) for r in raw]
            try:
                append_rows(self.engine, batch)
            except (DBAPIError, OSError) as err:
                self.failures += 1
                log.error(
                    "audit write failed (%s); %d row(s) kept to retry",
                    type(err).__name__,
                    len(batch),
                )
                self._rows.extendleft(reversed(raw))
                time.sleep(min(5.0, 0.1 * 2 ** min(self.failures, 6)))
                continue
            self.failures = 0
            self.written += len(batch)
            if not self._stop:
                time.sleep(self.flush_seconds)  # gather the next rows into one transaction


def iso_utc(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with microseconds and ``Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalised(fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`normalise` of a queued row; a row that cannot be normalised is kept as an
    ``(invalid audit row)`` entry rather than lost."""
    f = dict(fields)
    if isinstance(f.get("time"), int | float):
        f["time"] = iso_utc(float(f["time"]))
    try:
        return normalise(**f)
    except (TypeError, ValueError) as err:
        log.error("audit row not normalised (%s)", type(err).__name__)
        return normalise(
            time=str(f.get("time") or iso_utc(time.time())),
            endpoint="(invalid audit row)",
            status=0,
            latency_ms=0.0,
        )


# -- verification and summaries -----------------------------------------------------------


@dataclass
class ChainReport:
    """Outcome of :func:`verify_chain`. ``seq``: the first row edited or missing."""

    ok: bool
    rows: int
    message: str
    seq: int | None = None
    problem: str | None = None  # "edited", "missing" or "head"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "seq": self.seq,
            "problem": self.problem,
            "message": self.message,
        }


def _head_of(conn: Any) -> tuple[int, str] | None:
    head = conn.execute(
        select(head_table.c.seq, head_table.c.hash).where(head_table.c.id == 1)
    ).first()
    return None if head is None else (int(head[0]), str(head[1]))


def verify_chain(engine: Any) -> ChainReport:
    """Recompute the chain from the first row: the first row whose hash does not match
    its content and its predecessor (``edited``), or the first ``seq`` missing
    (``missing``: deleted), including rows deleted from the end (the head says more
    rows were written).

    A server may be writing while this reads: a row and the head move together in one
    transaction, so the head is read first and the rows up to it are checked; rows
    written after that are checked against the head as it is then."""
    ensure_tables(engine)
    prev, expected, n = GENESIS, 1, 0
    cols = [audit_table.c[k] for k in (*FIELDS, "hash")]
    with engine.connect() as conn:
        head = _head_of(conn)
        query = select(*cols).order_by(audit_table.c.seq)
        if head is not None:
            query = query.where(audit_table.c.seq <= head[0])
        result = conn.execution_options(yield_per=5000).execute(query)
        for r in result.mappings():
            seq = int(r["seq"])
            if seq != expected:
                gap = f"row {expected} is missing (deleted)"
                if seq > expected + 1:
                    gap = f"rows {expected} to {seq - 1} are missing (deleted)"
                return ChainReport(False, n, f"audit chain broken: {gap}", expected, "missing")
            row = dict(r)
            row["latency_ms"] = float(row["latency_ms"])
            if row_hash(prev, row) != row["hash"]:
                return ChainReport(
                    False,
                    n,
                    f"audit chain broken at row {seq}: its hash does not match its content and "
                    f"the row before it (row {seq} edited, or an earlier row edited and "
                    "re-hashed)",
                    seq,
                    "edited",
                )
            prev, expected, n = row["hash"], expected + 1, n + 1
        # rows beyond the head read first: written since (the head has moved with them),
        # or added without it (tampering)
        last = conn.execute(select(func.max(audit_table.c.seq))).scalar()
        now = _head_of(conn)
    if head is None:
        if n or last is not None:
            if now is not None:  # the first row was being written: check again
                return verify_chain(engine)
            return ChainReport(
                False, n, "audit chain head (table audit_head) is missing", None, "head"
            )
        return ChainReport(True, 0, "audit trail is empty")
    hseq, hhash = head
    if hseq > n:
        what = f"row {n + 1}" if hseq == n + 1 else f"rows {n + 1} to {hseq}"
        return ChainReport(
            False,
            n,
            f"audit chain broken: {what} missing (deleted from the end; the head records "
            f"{hseq} rows)",
            n + 1,
            "missing",
        )
    if hhash != prev or (last is not None and last > hseq and (now is None or now[0] < last)):
        return ChainReport(
            False, n, f"audit chain head does not match row {n} (head edited)", n, "head"
        )
    return ChainReport(True, n, f"audit chain intact: {n} rows")


def summary(engine: Any, since: str | None = None) -> dict[str, Any]:
    """Counts without pseudonyms: requests by endpoint and status, by role, by model,
    by day (UTC), refused requests (401/403/429), mean latency per endpoint. ``since``:
    an ISO time (UTC) or date; earlier rows are not counted."""
    if since:
        try:  # compared as text with the stored ISO times: it must be one
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"since: {since!r} is not an ISO date or time (e.g. 2026-01-31 or "
                "2026-01-31T08:00:00Z)"
            ) from None
    ensure_tables(engine)
    a = audit_table
    where = [] if not since else [a.c.time >= since]
    out: dict[str, Any] = {"since": since}
    with engine.connect() as conn:
        total, first, last = conn.execute(
            select(func.count(), func.min(a.c.time), func.max(a.c.time)).where(*where)
        ).one()
        out.update({"requests": int(total), "first": first, "last": last})
        rows = conn.execute(
            select(a.c.endpoint, a.c.status, func.count(), func.avg(a.c.latency_ms))
            .where(*where)
            .group_by(a.c.endpoint, a.c.status)
        ).all()
        by_endpoint: dict[str, dict[str, Any]] = {}
        for endpoint, status, count, mean_ms in rows:
            e = by_endpoint.setdefault(endpoint, {"requests": 0, "status": {}, "_ms": 0.0})
            e["requests"] += int(count)
            e["status"][str(status)] = int(count)
            e["_ms"] += float(mean_ms or 0.0) * int(count)
        for e in by_endpoint.values():
            e["mean_latency_ms"] = round(e.pop("_ms") / max(e["requests"], 1), 3)
        out["by_endpoint"] = by_endpoint
        for key, col in (("by_role", a.c.role), ("by_model", a.c.model), ("by_status", a.c.status)):
            out[key] = {
                str(k): int(n)
                for k, n in conn.execute(
                    select(col, func.count()).where(*where).group_by(col)
                ).all()
            }
        day = func.substr(a.c.time, 1, 10)
        out["by_day"] = {
            str(d): int(n)
            for d, n in conn.execute(
                select(day, func.count()).where(*where).group_by(day).order_by(day)
            ).all()
        }
    out["refused"] = sum(n for s, n in out["by_status"].items() if s in ("401", "403", "429"))
    return out
