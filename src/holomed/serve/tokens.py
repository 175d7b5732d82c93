"""API tokens: roles, argon2-hashed storage, fast verification.

A token reads ``hm_<id>_<secret>``: ``id`` is 12 hex digits, public (it names the token
in lists, the audit trail and revocation); ``secret`` is 43 URL-safe characters from 32
random bytes. Only the argon2id hash of the whole token is stored (OWASP's minimum
parameters: 19 MiB, 2 passes, 1 lane; about 20 ms); the token itself is shown once,
when it is created, and never written anywhere.

Verification looks the token's row up by its id and checks ONE argon2 hash (tens of
milliseconds, run outside the event loop by the server). A successful verification is
remembered in memory for ``cache_seconds`` (default 30 s, ``token_cache_seconds``),
keyed by the SHA-256 of the presented token, so later requests cost a dictionary lookup;
in the last quarter of that time the server re-verifies a token in use in the background,
so a busy token never waits for argon2. Consequence: a token revoked by another process
(``holomed tokens revoke``) stops working in a running server within ``cache_seconds``;
revoked through the server's own admin endpoint, at once. A presented token that failed
verification is remembered as failed for the same time (repeating a wrong token does not
cost an argon2 check each time).

Roles (each includes the ones before it):

- ``clinician``: predict, explain, list and view models;
- ``researcher``: + model metrics and the audit summary;
- ``admin``: + token management.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Column, MetaData, String, Table, insert, select, update

ROLES = ("clinician", "researcher", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "clinician": frozenset({"predict", "explain", "models"}),
    "researcher": frozenset({"predict", "explain", "models", "metrics", "audit"}),
    "admin": frozenset({"predict", "explain", "models", "metrics", "audit", "tokens"}),
}
PREFIX = "hm"
_FORMAT = re.compile(r"^hm_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
CACHE_LIMIT = 10_000  # remembered verifications (successful and failed) at most

metadata = MetaData()
tokens_table = Table(
    "api_tokens",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("role", String(20), nullable=False),
    Column("hash", String(200), nullable=False),
    Column("created", String(32), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("revoked_at", String(32), nullable=True),
)


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class TokenInfo:
    """A token's public record (never its secret or hash)."""

    id: str
    name: str
    role: str
    created: str
    revoked: bool = False
    revoked_at: str | None = None

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created": self.created,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }


def token_id_of(token: str) -> str | None:
    """The public id of a well-formed token, else None."""
    m = _FORMAT.match(token or "")
    return m.group(1) if m else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in the ``api_tokens`` table of ``engine``'s database."""

    def __init__(self, engine: Any, cache_seconds: float = 30.0) -> None:
        from argon2 import PasswordHasher

        self.engine = engine
        self.cache_seconds = float(cache_seconds)
        # OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): the secrets are 256-bit
        # random, so the hash guards a leaked table, not a guessable password; one lane
        # keeps a verification from taking every core of a small server
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self._ok: OrderedDict[str, tuple[TokenInfo, float]] = OrderedDict()
        self._bad: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        metadata.create_all(engine)

    # -- management -------------------------------------------------------------------
    def create(self, role: str, name: str = "") -> tuple[TokenInfo, str]:
        """A new token of ``role``: (its record, the token). The token is not stored."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} unknown; expected one of {', '.join(ROLES)}")
        if len(name) > 200:
            raise ValueError("token name: at most 200 characters")
        tid = secrets.token_hex(6)
        token = f"{PREFIX}_{tid}_{secrets.token_urlsafe(32)}"
        info = TokenInfo(id=tid, name=name, role=role, created=utc_now())
        with self.engine.begin() as conn:
            conn.execute(
                insert(tokens_table).values(
                    id=tid,
                    name=name,
                    role=role,
                    hash=self._hasher.hash(token),
                    created=info.created,
                    revoked=False,
                )
            )
        return info, token

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, oldest first (revoked ones included)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(tokens_table).order_by(tokens_table.c.created)).mappings()
            return [self._info(r) for r in rows]

    def get(self, token_id: str) -> TokenInfo | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(tokens_table).where(tokens_table.c.id == token_id))
                .mappings()
                .first()
            )
        return None if row is None else self._info(row)

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (a named error when there is no such token). Verifications
        of it remembered by this process are forgotten at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.id == token_id, tokens_table.c.revoked.is_(False))
                .values(revoked=True, revoked_at=utc_now())
            )
        info = self.get(token_id)
        if info is None:
            raise LookupError(f"no token with id {token_id!r}")
        with self._lock:
            for key in [k for k, (v, _) in self._ok.items() if v.id == token_id]:
                del self._ok[key]
        return info

    # -- verification -----------------------------------------------------------------
    def cached(self, token: str) -> TokenInfo | None | bool:
        """From memory only: the token's record when verified recently, ``False`` when it
        failed recently, ``None`` when unknown (then :meth:`verify` decides)."""
        key = _digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._ok.get(key)
            if hit is not None:
                if hit[1] > now:
                    return hit[0]
                del self._ok[key]
            bad = self._bad.get(key)
            if bad is not None:
                if bad > now:
                    return False
                del self._bad[key]
        return None

    def due(self, token: str) -> bool:
        """Whether the remembered verification of ``token`` is in the last quarter of its
        time (the server then re-verifies it in the background, so that a busy token is
        never held up by its cache running out)."""
        key = _digest(token)
        with self._lock:
            hit = self._ok.get(key)
        return hit is not None and hit[1] - time.monotonic() < 0.25 * self.cache_seconds

    def verify(self, token: str, fresh: bool = False) -> TokenInfo | None:
        """The record of a valid, unrevoked token, else None. At most one argon2 check
        (by the token's id); results are remembered for ``cache_seconds`` (``fresh``:
        checked again even when remembered)."""
        hit = None if fresh else self.cached(token)
        if hit is not None:
            return hit or None
        tid = token_id_of(token)
        info = None
        if tid is not None:
            with self.engine.connect() as conn:
                row = (
                    conn.execute(select(tokens_table).where(tokens_table.c.id == tid))
                    .mappings()
                    .first()
                )
            if row is not None and not row["revoked"] and self._matches(row["hash"], token):
                info = self._info(row)
        self._remember(token, info)
        return info

    def _matches(self, stored: str, token: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        try:
            return bool(self._hasher.verify(stored, token))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _remember(self, token: str, info: TokenInfo | None) -> None:
        if self.cache_seconds <= 0:
            with self._lock:
                self._ok.pop(_digest(token), None)
            return
        key = _digest(token)
        until = time.monotonic() + self.cache_seconds
        with self._lock:
            table: OrderedDict = self._ok if info is not None else self._bad
            (self._bad if info is not None else self._ok).pop(key, None)
            table[key] = (info, until) if info is not None else until
            table.move_to_end(key)
            while len(table) > CACHE_LIMIT:
                table.popitem(last=False)

    @staticmethod
    def _info(row: Any) -> TokenInfo:
        return TokenInfo(
            id=row["id"],
            name=row["name"] or "",
            role=row["role"],
            created=row["created"],
            revoked=bool(row["revoked"]),
            revoked_at=row["revoked_at"],
        )
