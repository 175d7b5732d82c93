"""``holomed serve`` under client faults over a real socket (uvicorn on loopback, in a
thread): clients that declare a large multipart upload, send part of it and hang up
(closed cleanly or reset), one at a time and many at once, beside normal predictions.

The server must stay up (``/health`` 200; the next prediction is the one made before the
faults, to the last bit), leave no upload behind (the server's upload folder is empty
and no spooled temporary file stays open), and audit every aborted request as aborted:
status 499 ("client closed request"), the token and model it named, no patient (no
patient data was read). A client that sent its whole body and left before the answer
was served: that request is audited with the status of the answer it was given."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from holomed.candidates import make_candidate
from holomed.cohort import build_cohort
from holomed.serve.app import CLIENT_CLOSED
from holomed.serve.audit import audit_table, verify_chain
from holomed.serve.server import create_app
from holomed.serve.settings import ServeSettings
from holomed.spec import parse_spec

N = 32
SETTINGS = dict(
    max_request_bytes=2_000_000,  # a 1.9 MB declared body is accepted, then cut short
    max_file_bytes=1_900_000,
    max_files=6,
    rate_limit_per_minute=100_000,
    token_cache_seconds=30.0,
)
PREDICT = "/v1/models/icu/predict"
ENDPOINT = "POST /v1/models/{name}/predict"


def _png_bytes(rng: np.random.Generator, bright: int, px: int = 16) -> bytes:
    a = rng.normal(60, 10, (px, px))
    a[px // 4 : 3 * px // 4, px // 4 : 3 * px // 4] += bright * 120
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_bundle(folder: Path) -> Path:
    """A neural 'late' fusion over a table (age, sbp, sex) and one 16x16 grey PNG (8x8
    for ``cnn2d``): the image model the faults are sent to."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(N)]
    y = np.arange(N) % 2
    vitals = pd.DataFrame(
        {
            "age": rng.normal(60, 10, N) + 8 * y,
            "sbp": rng.normal(130, 15, N),
            "sex": rng.choice(["F", "M"], N),
        },
        index=ids,
    )
    paths = []
    for i, p in enumerate(ids):
        path = folder / f"{p}.png"
        path.write_bytes(_png_bytes(rng, int(y[i])))
        paths.append([str(path)])
    images = pd.DataFrame({"paths": paths}, index=ids)
    spec = parse_spec(
        {
            "dataset": "faults_test",
            "modalities": [
                {"name": "vitals", "kind": "tabular",
                 "encoder": {"name": "mlp", "options": {"hidden": [8]}}},
                {"name": "ct", "kind": "image", "preprocessing": {"size": [8, 8]},
                 "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4]}}},
            ],
            "target": {"column": "y"},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 1, "batch_size": 16, "val_fraction": 0.0, "lr": 0.01},
        },
        where="faults test",
    )  # fmt: skip
    cohort = build_cohort(spec, {"vitals": vitals, "ct": images}, pd.DataFrame({"y": y}, index=ids))
    model = make_candidate(spec, "late", 0).fit(cohort)
    return Path(model.save(folder / "icu" / "bundle"))


# -- a live server -------------------------------------------------------------------------


class Live:
    """uvicorn serving the bundle on a free loopback port, in a thread of this process
    (so its open files can be counted here)."""

    def __init__(self, bundle: Path, folder: Path) -> None:
        import uvicorn

        self.uploads = folder / "uploads"
        self.uploads.mkdir()
        self.app = create_app(
            {"icu": bundle},
            ServeSettings(**SETTINGS, upload_dir=str(self.uploads)),
            db=str(folder / "serve.db"),
        )
        self.state = self.app.state.holomed
        info, self.token = self.state.tokens.create("clinician", "faults")
        self.token_id = info.id
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Live:
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.state.close()

    def rows(self) -> list[dict]:
        assert self.state.audit.flush(10)
        with self.state.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(select(audit_table).order_by(audit_table.c.seq)).mappings()
            ]

    def rows_after(self, before: int, count: int, timeout: float = 20.0) -> list[dict]:
        """The ``count`` audit rows after the first ``before`` (waits for them: an
        aborted request is recorded when the server notices the closed connection)."""
        t0 = time.monotonic()
        while True:
            rows = self.rows()[before:]
            if len(rows) >= count or time.monotonic() - t0 > timeout:
                return rows
            time.sleep(0.05)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return image_bundle(tmp_path_factory.mktemp("faults_bundle"))


@pytest.fixture
def spool(tmp_path, monkeypatch) -> Path:
    """The system temporary folder, here a fresh one: the multipart parser spools a file
    part over 1 MB to an (unnamed) temporary file in it, seen here as an open file."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def open_in(folder: Path) -> list[str]:
    """Files under ``folder`` that this process holds open (deleted ones included)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            out.append(target)
    return out


