"""The real ``covid_cxr`` dataset (``$HOLOMED_DATA/covid_cxr_multimodal``): verified
files, the counts its SOURCE.md states, person grouping, reported exclusions, and a
short image + table fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
import holomed.modalities.image  # noqa: F401  (registers the image kind)
from holomed.cohort import build_cohort, patient_splits
from holomed.datasets.covid_cxr import COVID_CXR, FOLDER
from holomed.evaluation.compare import count_reasons
from holomed.model import Model
from holomed.spec import parse_spec


@pytest.fixture(scope="module")
def covid():
    from conftest import require_shared_data

    require_shared_data(FOLDER)
    return COVID_CXR.frames()  # located and verified against the shipped manifest


def test_manifest_covers_every_file():
    from holomed.datasets.covid_cxr import _manifest

    files = _manifest()
    assert len(files) == 308
    assert sum(f.startswith("images_256/") for f in files) == 306
    assert {"metadata.csv", "images_manifest.csv"} <= set(files)


def test_frames_match_the_documented_counts(covid):
    frames, target = covid
    xray, clin, notes = frames["xray"], frames["clinical"], frames["notes"]
    assert len(xray) == 156 and list(xray.index) == list(target.index)
    unique = {p for ps in xray["paths"] for p in ps}
    assert len(unique) == 306  # 311 staged rows, 5 images shared by two rows
    assert sum(len(p) for p in xray["paths"]) == 311
    assert int(target["finding"].sum()) == 110  # patient ids with COVID-19
    assert target.loc[target["findings"].str.contains("COVID-19, ARDS"), "finding"].eq(1).all()
    assert set(target["survival"].dropna()) == {"Y", "N"}
    assert clin["temperature"].notna().sum() < 30 and clin["age"].notna().sum() > 80
    assert 0 < len(notes) < 156 and notes["text"].str.len().min() > 0
    s = target.attrs["reading_summary"]
    assert s["metadata_rows"] == 673 and s["staged_rows"] == 311
    assert s["rows_not_staged"]["metadata row is a CT, not a chest X-ray"] == 84
    assert sum(s["rows_not_staged"].values()) == 673 - 311


def test_duplicate_patient_ids_are_one_person(covid):
    frames, target = covid
    assert target.loc["339", "group"] == target.loc["285", "group"] == "285"
    assert target.loc["340", "group"] == target.loc["287", "group"] == "287"
    assert frames["xray"].loc["339", "paths"] == frames["xray"].loc["285", "paths"]
    assert target["group"].nunique() == 154


def test_exclusions_are_reported_with_counts(covid):
    frames, target = covid
    report = frames["xray"].attrs["reading_report"]
    reasons = count_reasons(report)
    ct = sum(v for k, v in reasons.items() if "CT" in k and k.startswith("values"))
    assert ct > 0
    lost = [e for e in report if e.get("scope") == "patient"]
    assert lost and not {e["id"] for e in lost} & set(target.index)


def test_image_and_table_cohort_with_person_grouped_folds(covid, tmp_path):
    frames, target = covid
    spec = parse_spec(
        {
            "dataset": "covid_cxr",
            "modalities": [
                {
                    "name": "clinical",
                    "kind": "tabular",
                    "categorical": ["sex"],
                    "encoder": {"name": "mlp", "options": {"hidden": [8]}},
                },
                {
                    "name": "xray",
                    "kind": "image",
                    "preprocessing": {
                        "size": [32, 32],
                        "max_images": 2,
                        "cache_dir": str(tmp_path / "cache"),
                    },
                    "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [8, 8]}},
                },
            ],
            "target": {"column": "finding", "classes": ["0", "1"]},
            "attributes": ["sex", "age_band"],
            "split": {"method": "kfold", "n_folds": 5, "group": "group"},
            "fusion": {"name": "joint", "hidden": 8},
            "training": {"max_epochs": 1, "batch_size": 32, "val_fraction": 0.0},
        }  # fmt: skip
    )
    c = build_cohort(spec, frames, target)
    assert len(c) == 156 and c.modalities["xray"].present.all()
    assert c.modalities["clinical"].present.sum() >= 140
    folds = patient_splits(c, spec.split)
    for tr, te in folds:
        assert not set(c.groups[tr]) & set(c.groups[te])
    tr, te = folds[0]
    m = Model(spec, seed=0).fit(c.subset(tr))
    p = m.predict_proba(c.subset(te))
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    pre = m.preprocessors_["xray"]
    pre.transform(c.modalities["xray"])
    assert pre.cache_hits_ > 0


def test_notes_read_as_text_when_the_kind_is_available(covid):
    frames, target = covid
    spec = parse_spec(
        {
            "modalities": [
                {"name": "notes", "kind": "text", "preprocessing": {"method": "tfidf", "dim": 8}}
            ],
            "target": {"column": "finding"},
        }  # fmt: skip
    )
    c = build_cohort(spec, frames, target)
    assert c.modalities["notes"].present.sum() == len(frames["notes"])


def test_example_spec_loads_the_cohort(covid):
    from pathlib import Path

    import yaml

    from holomed.cohort import load_cohort

    path = Path(__file__).parents[2] / "examples" / "covid_cxr.yaml"
    data = yaml.safe_load(path.read_text())
    try:
        import holomed.encoders.text  # noqa: F401
        import holomed.modalities.text  # noqa: F401
    except ImportError:  # the text kind is optional here: test the image + table parts
        data["modalities"] = [m for m in data["modalities"] if m["kind"] != "text"]
    spec = parse_spec(data, where=str(path), base_dir=str(path.parent))
    assert spec.split.group == "group" and spec.modalities[0].encoder.name == "efficientnet_lite0"
    c = load_cohort(spec)
    assert len(c) == 156 and len(np.unique(c.groups)) == 154
    assert c.modalities["xray"].present.all()
    if "notes" in c.modalities:
        assert c.modalities["notes"].present.sum() == len(covid[0]["notes"])


def test_rebuild_rules_reproduce_the_staged_subset(covid):
    import pandas as pd

    from holomed.datasets.covid_cxr import (
        build_frames,
        stage_image,
        staged_name,
        staged_rows,
        staged_size,
    )

    folder = Path(covid[0]["xray"]["paths"].iloc[0][0]).parents[1]
    meta = pd.read_csv(folder / "metadata.csv", dtype={"patientid": str}, low_memory=False)
    man = pd.read_csv(folder / "images_manifest.csv", dtype=str)
    derived = staged_rows(meta)
    # the selection rules give the shipped links, names and sizes exactly
    assert dict(zip(derived["staged_file"], derived["metadata_rows"], strict=True)) == dict(
        zip(man["staged_file"], man["metadata_rows"], strict=True)
    )
    assert (man["filename"].map(staged_name) == man["staged_file"]).all()
    sizes = [
        staged_size(int(w), int(h))
        for w, h in zip(man["orig_width"], man["orig_height"], strict=True)
    ]
    assert sizes == [
        (int(w), int(h)) for w, h in zip(man["staged_width"], man["staged_height"], strict=True)
    ]
    # the PNG encoding reproduces staged files byte for byte (already 256 px, gray)
    for f in man["staged_file"].iloc[:5]:
        data = (folder / f).read_bytes()
        assert stage_image(data) == data
    # frames without images_manifest.csv (a rebuilt copy) are the same frames
    a, ta = build_frames(meta, man, folder)
    b, tb = build_frames(meta, derived, folder)
    assert a["xray"]["paths"].tolist() == b["xray"]["paths"].tolist()
    pd.testing.assert_frame_equal(ta, tb)


def test_rebuild_rejects_a_file_that_does_not_match_the_manifest(covid, tmp_path):
    folder = Path(covid[0]["xray"]["paths"].iloc[0][0]).parents[1]
    served = []

    def fetch(url: str) -> bytes:
        served.append(url)
        if url.endswith("/metadata.csv"):
            return (folder / "metadata.csv").read_bytes()
        from io import BytesIO

        from PIL import Image

        buf = BytesIO()
        Image.new("RGB", (600, 400), (90, 90, 90)).save(buf, format="JPEG")
        return buf.getvalue()

    from holomed.datasets.base import DatasetError

    with pytest.raises(DatasetError, match=r"images_256/.*\.png.*does not match"):
        COVID_CXR.download(tmp_path / "copy", fetch=fetch)
    assert served[0].endswith("0f7245db6f5aa4001ea75cf69fe6cfe091928403/metadata.csv")
    assert "/images/" in served[1]
    assert (tmp_path / "copy" / "metadata.csv").exists()
    assert not list((tmp_path / "copy" / "images_256").iterdir())  # nothing unverified kept
