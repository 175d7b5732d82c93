"""``holomed deid`` end to end on a small identified cohort (table with identifier and
date columns, notes with PHI, PNG images with metadata, DICOM files): no identifier is
left in any file written, the modalities still join under one pseudonym, dates keep
their intervals, and the de-identified spec trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from holomed.cli import app
from holomed.errors import PrivacyError
from holomed.privacy.cohort import deidentify_cohort
from holomed.privacy.keys import PrivacyKey
from holomed.spec import SpecError, load_spec, parse_spec

runner = CliRunner()
KEY = PrivacyKey(b"s" * 40)
PHONE = "617-555-0199"


def _identified(root: Path, n: int = 40) -> tuple[Path, dict[str, list[str]]]:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    ids = [f"MRN{i:06d}" for i in range(n)]
    first = ["Marion", "Jasper", "Odette", "Lucian", "Beatrix", "Cormac", "Ingrid", "Silas"]
    last = ["Halloway", "Pemberton", "Ashcombe", "Thornbury", "Whitlock"]
    names = [f"{first[i % 8]} {last[i % 5]}" for i in range(n)]
    y = rng.integers(0, 2, n)
    admit = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D")
    pd.DataFrame(
        {
            "patient_id": ids,
            "full_name": names,
            "ssn": [f"123-45-{i:04d}" for i in range(n)],
            "admitted": admit.strftime("%Y-%m-%d"),
            "discharged": (admit + pd.Timedelta(days=5)).strftime("%Y-%m-%d"),
            "age": rng.integers(20, 80, n),
            "lab": rng.normal(size=n) + y,
        }
    ).to_csv(root / "clinical.csv", index=False)
    notes = [
        f"Mr. {names[i]} (MRN {ids[i]}) was admitted on {admit[i]:%m/%d/%Y}. Call {PHONE}. "
        + ("Opacity in the right lung." if y[i] else "Lungs clear.")
        for i in range(n)
    ]
    pd.DataFrame({"patient_id": ids, "text": notes}).to_csv(root / "notes.csv", index=False)
    (root / "img").mkdir()
    rows = []
    for i, pid in enumerate(ids):
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", f"patient {names[i]} {pid}")
        arr = (rng.random((16, 16)) * 255).astype(np.uint8)
        path = root / "img" / f"{pid}.png"
        Image.fromarray(arr).save(path, pnginfo=info)
        rows.append({"patient_id": pid, "path": f"img/{pid}.png"})
    pd.DataFrame(rows).to_csv(root / "images.csv", index=False)
    series = [
        {"patient_id": pid, "minutes": 30 * k, "variable": v, "value": rng.normal() + y[i]}
        for i, pid in enumerate(ids)
        for k in range(3)
        for v in ("HR", "MAP")
    ]
    pd.DataFrame(series).to_csv(root / "vitals.csv", index=False)
    pd.DataFrame(
        {
            "patient_id": ids,
            "label": y,
            "split": np.where(np.arange(n) % 4 == 0, "test", "train"),
            "home_phone": PHONE,
        }  # fmt: skip
    ).to_csv(root / "labels.csv", index=False)
    spec = {
        "dataset": "identified",
        "modalities": [
            {
                "name": "clinical",
                "kind": "tabular",
                "source": "clinical.csv",
                "id_column": "patient_id",
            },
            {
                "name": "notes",
                "kind": "text",
                "source": "notes.csv",
                "id_column": "patient_id",
                "preprocessing": {"method": "tfidf", "dim": 2, "min_df": 2},
            },
            {
                "name": "xray",
                "kind": "image",
                "source": "images.csv",
                "id_column": "patient_id",
                "preprocessing": {"size": [8, 8]},
                "encoder": {"name": "cnn2d"},
            },
            {
                "name": "vitals",
                "kind": "timeseries",
                "source": "vitals.csv",
                "id_column": "patient_id",
                "options": {"time_column": "minutes", "time_unit": "minutes"},
                "preprocessing": {"window": [0, 2], "resolution": 0.5},
            },
        ],  # fmt: skip
        "target": {
            "source": "labels.csv",
            "id_column": "patient_id",
            "column": "label",
            "classes": ["0", "1"],
        },  # fmt: skip
        "split": {"method": "predefined", "column": "split"},
        "fusion": {"name": "late", "hidden": 8},
        "training": {"max_epochs": 2, "val_fraction": 0.0},
        "privacy": {
            "drop_columns": {"clinical": ["full_name", "ssn"]},
            "date_columns": {"clinical": ["admitted", "discharged"]},
        },
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml", {"ids": ids, "names": names}


def test_deid_leaves_no_identifier_and_keeps_the_cohort_usable(tmp_path):
    spec_path, known = _identified(tmp_path / "data")
    out = tmp_path / "deid"
    link = tmp_path / "secret" / "linkage.csv"
    rep = deidentify_cohort(load_spec(spec_path), out, KEY, linkage=link)
    assert rep["patients"] == 40
    surnames = sorted({n.split()[1] for n in known["names"]})
    needles = [*known["ids"], *known["names"], *surnames, PHONE, "123-45-"]
    for f in out.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            left = [s for s in needles if s.encode() in blob]
            assert left == [], f"{f.name}: {left[:3]}"
    # one pseudonym per patient across modalities; dates moved, intervals kept
    clin = pd.read_csv(out / "clinical.csv")
    notes = pd.read_csv(out / "notes.csv")
    imgs = pd.read_csv(out / "xray.csv")
    labels = pd.read_csv(out / "labels.csv")
    pseud = {KEY.pseudonym(i) for i in known["ids"]}
    vitals = pd.read_csv(out / "vitals.csv")
    for df in (clin, notes, imgs, labels, vitals):
        assert set(df["patient_id"]) == pseud
    assert sorted(vitals["time"].unique()) == [0.0, 0.5, 1.0]  # minutes became hours
    assert {"full_name", "ssn"}.isdisjoint(clin.columns)
    assert "home_phone" not in labels.columns  # the label table keeps what the spec uses
    gap = pd.to_datetime(clin["discharged"]) - pd.to_datetime(clin["admitted"])
    assert (gap == pd.Timedelta(days=5)).all()
    orig = pd.read_csv(tmp_path / "data" / "clinical.csv").set_index("patient_id")
    first = known["ids"][0]
    moved = pd.Timestamp(clin.set_index("patient_id").loc[KEY.pseudonym(first), "admitted"])
    assert (moved - pd.Timestamp(orig.loc[first, "admitted"])).days == KEY.date_shift_days(first)
    # images: pixels kept, metadata gone
    with Image.open(out / imgs["path"].iloc[0]) as im:
        assert "Comment" not in im.info
    report = json.loads((out / "deid_report.json").read_text())
    assert report["modalities"]["notes"]["entities"]  # counts by type, no values
    assert link.exists() and len(pd.read_csv(link)) == 40
    assert link.stat().st_mode & 0o077 == 0  # the owner's alone
    with pytest.raises(PrivacyError, match="never overwritten"):
        deidentify_cohort(load_spec(spec_path), tmp_path / "again", KEY, linkage=link)
    # the de-identified spec reads and trains
    r = runner.invoke(app, ["fit", str(out / "spec.yaml"), "--out", str(tmp_path / "fit")])
    assert r.exit_code == 0, r.output[-1500:]


def test_deid_refuses_unsafe_runs(tmp_path):
    spec_path, _ = _identified(tmp_path / "data")
    spec = load_spec(spec_path)
    out = tmp_path / "deid"
    out.mkdir()
    (out / "x").write_text("old")
    with pytest.raises(PrivacyError, match="not empty"):
        deidentify_cohort(spec, out, KEY)
    with pytest.raises(PrivacyError, match="outside"):
        deidentify_cohort(spec, tmp_path / "new", KEY, linkage=tmp_path / "new" / "l.csv")
    # an interrupted run leaves no finished-looking folder
    bad = spec.model_copy(deep=True)
    bad.privacy.date_columns = {"clinical": ["nope"]}
    with pytest.raises(PrivacyError, match="nope"):
        deidentify_cohort(bad, tmp_path / "half", KEY)
    assert not (tmp_path / "half").exists() and not (tmp_path / "half.partial").exists()
    # numbers are not dates: a numeric column listed as dates is refused, never shifted
    bad.privacy.date_columns = {"clinical": ["admitted", "age"]}
    with pytest.raises(PrivacyError, match=r"column 'age' \(privacy.date_columns\) holds numbers"):
        deidentify_cohort(bad, tmp_path / "half", KEY)
    # a misspelt modality under privacy would leave its columns in: refused when parsed
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["privacy"]["drop_columns"] = {"clinicl": ["full_name"]}
    with pytest.raises(SpecError, match=r"privacy.drop_columns: \['clinicl'\] are not modalities"):
        parse_spec(d)


def test_unparseable_dates_are_set_missing_and_counted(tmp_path):
    spec_path, _ = _identified(tmp_path / "data")
    clin = pd.read_csv(tmp_path / "data" / "clinical.csv")
    clin.loc[0, "admitted"] = "sometime in spring"
    clin.to_csv(tmp_path / "data" / "clinical.csv", index=False)
    rep = deidentify_cohort(load_spec(spec_path), tmp_path / "deid", KEY)
    assert rep["modalities"]["clinical"]["dates_unparsed_set_missing"] == 1
    text = (tmp_path / "deid" / "clinical.csv").read_text()
    assert "spring" not in text


def test_kinds_deid_cannot_clean_are_a_named_error(tmp_path, monkeypatch):
    # every built-in kind is supported now: a kind without a cleaner (here: signals,
    # taken out of the list) is refused before anything is written
    monkeypatch.setattr(
        "holomed.privacy.cohort.SUPPORTED", ("tabular", "omics", "text", "image", "timeseries")
    )
    spec_path, _ = _identified(tmp_path / "data")
    d = yaml.safe_load(spec_path.read_text())
    d["modalities"].append({"name": "ecg", "kind": "signal", "source": "ecg.csv"})
    spec_path.write_text(yaml.safe_dump(d))
    with pytest.raises(PrivacyError, match=r"modalities \['ecg'\].*supports kinds"):
        deidentify_cohort(load_spec(spec_path), tmp_path / "out", KEY)
    assert not (tmp_path / "out").exists()


def test_an_ehr_cohort_is_deidentified_as_the_frames_it_trains_on(tmp_path, shared_dataset):
    """MIMIC-IV demo through the spec's ``ehr`` section: the written cohort holds the
    admissions' pseudonyms, times in hours since admission and no raw key or date."""
    from holomed.cohort import load_cohort

    shared_dataset("mimic_iv_demo")
    spec = load_spec(Path(__file__).parents[1] / "examples" / "mimic_iv_demo.yaml")
    before = load_cohort(spec)
    deidentify_cohort(spec, tmp_path / "out", KEY)
    after = load_cohort(load_spec(tmp_path / "out" / "spec.yaml"))
    assert len(after) == len(before)
    assert sorted(after.ids) == sorted(KEY.pseudonym(i) for i in before.ids)
    np.testing.assert_array_equal(
        after.y[np.argsort(after.ids)],
        before.y[np.argsort([KEY.pseudonym(i) for i in before.ids])],
    )
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("*.csv"))
    assert not any(f",{i}," in written or f"\n{i}," in written for i in before.ids)
    assert not pd.Series(written.split(",")).str.match(r"^\d{4}-\d{2}-\d{2}").any()  # no dates
    labs = pd.read_csv(tmp_path / "out" / "labs.csv")
    assert labs["time"].between(0, 24).all()  # hours since admission, the 24 h window


