"""Attribution maps (occlusion PNGs) of signal and image modalities, set-pooling weights
in the explanation, both in the HTML report and through ``holomed explain``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from holomed.cohort import build_cohort
from holomed.explain.maps import attribution_maps
from holomed.model import Model
from holomed.report.html import render_html
from holomed.spec import parse_spec

N = 24


def _png(path, bright: bool, rng) -> str:
    a = rng.integers(0, 60, (24, 24)).astype(np.uint8)
    if bright:
        a[6:14, 6:14] = 230
    PILImage.fromarray(a).save(path)
    return str(path)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps_png")
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(N)]
    y = np.arange(N) % 2
    paths = {pid: [_png(root / f"{pid}_{k}.png", bool(y[i]), rng) for k in range(1 + i % 3)]
             for i, pid in enumerate(ids)}  # fmt: skip
    frame = pd.DataFrame({"paths": pd.Series(paths)})
    age = pd.DataFrame({"age": rng.normal(60, 10, N)}, index=ids)
    spec = parse_spec(
        {
            "modalities": [
                {"name": "clinical", "kind": "tabular"},
                {
                    "name": "xray",
                    "kind": "image",
                    "preprocessing": {"size": [16, 16], "max_images": 3},
                    "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4, 8]}},
                },
            ],
            "target": {"column": "y"},
            "fusion": {"name": "attention", "hidden": 8},
            "training": {"max_epochs": 2, "batch_size": 8, "val_fraction": 0.0},
        }
    )
    cohort = build_cohort(spec, {"clinical": age, "xray": frame}, pd.DataFrame({"y": y}, index=ids))
    return Model(spec, seed=0).fit(cohort), cohort


@pytest.fixture(scope="module")
def signal_model(tmp_path_factory):
    import wfdb

    root = tmp_path_factory.mktemp("maps_wfdb")
    rng = np.random.default_rng(1)
    ids = [f"S{i:02d}" for i in range(N)]
    y = np.arange(N) % 2
    t = np.arange(0, 2.0, 0.01)
    for i, pid in enumerate(ids):
        lead1 = np.sin(2 * np.pi * (8.0 if y[i] else 3.0) * t) + 0.2 * rng.normal(size=len(t))
        lead2 = 0.3 * rng.normal(size=len(t))
        wfdb.wrsamp(pid, fs=100, units=["mV", "mV"], sig_name=["I", "II"],
                    p_signal=np.stack([lead1, lead2], 1), fmt=["16", "16"],
                    write_dir=str(root))  # fmt: skip
    ecg = pd.DataFrame({"path": {pid: str(root / pid) for pid in ids}})
    demo = pd.DataFrame({"age": rng.normal(60, 10, N)}, index=ids)
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "ecg",
                    "kind": "signal",
                    "preprocessing": {"duration": 2.0},
                    "encoder": {"name": "resnet1d", "options": {"width": 8, "blocks": 2}},
                },
                {"name": "demo", "kind": "tabular"},
            ],
            "target": {"column": "y"},
            "fusion": {"name": "joint", "hidden": 8},
            "training": {"max_epochs": 15, "lr": 0.01, "batch_size": 8, "val_fraction": 0.0},
        }
    )
    cohort = build_cohort(spec, {"ecg": ecg, "demo": demo}, pd.DataFrame({"y": y}, index=ids))
    return Model(spec, seed=0).fit(cohort), cohort, root


def test_signal_maps_are_pngs_named_by_patient_and_modality(signal_model, tmp_path):
    m, cohort, _ = signal_model
    recs = attribution_maps(m, cohort, tmp_path, n_patients=2)
    assert [r["modality"] for r in recs] == ["ecg", "ecg"]
    assert [r["patient"] for r in recs] == ["S00", "S01"]
    assert recs[0]["window"] == [4, 1]  # 1/50 of 200 samples, one lead at a time
    for r in recs:
        assert (tmp_path / r["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_maps_and_set_pooling_weights(image_model, tmp_path):
    m, cohort = image_model
    sub = cohort.subset(np.arange(6))
    recs = attribution_maps(m, sub, tmp_path, n_patients=2)
    assert [r["kind"] for r in recs] == ["image", "image"]
    assert recs[0]["window"] == [1, 1, 2, 2]  # 1/8 of each side, intensity channel only
    assert all((tmp_path / r["file"]).stat().st_size > 1000 for r in recs)
    pool = m.explain(sub, top_k=3)["attention"]["set_pooling"]["xray"]
    counts = [1 + i % 3 for i in range(6)]  # images per patient, as written
    assert [len(e["weights"]) for e in pool["examples"]] == counts
    for e in pool["examples"]:
        assert abs(sum(e["weights"]) - 1) < 1e-3
    assert pool["mean_slots_used"] == pytest.approx(np.mean(counts))
    # the report inlines the PNGs the run lists and shows the pooling table
    html = render_html(
        {"kind": "fit", "attribution_plots": recs, "attention": {"set_pooling": {"xray": pool}}},
        None,
        tmp_path,
    )
    assert html.count("data:image/png;base64") >= 2
    assert "Attribution maps" in html and "Set pooling weights" in html
    # a results file naming a PNG outside the run folder is not read
    outside = tmp_path.parent / "outside.png"
    outside.write_bytes((tmp_path / recs[0]["file"]).read_bytes())
    bad = [{**recs[0], "file": "../outside.png"}]
    assert "Attribution maps" not in render_html({"kind": "fit", "attribution_plots": bad},
                                                 None, tmp_path)  # fmt: skip


def test_occluding_the_informative_lead_matters_more(signal_model, tmp_path):
    """Lead I carries the class (8 Hz vs 3 Hz), lead II is noise: the occlusion maps
    put more weight on lead I, averaged over patients."""
    from holomed.explain.features import occlusion

    m, cohort, _ = signal_model
    assert m.evaluate(cohort)["auroc"] > 0.9  # it learnt the rhythm
    a = occlusion(m, cohort, "ecg", (4, 1))
    per_lead = np.nanmean(np.abs(a), axis=(0, 1))
    assert per_lead[0] > per_lead[1]


def test_explain_cli_writes_maps(signal_model, tmp_path):
    from typer.testing import CliRunner

    from holomed.cli import app

    m, cohort, root = signal_model
    m.save(tmp_path / "bundle")
    ids = cohort.ids[:3]
    pd.DataFrame({"id": ids, "path": [str(root / i) for i in ids]}).to_csv(
        tmp_path / "ecg.csv", index=False
    )
    pd.DataFrame({"id": ids, "age": [50.0, 60.0, 70.0]}).to_csv(tmp_path / "demo.csv", index=False)
    out = tmp_path / "why"
    r = CliRunner().invoke(
        app,
        ["explain", str(tmp_path / "bundle"), "-i", f"ecg={tmp_path / 'ecg.csv'}",
         "-i", f"demo={tmp_path / 'demo.csv'}", "--out", str(out), "--maps", "2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((out / "explanations.json").read_text())
    files = [p["file"] for p in res["attribution_plots"]]
    assert len(files) == 2 and all((out / f).is_file() for f in files)


def test_multiclass_attributions_explain_each_patients_predicted_class():
    from holomed.explain.features import integrated_gradients

    rng = np.random.default_rng(0)
    n = 45
    ids = [f"M{i:02d}" for i in range(n)]
    y = np.arange(n) % 3
    tab = pd.DataFrame(rng.normal(size=(n, 3)) + np.eye(3)[y] * 2, index=ids,
                       columns=["a", "b", "c"])  # fmt: skip
    spec = parse_spec(
        {
            "modalities": [{"name": "t", "kind": "tabular"}],
            "target": {"column": "y", "task": "multiclass"},
            "training": {"max_epochs": 5, "lr": 0.01, "batch_size": 16, "val_fraction": 0.0},
        }
    )
    c = build_cohort(spec, {"t": tab}, pd.DataFrame({"y": y.astype(str)}, index=ids))
    m = Model(spec, seed=0).fit(c)
    pred = m.predict_proba(c).argmax(1)
    assert len(set(pred)) > 1
    got = integrated_gradients(m, c)["t"]
    for k in set(pred):
        want = integrated_gradients(m, c, target=int(k))["t"]
        np.testing.assert_allclose(got[pred == k], want[pred == k], rtol=1e-4, atol=1e-6)
