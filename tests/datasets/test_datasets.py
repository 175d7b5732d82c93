"""Dataset registry: lookup order, checksum verification, download path, ROSMAP."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from holomed.datasets import DATASETS, Dataset, DatasetError


def _data_dir(name: str) -> Path:
    root = os.environ.get("HOLOMED_DATA")
    path = Path(root) / name if root else None
    if path is None or not path.is_dir():
        msg = f"dataset {name!r} not found under $HOLOMED_DATA ({root!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " -- in CI the real data must be present")
        pytest.skip(msg)
    return path


def _toy(tmp_path: Path) -> tuple[Dataset, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("id,x\np1,1\n")
    digest = hashlib.sha256((src / "a.csv").read_bytes()).hexdigest()
    return Dataset("toy", "toy", base_url=src.as_uri() + "/", files={"a.csv": digest}), src


def test_download_verifies_checksum(tmp_path, monkeypatch):
    ds, _ = _toy(tmp_path)
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HOLOMED_DATA", raising=False)
    folder = ds.locate()
    assert folder == tmp_path / "cache" / "toy" and (folder / "a.csv").exists()


def test_download_rejects_wrong_checksum(tmp_path, monkeypatch):
    ds, _ = _toy(tmp_path)
    ds.files = {"a.csv": "0" * 64}
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HOLOMED_DATA", raising=False)
    with pytest.raises(DatasetError, match="does not match"):
        ds.locate()
    assert not (tmp_path / "cache" / "toy" / "a.csv").exists()


def test_local_folder_is_verified_too(tmp_path, monkeypatch):
    ds, src = _toy(tmp_path)
    local = tmp_path / "data" / "toy"
    local.mkdir(parents=True)
    (local / "a.csv").write_text("id,x\np1,2\n")  # altered copy
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetError, match="a.csv"):
        ds.locate(download=False)


def test_missing_without_download_names_the_places(tmp_path, monkeypatch):
    ds, _ = _toy(tmp_path)
    monkeypatch.setenv("HOLOMED_CACHE", str(tmp_path / "nowhere"))
    monkeypatch.delenv("HOLOMED_DATA", raising=False)
    with pytest.raises(DatasetError, match="not found"):
        ds.locate(download=False)


def test_registry_lists_rosmap_and_synthetic():
    assert {"rosmap", "synthetic"} <= set(DATASETS.names())
    assert DATASETS.get("synthetic").synthetic


def test_rosmap_real_files():
    _data_dir("rosmap")
    frames, target = DATASETS.get("rosmap").frames(download=False)
    assert set(frames) == {"mrna", "methylation", "mirna"}
    for df in frames.values():
        assert df.shape == (351, 200)
        assert np.isfinite(df.to_numpy()).all()
    assert (target["split"] == "train").sum() == 245 and (target["split"] == "test").sum() == 106
    assert (target["label"] == "AD").sum() == 127 + 55
    assert frames["mrna"].columns[0].startswith("ENSG")


def test_rosmap_example_spec_loads():
    _data_dir("rosmap")
    from holomed.cohort import load_cohort, patient_splits
    from holomed.spec import load_spec

    spec = load_spec(Path(__file__).parents[2] / "examples" / "rosmap.yaml")
    cohort = load_cohort(spec)
    assert len(cohort) == 351 and cohort.excluded == []
    ((tr, te),) = patient_splits(cohort, spec.split)
    assert len(tr) == 245 and len(te) == 106
    assert not set(cohort.ids[tr]) & set(cohort.ids[te])