def test_modalities_reading_one_dataset_frame_share_one_deidentified_file(tmp_path):
    from holomed.synthetic import synthetic_spec_dict

    d = synthetic_spec_dict(n_patients=60, seed=1)
    d["modalities"] = [m for m in d["modalities"] if m["name"] in ("clinical", "expression")]
    d["modalities"].append({**d["modalities"][1], "name": "expr_again", "frame": "expression"})
    spec = parse_spec(d)
    spec.notes = ["Patient ids SYN-00003/SYN-00007 are the same person"]
    rep = deidentify_cohort(spec, tmp_path / "deid", KEY)
    assert rep["modalities"]["expr_again"]["same_file_as"] == "expression"
    assert "SYN-0000" not in (tmp_path / "deid" / "spec.yaml").read_text()  # notes left out
    new = load_spec(tmp_path / "deid" / "spec.yaml")
    src = {m.name: (m.source, m.frame) for m in new.modalities}
    assert src["expr_again"] == src["expression"] == (["expression.csv"], None)
    assert sorted(p.name for p in (tmp_path / "deid").glob("*.csv")) == [
        "clinical.csv", "expression.csv", "labels.csv"
    ]  # fmt: skip
    from holomed.cohort import load_cohort

    c = load_cohort(new)
    np.testing.assert_array_equal(
        c.modalities["expr_again"].present, c.modalities["expression"].present
    )


