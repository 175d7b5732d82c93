"""``timeseries``: irregular multivariate series (vitals, labs) in long form — one row per
observation ``(patient, time, variable, value)``.

Reading (``read`` + ``check``) is honest: a value that is not a number, a variable the
spec does not list, a value outside the plausible range of its variable (a negative
heart rate) or equal to a missing-value sentinel (``-1``) is not kept as a number; it
is counted per patient and reason (``scope: value``) in the cohort's report. A patient
with no usable observation loses the modality (reported), never silently.

Preprocessing, fitted on training patients only (``TimeseriesPreprocessor``): a window
(e.g. the first 48 h), binning onto a regular grid of ``resolution`` hours (or, with
``resolution: null``, one step per distinct observation time), optional ``log1p`` of
skewed variables, per-variable standardisation, and the GRU-D inputs: for every step
and variable the value (0 = training mean where unobserved), the observation mask and
the time since that variable was last observed. Output ``(n, T, 3V + 1)``: values,
masks, deltas (hours / window length) and the step's time (fraction of the window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from holomed.errors import CohortError
from holomed.io.tables import read_ids
from holomed.modalities.base import (
    ModalityData,
    ModalityKind,
    Preprocessor,
    finite32,
    register_modality,
)

LONG_COLUMNS = ("id", "time", "variable", "value")
STATS = ("last", "min", "max", "mean", "log_count", "slope")


@dataclass(frozen=True)
class Events:
    """One patient's observations: ``time`` (hours), ``code`` (index into ``vocab``) and
    ``value``, sorted by time. ``vocab`` is shared by all patients of one read."""

    time: np.ndarray
    code: np.ndarray
    value: np.ndarray
    vocab: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.time)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "time": self.time,
                "variable": np.asarray(self.vocab, dtype=object)[self.code],
                "value": self.value,
            }
        )


# -- reading --------------------------------------------------------------------------


def parse_time(values: pd.Series, unit: str, where: str) -> pd.Series:
    """Times as float hours. ``unit``: hours, minutes, seconds, or ``hh:mm`` text
    (hours may exceed 24, as in PhysioNet's ``47:59``). Unparseable times become NaN."""
    if unit == "hh:mm":
        parts = values.astype(str).str.extract(r"^\s*(-?\d+):(\d{1,2})(?::(\d{1,2}))?\s*$")
        h = pd.to_numeric(parts[0], errors="coerce")
        m = pd.to_numeric(parts[1], errors="coerce")
        s = pd.to_numeric(parts[2], errors="coerce").fillna(0.0)
        return h + m / 60.0 + s / 3600.0
    scale = {"hours": 1.0, "minutes": 1 / 60.0, "seconds": 1 / 3600.0, "days": 24.0}
    if unit not in scale:
        raise CohortError(
            f"{where}: options.time_unit {unit!r} unknown; expected one of "
            f"{sorted([*scale, 'hh:mm'])}"
        )
    return pd.to_numeric(values, errors="coerce") * scale[unit]


def read_timeseries(mspec: Any, spec: Any) -> pd.DataFrame:
    """Long-form files (CSV/TSV/Parquet) -> a frame with columns id, time (hours),
    variable, value (as read; ``check`` validates). ``options``: ``time_column``,
    ``variable_column``, ``value_column``, ``time_unit``; ``format: wide`` reads one row
    per (patient, time) with one column per variable instead."""
    if not mspec.source:
        raise CohortError(f"modality {mspec.name!r}: no source file given (field 'source')")
    o = mspec.options
    idc = mspec.id_column or "id"
    tc, vc, valc = (
        o.get("time_column", "time"),
        o.get("variable_column", "variable"),
        o.get("value_column", "value"),
    )
    parts = []
    for s in mspec.source:
        path = spec.resolve(s)
        if not path.exists():
            raise CohortError(f"{path}: file of modality {mspec.name!r} not found")
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            df = pd.read_csv(path, sep=sep, converters={idc: str})  # ids as written
        if o.get("format", "long") == "wide":
            need = [idc, tc]
            miss = [c for c in need if c not in df.columns]
            if miss:
                raise CohortError(f"{path}: modality {mspec.name!r}: columns not found: {miss}")
            df = df.melt(id_vars=[idc, tc], var_name=vc, value_name=valc).dropna(subset=[valc])
        miss = [c for c in (idc, tc, vc, valc) if c not in df.columns]
        if miss:
            raise CohortError(
                f"{path}: modality {mspec.name!r}: columns not found: {miss}; "
                f"columns are {list(df.columns)[:10]}"
            )
        out = pd.DataFrame(
            {
                "id": read_ids(df[idc], path, idc).to_numpy(),
                "time": parse_time(df[tc], o.get("time_unit", "hours"), str(path)),
                "variable": df[vc].astype(str).str.strip(),
                "value": df[valc],
            }
        )
        out.attrs["where"] = str(path)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def _count_problems(
    ids: pd.Series, bad: np.ndarray, reason: str, modality: str, by: pd.Series | None = None
) -> list[dict]:
    """One value-level report entry per (patient, reason[, variable]) with its count."""
    if not bad.any():
        return []
    keys = pd.DataFrame({"id": ids[bad].to_numpy()})
    if by is not None:
        keys["by"] = by[bad].to_numpy()
    counts = keys.value_counts(sort=False)
    out = []
    for key, n in counts.items():
        pid, extra = (key[0], key[1]) if by is not None else (key[0], None)
        why = reason.format(extra) if extra is not None else reason
        out.append(
            {"id": str(pid), "modality": modality, "reason": why, "scope": "value", "count": int(n)}
        )
    return out


def check_timeseries(df: pd.DataFrame, mspec: Any, where: str) -> tuple[pd.DataFrame, list[dict]]:
    """Long form -> one row per patient (column ``events`` of :class:`Events`) and the
    report of what could not be used. ``mspec.columns`` (if given) lists the variables
    allowed; ``options.ranges`` ``{variable: [low, high]}`` the plausible values;
    ``options.sentinels`` values that mean "missing" (e.g. ``[-1]``)."""
    if df is None or not isinstance(df, pd.DataFrame):
        raise CohortError(f"{where}: modality {mspec.name!r}: expected a long-form table")
    miss = [c for c in LONG_COLUMNS if c not in df.columns]
    if miss:
        raise CohortError(
            f"{where}: modality {mspec.name!r}: long-form columns {miss} missing; a "
            f"timeseries table has columns {list(LONG_COLUMNS)}"
        )
    name = mspec.name
    o = mspec.options
    ids = df["id"].astype(str)
    problems: list[dict] = []
    time = pd.to_numeric(df["time"], errors="coerce").to_numpy(float)
    raw = df["value"]
    value = (
        raw.to_numpy(float)
        if pd.api.types.is_numeric_dtype(raw)
        else pd.to_numeric(raw, errors="coerce").to_numpy(float)
    )
    var = df["variable"].astype(str)
    keep = np.ones(len(df), bool)

    bad = ~finite32(time)  # float32 is what the model sees: 1e308 would be inf
    problems += _count_problems(ids, bad, f"unreadable time in {where}", name)
    keep &= ~bad
    bad = keep & pd.isna(raw).to_numpy()
    problems += _count_problems(ids, bad, "empty value", name)
    keep &= ~bad
    bad = keep & ~finite32(value)
    problems += _count_problems(ids, bad, "value is not a finite number", name)
    keep &= ~bad
    if mspec.columns is not None:
        bad = keep & ~var.isin(list(mspec.columns)).to_numpy()
        problems += _count_problems(ids, bad, "unknown variable {!r}", name, by=var)
        keep &= ~bad
    for s in o.get("sentinels", []):
        bad = keep & (value == float(s))
        problems += _count_problems(ids, bad, f"missing-value sentinel {s} of {{!r}}", name, var)
        keep &= ~bad
    for v, (lo, hi) in o.get("ranges", {}).items():
        sel = keep & (var == v).to_numpy()
        bad = sel & ((value < float(lo)) | (value > float(hi)))
        problems += _count_problems(
            ids, bad, f"impossible value of {v!r} (outside [{lo}, {hi}])", name
        )
        keep &= ~bad

    kept = pd.DataFrame(
        {
            "id": ids[keep].to_numpy(),
            "time": time[keep],
            "var": var[keep].to_numpy(),
            "value": value[keep],
        }
    )
    all_ids = list(dict.fromkeys(ids))
    cat = pd.Categorical(kept["var"])
    vocab = tuple(str(c) for c in cat.categories)
    kept["code"] = cat.codes.astype(np.int32)
    kept = kept.sort_values(["id", "time", "code"], kind="stable")
    events: dict[str, Events] = {}
    if len(kept):
        pid = kept["id"].to_numpy()
        t = kept["time"].to_numpy(np.float32)
        c = kept["code"].to_numpy(np.int32)
        v = kept["value"].to_numpy(np.float32)
        starts = np.r_[0, np.nonzero(pid[1:] != pid[:-1])[0] + 1]
        ends = np.r_[starts[1:], len(pid)]
        for a, b in zip(starts, ends, strict=True):
            events[str(pid[a])] = Events(t[a:b], c[a:b], v[a:b], vocab)
    for p in all_ids:
        if p not in events:
            problems.append(
                {"id": p, "modality": name, "reason": f"no usable observation in {where}"}
            )
    order = [p for p in all_ids if p in events]
    out = pd.DataFrame({"events": [events[p] for p in order]}, index=pd.Index(order, name="id"))
    out.attrs["feature_names"] = list(vocab)  # the variables, for summaries
    return out, problems


# -- preprocessing --------------------------------------------------------------------


class TimeseriesPreprocessor(Preprocessor):
    """Window, grid, scale; values + masks + time since last observation.

    ``window``: ``[start, end]`` hours (default: from 0 to the last training time);
    ``resolution``: grid step in hours, or ``None`` for one step per distinct time (at
    most ``max_steps``, keeping the latest; steps are left-padded so the last step is the
    last observation); ``log1p``: variables to log-transform before scaling;
    ``variables``: the variables to keep (default: those seen in training);
    ``clip``: |z| above which scaled values are clipped.
    """

    kind = "timeseries"

    def __init__(
        self,
        window: list[float] | None = None,
        resolution: float | None = 1.0,
        max_steps: int = 128,
        log1p: list[str] | None = None,
        variables: list[str] | None = None,
        clip: float = 6.0,
    ) -> None:
        self.window = window
        self.resolution = resolution
        self.max_steps = max_steps
        self.log1p = log1p
        self.variables = variables
        self.clip = clip

    # the concatenated observations of the present rows, in model variable indices
    def _gather(self, data: ModalityData) -> tuple[np.ndarray, ...]:
        rows, times, codes, values = [], [], [], []
        lookup_cache: dict[int, np.ndarray] = {}
        col = data.values["events"] if isinstance(data.values, pd.DataFrame) else data.values
        cells = list(col)
        for i in np.nonzero(data.present)[0]:
            ev = cells[i]
            if not isinstance(ev, Events):
                raise ValueError(f"row {i} is marked present but holds no series")
            key = id(ev.vocab)
            if key not in lookup_cache:
                lookup_cache[key] = np.array(
                    [self.index_.get(v, -1) for v in ev.vocab] or [-1], dtype=np.int64
                )
            rows.append(np.full(len(ev), i, np.int64))
            times.append(ev.time)
            codes.append(lookup_cache[key][ev.code])
            values.append(ev.value)
        if not rows:
            e = np.zeros(0)
            return e.astype(np.int64), e, e.astype(np.int64), e
        return (
            np.concatenate(rows),
            np.concatenate(times).astype(float),
            np.concatenate(codes),
            np.concatenate(values).astype(float),
        )

    def fit(self, data: ModalityData) -> TimeseriesPreprocessor:
        col = data.values["events"] if isinstance(data.values, pd.DataFrame) else data.values
        cells = [c for c, p in zip(col, data.present, strict=True) if p]
        if not cells:
            raise ValueError("no training patient has this series")
        seen = sorted({v for ev in cells for v in np.asarray(ev.vocab)[np.unique(ev.code)]})
        self.variables_ = list(self.variables) if self.variables is not None else seen
        self.index_ = {v: j for j, v in enumerate(self.variables_)}
        rows, t, c, v = self._gather(data)
        if self.window is not None:
            self.window_ = [float(self.window[0]), float(self.window[1])]
        else:
            self.window_ = [min(0.0, float(t.min())), float(np.ceil(t.max()))]
        if self.window_[1] <= self.window_[0]:
            raise ValueError(f"window {self.window_} is empty")
        keep = (c >= 0) & (t >= self.window_[0]) & (t <= self.window_[1])
        c, v = c[keep], v[keep]
        logs = set(self.log1p or [])
        unknown = sorted(logs - set(self.variables_))
        if unknown:
            raise ValueError(f"preprocessing.log1p names variables not in the series: {unknown}")
        self.log_ = np.array([name in logs for name in self.variables_], bool)
        v = self._log(c, v)
        nv = len(self.variables_)
        cnt = np.bincount(c, minlength=nv).astype(float)
        s1 = np.bincount(c, weights=v, minlength=nv)
        s2 = np.bincount(c, weights=v * v, minlength=nv)
        mean = np.divide(s1, cnt, out=np.zeros(nv), where=cnt > 0)
        var = np.divide(s2, cnt, out=np.ones(nv), where=cnt > 0) - mean**2
        self.mean_ = mean
        self.sd_ = np.sqrt(np.clip(var, 0, None))
        self.sd_[~(self.sd_ > 1e-8)] = 1.0
        if self.resolution is not None:
            if self.resolution <= 0:
                raise ValueError(f"resolution must be > 0 hours; got {self.resolution}")
            self.steps_ = int(np.ceil((self.window_[1] - self.window_[0]) / self.resolution))
            self.steps_ = max(self.steps_, 1)
        else:
            self.steps_ = int(self.max_steps)
        self.feature_names_out_ = (
            list(self.variables_)
            + [f"mask:{n}" for n in self.variables_]
            + [f"delta:{n}" for n in self.variables_]
            + ["time"]
        )
        return self

    def _log(self, c: np.ndarray, v: np.ndarray) -> np.ndarray:
        if not self.log_.any():
            return v
        sel = self.log_[c]
        v = v.copy()
        v[sel] = np.log1p(np.clip(v[sel], 0, None))
        return v

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.steps_, len(self.feature_names_out_))

    def transform(self, data: ModalityData) -> np.ndarray:
        n, nv, steps = len(data), len(self.variables_), self.steps_
        out = np.full((n, steps, 3 * nv + 1), np.nan, np.float32)
        rows, t, c, v = self._gather(data)
        lo, hi = self.window_
        keep = (c >= 0) & (t >= lo) & (t <= hi)
        rows, t, c, v = rows[keep], t[keep], c[keep], v[keep]
        z = np.clip((self._log(c, v) - self.mean_[c]) / self.sd_[c], -self.clip, self.clip)
        present = np.nonzero(data.present)[0]
        pos = np.full(n, -1, np.int64)
        pos[present] = np.arange(len(present))
        r = pos[rows]
        k = len(present)
        span = hi - lo
        if self.resolution is not None:
            b = np.minimum(((t - lo) / self.resolution).astype(np.int64), steps - 1)
            step_time = lo + (np.arange(steps) + 0.5) * self.resolution
            times = np.broadcast_to(step_time, (k, steps)).copy()
        else:  # one step per distinct time, latest max_steps kept, left-padded
            b, times, keep2 = self._irregular_steps(r, t, k, steps)
            r, c, z = r[keep2], c[keep2], z[keep2]
        flat = (r * steps + b) * nv + c
        total = np.bincount(flat, weights=z, minlength=k * steps * nv).astype(float)
        count = np.bincount(flat, minlength=k * steps * nv)
        mask = (count > 0).reshape(k, steps, nv)
        vals = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        vals = vals.reshape(k, steps, nv)
        delta = self._deltas(mask, times, lo)
        cube = np.concatenate([vals, mask, delta / span, ((times - lo) / span)[..., None]], axis=2)
        if self.resolution is None:
            cube[..., -1][np.isnan(times)] = 0.0
        out[present] = np.nan_to_num(cube).astype(np.float32)
        return out

    def _irregular_steps(
        self, r: np.ndarray, t: np.ndarray, k: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step index per observation when each distinct time of a patient is a step."""
        key = pd.DataFrame({"r": r, "t": t})
        uniq = key.drop_duplicates().sort_values(["r", "t"])
        n_per = np.bincount(uniq["r"].to_numpy(), minlength=k)
        rank = uniq.groupby("r").cumcount().to_numpy()
        first = steps - np.minimum(n_per, steps)  # left padding per patient
        drop = n_per - np.minimum(n_per, steps)  # oldest steps beyond max_steps
        ur = uniq["r"].to_numpy()
        step = first[ur] + rank - drop[ur]
        ok = step >= first[ur]
        times = np.full((k, steps), np.nan)
        times[ur[ok], step[ok]] = uniq["t"].to_numpy()[ok]
        lut = pd.Series(step, index=pd.MultiIndex.from_arrays([ur, uniq["t"].to_numpy()]))
        b = lut.reindex(pd.MultiIndex.from_arrays([r, t])).to_numpy()
        keep = b >= first[r]
        return b[keep].astype(np.int64), times, keep

    @staticmethod
    def _deltas(mask: np.ndarray, times: np.ndarray, lo: float) -> np.ndarray:
        """GRU-D's delta: hours since the variable was last observed before this step
        (since the window start before its first observation)."""
        k, steps, nv = mask.shape
        tt = np.where(np.isnan(times), lo, times)
        delta = np.zeros((k, steps, nv))
        last = np.broadcast_to(tt[:, :1] if steps else np.zeros((k, 1)), (k, nv)).copy()
        last[:] = lo
        for s in range(steps):
            cur = tt[:, s : s + 1]
            delta[:, s] = cur - last
            last = np.where(mask[:, s], cur, last)
        return np.clip(delta, 0, None)

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per variable: last, min, max, mean, log count and slope of the observed
        scaled values — the classical summary-statistics features. Undefined statistics
        (no observation) are NaN; the count is 0 then."""
        nv = len(self.variables_)
        vals, mask, t = x[..., :nv], x[..., nv : 2 * nv] > 0.5, x[..., -1:]
        names = [f"{v}:{s}" for s in STATS for v in self.variables_]
        feats = summary_statistics(vals, mask, np.broadcast_to(t, vals.shape))
        feats[np.isnan(x).all(axis=(1, 2))] = np.nan
        return feats, names

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "window": self.window,
            "resolution": self.resolution,
            "max_steps": self.max_steps,
            "log1p": self.log1p,
            "variables": self.variables,
            "clip": self.clip,
            "variables_": self.variables_,
            "window_": self.window_,
            "steps_": self.steps_,
        }
        return meta, {"mean": self.mean_, "sd": self.sd_, "log": self.log_.astype(np.uint8)}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        p = cls(
            window=meta["window"],
            resolution=meta["resolution"],
            max_steps=meta["max_steps"],
            log1p=meta["log1p"],
            variables=meta["variables"],
            clip=meta["clip"],
        )
        p.variables_, p.window_, p.steps_ = meta["variables_"], meta["window_"], meta["steps_"]
        p.index_ = {v: j for j, v in enumerate(p.variables_)}
        p.mean_, p.sd_ = arrays["mean"], arrays["sd"]
        p.log_ = arrays["log"].astype(bool)
        nv = p.variables_
        p.feature_names_out_ = (
            list(nv) + [f"mask:{n}" for n in nv] + [f"delta:{n}" for n in nv] + ["time"]
        )
        return p


