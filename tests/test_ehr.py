"""The EHR cohort builder: synthetic CSV / CSV.gz / Parquet tables with known answers
(joins, window, hours since anchor, non-numeric values, counts, errors naming the file
and column, spec validation), then the real MIMIC-IV demo."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import load_cohort, patient_splits
from holomed.ehr import STATUSES, ehr_frames, validate_ehr
from holomed.errors import CohortError
from holomed.spec import SpecError, load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mimic_iv_demo.yaml"

# -- synthetic tables ------------------------------------------------------------------
# admissions (CSV): 101, 102 (subject 1), 103 (no target), 104 (a child: filtered out),
# 105 (no admission time). patients (CSV.gz). labevents (Parquet), d_labitems (CSV).


def _ts(s: str | None) -> pd.Timestamp:
    return pd.NaT if s is None else pd.Timestamp(s)


@pytest.fixture
def ehr_dir(tmp_path: Path) -> Path:
    pd.DataFrame(
        {
            "subject_id": [1, 1, 2, 3, 4],
            "hadm_id": [101, 102, 103, 104, 105],
            "admittime": [
                "2100-01-01 00:00:00",
                "2100-02-01 12:00:00",
                "2100-03-01 06:30:00",
                "2100-04-01 00:00:00",
                None,
            ],
            "admission_type": ["URGENT", "ELECTIVE", "URGENT", "URGENT", "ELECTIVE"],
            "hospital_expire_flag": [0, 1, None, 0, 0],
        }
    ).to_csv(tmp_path / "admissions.csv", index=False)
    pd.DataFrame(
        {"subject_id": [1, 2, 3, 4], "gender": ["F", "M", "F", "M"], "anchor_age": [60, 45, 10, 70]}
    ).to_csv(tmp_path / "patients.csv.gz", index=False, compression="gzip")
    rows = [  # hadm_id, itemid, charttime, value, valuenum -> expected status
        (101, 1, "2100-01-01 01:00:00", "1.5", 1.5),  # kept, t = 1 h
        (101, 1, "2100-01-01 00:30:00", "___", None),  # non_numeric
        (101, 2, "2099-12-31 22:00:00", "4.0", 4.0),  # before_window (-2 h)
        (101, 2, "2100-01-02 00:00:00", "4.1", 4.1),  # after_window (exactly 24 h)
        (101, 2, "2100-01-01 23:59:00", "4.2", 4.2),  # kept, t = 23.9833 h
        (101, 3, "2100-01-01 02:00:00", "99", 99.0),  # item_not_selected
        (101, 1, None, "1.6", 1.6),  # no_time
        (102, 2, "2100-02-01 14:30:00", "7", 7.0),  # kept, t = 2.5 h
        (None, 1, "2100-02-01 14:30:00", "1.0", 1.0),  # no_key
        (999, 1, "2100-02-01 14:30:00", "1.0", 1.0),  # unmatched_key
        (104, 1, "2100-04-01 01:00:00", "1.0", 1.0),  # unit_excluded (a child)
    ]
    labs = pd.DataFrame(rows, columns=["hadm_id", "itemid", "charttime", "value", "valuenum"])
    labs["hadm_id"] = labs["hadm_id"].astype("Int64")
    labs["subject_id"] = labs["hadm_id"].map({101: 1, 102: 1, 104: 3, 999: 9}).astype("Int64")
    labs["charttime"] = labs["charttime"].map(_ts)
    labs.to_parquet(tmp_path / "labevents.parquet", index=False)
    pd.DataFrame({"itemid": [1, 2, 3], "label": ["Sodium", "Potassium", "Glucose"]}).to_csv(
        tmp_path / "d_labitems.csv", index=False
    )
    return tmp_path


def ehr_section(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "root": ".",
        "tables": {
            "admissions": "admissions.csv",
            "patients": "patients.csv.gz",
            "labevents": "labevents.parquet",
            "d_labitems": "d_labitems.csv",
        },
        "index": {
            "table": "admissions",
            "key": "hadm_id",
            "time": "admittime",
            "filter": "anchor_age >= 18",
        },
        "joins": [{"table": "patients", "keys": "subject_id"}],
        "target": "hospital_expire_flag",
        "group": "subject_id",
        "attributes": {"sex": "gender", "age": "anchor_age"},
        "modalities": {
            "demo": {"kind": "tabular", "columns": ["gender", "anchor_age", "admission_type"]},
            "labs": {
                "kind": "timeseries",
                "table": "labevents",
                "key": "hadm_id",
                "time": "charttime",
                "variable": "itemid",
                "value": "valuenum",
                "value_text": "value",
                "dictionary": {"table": "d_labitems", "key": "itemid", "label": "label"},
                "items": [1, 2],
                "window": [0, 24],
            },
        },
    }
    for k, v in changes.items():
        d[k] = v
    return d


def make_spec(folder: Path, ehr: dict[str, Any] | None = None, **changes: Any):
    d: dict[str, Any] = {
        "dataset": "toy_ehr",
        "ehr": ehr if ehr is not None else ehr_section(),
        "modalities": [
            {"name": "demo", "kind": "tabular"},
            {"name": "labs", "kind": "timeseries"},
        ],
        "target": {"column": "death", "task": "binary", "classes": ["0", "1"]},
        "attributes": ["sex"],
    }
    d.update(changes)
    return parse_spec(d, where="toy.yaml", base_dir=str(folder))


# -- known answers ----------------------------------------------------------------------


def test_frames_known_answers(ehr_dir: Path) -> None:
    frames, target = ehr_frames(make_spec(ehr_dir))
    # 104 is a child (filter), 105 has no admission time: both out, counted
    assert list(target.index) == ["101", "102", "103"]
    assert target.columns.tolist() == ["death", "sex", "age", "group"]
    assert target["death"].iloc[:2].tolist() == [0, 1] and pd.isna(target["death"].iloc[2])
    assert target["group"].tolist() == ["1", "1", "2"]  # subject ids as text
    demo = frames["demo"]
    assert demo.index.name == "id" and list(demo.index) == ["101", "102", "103"]
    assert demo.columns.tolist() == ["gender", "anchor_age", "admission_type"]
    assert demo.loc["102"].tolist() == ["F", 60, "ELECTIVE"]

    labs = frames["labs"]
    assert labs.columns.tolist() == ["id", "time", "variable", "value"]
    assert labs["id"].tolist() == ["101", "101", "102"]
    np.testing.assert_allclose(labs["time"], [1.0, 23 + 59 / 60, 2.5])
    assert labs["variable"].tolist() == ["Sodium", "Potassium", "Potassium"]
    np.testing.assert_allclose(labs["value"], [1.5, 4.2, 7.0])
    assert labs["time"].dtype == float and labs["value"].dtype == float

    rep = target.attrs["ehr_report"]
    assert rep["index"] == {
        "table": "admissions",
        "file": str(ehr_dir / "admissions.csv"),
        "rows": 5,
        "no_key": 0,
        "excluded_by_filter": 1,
        "no_anchor_time": 1,
        "units": 3,
        "no_target": 1,
    }
    lab = rep["modalities"]["labs"]
    assert {s: lab[s] for s in STATUSES} == {
        "no_key": 1,
        "unmatched_key": 1,
        "unit_excluded": 1,
        "item_not_selected": 1,
        "excluded_by_filter": 0,
        "no_time": 1,
        "before_window": 1,
        "after_window": 1,
        "non_numeric": 1,
        "kept": 3,
    }
    assert lab["rows"] == 11 and lab["non_numeric_values"] == {"___": 1}
    assert lab["units_with_events"] == 2 and lab["units_without_events"] == 1
    assert rep["modalities"]["demo"] == {"kind": "tabular", "units": 3, "features": 3}
    # per-unit losses travel to the cohort's report
    entries = demo.attrs["reading_report"]
    assert {"id": "105", "scope": "patient"}.items() <= entries[0].items()
    assert "no anchor time" in entries[0]["reason"]
    bad = [e for e in entries if e["scope"] == "value"]
    assert len(bad) == 1 and bad[0]["id"] == "101" and bad[0]["count"] == 1
    assert "'Sodium' is not a number" in bad[0]["reason"]


def test_load_cohort_reports_everything(ehr_dir: Path) -> None:
    cohort = load_cohort(make_spec(ehr_dir))
    assert cohort.ids.tolist() == ["101", "102"]  # 103 has no target
    assert cohort.y.tolist() == [0, 1]
    assert cohort.presence()["labs"].tolist() == [True, True]
    assert cohort.attributes["sex"].tolist() == ["F", "F"]
    reasons = {(e["id"], e["reason"].split(" in ")[0]) for e in cohort.excluded}
    assert ("103", "missing label") in reasons
    assert any(e["id"] == "105" and "no anchor time" in e["reason"] for e in cohort.excluded)
    assert any(e["id"] == "101" and e.get("scope") == "value" for e in cohort.excluded)


def test_text_values_parsed_and_counted(ehr_dir: Path) -> None:
    """Without a numeric column the text is parsed; what is not a number is counted with
    the texts that were seen."""
    labs = pd.read_parquet(ehr_dir / "labevents.parquet")
    labs.loc[labs["valuenum"] == 4.2, "value"] = "<0.2"
    labs.to_parquet(ehr_dir / "labevents.parquet", index=False)
    ehr = ehr_section()
    ehr["modalities"]["labs"].update(value="value", value_text=None, items=None)
    frames, target = ehr_frames(make_spec(ehr_dir, ehr))
    lab = target.attrs["ehr_report"]["modalities"]["labs"]
    assert lab["non_numeric"] == 2 and lab["non_numeric_values"] == {"<0.2": 1, "___": 1}
    assert lab["item_not_selected"] == 0  # no item list: every item is kept ...
    assert sorted(frames["labs"]["variable"]) == ["Glucose", "Potassium", "Sodium"]


def test_events_by_patient_key_match_each_admission(ehr_dir: Path) -> None:
    """Labs matched on subject_id are windowed against each admission of the patient."""
    ehr = ehr_section()
    ehr["modalities"]["labs"].update(key="subject_id", index_key="subject_id", items=[2])
    frames, target = ehr_frames(make_spec(ehr_dir, ehr))
    labs = frames["labs"]
    # subject 1's potassium at 2100-02-01 14:30 is inside 102's window, outside 101's
    assert labs[labs["id"] == "102"]["time"].tolist() == [2.5]
    assert labs[labs["id"] == "101"]["time"].round(4).tolist() == [23.9833]
    lab = target.attrs["ehr_report"]["modalities"]["labs"]
    # each event of subject 1 is counted once per admission: 3 before 102 and 1 before 101
    assert (lab["before_window"], lab["after_window"], lab["kept"]) == (4, 2, 2)


def test_items_named_and_labels_disambiguated(ehr_dir: Path) -> None:
    ehr = ehr_section()
    ehr["modalities"]["labs"]["items"] = {1: "na", 2: "k"}
    frames, _ = ehr_frames(make_spec(ehr_dir, ehr))
    assert frames["labs"]["variable"].tolist() == ["na", "k", "k"]

    pd.DataFrame({"itemid": [1, 2, 3], "label": ["Glucose", "Glucose", "x"]}).to_csv(
        ehr_dir / "d_labitems.csv", index=False
    )
    frames, _ = ehr_frames(make_spec(ehr_dir))
    assert frames["labs"]["variable"].tolist() == ["Glucose (1)", "Glucose (2)", "Glucose (2)"]


def test_times_in_hours(tmp_path: Path) -> None:
    """Numeric anchor and event times are hours already."""
    pd.DataFrame({"stay": ["a", "b"], "t0": [10.0, 0.0], "y": [0, 1]}).to_csv(
        tmp_path / "stays.csv", index=False
    )
    pd.DataFrame(
        {"stay": ["a", "a", "b"], "t": [12.0, 9.0, 47.5], "var": ["hr"] * 3, "v": [80, 81, 82]}
    ).to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    ehr = {  # an alias may be any name, even one SQL queries often use internally
        "tables": {"stays": "stays.csv", "e": "events.tsv"},
        "index": {"table": "stays", "key": "stay", "time": "t0"},
        "target": "y",
        "modalities": {
            "labs": {
                "kind": "timeseries",
                "table": "e",
                "key": "stay",
                "time": "t",
                "variable": "var",
                "value": "v",
                "window": [-2, 48],
            },
            "demo": {"kind": "tabular", "columns": {"t0": "t0 * 2"}},
        },
    }
    frames, target = ehr_frames(make_spec(tmp_path, ehr, attributes=[]))
    assert frames["labs"]["time"].tolist() == [-1.0, 2.0, 47.5]
    assert frames["demo"]["t0"].tolist() == [20.0, 0.0]
    assert target["death"].tolist() == [0, 1]


def test_table_from_parquet_parts(ehr_dir: Path) -> None:
    labs = pd.read_parquet(ehr_dir / "labevents.parquet")
    (ehr_dir / "parts").mkdir()
    labs.iloc[:5].to_parquet(ehr_dir / "parts" / "a.parquet", index=False)
    labs.iloc[5:].to_parquet(ehr_dir / "parts" / "b.parquet", index=False)
    ehr = ehr_section()
    ehr["tables"]["labevents"] = "parts/*.parquet"
    frames, target = ehr_frames(make_spec(ehr_dir, ehr))
    assert (
        len(frames["labs"]) == 3 and target.attrs["ehr_report"]["modalities"]["labs"]["rows"] == 11
    )


# -- errors that name the file and the column ------------------------------------------------


def test_missing_column_names_file_and_column(ehr_dir: Path) -> None:
    ehr = ehr_section()
    ehr["index"]["key"] = "hadmid"
    with pytest.raises(CohortError, match=r"admissions\.csv: column 'hadmid' not found"):
        ehr_frames(make_spec(ehr_dir, ehr))

    ehr = ehr_section()
    ehr["modalities"]["labs"]["time"] = "chart_time"
    with pytest.raises(CohortError, match=r"labevents\.parquet.*'chart_time'|'chart_time'.*labev"):
        ehr_frames(make_spec(ehr_dir, ehr))

    ehr = ehr_section()
    ehr["modalities"]["demo"]["columns"] = {"bmi": "weight / height ^ 2"}
    with pytest.raises(CohortError) as err:
        ehr_frames(make_spec(ehr_dir, ehr))
    msg = str(err.value)
    assert "modalities.demo.columns.bmi" in msg and "'weight'" in msg
    assert "admissions.csv" in msg and "patients.csv.gz" in msg

    ehr = ehr_section(attributes={"sex": "patients.sex"})
    with pytest.raises(CohortError, match=r"patients\.csv\.gz: column 'sex' not found"):
        ehr_frames(make_spec(ehr_dir, ehr))

    ehr = ehr_section(joins=[{"table": "patients", "keys": "subjectid"}])
    with pytest.raises(CohortError, match=r"patients\.csv\.gz: column 'subjectid' not found"):
        ehr_frames(make_spec(ehr_dir, ehr))


def test_missing_table_names_the_file(ehr_dir: Path) -> None:
    (ehr_dir / "d_labitems.csv").unlink()
    with pytest.raises(CohortError, match=r"d_labitems\.csv: file of table 'd_labitems'"):
        ehr_frames(make_spec(ehr_dir))


def test_unset_variable_in_root_is_named(ehr_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("HOLOMED_NO_SUCH_VAR", raising=False)
    ehr = ehr_section(root="$HOLOMED_NO_SUCH_VAR/x")
    with pytest.raises(CohortError, match="environment variable"):
        ehr_frames(make_spec(ehr_dir, ehr))


def test_one_row_per_unit(ehr_dir: Path) -> None:
    adm = pd.read_csv(ehr_dir / "admissions.csv")
    pd.concat([adm, adm.iloc[[1]]]).to_csv(ehr_dir / "admissions.csv", index=False)
    with pytest.raises(CohortError, match=r"admissions\.csv: key 'hadm_id' = '102' has 2 rows"):
        ehr_frames(make_spec(ehr_dir))
    adm.to_csv(ehr_dir / "admissions.csv", index=False)
    pat = pd.read_csv(ehr_dir / "patients.csv.gz")
    pd.concat([pat, pat.iloc[[0]]]).to_csv(ehr_dir / "patients.csv.gz", index=False)
    with pytest.raises(CohortError, match=r"patients\.csv\.gz: 2 rows .* subject_id = 1"):
        ehr_frames(make_spec(ehr_dir))


def test_feature_equal_to_target_is_refused(ehr_dir: Path) -> None:
    ehr = ehr_section()
    ehr["modalities"]["demo"]["columns"] = ["gender", "hospital_expire_flag"]
    with pytest.raises(CohortError, match="must not be the label"):
        ehr_frames(make_spec(ehr_dir, ehr))


def test_spec_and_frames_must_agree(ehr_dir: Path) -> None:
    ehr = ehr_section()
    ehr["modalities"]["demo"]["kind"] = "timeseries"
    ehr["modalities"]["demo"].update(
        table="labevents", key="hadm_id", time="charttime", variable="itemid", value="valuenum"
    )
    del ehr["modalities"]["demo"]["columns"]
    with pytest.raises(CohortError, match="kind 'timeseries' but the spec's modality 'demo'"):
        ehr_frames(make_spec(ehr_dir, ehr))
    with pytest.raises(CohortError, match=r"attributes \['race'\] are not produced"):
        ehr_frames(make_spec(ehr_dir, attributes=["race"]))


# -- spec validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["joins"][0].update(table="patient"), "joins.0.table: table 'patient' is not"),
        (lambda d: d["modalities"]["labs"].update(window=[24, 0]), "window [24.0, 0.0] is empty"),
        (lambda d: d["index"].update(anchor="admittime"), "index.anchor: Extra inputs"),
        (lambda d: d.pop("target"), "target: Field required"),
        (lambda d: d["index"].update(filter="1; DROP TABLE x"), "contains ';'"),
        (lambda d: d["index"].pop("time"), "a timeseries needs the anchor time"),
        (lambda d: d["modalities"]["labs"].update(kind="events"), "modalities.labs: Input tag"),
        (lambda d: d["modalities"]["labs"].pop("value"), "modalities.labs.value: Field required"),
        (lambda d: d["tables"].update({"1x": "a.csv"}), "table alias '1x'"),
        (lambda d: d["modalities"]["demo"].update(columns=[]), "no column given"),
    ],
)
def test_spec_errors_name_the_field(ehr_dir: Path, change, expected: str) -> None:
    d = ehr_section()
    change(d)
    with pytest.raises(SpecError) as err:
        make_spec(ehr_dir, d)
    msg = str(err.value)
    assert msg.startswith("toy.yaml: ehr: ") and expected in msg


def test_validate_ehr_normalises() -> None:
    out = validate_ehr(ehr_section())
    assert out["tables"]["patients"] == {"path": "patients.csv.gz", "format": None, "options": {}}
    assert out["modalities"]["demo"]["columns"]["anchor_age"] == "anchor_age"
    assert out["modalities"]["labs"]["items"] == ["1", "2"]
    assert out["joins"][0]["keys"] == ["subject_id"]
    assert validate_ehr(copy.deepcopy(out)) == out  # normal form is a fixed point


# -- the real MIMIC-IV demo ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic(request) -> tuple:
    from conftest import require_shared_data

    require_shared_data("mimic_iv_demo")
    spec = load_spec(EXAMPLE)
    start = time.perf_counter()
    frames, target = ehr_frames(spec)
    return spec, frames, target, time.perf_counter() - start


def test_mimic_iv_demo_frames(mimic) -> None:
    spec, frames, target, seconds = mimic
    rep = target.attrs["ehr_report"]
    assert len(target) == 275 and rep["index"]["units"] == 275
    assert int(target["in_hospital_death"].sum()) == 15
    assert target["group"].nunique() == 100  # admissions of 100 patients
    assert frames["admission"].shape == (275, 8)
    assert not {"dischtime", "deathtime", "discharge_location", "hospital_expire_flag"} & set(
        frames["admission"].columns
    )
    labs = rep["modalities"]["labs"]
    # checked independently with pandas on the same files
    assert labs["rows"] == 107727
    assert labs["no_key"] == 28420  # labs without an admission id (ED, outpatient)
    assert labs["unmatched_key"] == 0 and labs["unit_excluded"] == 0
    assert labs["item_not_selected"] == 42277
    assert (labs["before_window"], labs["after_window"]) == (550, 30020)
    assert labs["non_numeric"] == 12 and labs["kept"] == 6448
    assert labs["units_with_events"] == 234 and labs["variables"] == 18
    long = frames["labs"]
    assert len(long) == 6448 and long["time"].between(0, 24, inclusive="left").all()
    assert set(long["id"]) <= set(target.index)
    assert seconds < 15


def test_mimic_iv_demo_end_to_end(mimic) -> None:
    from holomed.model import Model

    spec, *_ = mimic
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["training"].update(max_epochs=2, patience=2)
    d["split"] = {"method": "holdout", "test_size": 0.25}
    spec = parse_spec(d, where=str(EXAMPLE), base_dir=spec.base_dir)
    cohort = load_cohort(spec)
    assert len(cohort) == 275 and int(cohort.y.sum()) == 15
    assert cohort.presence()["labs"].sum() == 234
    train, test = patient_splits(cohort, spec.split, seed=0)[0]
    model = Model(spec, fusion="late", seed=0).fit(cohort.subset(train))
    p = model.predict_proba(cohort.subset(test))
    assert p.shape == (len(test), 2) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
