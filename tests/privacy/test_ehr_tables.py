"""``holomed deid --tables``: the raw EHR tables of an ``ehr:`` spec de-identified
(holomed.privacy.ehr_tables). All names, ids and dates below are synthetic."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from holomed.cli import app
from holomed.cohort import load_cohort
from holomed.ehr import ehr_frames
from holomed.errors import PrivacyError
from holomed.privacy import ehr_tables as et
from holomed.privacy.cohort import deidentify_cohort
from holomed.privacy.ehr_tables import deidentify_ehr_tables
from holomed.privacy.keys import PrivacyKey
from holomed.spec import load_spec, parse_spec

KEY = PrivacyKey(b"synthetic-test-key-0123456789abcdef")
N_PATIENTS = 8
DOCTOR = "Quibblesworth"  # a synthetic name in a free-text column


def _tables(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """MIMIC-like tables; every time of day is unique, so no shifted date-time can equal
    another raw one by chance."""
    seconds = iter(rng.permutation(86_400))

    def when(day: pd.Timestamp, hours: float) -> str:
        t = (day + pd.Timedelta(hours=hours)).normalize() + pd.Timedelta(seconds=int(next(seconds)))
        return t.strftime("%Y-%m-%d %H:%M:%S")

    pats, adms, stays, labs, charts = [], [], [], [], []
    hadm, stay, lab = 8880001, 9990001, 6660001
    for i in range(N_PATIENTS):
        sid = 7770001 + i
        dead = i % 3 == 0
        pats.append(
            {"subject_id": sid, "gender": "MF"[i % 2], "anchor_age": 40 + 3 * i,
             "anchor_year": 2131, "dod": f"2132-0{1 + i % 8}-1{i % 9}" if dead else None}
        )  # fmt: skip
        for a in range(1 + i % 2):
            day = pd.Timestamp("2131-01-05") + pd.Timedelta(days=int(rng.integers(0, 700)))
            admit = when(day, 0)
            adms.append(
                {"subject_id": sid, "hadm_id": hadm, "admittime": admit,
                 "dischtime": when(day, 24 * (3 + a)), "admission_type": "URGENT",
                 "edregtime": when(day, -20) if i % 2 else None,
                 "hospital_expire_flag": int(dead and a == 0)}
            )  # fmt: skip
            t0 = pd.Timestamp(admit)
            intime = when(t0, 30)
            stays.append({"subject_id": sid, "hadm_id": hadm, "stay_id": stay, "intime": intime,
                          "outtime": when(t0, 60)})  # fmt: skip
            for k in range(4):
                labs.append(
                    {"labevent_id": lab, "subject_id": sid, "hadm_id": hadm,
                     "itemid": [50912, 50983][k % 2],
                     "charttime": pd.Timestamp(when(t0, 6 + 10 * k)),
                     "valuenum": round(float(rng.normal(5, 1)), 2),
                     "comments": f"drawn by Dr. {DOCTOR}" if k == 0 else None}
                )  # fmt: skip
                lab += 1
            for k in range(5):
                charts.append(
                    {"stay_id": stay, "itemid": [220045, 220210][k % 2],
                     "charttime": when(pd.Timestamp(intime), 3 * k),
                     "storetime": when(pd.Timestamp(intime), 3 * k + 1),
                     "valuenum": f"{rng.normal(80, 5):.1f}", "warning": None}
                )  # fmt: skip
            hadm, stay = hadm + 1, stay + 1
    charts[0]["storetime"] = "not a time"  # unreadable -> missing, counted
    charts[-1]["warning"] = when(pd.Timestamp(stays[-1]["intime"]), 2)  # a date nobody declared
    charts.append({"stay_id": 9999999, "itemid": 220045, "charttime": "2131-05-05 05:05:05",
                   "storetime": None, "valuenum": "1.0", "warning": None})  # fmt: skip
    return {
        "patients": pd.DataFrame(pats),
        "admissions": pd.DataFrame(adms),
        "icustays": pd.DataFrame(stays),
        "labevents": pd.DataFrame(labs),
        "chartevents": pd.DataFrame(charts),
        "d_items": pd.DataFrame({"itemid": [220045, 220210], "label": ["Heart Rate", "Resp Rate"]}),
        "d_labitems": pd.DataFrame({"itemid": [50912, 50983], "label": ["Creatinine", "Sodium"]}),
    }


PATHS = {
    "patients": "hosp/patients.csv",
    "admissions": "hosp/admissions.csv.gz",
    "icustays": "icu/icustays.csv",
    "labevents": "hosp/labevents.parquet",
    "chartevents": "icu/chartevents.csv",
    "d_items": "icu/d_items.csv",
    "d_labitems": "hosp/d_labitems.csv",
}


def _spec_dict() -> dict:
    return {
        "dataset": "synthetic_ehr",
        "ehr": {
            "root": "raw",
            "tables": dict(PATHS),
            "index": {"table": "admissions", "key": "hadm_id", "time": "admittime"},
            "joins": [
                {"table": "patients", "keys": "subject_id"},
                {"table": "icustays", "keys": "hadm_id"},
            ],  # fmt: skip
            "target": "hospital_expire_flag",
            "group": "admissions.subject_id",
            "attributes": {"sex": "gender"},
            "modalities": {
                "demo": {
                    "kind": "tabular",
                    "columns": {
                        "age": "anchor_age",
                        "los_h": "date_diff('second', admittime, dischtime) / 3600.0",
                        "icu_delay_h": "date_diff('second', admittime, intime) / 3600.0",
                        "ed": "CAST(edregtime IS NOT NULL AS INTEGER)",
                    },
                },  # fmt: skip
                "labs": {
                    "kind": "timeseries",
                    "table": "labevents",
                    "key": "hadm_id",
                    "time": "charttime",
                    "variable": "itemid",
                    "value": "valuenum",
                    "dictionary": {"table": "d_labitems", "key": "itemid", "label": "label"},
                    "window": [0, 48],
                },  # fmt: skip
                "vitals": {
                    "kind": "timeseries",
                    "table": "chartevents",
                    "key": "stay_id",
                    "index_key": "icustays.stay_id",
                    "time": "charttime",
                    "variable": "itemid",
                    "value": "valuenum",
                    "dictionary": {"table": "d_items", "key": "itemid", "label": "label"},
                    "window": [0, 48],
                },  # fmt: skip
            },
        },
        "modalities": [
            {"name": "demo", "kind": "tabular"},
            {"name": "labs", "kind": "timeseries"},
            {"name": "vitals", "kind": "timeseries"},
        ],
        "target": {"column": "death", "task": "binary", "classes": ["0", "1"]},
        "attributes": ["sex"],
        "privacy": {
            "ehr_tables": {
                "person": "subject_id",
                "id_columns": ["hadm_id", "stay_id", "labevent_id"],
                "date_columns": {"chartevents": ["storetime"]},
                "year_columns": {"patients": ["anchor_year"]},
                "text_columns": {"labevents": ["comments"]},
            }
        },
    }


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, dict[str, pd.DataFrame]]:
    tabs = _tables(np.random.default_rng(0))
    for name, df in tabs.items():
        p = tmp_path / "raw" / PATHS[name]
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".parquet":
            df.to_parquet(p, index=False)
        else:
            df.to_csv(p, index=False)
    return tmp_path, tabs


def _spec(folder: Path, d: dict | None = None):
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(d or _spec_dict(), sort_keys=False))
    return load_spec(path)


def _text(path: Path) -> str:
    """A written table as text: CSV (decompressed), or Parquet dumped as CSV."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv(index=False)
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()


