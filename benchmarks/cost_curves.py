"""Cost curves: how fitting, prediction and memory grow with the cohort, per fusion
strategy, with the preprocessed arrays in the on-disk store (``training.store``).

SYNTHETIC cohorts (generated here, never clinical data):

- tabular + omics, 1k / 10k / 100k / 1M patients: a table (8 numeric columns with gaps
  + 2 categorical) and omics (100 float32 features, absent for ~20 %);
- the same + an irregular long-form series (4 variables, ~20 observations per patient
  over 48 h, absent for ~15 %; GRU-D on a 4 h grid), 1k / 10k / 100k (1M: ``--series-sizes
  1000000 --fusions late``, one run, ~20 min);
- 32 x 32 grey PNGs (one per patient) + a 3-column table, 1k / 10k / 100k, through the
  image kind's disk cache (a fresh one per run) and a small CNN.

Tables are written in chunks of 100k patients (Parquet, one row group per chunk) and read
back through ``load_cohort`` like any user's files.

Each measurement is one fresh process (``--one``) that loads the cohort, fits
``Model(spec)`` (preprocessors, the store's build, 2 epochs of batch 512, no validation
carve-out) and predicts every patient, with one thread (``OMP_NUM_THREADS=1``,
``training.threads: 1``). Peak RSS: psutil, sampled every 20 ms over the process and its
children, per phase (load, preprocessors, store, train, predict), and the kernel's
high-water mark (``ru_maxrss``). Fit time per epoch: a Lightning callback from the start
to the end of each training epoch (the last epoch is reported). Prediction throughput:
``predict_proba`` on every patient (the store is reused) in patients/s. ``--no-store``
adds the same ``late`` fit with the arrays in memory.

    OMP_NUM_THREADS=1 python benchmarks/cost_curves.py --fresh --no-store   # ~50 min
    OMP_NUM_THREADS=1 python benchmarks/cost_curves.py --sizes 1000 10000 --series-sizes \
        --image-sizes --repeats 3                                          # a quick look
    python benchmarks/cost_curves.py --plot-only                          # redraw
    python benchmarks/cost_curves.py --table                              # BENCHMARKS.md

Results are appended to ``benchmarks/results/scale/cost_curves.json`` (every run; the
summary takes min and median over the runs of a point) and drawn in ``cost_curves.png``
(log-log curves with the fitted slopes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scale"
CHUNK = 100_000  # patients per generated file chunk (row group)
FUSIONS = ("late", "attention", "early")
N_NUM, N_CAT, N_OMICS, VARIABLES = 8, 2, 100, ("hr", "sbp", "resp", "temp")
OBS = 20  # observations per patient (mean)


# -- data ---------------------------------------------------------------------------


def generate(folder: Path, n: int, series: bool, seed: int = 0) -> dict:
    """Write the SYNTHETIC cohort of ``n`` patients in chunks; returns sizes and time."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    writers: dict[str, pq.ParquetWriter] = {}

    def write(name: str, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if name not in writers:
            writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
        writers[name].write_table(table)

    rows = {"tabular": 0, "omics": 0, "vitals": 0}
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        rng = np.random.default_rng([seed, start])
        ids = np.array([f"P{i:07d}" for i in range(start, start + m)], dtype=object)
        num = rng.normal(size=(m, N_NUM))
        omics = rng.normal(size=(m, N_OMICS)).astype(np.float32)
        logit = 0.8 * num[:, 0] + 0.9 * omics[:, :5].sum(1) / np.sqrt(5) - 0.3
        y = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        num[rng.random(num.shape) < 0.05] = np.nan
        tab = pd.DataFrame(num, columns=[f"x{j}" for j in range(N_NUM)])
        tab.insert(0, "id", ids)
        tab["site"] = rng.choice(["north", "south", "east", "west"], m)
        tab["smoker"] = rng.choice(["yes", "no", "former"], m)
        write("tabular", tab)
        keep = rng.random(m) >= 0.2
        om = pd.DataFrame(omics[keep], columns=[f"g{j:03d}" for j in range(N_OMICS)])
        om.insert(0, "id", ids[keep])
        write("omics", om)
        rows["tabular"] += m
        rows["omics"] += int(keep.sum())
        if series:
            has = np.nonzero(rng.random(m) >= 0.15)[0]
            k = rng.poisson(OBS, len(has)).clip(1)
            pid = np.repeat(ids[has], k)
            yy = np.repeat(y[has], k)
            var = rng.integers(0, len(VARIABLES), len(pid))
            base = np.array([80.0, 120.0, 18.0, 37.0])[var]
            sd = np.array([10.0, 15.0, 4.0, 0.5])[var]
            value = base + sd * (rng.normal(size=len(pid)) + 0.4 * yy * (var == 0))
            vit = pd.DataFrame(
                {
                    "id": pid,
                    "time": rng.uniform(0, 48, len(pid)).round(3),
                    "variable": np.asarray(VARIABLES, dtype=object)[var],
                    "value": value.round(2),
                }
            )
            write("vitals", vit)
            rows["vitals"] += len(vit)
        write("labels", pd.DataFrame({"id": ids, "y": y}))
    for w in writers.values():
        w.close()
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.parquet")}
    return {"seconds": time.perf_counter() - t0, "rows": rows, "bytes": sizes}


def generate_images(folder: Path, n: int, seed: int = 0) -> dict:
    """SYNTHETIC 32 x 32 grey PNGs, one per patient (a brighter square when y = 1), in
    folders of 10k files, with ``images.csv`` (id, file), a 3-column table and labels."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    ids = [f"P{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.4).astype(np.int8)
    files = []
    for i in range(n):
        a = rng.integers(0, 120, (32, 32), dtype=np.uint8)
        if y[i]:
            r, c = rng.integers(4, 20, 2)
            a[r : r + 8, c : c + 8] += 80
        sub = folder / "png" / f"{i // 10_000:03d}"
        if i % 10_000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        name = f"png/{i // 10_000:03d}/{ids[i]}.png"
        Image.fromarray(a).save(folder / name, compress_level=1)
        files.append(name)
    pd.DataFrame({"id": ids, "file": files}).to_csv(folder / "images.csv", index=False)
    tab = pd.DataFrame(rng.normal(size=(n, 3)) + 0.3 * y[:, None], columns=["a", "b", "c"])
    tab.insert(0, "id", ids)
    tab.to_parquet(folder / "tabular.parquet", index=False)
    pd.DataFrame({"id": ids, "y": y}).to_parquet(folder / "labels.parquet", index=False)
    return {"seconds": time.perf_counter() - t0, "rows": {"images": n}}


def image_spec_dict(folder: Path, fusion: str, epochs: int, store: str | None, cache: str) -> dict:
    small = {"encoder": {"name": "mlp", "options": {"hidden": 16, "out_dim": 8}}}
    training: dict = {"max_epochs": epochs, "batch_size": 512, "val_fraction": 0.0,
                      "threads": 1, "lr": 0.003}  # fmt: skip
    if store:
        training["store"] = {"path": store}
    return {
        "dataset": f"cost-curves-images-{folder.name}",
        "description": "SYNTHETIC 32 x 32 images + a small table (not clinical data)",
        "modalities": [
            {
                "name": "image",
                "kind": "image",
                "source": "images.csv",
                "id_column": "id",
                "options": {"path_column": "file"},
                "preprocessing": {"size": [32, 32], "max_images": 1, "cache_dir": cache},
                "encoder": {"name": "cnn2d", "options": {"hidden": 16, "channels": [8, 16]}},
            },
            {
                "name": "tabular",
                "kind": "tabular",
                "source": "tabular.parquet",
                "id_column": "id",
                **small,
            },
        ],  # fmt: skip
        "target": {
            "source": "labels.parquet",
            "id_column": "id",
            "column": "y",
            "task": "binary",
        },  # fmt: skip
        "fusion": {"name": fusion, "hidden": 16},
        "training": training,
    }


def spec_dict(folder: Path, series: bool, fusion: str, epochs: int, store: str | None) -> dict:
    small = {"encoder": {"name": "mlp", "options": {"hidden": 32, "out_dim": 16}}}
    mods = [
        {"name": "tabular", "kind": "tabular", "source": "tabular.parquet", "id_column": "id",
         "categorical": ["site", "smoker"], **small},
        {"name": "omics", "kind": "omics", "source": "omics.parquet", "id_column": "id", **small},
    ]  # fmt: skip
    if series:
        mods.append(
            {"name": "vitals", "kind": "timeseries", "source": "vitals.parquet", "id_column": "id",
             "preprocessing": {"window": [0, 48], "resolution": 4}}  # 12 steps, GRU-D
        )  # fmt: skip
    training: dict = {"max_epochs": epochs, "batch_size": 512, "val_fraction": 0.0,
                      "threads": 1, "lr": 0.003}  # fmt: skip
    if store:
        training["store"] = {"path": store}
    return {
        "dataset": f"cost-curves-{folder.name}",
        "description": "SYNTHETIC cohort for cost curves (not clinical data)",
        "modalities": mods,
        "target": {
            "source": "labels.parquet",
            "id_column": "id",
            "column": "y",
            "task": "binary",
        },  # fmt: skip
        "fusion": {"name": fusion, "hidden": 32},
        "training": training,
    }


# -- one measured run (a fresh process) ------------------------------------------


def patch_presence_lookup() -> None:
    """``holomed.cohort.modality_data`` marked presence with ``np.isin`` over object
    (string) arrays, which NumPy does by comparing every id with every id: 7 s at 10k
    patients, 809 s at 100k (measured), days at 1M. With such a version, this run replaces
    the function by the same code with ``pd.Index.isin`` (same result: checked against the
    original at 10k, ``--check-presence``). A version that hashes already is left alone
    (the replacement would also undo its other changes, e.g. ``release``)."""
    import inspect

    import pandas as pd

    import holomed.cohort as hc
    from holomed.modalities import ModalityData

    if "np.isin(" not in inspect.getsource(hc.modality_data):
        return

    def modality_data(spec, raw, ids):
        out = {}
        index = pd.Index(ids, dtype=object)
        for m in spec.modalities:
            if m.name not in raw:
                continue
            df = raw[m.name]
            out[m.name] = ModalityData(
                kind=m.kind,
                values=df.reindex(ids),
                present=index.isin(df.index),
                feature_names=[str(c) for c in df.attrs.get("feature_names", df.columns)],
            )
        return out

    hc.modality_data = modality_data


class Sampler(threading.Thread):
    """RSS of this process and its children every ``every`` s; peak per phase."""

    def __init__(self, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every, self.phase = psutil.Process(), every, "start"
        self.peaks: dict[str, int] = {}
        self._halt = threading.Event()

    def rss(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except Exception:  # noqa: BLE001 - a child that just ended
                pass
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            r = self.rss()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), r)
            time.sleep(self.every)

    def set(self, phase: str) -> None:
        r = self.rss()
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), r)
        self.phase = phase

    def stop(self) -> dict[str, int]:
        self.set("end")
        self._halt.set()
        self.join()
        return self.peaks


def one(args: argparse.Namespace) -> dict:
    import resource

    sampler = Sampler()
    sampler.start()
    sampler.set("import")
    import lightning as L
    import torch

    import holomed.model as hm
    import holomed.training as ht
    from holomed.cohort import load_cohort
    from holomed.spec import parse_spec

    torch.set_num_threads(1)
    if not args.original_lookup:
        patch_presence_lookup()
    folder = Path(args.data)
    store = args.store if args.store else None
    if args.images:  # a fresh image cache per run: every image is decoded once here
        cache = tempfile.mkdtemp(prefix="imgcache_", dir=args.cache_root)
        d = image_spec_dict(folder, args.fusion, args.epochs, store, cache)
    else:
        d = spec_dict(folder, args.series, args.fusion, args.epochs, store)
    spec = parse_spec(d, where="cost_curves", base_dir=str(folder))

    epochs: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            epochs.append(time.perf_counter() - self.t)

    make_trainer = ht.make_trainer
    ht.make_trainer = lambda cfg, callbacks=None, find_unused=True: make_trainer(
        cfg, [*(callbacks or []), EpochTimer()], find_unused
    )
    arrays_s: list[float] = []
    stages: dict[str, float] = {}

    def staged(fn, name: str, times: list[float] | None = None):
        """``fn`` measured as a phase of its own (time, and peak RSS by the sampler)."""

        def wrapper(*a, **kw):
            before = sampler.phase
            label = f"{before}:{name}"
            sampler.set(label)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t
                stages[label] = stages.get(label, 0.0) + dt
                if times is not None:
                    times.append(dt)
                sampler.set(before)

        return wrapper

    hm.stored_arrays = staged(hm.stored_arrays, "store", arrays_s)
    hm.transform_cohort = staged(hm.transform_cohort, "transform", arrays_s)
    hm.fit_preprocessors = staged(hm.fit_preprocessors, "preprocessors")
    hm.train = staged(hm.train, "train")

    sampler.set("load")
    t = time.perf_counter()
    cohort = load_cohort(spec)
    load_s = time.perf_counter() - t
    rss_loaded = sampler.rss()
    sampler.set("fit")
    t = time.perf_counter()
    model = hm.Model(spec).fit(cohort)
    fit_s = time.perf_counter() - t
    build_s = arrays_s[0] if arrays_s else None
    sampler.set("predict")
    t = time.perf_counter()
    p = model.predict_proba(cohort)
    predict_s = time.perf_counter() - t
    reuse_s = arrays_s[1] if len(arrays_s) > 1 else None
    peaks = sampler.stop()
    if args.images:
        shutil.rmtree(cache, ignore_errors=True)
    files = [f for f in Path(store).rglob("*") if f.is_file()] if store else []
    store_bytes = sum(f.stat().st_size for f in files)
    from holomed.scoring.metrics import compute_metrics

    auroc = compute_metrics("binary", cohort.y, p).get("auroc")
    return {
        "n": len(cohort),
        "fusion": args.fusion,
        "series": bool(args.series),
        "images": bool(args.images),
        "store": bool(store),
        "epochs": len(epochs),
        "epoch_s": epochs,
        "load_s": load_s,
        "fit_s": fit_s,
        "store_build_s": build_s,
        "store_reuse_s": reuse_s,
        "predict_s": predict_s,
        "predict_per_s": len(cohort) / predict_s,
        "rss_after_load_mb": rss_loaded / 2**20,
        "peak_rss_mb": {k: v / 2**20 for k, v in peaks.items()},
        "peak_rss_total_mb": max(peaks.values()) / 2**20,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stage_s": stages,
        "store_mb": store_bytes / 2**20,
        "auroc_train": auroc,
        "present": {k: int(m.present.sum()) for k, m in cohort.modalities.items()},
    }


# -- driver -------------------------------------------------------------------------


def run_one(
    data: Path, fusion: str, epochs: int, series: bool, store: Path | None, images: bool = False
) -> dict:
    # one thread; Arrow's allocator is the system one: its default (mimalloc) kept ~0.7 GB
    # of a 1M-row Parquet read resident after the frames were built (measured)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "HOLOMED_THREADS": "1",
           "ARROW_DEFAULT_MEMORY_POOL": "system"}  # fmt: skip
    cmd = [sys.executable, __file__, "--one", "--data", str(data), "--fusion", fusion,
           "--epochs", str(epochs)]  # fmt: skip
    if series:
        cmd.append("--series")
    if images:
        cmd += ["--images", "--cache-root", str(data.parent)]
    if store is not None:
        cmd += ["--store", str(store)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if store is not None:
        shutil.rmtree(store, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"run failed ({fusion}, {data}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def drive(args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = Path(args.results) if args.results else OUT / "cost_curves.json"
    doc = json.loads(path.read_text()) if path.exists() and not args.fresh else {"runs": []}
    doc["machine"] = {
        "cpus_seen": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "2-core VM shared with other benchmarks during the runs; 1 thread per process",
    }
    work = Path(args.work or tempfile.mkdtemp(prefix="cost_curves_"))
    plan = [(n, False, False) for n in args.sizes] + [(n, True, False) for n in args.series_sizes]
    plan += [(n, False, True) for n in args.image_sizes]
    for n, series, images in plan:
        data = work / f"n{n}{'-series' if series else ''}{'-images' if images else ''}"
        if not (data / "labels.parquet").exists():
            gen = generate_images(data, n) if images else generate(data, n, series)
            print(f"generated {data.name}: {gen}", flush=True)
            doc.setdefault("generated", {})[data.name] = gen
        repeats = args.repeats if n <= args.repeat_max else 1
        runs = [(f, True) for f in args.fusions] + ([("late", False)] if args.no_store else [])
        for fusion, stored in runs:
            for r in range(repeats if stored else 1):
                st = work / "store" if stored else None
                rec = run_one(data, fusion, args.epochs, series, st, images)
                rec["repeat"] = r
                doc["runs"].append(rec)
                keys = ("n", "series", "images", "fusion", "store", "epoch_s", "predict_per_s",
                        "peak_rss_total_mb")  # fmt: skip
                print(json.dumps({k: rec[k] for k in keys}), flush=True)
                path.write_text(json.dumps(doc, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.results:  # a side file: summarised, not drawn (the figure is the main file's)
        doc["summary"] = summary(doc)
        path.write_text(json.dumps(doc, indent=1))
        for r in doc["summary"]:
            print(json.dumps(r))
    else:
        plot(doc)


# -- summary and plot ---------------------------------------------------------------


def summary(doc: dict) -> list[dict]:
    """One row per (modalities, store, fusion, n): min and median over repeats. The
    epoch time is the last epoch's (the first one also warms up)."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        kind = (
            "images+tabular"
            if r.get("images")
            else ("tabular+omics+series" if r["series"] else "tabular+omics")
        )
        groups.setdefault((kind, r["store"], r["fusion"], r["n"]), []).append(r)
    rows = []
    for (kind, store, fusion, n), rs in sorted(groups.items()):
        epoch = [r["epoch_s"][-1] for r in rs]
        pred = [r["predict_per_s"] for r in rs]
        build = [r["store_build_s"] for r in rs if r["store_build_s"] is not None]
        rss = [r["peak_rss_total_mb"] for r in rs]

        def phase(r: dict, *names: str) -> float:
            return max(v for k, v in r["peak_rss_mb"].items() if k.split(":")[-1] in names)

        rows.append(
            {
                "modalities": kind,
                "store": store,
                "fusion": fusion,
                "n": n,
                "runs": len(rs),
                "epoch_s_min": min(epoch),
                "epoch_s_median": statistics.median(epoch),
                "predict_per_s_max": max(pred),
                "predict_per_s_median": statistics.median(pred),
                "store_build_s_median": statistics.median(build) if build else None,
                "load_s_median": statistics.median(r["load_s"] for r in rs),
                "peak_rss_mb_min": min(rss),
                "peak_rss_mb_median": statistics.median(rss),
                "peak_rss_load_mb": statistics.median(phase(r, "load") for r in rs),
                "peak_rss_preprocessors_mb": statistics.median(
                    phase(r, "preprocessors") for r in rs
                ),
                "peak_rss_train_predict_mb": statistics.median(
                    phase(r, "train", "predict", "store", "transform") for r in rs
                ),
                "rss_after_load_mb": statistics.median(r["rss_after_load_mb"] for r in rs),
                "rss_added_mb": statistics.median(
                    phase(r, "train", "predict", "store", "transform") - r["rss_after_load_mb"]
                    for r in rs
                ),
                "store_mb": statistics.median(r["store_mb"] for r in rs),
            }
        )
    return rows


