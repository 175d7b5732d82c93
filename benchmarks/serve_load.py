"""Load test of ``holomed serve``: one-patient predictions over HTTP on loopback.

A ROSMAP bundle (3 omics x 200 features; the synthetic cohort when ROSMAP is absent) is
served by ``holomed serve`` (uvicorn) in a subprocess, with its SQLite audit trail and
token store. A bounded async client (``httpx.AsyncClient``, one connection per client)
sends ``--requests`` predictions at each concurrency level (1, 10, 50 clients), each
body one test patient with all three omics as JSON. Reported per level: throughput,
latency p50/p95/p99/max (ms, client side, request sent to response read), errors, the
server's CPU seconds per request and its resident memory (RSS) before and after the
level; at the end the audit trail is verified (one row per request, chain intact).

Two clients are run by default: ``httpx`` (one ``httpx.AsyncClient`` per simulated
client) and ``raw`` (pre-encoded HTTP/1.1 requests over asyncio streams). httpx spends
more CPU a request than the server does, and client and server share the cores, so the
``raw`` rows are the ones that measure the server.

    HOLOMED_DATA=../shared/data python benchmarks/serve_load.py --out runs/bench/serve.json
    python benchmarks/serve_load.py --full      # 10,000 requests per level

Targets: at 50 clients p95 < 50 ms and >= 500 requests/s on 2 cores. Client and server
share the machine, so the client's own CPU time counts against the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_bundle(folder: Path, epochs: int) -> tuple[Path, list[dict[str, Any]], str]:
    """A ``late`` fusion bundle on ROSMAP's training patients (the synthetic cohort when
    ROSMAP is absent) and JSON bodies of the test patients with every modality."""
    from holomed.candidates import make_candidate
    from holomed.cohort import load_cohort, patient_splits
    from holomed.spec import load_spec, parse_spec
    from holomed.synthetic import synthetic_spec_dict

    root = os.environ.get("HOLOMED_DATA")
    if root and (Path(root) / "rosmap").is_dir():
        spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "rosmap.yaml")
        data = "rosmap"
    else:
        spec = parse_spec(synthetic_spec_dict(n_patients=600, seed=0))
        data = "synthetic (ROSMAP not found under $HOLOMED_DATA)"
    spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"max_epochs": epochs})}
    )
    cohort = load_cohort(spec)
    ((tr, te),) = patient_splits(cohort, spec.split)
    model = make_candidate(spec, spec.fusion.name, 0).fit(cohort.subset(tr))
    path = Path(model.save(folder / "bundle"))
    bodies = []
    for i in te:
        mods = {}
        for name, m in cohort.modalities.items():
            if not m.present[i]:
                continue
            row = m.values.iloc[i]
            mods[name] = {
                str(k): (None if pd.isna(v) else (v if isinstance(v, str) else float(v)))
                for k, v in row.items()
            }
        bodies.append({"patient_id": f"bench-{i}", "modalities": mods})
    return path, bodies, data


def start_server(bundle: Path, db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HOLOMED_THREADS": "1", "OMP_NUM_THREADS": "1"}
    code = "from holomed.serve.cli import serve_app; serve_app()"
    cmd = [
        sys.executable, "-c", code, f"bench={bundle}", "--db", str(db), "--port", str(port),
        "--rate-limit", "100000000", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    t0 = time.monotonic()
    async with httpx.AsyncClient() as c:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"server exited ({proc.returncode}): {out[-2000:]}")
            try:
                if (await c.get(url + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("server not up")


async def drive(
    url: str,
    token: str,
    bodies: list[bytes],
    n: int,
    clients: int,
    client: str = "httpx",
    content_type: str = "application/json",
) -> dict[str, Any]:
    """``n`` predictions from ``clients`` concurrent clients, each on its own keep-alive
    connection; latencies in ms. ``client``: ``httpx`` (one ``httpx.AsyncClient`` per
    client: a shared pool of 50 connections costs the client several ms a request) or
    ``raw`` (pre-encoded HTTP/1.1 over asyncio streams: about a tenth of httpx's CPU,
    so the server, not the client, is measured). ``content_type``: of every body (a
    multipart body names its boundary here, see ``serve_load_image.py``)."""
    import httpx

    path = "/v1/models/bench/predict"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    lat = np.zeros(n)
    status: dict[str, int] = {}
    counter = iter(range(n))

    def done(k: int, t: float, code: str) -> None:
        lat[k] = (time.perf_counter() - t) * 1000.0
        status[code] = status.get(code, 0) + 1

    async def httpx_worker(c: Any) -> None:
        for k in counter:
            t = time.perf_counter()
            try:
                r = await c.post(path, content=bodies[k % len(bodies)], headers=headers)
                code = str(r.status_code)
            except httpx.HTTPError as err:
                code = type(err).__name__
            done(k, t, code)

    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\n" + "Content-Length: {n}\r\n\r\n"
    )
    requests = [head.replace("{n}", str(len(b))).encode() + b for b in bodies]

    async def raw_worker(conn: Any) -> None:
        reader, writer = conn
        try:
            for k in counter:
                t = time.perf_counter()
                try:
                    writer.write(requests[k % len(requests)])
                    reply = await reader.readuntil(b"\r\n\r\n")
                    size = next(
                        int(line.split(b":", 1)[1])
                        for line in reply.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(size)
                    code = reply[9:12].decode()
                except (OSError, asyncio.IncompleteReadError, StopIteration) as err:
                    code = type(err).__name__
                    reader, writer = await asyncio.open_connection(host, int(port))
                done(k, t, code)
        finally:
            writer.close()

    # connections (and httpx's clients, each loading its TLS context) are made before the
    # clock starts: the load, not the set-up, is timed
    if client == "raw":
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]
        t0 = time.perf_counter()
        await asyncio.gather(*(raw_worker(c) for c in conns))
        seconds = time.perf_counter() - t0
    else:
        pool = [httpx.AsyncClient(base_url=url, timeout=60.0) for _ in range(clients)]
        await asyncio.gather(*(c.get("/health") for c in pool))
        t0 = time.perf_counter()
        await asyncio.gather(*(httpx_worker(c) for c in pool))
        seconds = time.perf_counter() - t0
        for c in pool:
            await c.aclose()
    ok = status.get("200", 0)
    return {
        "setup_requests": 0 if client == "raw" else clients,  # GET /health, not timed
        "client": client,
        "clients": clients,
        "requests": n,
        "seconds": round(seconds, 3),
        "throughput_rps": round(n / seconds, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p95": round(float(np.percentile(lat, 95)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
            "max": round(float(lat.max()), 2),
        },
        "errors": n - ok,
        "status": status,
    }


def _run(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (as uvicorn does), else asyncio."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per level")
    ap.add_argument("--full", action="store_true", help="10,000 requests per level")
    ap.add_argument("--levels", default="1,10,50", help="concurrent clients per level")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the bundle")
    ap.add_argument(
        "--client",
        default="httpx,raw",
        help="httpx, raw, or both (comma-separated): the HTTP client(s) driving the load",
    )
    ap.add_argument("--out", default="runs/bench/serve_load.json")
    a = ap.parse_args()
    n = 10_000 if a.full else a.requests
    levels = [int(x) for x in a.levels.split(",")]

    import psutil

    from holomed.serve.audit import verify_chain
    from holomed.serve.settings import make_engine
    from holomed.serve.tokens import TokenStore

    work = Path(tempfile.mkdtemp(prefix="holomed-serve-bench-"))
    t = time.perf_counter()
    bundle, bodies, data = build_bundle(work, a.epochs)
    print(f"bundle ({data}): {len(bodies)} test patients, {time.perf_counter() - t:.1f} s")
    # the training's objects stay alive here: keep them out of the client's garbage
    # collections, whose full passes would otherwise pause the client mid-request
    gc.collect()
    gc.freeze()
    db = work / "serve.db"
    _info, token = TokenStore(make_engine(f"sqlite:///{db}")).create("clinician", "load test")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(bundle, db, port)
    res: dict[str, Any] = {"data": data, "bundle_patients": len(bodies), "levels": []}
    try:
        _run(wait_ready(url, proc))
        server = psutil.Process(proc.pid)
        payload = [json.dumps(b).encode() for b in bodies]
        res["request_bytes"] = int(np.mean([len(p) for p in payload]))
        warm = _run(drive(url, token, payload, 200, 10))  # imports, caches, pools
        total = 200 + warm["setup_requests"]
        res["rss_mb_start"] = round(server.memory_info().rss / 2**20, 1)
        assert warm["errors"] == 0, warm
        for client in a.client.split(","):
            for clients in levels:
                rss0, cpu0 = server.memory_info().rss, server.cpu_times()
                me0 = psutil.Process().cpu_times()
                out = _run(drive(url, token, payload, n, clients, client.strip()))
                rss1, cpu1 = server.memory_info().rss, server.cpu_times()
                me1 = psutil.Process().cpu_times()
                cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                mine = (me1.user + me1.system) - (me0.user + me0.system)
                out["server_cpu_ms_per_request"] = round(cpu * 1000.0 / n, 3)
                out["client_cpu_ms_per_request"] = round(mine * 1000.0 / n, 3)
                out["server_rss_mb_before"] = round(rss0 / 2**20, 1)
                out["server_rss_mb_after"] = round(rss1 / 2**20, 1)
                total += n + out["setup_requests"]
                res["levels"].append(out)
                print(json.dumps(out), flush=True)
        res["rss_mb_end"] = round(server.memory_info().rss / 2**20, 1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    engine = make_engine(f"sqlite:///{db}")
    report = verify_chain(engine)
    engine.dispose()
    shutil.rmtree(work, ignore_errors=True)
    res["audit"] = {"rows": report.rows, "expected_rows": total + 1, "intact": report.ok}
    res["targets"] = {
        lv["client"]: {
            "p95_under_50ms_at_50_clients": lv["latency_ms"]["p95"] < 50,
            "at_least_500_rps_at_50_clients": lv["throughput_rps"] >= 500,
        }
        for lv in res["levels"]
        if lv["clients"] == 50
    }
    res["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    res["cpu_cores"] = os.cpu_count()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "levels"}, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
