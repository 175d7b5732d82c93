"""The clinician web page (:mod:`holomed.serve.web`) on a tiny bundle trained here (a
table, an image and notes): sign-in, sessions, CSRF and roles, the strict CSP, a
prediction through the form that equals the API's, upload errors next to their field,
the audit row of every page, and a real browser (Playwright driving Debian's
``chromium``, never a downloaded one) that signs in, uploads a DICOM and a table, reads
the risk and the contributions, checks the "missing" mark, prints the one-page report
and is refused the admin page.

Screenshots go to ``$HOLOMED_ARTIFACTS`` (else the test's tmp folder) and, when it is
set, also to ``$HOLOMED_WEB_SCREENSHOTS``."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import select

from holomed.candidates import make_candidate
from holomed.cohort import build_cohort
from holomed.serve.audit import audit_table
from holomed.serve.server import create_app
from holomed.serve.settings import ServeSettings
from holomed.serve.web import CSP
from holomed.spec import parse_spec

RAW_ID = "MRN-WEB-7731"
N = 32
SETTINGS = dict(
    max_request_bytes=2_000_000,
    max_file_bytes=1_000_000,
    max_files=6,
    rate_limit_per_minute=100_000,
    token_cache_seconds=0.5,
)


# -- the bundle and the app ---------------------------------------------------------------


def web_bundle(folder: Path) -> Path:
    """A neural 'late' fusion over vitals (age, sbp, sex), a 16x16 grey image (8x8 for
    the CNN) and notes: the smallest model with a table, an image and a third modality
    to leave missing."""
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

    def png(path: Path, bright: int) -> str:
        a = rng.normal(60, 10, (16, 16))
        a[4:12, 4:12] += bright * 120
        PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
        return str(path)

    images = pd.DataFrame(
        {"paths": [[png(folder / f"{p}.png", y[i])] for i, p in enumerate(ids)]}, index=ids
    )
    words = (["stable", "improving", "afebrile"], ["septic", "hypotensive", "confused"])
    notes = pd.DataFrame({"id": ids, "text": [" ".join(rng.choice(words[k], 3)) for k in y]})
    spec = parse_spec(
        {
            "dataset": "web_test",
            "modalities": [
                {"name": "vitals", "kind": "tabular",
                 "encoder": {"name": "mlp", "options": {"hidden": [8]}}},
                {"name": "ct", "kind": "image", "preprocessing": {"size": [8, 8]},
                 "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4]}}},
                {"name": "notes", "kind": "text",
                 "preprocessing": {"method": "tfidf", "dim": 4, "min_df": 1},
                 "encoder": {"name": "text_pool", "options": {"hidden": 8}}},
            ],
            "target": {"column": "y", "classes": ["stable", "deteriorated"]},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 1, "batch_size": 16, "val_fraction": 0.0, "lr": 0.01},
        },
        where="web test",
    )  # fmt: skip
    labels = pd.DataFrame({"y": np.array(["stable", "deteriorated"])[y]}, index=ids)
    cohort = build_cohort(spec, {"vitals": vitals, "ct": images, "notes": notes}, labels)
    model = make_candidate(spec, "late", 0).fit(cohort)
    return Path(model.save(folder / "icu" / "bundle"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return web_bundle(tmp_path_factory.mktemp("web_bundle"))


def make_app(bundle: Path, folder: Path):
    app = create_app({"icu": bundle}, ServeSettings(**SETTINGS), db=str(folder / "serve.db"))
    tokens = {r: app.state.holomed.tokens.create(r, f"web {r}")[1] for r in
              ("clinician", "researcher", "admin")}  # fmt: skip
    return app, tokens


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """(app, {role: token}); the app's lifespan runs around the module's tests."""
    app, tokens = make_app(bundle, tmp_path_factory.mktemp("web_state"))
    with TestClient(app):
        yield app, tokens


def client(app) -> TestClient:
    """A fresh 'browser' (its own cookies) on the app; no lifespan of its own."""
    return TestClient(app, base_url="http://testserver")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(app, token: str) -> TestClient:
    c = client(app)
    page = c.get("/web/login")
    r = c.post("/web/login", data={"csrf": csrf_of(page.text), "token": token},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    return c


def ct_small() -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom's CT_small.dcm is not available offline")
    return Path(path).read_bytes()


def audit_rows(app) -> list[dict]:
    state = app.state.holomed
    assert state.audit.flush(10)
    with state.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_table)).mappings()]


class Page(HTMLParser):
    """The parts of a page the checks need: labels, form controls, headings, <html lang>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.labels: set[str] = set()
        self.controls: list[dict] = []
        self.headings: list[int] = []
        self.lang = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))


