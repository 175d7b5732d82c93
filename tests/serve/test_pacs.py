"""Images from a real PACS: Debian's Orthanc with its DICOMweb plugin, started here on
loopback (skipped with the reason when it is absent, a failure when ``CI=true``), holding
studies made from pydicom's test files. A cohort reads its image modality from
``source: dicomweb://...`` (a patient without a study is absent with the reason), a
model trained on it is served, and a prediction by accession number equals the one from
uploading the same file; the PACS down or refusing the credentials gives a clear error,
never a traceback, and no accession number, password or raw id leaks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from holomed.candidates import make_candidate
from holomed.cohort import load_cohort
from holomed.errors import CohortError
from holomed.io.dicomweb import (
    Credentials,
    Limits,
    NoImageSeries,
    OverLimit,
    Pacs,
    load_credentials,
    parse_options,
    parse_url,
)
from holomed.io.images import read_image
from holomed.serve.audit import audit_table
from holomed.serve.server import create_app
from holomed.serve.settings import ServeSettings
from holomed.spec import SpecError, parse_spec

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "holomed", "pw-7f3a-secret"
N_STUDIES = 10  # patients P01..P10 have a study; P11 has none, P12 a wildcard accession


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _orthanc_binary() -> str | None:
    for cand in ("/usr/sbin/Orthanc", shutil.which("Orthanc")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


class Server:
    def __init__(self, port: int, folder: Path) -> None:
        import requests

        self.port = port
        self.folder = folder
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"dicomweb://127.0.0.1:{port}/dicom-web"
        self.http = requests.Session()
        self.http.auth = (USER, PASSWORD)

    def store(self, ds) -> None:
        """POST one pydicom dataset to Orthanc's REST API."""
        from io import BytesIO

        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        r = self.http.post(
            f"{self.base}/instances",
            data=buf.getvalue(),
            headers={"Content-Type": "application/dicom"},
            timeout=10,
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc for this module: a plain process with its storage in a temporary folder,
    HTTP on a free loopback port, remote access off, basic authentication on, the
    DICOMweb plugin under /dicom-web; stopped at the end."""
    binary = _orthanc_binary()
    if binary is None or not PLUGIN.is_file():
        msg = (
            "Orthanc or its DICOMweb plugin not found; install them with `apt-get install -y "
            "orthanc orthanc-dicomweb` to run the PACS tests"
        )
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(msg + " -- in CI Orthanc must be present", pytrace=False)
        pytest.skip(msg)
    folder = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "holomed-test",
        "HttpPort": port,
        "DicomPort": _free_port(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=log)
    server = Server(port, folder)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    "Orthanc exited: " + (folder / "orthanc.log").read_text()[-2000:]
                )
            try:
                if server.http.get(f"{server.base}/system", timeout=1).status_code == 200:
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer GET /system within 30 s")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        server.http.close()


# -- test studies ---------------------------------------------------------------------


def _ct(pid: str, accession: str, y: int, rng: np.random.Generator):
    """pydicom's CT_small.dcm as a new study of patient ``pid``: new UIDs, the accession
    number, and a bright square when ``y`` is 1."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom's CT_small.dcm is not available offline")
    ds = pydicom.dcmread(path)
    ds.PatientID, ds.PatientName, ds.AccessionNumber = pid, f"Test^{pid}", accession
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    a = ds.pixel_array.astype(np.int16) + rng.integers(0, 50, ds.pixel_array.shape).astype(np.int16)
    if y:
        a[40:90, 40:90] += 900
    ds.PixelData = a.tobytes()
    return ds


