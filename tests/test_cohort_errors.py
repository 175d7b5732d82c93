"""Bad input, one test each: the cohort either reports what it dropped and why, or
raises an error that names the file, the patient, the column or the spec field.
Nothing disappears silently."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from holomed.cohort import build_cohort
from holomed.errors import CohortError, RegistryError
from holomed.modalities.tabular import TabularPreprocessor
from holomed.model import Model
from holomed.spec import SpecError, load_spec, parse_spec

# -- helpers -------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(textwrap.dedent(text).lstrip())
    return name


def labs_and_labels(tmp_path: Path, labs: str, labels: str | None = None) -> None:
    write(tmp_path, "labs.csv", labs)
    write(
        tmp_path,
        "labels.csv",
        labels
        or """
        pid,label
        P1,0
        P2,1
        P3,0
        P4,1
        """,
    )


def spec_for(tmp_path: Path, modalities: list[dict] | None = None, **sections):
    mods = modalities or [{"name": "labs", "kind": "tabular", "source": "labs.csv"}]
    for m in mods:
        m.setdefault("id_column", "pid")
    d = {
        "modalities": mods,
        "target": {"source": "labels.csv", "id_column": "pid", "column": "label"},
        "training": {"max_epochs": 2, "batch_size": 8},
        **sections,
    }
    return parse_spec(d, where=str(tmp_path / "spec.yaml"), base_dir=str(tmp_path))


def reasons(cohort, pid: str) -> list[str]:
    return [e["reason"] for e in cohort.excluded if e["id"] == pid]


# -- ids -----------------------------------------------------------------------------


def test_ids_not_matching_across_modalities(tmp_path):
    """Each modality has its own patients: presence masks say who has what; ids with
    data but no label, and labels with no data, are reported."""
    write(
        tmp_path,
        "labs.csv",
        """
        pid,crp,age
        P1,1.0,50
        P2,2.0,60
        P3,3.0,70
        P4,4.0,80
        """,
    )
    write(
        tmp_path,
        "genes.csv",
        """
        pid,g1,g2
        P3,0.1,0.2
        P4,0.3,0.4
        P5,0.5,0.6
        P6,0.7,0.8
        P9,0.9,1.0
        """,
    )
    write(
        tmp_path,
        "labels.csv",
        """
        pid,label
        P1,0
        P2,1
        P3,0
        P4,1
        P5,0
        P6,1
        P7,0
        """,
    )
    spec = spec_for(
        tmp_path,
        [
            {"name": "labs", "kind": "tabular", "source": "labs.csv"},
            {"name": "genes", "kind": "omics", "source": "genes.csv"},
        ],
    )
    c = build_cohort(spec)
    assert c.ids.tolist() == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert c.modalities["labs"].present.tolist() == [True] * 4 + [False] * 2
    assert c.modalities["genes"].present.tolist() == [False] * 2 + [True] * 4
    # aligned values: a present row holds that patient's own data
    assert c.modalities["genes"].values.loc["P5", "g1"] == pytest.approx(0.5)
    assert c.modalities["labs"].values.loc["P4", "crp"] == pytest.approx(4.0)
    assert reasons(c, "P9") == ["not in the label table"]
    assert reasons(c, "P7") == ["no data in any modality"]
    assert {e["scope"] for e in c.excluded} == {"patient"}
    # nothing disappears silently: every id seen is either in the cohort or excluded
    seen = {f"P{i}" for i in (1, 2, 3, 4, 5, 6, 7, 9)}
    assert set(c.ids) | {e["id"] for e in c.excluded} == seen
    assert not set(c.ids) & {e["id"] for e in c.excluded}


def test_ids_are_stripped_strings(tmp_path):
    """Numeric ids and stray spaces: ids are compared as stripped strings."""
    (tmp_path / "labs.csv").write_text("pid,crp\n 1,1.0\n2 ,2.0\n3,3.0\n4,4.0\n")
    (tmp_path / "labels.csv").write_text("pid,label\n1,a\n2,b\n3,a\n4,b\n")
    c = build_cohort(spec_for(tmp_path))
    assert c.ids.tolist() == ["1", "2", "3", "4"]
    assert c.modalities["labs"].present.all()
    assert c.classes == ["a", "b"] and c.y.tolist() == [0, 1, 0, 1]


def test_duplicate_id_names_the_id_and_file(tmp_path):
    labs_and_labels(
        tmp_path,
        """
        pid,crp
        P1,1.0
        P2,2.0
        P2,2.5
        P3,3.0
        """,
    )
    with pytest.raises(CohortError, match=r"'P2' has 2 rows in .*labs\.csv; expected 1"):
        build_cohort(spec_for(tmp_path))


def test_duplicate_id_across_two_source_files_names_both(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1.0\nP2,2.0\n")
    write(tmp_path, "labs_more.csv", "pid,crp\nP3,3.0\nP1,1.5\n")
    spec = spec_for(
        tmp_path, [{"name": "labs", "kind": "tabular", "source": ["labs.csv", "labs_more.csv"]}]
    )
    with pytest.raises(CohortError) as err:
        build_cohort(spec)
    msg = str(err.value)
    assert "'P1'" in msg and "labs.csv" in msg and "labs_more.csv" in msg


def test_duplicate_id_in_label_table(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\n", "pid,label\nP1,0\nP2,1\nP1,1\n")
    with pytest.raises(CohortError, match=r"'P1'.*labels\.csv"):
        build_cohort(spec_for(tmp_path))


def test_missing_id_value_names_the_row(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\n,2\nP3,3\n")
    with pytest.raises(CohortError, match=r"labs\.csv: row 3 has no patient id"):
        build_cohort(spec_for(tmp_path))


# -- values --------------------------------------------------------------------------


def test_nan_values_are_kept_and_imputed(tmp_path):
    labs_and_labels(
        tmp_path,
        """
        pid,crp,age
        P1,1.0,50
        P2,,60
        P3,3.0,
        P4,5.0,80
        """,
    )
    c = build_cohort(spec_for(tmp_path))
    labs = c.modalities["labs"]
    assert labs.present.all() and not c.excluded
    assert np.isnan(labs.values.loc["P2", "crp"])
    pre = TabularPreprocessor().fit(labs)
    out = pre.transform(labs)
    assert np.isfinite(out).all()
    assert pre.feature_names_out_ == ["crp", "age", "crp__missing", "age__missing"]
    # P2's crp imputed with the median of the others (3.0), then scaled like them
    crp = (out[:, 0] * pre.scale_[0]) + pre.loc_[0]
    assert crp[1] == pytest.approx(3.0)
    assert out[:, 2].tolist() == [0, 1, 0, 0] and out[:, 3].tolist() == [0, 0, 1, 0]


def test_all_nan_row_makes_the_modality_absent_and_is_reported(tmp_path):
    labs_and_labels(
        tmp_path,
        """
        pid,crp,age
        P1,1.0,50
        P2,,
        P3,3.0,70
        P4,,
        """,
    )
    write(tmp_path, "genes.csv", "pid,g1\nP1,0.1\nP2,0.2\nP3,0.3\n")
    spec = spec_for(
        tmp_path,
        [
            {"name": "labs", "kind": "tabular", "source": "labs.csv"},
            {"name": "genes", "kind": "omics", "source": "genes.csv"},
        ],
    )
    c = build_cohort(spec)
    # P2 keeps genes, loses labs; P4 had only labs, so it leaves the cohort
    assert c.ids.tolist() == ["P1", "P2", "P3"]
    assert c.modalities["labs"].present.tolist() == [True, False, True]
    p2 = [e for e in c.excluded if e["id"] == "P2"]
    assert len(p2) == 1 and p2[0]["modality"] == "labs" and p2[0]["scope"] == "modality"
    assert "no value at all" in p2[0]["reason"] and "labs.csv" in p2[0]["reason"]
    r4 = reasons(c, "P4")
    assert any("no value at all" in r for r in r4)
    assert any("unusable" in r for r in r4)


@pytest.mark.parametrize("bad", ["inf", "-inf"])
def test_inf_is_reported_naming_the_column(tmp_path, bad):
    labs_and_labels(
        tmp_path,
        f"""
        pid,age,crp
        P1,50,1.0
        P2,60,{bad}
        P3,70,3.0
        P4,80,4.0
        """,
    )
    c = build_cohort(spec_for(tmp_path))
    # the cell becomes missing (imputed later); the patient keeps its other values
    assert "P2" in c.ids and c.modalities["labs"].present.all()
    (entry,) = [e for e in c.excluded if e["id"] == "P2" and e["scope"] == "value"]
    assert "'crp'" in entry["reason"] and "inf" in entry["reason"]
    assert entry["modality"] == "labs" and entry["count"] == 1
    vals = c.modalities["labs"].values
    assert np.isnan(vals.loc["P2", "crp"]) and vals.loc["P2", "age"] == 60
    assert not np.isinf(vals.to_numpy(float)).any()
    # a row whose only values are not finite loses the modality, and says why
    labs_and_labels(tmp_path, f"pid,crp\nP1,1.0\nP2,{bad}\nP3,3.0\nP4,4.0\n")
    c = build_cohort(spec_for(tmp_path))
    why = [e["reason"] for e in c.excluded if e["id"] == "P2" and e["scope"] == "modality"]
    assert why and "infinite or beyond float32's range" in why[0]


@pytest.mark.parametrize(("kind", "col"), [("tabular", "crp"), ("omics", "g2")])
def test_text_in_numeric_column_names_column_patient_and_value(tmp_path, kind, col):
    labs_and_labels(
        tmp_path,
        f"""
        pid,age,{col}
        P1,50,1.0
        P2,60,2.0
        P3,70,high
        P4,80,4.0
        """,
    )
    spec = spec_for(tmp_path, [{"name": "labs", "kind": kind, "source": "labs.csv"}])
    with pytest.raises(CohortError) as err:
        build_cohort(spec)
    msg = str(err.value)
    assert f"'{col}'" in msg and "'P3'" in msg and "'high'" in msg and "labs.csv" in msg
    # the hint fits the kind: omics has no categorical columns to declare
    assert ("'categorical'" in msg) == (kind == "tabular")


def test_a_repeated_column_name_is_an_error_not_a_renamed_column(tmp_path):
    labs_and_labels(tmp_path, "pid,crp,age,crp\nP1,1,50,2\nP2,2,60,3\n")
    with pytest.raises(CohortError, match=r"labs\.csv: column 'crp' appears more than once"):
        build_cohort(spec_for(tmp_path))


def test_a_categorical_column_not_in_the_table_is_named(tmp_path):
    labs_and_labels(tmp_path, "pid,sex,crp\nP1,F,1\nP2,M,2\nP3,F,3\nP4,M,4\n")
    mods = [{"name": "labs", "kind": "tabular", "source": "labs.csv", "categorical": ["sexx"]}]
    with pytest.raises(CohortError, match=r"labs\.csv.*categorical columns \['sexx'\]"):
        build_cohort(spec_for(tmp_path, mods))


def test_text_column_without_numbers_is_categorical_not_an_error(tmp_path):
    labs_and_labels(tmp_path, "pid,sex,crp\nP1,F,1\nP2,M,2\nP3,F,3\nP4,M,4\n")
    c = build_cohort(spec_for(tmp_path))
    pre = TabularPreprocessor().fit(c.modalities["labs"])
    assert pre.categorical_ == ["sex"] and pre.numeric_ == ["crp"]


def test_declared_categorical_with_numbers_is_not_numeric(tmp_path):
    labs_and_labels(tmp_path, "pid,site,crp\nP1,1,1\nP2,2,2\nP3,1,3\nP4,3,4\n")
    spec = spec_for(
        tmp_path,
        [{"name": "labs", "kind": "tabular", "source": "labs.csv", "categorical": ["site"]}],
    )
    pre = TabularPreprocessor().fit(build_cohort(spec).modalities["labs"])
    assert pre.categorical_ == ["site"] and len(pre.categories_["site"]) == 3


# -- labels --------------------------------------------------------------------------


def test_patient_without_label_is_reported(tmp_path):
    labs_and_labels(
        tmp_path,
        "pid,crp\nP1,1\nP2,2\nP3,3\nP4,4\n",
        "pid,label\nP1,0\nP2,1\nP3,\nP4,1\n",
    )
    c = build_cohort(spec_for(tmp_path))
    assert c.ids.tolist() == ["P1", "P2", "P4"]
    assert reasons(c, "P3") == ["missing label in column 'label'"]
    assert c.y.tolist() == [0, 1, 1]


def test_label_table_reused_as_a_modality_is_refused_naming_the_column(tmp_path):
    # one CSV for the labels and the clinical table: the label (and the split) would be
    # model inputs and the model would read its own outcome
    write(tmp_path, "all.csv", "pid,crp,label,split\nP1,1,0,train\nP2,2,1,train\n"
          "P3,3,0,test\nP4,4,1,test\n")  # fmt: skip
    t = {"source": "all.csv", "id_column": "pid", "column": "label"}
    mods = [{"name": "labs", "kind": "tabular", "source": "all.csv"}]
    spec = spec_for(tmp_path, mods, target=t)
    with pytest.raises(CohortError, match=r"all\.csv: modality 'labs' has column 'label', "
                       r"the spec's target\.column.*'columns:'"):  # fmt: skip
        build_cohort(spec)
    split = {"method": "predefined", "column": "split"}
    mods = [{"name": "labs", "kind": "tabular", "source": "all.csv", "columns": ["crp", "split"]}]
    with pytest.raises(CohortError, match=r"column 'split', the spec's split\.column"):
        build_cohort(spec_for(tmp_path, mods, target=t, split=split))
    # naming the inputs is the way out
    mods = [{"name": "labs", "kind": "tabular", "source": "all.csv", "columns": ["crp"]}]
    c = build_cohort(spec_for(tmp_path, mods, target=t, split=split))
    assert c.modalities["labs"].feature_names == ["crp"] and c.y.tolist() == [0, 1, 0, 1]


def test_target_column_missing_names_the_columns(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\n", "pid,outcome\nP1,0\nP2,1\n")
    with pytest.raises(CohortError, match=r"target column 'label' not found.*outcome"):
        build_cohort(spec_for(tmp_path))


def test_binary_task_with_three_classes(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\nP3,3\n", "pid,label\nP1,a\nP2,b\nP3,c\n")
    with pytest.raises(CohortError, match="binary task needs 2 classes"):
        build_cohort(spec_for(tmp_path))


def test_label_outside_declared_classes(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\nP3,3\n", "pid,label\nP1,a\nP2,b\nP3,z\n")
    spec = spec_for(
        tmp_path,
        target={"source": "labels.csv", "id_column": "pid", "classes": ["a", "b"]},
    )
    with pytest.raises(CohortError, match=r"\['z'\].*not among classes"):
        build_cohort(spec)


def test_regression_target_with_text(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\n", "pid,label\nP1,1.5\nP2,lots\n")
    spec = spec_for(
        tmp_path, target={"source": "labels.csv", "id_column": "pid", "task": "regression"}
    )
    with pytest.raises(CohortError, match=r"'P2'.*not a number.*'lots'"):
        build_cohort(spec)


# -- files -----------------------------------------------------------------------------


def test_missing_modality_file_names_the_file(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\n")
    spec = spec_for(tmp_path, [{"name": "labs", "kind": "tabular", "source": "nope.csv"}])
    with pytest.raises(CohortError, match=r"nope\.csv: file not found"):
        build_cohort(spec)


def test_a_folder_as_source_names_the_modality(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\n")
    spec = spec_for(tmp_path, [{"name": "labs", "kind": "tabular", "source": "."}])
    with pytest.raises(CohortError, match=r"modality 'labs': 'source' is a folder"):
        build_cohort(spec)


def test_frames_given_in_memory_with_a_repeated_id_are_refused():
    import pandas as pd

    from holomed.synthetic import make_synthetic, synthetic_spec_dict

    spec = parse_spec(synthetic_spec_dict(n_patients=40))
    frames, target, _ = make_synthetic(n_patients=40)
    twice = dict(frames, clinical=pd.concat([frames["clinical"], frames["clinical"].iloc[:1]]))
    with pytest.raises(CohortError, match=r"modality 'clinical'.*'SYN-00000' has more than one"):
        build_cohort(spec, twice, target)
    with pytest.raises(CohortError, match=r"labels: patient 'SYN-00001' has more than one row"):
        build_cohort(spec, frames, pd.concat([target, target.iloc[1:2]]))


def test_missing_label_file_names_the_file(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\n")
    spec = spec_for(tmp_path, target={"source": "gone.csv", "id_column": "pid"})
    with pytest.raises(CohortError, match=r"gone\.csv: file not found"):
        build_cohort(spec)


def test_empty_modality_file(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\n")
    with pytest.raises(CohortError, match=r"labs\.csv.*no rows"):
        build_cohort(spec_for(tmp_path))


def test_modality_without_feature_columns(tmp_path):
    labs_and_labels(tmp_path, "pid\nP1\nP2\n")
    with pytest.raises(CohortError, match="no feature columns"):
        build_cohort(spec_for(tmp_path))


def test_modality_matching_no_labelled_patient(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\n")
    write(tmp_path, "genes.csv", "pid,g1\nX1,0.1\nX2,0.2\n")
    spec = spec_for(
        tmp_path,
        [
            {"name": "labs", "kind": "tabular", "source": "labs.csv"},
            {"name": "genes", "kind": "omics", "source": "genes.csv"},
        ],
    )
    with pytest.raises(CohortError, match="'genes': none of its ids match a labelled patient"):
        build_cohort(spec)
    with pytest.raises(CohortError) as err:
        build_cohort(spec)
    msg = str(err.value)  # the file, and ids from both sides to compare
    assert "genes.csv" in msg and "'X1', 'X2'" in msg and "'P1', 'P2'" in msg


def test_bad_class_and_split_values_name_the_patients(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nP1,1\nP2,2\nP3,3\n", "pid,label,split\nP1,a\nP2,b\nP3,z\n")
    t = {"source": "labels.csv", "id_column": "pid", "classes": ["a", "b"]}
    with pytest.raises(CohortError, match=r"\['z'\] are not among classes.*patients 'P3'"):
        build_cohort(spec_for(tmp_path, target=t))
    write(tmp_path, "labels.csv", "pid,label,split\nP1,a,train\nP2,b,\nP3,a,test\n")
    split = {"method": "predefined", "column": "split"}
    with pytest.raises(CohortError, match=r"values \['\(empty\)'\] \(patients 'P2'\)"):
        build_cohort(spec_for(tmp_path, target=t, split=split))


def test_no_patient_with_label_and_data(tmp_path):
    labs_and_labels(tmp_path, "pid,crp\nX1,1\n", "pid,label\nP1,0\nP2,1\n")
    with pytest.raises(CohortError, match="no patient has both a label and data"):
        build_cohort(spec_for(tmp_path))


def test_unknown_id_column_lists_columns(tmp_path):
    labs_and_labels(tmp_path, "patient,crp\nP1,1\n")
    with pytest.raises(CohortError, match=r"id column 'pid' not found.*patient"):
        build_cohort(spec_for(tmp_path))


def test_unreadable_table(tmp_path):
    write(tmp_path, "labels.csv", "pid,label\nP1,0\n")
    (tmp_path / "labs.parquet").write_bytes(b"not parquet at all")
    spec = spec_for(tmp_path, [{"name": "labs", "kind": "tabular", "source": "labs.parquet"}])
    with pytest.raises(CohortError, match=r"labs\.parquet: cannot be read as a table"):
        build_cohort(spec)


# -- spec: unknown names ---------------------------------------------------------------

FUSION_NAMES = "attention, early, gradual, guided, hybrid, joint, late"


def _fit_tiny_files(tmp_path, spec):
    return Model(spec).fit(build_cohort(spec))


def _tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = "\n".join(f"P{i},{rng.normal():.3f},{rng.normal():.3f}" for i in range(20))
    labs_and_labels(
        tmp_path,
        "pid,crp,age\n" + rows + "\n",
        "pid,label\n" + "\n".join(f"P{i},{i % 2}" for i in range(20)) + "\n",
    )


def test_unknown_fusion_lists_valid_names(tmp_path):
    _tiny_files(tmp_path)
    with pytest.raises((SpecError, RegistryError)) as err:
        _fit_tiny_files(tmp_path, spec_for(tmp_path, fusion={"name": "erly"}))
    assert "'erly'" in str(err.value) and FUSION_NAMES in str(err.value)


def test_unknown_encoder_lists_valid_names(tmp_path):
    _tiny_files(tmp_path)
    mods = [{"name": "labs", "kind": "tabular", "source": "labs.csv", "encoder": {"name": "cnn9"}}]
    with pytest.raises((SpecError, RegistryError)) as err:
        _fit_tiny_files(tmp_path, spec_for(tmp_path, mods))
    msg = str(err.value)
    assert "'cnn9'" in msg and "autoencoder" in msg and "mlp" in msg


def test_unknown_names_at_the_registries_list_valid_names(tmp_path):
    from holomed.encoders import create_encoder
    from holomed.fusion import get_fusion

    with pytest.raises(
        RegistryError, match=f"unknown fusion 'erly'; expected one of {FUSION_NAMES}"
    ):
        get_fusion("erly")
    with pytest.raises(RegistryError, match=r"unknown encoder 'cnn9'; expected one of .*mlp"):
        create_encoder("cnn9", 4)
    # a fusion named in Python rather than in the spec is checked too
    _tiny_files(tmp_path)
    spec = spec_for(tmp_path)
    with pytest.raises((SpecError, RegistryError), match=FUSION_NAMES):
        Model(spec, fusion="erly").fit(build_cohort(spec))


def test_unknown_fusion_is_a_spec_error_up_front(tmp_path):
    with pytest.raises(SpecError, match=r"fusion\.name.*'erly'.*attention, early"):
        spec_for(tmp_path, fusion={"name": "erly"})


def test_unknown_encoder_is_a_spec_error_up_front(tmp_path):
    mods = [{"name": "labs", "kind": "tabular", "source": "labs.csv", "encoder": {"name": "cnn9"}}]
    with pytest.raises(SpecError, match=r"modalities\.0\.encoder\.name.*'cnn9'"):
        spec_for(tmp_path, mods)


def test_unknown_modality_kind_names_the_field(tmp_path):
    mods = [
        {"name": "labs", "kind": "tabular", "source": "labs.csv"},
        {"name": "scan", "kind": "imaging", "source": "scan.csv"},
    ]
    with pytest.raises(SpecError) as err:
        spec_for(tmp_path, mods)
    msg = str(err.value)
    assert "spec.yaml" in msg  # the file
    assert "'scan'" in msg and "kind 'imaging'" in msg  # the modality and the field
    assert "omics" in msg and "tabular" in msg  # what was expected


def test_unknown_modality_kind_names_the_dotted_path(tmp_path):
    mods = [
        {"name": "labs", "kind": "tabular", "source": "labs.csv"},
        {"name": "scan", "kind": "imaging", "source": "scan.csv"},
    ]
    with pytest.raises(SpecError, match=r"modalities\.1\.kind"):
        spec_for(tmp_path, mods)


# -- spec: wrong types -------------------------------------------------------------------


def _base() -> dict:
    return {"modalities": [{"name": "labs", "kind": "tabular", "source": "labs.csv"}]}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.update(training={"max_epochs": "ten"}), "training.max_epochs"),
        (lambda d: d.update(training={"lr": -1}), "training.lr"),
        (lambda d: d["modalities"][0].update(categorical=5), "modalities.0.categorical"),
        (
            lambda d: d["modalities"][0].update(encoder={"name": "mlp", "options": [1]}),
            "modalities.0.encoder.options",
        ),
        (lambda d: d["modalities"][0].update(name="bad name!"), "modalities.0.name"),
        (lambda d: d["modalities"][0].update(colour="red"), "modalities.0.colour"),
        (lambda d: d.update(fusion={"dropout": 1.5}), "fusion.dropout"),
        (lambda d: d.update(fusion={"imputation": "zero"}), "fusion.imputation"),
        (lambda d: d.update(split={"method": "random"}), "split.method"),
        (lambda d: d.update(target={"task": "ranking"}), "target.task"),
        (lambda d: d.update(target={"task": "survival"}), "target"),
        (lambda d: d.update(evaluation={"missing_rates": [0.2, 1.5]}), "evaluation.missing_rates"),
        (lambda d: d.update(fuson={}), "fuson"),
        (lambda d: d.update(modalities="labs"), "modalities"),
    ],
)
def test_wrong_spec_types_name_the_dotted_field(tmp_path, change, path):
    d = _base()
    change(d)
    with pytest.raises(SpecError) as err:
        parse_spec(d, where="my-spec.yaml")
    msg = str(err.value)
    assert f"my-spec.yaml: {path}:" in msg, msg


def test_repeated_modality_names(tmp_path):
    d = _base()
    d["modalities"].append(dict(d["modalities"][0]))
    with pytest.raises(SpecError, match=r"repeated: \['labs'\]"):
        parse_spec(d)


def test_spec_not_a_mapping():
    with pytest.raises(SpecError, match="a spec is a mapping"):
        parse_spec(["modalities"])  # type: ignore[arg-type]


def test_load_spec_names_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("modalities:\n  - name: labs\n    kind: tabular\ntraining:\n  max_epochs: ten\n")
    with pytest.raises(SpecError, match=r"run\.yaml: training\.max_epochs"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"absent\.yaml: spec file not found"):
        load_spec(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("modalities: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(tmp_path / "broken.yaml")


def test_bad_preprocessing_option_names_the_modality(tmp_path):
    _tiny_files(tmp_path)
    mods = [
        {"name": "labs", "kind": "tabular", "source": "labs.csv", "preprocessing": {"scail": 1}}
    ]
    with pytest.raises(SpecError, match=r"modalities\.labs\.preprocessing.*scail"):
        _fit_tiny_files(tmp_path, spec_for(tmp_path, mods))


# -- missing real data: skip locally, fail in CI -------------------------------------------


def test_missing_dataset_skips_locally(shared_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="'no_such_dataset' not found"):
        shared_dataset("no_such_dataset")
    monkeypatch.delenv("HOLOMED_DATA")
    with pytest.raises(pytest.skip.Exception, match="HOLOMED_DATA=None"):
        shared_dataset("rosmap")


def test_missing_dataset_fails_in_ci(shared_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="in CI the real data must be present"):
        shared_dataset("no_such_dataset")
    monkeypatch.delenv("HOLOMED_DATA")
    with pytest.raises(pytest.fail.Exception):
        shared_dataset()


def test_present_dataset_is_returned(shared_dataset, monkeypatch, tmp_path):
    (tmp_path / "toy").mkdir()
    monkeypatch.setenv("HOLOMED_DATA", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert shared_dataset("toy") == tmp_path / "toy"
    assert shared_dataset() == tmp_path


def test_dataset_specs_name_their_mistakes_and_honour_columns():
    from holomed.cohort import load_cohort
    from holomed.synthetic import synthetic_spec_dict

    with pytest.raises(CohortError, match=r"dataset_options of 'synthetic'.*n_patient"):
        load_cohort(parse_spec(synthetic_spec_dict(n_patient=50)))
    # a registered dataset's options are its own: another is refused, never ignored
    rosmap = {"dataset": "rosmap", "dataset_options": {"path": "/elsewhere"}}
    rosmap["modalities"] = [{"name": "mrna", "kind": "omics"}]
    rosmap["target"] = {"column": "label", "task": "binary"}
    refused = r"'rosmap': \['path'\] not understood; it takes download"
    with pytest.raises(CohortError, match=refused):
        load_cohort(parse_spec(rosmap))
    d = synthetic_spec_dict(n_patients=50)
    d["dataset"] = "synthetc"
    with pytest.raises(CohortError, match=r"no 'source' file, and spec.dataset 'synthetc'"):
        load_cohort(parse_spec(d))
    d = synthetic_spec_dict(n_patients=50)
    d["modalities"][0].update(columns=["age", "lab0"], categorical=[])
    c = load_cohort(parse_spec(d))
    assert c.modalities["clinical"].feature_names == ["age", "lab0"]
    d["modalities"][0]["columns"] = ["age", "lab9"]
    with pytest.raises(CohortError, match=r"columns not found: \['lab9'\]"):
        load_cohort(parse_spec(d))


def test_simulated_missingness_names_a_wrong_mask_and_only_hides_data():
    from holomed.cohort import load_cohort
    from holomed.synthetic import synthetic_spec_dict

    cohort = load_cohort(parse_spec(synthetic_spec_dict(n_patients=40, seed=2)))
    n = len(cohort)
    with pytest.raises(CohortError, match=r"'expresion'.*no such modality"):
        cohort.with_presence({"expresion": np.zeros(n, bool)})
    with pytest.raises(CohortError, match="'expression': 3 values for 40 patients"):
        cohort.with_presence({"expression": np.ones(3, bool)})
    # a mask of all True cannot make absent expression present
    have = cohort.modalities["expression"].present
    assert not have.all()
    masked = cohort.with_presence({"expression": np.ones(n, bool)})
    np.testing.assert_array_equal(masked.modalities["expression"].present, have)
    hidden = cohort.with_presence({"expression": np.zeros(n, bool)})
    assert not hidden.modalities["expression"].present.any()
    assert cohort.modalities["expression"].present is have  # the original is untouched


def test_a_cohort_built_in_code_with_an_infinite_value_is_refused_by_name():
    """The readers leave rows with inf out and report them; a Cohort built in Python is
    checked where every family turns it into arrays (no NaN output, no extreme score)."""
    import pandas as pd

    import holomed.candidates as C
    from holomed.cohort import Cohort
    from holomed.modalities.base import ModalityData

    rng = np.random.default_rng(0)
    ids = np.array([f"P{i}" for i in range(60)])
    a = pd.DataFrame(rng.normal(size=(60, 3)), index=ids, columns=["w", "x", "z"])
    y = (a["w"] > 0).astype(int).to_numpy()
    spec = parse_spec({"modalities": [{"name": "a", "kind": "omics"}], "target": {"column": "y"}})

    def cohort(frame, present=None):
        present = np.ones(60, bool) if present is None else present
        mods = {"a": ModalityData("omics", frame, present, list(frame.columns))}
        return Cohort(ids, mods, y=y, task="binary", classes=["0", "1"])

    bad = a.copy()
    bad.loc["P7", "x"] = -np.inf
    for name in ("lr_early", "late"):
        model = C.make_candidate(spec, name, 0)
        with pytest.raises(CohortError, match=r"modality 'a': patient 'P7', column 'x'"):
            model.fit(cohort(bad))
        model.fit(cohort(a))
        with pytest.raises(CohortError, match="'P7'.*not a finite number"):
            model.predict_proba(cohort(bad))
        absent = np.ones(60, bool)
        absent[7] = False  # the row marked absent is never read
        assert np.isfinite(model.predict_proba(cohort(bad, absent))).all()
    # a table too, and a number beyond float32's range (inf to the model)
    tab = parse_spec({"modalities": [{"name": "a", "kind": "tabular"}], "target": {"column": "y"}})
    huge = a.copy()
    huge.loc["P3", "z"] = 1e39
    mods = {"a": ModalityData("tabular", huge, np.ones(60, bool), list(huge.columns))}
    with pytest.raises(CohortError, match=r"modality 'a': patient 'P3', column 'z'"):
        C.make_candidate(tab, "lr_early", 0).fit(
            Cohort(ids, mods, y=y, task="binary", classes=["0", "1"])
        )
