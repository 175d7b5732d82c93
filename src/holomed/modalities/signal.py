"""``signal``: regular multi-channel recordings (ECG, EEG, PSG) in EDF/EDF+ or WFDB files,
one record (or one window of a record) per patient.

The modality's frame is indexed by patient id with a column ``path`` (an ``.edf`` file
or a WFDB record path without extension) and, optionally, ``start``/``stop`` in seconds
to cut windows (sleep epochs) out of one recording. From files, ``read`` takes a table
with an id column and a path column (``options.path_column``, default ``path``; also
``options.start_column``/``stop_column``); relative paths resolve against the table's
folder, then the spec's.

``check`` reads headers only and reports, never silently drops, every row whose record
is missing, unreadable or truncated, has no samples, lacks a channel, or whose window
lies outside the record: the row loses the modality (``present=False``).

Samples are read lazily, at ``transform`` time, one record at a time and only for
present rows. :class:`SignalPreprocessor` (fitted on training patients only):

- ``channels``: names to keep, in this order (default: the first training record's
  channels that every training record has; ``check`` then expects those of the first
  record in the frame);
- ``fs``: target rate in Hz (``scipy.signal.resample_poly``; default: the first training
  record's);
- ``bandpass: [lo, hi]`` Hz (Butterworth of ``filter_order``, ``sosfiltfilt``, zero
  phase; ``lo`` or ``hi`` may be null for a high- or low-pass) and ``notch`` Hz
  (``iirnotch`` with quality ``notch_q``, ``filtfilt``);
- ``offset`` and ``duration`` in seconds: the window kept of each record, cropped or
  zero-padded to a fixed length (default duration: the longest training record);
- ``normalise``: ``record`` (z-score per record and channel), ``train`` (per-channel
  mean/sd over the training patients' samples) or ``none``;
- ``rhythm``: for ECG, add heart-rhythm features to the classical candidates' inputs
  (:func:`rhythm_features`: heart rate and RR-interval variability from R peaks found
  on all channels together);
- ``output``: ``samples`` (default) or ``rhythm``: the record's rhythm features as one
  vector per patient instead of its samples, for any encoder of vectors (default
  ``mlp``): a network then reads the beat-to-beat intervals a convolution over 10 s
  hardly sees. Each feature is clipped to the training records' 1st-99th percentiles and
  standardised; a record with fewer than 4 beats found gets the training mean and
  ``rhythm:found`` = 0. With the spec's ``frame``, one dataset frame can feed both a
  samples modality (CNN) and a rhythm modality (MLP).

Missing samples (NaN in a WFDB file) and non-finite ones (inf) are linearly
interpolated before filtering, so a record never feeds NaN or inf to the model.
Output ``(n, L, C)`` float32, channels last (feature names = channel names), NaN rows
for absent patients. Processed records are kept in a bounded in-memory cache
(``cache_mb``, keyed by file, size and modification time) because a comparison
transforms the same records for many fits; ``cache_mb: 0`` turns it off.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.signals import (
    SignalHeader,
    file_stamp,
    read_header,
    read_signal,
    record_exists,
    resample,
    select_channels,
)
from holomed.io.tables import read_table
from holomed.modalities.base import ModalityData, ModalityKind, Preprocessor, register_modality

NORMALISE = ("record", "train", "none")
OUTPUTS = ("samples", "rhythm")
SAMPLE_ENCODERS = ("resnet1d", "cnn_gru")  # encoders of (L, C) samples
DEFAULT_BANDS = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 45.0))
SUMMARY_STATS = ("mean", "sd", "min", "max", "skew", "kurtosis", "line_length", "spectral_entropy")
RHYTHM_FEATURES = ("heart_rate", "rr_sd", "rmssd", "prr50", "rr_cv", "rr_max_min", "beats")


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample positions of the R peaks of one ECG record ``(L, C)``: peaks of the summed
    absolute first difference over all channels (an energy envelope, smoothed over
    80 ms), at least 300 ms apart and above half the envelope's 90th percentile and a
    quarter of its 99.5th (so that noise is not counted as beats in a slow record).

    Written here because the library detector at hand (``wfdb.processing.xqrs_detect``)
    reads one lead and is built for 250 Hz and up: on CPSC 2018 at 100 Hz its features
    scored lower on every training split's inner CV (benchmarks/ecg_rhythm.py)."""
    from scipy.signal import find_peaks

    if len(x) < 3:
        return np.zeros(0, dtype=int)
    e = np.abs(np.diff(x, axis=0)).sum(1)
    width = max(1, int(round(0.08 * fs)))
    e = np.convolve(e, np.ones(width) / width, "same")
    height = max(0.5 * np.percentile(e, 90), 0.25 * np.percentile(e, 99.5))
    if not height > 0:
        return np.zeros(0, dtype=int)
    peaks, _ = find_peaks(e, distance=max(1, int(0.3 * fs)), height=height)
    return peaks


