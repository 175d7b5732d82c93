"""``holomed serve``'s HTTP API on tiny bundles trained here: predictions and explanations
for any subset of modalities (JSON tables, notes, uploaded images, signals and CSV
tables), roles and tokens, the audit row of every request (refused ones too), upload
limits (a body too large refused before it is read, decompression bombs, broken DICOM)
and no raw patient id in any response, audit row or log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from kinds_examples import write_edf, write_wfdb
from PIL import Image as PILImage
from sqlalchemy import select
from typer.testing import CliRunner

from holomed.candidates import load_bundle, make_candidate
from holomed.cohort import build_cohort, load_cohort
from holomed.privacy.keys import PrivacyKey
from holomed.serve.audit import audit_table, verify_chain
from holomed.serve.cli import tokens_app
from holomed.serve.server import create_app
from holomed.serve.settings import ServeSettings
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict

RAW_ID = "MRN-SECRET-4242"
N = 40
FS = 50.0


# -- bundles ------------------------------------------------------------------------------


def _png(path: Path, bright: float, rng: np.random.Generator) -> str:
    a = rng.normal(60, 10, (12, 12))
    a[3:9, 3:9] += bright * 120
    PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def _ecg(rng: np.random.Generator, y: int) -> np.ndarray:
    t = np.arange(0, 2.0, 1 / FS)
    f = 8.0 if y else 3.0
    return np.stack(
        [
            0.8 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)),
            0.5 * np.sin(2 * np.pi * t) + 0.2 * rng.normal(size=len(t)),
        ],
        1,
    )


def multimodal_bundle(folder: Path) -> Path:
    """A neural 'late' fusion over a table, notes, a PNG image and a 2-lead EDF signal."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(N)]
    y = np.arange(N) % 2
    clin = pd.DataFrame(
        {"age": rng.normal(60, 10, N) + 3 * y, "sex": rng.choice(["F", "M"], N)}, index=ids
    )
    words = (["stable", "improving", "afebrile"], ["septic", "hypotensive", "confused"])
    notes = pd.DataFrame(
        {"id": ids, "text": [" ".join(rng.choice(words[k], 3)) + " seen on ward" for k in y]}
    )
    images = pd.DataFrame(
        {"paths": [[_png(folder / f"{p}.png", y[i], rng)] for i, p in enumerate(ids)]}, index=ids
    )
    ecg = pd.DataFrame(
        {"path": [write_edf(folder / f"{p}.edf", _ecg(rng, y[i]), ["I", "II"], FS)
                  for i, p in enumerate(ids)]},
        index=ids,
    )  # fmt: skip
    spec = parse_spec(
        {
            "dataset": "serve_test",
            "modalities": [
                {"name": "clin", "kind": "tabular", "encoder": {"name": "mlp",
                 "options": {"hidden": [8]}}},
                {"name": "notes", "kind": "text",
                 "preprocessing": {"method": "tfidf", "dim": 4, "min_df": 1},
                 "encoder": {"name": "text_pool", "options": {"hidden": 8}}},
                {"name": "xray", "kind": "image", "preprocessing": {"size": [8, 8]},
                 "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4]}}},
                {"name": "ecg", "kind": "signal",
                 "preprocessing": {"fs": FS, "duration": 2.0},
                 "encoder": {"name": "resnet1d", "options": {"width": 8, "blocks": 2}}},
            ],
            "target": {"column": "y"},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 2, "batch_size": 16, "val_fraction": 0.0, "lr": 0.01},
        },
        where="serve test",
    )  # fmt: skip
    frames = {"clin": clin, "notes": notes, "xray": images, "ecg": ecg}
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    model = make_candidate(spec, "late", 0).fit(cohort)
    return Path(model.save(folder / "mm" / "bundle"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """{name: path}: 'syn' (lr_early on the synthetic omics cohort) and 'mm' (neural late
    fusion over a table, notes, an image and a signal), plus the synthetic cohort."""
    folder = tmp_path_factory.mktemp("bundles")
    d = synthetic_spec_dict(n_patients=120, seed=0)
    d["training"].update(max_epochs=2, patience=2)
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    make_candidate(spec, "lr_early", 0).fit(cohort).save(folder / "syn")
    mm = multimodal_bundle(folder)
    return {"syn": folder / "syn", "mm": mm, "cohort": cohort, "folder": folder}


SETTINGS = dict(
    max_request_bytes=2_000_000,
    max_file_bytes=1_000_000,
    max_files=6,
    rate_limit_per_minute=100_000,
    token_cache_seconds=0.5,
)


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """A TestClient on both bundles with one token per role (``server.tokens[role]``)."""
    db = tmp_path_factory.mktemp("state") / "serve.db"
    app = create_app(
        {"syn": bundles["syn"], "mm": bundles["mm"]},
        ServeSettings(**SETTINGS),
        db=str(db),
    )
    state = app.state.holomed
    tokens = {r: state.tokens.create(r, f"test {r}") for r in ("clinician", "researcher", "admin")}
    with TestClient(app) as client:
        client.app_state = state
        client.db = db
        client.tokens = {r: tok for r, (_info, tok) in tokens.items()}
        client.ids = {r: info.id for r, (info, _tok) in tokens.items()}
        yield client


def auth(server, role: str = "clinician") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[role]}"}


def audit_rows(server) -> list[dict]:
    state = server.app_state
    assert state.audit.flush(10)
    with state.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_table)).mappings()]


