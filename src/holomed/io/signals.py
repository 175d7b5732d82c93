"""Regular multi-channel signals: EDF/EDF+/BDF (``pyedflib``) and WFDB records (``wfdb``:
``.hea`` header + ``.dat``/``.mat`` samples), plus EDF+ annotations (hypnograms).

Every reader returns a :class:`Signal` ``(data, fs, channels, meta)``: ``data`` is float32
``(n_samples, n_channels)`` in physical units (uV, mV ...), ``fs`` the sampling rate in
Hz. Only the channels asked for, and only the asked time window (``start``/``stop`` in
seconds), are read from disk. Channels of one EDF file recorded at different rates are
brought to the highest of the selected rates (``scipy.signal.resample_poly``).

Headers are read on their own (:func:`read_header`) so a cohort can be checked without
reading samples. A missing, corrupt or truncated file raises :class:`CohortError` naming
the file; a missing channel names the file and the channels it has.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from holomed.errors import CohortError

EDF_SUFFIXES = (".edf", ".bdf", ".rec")
# bytes per sample of the WFDB storage formats whose file size can be predicted
_WFDB_BYTES = {
    "8": 1.0,
    "16": 2.0,
    "24": 3.0,
    "32": 4.0,
    "61": 2.0,
    "80": 1.0,
    "160": 2.0,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}


class SignalHeader(NamedTuple):
    """What a record holds, read without its samples. ``fs``: the highest channel rate
    (Hz); ``n_samples`` at that rate; ``duration`` in seconds."""

    path: Path
    format: str  # "edf" or "wfdb"
    fs: float
    channels: list[str]
    channel_fs: list[float]
    units: list[str]
    n_samples: int
    duration: float
    meta: dict[str, Any]


class Signal(NamedTuple):
    """``data`` float32 ``(n_samples, n_channels)`` in physical units at ``fs`` Hz."""

    data: np.ndarray
    fs: float
    channels: list[str]
    meta: dict[str, Any]


# -- paths and channels ----------------------------------------------------------------


def signal_format(path: str | Path) -> str:
    """``"edf"`` for ``.edf``/``.bdf``/``.rec`` files, ``"wfdb"`` for a record path
    (with or without ``.hea``); :class:`CohortError` otherwise."""
    p = Path(path)
    if p.suffix.lower() in EDF_SUFFIXES:
        return "edf"
    if p.suffix.lower() == ".hea" or Path(f"{p}.hea").exists():
        return "wfdb"
    if p.suffix.lower() in (".dat", ".mat") and p.with_suffix(".hea").exists():
        return "wfdb"
    raise CohortError(
        f"{p}: not an EDF file ({', '.join(EDF_SUFFIXES)}) nor a WFDB record (no {p}.hea)"
    )


def _wfdb_record(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() in (".hea", ".dat", ".mat") else p


def record_exists(path: str | Path) -> bool:
    """Whether the file (EDF) or the record's header (WFDB) exists."""
    p = Path(path)
    if p.suffix.lower() in EDF_SUFFIXES:
        return p.is_file()
    return Path(f"{_wfdb_record(p)}.hea").is_file()


def _norm(name: str) -> str:
    return " ".join(str(name).split()).lower()


def select_channels(available: list[str], wanted: list[str] | None, where: str | Path) -> list[int]:
    """Indices of ``wanted`` in ``available`` (all when ``None``): exact names first,
    then ignoring case and repeated spaces. A missing name raises :class:`CohortError`
    naming the file and the channels it has."""
    if wanted is None:
        return list(range(len(available)))
    loose: dict[str, list[int]] = {}
    for i, a in enumerate(available):
        loose.setdefault(_norm(a), []).append(i)
    out, missing = [], []
    for w in wanted:
        if w in available:
            out.append(available.index(w))
        elif len(loose.get(_norm(w), [])) == 1:
            out.append(loose[_norm(w)][0])
        else:
            missing.append(w)
    if missing:
        raise CohortError(
            f"{where}: channel(s) {missing} not found; the record has {list(available)}"
        )
    return out


def _window(
    start: float | None, stop: float | None, duration: float, path: Path
) -> tuple[float, float]:
    a = 0.0 if start is None or pd.isna(start) else float(start)
    b = duration if stop is None or pd.isna(stop) else float(stop)
    if a < 0 or b <= a:
        raise CohortError(f"{path}: window [{a:g}, {b:g}) s is empty or negative")
    if a >= duration:
        raise CohortError(
            f"{path}: window starts at {a:g} s, after the record ends ({duration:g} s)"
        )
    return a, min(b, duration)