def rhythm_features(x: np.ndarray, fs: float) -> np.ndarray:
    """Per record of ``(n, L, C)``: ``RHYTHM_FEATURES`` from the R-R intervals of
    :func:`r_peaks` — heart rate (beats/min), RR standard deviation (s), RMSSD (s), share
    of successive RR differences above 50 ms, RR coefficient of variation, longest over
    shortest RR, and the number of beats. NaN where fewer than 4 beats were found (the
    learners handle missing values) and for absent (NaN) rows."""
    out = np.full((len(x), len(RHYTHM_FEATURES)), np.nan)
    for i, rec in enumerate(x):
        if np.isfinite(rec).all():
            out[i] = rr_features(r_peaks(rec.astype(np.float64), fs), fs)
    return out


def rr_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """``RHYTHM_FEATURES`` of one record from its beat positions (samples); NaN where
    fewer than 4 beats are given."""
    rr = np.diff(np.asarray(peaks)) / fs
    if len(rr) < 3:
        return np.full(len(RHYTHM_FEATURES), np.nan)
    d = np.diff(rr)
    return np.array(
        [
            60.0 / rr.mean(),
            rr.std(),
            np.sqrt(np.mean(d**2)),
            np.mean(np.abs(d) > 0.05),
            rr.std() / rr.mean(),
            rr.max() / rr.min(),
            len(peaks),
        ]
    )


# -- reading and checking ----------------------------------------------------------------


def _columns(mspec: Any) -> tuple[str, str, str]:
    o = mspec.options
    return (
        o.get("path_column", "path"),
        o.get("start_column", "start"),
        o.get("stop_column", "stop"),
    )