def row_json(cohort, i: int, names: list[str]) -> dict:
    """Patient ``i`` of the synthetic cohort as the JSON body's ``modalities``."""
    out = {}
    for n in names:
        v = cohort.modalities[n].values.iloc[i]
        out[n] = {str(k): (None if pd.isna(x) else (x if isinstance(x, str) else float(x)))
                  for k, x in v.items()}  # fmt: skip
    return out


def full_patients(cohort) -> list[int]:
    pres = np.stack([m.present for m in cohort.modalities.values()], 1)
    return list(np.nonzero(pres.all(1))[0])


# -- predictions ---------------------------------------------------------------------------


def test_health_needs_no_token_and_everything_else_does(server):
    assert server.get("/health").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/ready"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/syn"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/models/syn/predict"),
        ("POST", "/v1/models/syn/explain"),
        ("GET", "/v1/audit/summary"),
        ("GET", "/v1/tokens"),
    ]:
        r = server.request(method, path)
        assert r.status_code == 401, path
        assert "bearer" in r.json()["error"].lower()
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_ready_models_and_docs(server):
    r = server.get("/ready", headers=auth(server))
    assert r.status_code == 200 and r.json()["ready"] and r.json()["pseudonym_key"] == "session"
    models = server.get("/v1/models", headers=auth(server)).json()["models"]
    assert {m["name"] for m in models} == {"syn", "mm"}
    assert all(m["intended_use"] and len(m["bundle_hash"]) == 64 for m in models)
    mm = server.get("/v1/models/mm", headers=auth(server)).json()
    assert mm["expects"]["clin"]["numeric"] == ["age"]
    assert mm["expects"]["clin"]["categorical"] == {"sex": ["F", "M"]}
    assert mm["expects"]["xray"]["kind"] == "image" and mm["expects"]["ecg"]["channels"]
    assert mm["metrics"] is None  # clinicians do not see metrics
    assert server.get("/v1/models/mm", headers=auth(server, "researcher")).json()["metrics"]
    spec = server.get("/openapi.json", headers=auth(server)).json()
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "swagger" in server.get("/docs", headers=auth(server)).text.lower()
    r = server.get("/v1/models/nope", headers=auth(server))
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_predict_with_all_modalities_matches_the_model(server, bundles):
    cohort = bundles["cohort"]
    model = load_bundle(bundles["syn"])
    names = list(cohort.modalities)
    for i in full_patients(cohort)[:3]:
        body = {"patient_id": RAW_ID, "modalities": row_json(cohort, i, names)}
        r = server.post("/v1/models/syn/predict", json=body, headers=auth(server))
        assert r.status_code == 200, r.text
        out = r.json()
        expect = model.predict_proba(cohort.subset([i]))[0]
        got = [out["probabilities"][c] for c in ("no_event", "event")]
        np.testing.assert_allclose(got, expect, atol=1e-9)
        assert out["predicted"] == ("event" if expect[1] > expect[0] else "no_event")
        assert out["modalities"]["used"] == names and out["modalities"]["missing"] == []
        assert out["calibration"] == "none"  # logistic regression: its own probabilities
        assert out["synthetic_data"] is True
        assert out["intended_use"].startswith("Research use only")
        assert out["patient"] == server.app_state.pseudonyms(RAW_ID)
        assert RAW_ID not in r.text


def test_predict_with_missing_modalities_marks_them(server, bundles):
    cohort = bundles["cohort"]
    model = load_bundle(bundles["syn"])
    i = full_patients(cohort)[0]
    body = {"modalities": row_json(cohort, i, ["clinical", "methylation"])}
    r = server.post("/v1/models/syn/predict", json=body, headers=auth(server))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["modalities"]["missing"] == ["expression", "noise"]
    assert out["modalities"]["used"] == ["clinical", "methylation"]
    assert out["patient"] is None
    one = cohort.subset([i])
    pres = {k: v.copy() for k, v in one.presence().items()}
    pres["expression"][:] = False
    pres["noise"][:] = False
    expect = model.predict_proba(one.with_presence(pres))[0]
    np.testing.assert_allclose(out["probabilities"]["event"], expect[1], atol=1e-9)


def test_a_batch_gives_what_single_requests_give_and_one_bad_input_fails_alone(server, bundles):
    from holomed.serve.app import ApiError, InputReader, PatientInput

    served = server.app_state.models["syn"]
    cohort = bundles["cohort"]
    items = []
    for i in range(6):
        it = PatientInput()
        InputReader(served).body({"modalities": row_json(cohort, i, ["clinical"])}, lambda x: x,
                                 it)  # fmt: skip
        items.append(it)
    bad = PatientInput()
    InputReader(served).body({"modalities": {"clinical": {"age": 50.0}}}, lambda x: x, bad)
    bad.tables["clinical"]["lab0"] = "not a number"  # past validation: fails in the batch
    batch = served.predict_batch([*items[:3], bad, *items[3:]])
    assert isinstance(batch[3], ApiError) and batch[3].status == 422
    singles = [served.predict_batch([it])[0] for it in items]
    for a, b in zip([*batch[:3], *batch[4:]], singles, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-12)


