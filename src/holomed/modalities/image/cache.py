"""The disk cache of preprocessed images. Steps 1-3 depend on the settings only, so
their result is kept on disk: an entry's key is the sha256 of the file's bytes and of
the settings (and, for an image registered to a reference, of the reference's bytes);
the array is ``<key>.npy`` under ``<cache_dir>/<key[:2]>/`` and its record, when it
has one, ``<key>.json`` next to it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from holomed.errors import CohortError

# enters every key (the settings carry it): bump it when steps 1-3 change what they compute
CACHE_VERSION = 1


def file_sha256(path: str, memo: dict[tuple, Any]) -> str:
    """sha256 of the file's bytes (a folder: its files' names and bytes), remembered in
    ``memo`` per (path, size, modification time) - of every file, for a folder, so a
    slice rewritten in place is seen."""
    p = Path(path)
    try:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    except OSError as err:
        raise CohortError(f"{path}: image file not found or unreadable ({err})") from None
    stamp = (str(p), tuple(stats))
    hit = memo.get(stamp)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() if p.is_dir() else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    memo[stamp] = h.hexdigest()
    return memo[stamp]


def entry_key(file_sha: str, settings: dict[str, Any], reference_sha: str | None = None) -> str:
    """Cache key: the file's sha256 + the settings (+ the reference's sha256 for an image
    registered to it)."""
    h = hashlib.sha256(file_sha.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    if reference_sha is not None:
        h.update(b"registered to " + reference_sha.encode())
    return h.hexdigest()


def cache_root(cache_dir: str) -> Path:
    """The cache folder, ``~`` and environment variables expanded."""
    return Path(os.path.expandvars(os.path.expanduser(str(cache_dir))))


def entry_file(root: Path, key: str) -> Path:
    """Where the array of entry ``key`` lives (its record: the same name, ``.json``)."""
    return root / key[:2] / f"{key}.npy"


def read_entry(f: Path, with_record: bool) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The array of entry ``f`` and, with ``with_record``, its record (marked
    ``cached``). ``OSError`` / ``ValueError`` for a damaged or incomplete entry."""
    arr = np.load(f, allow_pickle=False)
    record = None
    if with_record:
        record = json.loads(f.with_suffix(".json").read_text())
        record["cached"] = True
    return arr, record


def write_entry(f: Path, arr: np.ndarray, record: dict[str, Any] | None) -> None:
    """Entry ``f``: its record (when given) and then its array, each written to a
    temporary file and renamed into place, so a reader never sees half an entry.
    ``OSError`` when the cache is not writable."""
    f.parent.mkdir(parents=True, exist_ok=True)
    if record is not None:
        side = f.with_suffix(".json")
        tmp = side.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, side)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    os.replace(tmp, f)