def slope(n: list[float], y: list[float]) -> float:
    """Least-squares slope of log10(y) on log10(n)."""
    return float(np.polyfit(np.log10(n), np.log10(y), 1)[0]) if len(n) >= 2 else float("nan")


PANELS = [
    ("epoch_s_median", "fit time per epoch (s)"),
    ("predict_s", "prediction, all patients (s)"),
    ("store_build_s_median", "store build: transform + write (s)"),
    ("peak_rss_mb_median", "peak RSS, whole process (MB)"),
    ("rss_added_mb", "RSS added by epochs + prediction (MB)\nover the loaded cohort"),
]


def plot(doc: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary(doc)
    doc["summary"] = rows
    configs = [c for c in ("tabular+omics", "tabular+omics+series", "images+tabular")
               if any(r["modalities"] == c for r in rows)]  # fmt: skip
    size = (4.2 * len(PANELS), 4.3 * len(configs))
    fig, axes = plt.subplots(len(configs), len(PANELS), figsize=size, squeeze=False)
    slopes: dict[str, dict[str, dict[str, float]]] = {}
    slopes_10k: dict[str, dict[str, dict[str, float]]] = {}
    for row, config in zip(axes, configs, strict=True):
        for ax, (key, title) in zip(row, PANELS, strict=True):
            series = [(f, True) for f in FUSIONS]
            if key.startswith(("peak_rss", "rss_")):
                series.append(("late", False))
            for fusion, stored in series:
                sel = [r for r in rows if r["modalities"] == config and r["store"] == stored
                       and r["fusion"] == fusion]  # fmt: skip
                if key == "predict_s":
                    pts = [(r["n"], r["n"] / r["predict_per_s_median"]) for r in sel]
                else:
                    pts = [(r["n"], r[key]) for r in sel if r[key] and r[key] > 0]
                if len(pts) < 2:
                    continue
                n, y = zip(*pts, strict=True)
                s = slope(list(n), list(y))
                name = fusion if stored else f"{fusion}, in memory"
                slopes.setdefault(config, {}).setdefault(key, {})[name] = s
                big = [(a, b) for a, b in pts if a >= 10_000]
                if len(big) >= 2:
                    s10 = slope([a for a, _ in big], [b for _, b in big])
                    slopes_10k.setdefault(config, {}).setdefault(key, {})[name] = s10
                style = "o-" if stored else "s--"
                color = None if stored else "grey"
                ax.plot(n, y, style, color=color, label=f"{name} (slope {s:.2f})")
            if key.startswith("peak_rss"):
                ax.axhline(4096, color="red", lw=0.8, ls=":", label="4 GB")
            ax.set_title(f"{title}\n{config}", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("patients")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        "SYNTHETIC cohorts, preprocessed arrays in the on-disk store (grey: in memory); "
        "1 thread per process, 2-core machine shared with other benchmarks",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(OUT / "cost_curves.png", dpi=100)
    doc["slopes"] = slopes
    doc["slopes_from_10k"] = slopes_10k
    (OUT / "cost_curves.json").write_text(json.dumps(doc, indent=1))
    for r in rows:
        print(json.dumps(r))
    print(json.dumps(slopes, indent=1))


def markdown(doc: dict) -> str:
    """The BENCHMARKS.md tables: one row per (modalities, n, fusion) with the store, and
    the in-memory fit beside it; slopes per modality set."""
    rows = summary(doc)
    memory = {(r["modalities"], r["n"]): r for r in rows if not r["store"]}
    out = [
        "| modalities | patients | fusion | runs | epoch s (min / median) | predict patients/s "
        "| store build s | peak RSS MB: whole run / load / preprocessors / epochs + predict "
        "| in memory (late): epochs + predict MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in rows if r["store"]), key=lambda r: (r["modalities"], r["n"])):
        mem = memory.get((r["modalities"], r["n"]))
        out.append(
            f"| {r['modalities']} | {r['n']:,} | {r['fusion']} | {r['runs']} | "
            f"{r['epoch_s_min']:.3g} / {r['epoch_s_median']:.3g} | "
            f"{r['predict_per_s_median']:,.0f} | {r['store_build_s_median']:.3g} | "
            f"{r['peak_rss_mb_median']:,.0f} / {r['peak_rss_load_mb']:,.0f} / "
            f"{r['peak_rss_preprocessors_mb']:,.0f} / **{r['peak_rss_train_predict_mb']:,.0f}** | "
            + (
                f"{mem['peak_rss_train_predict_mb']:,.0f} |"
                if mem and r["fusion"] == "late"
                else "|"
            )
        )
    out += ["", "| modalities | quantity | " + " | ".join(FUSIONS) + " | late, in memory |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    big = doc.get("slopes_from_10k", {})
    for config, per in doc.get("slopes", {}).items():
        for key, title in PANELS:
            if key in per:
                names = (*FUSIONS, "late, in memory")
                vals = [(per[key].get(f), big.get(config, {}).get(key, {}).get(f)) for f in names]
                cells = " | ".join(
                    "" if v is None else f"{v:.2f}" + ("" if w is None else f" ({w:.2f})")
                    for v, w in vals
                )
                label = title.replace("\n", " ")
                out.append(f"| {config} | {label} | {cells} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data")
    ap.add_argument("--fusion", default="late")
    ap.add_argument("--series", action="store_true")
    ap.add_argument("--store")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000, 1_000_000],
                    help="cohort sizes with tabular + omics")  # fmt: skip
    ap.add_argument("--series-sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000],
                    help="cohort sizes with tabular + omics + the series")  # fmt: skip
    ap.add_argument("--fusions", nargs="+", default=list(FUSIONS))
    ap.add_argument("--image-sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000],
                    help="cohort sizes with 32 x 32 images + a small table")  # fmt: skip
    ap.add_argument("--images", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache-root", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-max", type=int, default=10_000, help="repeat sizes up to this")
    ap.add_argument("--no-store", action="store_true", help="also fit 'late' without the store")
    ap.add_argument("--work", help="folder for the generated data (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--fresh", action="store_true", help="start a new results file")
    ap.add_argument("--results", help="append the runs to this JSON file instead of "
                    "benchmarks/results/scale/cost_curves.json (no figure drawn)")  # fmt: skip
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the markdown tables")
    ap.add_argument("--original-lookup", action="store_true",
                    help="keep holomed.cohort's quadratic presence lookup (slow)")  # fmt: skip
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
    elif args.table:
        print(markdown(json.loads((OUT / "cost_curves.json").read_text())))
    elif args.plot_only:
        plot(json.loads((OUT / "cost_curves.json").read_text()))
    else:
        drive(args)


if __name__ == "__main__":
    main()