def _volume(pid: str, slices: int = 3) -> list:
    """pydicom's MR_small.dcm as ``slices`` instances of one series (a volume)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    out = []
    for k in range(slices):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.PatientID, ds.AccessionNumber = pid, "VOL-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.0 * k]
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def pacs(orthanc, tmp_path_factory):
    """The PACS filled: P01..P10 one CT study each (P01 = the original files kept in
    ``files``), a 3-slice MR volume of patient VOL; the label table, a clinical table,
    a credentials file and a spec folder."""
    folder = tmp_path_factory.mktemp("pacs-data")
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(1, 13)]
    y = np.array([i % 2 for i in range(len(ids))])
    accession = {p: f"ACC{i + 1:04d}" for i, p in enumerate(ids)}
    accession["P11"] = "ACC9999"  # no study on the PACS
    accession["P12"] = "ACC00*"  # a wildcard: must not match the others
    files = {}
    for i, pid in enumerate(ids[:N_STUDIES]):
        ds = _ct(f"MRN-{pid}", accession[pid], int(y[i]), rng)
        orthanc.store(ds)
        files[pid] = folder / f"{pid}.dcm"
        ds.save_as(files[pid], enforce_file_format=True)
    for ds in _volume("VOL"):
        orthanc.store(ds)
    labels = pd.DataFrame({"id": ids, "y": y, "accession": [accession[p] for p in ids]})
    labels.to_csv(folder / "labels.csv", index=False)
    clin = pd.DataFrame({"id": ids, "age": np.round(rng.normal(60, 8, len(ids)) + 4 * y, 1)})
    clin.to_csv(folder / "clin.csv", index=False)
    (folder / "pacs.json").write_text(json.dumps({"username": USER, "password": PASSWORD}))
    (folder / "wrong.json").write_text(json.dumps({"username": USER, "password": "nope"}))
    return {"folder": folder, "files": files, "accession": accession, "ids": ids, "y": y}


def spec_dict(url: str, **dicomweb) -> dict:
    return {
        "dataset": "pacs_test",
        "modalities": [
            {"name": "clin", "kind": "tabular", "source": "clin.csv",
             "encoder": {"name": "mlp", "options": {"hidden": [8]}}},
            {"name": "ct", "kind": "image", "source": url,
             "options": {"dicomweb": {"match": "accession", "column": "accession",
                                      "credentials": "pacs.json", "cache_dir": "cache",
                                      "series_modality": "CT", **dicomweb}},
             "preprocessing": {"size": [8, 8]},
             "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4]}}},
        ],
        "target": {"source": "labels.csv", "column": "y"},
        "fusion": {"name": "late", "hidden": 8},
        "training": {"max_epochs": 2, "batch_size": 16, "val_fraction": 0.0, "lr": 0.01},
    }  # fmt: skip


def make_spec(pacs, url: str, **dicomweb):
    return parse_spec(spec_dict(url, **dicomweb), "pacs test", str(pacs["folder"]))


# -- no server needed -------------------------------------------------------------------


def test_spec_refuses_credentials_in_the_url_and_wrong_options(tmp_path):
    ok = {"modalities": [{"name": "ct", "kind": "image", "source": "dicomweb://h:8042/dw"}]}
    assert parse_spec(ok).modalities[0].source == ["dicomweb://h:8042/dw"]
    cases = [
        ({"source": "dicomweb://bob:s3cret@h:8042/dw"}, "credentials do not belong"),
        ({"options": {"dicomweb": {"match": "acc"}}}, "options.dicomweb.match"),
        ({"options": {"dicomweb": {"max_mb": True}}}, "options.dicomweb.max_mb"),
        ({"options": {"dicomweb": {"colum": "x"}}}, "options.dicomweb.colum: unknown option"),
        ({"options": {"dicomweb": {"series_modality": ["C T"]}}}, "Modality codes"),
        ({"kind": "tabular"}, "image modalities only"),
        ({"source": "dicomweb://h/x?user=a"}, "takes no query"),
        ({"source": "x.csv", "options": {"dicomweb": {"studies": "first"}}}, "dicomweb.studies"),
    ]
    for change, expected in cases:
        d = json.loads(json.dumps(ok))
        d["modalities"][0].update(change)
        with pytest.raises(SpecError) as err:
            parse_spec(d, where="x.yaml")
        assert expected in str(err.value), str(err.value)
        assert "s3cret" not in str(err.value)
    u = parse_url("dicomwebs://[::1]:443/root/")
    assert u.http == "https://[::1]:443/root" and str(u) == "dicomwebs://[::1]:443/root"
    assert parse_options({"series_modality": "ct"}).series_modality == ["CT"]


def test_credentials_from_a_file_or_the_environment(tmp_path, monkeypatch):
    for k in ("USER", "PASSWORD", "TOKEN", "CREDENTIALS"):
        monkeypatch.delenv(f"HOLOMED_DICOMWEB_{k}", raising=False)
    assert load_credentials() is None
    monkeypatch.setenv("HOLOMED_DICOMWEB_USER", "u")
    monkeypatch.setenv("HOLOMED_DICOMWEB_PASSWORD", "topsecret")
    c = load_credentials()
    assert (c.username, c.password) == ("u", "topsecret") and "topsecret" not in repr(c)
    f = tmp_path / "c.yaml"
    f.write_text("token: abc\n")
    assert load_credentials(f).token == "abc"
    f.write_text("username: u\npasword: x\n")
    with pytest.raises(CohortError, match="unknown key"):
        load_credentials(f)


# -- the PACS ---------------------------------------------------------------------------


def test_cohort_from_the_pacs(orthanc, pacs, monkeypatch):
    spec = make_spec(pacs, orthanc.url)
    cohort = load_cohort(spec)
    ct = cohort.modalities["ct"]
    present = dict(zip(cohort.ids, ct.present, strict=True))
    assert all(present[p] for p in pacs["ids"][:N_STUDIES])
    assert not present["P11"] and not present["P12"]
    reasons = {e["id"]: e["reason"] for e in cohort.excluded if e.get("modality") == "ct"}
    assert reasons["P11"] == "no study found on the PACS for the accession number"
    assert "wildcard" in reasons["P12"]  # never sent as a QIDO pattern
    assert not any("ACC" in r for r in reasons.values())
    # each patient's image is its own study, as stored: the same pixels as the file
    for pid in ("P01", "P02", "P07"):
        (path,) = ct.values.loc[pid, "paths"]
        assert Path(path).is_file() and Path(path).parent.parent.parent.name == "cache"
        np.testing.assert_array_equal(read_image(path).array, read_image(pacs["files"][pid]).array)

    # a second read fetches nothing: every instance is in the cache folder
    def no_download(*_a, **_k):
        raise AssertionError("an instance was fetched again")

    monkeypatch.setattr(Pacs, "retrieve", no_download)
    again = load_cohort(spec)
    assert list(again.modalities["ct"].values["paths"].dropna()) == list(
        ct.values["paths"].dropna()
    )


def test_volumes_filters_and_limits(orthanc, tmp_path):
    p = Pacs(orthanc.url, Credentials(USER, PASSWORD), timeout=10)
    got = p.fetch("patient", ["VOL"], tmp_path / "c")
    assert (got.studies, got.series, got.instances) == (1, 1, 3)
    (folder,) = got.paths
    assert Path(folder).is_dir() and read_image(folder).array.shape == (3, 64, 64)
    with pytest.raises(NoImageSeries):  # the series filter leaves nothing
        p.fetch("patient", ["VOL"], tmp_path / "c", series_modality=["CT"])
    with pytest.raises(OverLimit, match="more than 2 instances"):
        p.fetch("patient", ["VOL"], tmp_path / "d", Limits(max_instances=2))
    with pytest.raises(OverLimit, match="larger than"):
        p.fetch("patient", ["VOL"], tmp_path / "e", Limits(max_bytes=20_000))
    assert not list((tmp_path / "e").rglob(".part-*"))  # nothing half-written
    p.close()


def test_pacs_down_or_refusing_is_a_clear_error(orthanc, pacs):
    down = f"dicomweb://127.0.0.1:{_free_port()}/dicom-web"
    with pytest.raises(CohortError, match="could not be reached"):
        load_cohort(make_spec(pacs, down))
    with pytest.raises(CohortError, match=r"refused the credentials \(HTTP 401\)") as err:
        load_cohort(make_spec(pacs, orthanc.url, credentials="wrong.json"))
    assert PASSWORD not in str(err.value) and "nope" not in str(err.value)


# -- serving ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(orthanc, pacs):
    spec = make_spec(pacs, orthanc.url)
    cohort = load_cohort(spec)
    model = make_candidate(spec, "late", 0).fit(cohort)
    return Path(model.save(pacs["folder"] / "model" / "bundle"))


def _app(bundle, folder: Path, **pacs_settings):
    (folder / "uploads").mkdir(parents=True, exist_ok=True)
    settings = ServeSettings(
        rate_limit_per_minute=100_000,
        max_files=4,
        upload_dir=str(folder / "uploads"),
        **pacs_settings,
    )
    app = create_app({"ct": bundle}, settings, db=str(folder / "serve.db"))
    _info, token = app.state.holomed.tokens.create("clinician", "test")
    return app, {"Authorization": f"Bearer {token}"}


def test_predict_by_accession_equals_the_upload(orthanc, pacs, bundle, tmp_path, caplog):
    app, h = _app(bundle, tmp_path, pacs=orthanc.url,
                  pacs_credentials=str(pacs["folder"] / "pacs.json"))  # fmt: skip
    acc = pacs["accession"]["P02"]
    clin = {"clin": {"age": 61.5}}
    with TestClient(app) as client:
        upload = client.post(
            "/v1/models/ct/predict",
            data={"patient_id": "MRN-P02", "modalities": json.dumps(clin)},
            files=[("ct", ("x.dcm", pacs["files"]["P02"].read_bytes(), "application/dicom"))],
            headers=h,
        )
        assert upload.status_code == 200, upload.text
        by_json = client.post(
            "/v1/models/ct/predict",
            json={"patient_id": "MRN-P02", "modalities": clin, "accession": acc},
            headers=h,
        )
        assert by_json.status_code == 200, by_json.text
        by_form = client.post(  # a multipart request: the table as CSV, the study by field
            "/v1/models/ct/predict",
            data={"patient_id": "MRN-P02", "ct_accession": acc},
            files=[("clin", ("c.csv", b"age\n61.5\n", "text/csv"))],
            headers=h,
        )
        assert by_form.status_code == 200, by_form.text
        a, b, c = upload.json(), by_json.json(), by_form.json()
        for other in (b, c):
            assert other["modalities"]["used"] == ["clin", "ct"]
            for k, v in a["probabilities"].items():
                assert other["probabilities"][k] == pytest.approx(v, abs=1e-6)
        rep = b["modalities"]["fields"]["ct"]
        assert rep["source"] == "pacs" and rep["instances"] == 1
        assert rep["accession_pseudonym"].startswith("A-")
        assert rep["accession_pseudonym"] == c["modalities"]["fields"]["ct"]["accession_pseudonym"]
        # errors: no study, a wildcard, a modality that is not an image, file + accession
        for body, status, text in [
            ({"accession": "ACC9999", "modalities": clin}, 422, "no study found on the PACS"),
            ({"accession": "ACC*"}, 422, "wildcard"),
            ({"clin_accession": "ACC0001"}, 422, "is not an image modality"),
        ]:
            r = client.post("/v1/models/ct/predict", json=body, headers=h)
            assert r.status_code == status and text in r.json()["error"], r.text
            assert "ACC" not in r.json()["error"]
        r = client.post(
            "/v1/models/ct/predict",
            data={"ct_accession": acc},
            files=[("ct", ("x.dcm", pacs["files"]["P02"].read_bytes(), "application/dicom"))],
            headers=h,
        )
        assert r.status_code == 422 and "both" in r.json()["error"]
        state = app.state.holomed
        assert state.audit.flush(10)
        with state.engine.connect() as conn:
            rows = [dict(x) for x in conn.execute(select(audit_table)).mappings()]
    tags = [json.loads(r["modalities"]) for r in rows]
    assert ["clin", "ct", f"ct:pacs:{rep['accession_pseudonym']}"] in tags
    dump = json.dumps(rows) + caplog.text
    assert acc not in dump and "MRN-P02" not in dump and PASSWORD not in dump
    assert not list((tmp_path / "uploads").iterdir())  # fetched studies deleted


def test_serving_with_the_pacs_down_or_refusing(orthanc, pacs, bundle, tmp_path):
    acc = pacs["accession"]["P01"]
    cases = [
        (dict(pacs=f"dicomweb://127.0.0.1:{_free_port()}/dicom-web"), 503, "could not be reached"),
        (dict(pacs=orthanc.url, pacs_credentials=str(pacs["folder"] / "wrong.json")), 502,
         "refused the credentials"),
        ({}, 422, "this server has no PACS"),
    ]  # fmt: skip
    for k, (settings, status, text) in enumerate(cases):
        app, h = _app(bundle, tmp_path / str(k), **settings)
        with TestClient(app) as client:
            r = client.post("/v1/models/ct/predict", json={"accession": acc}, headers=h)
            state = app.state.holomed
            assert state.audit.flush(10)
            with state.engine.connect() as conn:
                (row,) = [dict(x) for x in conn.execute(select(audit_table)).mappings()]
        assert r.status_code == status and text in r.json()["error"], r.text
        assert acc not in r.text and PASSWORD not in r.text
        assert row["status"] == status
        if settings:  # the PACS was asked: the row says so (with the pseudonym only)
            assert json.loads(row["modalities"])[0].startswith("ct:pacs:A-")
    with pytest.raises(ValueError, match="credentials do not belong"):
        ServeSettings(pacs="dicomweb://u:pw@127.0.0.1:1/x").check()


def test_serve_command_takes_the_pacs_options(orthanc, pacs, bundle, tmp_path, monkeypatch):
    import pydicom
    import uvicorn
    from typer.testing import CliRunner

    from holomed.serve.cli import serve_app

    # the command switches pydicom's reading validation off for the process: restore it
    monkeypatch.setattr(
        pydicom.config.settings,
        "reading_validation_mode",
        pydicom.config.settings.reading_validation_mode,
    )
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    creds = str(pacs["folder"] / "pacs.json")
    res = CliRunner().invoke(
        serve_app,
        [str(bundle), "--db", str(tmp_path / "s.db"), "--pacs", orthanc.url,
         "--pacs-credentials", creds, "--pacs-timeout", "5"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    state = seen["app"].state.holomed
    assert state.settings.pacs == orthanc.url and state.settings.pacs_timeout == 5
    assert f"PACS for accession numbers: {orthanc.url} (credentials from {creds}" in res.output
    assert PASSWORD not in res.output
    state.close()
    res = CliRunner().invoke(
        serve_app,
        [str(bundle), "--db", str(tmp_path / "s.db"), "--pacs", "dicomweb://bob:s3cret@h:1/x"],
    )
    assert res.exit_code == 2 and "credentials do not belong in the PACS URL" in res.output
    assert "s3cret" not in res.output
