"""Run folders: one writer at a time, an interrupted run leaves a marker, and results are
strict JSON.

``run_lock(out)`` creates ``out/.holomed.lock`` exclusively (``O_EXCL``) with the writer's
pid; a second run into the same folder is refused while that process lives (a lock left
by a dead process is taken over). While the run works, ``out/INCOMPLETE`` says so; it is
removed only when the run finishes, so a killed run never looks finished.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

LOCK = ".holomed.lock"
MARKER = "INCOMPLETE"


class RunLockedError(RuntimeError):
    """Another live run is writing into this folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(out: Path | str) -> Iterator[Path]:
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise RunLockedError(
                    f"{out}: another holomed run (pid {pid}) is writing here; "
                    "wait for it or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # left by a run that died
    else:
        raise RunLockedError(f"{out}: could not take the run lock {lock}")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    marker = out / MARKER
    marker.write_text("this run has not finished (or was interrupted); its outputs are partial\n")
    try:
        yield out
        marker.unlink(missing_ok=True)
    except Exception:
        # an error before anything was written (a bad argument, a missing file): no
        # folder is left that holds only the marker; an interrupt keeps its marker
        lock.unlink(missing_ok=True)
        if created and sorted(p.name for p in out.iterdir()) == [MARKER]:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.unlink(missing_ok=True)


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, numpy scalars and arrays plain."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path | str, obj: Any) -> Path:
    """Strict JSON (no bare NaN), written to a temporary file and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean(obj), indent=1, allow_nan=False, default=str))
    tmp.replace(path)
    return path


def write_inner_predictions(path: Path | str, inner: list[dict[str, Any]]) -> Path:
    """``compare``'s inner-CV records (:func:`holomed.evaluation.compare.compare`'s
    ``inner``) as one ``.npz`` of plain arrays (loads with ``allow_pickle=False``): per
    outer split ``k``, ``split{k}/rows``, ``split{k}/y``, ``split{k}/fold{i}/train`` and
    ``/test`` (positions within the split's training rows) and
    ``split{k}/oof/{candidate}/{repeat}``. Row positions only, no ids."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for k, rec in enumerate(inner):
        arrays[f"split{k}/rows"] = np.asarray(rec["rows"])
        arrays[f"split{k}/y"] = np.asarray(rec["y"])
        for i, (a, b) in enumerate(rec["folds"]):
            arrays[f"split{k}/fold{i}/train"] = np.asarray(a)
            arrays[f"split{k}/fold{i}/test"] = np.asarray(b)
        for name, oofs in rec["oofs"].items():
            for r, o in enumerate(oofs):
                arrays[f"split{k}/oof/{name}/{r}"] = np.asarray(o, dtype=float)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


def read_selection(run_dir: Path) -> dict[str, Any]:
    """What a compare run selected: the candidate, its parameters and the spec path."""
    path = run_dir / "results.json"
    if not path.exists():
        raise ValueError(f"{path}: not found; --from needs a 'holomed compare' run folder")
    try:
        res = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if res.get("kind") != "compare" or "selected" not in res:
        raise ValueError(f"{path}: not the results of 'holomed compare'")
    return {
        "selected": res["selected"],
        "params": res.get("selected_params"),
        "family": res.get("selected_family"),
        "spec_path": res.get("spec_path"),
        "spec": res.get("spec"),
        "estimate": _estimate(res),
    }


def _estimate(res: dict[str, Any]) -> dict[str, Any] | None:
    """The selected candidate's evaluation in a compare run: its held-out metrics (mean
    over seeds with the 95 % CI), on how many patients, and its inner-CV score: what the
    model deployed from that run can be expected to do."""
    entry = (res.get("strategies") or {}).get(res["selected"]) or {}
    metrics = entry.get("metrics") or {}
    if not metrics:
        return None
    return {
        "run": "compare",
        "candidate": res["selected"],
        "metrics": {k: {"value": v.get("mean"), "ci": v.get("ci")} for k, v in metrics.items()},
        "n_evaluated": res.get("n_evaluated"),
        "selection_metric": res.get("selection_metric"),
        "inner_cv": _inner_cv(res.get("selection_cv_mean") or {}, res["selected"]),
    }


def _inner_cv(cv: dict[str, Any], selected: str) -> Any:
    """The selected entry's inner-CV score: inner CV names a baseline by its candidate
    (``baseline:lr_late`` is scored as ``lr_late``)."""
    # a results entry is a candidate's name, or "baseline:" and one (already canonical)
    return cv[selected] if selected in cv else cv.get(selected.removeprefix("baseline:"))


# spec fields that change how a comparison runs or what it reports, not the model that a
# refit trains: they may differ between a compare run and ``fit --from`` it
RUN_ONLY = frozenset(
    {
        "training.threads",
        *(
            f"evaluation.{k}"
            for k in (
                "seeds", "n_bootstrap", "executor", "workers", "ray_address",
                "save_inner_predictions", "baselines", "ablations", "missing_rates",
                "explain", "attribute_bins", "min_group", "mitigation",
            )
        ),
    }
)  # fmt: skip


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def spec_differences(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Dotted fields where a compare run's recorded spec and this one differ in what a
    refit trains (:data:`RUN_ONLY` fields aside), as ``field: run X, here Y``."""
    a, b = _flat(recorded), _flat(here)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == r or key.startswith(r + ".") for r in RUN_ONLY):
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: run {a.get(key)!r}, here {b.get(key)!r}")
    return out


@contextlib.contextmanager
def staged_folder(out: Path | str) -> Iterator[Path]:
    """A folder written whole or not at all: yields ``OUT.partial`` (a left-over one from
    an interrupted run is removed first), renamed to ``OUT`` when the block ends without
    error (``OUT`` must then be absent or empty) and removed when it does not."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # a previous interrupted run
    partial.mkdir(parents=True)
    try:
        yield partial
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
