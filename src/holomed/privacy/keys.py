"""One key, one patient, one identity.

The key is secret bytes read from a file (``HOLOMED_PRIVACY_KEY_FILE`` or an explicit
path) or from the environment (``HOLOMED_PRIVACY_KEY``, text); at least 32 bytes. It is
never written to any output. From it:

- the **pseudonym** of a patient id is ``P-`` + the first 20 hex digits of
  HMAC-SHA256(key, "id:" + id): the same in every modality and every run with the same
  key, and not reversible without it;
- the **date shift** of a patient is a whole number of days in [-max_days, -1] derived
  from HMAC-SHA256(key, "date:" + id): every date of that patient (notes, DICOM, tables)
  moves by the same amount, so intervals within a patient are kept;
- **UIDs** (DICOM) are remapped to ``2.25.<integer of HMAC-SHA256(key, "uid:" + uid)>``,
  a valid UID derived from a UUID-sized number, the same for the same input UID.

Ids are compared as written (text, Unicode NFC, surrounding spaces removed), as the
cohort reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from holomed.errors import PrivacyError

MIN_KEY_BYTES = 32
KEY_ENV = "HOLOMED_PRIVACY_KEY"
KEY_FILE_ENV = "HOLOMED_PRIVACY_KEY_FILE"


def _norm(patient_id: object) -> str:
    return unicodedata.normalize("NFC", str(patient_id)).strip()


@dataclass(frozen=True)
class PrivacyKey:
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise PrivacyError(
                f"privacy key: {len(self.secret)} bytes; at least {MIN_KEY_BYTES} are needed "
                "(e.g. `head -c 32 /dev/urandom > key.bin`)"
            )

    def __repr__(self) -> str:  # never print the secret
        return "PrivacyKey(<secret>)"

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: object) -> str:
        return "P-" + self._mac("id", _norm(patient_id)).hex()[:20]

    def date_shift_days(self, patient_id: object, max_days: int = 365) -> int:
        """Days to add to every date of this patient: in [-max_days, -1]."""
        n = int.from_bytes(self._mac("date", _norm(patient_id))[:8], "big")
        return -(1 + n % max_days)

    def uid(self, uid: str) -> str:
        n = int.from_bytes(self._mac("uid", uid.strip())[:16], "big")
        return f"2.25.{n}"


def load_key(path: str | Path | None = None) -> PrivacyKey:
    """The key from ``path``, else the file named by ``HOLOMED_PRIVACY_KEY_FILE``, else
    the text of ``HOLOMED_PRIVACY_KEY``; a named error when none is given, the file is
    missing or unreadable, or the key is shorter than 32 bytes."""
    path = path or os.environ.get(KEY_FILE_ENV)
    if path:
        p = Path(path).expanduser()
        try:
            secret = p.read_bytes()
        except OSError as err:
            raise PrivacyError(f"{p}: privacy key file unreadable ({err.strerror})") from None
        secret = secret.strip() if secret.strip() and secret.isascii() else secret
        try:
            return PrivacyKey(secret)
        except PrivacyError as err:
            raise PrivacyError(f"{p}: {err}") from None
    text = os.environ.get(KEY_ENV)
    if text:
        return PrivacyKey(text.encode())
    raise PrivacyError(
        f"no privacy key: give a key file (--key-file or ${KEY_FILE_ENV}) or set ${KEY_ENV}; "
        "the key never appears in any output"
    )