def test_ages_over_89_become_90(tmp_path):
    spec_path, _ = _identified(tmp_path / "data")
    clin = pd.read_csv(tmp_path / "data" / "clinical.csv")
    clin.loc[:2, "age"] = [90, 95, 104]
    clin.to_csv(tmp_path / "data" / "clinical.csv", index=False)
    spec = load_spec(spec_path)
    rep = deidentify_cohort(spec, tmp_path / "deid", KEY)  # default: columns named age
    assert rep["modalities"]["clinical"]["ages_over_89_set_to_90"] == 3
    out = pd.read_csv(tmp_path / "deid" / "clinical.csv")
    assert out["age"].max() == 90 and (out["age"] == 90).sum() == 3
    bad = spec.model_copy(deep=True)
    bad.privacy.age_columns = {"clinical": ["lab"], "target": []}  # named: only those
    rep = deidentify_cohort(bad, tmp_path / "deid2", KEY)
    assert pd.read_csv(tmp_path / "deid2" / "clinical.csv")["age"].max() == 104
    bad.privacy.age_columns = {"clinical": ["admitted"]}
    with pytest.raises(PrivacyError, match=r"column .admitted. \(privacy.age_columns\) holds text"):
        deidentify_cohort(bad, tmp_path / "deid3", KEY)


def test_rows_the_check_left_out_are_counted_by_reason_without_particulars(tmp_path):
    spec_path, ids = _identified(tmp_path / "data")
    clin = pd.read_csv(tmp_path / "data" / "clinical.csv")
    clin.loc[:1, "lab"] = np.inf
    clin.to_csv(tmp_path / "data" / "clinical.csv", index=False)
    rep = deidentify_cohort(load_spec(spec_path), tmp_path / "deid", KEY)
    left = rep["modalities"]["clinical"]["excluded_by_check"]
    assert sum(left.values()) == 2 and "other" not in left, left
    text = json.dumps(rep)
    assert not any(i in text for i in ids["ids"][:2]) and str(tmp_path) not in text