def _read(folder: Path, name: str) -> pd.DataFrame:
    p = folder / PATHS[name]
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])


def test_tables_deidentified_consistently_and_the_cohort_is_the_same(raw):
    folder, tabs = raw
    spec = _spec(folder)
    rep = deidentify_ehr_tables(spec, folder / "out", KEY)
    out = folder / "out"
    assert not (folder / "out.partial").exists()
    # the same layout and formats
    for p in PATHS.values():
        assert (out / p).is_file()
    assert (out / PATHS["admissions"]).read_bytes()[:2] == b"\x1f\x8b"  # still gzip
    assert pd.read_parquet(out / PATHS["labevents"])["charttime"].dtype.kind == "M"

    # no original id, date-time or name in any byte written
    written = "\n".join(_text(p) for p in out.rglob("*") if p.is_file())
    ids = [
        str(v) for t in ("patients", "admissions", "icustays") for v in tabs[t].iloc[:, :3].stack()
    ]
    ids = {i for i in ids if re.fullmatch(r"\d{7}", i)} | set(
        map(str, tabs["labevents"]["labevent_id"])
    )
    assert len(ids) > 40 and not [i for i in ids if i in written]
    stamps = {str(v) for df in tabs.values() for c in df.columns for v in df[c].dropna()
              if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", str(v))}  # fmt: skip
    assert len(stamps) > 100 and not [s for s in stamps if s in written]
    assert DOCTOR not in written and "comments" not in written.split("\n", 1)[0]

    # one id -> one pseudonym in every table; kinds never collide
    adm, stays, labs = _read(out, "admissions"), _read(out, "icustays"), _read(out, "labevents")
    sid = {str(s): KEY.pseudonym(str(s)) for s in tabs["patients"]["subject_id"]}
    assert list(_read(out, "patients")["subject_id"]) == [
        sid[str(s)] for s in tabs["patients"]["subject_id"]
    ]
    assert list(labs["subject_id"]) == [sid[str(s)] for s in tabs["labevents"]["subject_id"]]
    hadm = {str(h): KEY.pseudonym(f"hadm_id:{h}") for h in tabs["admissions"]["hadm_id"]}
    assert list(adm["hadm_id"]) == [hadm[str(h)] for h in tabs["admissions"]["hadm_id"]]
    assert list(stays["hadm_id"]) == [hadm[str(h)] for h in tabs["icustays"]["hadm_id"]]
    assert list(labs["hadm_id"]) == [hadm[str(h)] for h in tabs["labevents"]["hadm_id"]]
    assert set(_read(out, "chartevents")["stay_id"][:-1]) == set(stays["stay_id"])
    assert not set(sid.values()) & set(hadm.values())

    # every date of a person moves by the same whole days, in every table
    def moves(name: str, col: str, person: pd.Series) -> pd.DataFrame:
        before = pd.to_datetime(tabs[name][col], errors="coerce", format="ISO8601")
        after = pd.to_datetime(_read(out, name)[col], errors="coerce", format="ISO8601")
        return pd.DataFrame({"p": person.astype(str).values, "d": (after - before).values}).dropna()

    stay_person = dict(
        zip(tabs["icustays"]["stay_id"], tabs["icustays"]["subject_id"], strict=True)
    )
    chart_person = tabs["chartevents"]["stay_id"].map(stay_person).astype("Int64")
    shifts = pd.concat([
        moves("admissions", c, tabs["admissions"]["subject_id"])
        for c in ("admittime", "dischtime", "edregtime")
    ] + [moves("icustays", c, tabs["icustays"]["subject_id"]) for c in ("intime", "outtime")]
      + [moves("labevents", "charttime", tabs["labevents"]["subject_id"]),
         moves("chartevents", "charttime", chart_person),
         moves("chartevents", "storetime", chart_person),
         moves("patients", "dod", tabs["patients"]["subject_id"])])  # fmt: skip
    assert shifts.groupby("p")["d"].nunique().eq(1).all()
    for p, d in shifts.groupby("p")["d"].first().items():
        assert d == pd.Timedelta(days=KEY.date_shift_days(p, 365)) and d < pd.Timedelta(0)
    # the undeclared date column found in the first chunk is shifted too
    assert moves("chartevents", "warning", chart_person).shape[0] == 1
    c = rep["tables"]["chartevents"]
    assert c["person"] == "via stay_id" and c["dates_detected"] == ["charttime", "warning"]
    assert c["dates_unreadable_set_missing"] == {"storetime": 1}
    assert c["dates_without_person_set_missing"] == {"charttime": 1}  # stay 9999999
    assert pd.isna(_read(out, "chartevents")["charttime"].iloc[-1])
    assert rep["tables"]["d_items"]["copied_unchanged"]
    assert (out / PATHS["d_items"]).read_bytes() == (folder / "raw" / PATHS["d_items"]).read_bytes()
    assert rep["tables"]["labevents"]["columns_dropped"] == ["comments"]
    assert rep["patients"] == N_PATIENTS and rep["rows"] == sum(map(len, tabs.values()))
    report_text = (out / "deid_report.json").read_text()
    assert not [i for i in ids if i in report_text] and json.loads(report_text)["tables"]

    # the same spec over the new tables builds the same cohort
    new = load_spec(out / "spec.yaml")
    assert new.ehr["root"] == "." and new.privacy.ehr_tables is None
    fa, ta = ehr_frames(spec)
    fb, tb = ehr_frames(new)
    m = {i: KEY.pseudonym(f"hadm_id:{i}") for i in ta.index}
    ta2 = ta.rename(index=m).sort_index()
    assert list(ta2.index) == sorted(tb.index)
    ta2["group"] = ta2["group"].map(sid)
    pd.testing.assert_frame_equal(ta2, tb.sort_index(), check_like=True)
    pd.testing.assert_frame_equal(fa["demo"].rename(index=m).sort_index(), fb["demo"].sort_index())
    for name in ("labs", "vitals"):
        a = fa[name].assign(id=fa[name]["id"].map(m)).sort_values(["id", "time", "variable"])
        b = fb[name].sort_values(["id", "time", "variable"])
        assert len(a) > 10
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    ca, cb = load_cohort(spec), load_cohort(new)
    assert len(ca) == len(cb) == len(tabs["admissions"])
    order_a = np.argsort([m[i] for i in ca.ids])
    np.testing.assert_array_equal(np.sort([m[i] for i in ca.ids]), np.sort(cb.ids))
    np.testing.assert_array_equal(ca.y[order_a], cb.y[np.argsort(cb.ids)])
    for name in ("labs", "vitals"):
        np.testing.assert_array_equal(
            ca.modalities[name].present[order_a], cb.modalities[name].present[np.argsort(cb.ids)]
        )


def test_chunked_reading_writes_the_same_tables(raw, tmp_path):
    folder, _ = raw
    d = _spec_dict()
    d["privacy"]["ehr_tables"]["date_columns"]["chartevents"] += ["warning"]
    spec = _spec(folder, d)
    deidentify_ehr_tables(spec, tmp_path / "a", KEY)
    deidentify_ehr_tables(spec, tmp_path / "b", KEY, chunk_rows=4)
    for p in PATHS.values():
        assert _text(tmp_path / "a" / p) == _text(tmp_path / "b" / p), p


def test_fast_pseudonyms_agree_with_the_key(raw):
    folder, _ = raw
    run = et._Run(_spec(folder), KEY, lambda _m: None, 100)
    for v in ("7770001", " 42", "Ünïcode", "hadm_id:8880001"):
        assert run._mac(v) == KEY.pseudonym(v)


def test_an_undeclared_date_after_the_first_chunk_is_an_error(raw):
    folder, _ = raw
    with pytest.raises(PrivacyError, match=r"chartevents\.csv.*'warning'.*date-like.*row"):
        deidentify_ehr_tables(_spec(folder), folder / "out", KEY, chunk_rows=4)
    assert not (folder / "out").exists() and not (folder / "out.partial").exists()


def test_interruption_leaves_no_finished_looking_folder(raw, monkeypatch):
    folder, _ = raw
    spec = _spec(folder)
    real = et._Run.table
    seen = []

    def table(self, t, out):
        seen.append(t.alias)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(self, t, out)

    monkeypatch.setattr(et._Run, "table", table)
    with pytest.raises(KeyboardInterrupt):
        deidentify_ehr_tables(spec, folder / "out", KEY)
    assert not (folder / "out").exists() and not (folder / "out.partial").exists()


def _bad(folder: Path, change) -> dict:
    d = _spec_dict()
    change(d)
    return d


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: d["privacy"]["ehr_tables"]["text_columns"].update(labevents=["nope"]),
         r"labevents\.parquet.*column 'nope'.*text_columns\.labevents"),
        (lambda d: d["privacy"]["ehr_tables"]["date_columns"].update(patients=["gender"]),
         r"patients\.csv.*column 'gender'.*no readable date"),
        (lambda d: d["privacy"]["ehr_tables"]["date_columns"].update(wards=["x"]),
         r"date_columns\.wards: no table 'wards'"),
        (lambda d: d["privacy"]["ehr_tables"].update(id_columns=["stay_id", "labevent_id"]),
         r"'hadm_id' \(ehr\.index\.key\) is not declared"),
        (lambda d: d["privacy"].pop("ehr_tables"), r"privacy\.ehr_tables: not set"),
    ],
)  # fmt: skip
def test_bad_settings_are_named_errors(raw, change, pattern):
    folder, _ = raw
    with pytest.raises(PrivacyError, match=pattern):
        deidentify_ehr_tables(_spec(folder, _bad(folder, change)), folder / "out", KEY)
    assert not (folder / "out").exists() and not (folder / "out.partial").exists()