def test_concurrent_requests_are_batched(server, bundles):
    cohort = bundles["cohort"]
    served = server.app_state.models["syn"]
    before = (served.batcher.batches, served.batcher.items)
    rows = full_patients(cohort)[:24]
    bodies = [{"modalities": row_json(cohort, i, ["clinical", "expression"])} for i in rows]
    out: list = [None] * len(bodies)

    def go(k: int) -> None:
        out[k] = server.post("/v1/models/syn/predict", json=bodies[k], headers=auth(server))

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in out), [r.text for r in out if r.status_code != 200][:2]
    batches = served.batcher.batches - before[0]
    assert served.batcher.items - before[1] == len(bodies) and 1 <= batches <= len(bodies)


def test_explain_gives_shapley_values_that_add_up(server, bundles):
    cohort = bundles["cohort"]
    i = full_patients(cohort)[1]
    body = {"patient_id": RAW_ID, "modalities": row_json(cohort, i, ["clinical", "expression"])}
    r = server.post("/v1/models/syn/explain", json=body, headers=auth(server))
    assert r.status_code == 200, r.text
    out = r.json()
    c = out["contributions"]
    assert set(c["modalities"]) == {"clinical", "expression"}
    total = sum(v["shapley"] for v in c["modalities"].values())
    assert total == pytest.approx(c["value"] - c["base"], abs=1e-6)
    assert c["value"] == pytest.approx(out["probabilities"]["event"], abs=1e-9)
    assert set(out["top_features"]) == {"clinical", "expression"}
    assert 0 < len(out["top_features"]["expression"]) <= 10
    assert RAW_ID not in r.text


# -- the multimodal bundle: notes, files --------------------------------------------------


def _files(folder: Path, rng: np.random.Generator, bright: float = 1.0) -> list:
    png = Path(_png(folder / "upload.png", bright, rng)).read_bytes()
    edf = Path(write_edf(folder / "upload.edf", _ecg(rng, 1), ["I", "II"], FS)).read_bytes()
    return [
        ("xray", ("chest.png", png, "image/png")),
        ("ecg", ("trace.edf", edf, "application/octet-stream")),
        ("clin", ("clin.csv", b"id,age,sex\nX1,71,F\n", "text/csv")),
    ]


def test_multipart_image_signal_csv_and_notes(server, tmp_path):
    rng = np.random.default_rng(3)
    data = {"patient_id": RAW_ID, "notes": "septic and hypotensive overnight"}
    r = server.post(
        "/v1/models/mm/predict", data=data, files=_files(tmp_path, rng), headers=auth(server)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["modalities"]["used"] == ["clin", "notes", "xray", "ecg"]
    assert out["modalities"]["missing"] == [] and out["modalities"]["unusable"] == {}
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)
    assert out["calibration"] in ("temperature", "none")  # neural: recalibrated if validated
    assert RAW_ID not in r.text
    r = server.post(
        "/v1/models/mm/explain", data=data, files=_files(tmp_path, rng)[:1], headers=auth(server)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["contributions"]["modalities"]) == {"notes", "xray"}
    assert out["modalities"]["missing"] == ["clin", "ecg"]
    assert set(out["modality_weights"]) == {"clin", "notes", "xray", "ecg"}


def test_images_beyond_what_the_model_reads_are_named_not_dropped_silently(server, tmp_path):
    rng = np.random.default_rng(4)
    most = server.get("/v1/models/mm", headers=auth(server)).json()["expects"]["xray"]
    most = most["max_images"]
    png = Path(_png(tmp_path / "x.png", 1.0, rng)).read_bytes()
    files = [("xray", (f"view{k}.png", png, "image/png")) for k in range(most + 2)]
    r = server.post("/v1/models/mm/predict", files=files, headers=auth(server))
    assert r.status_code == 200, r.text
    said = [w for w in r.json()["warnings"] if "xray" in w]
    assert said and f"at most {most} image(s)" in said[0]
    assert f"files {most + 1} to {most + 2} were not used" in said[0]
    r = server.post("/v1/models/mm/predict", files=files[:most], headers=auth(server))
    assert r.status_code == 200 and not [w for w in r.json()["warnings"] if "xray" in w]


