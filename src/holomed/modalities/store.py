"""An on-disk store of preprocessed arrays, for cohorts larger than memory.

After the preprocessors are fitted (on training patients), ``transform`` runs over a
cohort in chunks of patients (``cohort.subset``); each chunk's rows are written into one
NumPy ``.npy`` file per modality, created whole beforehand and written through a memory
map. The result per modality is a :class:`StoredRows` (a
:class:`~holomed.modalities.base.LazyRows`): training and prediction read one batch of
rows at a time, so peak memory does not grow with the preprocessed arrays. Presence
masks stay in memory (one bool per patient).

Why ``.npy`` memory maps (not Zarr or Parquet): the arrays are dense float32 blocks of a
fixed shape per patient, read by row index in random order; a ``.npy`` file is that
block with a 128-byte header, readable by NumPy alone (no extra dependency, nothing to
decode, no chunk cache in the reader), and independent writers can fill disjoint row
ranges of one file through ``np.memmap``. Zarr would add compression and cloud storage,
Parquet a columnar layout that fits tables, not ``(T, C)`` or ``(C, H, W)`` rows.

Layout (every name derived from content, so a stale store is never reused)::

    ROOT/v<key>/              key: preprocessors' state (JSON + arrays), holomed and
                              store format versions, the cohort's ids and values
                              (content hash; files named in cells: path, size, mtime),
                              chunk size, modalities and shapes
      layout.json
      p<key>/                 key: the presence masks
        present.npy           (modalities, n) bool
        m0.npy m1.npy ...     (n, *shape) float32 per modality (names in layout.json)
        done/000003.json      chunk 3 finished: its rows of every file flushed (msync)
                              before this marker was renamed into place
        complete.json         every chunk done

Resume: a build that stops (error, kill, power cut) leaves the chunks it finished marked;
the next call with the same preprocessors and cohort transforms only the chunks without
a marker. A marker is written last, by an atomic rename, so a chunk whose rows were half
written never looks finished. Two processes building the same store write the same
bytes to the same rows; files are created by ``os.link`` (never replaced under a writer).

Chunks are transformed through an executor (:mod:`holomed.executor`: serial,
local processes or Ray; the preprocessors and the cohort are shipped once per worker,
so each worker holds a copy of the cohort). With Ray on several machines the store's
folder must be on a file system every worker sees.

Masked cohorts (``cohort.with_presence``, used by robustness curves) reuse a store built
for a presence that includes theirs: rows present there and absent here read as NaN, as
the in-memory transform gives them. This, and chunking itself, rely on a preprocessor's
``transform`` of a row depending on that row only, which holds for every kind here;
results equal the in-memory transform exactly for tabular, omics and timeseries (tested),
up to float rounding where a transform batches rows through a network.

Layering: this module knows preprocessors (this layer) and takes the cohort by duck type
(``ids``, ``modalities``, ``subset``); the executor is passed in by the caller
(:meth:`holomed.model.Model`), never imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from holomed import __version__
from holomed.errors import CohortError
from holomed.modalities.base import LazyRows, Preprocessor

if TYPE_CHECKING:
    from holomed.cohort import Cohort

FORMAT = 1
DTYPE = np.dtype(np.float32)
CHUNK_MB = 32  # arrays per chunk when the chunk size is not given
MIN_CHUNK, MAX_CHUNK = 256, 65_536  # patients per chunk, automatic size


# -- reading ------------------------------------------------------------------------


class StoredRows(LazyRows):
    """Rows of one modality's ``.npy`` file, read per call through a memory map that is
    opened and closed each time: touched pages do not stay mapped, so the process's
    resident memory does not grow as an epoch visits every row (the kernel's page cache
    keeps recently read data; it is not counted in the process's RSS). ``hide`` (n,) bool
    marks rows read as NaN (present in the store, absent in the caller's cohort).

    Why not one map kept open: reads would be ~8x faster (512 random rows of 400 bytes:
    0.13 ms against 1.0 ms), but the kernel maps whole page-cache folios around every row
    touched, so the process's RSS grew by 380 MB of a 400 MB file within 3 batches
    (measured; ``MADV_RANDOM`` did not prevent it)."""

    def __init__(self, path: str | Path, hide: np.ndarray | None = None) -> None:
        path = str(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if fortran or np.dtype(dtype) != DTYPE:
            raise CohortError(f"{path}: not a float32 C-order array of the store")
        super().__init__(shape[0], tuple(shape[1:]))
        self.path, self.offset = path, int(offset)
        self.hide = None if hide is None or not np.any(hide) else np.asarray(hide, bool)

    def __reduce__(self):  # small: a DDP worker or executor reopens the file itself
        return (_stored_rows, (self.path, self.hide))

    def _map(self) -> np.memmap:
        return np.memmap(self.path, DTYPE, "r", offset=self.offset, shape=self.shape)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if not len(idx):
            return np.empty((0, *self.shape[1:]), DTYPE)
        if idx.min() < 0:
            idx = np.where(idx < 0, idx + len(self), idx)
        mm = self._map()
        a, b = int(idx[0]), int(idx[-1]) + 1
        if b - a == len(idx) and (len(idx) == 1 or (np.diff(idx) == 1).all()):
            out = np.array(mm[a:b])  # a run of rows (prediction): one read, copied
        else:
            out = mm[idx]  # a copy
        del mm  # unmapped here
        if self.hide is not None:
            out[self.hide[idx]] = np.nan
        return out


def _stored_rows(path: str, hide: np.ndarray | None) -> StoredRows:
    return StoredRows(path, hide)


class AbsentRows(LazyRows):
    """A modality the cohort lacks: every row NaN, nothing held in memory."""

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.full((len(np.asarray(idx).reshape(-1)), *self.shape[1:]), np.nan, DTYPE)

    def __reduce__(self):
        return (AbsentRows, (self.shape[0], self.shape[1:]))


# -- keys ---------------------------------------------------------------------------


def _hash_cell(h: Any, v: Any, vocab_seen: dict[int, bytes]) -> None:
    """One cell of an object column into ``h``: series (``Events``) by their arrays,
    files named in cells by path, size and modification time, nested lists in order."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        h.update(b"\x00N")
    elif isinstance(v, str | Path):
        s = str(v)
        h.update(b"\x00s" + s.encode("utf-8", "surrogatepass"))
        if len(s) < 4096:
            try:
                st = os.stat(s)
                h.update(f"\x00f{st.st_size}:{st.st_mtime_ns}".encode())
            except (OSError, ValueError):
                pass
    elif all(hasattr(v, a) for a in ("time", "code", "value", "vocab")):  # a series
        key = id(v.vocab)
        if key not in vocab_seen:
            vocab_seen[key] = hashlib.blake2b(repr(tuple(v.vocab)).encode()).digest()
        h.update(b"\x00e" + vocab_seen[key])
        for a in (v.time, v.code, v.value):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    elif isinstance(v, np.ndarray) and v.dtype != object:
        a = np.ascontiguousarray(v)
        h.update(f"\x00a{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    elif isinstance(v, list | tuple | np.ndarray):
        h.update(f"\x00l{len(v)}".encode())
        for item in v:
            _hash_cell(h, item, vocab_seen)
    elif isinstance(v, dict):
        h.update(f"\x00d{len(v)}".encode())
        for k in sorted(v, key=str):
            _hash_cell(h, str(k), vocab_seen)
            _hash_cell(h, v[k], vocab_seen)
    else:
        h.update(b"\x00r" + repr(v).encode())


def _hash_values(h: Any, values: Any) -> None:
    """A modality's values (what the kind's reader produced) into ``h``: numeric
    columns by their bytes, text columns by pandas' stable hash, other cells one by one."""
    seen: dict[int, bytes] = {}
    if isinstance(values, pd.DataFrame):
        h.update(repr([str(c) for c in values.columns]).encode())
        for j in range(values.shape[1]):
            col = values.iloc[:, j]
            arr = col.to_numpy()
            if arr.dtype != object and arr.dtype.kind in "biufcmM":
                a = np.ascontiguousarray(arr)
                h.update(f"\x00c{a.dtype.str}".encode())
                h.update(memoryview(a.view(np.uint8)))
            elif pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
                hashed = pd.util.hash_pandas_object(col, index=False).to_numpy()
                h.update(b"\x00t" + memoryview(np.ascontiguousarray(hashed).view(np.uint8)))
                h.update(np.asarray(col.isna().to_numpy(), np.uint8).tobytes())
            else:
                for v in arr:
                    _hash_cell(h, v, seen)
    elif isinstance(values, np.ndarray) and values.dtype != object:
        _hash_cell(h, values, seen)
    else:
        h.update(b"\x00L")
        for v in values:
            _hash_cell(h, v, seen)


def _hash_state(h: Any, pre: Preprocessor) -> None:
    meta, arrays = pre.get_state()
    h.update(f"{type(pre).__module__}.{type(pre).__qualname__}".encode())
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[k]))
        h.update(f"\x00{k}{a.dtype.str}{a.shape}".encode())
        if a.dtype != object:
            h.update(memoryview(a.view(np.uint8)) if a.size else b"")


def store_key(
    preprocessors: dict[str, Preprocessor], cohort: Cohort, names: list[str], chunk: int
) -> str:
    """What the arrays depend on, hashed: every preprocessor's fitted state, holomed's
    version, the store format, the chunk size, and the cohort's ids and values of the
    stored modalities (not their presence masks: see :func:`presence_key`)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"holomed {__version__} store {FORMAT} chunk {chunk}\x00".encode())
    h.update("\x1f".join(map(str, cohort.ids)).encode("utf-8", "surrogatepass"))
    for name in names:
        pre, data = preprocessors[name], cohort.modalities[name]
        h.update(f"\x00modality {name} {data.kind} {tuple(pre.out_shape)}".encode())
        _hash_state(h, pre)
        _hash_values(h, data.values)
    return h.hexdigest()


def presence_key(present: np.ndarray) -> str:
    a = np.ascontiguousarray(present, dtype=bool)
    return hashlib.blake2b(memoryview(a.view(np.uint8)), digest_size=12).hexdigest()


# -- files --------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by rename: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def _link_into_place(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (another process made it first):
    a file another writer has open is never replaced."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _create_array(path: Path, shape: tuple[int, ...]) -> None:
    """A ``.npy`` of ``shape`` float32 (sparse, zeros) at ``path``, unless it exists."""
    if path.exists():
        _check_array(path, shape)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=shape)
    del mm
    _link_into_place(tmp, path)
    _check_array(path, shape)


def _check_array(path: Path, shape: tuple[int, ...]) -> None:
    rows = StoredRows(path)
    if rows.shape != tuple(shape):
        raise CohortError(
            f"{path}: the store's array has shape {rows.shape}, expected {tuple(shape)}; "
            "the folder was changed by hand: delete it and run again"
        )


# -- building -----------------------------------------------------------------------


@dataclass
class _Shared:
    """What every chunk job reads: shipped once per worker by the executor."""

    preprocessors: dict[str, Preprocessor]
    cohort: Any
    folder: str
    names: list[str]
    chunk: int


def transform_part(pre: Preprocessor, data: Any, name: str) -> np.ndarray:
    """One modality's ``transform`` with the in-memory path's error (``CohortError``)."""
    try:
        return pre.transform(data)
    except ValueError as err:
        raise CohortError(f"modality {name!r}: {err}") from None


def build_chunk(shared: _Shared, k: int) -> dict[str, dict[str, int]]:
    """Transform chunk ``k`` (rows ``k * chunk`` to ``(k + 1) * chunk``), write its rows
    of every modality's file, flush them, then mark the chunk done (atomic rename).
    Returns the unknown-category counts of its transform (tabular)."""
    n = len(shared.cohort)
    a, b = k * shared.chunk, min(n, (k + 1) * shared.chunk)
    part = shared.cohort.subset(np.arange(a, b))
    folder = Path(shared.folder)
    counts: dict[str, dict[str, int]] = {}
    for i, name in enumerate(shared.names):
        pre = shared.preprocessors[name]
        x = np.asarray(transform_part(pre, part.modalities[name], name), dtype=DTYPE)
        mm = np.load(folder / f"m{i}.npy", mmap_mode="r+")
        if x.shape != (b - a, *mm.shape[1:]):
            raise CohortError(
                f"modality {name!r}: transform gave shape {x.shape}, expected "
                f"{(b - a, *mm.shape[1:])}"
            )
        mm[a:b] = x
        mm.flush()  # msync: the rows are on disk before the marker says so
        del mm, x
        unknown = getattr(pre, "unknown_categories_", None)
        if unknown:
            counts[name] = {str(c): int(v) for c, v in unknown.items()}
    mark = {"rows": [a, b], "unknown_categories": counts, "pid": os.getpid()}
    _write_json(folder / "done" / f"{k:06d}.json", mark)
    return counts


def chunk_size(preprocessors: dict[str, Preprocessor], names: list[str]) -> int:
    """Patients per chunk when not given: about ``CHUNK_MB`` of arrays."""
    per = sum(int(np.prod(preprocessors[m].out_shape)) for m in names) * DTYPE.itemsize
    return int(np.clip((CHUNK_MB << 20) // max(per, 1), MIN_CHUNK, MAX_CHUNK))


def size_mb(preprocessors: dict[str, Preprocessor], n: int) -> float:
    """MB of the preprocessed arrays of ``n`` patients."""
    per = sum(int(np.prod(p.out_shape)) for p in preprocessors.values())
    return n * per * DTYPE.itemsize / 2**20


@dataclass
class Store:
    """A finished store: its folder, modalities and what its rows hide."""

    folder: Path
    names: list[str]
    hide: dict[str, np.ndarray | None]
    unknown: dict[str, dict[str, int]]
    built: int  # chunks transformed by this call (0: reused)

    def arrays(self) -> dict[str, StoredRows]:
        return {
            m: StoredRows(self.folder / f"m{i}.npy", self.hide[m]) for i, m in enumerate(self.names)
        }


def _superset(vdir: Path, present: np.ndarray) -> tuple[Path, np.ndarray] | None:
    """A finished store in ``vdir`` whose presence includes ``present`` (M, n)."""
    for sub in sorted(vdir.glob("p*")):
        if not (sub / "complete.json").exists() or not (sub / "present.npy").exists():
            continue
        try:
            theirs = np.load(sub / "present.npy")
        except (OSError, ValueError):
            continue
        if theirs.shape == present.shape and not (present & ~theirs).any():
            return sub, theirs
    return None


def open_store(
    preprocessors: dict[str, Preprocessor],
    cohort: Cohort,
    root: str | Path,
    chunk: int | None = None,
    executor: Callable[[], Any] | None = None,
) -> Store:
    """The store of ``cohort`` under ``preprocessors`` in ``root``: reused when it exists
    (or one whose presence includes this cohort's), resumed when a build stopped, else
    built. ``executor``: a factory of an executor (``map(fn, shared, jobs)``), called
    only when chunks remain to be transformed; None runs them here."""
    names = [m for m in preprocessors if m in cohort.modalities]
    n = len(cohort)
    chunk = int(chunk or chunk_size(preprocessors, names))
    shapes = {m: (n, *map(int, preprocessors[m].out_shape)) for m in names}
    vdir = Path(root) / f"v{store_key(preprocessors, cohort, names, chunk)[:24]}"
    present = np.stack([cohort.modalities[m].present for m in names]).astype(bool)
    pdir = vdir / f"p{presence_key(present)[:16]}"

    def result(folder: Path, theirs: np.ndarray, built: int) -> Store:
        done = json.loads((folder / "complete.json").read_text())
        hide = {m: (theirs[i] & ~present[i]) for i, m in enumerate(names)}
        for m, shape in shapes.items():
            _check_array(folder / f"m{names.index(m)}.npy", shape)
        return Store(folder, names, hide, done.get("unknown_categories", {}), built)

    if (pdir / "complete.json").exists():
        return result(pdir, present, 0)
    found = _superset(vdir, present) if vdir.is_dir() else None
    if found is not None:
        return result(found[0], found[1], 0)

    (pdir / "done").mkdir(parents=True, exist_ok=True)
    layout = {
        "format": FORMAT,
        "patients": n,
        "chunk": chunk,
        "modalities": {m: {"file": f"m{i}.npy", "shape": list(shapes[m])}
                       for i, m in enumerate(names)},
    }  # fmt: skip
    if not (vdir / "layout.json").exists():
        _write_json(vdir / "layout.json", layout)
    if not (pdir / "present.npy").exists():
        tmp = pdir / f".present.{os.getpid()}.{uuid.uuid4().hex[:8]}.npy"
        np.save(tmp, present)
        _link_into_place(tmp, pdir / "present.npy")
    for i, m in enumerate(names):
        _create_array(pdir / f"m{i}.npy", shapes[m])
    n_chunks = -(-n // chunk)
    todo = [k for k in range(n_chunks) if not (pdir / "done" / f"{k:06d}.json").exists()]
    if todo:
        shared = _Shared(preprocessors, cohort, str(pdir), names, chunk)
        if executor is None:
            for k in todo:
                build_chunk(shared, k)
        else:
            with executor() as ex:
                ex.map(build_chunk, shared, todo)
    missing = [k for k in range(n_chunks) if not (pdir / "done" / f"{k:06d}.json").exists()]
    if missing:
        raise CohortError(f"{pdir}: chunks {missing[:5]} were not written")
    unknown: dict[str, dict[str, int]] = {}
    for k in range(n_chunks):
        rec = json.loads((pdir / "done" / f"{k:06d}.json").read_text())
        for m, cols in rec.get("unknown_categories", {}).items():
            for c, v in cols.items():
                unknown.setdefault(m, {})[c] = unknown.get(m, {}).get(c, 0) + int(v)
    _write_json(pdir / "complete.json", {**layout, "unknown_categories": unknown})
    return result(pdir, present, len(todo))


def stored_arrays(
    preprocessors: dict[str, Preprocessor],
    cohort: Cohort,
    root: str | Path,
    chunk: int | None = None,
    executor: Callable[[], Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What :func:`holomed.model.transform_cohort` returns - preprocessed inputs per
    modality and presence masks - with the inputs read from the store (:func:`open_store`)
    as :class:`StoredRows`. A modality the cohort lacks is absent for everyone
    (:class:`AbsentRows`). Unknown-category counts (tabular ``unknown_categories_``) are
    the store's, summed over its chunks (over the wider presence when a masked cohort
    reuses a store). When the store's folder cannot be written, a warning says so and the
    arrays are computed in memory."""
    n = len(cohort)
    try:
        if n == 0 or not any(m in cohort.modalities for m in preprocessors):
            raise _InMemory
        Path(root).mkdir(parents=True, exist_ok=True)
        store = open_store(preprocessors, cohort, root, chunk, executor)
    except _InMemory:
        store = None
    except OSError as err:
        warnings.warn(
            f"preprocessed-array store {root} is not usable ({err}); arrays are kept in memory",
            RuntimeWarning,
            stacklevel=2,
        )
        store = None
    x: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    stored = store.arrays() if store is not None else {}
    for name, pre in preprocessors.items():
        if name in cohort.modalities:
            data = cohort.modalities[name]
            x[name] = stored[name] if name in stored else transform_part(pre, data, name)
            present[name] = data.present.copy()
            if store is not None and hasattr(pre, "unknown_categories_"):
                pre.unknown_categories_ = dict(store.unknown.get(name, {}))
        else:
            x[name] = AbsentRows(n, tuple(pre.out_shape))
            present[name] = np.zeros(n, bool)
    return x, present


class _InMemory(Exception):
    pass