def test_bad_files_are_named_errors(raw):
    folder, tabs = raw
    (folder / "raw" / PATHS["chartevents"]).unlink()
    with pytest.raises(PrivacyError, match=r"chartevents\.csv: file of table 'chartevents'"):
        deidentify_ehr_tables(_spec(folder), folder / "out", KEY)
    # a stay tied to two persons cannot link rows to one person: an error when the link
    # is declared; otherwise stay_id is no link and the dates it would have shifted are
    # set missing and counted
    tabs["chartevents"].to_csv(folder / "raw" / PATHS["chartevents"], index=False)
    stays = pd.concat([tabs["icustays"], tabs["icustays"].iloc[:1].assign(subject_id=7779999)])
    stays.to_csv(folder / "raw" / PATHS["icustays"], index=False)
    d = _spec_dict()
    d["privacy"]["ehr_tables"]["links"] = {"stay_id": "icustays"}
    with pytest.raises(PrivacyError, match=r"icustays\.csv.*'stay_id' value belongs to two"):
        deidentify_ehr_tables(_spec(folder, d), folder / "out", KEY)
    rep = deidentify_ehr_tables(_spec(folder), folder / "out", KEY)
    assert rep["id_kinds_not_linking_one_person"] == ["stay_id"]
    c = rep["tables"]["chartevents"]
    assert c["person"] is None and "charttime" not in c["dates_shifted"]
    assert c["dates_without_person_set_missing"]["charttime"] == len(tabs["chartevents"])
    assert _read(folder / "out", "chartevents")["charttime"].isna().all()
    shutil.rmtree(folder / "out")
    # a column of mostly other values holding some dates
    tabs["icustays"].assign(first_careunit=["MICU"] * (len(stays) - 2) + ["2131-01-01"]).to_csv(
        folder / "raw" / PATHS["icustays"], index=False
    )
    with pytest.raises(PrivacyError, match=r"icustays\.csv.*'first_careunit' holds 1 date-like"):
        deidentify_ehr_tables(_spec(folder), folder / "out", KEY)
    assert not (folder / "out").exists()