def _resolve(value: Any, folder: Path, spec: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return np.nan
    q = Path(os.path.expandvars(os.path.expanduser(str(value).strip())))
    if q.is_absolute():
        return str(q)
    first = folder / q
    if not record_exists(first):
        other = spec.resolve(str(q))
        if record_exists(other):
            return str(other)
    return str(first)


def read_signal_table(mspec: Any, spec: Any) -> pd.DataFrame:
    """The modality's tables (``source``) indexed by id, record paths resolved against
    each table's folder (then the spec's folder)."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    pcol = _columns(mspec)[0]
    frames, origin = [], []
    for s in mspec.source:
        path = spec.resolve(s)
        df = read_table([path], mspec.id_column, mspec.options)
        if pcol not in df.columns:
            raise CohortError(
                f"{path}: modality {mspec.name!r}: path column {pcol!r} not found; columns are "
                f"{list(df.columns)[:10]} (set options.path_column)"
            )
        df[pcol] = [_resolve(v, path.parent, spec) for v in df[pcol]]
        frames.append(df)
        origin += [str(path)] * len(df)
    df = pd.concat(frames) if len(frames) > 1 else frames[0]
    dup = df.index[df.index.duplicated()]
    if len(dup):
        pid = dup[0]
        files = sorted({o for o, i in zip(origin, df.index, strict=True) if i == pid})
        raise CohortError(
            f"patient {pid!r} has {int((df.index == pid).sum())} rows in {', '.join(files)}; "
            "expected 1 (one record per patient: split a recording into windows under "
            "distinct ids)"
        )
    return df


def _numbers(df: pd.DataFrame, col: str) -> tuple[pd.Series, pd.Series]:
    """The column as float (NaN when absent) and where it held text that is no number."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index), pd.Series(False, index=df.index)
    s = df[col]
    num = pd.to_numeric(s, errors="coerce").astype(float)
    bad = num.isna() & s.notna() & (s.astype(str).str.strip() != "")
    return num, bad


def _has_channel(available: list[str], name: str) -> bool:
    try:
        select_channels(available, [name], "")
    except CohortError:
        return False
    return True


def check_signal(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """Headers only: every row whose record cannot be used is reported with the reason
    and loses the modality. Returns a frame with ``path``, ``start``, ``stop``."""
    pcol, scol, ecol = _columns(mspec)
    if pcol not in df.columns:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: path column {pcol!r} not found; columns are "
            f"{list(df.columns)[:10]}"
        )
    start, bad_start = _numbers(df, scol)
    stop, bad_stop = _numbers(df, ecol)
    wanted = mspec.preprocessing.get("channels")
    wanted = None if wanted is None else [str(c) for c in wanted]
    headers: dict[str, SignalHeader | str] = {}
    problems: list[dict] = []
    keep = np.ones(len(df), bool)
    for i, (pid, raw) in enumerate(df[pcol].items()):
        reason = None
        path = None if pd.isna(raw) or not str(raw).strip() else str(raw).strip()
        if path is None:
            reason = f"no record path in column {pcol!r} of {where}"
        elif bad_start.iloc[i] or bad_stop.iloc[i]:
            col = scol if bad_start.iloc[i] else ecol
            reason = f"window bound is not a number in column {col!r} of {where}"
        elif not record_exists(path):
            reason = f"record file not found in {path}"
        else:
            if path not in headers:
                try:
                    headers[path] = read_header(path)
                except CohortError as err:
                    headers[path] = str(err)
            h = headers[path]
            if isinstance(h, str):
                reason = f"unreadable or corrupt record in {path}: {h}"
            elif h.n_samples <= 0 or h.duration <= 0:
                reason = f"record has no samples in {path}"
            else:
                if wanted is None:  # channels of the first usable record
                    wanted = list(h.channels)
                try:
                    select_channels(h.channels, wanted, path)
                except CohortError:
                    lack = [c for c in wanted if not _has_channel(h.channels, c)]
                    reason = f"missing channel(s) in {path}: {lack}; it has {h.channels}"
                a, b = start.iloc[i], stop.iloc[i]
                a0 = 0.0 if np.isnan(a) else a
                b0 = h.duration if np.isnan(b) else b
                if reason is None and (a0 < 0 or b0 <= a0):
                    reason = f"empty or negative window in {path}: [{a0:g}, {b0:g}) s"
                elif reason is None and b0 > h.duration + 1.0 / h.fs:
                    reason = (
                        f"window outside the record in {path}: [{a0:g}, {b0:g}) s; the "
                        f"record lasts {h.duration:g} s"
                    )
        if reason is not None:
            keep[i] = False
            problems.append({"id": str(pid), "modality": mspec.name, "reason": reason})
    paths = [None if pd.isna(p) else str(p).strip() for p in df[pcol]]
    out = pd.DataFrame({"path": paths, "start": start, "stop": stop}, index=df.index)
    return out.loc[keep], problems


# -- a bounded cache of processed records ------------------------------------------------


class _RecordCache:
    """Least-recently-used processed records, bounded in bytes (shared by all
    preprocessors of a process; the key holds every setting that shapes a record)."""

    def __init__(self) -> None:
        self.items: OrderedDict[tuple, tuple[np.ndarray, int]] = OrderedDict()
        self.nbytes = 0

    def get(self, key: tuple) -> tuple[np.ndarray, int] | None:
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
        return hit

    def put(self, key: tuple, value: tuple[np.ndarray, int], limit: float) -> None:
        size = value[0].nbytes
        if size > limit:
            return
        if key in self.items:
            self.nbytes -= self.items.pop(key)[0].nbytes
        self.items[key] = value
        self.nbytes += size
        while self.nbytes > limit and self.items:
            self.nbytes -= self.items.popitem(last=False)[1][0].nbytes

    def clear(self) -> None:
        self.items.clear()
        self.nbytes = 0


RECORD_CACHE = _RecordCache()


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Missing (NaN) and non-finite (inf) samples linearly interpolated per channel from
    their neighbours; a channel with no finite sample becomes 0."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    x = x.copy()
    t = np.arange(len(x))
    for c in np.nonzero(bad.any(0))[0]:
        ok = ~bad[:, c]
        x[:, c] = np.interp(t, t[ok], x[ok, c]) if ok.any() else 0.0
    return x


def _float_or_nan(v: Any) -> float:
    return float("nan") if v is None or pd.isna(v) else float(v)


# -- the preprocessor ---------------------------------------------------------------------


class SignalPreprocessor(Preprocessor):
    """Resample, filter, crop/pad and normalise each record: ``(n, L, C)`` float32."""

    kind = "signal"

    def __init__(
        self,
        channels: list[str] | None = None,
        fs: float | None = None,
        bandpass: list[float | None] | None = None,
        notch: float | None = None,
        notch_q: float = 30.0,
        filter_order: int = 4,
        duration: float | None = None,
        offset: float = 0.0,
        normalise: str = "record",
        bands: list[list[float]] | None = None,
        cache_mb: float = 256.0,
        rhythm: bool = False,
        output: str = "samples",
    ) -> None:
        self.channels = channels
        self.fs = fs
        self.bandpass = bandpass
        self.notch = notch
        self.notch_q = notch_q
        self.filter_order = filter_order
        self.duration = duration
        self.offset = offset
        self.normalise = normalise
        self.bands = bands
        self.rhythm = bool(rhythm)
        self.output = output
        self.cache_mb = cache_mb

    _PARAMS = (
        "channels",
        "fs",
        "bandpass",
        "notch",
        "notch_q",
        "filter_order",
        "duration",
        "offset",
        "normalise",
        "bands",
        "cache_mb",
        "rhythm",
        "output",
    )

    # -- settings --------------------------------------------------------------------
    def _validate(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"signal output must be one of {OUTPUTS}; got {self.output!r}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"signal normalise must be one of {NORMALISE}; got {self.normalise!r}")
        nyq = self.fs_ / 2
        if self.bandpass is not None:
            if len(self.bandpass) != 2:
                raise ValueError(f"signal bandpass is [low, high] in Hz; got {self.bandpass!r}")
            lo, hi = self.bandpass
            if lo is None and hi is None:
                raise ValueError("signal bandpass needs a low or a high edge")
            if hi is not None and not 0 < hi < nyq:
                raise ValueError(
                    f"signal bandpass high edge {hi} Hz must lie in (0, {nyq:g}) Hz "
                    f"(half the sampling rate {self.fs_:g} Hz)"
                )
            if lo is not None and not 0 < lo < (hi if hi is not None else nyq):
                raise ValueError(f"signal bandpass low edge {lo} Hz must lie below the high edge")
        if self.notch is not None and not 0 < self.notch < nyq:
            raise ValueError(f"signal notch {self.notch} Hz must lie in (0, {nyq:g}) Hz")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"signal duration must be > 0 seconds; got {self.duration}")
        if self.offset < 0:
            raise ValueError(f"signal offset must be >= 0 seconds; got {self.offset}")

    def _settings(self) -> tuple:
        bp = None if self.bandpass is None else tuple(self.bandpass)
        return (
            tuple(self.channels_),
            self.fs_,
            bp,
            self.notch,
            self.notch_q,
            self.filter_order,
            self.offset,
            self.length_,
        )

    def _filters(self) -> list:
        if getattr(self, "_filters_", None) is not None:
            return self._filters_
        from scipy import signal as ss

        out = []
        if self.notch is not None:
            b, a = ss.iirnotch(self.notch, self.notch_q, fs=self.fs_)
            out.append(("ba", b, a))
        if self.bandpass is not None:
            lo, hi = self.bandpass
            if lo is not None and hi is not None:
                edges, btype = [lo, hi], "bandpass"
            elif lo is not None:
                edges, btype = lo, "highpass"
            else:
                edges, btype = hi, "lowpass"
            sos = ss.butter(self.filter_order, edges, btype=btype, fs=self.fs_, output="sos")
            out.append(("sos", sos, None))
        self._filters_ = out
        return out

    # -- one record --------------------------------------------------------------------
    def _process(self, path: str, start: float, stop: float) -> tuple[np.ndarray, int]:
        """One record, resampled, filtered and cropped/padded, not yet normalised:
        ``((L, C) float32, number of real samples)``; cached."""
        key = (path, file_stamp(path), start, stop, self._settings())
        limit = float(self.cache_mb) * 2**20
        hit = RECORD_CACHE.get(key) if limit > 0 else None
        if hit is not None:
            return hit
        from scipy import signal as ss

        a = None if np.isnan(start) else start
        b = None if np.isnan(stop) else stop
        sig = read_signal(path, self.channels_, a, b)
        x = _fill_nan(sig.data.astype(np.float64))
        x = resample(x, sig.fs, self.fs_)
        n = len(x)
        for typ, p, q in self._filters() if n > 1 else []:
            if typ == "sos":
                x = ss.sosfiltfilt(p, x, axis=0, padlen=min(3 * (2 * len(p) + 1), n - 1))
            else:
                x = ss.filtfilt(p, q, x, axis=0, padlen=min(3 * max(len(p), len(q)), n - 1))
        o = int(round(self.offset * self.fs_))
        x = x[o : o + self.length_]
        real = len(x)
        out = np.zeros((self.length_, len(self.channels_)), np.float32)
        out[:real] = x
        value = (out, real)
        if limit > 0:
            RECORD_CACHE.put(key, value, limit)
        return value

    def _rows(self, data: ModalityData):
        df: pd.DataFrame = data.values
        if "path" not in df.columns:
            raise ValueError("signal input lacks the 'path' column")
        start = df["start"] if "start" in df.columns else pd.Series(np.nan, index=df.index)
        stop = df["stop"] if "stop" in df.columns else pd.Series(np.nan, index=df.index)
        for i in np.nonzero(np.asarray(data.present, bool))[0]:
            pid = df.index[i]
            path = df["path"].iloc[i]
            if path is None or pd.isna(path):
                raise ValueError(f"patient {pid!r} is marked present but has no record path")
            yield i, pid, str(path), _float_or_nan(start.iloc[i]), _float_or_nan(stop.iloc[i])

    def _load(self, pid: Any, path: str, start: float, stop: float) -> tuple[np.ndarray, int]:
        try:
            return self._process(path, start, stop)
        except CohortError as err:
            raise CohortError(f"patient {pid!r}: {err}") from None

    # -- fit / transform ---------------------------------------------------------------
    def fit(self, data: ModalityData) -> SignalPreprocessor:
        rows = list(self._rows(data))
        if not rows:
            raise ValueError("signal preprocessor: no training patient has this modality")
        self._filters_ = None
        headers: dict[str, SignalHeader] = {}

        def header(pid: Any, path: str) -> SignalHeader:
            if path not in headers:
                try:
                    headers[path] = read_header(path)
                except CohortError as err:
                    raise CohortError(f"patient {pid!r}: {err}") from None
            return headers[path]

        first = header(rows[0][1], rows[0][2])
        if self.channels:
            self.channels_ = [str(c) for c in self.channels]
        else:  # the first record's channels that every training record has
            common = set(first.channels)
            for _, pid, path, _, _ in rows:
                common &= set(header(pid, path).channels)
            self.channels_ = [c for c in first.channels if c in common]
            if not self.channels_:
                raise ValueError("signal preprocessor: the training records share no channel")
        self.fs_ = float(self.fs) if self.fs else float(first.fs)
        self._validate()
        if self.duration is not None:
            seconds = float(self.duration)
        else:  # the longest training window
            seconds = 0.0
            for _, pid, path, a, b in rows:
                b = header(pid, path).duration if np.isnan(b) else b
                seconds = max(seconds, b - (0.0 if np.isnan(a) else a) - self.offset)
            if seconds <= 0:
                raise ValueError(f"signal offset {self.offset} s leaves no samples to keep")
        self.length_ = max(int(round(seconds * self.fs_)), 1)
        c = len(self.channels_)
        self.mean_, self.sd_ = np.zeros(c), np.ones(c)
        if self.normalise == "train":  # streaming per-channel moments, one record at a time
            total, sq, count = np.zeros(c), np.zeros(c), 0
            for _, pid, path, a, b in rows:
                x, real = self._load(pid, path, a, b)
                v = x[:real].astype(np.float64)
                total += v.sum(0)
                sq += (v**2).sum(0)
                count += real
            mean = total / max(count, 1)
            var = np.maximum(sq / max(count, 1) - mean**2, 0.0)
            sd = np.sqrt(var)
            self.mean_, self.sd_ = mean, np.where(sd > 1e-8, sd, 1.0)
        self.feature_names_out_ = list(self.channels_)
        if self.output == "rhythm":
            raw = self._rhythm(data)[np.asarray(data.present, bool)]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, hi = np.nanpercentile(raw, 1, 0), np.nanpercentile(raw, 99, 0)
                clipped = np.clip(raw, lo, hi)
                centre, scale = np.nanmean(clipped, 0), np.nanstd(clipped, 0)
            ok = np.isfinite(centre)
            self.rhythm_lo_ = np.where(ok, lo, 0.0)
            self.rhythm_hi_ = np.where(ok, hi, 0.0)
            self.rhythm_centre_ = np.where(ok, centre, 0.0)
            self.rhythm_scale_ = np.where(ok & (scale > 1e-8), scale, 1.0)
            self.feature_names_out_ = [f"rhythm:{n}" for n in RHYTHM_FEATURES] + ["rhythm:found"]
        return self

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.output == "rhythm":
            return (len(self.feature_names_out_),)
        return (self.length_, len(self.channels_))

    def _records(self, data: ModalityData):
        """``(row, normalised (L, C) record)`` of each present row, one at a time."""
        for i, pid, path, a, b in self._rows(data):
            x, real = self._load(pid, path, a, b)
            x = x.copy()
            v = x[:real]
            if self.normalise == "record" and real:
                sd = v.std(0)
                v[:] = (v - v.mean(0)) / np.where(sd > 1e-8, sd, 1.0)
            elif self.normalise == "train":
                v[:] = (v - self.mean_) / self.sd_
            yield i, x

    def _rhythm(self, data: ModalityData) -> np.ndarray:
        """:func:`rhythm_features` of each present row, unscaled; NaN rows otherwise."""
        out = np.full((len(data), len(RHYTHM_FEATURES)), np.nan)
        for i, x in self._records(data):
            out[i] = rhythm_features(x[None], self.fs_)[0]
        return out

    def transform(self, data: ModalityData) -> np.ndarray:
        """``(n, L, C)`` float32 (``output: rhythm``: ``(n, 8)``); rows of absent patients
        are NaN and never read."""
        if self.output == "rhythm":
            raw = self._rhythm(data)
            z = np.clip(raw, self.rhythm_lo_, self.rhythm_hi_) - self.rhythm_centre_
            z = z / self.rhythm_scale_
            found = np.isfinite(raw).all(1)
            out = np.column_stack([np.where(np.isfinite(z), z, 0.0), found.astype(float)])
            out[~np.asarray(data.present, bool)] = np.nan
            return out.astype(np.float32)
        out = np.full((len(data), *self.out_shape), np.nan, np.float32)
        for i, x in self._records(data):
            out[i] = x
        return out

    # -- classical baselines -------------------------------------------------------------
    def _bands(self) -> list[tuple[float, float]]:
        nyq = self.fs_ / 2
        bands = DEFAULT_BANDS if self.bands is None else [tuple(b) for b in self.bands]
        return [(float(lo), float(min(hi, nyq))) for lo, hi in bands if lo < nyq]

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per channel: mean, sd, min, max, skewness, kurtosis, line length (mean absolute
        difference), spectral entropy and relative power in each band (Welch); names
        like ``II:sd``, ``II:power_8-13Hz``; with ``rhythm``, then the record's
        :func:`rhythm_features` (``rhythm:heart_rate`` ...). NaN for absent rows. With
        ``output: rhythm`` the vector itself."""
        if self.output == "rhythm":
            return x, list(self.feature_names_out_)
        from scipy import stats
        from scipy.signal import welch

        bands = self._bands()
        names = list(SUMMARY_STATS) + [f"power_{lo:g}-{hi:g}Hz" for lo, hi in bands]
        n, _, c = x.shape
        feats = np.full((n, c, len(names)), np.nan)
        rows = np.isfinite(x).all((1, 2))
        if rows.any():
            z = x[rows].astype(np.float64)
            with np.errstate(all="ignore"):
                cols = [
                    z.mean(1),
                    z.std(1),
                    z.min(1),
                    z.max(1),
                    stats.skew(z, axis=1),
                    stats.kurtosis(z, axis=1),
                    np.abs(np.diff(z, axis=1)).mean(1)
                    if z.shape[1] > 1
                    else np.zeros(z[:, 0].shape),
                ]
                f, p = welch(z, fs=self.fs_, axis=1, nperseg=min(z.shape[1], 256))
                total = p.sum(1)
                pn = p / np.where(total > 0, total, np.nan)[:, None, :]
                ent = -(np.where(pn > 0, pn * np.log(pn), 0.0)).sum(1) / np.log(max(len(f), 2))
                cols.append(np.where(total > 0, ent, np.nan))
                for lo, hi in bands:
                    sel = (f >= lo) & (f < hi)
                    cols.append(np.where(total > 0, p[:, sel].sum(1) / total, np.nan))
            feats[rows] = np.stack(cols, 2)
        flat_names = [f"{ch}:{s}" for ch in self.channels_ for s in names]
        flat = feats.reshape(n, -1)
        if self.rhythm:
            flat = np.hstack([flat, rhythm_features(x, self.fs_)])
            flat_names += [f"rhythm:{s}" for s in RHYTHM_FEATURES]
        return flat.astype(np.float32), flat_names

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {k: getattr(self, k) for k in self._PARAMS}
        meta = {
            "params": params,
            "channels": self.channels_,
            "fs": self.fs_,
            "length": self.length_,
            "feature_names_out": self.feature_names_out_,
        }
        arrays = {"mean": np.asarray(self.mean_), "sd": np.asarray(self.sd_)}
        if self.output == "rhythm":
            for k in ("lo", "hi", "centre", "scale"):
                arrays[f"rhythm_{k}"] = np.asarray(getattr(self, f"rhythm_{k}_"), float)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SignalPreprocessor:
        p = cls(**meta["params"])
        p.channels_, p.fs_, p.length_ = (
            list(meta["channels"]),
            float(meta["fs"]),
            int(meta["length"]),
        )
        p.feature_names_out_ = list(meta["feature_names_out"])
        p.mean_, p.sd_ = np.asarray(arrays["mean"]), np.asarray(arrays["sd"])
        if p.output == "rhythm":
            for k in ("lo", "hi", "centre", "scale"):
                setattr(p, f"rhythm_{k}_", np.asarray(arrays[f"rhythm_{k}"], float))
        p._filters_ = None
        return p


SIGNAL = register_modality(
    ModalityKind(
        name="signal",
        read=read_signal_table,
        check=check_signal,
        preprocessor=SignalPreprocessor,
        default_encoder="resnet1d",
        encoder_for=lambda prep: "mlp" if prep.get("output") == "rhythm" else None,
        encoder_check=lambda prep, enc: (
            f"preprocessing.output: rhythm gives one vector per patient; encoder {enc!r} "
            "reads samples (L, C): use a vector encoder such as mlp"
            if prep.get("output") == "rhythm" and enc in SAMPLE_ENCODERS
            else None
        ),
    )
)
