"""Hostile data, one test per way real files break a naive pipeline: ids that look like
numbers (``00007``) or differ only in Unicode form, wide omics tables, values that are
not finite once converted to float32 (``1e308``, NaN voxels), and a target left with
one class. Each test would have caught the bug it is named after."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import build_cohort
from holomed.errors import CohortError
from holomed.io import read_table
from holomed.modalities.base import drop_nonfinite_rows, finite32, to_numeric
from holomed.spec import parse_spec


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return name


def spec_of(tmp_path: Path, modalities: list[dict], **target) -> object:
    for m in modalities:
        m.setdefault("id_column", "pid")
    d = {
        "modalities": modalities,
        "target": {"source": "labels.csv", "id_column": "pid", "column": "label", **target},
        "split": {"method": "holdout", "test_size": 0.3},
        "training": {"max_epochs": 2, "batch_size": 8, "val_fraction": 0.0},
        "fusion": {"hidden": 8},
    }
    return parse_spec(d, where=str(tmp_path / "spec.yaml"), base_dir=str(tmp_path))


# -- 1. ids are text everywhere -------------------------------------------------------


def test_zero_padded_ids_stay_text_and_match_across_modalities_and_target(tmp_path):
    from PIL import Image as PILImage

    ids = ["00007", "00008", "00010", "0009"]
    write(tmp_path, "labs.csv", "pid,age\n" + "".join(f"{p},{50 + i}\n" for i, p in enumerate(ids)))
    # same ids, with spaces around them, in the omics table
    write(
        tmp_path,
        "genes.csv",
        "pid,g1,g2\n" + "".join(f" {p} ,{i}.5,{i}\n" for i, p in enumerate(ids)),
    )
    write(
        tmp_path,
        "vitals.csv",
        "pid,time,variable,value\n" + "".join(f"{p},1,hr,{70 + i}\n" for i, p in enumerate(ids)),
    )
    write(
        tmp_path,
        "notes.csv",
        "pid,text\n" + "".join(f"{p},note of patient {i}\n" for i, p in enumerate(ids)),
    )
    rows = []
    for i, p in enumerate(ids):
        PILImage.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append(f"{p},im{i}.png\n")
    write(tmp_path, "images.csv", "pid,path\n" + "".join(rows))
    write(
        tmp_path, "labels.csv", "pid,label\n" + "".join(f"{p},{i % 2}\n" for i, p in enumerate(ids))
    )
    spec = spec_of(
        tmp_path,
        [
            {"name": "labs", "kind": "tabular", "source": "labs.csv"},
            {"name": "genes", "kind": "omics", "source": "genes.csv"},
            {"name": "vitals", "kind": "timeseries", "source": "vitals.csv"},
            {"name": "notes", "kind": "text", "source": "notes.csv"},
            {"name": "xray", "kind": "image", "source": "images.csv"},
        ],
    )
    c = build_cohort(spec)
    assert c.ids.tolist() == ids  # never renumbered to 7, 8, 10, 9
    for name, md in c.modalities.items():
        assert md.present.all(), name
    assert c.modalities["genes"].values.index.tolist() == ids
    np.testing.assert_array_equal(c.y, [0, 1, 0, 1])
    assert not c.excluded


def test_ids_that_look_like_missing_values_or_floats_stay_ids(tmp_path):
    write(tmp_path, "t.csv", "pid,x\nNA,1\nnan,2\n1e3,3\n7.0,4\n")
    g = read_table([tmp_path / "t.csv"], "pid")
    assert g.index.tolist() == ["NA", "nan", "1e3", "7.0"]
    with pytest.raises(CohortError, match=r"row 3 has no patient id in column 'pid'"):
        write(tmp_path, "b.csv", "pid,x\na,1\n  ,2\n")
        read_table([tmp_path / "b.csv"], "pid")


def test_parquet_numeric_ids_are_written_without_float_formatting(tmp_path):
    pd.DataFrame({"pid": [7.0, 8.0, 12.0], "x": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "f.pq")
    pd.DataFrame({"pid": [7, 8, 12], "x": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "i.pq")
    assert read_table([tmp_path / "f.pq"], "pid").index.tolist() == ["7", "8", "12"]
    assert read_table([tmp_path / "i.pq"], "pid").index.tolist() == ["7", "8", "12"]


def test_ids_differing_only_in_unicode_form_match_with_a_warning(tmp_path):
    nfc, nfd = "Jos\u00e9", "Jose\u0301"  # look alike, differ as code points
    write(tmp_path, "labs.csv", f"pid,age\n{nfd},50\nB,60\nC,70\nD,80\n")
    write(tmp_path, "labels.csv", f"pid,label\n{nfc},0\nB,1\nC,0\nD,1\n")
    spec = spec_of(tmp_path, [{"name": "labs", "kind": "tabular", "source": "labs.csv"}])
    with pytest.warns(UserWarning, match=r"labs.csv: 1 patient id\(s\) were not in Unicode NFC"):
        c = build_cohort(spec)
    assert c.ids.tolist() == [nfc, "B", "C", "D"]
    assert c.modalities["labs"].present.all()


def test_ascii_ids_raise_no_warning(tmp_path):
    write(tmp_path, "t.csv", "pid,x\n00007,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_table([tmp_path / "t.csv"], "pid").index.tolist() == ["00007"]


# -- 2. wide omics: the vectorised conversion gives what the per-column one gave ----------


def reference_to_numeric(df: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame:
    """The former per-column implementation (quadratic on 50,000 columns), kept as the
    oracle of values and error messages."""
    out = df.copy()
    for col in columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(float)
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna() & (s.astype(str).str.strip() != "")
        if bad.any():
            pid = bad.index[bad.to_numpy().nonzero()[0][0]]
            raise CohortError(
                f"{where}: column {col!r} is numeric but patient {pid!r} has text "
                f"{s[pid]!r} ({int(bad.sum())} such value(s)); declare it in 'categorical' "
                "if it is a category"
            )
        out[col] = num.astype(float)
    return out


def mixed_frame(n: int = 50, p: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"g{j}" for j in range(p)])
    df.index = [f"P{i:03d}" for i in range(n)]
    df["g1"] = df["g1"].round(2).astype(object)  # numbers held as objects
    df.loc[df.index[::7], "g1"] = None
    df["g2"] = df["g2"].map(lambda v: f" {v:.3f} ")  # numbers written as text
    df.loc[df.index[3], "g2"] = "   "  # blank: missing
    df["g3"] = (df["g3"] > 0).astype(bool)
    df["g4"] = pd.array(np.arange(n), dtype="Int64")
    df.loc[df.index[5], "g4"] = pd.NA
    df["site"] = "A"  # a text column left out of the conversion
    return df


def test_vectorised_to_numeric_matches_the_per_column_reference():
    df = mixed_frame()
    cols = [c for c in df.columns if c != "site"]
    got = to_numeric(df, cols, "genes.csv")
    want = reference_to_numeric(df, cols, "genes.csv")
    assert list(got.columns) == list(df.columns) and got.index.equals(df.index)
    pd.testing.assert_frame_equal(got[cols], want[cols].astype(float))
    assert (got["site"] == "A").all()


def test_vectorised_to_numeric_names_the_same_column_patient_and_value():
    df = mixed_frame()
    df = df.astype({"g4000": object, "g4500": object})
    df.loc["P011", "g4000"] = "high"  # the first offending column in column order ...
    df.loc["P002", "g4000"] = "low"
    df.loc["P001", "g4500"] = "n/a!"  # ... not the first offending row overall
    cols = [c for c in df.columns if c != "site"]
    with pytest.raises(CohortError) as want:
        reference_to_numeric(df, cols, "genes.csv")
    with pytest.raises(CohortError) as got:
        to_numeric(df, cols, "genes.csv")
    assert str(got.value) == str(want.value)
    assert "'g4000'" in str(got.value) and "'P002'" in str(got.value)
    assert "'low'" in str(got.value) and "(2 such value(s))" in str(got.value)


# -- 3. nothing non-finite gets through -----------------------------------------------


def test_float32_overflow_and_inf_become_missing_and_are_counted():
    df = pd.DataFrame(
        {"a": [1.0, 1e308, np.inf, np.nan], "b": [1.0, -1e39, 2.0, np.nan], "c": [1.0, 2, 3, 4]},
        index=["P1", "P2", "P3", "P4"],
    )
    assert finite32(np.array([1e308, 3e38, -1e39, np.nan])).tolist() == [False, True, False, False]
    out, problems = drop_nonfinite_rows(df, ["a", "b", "c"], "labs", "labs.csv")
    assert np.isnan(out.loc["P2", ["a", "b"]]).all() and out.loc["P2", "c"] == 2
    assert np.isfinite(out.to_numpy(float)[~np.isnan(out.to_numpy(float))]).all()
    by_id = {p["id"]: p for p in problems}
    assert set(by_id) == {"P2", "P3"}
    assert by_id["P2"]["scope"] == "value" and by_id["P2"]["count"] == 2
    assert "'a'" in by_id["P2"]["reason"] and "1 other column" in by_id["P2"]["reason"]
    assert "labs.csv" in by_id["P3"]["reason"]


def labelled_tables(tmp_path: Path, n: int = 40, big: str = "1e308") -> list[str]:
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(n)]
    y = np.arange(n) % 2
    labs = pd.DataFrame(
        {"pid": ids, "age": rng.normal(60, 10, n).round(1), "crp": (rng.normal(5, 1, n) + y)}
    )
    labs["crp"] = labs["crp"].round(3).astype(object)
    labs.loc[[3, 4], "crp"] = big  # two: their sum overflows float64 too
    labs.to_csv(tmp_path / "labs.csv", index=False)
    genes = pd.DataFrame(rng.normal(size=(n, 6)).round(3), columns=[f"g{j}" for j in range(6)])
    genes = genes.astype(object)
    genes.loc[[5, 6], "g2"] = big
    genes.insert(0, "pid", ids)
    genes.to_csv(tmp_path / "genes.csv", index=False)
    pd.DataFrame({"pid": ids, "label": y}).to_csv(tmp_path / "labels.csv", index=False)
    return ids


@pytest.mark.parametrize("big", ["1e308", "-1e300", "inf"])
def test_a_huge_table_value_gives_finite_predictions(tmp_path, big):
    from holomed.model import Model

    ids = labelled_tables(tmp_path, big=big)
    spec = spec_of(
        tmp_path,
        [
            {"name": "labs", "kind": "tabular", "source": "labs.csv"},
            {"name": "genes", "kind": "omics", "source": "genes.csv"},
        ],
    )
    c = build_cohort(spec)
    assert c.ids.tolist() == ids and all(m.present.all() for m in c.modalities.values())
    value = [e for e in c.excluded if e["scope"] == "value"]
    assert {(e["id"], e["modality"]) for e in value} == {
        ("P03", "labs"),
        ("P04", "labs"),
        ("P05", "genes"),
        ("P06", "genes"),
    }
    assert "'crp'" in value[0]["reason"] and "set to missing" in value[0]["reason"]
    assert np.isnan(c.modalities["labs"].values.loc["P03", "crp"])
    for fusion in ("early", "late"):
        m = Model(spec, fusion=fusion, seed=0).fit(c)
        p = m.predict_proba(c)
        assert p.shape == (len(ids), 2) and np.isfinite(p).all(), fusion


def test_a_huge_timeseries_value_is_reported_not_passed_as_inf(tmp_path):
    write(
        tmp_path,
        "vitals.csv",
        """
        pid,time,variable,value
        A,1,hr,70
        A,2,hr,1e308
        B,1,hr,80
        B,1e300,hr,81
        """,
    )
    write(tmp_path, "labels.csv", "pid,label\nA,0\nB,1\n")
    spec = spec_of(tmp_path, [{"name": "vitals", "kind": "timeseries", "source": "vitals.csv"}])
    c = build_cohort(spec)
    reasons = {(e["id"], e["reason"]) for e in c.excluded}
    assert ("A", "value is not a finite number") in reasons
    assert any(pid == "B" and r.startswith("unreadable time") for pid, r in reasons)
    for ev in c.modalities["vitals"].values["events"]:
        assert np.isfinite(ev.value).all() and np.isfinite(ev.time).all()


def test_nan_voxels_make_the_image_absent_and_training_finite(tmp_path):
    import nibabel as nib

    from holomed.model import Model

    rng = np.random.default_rng(0)
    ids = [f"V{i}" for i in range(10)]
    y = np.arange(10) % 2
    paths = []
    for i, pid in enumerate(ids):
        v = rng.normal(0, 1, (8, 8, 6)).astype(np.float32) + 2 * y[i]
        if pid == "V3":
            v[2:4, 2:4, 1] = np.nan
        if pid == "V6":
            v[0, 0, 0] = np.inf
        f = tmp_path / f"{pid}.nii.gz"
        nib.save(nib.Nifti1Image(v, np.diag([1.5, 1.5, 2.0, 1.0])), f)
        paths.append([str(f)])
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "ct",
                    "kind": "image",
                    "preprocessing": {"size": [8, 8, 8], "zscore": True},
                    "encoder": {"name": "cnn3d", "options": {"hidden": 4, "channels": [4]}},
                },
                {"name": "clinical", "kind": "tabular"},
            ],
            "target": {"column": "y"},
            "fusion": {"name": "late", "hidden": 4},
            "training": {"max_epochs": 1, "batch_size": 4, "val_fraction": 0.0},
        }
    )
    frames = {
        "ct": pd.DataFrame({"paths": paths}, index=ids),
        "clinical": pd.DataFrame({"age": rng.normal(60, 5, 10) + y}, index=ids),
    }
    c = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    ct = c.modalities["ct"]
    assert c.ids.tolist() == ids  # both keep the table
    assert ct.present.tolist() == [pid not in ("V3", "V6") for pid in ids]
    for pid in ("V3", "V6"):
        (bad,) = [e for e in c.excluded if e["id"] == pid and e.get("file")]
        assert bad["file"].endswith(f"{pid}.nii.gz") and "non-finite voxel" in bad["reason"]
        assert any(e["id"] == pid and "no usable image" in e["reason"] for e in c.excluded)
    m = Model(spec, seed=0).fit(c)
    assert np.isfinite(m.predict_proba(c)).all()


# -- 4. a target with one class ----------------------------------------------------------


def test_a_target_left_with_one_class_names_the_column_and_counts(tmp_path):
    # the 0s have no data in any modality: after exclusions only class 1 remains
    write(tmp_path, "labs.csv", "pid,age\nB,60\nD,80\nE,81\n")
    write(tmp_path, "labels.csv", "pid,outcome\nA,0\nB,1\nC,0\nD,1\nE,1\n")
    spec = spec_of(
        tmp_path,
        [{"name": "labs", "kind": "tabular", "source": "labs.csv"}],
        column="outcome",
    )
    with pytest.raises(CohortError) as err:
        build_cohort(spec)
    msg = str(err.value)
    assert "target column 'outcome'" in msg and "labels.csv" in msg
    assert "{'1': 3}" in msg and "binary" in msg and "2 row(s)" in msg


def test_one_class_with_declared_classes_counts_the_empty_one(tmp_path):
    write(tmp_path, "labs.csv", "pid,age\nA,50\nB,60\nC,70\n")
    write(tmp_path, "labels.csv", "pid,label\nA,no\nB,no\nC,no\n")
    spec = spec_of(
        tmp_path,
        [{"name": "labs", "kind": "tabular", "source": "labs.csv"}],
        task="multiclass",
        classes=["no", "yes", "maybe"],
    )
    with pytest.raises(CohortError, match=r"'label'.*\{'no': 3, 'yes': 0, 'maybe': 0\}"):
        build_cohort(spec)