def test_cli_deid_tables_by_default_and_frames_on_request(raw):
    folder, _ = raw
    spec_path = folder / "spec.yaml"
    _spec(folder)
    key_file = folder / "key.bin"
    key_file.write_bytes(KEY.secret)
    runner = CliRunner()
    args = [
        "deid",
        str(spec_path),
        "--key-file",
        str(key_file),
        "--linkage",
        str(folder / "link.csv"),
    ]
    res = runner.invoke(app, [*args, "--out", str(folder / "t")])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((folder / "t" / "spec.yaml").read_text())["ehr"]["root"] == "."
    link = pd.read_csv(folder / "link.csv", dtype=str)
    assert len(link) == N_PATIENTS and (link["pseudonym"] == link["id"].map(KEY.pseudonym)).all()
    res = runner.invoke(app, [*args, "--out", str(folder / "f"), "--frames"])
    assert res.exit_code == 2 and "never overwritten" in res.output  # the linkage exists
    (folder / "link.csv").unlink()
    res = runner.invoke(app, [*args, "--out", str(folder / "f"), "--frames"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((folder / "f" / "spec.yaml").read_text())["ehr"] is None


def test_free_text_through_the_note_deidentifier(raw):
    pytest.importorskip("presidio_analyzer")
    folder, _ = raw
    d = _spec_dict()
    d["privacy"]["ehr_tables"]["text"] = "deidentify"
    d["privacy"]["notes"] = "tag"
    rep = deidentify_ehr_tables(_spec(folder, d), folder / "out", KEY)
    comments = _read(folder / "out", "labevents")["comments"].dropna()
    assert len(comments) == 2 * N_PATIENTS - N_PATIENTS // 2  # one per admission
    assert not comments.str.contains(DOCTOR).any()
    assert sum(rep["tables"]["labevents"]["text_entities"].values()) >= len(comments)


# -- the real MIMIC-IV demo ------------------------------------------------------------------

MIMIC_EHR_PRIVACY = {
    "person": "subject_id",
    "id_columns": ["hadm_id", "labevent_id", "specimen_id", "order_provider_id"],
    "year_columns": {"patients": ["anchor_year"]},
    "drop_columns": {"patients": ["anchor_year_group"]},
    "text_columns": {"labevents": ["comments"]},
}


def test_mimic_iv_demo_tables_build_the_same_cohort(tmp_path, shared_dataset):
    shared_dataset("mimic_iv_demo")
    example = Path(__file__).parents[2] / "examples" / "mimic_iv_demo.yaml"
    spec = load_spec(example)
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["privacy"]["ehr_tables"] = MIMIC_EHR_PRIVACY
    spec = parse_spec(d, where=str(example), base_dir=spec.base_dir)
    rep = deidentify_cohort(spec, tmp_path / "out", KEY)  # tables: privacy.ehr_tables is set
    assert rep["rows"] == 275 + 100 + 107727 + 1622
    assert rep["tables"]["d_labitems"]["copied_unchanged"]
    new = load_spec(tmp_path / "out" / "spec.yaml")
    fa, ta = ehr_frames(spec)
    fb, tb = ehr_frames(new)
    m = {i: KEY.pseudonym(f"hadm_id:{i}") for i in ta.index}
    ta2, tb2 = ta.rename(index=m).sort_index(), tb.sort_index()
    assert list(ta2.index) == list(tb2.index) and len(tb2) == 275
    np.testing.assert_array_equal(ta2["in_hospital_death"], tb2["in_hospital_death"])
    assert (ta2["group"].map(KEY.pseudonym) == tb2["group"]).all()
    a, b = fa["admission"].rename(index=m).sort_index(), fb["admission"].sort_index()
    # age = anchor_age + year(admittime) - anchor_year: a whole-day shift moves some
    # admissions across New Year, which a whole-year column cannot follow exactly
    diff = (a["age"] - b["age"]).abs()
    assert diff.max() <= 1 and diff.mean() < 0.4
    pd.testing.assert_frame_equal(a.drop(columns="age"), b.drop(columns="age"))
    la = fa["labs"].assign(id=fa["labs"]["id"].map(m)).sort_values(["id", "time", "variable"])
    lb = fb["labs"].sort_values(["id", "time", "variable"])
    pd.testing.assert_frame_equal(la.reset_index(drop=True), lb.reset_index(drop=True))
    assert len(lb) == 6448
    ca, cb = load_cohort(spec), load_cohort(new)
    assert len(ca) == len(cb) == 275 and int(cb.y.sum()) == 15
    # every date cell moved by its person's shift; no raw id left in any table
    root = Path(spec.resolve(spec.ehr["root"]))
    for name, cols in {
        "admissions": ["admittime", "deathtime"],
        "labevents": ["charttime"],
    }.items():
        before = pd.read_csv(root / f"hosp/{name}.csv.gz", dtype=str)
        after = pd.read_csv(tmp_path / "out" / f"hosp/{name}.csv.gz", dtype=str)
        shift = pd.to_timedelta(before["subject_id"].map(lambda s: KEY.date_shift_days(s)), "D")
        for c in cols:
            x, y = pd.to_datetime(before[c]), pd.to_datetime(after[c])
            assert x.notna().sum() == y.notna().sum() > 0
            assert ((y - x)[x.notna()] == shift[x.notna()]).all()
        raw_ids = set(before["subject_id"]) | set(before["hadm_id"].dropna())
        text = gzip.decompress((tmp_path / "out" / f"hosp/{name}.csv.gz").read_bytes()).decode()
        cells = set(pd.read_csv(io.StringIO(text), dtype=str).stack())
        assert not raw_ids & cells