def resample(x: np.ndarray, fs_in: float, fs_out: float, axis: int = 0) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, anti-aliased) from ``fs_in``
    to ``fs_out`` Hz along ``axis``; the ratio is approximated to a fraction with
    denominator <= 1000."""
    if fs_in == fs_out or x.shape[axis] == 0:
        return x
    from scipy.signal import resample_poly

    r = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(x, r.numerator, r.denominator, axis=axis)


# -- WFDB ------------------------------------------------------------------------------


def parse_comments(comments: list[str]) -> dict[str, str]:
    """WFDB header comments ``#Age: 74`` / ``# Dx: RBBB,AF`` -> ``{"Age": "74", "Dx":
    "RBBB,AF"}``; lines without ``key: value`` are kept under ``comment``, joined."""
    meta: dict[str, str] = {}
    loose = []
    for c in comments:
        text = c.strip().lstrip("#").strip()
        key, sep, value = text.partition(":")
        if sep and key.strip() and " " not in key.strip():
            meta[key.strip()] = value.strip()
        elif text:
            loose.append(text)
    if loose:
        meta["comment"] = "; ".join(loose)
    return meta


def _wfdb_size_problem(rec: Path, h: Any) -> str | None:
    """A reason when a data file is missing or shorter than the header implies."""
    files = list(h.file_name or [])
    if not files:
        return None
    spf = list(h.samps_per_frame or [1] * len(files))
    fmts = list(h.fmt or [None] * len(files))
    offsets = list(h.byte_offset or [None] * len(files))
    need: dict[str, float] = {}
    for f, fmt, s, off in zip(files, fmts, spf, offsets, strict=False):
        per = _WFDB_BYTES.get(str(fmt)) if fmt is not None else None
        if f not in need:
            need[f] = float(off or 0)
        if per is None or need[f] < 0:
            need[f] = -1.0  # size not predictable
        else:
            need[f] += per * (s or 1) * (h.sig_len or 0)
    for f, n in need.items():
        fp = rec.parent / f
        if not fp.is_file():
            return f"data file {fp} not found"
        if n >= 0 and fp.stat().st_size < int(n):
            return (
                f"data file {fp} is truncated: {fp.stat().st_size} bytes, the header "
                f"implies {int(n)}"
            )
    return None


def read_wfdb_header(path: str | Path) -> SignalHeader:
    import wfdb

    rec = _wfdb_record(path)
    if not Path(f"{rec}.hea").is_file():
        raise CohortError(f"{rec}.hea: WFDB header not found")
    try:
        h = wfdb.rdheader(str(rec))
    except Exception as err:  # noqa: BLE001 - any parser failure becomes a named error
        raise CohortError(f"{rec}.hea: unreadable WFDB header: {err}") from None
    if getattr(h, "seg_name", None) is not None:
        raise CohortError(f"{rec}.hea: multi-segment WFDB records are not supported")
    problem = _wfdb_size_problem(rec, h)
    if problem:
        raise CohortError(f"{rec}: {problem}")
    names = [str(s) for s in (h.sig_name or [])]
    fs = float(h.fs)
    n = int(h.sig_len or 0)
    return SignalHeader(
        path=rec,
        format="wfdb",
        fs=fs,
        channels=names,
        channel_fs=[fs * float(s or 1) for s in (h.samps_per_frame or [1] * len(names))],
        units=[str(u) for u in (h.units or [""] * len(names))],
        n_samples=n,
        duration=n / fs if fs else 0.0,
        meta=parse_comments(list(h.comments or [])),
    )


def read_wfdb(
    path: str | Path,
    channels: list[str] | None = None,
    start: float | None = None,
    stop: float | None = None,
) -> Signal:
    """A WFDB record (``rec`` or ``rec.hea``), only ``channels`` and ``[start, stop)`` s.
    Header comments (``#Age: 74``) are parsed into ``meta``."""
    import wfdb

    h = read_wfdb_header(path)
    if h.n_samples == 0:
        raise CohortError(f"{h.path}: the record has no samples")
    idx = select_channels(h.channels, channels, h.path)
    a, b = _window(start, stop, h.duration, h.path)
    s0, s1 = int(round(a * h.fs)), min(int(round(b * h.fs)), h.n_samples)
    s1 = max(s1, s0 + 1)
    try:
        r = wfdb.rdrecord(str(h.path), sampfrom=s0, sampto=s1, channels=idx)
    except Exception as err:  # noqa: BLE001
        raise CohortError(f"{h.path}: unreadable WFDB samples: {err}") from None
    x = r.p_signal
    if x is None or x.shape != (s1 - s0, len(idx)):
        got = None if x is None else x.shape
        raise CohortError(f"{h.path}: read {got} samples; the header implies {(s1 - s0, len(idx))}")
    meta = {**h.meta, "units": [h.units[i] for i in idx], "format": "wfdb", "start": a}
    return Signal(x.astype(np.float32), h.fs, [h.channels[i] for i in idx], meta)


# -- EDF -------------------------------------------------------------------------------


def _open_edf(path: Path):
    import pyedflib

    if not path.is_file():
        raise CohortError(f"{path}: EDF file not found")
    try:
        return pyedflib.EdfReader(str(path))
    except Exception as err:  # noqa: BLE001 - pyedflib says what is wrong (size, format)
        raise CohortError(f"{path}: unreadable EDF file: {err}") from None


def read_edf_header(path: str | Path) -> SignalHeader:
    p = Path(path)
    r = _open_edf(p)
    try:
        labels = [str(s).strip() for s in r.getSignalLabels()]
        fss = [float(f) for f in r.getSampleFrequencies()] if labels else []
        ns = [int(n) for n in r.getNSamples()] if labels else []
        units = [str(r.getPhysicalDimension(i)).strip() for i in range(len(labels))]
        duration = float(r.getFileDuration())
        meta = {
            "patient": str(r.getPatientCode()).strip(),
            "start_datetime": str(r.getStartdatetime()),
            "equipment": str(r.getEquipment()).strip(),
        }
    finally:
        r.close()
    fs = max(fss) if fss else 0.0
    n = max(ns) if ns else 0
    return SignalHeader(p, "edf", fs, labels, fss, units, n, duration, meta)


def read_edf(
    path: str | Path,
    channels: list[str] | None = None,
    start: float | None = None,
    stop: float | None = None,
) -> Signal:
    """An EDF/EDF+/BDF file, only ``channels`` and ``[start, stop)`` s; channels with a
    lower rate than the highest selected one are resampled to it (listed in
    ``meta["channel_fs"]``)."""
    p = Path(path)
    r = _open_edf(p)
    try:
        labels = [str(s).strip() for s in r.getSignalLabels()]
        fss = [float(f) for f in r.getSampleFrequencies()] if labels else []
        ns = [int(n) for n in r.getNSamples()] if labels else []
        idx = select_channels(labels, channels, p)
        if not idx or max(ns[i] for i in idx) == 0:
            raise CohortError(f"{p}: the record has no samples")
        duration = float(r.getFileDuration())
        a, b = _window(start, stop, duration, p)
        fs = max(fss[i] for i in idx)
        cols = []
        for i in idx:
            s0 = int(round(a * fss[i]))
            n = max(min(int(round(b * fss[i])), ns[i]) - s0, 1)
            try:
                x = np.asarray(r.readSignal(i, start=s0, n=n), dtype=np.float64)
            except Exception as err:  # noqa: BLE001
                raise CohortError(f"{p}: channel {labels[i]!r} unreadable: {err}") from None
            cols.append(resample(x, fss[i], fs))
    finally:
        r.close()
    n = min(len(c) for c in cols)
    data = np.stack([c[:n] for c in cols], 1).astype(np.float32)
    meta = {"channel_fs": [fss[i] for i in idx], "format": "edf", "start": a}
    return Signal(data, fs, [labels[i] for i in idx], meta)


def read_annotations(path: str | Path) -> pd.DataFrame:
    """EDF+ annotations (e.g. a Sleep-EDF hypnogram) as a frame with ``onset`` and
    ``duration`` (seconds from the file's start) and ``description``, sorted by onset;
    the file's start date-time is in ``df.attrs["start_datetime"]``."""
    p = Path(path)
    r = _open_edf(p)
    try:
        onset, duration, desc = r.readAnnotations()
        start = str(r.getStartdatetime())
    except Exception as err:  # noqa: BLE001
        raise CohortError(f"{p}: unreadable EDF+ annotations: {err}") from None
    finally:
        r.close()
    df = pd.DataFrame(
        {
            "onset": np.asarray(onset, float),
            "duration": np.asarray(duration, float),
            "description": [str(d).strip() for d in desc],
        }
    )
    df = df.sort_values("onset", kind="stable").reset_index(drop=True)
    df.attrs["start_datetime"] = start
    return df


# -- dispatch --------------------------------------------------------------------------


def read_header(path: str | Path) -> SignalHeader:
    """The header of an EDF file or WFDB record, without its samples."""
    fmt = signal_format(path)
    return read_edf_header(path) if fmt == "edf" else read_wfdb_header(path)


def read_signal(
    path: str | Path,
    channels: list[str] | None = None,
    start: float | None = None,
    stop: float | None = None,
) -> Signal:
    """An EDF file or WFDB record by its path: ``(data (n, C) float32, fs, channels,
    meta)``, only the named ``channels`` (all when ``None``) over ``[start, stop)`` s."""
    fmt = signal_format(path)
    reader = read_edf if fmt == "edf" else read_wfdb
    return reader(path, channels, start, stop)


def file_stamp(path: str | Path) -> tuple[int, int]:
    """(total size, latest mtime in ns) of a record's files (the EDF file; the WFDB
    header and its ``.dat``/``.mat``): a record changed on disk gets a new stamp (used
    to key caches)."""
    p = Path(path)
    if p.suffix.lower() in EDF_SUFFIXES:
        files = [p]
    else:
        rec = _wfdb_record(p)
        files = [Path(f"{rec}{s}") for s in (".hea", ".dat", ".mat")]
    size, mtime = 0, 0
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return (size, mtime)
