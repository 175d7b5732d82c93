"""Load test of ``holomed serve`` with an image model: one 2-D image and a table per request.

A ``late`` fusion bundle over a table (age, sbp, sex) and one grey PNG per patient
(``--px`` pixels a side, default 128) is fitted on generated patients (the image's bright
square and the age carry the label) and served by ``holomed serve`` (uvicorn) in a
subprocess, with its SQLite audit trail and token store, and uploads written to a folder
of the benchmark's (checked empty at the end). Each request is a ``multipart/form-data``
prediction: the table as the ``modalities`` form field, the image as a file; every
request of the run carries a different image (its own noise), so nothing is answered
from a cache of an earlier image (``efficientnet_lite0`` remembers the features of the
images it has seen).

Per level (1, 10, 50 concurrent clients, ``--requests`` each; the 10-client level
``--repeats`` times): throughput, latency p50/p95/p99/max (ms, client side), errors,
the server's CPU ms per request and resident memory (RSS) before and after. The driver is
``serve_load.drive`` (``--client raw``: pre-encoded HTTP/1.1 over asyncio streams, so the
client's CPU barely counts against the server's on a shared machine; ``httpx`` also
works). ``--memory N`` then sends N more requests from 10 clients in 10 steps, with the
server's RSS after each step. At the end the audit trail is verified (one row per
request, chain intact). The load average is recorded before and after every level.

    OUT=benchmarks/results/serve/serve_load_image.json
    python benchmarks/serve_load_image.py --encoder cnn2d --out $OUT
    python benchmarks/serve_load_image.py --encoder efficientnet_lite0 --memory 2000 --out $OUT

``--out`` holds one run per encoder (``{"runs": {encoder: run}}``; the key names
``MALLOC_ARENA_MAX`` too when it is set): a run replaces the earlier run of its key and
keeps the others. ``MALLOC_ARENA_MAX=2`` (inherited by the server) caps glibc's malloc
arenas, which otherwise grow one per inference thread and keep freed image batches.

Target: 10 concurrent clients, p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import _free_port, _run, drive, start_server, wait_ready  # noqa: E402

BOUNDARY = "holomedbenchboundary7d1f0c"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def png(rng: np.random.Generator, bright: float, px: int) -> bytes:
    """A ``px`` x ``px`` grey PNG: noise, and a square ``bright`` (0-1) brighter."""
    from PIL import Image

    a = rng.normal(70, 18, (px, px))
    q = px // 4
    a[q : 3 * q, q : 3 * q] += bright * 90
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def build_bundle(folder: Path, encoder: str, px: int, n: int, epochs: int) -> Path:
    """The image + table ``late`` fusion, fitted on ``n`` generated patients."""
    from holomed.candidates import make_candidate
    from holomed.cohort import build_cohort
    from holomed.spec import parse_spec

    rng = np.random.default_rng(0)
    ids = [f"P{i:04d}" for i in range(n)]
    y = np.arange(n) % 2
    table = pd.DataFrame(
        {
            "age": rng.normal(60, 10, n) + 6 * y,
            "sbp": rng.normal(130, 15, n),
            "sex": rng.choice(["F", "M"], n),
        },
        index=ids,
    )
    (folder / "images").mkdir(parents=True)
    paths = []
    for i, p in enumerate(ids):
        path = folder / "images" / f"{p}.png"
        path.write_bytes(png(rng, y[i] * rng.uniform(0.3, 1.0), px))
        paths.append([str(path)])
    spec = parse_spec(
        {
            "dataset": "serve_image_bench",
            "modalities": [
                {"name": "vitals", "kind": "tabular",
                 "encoder": {"name": "mlp", "options": {"hidden": [16]}}},
                {"name": "xray", "kind": "image", "preprocessing": {"size": [px, px]},
                 "encoder": {"name": encoder, "options": {"hidden": 32}}},
            ],
            "target": {"column": "y"},
            "fusion": {"name": "late", "hidden": 32},
            "training": {"max_epochs": epochs, "batch_size": 32, "val_fraction": 0.2,
                         "lr": 0.003},
        },
        where="serve_load_image",
    )  # fmt: skip
    images = pd.DataFrame({"paths": paths}, index=ids)
    cohort = build_cohort(
        spec, {"vitals": table, "xray": images}, pd.DataFrame({"y": y}, index=ids)
    )
    model = make_candidate(spec, "late", 0).fit(cohort)
    return Path(model.save(folder / "bundle"))


def bodies(count: int, px: int, seed: int) -> list[bytes]:
    """``count`` multipart bodies, each a patient with its own image and table row."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        y = k % 2
        mods = {
            "vitals": {
                "age": round(float(rng.normal(60, 10) + 6 * y), 1),
                "sbp": round(float(rng.normal(130, 15)), 1),
                "sex": "F" if rng.random() < 0.5 else "M",
            }
        }
        image = png(rng, y * float(rng.uniform(0.3, 1.0)), px)
        out.append(
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="patient_id"\r\n\r\n'
                f"bench-{seed}-{k}\r\n"
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="modalities"\r\n\r\n'
                f"{json.dumps(mods)}\r\n"
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="xray"; '
                'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + image
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="cnn2d", help="cnn2d or efficientnet_lite0")
    ap.add_argument("--px", type=int, default=128, help="image side in pixels")
    ap.add_argument("--patients", type=int, default=200, help="training patients")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of the bundle")
    ap.add_argument("--requests", type=int, default=1000, help="requests per level")
    ap.add_argument("--levels", default="1,10,50", help="concurrent clients per level")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the 10-client level")
    ap.add_argument("--memory", type=int, default=10_000, help="requests of the memory check")
    ap.add_argument("--client", default="raw", help="raw or httpx (serve_load.drive)")
    ap.add_argument("--out", default="runs/bench/serve_load_image.json")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    plan = [c for c in levels for _ in range(a.repeats if c == 10 else 1)]

    import psutil

    from holomed.serve.audit import verify_chain
    from holomed.serve.settings import make_engine
    from holomed.serve.tokens import TokenStore

    work = Path(tempfile.mkdtemp(prefix="holomed-serve-image-bench-"))
    res: dict[str, Any] = {
        "encoder": a.encoder,
        "image_px": a.px,
        "client": a.client,
        # glibc's malloc arenas (one per worker thread by default) hold on to freed memory
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "cpu_cores": os.cpu_count(),
        "load_average_1_5_15_at_start": _load(),
    }
    t = time.perf_counter()
    bundle = build_bundle(work, a.encoder, a.px, a.patients, a.epochs)
    res["fit_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    warm_n = 100
    pool = bodies(warm_n + a.requests * len(plan) + a.memory, a.px, seed=1)
    res["request_bytes"] = int(np.mean([len(b) for b in pool[:1000]]))
    print(
        f"bundle ({a.encoder}, {a.px} px) fitted in {res['fit_seconds']} s; "
        f"{len(pool)} request bodies in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    gc.collect()
    gc.freeze()
    uploads = work / "uploads"
    uploads.mkdir()
    os.environ["HOLOMED_SERVE_UPLOAD_DIR"] = str(uploads)
    db = work / "serve.db"
    _info, token = TokenStore(make_engine(f"sqlite:///{db}")).create("clinician", "load test")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(bundle, db, port)
    res["levels"] = []
    total = 0
    offset = 0

    def level(n: int, clients: int) -> dict[str, Any]:
        nonlocal offset, total
        part = pool[offset : offset + n]
        offset += n
        load0 = _load()
        rss0, cpu0 = server.memory_info().rss, server.cpu_times()
        out = _run(drive(url, token, part, n, clients, a.client, CONTENT_TYPE))
        rss1, cpu1 = server.memory_info().rss, server.cpu_times()
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        out["server_cpu_ms_per_request"] = round(cpu * 1000.0 / n, 2)
        out["server_rss_mb_before"] = round(rss0 / 2**20, 1)
        out["server_rss_mb_after"] = round(rss1 / 2**20, 1)
        out["load_average_before"], out["load_average_after"] = load0, _load()
        total += n + out["setup_requests"]
        return out

    try:
        _run(wait_ready(url, proc))
        server = psutil.Process(proc.pid)
        warm = level(warm_n, 10)  # imports, thread pools, the first batches
        assert warm["errors"] == 0, warm
        res["rss_mb_start"] = round(server.memory_info().rss / 2**20, 1)
        for clients in plan:
            out = level(a.requests, clients)
            res["levels"].append(out)
            print(json.dumps(out), flush=True)
        if a.memory:
            steps = []
            for _ in range(10):
                out = level(a.memory // 10, 10)
                steps.append(
                    {
                        "requests": out["requests"],
                        "errors": out["errors"],
                        "throughput_rps": out["throughput_rps"],
                        "p95_ms": out["latency_ms"]["p95"],
                        "server_rss_mb": out["server_rss_mb_after"],
                        "load_average": out["load_average_after"],
                    }
                )
                print(json.dumps(steps[-1]), flush=True)
            res["memory"] = {
                "requests": sum(s["requests"] for s in steps),
                "clients": 10,
                "errors": sum(s["errors"] for s in steps),
                "rss_mb_before": res["levels"][-1]["server_rss_mb_after"]
                if res["levels"]
                else res["rss_mb_start"],
                "rss_mb_steps": [s["server_rss_mb"] for s in steps],
                "steps": steps,
            }
        res["rss_mb_end"] = round(server.memory_info().rss / 2**20, 1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except Exception:  # noqa: BLE001 - a server that does not stop is killed
            proc.kill()
    res["uploads_left"] = len(list(uploads.iterdir()))
    engine = make_engine(f"sqlite:///{db}")
    report = verify_chain(engine)
    engine.dispose()
    shutil.rmtree(work, ignore_errors=True)
    res["audit"] = {"rows": report.rows, "expected_rows": total + 1, "intact": report.ok}
    tens = [lv for lv in res["levels"] if lv["clients"] == 10]
    if tens:

        def mm(values: list[float]) -> dict[str, float]:
            return {"min": min(values), "median": statistics.median(values)}

        res["ten_clients"] = {
            "runs": len(tens),
            "throughput_rps": mm([lv["throughput_rps"] for lv in tens]),
            **{f"{q}_ms": mm([lv["latency_ms"][q] for lv in tens]) for q in ("p50", "p95", "p99")},
        }
        res["target_p95_under_300ms_at_10_clients"] = res["ten_clients"]["p95_ms"]["median"] < 300
    res["errors"] = sum(lv["errors"] for lv in res["levels"]) + (
        res["memory"]["errors"] if "memory" in res else 0
    )
    res["load_average_1_5_15_at_end"] = _load()
    # one file for several encoders: this run replaces the earlier one of its encoder
    out = Path(a.out)
    runs: dict[str, Any] = {}
    if out.exists():
        try:
            runs = json.loads(out.read_text()).get("runs", {})
        except (ValueError, AttributeError):
            runs = {}
    arenas = res["malloc_arena_max"]
    runs[a.encoder + (f", MALLOC_ARENA_MAX={arenas}" if arenas else "")] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs}, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "levels"}, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