def summary_statistics(vals: np.ndarray, mask: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n, T, V) values, bool masks and times -> (n, 6V): last, min, max, mean,
    log(1 + count) and slope (least squares of value on time, z per window, clipped to
    +-10) of the observed values per variable. Values are already standardised, so the
    statistics are on comparable scales for linear models."""
    n, steps, nv = vals.shape
    cnt = mask.sum(1).astype(float)
    has = cnt > 0
    v = np.where(mask, vals, 0.0)
    mean = np.divide(v.sum(1), cnt, out=np.full((n, nv), np.nan), where=has)
    vmin = np.where(has, np.where(mask, vals, np.inf).min(1), np.nan)
    vmax = np.where(has, np.where(mask, vals, -np.inf).max(1), np.nan)
    last_idx = steps - 1 - np.argmax(mask[:, ::-1, :], axis=1)
    last = np.take_along_axis(vals, last_idx[:, None, :], 1)[:, 0]
    last = np.where(has, last, np.nan)
    tm = np.divide((np.where(mask, t, 0.0)).sum(1), cnt, out=np.zeros((n, nv)), where=has)
    dt = np.where(mask, t - tm[:, None, :], 0.0)
    dv = np.where(mask, vals - np.nan_to_num(mean)[:, None, :], 0.0)
    sxx = (dt * dt).sum(1)
    slope = np.divide((dt * dv).sum(1), sxx, out=np.full((n, nv), np.nan), where=sxx > 1e-12)
    slope = np.clip(slope, -10, 10)
    return np.concatenate([last, vmin, vmax, mean, np.log1p(cnt), slope], 1).astype(np.float32)


TIMESERIES = register_modality(
    ModalityKind(
        "timeseries",
        read=read_timeseries,
        check=check_timeseries,
        preprocessor=TimeseriesPreprocessor,
        default_encoder="grud",
    )
)