def test_co_acquired_images_as_channels_are_all_read_without_a_warning(tmp_path):
    rng = np.random.default_rng(0)

    def png(path: Path, bright: float) -> str:
        a = rng.normal(60, 10, (12, 12))
        a[3:9, 3:9] += bright * 120
        PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
        return str(path)

    ids = [f"P{i:03d}" for i in range(40)]
    y = np.arange(40) % 2  # channel A is noise, channel B carries the label
    cells = [[png(tmp_path / f"{p}_A.png", 0), png(tmp_path / f"{p}_B.png", y[i])]
             for i, p in enumerate(ids)]  # fmt: skip
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "mr",
                    "kind": "image",
                    "preprocessing": {"size": [8, 8], "as_channels": ["A", "B"]},
                }  # fmt: skip
            ],
            "target": {"column": "y"},
        }
    )
    frames = {"mr": pd.DataFrame({"paths": cells}, index=ids)}
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    bundle = make_candidate(spec, "lr_early", 0).fit(cohort).save(tmp_path / "b")
    app = create_app({"ch": bundle}, ServeSettings(**SETTINGS), db=str(tmp_path / "s.db"))
    _, token = app.state.holomed.tokens.create("clinician", "t")
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as c:
        assert c.get("/v1/models/ch", headers=h).json()["expects"]["mr"]["channels"] == ["A", "B"]
        a = Path(png(tmp_path / "qa.png", 0)).read_bytes()
        risk = []
        for bright in (0, 1):
            b = Path(png(tmp_path / f"qb{bright}.png", bright)).read_bytes()
            files = [("mr", ("A.png", a, "image/png")), ("mr", ("B.png", b, "image/png"))]
            r = c.post("/v1/models/ch/predict", files=files, headers=h)
            assert r.status_code == 200 and r.json()["warnings"] == [], r.text
            risk.append(r.json()["probabilities"]["1"])
    assert risk[1] > risk[0] + 0.5  # the second file (channel B) was read


def test_a_multipart_body_cut_before_its_closing_boundary_is_refused(server):
    b = "cut0boundary"
    part = (
        f'--{b}\r\nContent-Disposition: form-data; name="modalities"\r\n\r\n'
        '{"clin": {"age": 60, "sex": "F"}}\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="notes"; filename="n.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nstable overnight"
    )
    h = {**auth(server), "content-type": f"multipart/form-data; boundary={b}"}
    # cut short: the note's part never ends; it must not be read as a request without it
    r = server.post("/v1/models/mm/predict", content=part.encode(), headers=h)
    assert r.status_code == 400 and "closing boundary" in r.json()["error"], r.text
    whole = part + f"\r\n--{b}--\r\n"
    r = server.post("/v1/models/mm/predict", content=whole.encode(), headers=h)
    assert r.status_code == 200, r.text
    assert "notes" in r.json()["modalities"]["used"]
    # the boundary as the parser reads it (any case, spaces, quotes); an epilogue may follow
    for ctype in (f"multipart/form-data; BOUNDARY={b}", f'multipart/form-data; boundary = "{b}"'):
        cut = server.post(
            "/v1/models/mm/predict", content=part.encode(), headers={**h, "content-type": ctype}
        )
        assert cut.status_code == 400, (ctype, cut.text)
    epilogue = (whole + "x" * 2000).encode()
    r = server.post("/v1/models/mm/predict", content=epilogue, headers=h)
    assert r.status_code == 200, r.text

    def chunks():  # no Content-Length, the delimiter split across two chunks
        data = whole.encode()
        cut_at = data.index(f"--{b}--".encode()) + 4
        yield data[:cut_at]
        yield data[cut_at:]

    r = server.post("/v1/models/mm/predict", content=chunks(), headers=h)
    assert r.status_code == 200, r.text


def test_json_notes_and_table_without_files(server):
    body = {"modalities": {"clin": {"age": 55, "sex": "M"}}, "notes": ["stable", "improving"]}
    r = server.post("/v1/models/mm/predict", json=body, headers=auth(server))
    assert r.status_code == 200, r.text
    assert r.json()["modalities"]["missing"] == ["xray", "ecg"]
    body = {"modalities": {"clin": {"age": 55, "sex": "X"}}}
    r = server.post("/v1/models/mm/predict", json=body, headers=auth(server))
    assert r.status_code == 200 and "not seen in training" in r.json()["warnings"][0]


def test_implausible_values_are_flagged_and_a_non_number_output_is_a_422(server):
    far = {"modalities": {"clin": {"age": 1e30, "sex": "F"}}}
    for route in ("predict", "explain"):  # the network overflows: no 500, a named 422
        r = server.post(f"/v1/models/mm/{route}", json=far, headers=auth(server))
        assert r.status_code == 422, (route, r.status_code, r.text)
        msg = r.json()["error"]
        assert "not a number" in msg and "clin.age" in msg and "1e+30" not in msg
    odd = {"modalities": {"clin": {"age": 900, "sex": "F"}}}  # a finite output: a warning
    r = server.post("/v1/models/mm/predict", json=odd, headers=auth(server))
    assert r.status_code == 200, r.text
    assert any("far outside the range" in w and "clin.age" in w for w in r.json()["warnings"])
    ok = {"modalities": {"clin": {"age": 61, "sex": "F"}}}
    r = server.post("/v1/models/mm/predict", json=ok, headers=auth(server))
    assert not any("far outside" in w for w in r.json()["warnings"])


def test_wfdb_signal_and_a_real_dicom_image(server, tmp_path):
    rng = np.random.default_rng(4)
    rec = write_wfdb(tmp_path, "A0042", _ecg(rng, 0), ["I", "II"], FS)
    files = [
        ("ecg", ("A0042.hea", Path(rec + ".hea").read_bytes(), "text/plain")),
        ("ecg", ("A0042.dat", Path(rec + ".dat").read_bytes(), "application/octet-stream")),
    ]
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    if ct is not None:
        files.append(("xray", ("ct.dcm", Path(ct).read_bytes(), "application/dicom")))
    r = server.post("/v1/models/mm/predict", files=files, headers=auth(server))
    assert r.status_code == 200, r.text
    used = r.json()["modalities"]["used"]
    assert "ecg" in used and ("xray" in used or ct is None)