def wait_until(check, timeout: float = 20.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return True
        time.sleep(0.02)
    return False


# -- requests ------------------------------------------------------------------------------


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    """(boundary, body) of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, filename, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return boundary, b"".join(parts) + f"--{boundary}--\r\n".encode()


def patient_upload() -> tuple[str, bytes]:
    """One patient: the table as a form field, the image as a PNG file."""
    png = _png_bytes(np.random.default_rng(7), 1)
    mods = {"vitals": {"age": 71, "sbp": 118, "sex": "F"}}
    return multipart(
        {"patient_id": "FAULT-1", "modalities": json.dumps(mods)}, [("ct", "scan.png", png)]
    )


def big_upload(size: int = 1_900_000) -> tuple[str, bytes]:
    """A PNG part padded to ``size`` bytes in all (never sent in full)."""
    png = _png_bytes(np.random.default_rng(8), 0)
    pad = png + b"\0" * (size - len(png) - 400)
    return multipart({"patient_id": "FAULT-2"}, [("ct", "big.png", pad)])


def head(live: Live, boundary: str, length: int) -> bytes:
    return (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {live.token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def abort_upload(
    live: Live, sent: int, reset: bool = False, hold: threading.Event | None = None
) -> None:
    """Declare the whole big upload, send its first ``sent`` bytes, then close (``reset``:
    an RST instead of a FIN). ``hold``: wait for it before hanging up."""
    boundary, body = big_upload()
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(head(live, boundary, len(body)) + body[:sent])
        if hold is not None:
            hold.wait(20)
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def predict(live: Live) -> dict:
    boundary, body = patient_upload()
    r = httpx.post(
        live.url + PREDICT,
        content=body,
        headers={
            "Authorization": f"Bearer {live.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def check_up(live: Live, expected: dict) -> None:
    """``/health`` answers and the next prediction is the one made before."""
    assert httpx.get(live.url + "/health", timeout=10).status_code == 200
    out = predict(live)
    assert out["probabilities"] == expected["probabilities"]
    assert out["modalities"]["used"] == ["vitals", "ct"]


def check_aborted(live: Live, rows: list[dict]) -> None:
    for r in rows:
        assert r["status"] == CLIENT_CLOSED, r
        assert r["endpoint"] == ENDPOINT and r["model"] == "icu"
        assert r["token_id"] == live.token_id and r["role"] == "clinician"
        assert r["patient"] is None and r["bundle_hash"] == live.state.models["icu"].hash


# -- tests ---------------------------------------------------------------------------------


def test_client_that_hangs_up_mid_upload(bundle, tmp_path, spool, caplog):
    with Live(bundle, tmp_path) as live:
        expected = predict(live)
        assert sum(expected["probabilities"].values()) == pytest.approx(1.0)
        # positive control: 1.2 MB of a part is spooled to a temporary file, held open
        # while the upload lasts and closed when the client hangs up
        before = len(live.rows())
        hold = threading.Event()
        t = threading.Thread(target=abort_upload, args=(live, 1_200_000, False, hold))
        t.start()
        try:
            assert wait_until(lambda: len(open_in(spool)) == 1), "no part was spooled to disk"
        finally:
            hold.set()
            t.join(20)
        assert wait_until(lambda: not open_in(spool)), open_in(spool)
        check_aborted(live, live.rows_after(before, 1))
        check_up(live, expected)
        # the headers only; inside the first part's headers; mid-file (in memory, then
        # spooled to disk); the same reset (RST) instead of closed; the whole body but
        # the closing boundary
        _, body = big_upload()
        cuts = [(0, False), (150, False), (300_000, False), (1_500_000, False),
                (1_500_000, True), (len(body) - 10, False)]  # fmt: skip
        for sent, reset in cuts:
            before = len(live.rows())
            abort_upload(live, sent, reset)
            rows = live.rows_after(before, 1)
            assert len(rows) == 1, (sent, reset, rows)
            check_aborted(live, rows)
            check_up(live, expected)
            assert not list(live.uploads.iterdir()) and not open_in(spool), (sent, reset)
        # a client that sent everything and left before the answer: served, audited 200
        boundary, body = patient_upload()
        before = len(live.rows())
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(head(live, boundary, len(body)) + body)
        rows = live.rows_after(before, 1)
        assert [r["status"] for r in rows] == [200] and rows[0]["patient"] is not None
        assert wait_until(lambda: not list(live.uploads.iterdir()))
        check_up(live, expected)
        assert verify_chain(live.state.engine).ok
    # a hang-up is the client's doing: no error logged, no traceback
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "Traceback" not in caplog.text


def test_many_clients_hang_up_at_once_beside_normal_predictions(bundle, tmp_path, spool):
    with Live(bundle, tmp_path) as live:
        expected = predict(live)
        before = len(live.rows())
        n_abort, n_ok = 16, 8
        hold = threading.Event()
        results: list[dict] = []
        errors: list[BaseException] = []

        def aborter(k: int) -> None:
            try:
                abort_upload(live, [200, 400_000, 1_300_000, 1_700_000][k % 4], k % 3 == 0, hold)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        def normal() -> None:
            try:
                results.append(predict(live))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=aborter, args=(k,)) for k in range(n_abort)]
        for t in threads:
            t.start()
        # every aborting client is mid-upload (at least the ones past 1 MB are spooled)
        assert wait_until(lambda: len(open_in(spool)) >= n_abort // 2), open_in(spool)
        oks = [threading.Thread(target=normal) for _ in range(n_ok)]
        for t in oks:
            t.start()
        hold.set()  # all hang up at once, while the normal requests run
        for t in threads + oks:
            t.join(60)
        assert not errors, errors
        assert len(results) == n_ok
        for r in results:  # run as one batch, maybe: equal up to float rounding
            assert r["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        rows = live.rows_after(before, n_abort + n_ok)
        assert len(rows) == n_abort + n_ok
        aborted = [r for r in rows if r["status"] != 200]
        assert len(aborted) == n_abort and sum(r["status"] == 200 for r in rows) == n_ok
        check_aborted(live, aborted)
        assert wait_until(lambda: not open_in(spool)), open_in(spool)
        assert not list(live.uploads.iterdir())
        check_up(live, expected)
        assert verify_chain(live.state.engine).ok
