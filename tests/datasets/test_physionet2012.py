"""PhysioNet 2012: the real set A (counts, checksums, honest reading), any set folder by
path with its problems reported, the tarball download path, and fit on one folder ->
predict (and evaluate) on another through the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from holomed.cli import app
from holomed.cohort import build_cohort, dataset_cohort
from holomed.datasets import DATASETS
from holomed.datasets.physionet2012 import SERIES, PhysioNet2012
from holomed.evaluation.compare import count_reasons
from holomed.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "physionet2012.yaml"


_CACHE: dict[str, tuple] = {}


@pytest.fixture
def set_a(shared_dataset):
    """(folder, frames, target) of set A, read once per session."""
    root = shared_dataset("physionet2012")
    if "a" not in _CACHE:
        _CACHE["a"] = DATASETS.get("physionet2012").frames()
    return (root, *_CACHE["a"])


def test_set_a_counts_checksums_and_pinned_label(set_a):
    _, frames, target = set_a
    assert len(target) == 4000 and int(target["In-hospital_death"].sum()) == 554
    assert frames["static"].shape == (4000, 5)
    assert set(frames["series"]["variable"]) <= set(SERIES)
    # severity scores are carried for baselines only; outcomes after the stay are not read
    for col in ("SAPS-I", "SOFA"):
        assert col in target.columns
        assert col not in frames["static"].columns
    assert "Length_of_stay" not in target.columns and "Survival" not in target.columns
    assert set(target["age_band"]) <= {"<50", "50-70", ">70", "unknown"}


def test_sentinels_and_impossible_values_are_reported_never_kept(set_a):
    _, frames, _ = set_a
    static, series = frames["static"], frames["series"]
    assert not (static[["Age", "Height", "Weight"]] == -1).any().any()
    assert not (series["value"] == -1).any()
    assert not ((series["variable"] == "HR") & (series["value"] <= 0)).any()
    assert not ((series["variable"] == "Temp") & (series["value"] < 24)).any()
    reasons = count_reasons(static.attrs["reading_report"])
    # ~47 % of set-A stays have no recorded height
    assert reasons["values of modality static: missing-value sentinel -1 of 'Height'"] > 1500
    assert any("impossible value of 'Temp'" in k for k in reasons)


def test_example_spec_builds_the_cohort_with_reports(set_a):
    _, frames, target = set_a
    spec = load_spec(EXAMPLE)
    cohort = build_cohort(spec, frames, target)  # what load_cohort(spec) does
    assert len(cohort) == 4000
    s = cohort.summary()
    assert s["modalities"]["static"]["present"] == 4000
    assert 3990 <= s["modalities"]["series"]["present"] < 4000  # a few stays hold no series
    lost = [e for e in cohort.excluded if e.get("scope") == "modality"]
    assert lost and all(e["modality"] == "series" for e in lost)
    assert cohort.scores is not None and list(cohort.scores.columns) == ["SAPS-I", "SOFA"]
    assert {"sex", "age_band", "icu_type"} == set(cohort.attributes.columns)


def _mini_set(root: Path, dest: Path, ids: list[str], letter: str) -> Path:
    """A set folder built from real records (in tmp only), with its Outcomes file."""
    folder = dest / f"set-{letter}"
    folder.mkdir(parents=True)
    for r in ids:
        shutil.copy(root / "set-a" / f"{r}.txt", folder / f"{r}.txt")
    out = pd.read_csv(root / "Outcomes-a.txt", dtype={"RecordID": str})
    out[out["RecordID"].isin(ids)].to_csv(dest / f"Outcomes-{letter}.txt", index=False)
    return folder


def test_any_set_folder_loads_by_path_and_reports_bad_records(set_a, tmp_path):
    root, _, target = set_a
    ids = list(target.index[:30])
    folder = _mini_set(root, tmp_path, ids, "x")
    (folder / f"{ids[0]}.txt").write_text("")  # empty file
    (folder / f"{ids[1]}.txt").write_text("garbage without header\n1,2,3\n")
    (folder / f"{ids[2]}.txt").write_text("Time,Parameter,Value\n")  # header only
    with open(folder / f"{ids[3]}.txt", "a") as f:
        f.write("01:00,Wobble,3\n02:00,HR,abc\n")
    (folder / f"{ids[4]}.txt").unlink()  # outcome without a record
    frames, t = PhysioNet2012(name="physionet2012", description="").frames(path=str(folder))
    rep = frames["static"].attrs["reading_report"]
    by_id = {}
    for e in rep:
        by_id.setdefault(e["id"], []).append(e["reason"])
    assert any("no 'Time,Parameter,Value' header" in r for r in by_id[ids[0]])
    assert any("no 'Time,Parameter,Value' header" in r for r in by_id[ids[1]])
    assert any("holds no data" in r for r in by_id[ids[2]])
    assert any("unknown parameter 'Wobble'" in r for r in by_id[ids[3]])
    assert any("unreadable line" in r for r in by_id[ids[3]])
    assert by_id[ids[4]] == ["outcome without a record file"]
    spec = load_spec(EXAMPLE)
    cohort = build_cohort(spec, frames, t)
    assert len(cohort) == 26  # 4 stays without usable data are excluded, and each is named
    gone = {e["id"] for e in cohort.excluded if e.get("scope") == "patient"}
    assert {ids[0], ids[1], ids[2], ids[4]} <= gone and ids[3] in cohort.ids


def test_tarball_download_is_extracted_and_verified(set_a, tmp_path, monkeypatch):
    root, _, target = set_a
    ids = list(target.index[:5])
    src = tmp_path / "src"
    _mini_set(root, src, ids, "a")
    with tarfile.open(src / "set-a.tar.gz", "w:gz") as tar:
        tar.add(src / "set-a", arcname="set-a")
    files = {
        f"set-a/{r}.txt": hashlib.sha256((src / "set-a" / f"{r}.txt").read_bytes()).hexdigest()
        for r in ids
    }
    files["Outcomes-a.txt"] = hashlib.sha256((src / "Outcomes-a.txt").read_bytes()).hexdigest()
    ds = PhysioNet2012(name="pn_mini", description="", base_url=src.as_uri() + "/", files=files)
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HOLOMED_DATA", raising=False)
    frames, t = ds.frames()
    assert sorted(t.index) == sorted(ids) and len(frames["static"]) == 5
    # a corrupted local copy is refused
    (tmp_path / "cache" / "pn_mini" / "set-a" / f"{ids[0]}.txt").write_text("x")
    with pytest.raises(Exception, match="sha256"):
        ds.frames()


def test_fit_on_one_folder_predict_and_evaluate_on_another(set_a, tmp_path):
    root, _, target = set_a
    rng = np.random.default_rng(0)
    ids = list(rng.permutation(target.index)[:240])
    train_set = _mini_set(root, tmp_path / "a", ids[:160], "a")
    other = _mini_set(root, tmp_path / "b", ids[160:], "b")
    runner = CliRunner()
    sets = [
        f"dataset_options.path={train_set}",
        "training.max_epochs=2",
        "fusion.hidden=8",
        "split.method=holdout",
        "evaluation.n_bootstrap=0",
    ]
    res = runner.invoke(
        app,
        [
            "fit",
            str(EXAMPLE),
            "--out",
            str(tmp_path / "run"),
            *sum([["--set", s] for s in sets], []),
        ],
    )
    assert res.exit_code == 0, res.output

    def predict(folder, name):  # the bundle on a set folder: the output, the scored share
        res = runner.invoke(
            app,
            ["predict", str(tmp_path / "run" / "bundle"), "-d", f"path={folder}",
             "--out", str(tmp_path / f"{name}.csv")],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        metrics = json.loads((tmp_path / f"{name}.metrics.json").read_text())
        return res, metrics["training_patients_scored"]

    res, seen = predict(other, "pred")
    pred = pd.read_csv(tmp_path / "pred.csv", dtype={"id": str})
    assert sorted(pred["id"]) == sorted(ids[160:])
    assert (tmp_path / "pred.metrics.json").exists() and "auroc" in res.output
    assert "training patients" not in res.output
    assert not seen["flag"] and seen["ci"][0] <= 0 <= seen["ci"][1]
    # scoring the training folder again: said plainly, the metrics are not held-out
    res, seen = predict(train_set, "again")
    card = json.loads((tmp_path / "run" / "bundle" / "card.json").read_text())
    n_train = card["n_train"]  # the holdout split's training part of the 160
    assert seen["flag"] and seen["ci"][0] <= n_train <= seen["ci"][1]
    assert "look like training patients of this model" in " ".join(res.output.split())
    assert "not held-out" in res.output
    # the card holds a sketch, not a list: no id, and about half the bits set
    sketch = card["training_patients"]
    assert sketch["n"] == n_train and str(ids[0]) not in json.dumps(card)
    assert 0.3 < seen["chance"] < 0.7
    # the same folder read directly gives the same cohort
    spec = load_spec(EXAMPLE)
    assert len(dataset_cohort(spec, path=str(other))) == 80