def test_named_errors(server):
    h = auth(server)
    cases = [
        ({"modalities": {"clin": {"agee": 3}}}, "unknown field(s) 'agee'"),
        ({"modalities": {"clin": {"age": "old"}}}, "modality 'clin', field 'age': expected a"),
        ({"modalities": {"clin": {"age": True}}}, "field 'age': expected a number"),
        ({"modalities": {"labs": {"x": 1}}}, "'labs' is not a modality of model 'mm'"),
        ({"modalities": {"xray": "abc"}}, "modality 'xray' (image) takes files"),
        ({"modalities": {"clin": {"age": None}}}, "modality 'clin' (tabular): no field has"),
        ({"modalities": {}}, "no modality given"),
        ({"patient_id": ["a"], "modalities": {"clin": {"age": 3}}}, "patient_id: expected"),
        ({"modalities": {"notes": 12}}, "modality 'notes' (text): expected a text"),
        ({"modality": {}}, "body: unknown key(s) 'modality'"),
    ]
    for body, message in cases:
        r = server.post("/v1/models/mm/predict", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert message in r.json()["error"], (message, r.json())
        assert "Traceback" not in r.text
    r = server.post("/v1/models/mm/predict", content=b"{not json", headers={**h,
                    "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = server.post("/v1/models/mm/predict", content=b'{"modalities": {"clin": {"age": NaN}}}',
                    headers={**h, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422
    r = server.post("/v1/models/mm/predict", content=b"age=3", headers={**h,
                    "content-type": "text/plain"})  # fmt: skip
    assert r.status_code == 415


def test_upload_type_checked_by_extension_and_content(server, tmp_path):
    h = auth(server)
    png = Path(_png(tmp_path / "a.png", 1.0, np.random.default_rng(0))).read_bytes()
    cases = [
        (("x.png", b"\xff\xd8\xff" + b"0" * 400), "is not PNG"),  # a JPEG named .png
        (("x.dcm", png), "is not DICOM"),
        (("x.exe", png), "file type '.exe' not accepted"),
        (("x", png), "'(no extension)' not accepted"),
    ]
    for (name, data), message in cases:
        r = server.post("/v1/models/mm/predict", files=[("xray", (name, data))], headers=h)
        assert r.status_code == 422 and message in r.json()["error"], r.text
        assert "modality 'xray', file 1" in r.json()["error"]
    r = server.post("/v1/models/mm/predict", files=[("clin", ("c.csv", b"age\n1\n2\n"))],
                    headers=h)  # fmt: skip
    assert r.status_code == 422 and "one row" in r.json()["error"]


# pydicom warns about the garbage it parsed from the broken file (``holomed serve`` itself
# switches pydicom's reading validation off and keeps its logger to errors)
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
def test_broken_dicom_is_refused_with_a_clear_error(server):
    h = auth(server)
    broken = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7fgarbage" * 20
    r = server.post("/v1/models/mm/predict", files=[("xray", ("a.dcm", broken))], headers=h)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "modality 'xray', file 1" in err and "DICOM" in err and "Traceback" not in r.text
    import pydicom
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    if ct is None:
        pytest.skip("pydicom's CT_small.dcm is not available offline")
    ds = pydicom.dcmread(ct)
    ds.PixelData = ds.PixelData[:100]  # a valid header, pixel data cut short
    buf = io.BytesIO()
    ds.save_as(buf)
    r = server.post("/v1/models/mm/predict", files=[("xray", ("cut.dcm", buf.getvalue()))],
                    headers=h)  # fmt: skip
    assert r.status_code == 422, r.text
    assert "/tmp" not in r.json()["error"] and "holomed-upload" not in r.json()["error"]


def bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` zero pixels: a few hundred KB that decode to
    width * height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\0" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_without_decoding(server, monkeypatch):
    import holomed.io.images as images

    def never(*_a, **_k):
        raise AssertionError("a refused image was decoded")

    monkeypatch.setattr(images, "read_image", never)
    h = auth(server)
    for w, h_px, words in [(8000, 8000, "exceeds the limit"), (30000, 30000, "bomb")]:
        data = bomb_png(w, h_px)
        assert len(data) < 1_000_000
        r = server.post("/v1/models/mm/predict", files=[("xray", ("b.png", data))], headers=h)
        assert r.status_code == 413, r.text
        assert words in r.json()["error"] and "modality 'xray'" in r.json()["error"]


def test_file_count_and_size_limits(server):
    h = auth(server)
    files = [("notes", (f"n{k}.txt", b"stable")) for k in range(7)]
    r = server.post("/v1/models/mm/predict", files=files, headers=h)
    assert r.status_code == 413 and "max_files" in r.json()["error"]
    big = [("notes", ("n.txt", b"a " * 600_000))]
    r = server.post("/v1/models/mm/predict", files=big, headers=h)
    assert r.status_code == 413 and "max_file_bytes" in r.json()["error"]


def test_oversized_body_refused_before_it_is_read(server):
    """Content-Length over the limit: 413 and not one body byte received; a body without
    Content-Length: 413 as soon as the streamed bytes pass the limit."""
    app = server.app
    token = server.tokens["clinician"]

    async def call(headers: list, chunk: int) -> tuple[int, int]:
        got = {"calls": 0, "status": None}

        async def receive() -> dict:
            got["calls"] += 1
            return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

        async def send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                got["status"] = msg["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/models/syn/predict",
            "raw_path": b"/v1/models/syn/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-type", b"application/json"),
                *headers,
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return got["status"], got["calls"]

    status, calls = asyncio.run(call([(b"content-length", b"10000000000")], 65536))
    assert status == 413 and calls == 0
    status, calls = asyncio.run(call([], 65536))  # streamed, no length: stops at the limit
    assert status == 413 and calls == 2_000_000 // 65536 + 1


def test_oversized_body_over_a_real_socket(bundles, tmp_path):
    """uvicorn on loopback answers 413 to a 10 GB Content-Length after 1 KB was sent."""
    import uvicorn

    app = create_app({"syn": bundles["syn"]}, ServeSettings(**SETTINGS), db=str(tmp_path / "d.db"))
    _info, token = app.state.holomed.tokens.create("clinician")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /v1/models/syn/predict HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {token}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
                + b"{" * 1024
            )
            reply = s.recv(65536).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert "max_request_bytes" in reply and time.perf_counter() - t0 < 5
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.holomed.close()


# -- tokens, roles, rate limits ------------------------------------------------------------


def test_roles(server):
    checks = [
        ("GET", "/v1/models/syn/metrics", {"clinician": 403, "researcher": 200, "admin": 200}),
        ("GET", "/v1/audit/summary", {"clinician": 403, "researcher": 200, "admin": 200}),
        ("GET", "/v1/tokens", {"clinician": 403, "researcher": 403, "admin": 200}),
    ]
    for method, path, expect in checks:
        for role, status in expect.items():
            r = server.request(method, path, headers=auth(server, role))
            assert r.status_code == status, (path, role, r.text)
            if status == 403:
                assert f"role '{role}' may not" in r.json()["error"]
    bad = server.get("/v1/audit/summary?since=notadate", headers=auth(server, "researcher"))
    assert bad.status_code == 422 and "ISO" in bad.json()["error"]
    summary = server.get("/v1/audit/summary", headers=auth(server, "researcher")).json()
    assert summary["requests"] > 0 and summary["refused"] > 0
    assert "P-" not in json.dumps(summary)  # counts only, no pseudonyms
    tokens = server.get("/v1/tokens", headers=auth(server, "admin")).json()["tokens"]
    assert {t["role"] for t in tokens} >= {"clinician", "researcher", "admin"}
    assert "hash" not in json.dumps(tokens) and server.tokens["admin"] not in json.dumps(tokens)


def test_revoked_tokens_are_refused(server):
    admin = auth(server, "admin")
    r = server.post("/v1/tokens", json={"role": "clinician", "name": "to revoke"}, headers=admin)
    assert r.status_code == 201
    new = r.json()
    h = {"Authorization": f"Bearer {new['token']}"}
    assert server.get("/v1/models", headers=h).status_code == 200
    r = server.post(f"/v1/tokens/{new['id']}/revoke", headers=admin)
    assert r.status_code == 200 and r.json()["revoked"]
    assert server.get("/v1/models", headers=h).status_code == 401  # at once
    assert server.post("/v1/tokens", json={"role": "boss"}, headers=admin).status_code == 422
    extra = {"role": "clinician", "expires": "never"}  # an unknown key: refused, not ignored
    r = server.post("/v1/tokens", json=extra, headers=admin)
    assert r.status_code == 422 and "expires" in r.text
    # revoked from the command line (another process): refused within the cache time
    info, token = server.app_state.tokens.create("researcher")
    h = {"Authorization": f"Bearer {token}"}
    assert server.get("/v1/models", headers=h).status_code == 200
    res = CliRunner().invoke(tokens_app, ["revoke", info.id, "--db", str(server.db)])
    assert res.exit_code == 0, res.output
    time.sleep(SETTINGS["token_cache_seconds"] + 0.1)
    assert server.get("/v1/models", headers=h).status_code == 401


def test_rate_limit_per_token(bundles, tmp_path):
    app = create_app(
        {"syn": bundles["syn"]},
        ServeSettings(rate_limit_per_minute=3),
        db=str(tmp_path / "rl.db"),
    )
    _i, tok_a = app.state.holomed.tokens.create("clinician")
    _i, tok_b = app.state.holomed.tokens.create("clinician")
    with TestClient(app) as c:
        a, b = ({"Authorization": f"Bearer {t}"} for t in (tok_a, tok_b))
        assert [c.get("/v1/models", headers=a).status_code for _ in range(3)] == [200] * 3
        r = c.get("/v1/models", headers=a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.get("/v1/models", headers=b).status_code == 200  # per token


def test_hundred_bad_tokens_all_refused_and_audited(server):
    valid_id = server.ids["clinician"]
    bad = (
        [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer garbage"]
        + [f"Bearer hm_{k:012x}_{'A' * 43}" for k in range(60)]  # unknown ids
        + [f"Bearer hm_{valid_id}_{'B' * 40}{k:03d}" for k in range(10)]  # wrong secret
        + [f"Bearer {server.tokens['clinician']}x{k}" for k in range(25)]
    )
    assert len(bad) == 100
    before = len(audit_rows(server))
    t0 = time.perf_counter()
    for header in bad:
        r = server.post(
            "/v1/models/syn/predict",
            json={"patient_id": RAW_ID, "modalities": {"clinical": {"age": 50}}},
            headers={} if header is None else {"Authorization": header},
        )
        assert r.status_code == 401, header
    assert time.perf_counter() - t0 < 60
    rows = audit_rows(server)[before:]
    assert len(rows) == 100 and all(r["status"] == 401 for r in rows)
    assert all(r["endpoint"] == "POST /v1/models/{name}/predict" for r in rows)
    assert all(r["role"] is None and r["patient"] is None for r in rows)
    # a well-formed token's public id is kept (a wrong secret or a suffix): 10 + 25
    assert sum(r["token_id"] == valid_id for r in rows) == 35


# -- audit and privacy --------------------------------------------------------------------


def test_every_request_is_audited_without_raw_ids(server, bundles, caplog):
    caplog.set_level(logging.DEBUG)
    before = len(audit_rows(server))
    cohort = bundles["cohort"]
    body = {"patient_id": RAW_ID, "modalities": row_json(cohort, 0, ["clinical"])}
    statuses = [
        server.post("/v1/models/syn/predict", json=body, headers=auth(server)).status_code,
        server.post("/v1/models/syn/explain", json=body, headers=auth(server)).status_code,
        server.post("/v1/models/syn/predict", json=body).status_code,
        server.get("/v1/models/syn/metrics", headers=auth(server)).status_code,
        server.get("/no/such/path", headers=auth(server)).status_code,
        server.post(
            "/v1/models/syn/predict",
            json={"patient_id": RAW_ID, "modalities": {"clinical": {"age": "x"}}},
            headers=auth(server),
        ).status_code,  # fmt: skip
        server.get("/health").status_code,
    ]
    assert statuses == [200, 200, 401, 403, 404, 422, 200]
    rows = audit_rows(server)[before:]
    assert [r["status"] for r in rows] == statuses
    predict, explain, refused, forbidden, unknown, invalid, health = rows
    pseudonym = server.app_state.pseudonyms(RAW_ID)
    assert predict["patient"] == explain["patient"] == invalid["patient"] == pseudonym
    assert predict["endpoint"] == "POST /v1/models/{name}/predict"
    assert predict["model"] == "syn" and predict["bundle_hash"] == server.app_state.models[
        "syn"].hash  # fmt: skip
    assert json.loads(predict["modalities"]) == ["clinical"]
    assert predict["token_id"] == server.ids["clinician"] and predict["role"] == "clinician"
    assert predict["latency_ms"] > 0 and predict["time"].endswith("Z")
    assert refused["token_id"] is None and refused["patient"] is None
    assert forbidden["role"] == "clinician" and forbidden["model"] == "syn"
    assert unknown["endpoint"] == "GET (no route)" and health["endpoint"] == "GET /health"
    everything = json.dumps(audit_rows(server), default=str)
    assert RAW_ID not in everything and RAW_ID not in caplog.text
    for role, token in server.tokens.items():
        assert token not in everything and token.split("_", 2)[2] not in caplog.text, role
    assert verify_chain(server.app_state.engine).ok


def test_internal_errors_are_json_without_traceback_or_values(server, bundles, monkeypatch):
    served = server.app_state.models["syn"]

    def boom(*_a, **_k):
        raise RuntimeError(f"failed on patient '{RAW_ID}'")

    monkeypatch.setattr(served.model, "predict_proba", boom)
    body = {"patient_id": RAW_ID, "modalities": row_json(bundles["cohort"], 0, ["clinical"])}
    r = server.post("/v1/models/syn/predict", json=body, headers=auth(server))
    assert r.status_code == 500
    assert r.json() == {"error": "internal error while running the model (logged on the server)"}
    monkeypatch.setattr(served.model, "predict_proba", lambda *_a, **_k: 1 / 0)
    r = server.post("/v1/models/syn/predict", json=body, headers=auth(server))
    assert r.status_code == 500 and "Traceback" not in r.text and RAW_ID not in r.text

    def named(*_a, **_k):
        raise ValueError(f"id '{RAW_ID}'")

    monkeypatch.setattr(served.model, "predict_proba", named)
    r = server.post("/v1/models/syn/predict", json=body, headers=auth(server))
    assert r.status_code == 422 and RAW_ID not in r.text and "<value>" in r.json()["error"]


def test_pseudonyms_under_the_site_key(bundles, tmp_path, monkeypatch):
    key = "k" * 40
    monkeypatch.setenv("HOLOMED_PRIVACY_KEY", key)
    app = create_app({"syn": bundles["syn"]}, ServeSettings(), db=str(tmp_path / "k.db"))
    _i, tok = app.state.holomed.tokens.create("clinician")
    body = {"patient_id": f"  {RAW_ID} ", "modalities": {"clinical": {"age": 60}}}
    with TestClient(app) as c:
        r = c.post("/v1/models/syn/predict", json=body, headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == PrivacyKey(key.encode()).pseudonym(RAW_ID)
    assert r.json()["pseudonym_key"] == "site"


def test_serve_command_builds_the_app_and_runs_uvicorn(bundles, tmp_path, monkeypatch):
    import pydicom
    import typer
    import uvicorn

    from holomed.serve.cli import serve_app

    # the command switches pydicom's reading validation off for the process: restore it
    monkeypatch.setattr(
        pydicom.config.settings,
        "reading_validation_mode",
        pydicom.config.settings.reading_validation_mode,
    )
    seen = {}

    def fake_run(app, **kw):
        seen["app"], seen["kw"] = app, kw

    monkeypatch.setattr(uvicorn, "run", fake_run)
    res = CliRunner().invoke(
        serve_app,
        [str(bundles["syn"]), f"mm={bundles['mm']}", "--db", str(tmp_path / "s.db"),
         "--port", "8123", "--rate-limit", "50"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    state = seen["app"].state.holomed
    assert set(state.models) == {"syn", "mm"} and state.settings.rate_limit_per_minute == 50
    assert seen["kw"]["port"] == 8123 and seen["kw"]["host"] == "127.0.0.1"
    assert "random key" in res.output
    state.close()
    res = CliRunner().invoke(serve_app, [str(tmp_path / "missing"), "--db", str(tmp_path / "s.db")])
    assert res.exit_code == 2 and "error:" in res.output
    assert isinstance(serve_app, typer.Typer)


def test_survival_bundle_gives_risk_and_survival_at_the_horizons(tmp_path):
    from holomed.synthetic import synthetic_survival_spec_dict

    spec = parse_spec(synthetic_survival_spec_dict(n_patients=200, seed=2))
    cohort = load_cohort(spec)
    model = make_candidate(spec, "cox", 0).fit(cohort)
    card = {"metrics_test": {"c_index": {"value": 0.7, "ci": [0.6, 0.8]}}}
    model.save(tmp_path / "surv", card=card)
    app = create_app({"surv": tmp_path / "surv"}, ServeSettings(), db=str(tmp_path / "s.db"))
    _i, tok = app.state.holomed.tokens.create("researcher")
    h = {"Authorization": f"Bearer {tok}"}
    i = full_patients(cohort)[0]
    body = {"modalities": row_json(cohort, i, list(cohort.modalities))}
    with TestClient(app) as c:
        r = c.post("/v1/models/surv/predict", json=body, headers=h)
        details = c.get("/v1/models/surv", headers=h).json()
    assert r.status_code == 200, r.text
    out = r.json()
    expect = load_bundle(tmp_path / "surv").predict_proba(cohort.subset([i]))[0]
    assert out["risk"] == pytest.approx(expect[0], abs=1e-9)
    assert list(out["survival"]) == ["3", "6", "12"] and out["time_unit"] == "months"
    assert out["survival"]["12"] == pytest.approx(expect[3], abs=1e-9)
    assert "probabilities" not in out
    assert details["horizons"] == [3, 6, 12]
    assert details["metrics"]["metrics_test"]["c_index"]["ci"] == [0.6, 0.8]


def test_time_series_as_json_observations(tmp_path):
    from kinds_examples import timeseries

    ex = timeseries(tmp_path)
    model = make_candidate(ex.spec, "late", 0).fit(ex.cohort)
    model.save(tmp_path / "ts")
    app = create_app({"ts": tmp_path / "ts"}, ServeSettings(), db=str(tmp_path / "t.db"))
    _i, tok = app.state.holomed.tokens.create("clinician")
    h = {"Authorization": f"Bearer {tok}"}
    i = int(np.nonzero(ex.cohort.modalities["m"].present)[0][0])
    events = ex.cohort.modalities["m"].values.iloc[i]["events"].frame()
    obs = [
        {"time": float(t), "variable": str(v), "value": float(x)}
        for t, v, x in events.itertuples(index=False)
    ]
    with TestClient(app) as c:
        r = c.post("/v1/models/ts/predict", json={"modalities": {"m": obs}}, headers=h)
        bad = c.post("/v1/models/ts/predict", json={"modalities": {"m": [{"time": 1}]}}, headers=h)
        details = c.get("/v1/models/ts", headers=h).json()
    assert r.status_code == 200, r.text
    one = ex.cohort.subset([i])
    pres = {k: v.copy() for k, v in one.presence().items()}
    pres["clin"][:] = False
    expect = load_bundle(tmp_path / "ts").predict_proba(one.with_presence(pres))[0]
    np.testing.assert_allclose(list(r.json()["probabilities"].values()), expect, atol=1e-6)
    assert r.json()["modalities"]["missing"] == ["clin"]
    assert bad.status_code == 422 and "observation 0" in bad.json()["error"]
    assert set(details["expects"]["m"]["variables"]) == {"hr", "lactate"}


def test_error_messages_carry_no_memory_addresses():
    from holomed.serve.app import _clean_message

    msg = _clean_message(ValueError("cannot decode <_io.BytesIO object at 0x7ff5e45769d0>"))
    assert "0x7ff5" not in msg and msg == "cannot decode <object>"