def assert_accessible(html: str, where: str) -> None:
    """``<html lang>``, a label for every form control, headings that start at h1 and
    never skip a level."""
    page = Page(html)
    assert page.lang == "en", where
    unlabelled = [a for a in page.controls if a.get("id") not in page.labels]
    assert not unlabelled, (where, unlabelled)
    h = page.headings
    assert h and h[0] == 1 and all(b <= a + 1 for a, b in zip(h, h[1:], strict=False)), (where, h)


def field_block(html: str, field_id: str) -> str:
    """The ``<div class="field ...">`` that holds the control ``field_id``."""
    start = html.rfind('<div class="field', 0, html.index(f'id="{field_id}"'))
    return html[start : html.index("</div>", html.index(f'id="{field_id}"'))]


# -- sign-in, sessions, headers, roles ------------------------------------------------------


def test_sign_in_with_a_wrong_token_shows_the_error_by_the_field(server):
    app, tokens = server
    c = client(app)
    r = c.get("/web/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/web/login"
    page = c.get("/web/login")
    for wrong in ("hm_000000000000_" + "x" * 43, tokens["clinician"][:-2] + "zz", "nonsense"):
        r = c.post("/web/login", data={"csrf": csrf_of(page.text), "token": wrong},
                   follow_redirects=False)  # fmt: skip
        assert r.status_code == 401, r.text
        block = field_block(r.text, "token")
        assert "not valid or was revoked" in block and 'aria-invalid="true"' in block
        assert wrong not in r.text  # the token is never echoed back
        assert "holomed_session" not in r.headers.get("set-cookie", "")
        page = r  # each sign-in form carries a fresh CSRF token
    r = c.post("/web/login", data={"csrf": csrf_of(page.text), "token": ""})
    assert r.status_code == 422 and "Enter your access token" in r.text
    # the sign-in form's CSRF token must match its cookie
    r = client(app).post("/web/login", data={"csrf": "forged", "token": tokens["clinician"]})
    assert r.status_code == 400 and "holomed_session" not in r.headers.get("set-cookie", "")


def test_session_cookie_csp_and_no_remote_resources(server):
    app, tokens = server
    c = client(app)
    page = c.get("/web/login")
    r = c.post("/web/login", data={"csrf": csrf_of(page.text), "token": tokens["clinician"]},
               follow_redirects=False)  # fmt: skip
    cookie = r.headers["set-cookie"]
    assert "holomed_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/web" in cookie
    assert tokens["clinician"] not in cookie and tokens["clinician"] not in r.headers["location"]
    for path in ("/web/login", "/web/", "/web/models/icu"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        h = r.headers
        assert h["content-security-policy"] == CSP
        assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert h["cache-control"] == "no-store" and h["x-frame-options"] == "DENY"
        assert not re.search(r'(?:src|href|action)="(?:https?:)?//', r.text), path
        assert "<script>" not in r.text and " style=" not in r.text  # nothing inline
        assert_accessible(r.text, path)
    css = c.get("/web/static/web.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media print" in css.text and ":focus-visible" in css.text
    assert c.get("/web/static/../app.py").status_code == 404
    assert c.get("/web/static/nope.css").status_code == 404


def test_clinician_gets_403_on_admin_pages_and_an_admin_manages_tokens(server):
    app, tokens = server
    clin = sign_in(app, tokens["clinician"])
    for c, role in ((clin, "clinician"), (sign_in(app, tokens["researcher"]), "researcher")):
        r = c.get("/web/admin/tokens")
        assert r.status_code == 403 and f"Your role ({role}) may not" in r.text
        assert_accessible(r.text, "403 page")
        assert 'href="/web/admin/tokens"' not in c.get("/web/").text  # no link to it either
        csrf = csrf_of(c.get("/web/").text)
        r = c.post("/web/admin/tokens", data={"csrf": csrf, "role": "admin"})
        assert r.status_code == 403
    admin = sign_in(app, tokens["admin"])
    page = admin.get("/web/admin/tokens")
    assert page.status_code == 200 and "web clinician" in page.text
    assert_accessible(page.text, "token page")
    r = admin.post("/web/admin/tokens", data={"csrf": csrf_of(page.text), "role": "clinician",
                                               "name": "ward 7"})  # fmt: skip
    assert r.status_code == 200
    new = re.search(r'id="new-token" type="text" readonly value="([^"]+)"', r.text).group(1)
    assert new.startswith("hm_")
    ward = sign_in(app, new)
    assert ward.get("/web/").status_code == 200
    tid = new.split("_")[1]
    r = admin.post(f"/web/admin/tokens/{tid}/revoke", data={"csrf": csrf_of(r.text)},
                   follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    r = ward.get("/web/", follow_redirects=False)  # revoked here: its session ends at once
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
    r = admin.post("/web/admin/tokens", data={"csrf": "wrong", "role": "admin"})
    assert r.status_code == 400  # CSRF token checked
    roles = {(row["endpoint"], row["role"], row["status"]) for row in audit_rows(app)}
    assert ("GET /web/admin/tokens", "clinician", 403) in roles
    assert ("GET /web/admin/tokens", "admin", 200) in roles


def test_sign_out_and_cross_site_posts(server):
    app, tokens = server
    c = sign_in(app, tokens["clinician"])
    csrf = csrf_of(c.get("/web/models/icu").text)
    r = c.post("/web/models/icu/predict", data={"csrf": csrf, "m0.c0": "70"},
               headers={"Origin": "https://evil.example"})  # fmt: skip
    assert r.status_code == 403 and "another site" in r.text
    r = c.post("/web/models/icu/predict", data={"csrf": "nope", "m0.c0": "70"})
    assert r.status_code == 400 and "expired" in r.text
    r = c.post("/web/logout", data={"csrf": csrf})
    assert r.status_code == 200 and "signed out" in r.text
    r = c.get("/web/", follow_redirects=False)
    assert r.status_code == 303 and "/web/login" in r.headers["location"]


# -- predictions through the form ----------------------------------------------------------


def test_a_prediction_through_the_form_equals_the_api_and_is_audited(server):
    app, tokens = server
    c = sign_in(app, tokens["clinician"])
    form = c.get("/web/models/icu")
    assert "Accepted files: DICOM (.dcm)" in form.text and 'name="m0.c2"' in form.text
    assert ">age <" in form.text and "Free text of the clinical note" in form.text
    dcm = ct_small()
    data = {"csrf": csrf_of(form.text), "patient_id": RAW_ID, "m0.c0": "71", "m0.c1": "",
            "m0.c2": "F", "m2.text": ""}  # fmt: skip
    files = [("m1.file", ("scan.dcm", dcm, "application/dicom")),
             ("m0.file", ("", b"", "application/octet-stream"))]  # fmt: skip
    t0 = time.perf_counter()
    r = c.post("/web/models/icu/predict", data=data, files=files)
    assert r.status_code == 200, r.text
    assert time.perf_counter() - t0 < 20
    html = r.text
    risk = float(re.search(r'id="risk" data-value="([^"]+)"', html).group(1))
    api = c.post(
        "/v1/models/icu/explain",
        data={"patient_id": RAW_ID, "modalities": json.dumps({"vitals": {"age": 71, "sex": "F"}})},
        files=[("ct", ("scan.dcm", dcm, "application/dicom"))],
        headers={"Authorization": f"Bearer {tokens['clinician']}"},
    ).json()
    assert risk == pytest.approx(api["probabilities"]["deteriorated"], abs=1e-9)
    assert f"{100 * risk:.1f} %" in html and "Risk of deteriorated" in html
    bars = dict(re.findall(r'data-modality="(\w+)" data-status="used" data-contribution="([^"]+)"',
                           html))  # fmt: skip
    assert set(bars) == {"vitals", "ct"}
    for m, v in bars.items():
        assert float(v) == pytest.approx(api["contributions"]["modalities"][m]["shapley"])
    assert re.search(r'data-modality="notes" data-status="missing"', html)
    assert "MISSING: not given" in html
    assert "calibration-note" in html and "Intended use:" in html
    assert api["patient"] in html and RAW_ID not in html
    assert_accessible(html, "result page")
    assert 'class="map map-image" data-modality="ct"' in html and "data:image/png;base64," in html
    rows = [x for x in audit_rows(app) if x["endpoint"] == "POST /web/models/{name}/predict"]
    last = rows[-1]
    assert last["status"] == 200 and last["role"] == "clinician" and last["model"] == "icu"
    assert last["patient"] == api["patient"] and len(last["bundle_hash"]) == 64
    assert sorted(json.loads(last["modalities"]) if isinstance(last["modalities"], str)
                  else last["modalities"]) == ["ct", "vitals"]  # fmt: skip
    assert RAW_ID not in json.dumps(audit_rows(app), default=str)


def evidence_block(html: str) -> str:
    """The evidence draft's section, entities decoded."""
    from html import unescape

    start = html.index('id="evidence-draft"')
    return unescape(html[start : html.index("</section>", start)])


def test_the_result_page_shows_a_labelled_evidence_draft(server):
    """The evidence draft (holomed.generative.evidence) on the result page: labelled, its
    numbers those of the page, the missing modality named, no inline script or style; a
    subgroup caveat only when the audit has one for the patient's group."""
    from holomed.generative.evidence import EVIDENCE_LABEL

    app, tokens = server
    c = sign_in(app, tokens["clinician"])

    def predict(sex: str) -> str:
        form = c.get("/web/models/icu")
        data = {"csrf": csrf_of(form.text), "patient_id": RAW_ID, "m0.c0": "66", "m0.c1": "",
                "m0.c2": sex, "m2.text": ""}  # fmt: skip
        r = c.post("/web/models/icu/predict", data=data)
        assert r.status_code == 200, r.text
        assert r.headers["content-security-policy"] == CSP
        return r.text

    html = predict("F")
    assert_accessible(html, "result page with the evidence draft")
    block = evidence_block(html)
    assert EVIDENCE_LABEL in block and 'id="evidence-label"' in block
    assert "no language model" in block
    risk = float(re.search(r'id="risk" data-value="([^"]+)"', html).group(1))
    first = re.search(r'<li data-kind="prediction">([^<]+)', block).group(1)
    assert f"{100 * risk:.1f} %" in first and "deteriorated" in first
    missing = re.search(r'<li data-kind="missing">([^<]+)', block).group(1)
    assert "Not available for this patient: ct, notes." in missing
    assert "/prediction/modalities/missing" in block  # each sentence lists its sources
    assert "subgroup_caveat" not in block and "No subgroup audit" in block
    assert "<script" not in block and "style=" not in block
    assert RAW_ID not in block

    # an audit in the card: the F group too small to judge, M adequate and not flagged
    m = app.state.holomed.models["icu"]
    m.card["fairness"] = {
        "min_group": 20,
        "attributes": {
            "sex": {
                "groups": {"F": {"n": 4, "too_small": True}, "M": {"n": 28, "too_small": False}},
                "gaps": {"note": "fewer than two groups large enough to compare"},
                "binned": False,
            }
        },
    }
    try:
        block = evidence_block(predict("F"))
        caveat = re.search(r'<li data-kind="subgroup_caveat" class="caveat">([^<]+)', block)
        assert caveat and "only 4 test patients had sex F" in caveat.group(1)
        block = evidence_block(predict("M"))
        assert "subgroup_caveat" not in block
        assert "flagged nothing for this patient's groups (sex M)" in block
    finally:
        del m.card["fairness"]


# pydicom warns about the garbage it parsed from the broken file below
@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")
@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
def test_upload_errors_are_shown_next_to_their_field(server):
    app, tokens = server
    c = sign_in(app, tokens["clinician"])
    csrf = csrf_of(c.get("/web/models/icu").text)
    dcm = ct_small()
    r = c.post(
        "/web/models/icu/predict",
        data={
            "csrf": csrf,
            "patient_id": RAW_ID,
            "m0.c0": "old",
            "m0.c1": "120",
            "m2.text": "septic",
        },
        files=[("m1.file", ("scan.png", dcm, "image/png"))],
    )
    assert r.status_code == 422, r.text
    html = r.text
    assert "Traceback" not in html and "/tmp" not in html
    age = field_block(html, "f-m0-c0")
    assert_accessible(html, "form with errors")
    assert "Expected a number" in age and 'aria-invalid="true"' in age and 'value="old"' in age
    scan = field_block(html, "f-m1-file")
    assert "is not PNG" in scan and "looks like dicom" in scan
    assert "xpected a number" not in field_block(html, "f-m0-c1")  # sbp was fine
    assert "septic" in field_block(html, "f-m2-text")  # what was typed is kept,
    assert RAW_ID not in html  # except the raw patient id
    start = html.index('id="error-summary"')
    summary = html[start : html.index("</div>", start)]
    assert 'href="#f-m0-c0"' in summary and "vitals, age" in summary
    assert 'href="#f-m1-file"' in summary
    # a CSV with two rows, a table given twice, nothing at all, a broken DICOM
    cases = [
        ({"patient_id": "x" * 300, "m0.c0": "70"}, [], "f-patient_id", "1 to 256 characters"),
        ({}, [("m0.file", ("v.csv", b"age,sbp\n1,2\n3,4\n", "text/csv"))], "f-m0-file", "one row"),
        ({"m0.c0": "70"}, [("m0.file", ("v.csv", b"age\n1\n", "text/csv"))], "f-m0-file",
         "not both"),
        ({}, [("m1.file", ("a.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00" * 10, "x"))],
         "f-m1-file", "DICOM"),
    ]  # fmt: skip
    for data, files, fid, message in cases:
        r = c.post("/web/models/icu/predict", data={"csrf": csrf, **data}, files=files)
        assert r.status_code == 422, (fid, r.text)
        assert message in field_block(r.text, fid), (fid, message)
    r = c.post("/web/models/icu/predict", data={"csrf": csrf}, files=[("m1.file", ("", b""))])
    assert r.status_code == 422 and "Give at least one modality" in r.text
    # a form whose upload was cut before its closing boundary: said, nothing predicted
    b = "cutweb0"
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="m0.c0"\r\n\r\n70\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="m2.text"\r\n\r\nsep'
    ).encode()
    ctype = {"content-type": f"multipart/form-data; boundary={b}"}
    r = c.post("/web/models/icu/predict", content=body, headers=ctype)
    assert r.status_code == 422 and "cut short" in r.text, r.text[:300]
    r = c.post("/web/models/icu/predict", content=body + f"\r\n--{b}--\r\n".encode(),
               headers=ctype)  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    r = c.post("/web/models/nope/predict", data={"csrf": csrf})
    assert r.status_code == 404 and "no model named" in r.text


# -- a real browser ------------------------------------------------------------------------


def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    reason = None
    if exe is None:
        reason = "headless Chromium not installed (Debian: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright not installed (pip install playwright; never 'playwright install')"
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(reason + "; CI must run the browser test")
        pytest.skip(reason)
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live(app) -> tuple[object, threading.Thread, str]:
    """(server, its thread, base URL): ``app`` under uvicorn on a free local port."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    return srv, thread, f"http://127.0.0.1:{port}"


def _wait_started(srv) -> None:
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"


def _shots(tmp_path: Path) -> list[Path]:
    out = [Path(os.environ.get("HOLOMED_ARTIFACTS") or tmp_path) / "web"]
    if os.environ.get("HOLOMED_WEB_SCREENSHOTS"):
        out.append(Path(os.environ["HOLOMED_WEB_SCREENSHOTS"]))
    for d in out:
        d.mkdir(parents=True, exist_ok=True)
    return out


def test_browser_sign_in_upload_read_the_result_and_no_admin(bundle, tmp_path):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    app, tokens = make_app(bundle, tmp_path)
    srv, thread, base = _live(app)
    folders = _shots(tmp_path)
    dcm = tmp_path / "CT_small.dcm"
    dcm.write_bytes(ct_small())
    problems: list[str] = []

    def shot(page, name: str, **kw) -> None:
        page.screenshot(path=str(folders[0] / name), **kw)
        for d in folders[1:]:
            shutil.copy(folders[0] / name, d / name)

    try:
        _wait_started(srv)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                headless=True,
                executable_path=exe,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # script errors, CSP refusals and failed style/script/image loads (a page's own
            # 401/403/422 status is part of the test, and the console reports it too)
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status}: {r.url}")
                    if r.status >= 400 and r.request.resource_type != "document"
                    else None
                ),
            )

            # sign in: a wrong token first (the error sits by the field), then the right one
            page.goto(base + "/web/")
            assert page.url.endswith("/web/login")
            page.keyboard.press("Tab")  # keyboard: the skip link comes first
            assert page.evaluate("document.activeElement.className") == "skip"
            page.fill("#token", "hm_000000000000_" + "x" * 43)
            page.press("#token", "Enter")
            page.wait_for_selector("#token-error")
            assert "not valid" in page.inner_text("#token-error")
            shot(page, "web_01_sign_in_error.png")
            page.fill("#token", tokens["clinician"])
            page.press("#token", "Enter")
            page.wait_for_url(base + "/web/")
            shot(page, "web_02_models.png", full_page=True)

            # pick the model, enter vitals, upload the DICOM, leave the notes empty
            page.click("text=Enter a patient for icu")
            page.wait_for_selector("#predict")
            page.fill("#f-patient_id", RAW_ID)
            page.fill("#f-m0-c0", "old")  # a mistake first: shown by the field
            page.set_input_files(
                "#f-m1-file",
                files=[{"name": "scan.png", "mimeType": "image/png", "buffer": dcm.read_bytes()}],
            )
            page.click("#predict")
            page.wait_for_selector("#error-summary")
            assert "Expected a number" in page.inner_text("#f-m0-c0-error")
            assert "is not PNG" in page.inner_text("#f-m1-file-error")
            assert RAW_ID not in page.content()  # the raw id is not sent back
            shot(page, "web_03_upload_errors.png", full_page=True)
            page.fill("#f-patient_id", RAW_ID)
            page.fill("#f-m0-c0", "71")
            page.fill("#f-m0-c1", "142")
            page.select_option("#f-m0-c2", "F")
            page.set_input_files("#f-m1-file", str(dcm))
            shot(page, "web_04_form.png", full_page=True)
            page.click("#predict")
            page.wait_for_selector("#risk", timeout=30_000)

            risk_text = page.inner_text("#risk")
            risk = float(page.get_attribute("#risk", "data-value"))
            assert 0.0 <= risk <= 1.0 and risk_text == f"{100 * risk:.1f} %"
            bars = page.query_selector_all("#contributions g.bar")
            contrib = {
                b.get_attribute("data-modality"): (
                    b.get_attribute("data-status"),
                    b.get_attribute("data-contribution"),
                    b.text_content(),
                )
                for b in bars
            }
            assert set(contrib) == {"vitals", "ct", "notes"}
            assert contrib["vitals"][0] == "used" and contrib["ct"][0] == "used"
            for m in ("vitals", "ct"):
                v = float(contrib[m][1])
                assert f"{100 * v:+.1f} pts" in contrib[m][2]  # the bar's label says it too
            assert contrib["notes"][0] == "missing" and contrib["notes"][1] == ""
            mark = page.inner_text('li[data-modality="notes"]')
            assert "MISSING" in mark
            assert page.is_visible('figure[data-modality="ct"] img')
            assert (
                page.evaluate(
                    "document.querySelector('figure[data-modality=\"ct\"] img').naturalWidth"
                )
                > 100
            )  # the saliency overlay decoded
            assert RAW_ID not in page.content()
            assert page.is_visible("button[data-print]")  # the script ran under the CSP
            shot(page, "web_05_result.png", full_page=True)

            # the printable report: one A4 page, without navigation
            page.emulate_media(media="print")
            page.set_viewport_size({"width": 720, "height": 1000})  # A4 less margins, at 96 dpi
            shot(page, "web_06_print.png", full_page=True)
            assert not page.is_visible("header.site")
            pdf = page.pdf(format="A4", print_background=True)
            pages = re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)
            assert len(pages) == 1, f"the printed report has {len(pages)} pages"
            page.emulate_media(media="screen")
            page.set_viewport_size({"width": 1100, "height": 900})

            # a clinician cannot reach the admin page
            resp = page.goto(base + "/web/admin/tokens")
            assert resp.status == 403
            assert "may not open this page" in page.inner_text("main")
            shot(page, "web_07_admin_refused.png")
            browser.close()
        assert not problems, problems
    finally:
        srv.should_exit = True
        thread.join(10)
        app.state.holomed.close()


def test_result_views_of_other_tasks():
    """The headline, interval, calibration note and chart of multiclass, survival and
    regression answers (the page renders what the API returns; nothing is recomputed)."""
    from types import SimpleNamespace

    from holomed.serve.web import contribution_chart, risk_view

    m = SimpleNamespace(classes=["a", "b", "c"])
    v = risk_view(m, {"task": "multiclass", "probabilities": {"a": 0.2, "b": 0.7, "c": 0.1},
                      "predicted": "b", "calibration": "temperature"})  # fmt: skip
    assert v["headline"] == "70.0 %" and v["label"] == "Most likely: b"
    assert "temperature scaling" in v["note"] and len(v["rows"]) == 3
    v = risk_view(m, {"task": "survival", "risk": 0.42, "survival": {"30": 0.9, "90": 0.75},
                      "time_unit": "days"})  # fmt: skip
    assert v["headline"] == "0.42" and ("Survival at 30 days", "90.0 %") in v["rows"]
    assert v["note"] is None  # no calibration claimed where the API gives none
    assert risk_view(m, {"task": "regression", "prediction": 5.25})["headline"] == "5.25"
    v = risk_view(SimpleNamespace(classes=["no", "yes"]),
                  {"task": "binary", "probabilities": {"no": 0.8, "yes": 0.2},
                   "calibration": "none", "interval": [0.1, 0.3]})  # fmt: skip
    assert v["headline"] == "20.0 %" and v["interval"] == "10.0 % to 30.0 %"
    assert "Not recalibrated" in v["note"]
    chart = contribution_chart(
        {"contributions": {"modalities": {"x": {"shapley": -0.2}, "y": {"shapley": 0.1}},
                           "base": 0.1, "value": 0.0, "score": "risk score"}},
        {"x": "used", "y": "used", "z": "missing"},
        "survival",
    )  # fmt: skip
    x, y, z = chart["bars"]
    assert x.x + x.width == pytest.approx(chart["zero"]) and not x.positive
    assert y.x == pytest.approx(chart["zero"]) and y.width == pytest.approx(x.width / 2)
    assert z.value is None and "missing" in z.label and chart["unit"] == "score units"


def test_api_docs_render_in_a_browser_with_nothing_from_a_cdn(bundle, tmp_path):
    """/docs is Swagger UI whose script and style the app serves itself: on an offline
    network it renders, and every request the page makes goes to the app."""
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    app = create_app(
        {"icu": bundle}, ServeSettings(**SETTINGS), db=str(tmp_path / "s.db"), public_docs=True
    )
    srv, thread, base = _live(app)
    urls: list[str] = []
    problems: list[str] = []
    try:
        _wait_started(srv)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                headless=True, executable_path=exe, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            page.on("request", lambda r: urls.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(base + "/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
            assert "holomed" in page.inner_text(".swagger-ui .info .title").lower()
            page.wait_for_selector(".opblock-summary-path", timeout=15000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("predict" in t.replace("\u200b", "") for t in paths), paths
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    assert not problems, problems
    assert urls and all(u.startswith(base) for u in urls), [u for u in urls if base not in u]
    assert f"{base}/docs/static/swagger-ui-bundle.js" in urls


def test_docs_assets_are_only_the_listed_files(server):
    app, _ = server
    c = client(app)
    js = c.get("/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for bad in ("redoc.standalone.js", "..%2F__init__.py", "index.html"):
        assert c.get(f"/docs/static/{bad}").status_code == 404
