"""Time to read and check a wide omics table through the cohort route (``load_cohort``
with a spec holding one omics modality): CSV parsing, ids as text, numeric conversion,
the float32 finiteness check and the label join. Synthetic data written to a temporary
folder; nothing is downloaded.

OMP_NUM_THREADS=1 python benchmarks/wide_omics.py
OMP_NUM_THREADS=1 python benchmarks/wide_omics.py --shapes 120x50000 --repeats 3

Prints one JSON line per shape (and writes them to ``--out`` when given). Targets:
120 x 50,000 in < 10 s, 1,000 x 20,000 in < 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from holomed.cohort import load_cohort
from holomed.spec import parse_spec


def write_cohort(folder: Path, n: int, p: int, seed: int = 0) -> None:
    """``omics.csv`` (id + ``p`` features, 4 decimals, ~1% missing, ids with leading
    zeros) and ``labels.csv`` (binary label)."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:05d}" for i in range(n)]
    x = rng.normal(0, 1, (n, p)).round(4)
    x[rng.random((n, p)) < 0.01] = np.nan
    genes = pd.DataFrame(x, columns=[f"g{j}" for j in range(p)])
    genes.insert(0, "pid", ids)
    genes.to_csv(folder / "omics.csv", index=False)
    pd.DataFrame({"pid": ids, "label": np.arange(n) % 2}).to_csv(folder / "labels.csv", index=False)


def spec_for(folder: Path):
    return parse_spec(
        {
            "modalities": [
                {"name": "omics", "kind": "omics", "source": "omics.csv", "id_column": "pid"}
            ],
            "target": {"source": "labels.csv", "id_column": "pid", "column": "label"},
        },
        where=str(folder / "spec.yaml"),
        base_dir=str(folder),
    )


def time_shape(n: int, p: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        write_cohort(folder, n, p)
        t_write = time.perf_counter() - t
        spec = spec_for(folder)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            cohort = load_cohort(spec)
            times.append(time.perf_counter() - t)
        md = cohort.modalities["omics"]
        assert md.values.shape == (n, p) and md.present.all()
        assert cohort.ids[0] == "00000"
        size_mb = (folder / "omics.csv").stat().st_size / 2**20
    return {
        "benchmark": "wide_omics_load_cohort",
        "patients": n,
        "features": p,
        "csv_mb": round(size_mb, 1),
        "repeats": repeats,
        "min_seconds": round(min(times), 3),
        "median_seconds": round(statistics.median(times), 3),
        "write_seconds": round(t_write, 3),
    }


def threads() -> dict:
    out = {
        k: os.environ.get(k)
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "HOLOMED_THREADS")
    }
    out["cpu_count"] = os.cpu_count()
    try:
        out["sched_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["120x50000", "1000x20000"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    env = {
        "threads": threads(),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }
    print(json.dumps({"environment": env}), flush=True)
    lines = []
    for shape in a.shapes:
        n, p = (int(v) for v in shape.lower().split("x"))
        res = time_shape(n, p, a.repeats)
        lines.append(res)
        print(json.dumps(res), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps({**r, **env}) for r in lines) + "\n")


if __name__ == "__main__":
    main()
