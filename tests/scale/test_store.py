"""The on-disk store of preprocessed arrays (``training.store``): predictions equal those
of the in-memory path, the store is reused and rebuilt when it must be, an interrupted
build resumes to the same bytes (a chunk never looks finished half-written), and a
parallel build (2 local worker processes) writes what the serial one does."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import Cohort, build_cohort
from holomed.errors import CohortError
from holomed.modalities import store as store_mod
from holomed.modalities.store import StoredRows, open_store, stored_arrays
from holomed.model import Model, fit_preprocessors, transform_cohort
from holomed.spec import Spec, SpecError, parse_spec

N = 150
CHUNK = 40  # 4 chunks, the last one short


def frames(n: int = N, seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """SYNTHETIC: a lab table (2 numeric with gaps, 1 categorical), 12 omics features
    (absent for ~30 %), and an irregular series of 2 variables (absent for ~25 %)."""
    rng = np.random.default_rng(seed)
    ids = [f"S{i:04d}" for i in range(n)]
    y = rng.integers(0, 2, n)
    labs = pd.DataFrame(
        {
            "a": rng.normal(y, 1.0),
            "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "site": rng.choice(["x", "y", "z"], n),
        },
        index=ids,
    )
    omics = pd.DataFrame(rng.normal(size=(n, 12)) + y[:, None] * 0.3, index=ids,
                         columns=[f"g{j}" for j in range(12)])  # fmt: skip
    omics = omics[rng.random(n) > 0.3]
    rows = []
    for i in np.nonzero(rng.random(n) > 0.25)[0]:
        for t in np.sort(rng.uniform(0, 24, rng.integers(1, 8))):
            rows.append((ids[i], float(t), "hr", float(rng.normal(80 + 5 * y[i], 10))))
            if rng.random() < 0.5:
                rows.append((ids[i], float(t), "sbp", float(rng.normal(120, 15))))
    series = pd.DataFrame(rows, columns=["id", "time", "variable", "value"])
    target = pd.DataFrame({"y": y}, index=ids)
    return {"labs": labs, "omics": omics, "vitals": series}, target


def spec_dict(**training) -> dict:
    small = {"encoder": {"name": "mlp", "options": {"hidden": 8, "out_dim": 8}}}
    return {
        "dataset": "store-check",
        "description": "SYNTHETIC tabular + omics + series (not clinical data)",
        "modalities": [
            {"name": "labs", "kind": "tabular", "categorical": ["site"], **small},
            {"name": "omics", "kind": "omics", **small},
            {
                "name": "vitals",
                "kind": "timeseries",
                "preprocessing": {"window": [0, 24], "resolution": 6},
            },
        ],  # fmt: skip
        "target": {"column": "y", "task": "binary"},
        "split": {"method": "holdout"},
        "fusion": {"name": "late", "hidden": 8},
        "training": {"max_epochs": 2, "batch_size": 16, "val_fraction": 0.2, **training},
    }


def make(**training) -> Spec:
    return parse_spec(spec_dict(**training), where="store-test")


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    f, t = frames()
    return build_cohort(make(), f, t)


@pytest.fixture(scope="module")
def pres(cohort: Cohort) -> dict:
    return fit_preprocessors(make().modalities, cohort, seed=0)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bytes, NaN where NaN."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("fusion", ["late", "attention", "early"])
def test_predictions_with_the_store_equal_those_in_memory(cohort, tmp_path, fusion):
    assert not all(m.present.all() for m in cohort.modalities.values())  # missing modalities
    ref = Model(make(), fusion=fusion).fit(cohort)
    got = Model(make(store={"path": str(tmp_path), "chunk": CHUNK}), fusion=fusion).fit(cohort)
    x, present = got.transform(cohort)
    x0, present0 = ref.transform(cohort)
    for m in x0:
        assert isinstance(x[m], StoredRows) and not isinstance(x0[m], StoredRows)
        assert same(x[m], x0[m]), m  # bit for bit, NaN rows of absent patients included
        np.testing.assert_array_equal(present[m], present0[m])
    # the validation loss is summed over training-sized batches when rows are read from
    # disk (4,096 rows at once in memory): the same up to float rounding
    h, h0 = dict(got.history_), dict(ref.history_)
    assert h.pop("best_val_loss") == pytest.approx(h0.pop("best_val_loss"), abs=1e-6)
    assert h == h0
    p, p0 = got.predict_proba(cohort), ref.predict_proba(cohort)
    # prediction reads stored rows in training-sized batches: equal up to float rounding
    # at most (measured: 0.0)
    np.testing.assert_allclose(p, p0, rtol=0, atol=1e-6)


def test_without_the_option_arrays_stay_in_memory(cohort, pres):
    model = Model(make())
    model.preprocessors_ = pres
    x, _ = model.transform(cohort)
    assert all(type(v) is np.ndarray for v in x.values())
    model.spec = make(store={"path": "unused", "min_mb": 1e6})  # below the threshold
    x, _ = model.transform(cohort)
    assert all(type(v) is np.ndarray for v in x.values())


def test_store_is_reused_and_rebuilt_when_the_preprocessing_or_data_change(cohort, pres, tmp_path):
    first = open_store(pres, cohort, tmp_path, CHUNK)
    assert first.built == 4
    again = open_store(pres, cohort, tmp_path, CHUNK)
    assert again.built == 0 and again.folder == first.folder
    # another preprocessing (the same options, one changed): another store
    specs = make().modalities
    specs[1] = specs[1].model_copy(update={"preprocessing": {"variance_top_k": 6}})
    other = fit_preprocessors(specs, cohort, seed=0)
    changed = open_store(other, cohort, tmp_path, CHUNK)
    assert changed.built == 4 and changed.folder.parent != first.folder.parent
    assert StoredRows(changed.folder / "m1.npy").shape == (N, 6)
    # the same ids with one changed value: another store
    f, t = frames()
    f["labs"].iloc[3, 0] += 1.0
    edited = build_cohort(make(), f, t)
    assert open_store(pres, edited, tmp_path, CHUNK).folder.parent != first.folder.parent
    # other patients: another store
    assert open_store(pres, cohort.subset(np.arange(100)), tmp_path, CHUNK).built == 3


def test_masked_cohort_reads_a_store_that_includes_its_patients(cohort, pres, tmp_path):
    open_store(pres, cohort, tmp_path, CHUNK)
    rng = np.random.default_rng(1)
    masked = cohort.with_presence(
        {k: p & (rng.random(len(p)) > 0.5) for k, p in cohort.presence().items()}
    )
    found = open_store(pres, masked, tmp_path, CHUNK)
    assert found.built == 0  # rows hidden, nothing written
    x, _ = stored_arrays(pres, masked, tmp_path, CHUNK)
    x0, _ = transform_cohort(pres, masked)
    for m in x0:
        assert same(x[m], x0[m]), m
        assert same(x[m][[7, 3, 3, 120]], x0[m][[7, 3, 3, 120]])


def test_interrupted_build_resumes_to_the_same_arrays(cohort, pres, tmp_path, monkeypatch):
    ref = open_store(pres, cohort, tmp_path / "ref", CHUNK)
    calls: list[str] = []
    real = store_mod.transform_part

    def failing(pre, data, name):
        calls.append(name)
        if len(calls) == 2 * 3 + 2:  # chunk 2, second modality: the first one is written
            raise RuntimeError("simulated crash")
        return real(pre, data, name)

    monkeypatch.setattr(store_mod, "transform_part", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        open_store(pres, cohort, tmp_path / "run", CHUNK)
    (folder,) = (tmp_path / "run").glob("v*/p*")
    done = sorted(p.name for p in (folder / "done").glob("*.json"))
    assert done == ["000000.json", "000001.json"]  # chunk 2 is not marked
    assert not (folder / "complete.json").exists()
    written = np.asarray(StoredRows(folder / "m0.npy"))[80:120]
    assert same(written, np.asarray(StoredRows(ref.folder / "m0.npy"))[80:120])  # half done
    assert not list(folder.rglob("*.tmp"))  # no half-written marker left behind

    monkeypatch.setattr(store_mod, "transform_part", real)
    resumed = open_store(pres, cohort, tmp_path / "run", CHUNK)
    assert resumed.built == 2  # chunks 2 and 3 only
    for i in range(3):
        assert same(StoredRows(resumed.folder / f"m{i}.npy"), StoredRows(ref.folder / f"m{i}.npy"))
    rec = json.loads((resumed.folder / "done" / "000003.json").read_text())
    assert rec["rows"] == [120, N]


KILLED_BUILD = """
import pickle, sys, time
from pathlib import Path
from holomed.modalities import store
pres, cohort, root, ready = pickle.loads(Path(sys.argv[1]).read_bytes())
real, calls = store.transform_part, []
def slow(pre, data, name):
    calls.append(name)
    if len(calls) == 8:  # chunk 2, second modality: the first one is written
        Path(ready).write_text("now")
        time.sleep(60)
    return real(pre, data, name)
store.transform_part = slow
store.open_store(pres, cohort, root, int(sys.argv[2]))
"""


def test_killed_build_resumes_to_the_same_arrays(cohort, pres, tmp_path):
    """A build killed with SIGKILL in the middle of chunk 2 (its first file's rows
    written, no marker) resumes from chunk 2 and ends with the uninterrupted bytes."""
    ref = open_store(pres, cohort, tmp_path / "ref", CHUNK)
    job, ready = tmp_path / "job.pkl", tmp_path / "ready"
    job.write_bytes(pickle.dumps((pres, cohort, str(tmp_path / "run"), str(ready))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(job), str(CHUNK)], env=env)
    try:
        t0 = time.time()
        while not ready.exists() and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.05)
        assert ready.exists(), "the build did not reach chunk 2"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (folder,) = (tmp_path / "run").glob("v*/p*")
    assert sorted(p.name for p in (folder / "done").glob("*.json")) == [
        "000000.json",
        "000001.json",
    ]
    resumed = open_store(pres, cohort, tmp_path / "run", CHUNK)
    assert resumed.built == 2 and resumed.folder == folder
    for i in range(3):
        assert same(StoredRows(resumed.folder / f"m{i}.npy"), StoredRows(ref.folder / f"m{i}.npy"))


def test_parallel_build_equals_the_serial_one(cohort, pres, tmp_path):
    """Through the spec (``executor: local, workers: 2``), as a fit would build it."""
    serial = open_store(pres, cohort, tmp_path / "serial", CHUNK)
    store = {"path": str(tmp_path / "local"), "chunk": CHUNK, "executor": "local", "workers": 2}
    model = Model(make(store=store))
    model.preprocessors_ = pres
    x, _ = model.transform(cohort)
    (folder,) = (tmp_path / "local").glob("v*/p*")
    assert folder.relative_to(tmp_path / "local") == serial.folder.relative_to(tmp_path / "serial")
    marks = [json.loads(f.read_text()) for f in sorted((folder / "done").glob("*.json"))]
    assert len(marks) == 4 and os.getpid() not in {m["pid"] for m in marks}  # workers wrote
    for i, m in enumerate(serial.names):
        assert same(x[m], StoredRows(serial.folder / f"m{i}.npy")), m
    assert model.preprocessors_["labs"].unknown_categories_ == serial.unknown.get("labs", {})


def test_stored_rows_read_any_order_and_pickle_small(cohort, pres, tmp_path):
    x, _ = stored_arrays(pres, cohort, tmp_path, CHUNK)
    x0, _ = transform_cohort(pres, cohort)
    rows = x["omics"]
    for idx in ([5, 6, 7], [9, 2, 2, 140], [0], list(range(N))):
        assert same(rows.rows(np.asarray(idx)), x0["omics"][idx])
    blob = pickle.dumps(rows)
    assert len(blob) < 1000  # a path, not the array: DDP workers reopen the file
    assert same(pickle.loads(blob), x0["omics"])


def test_store_spec_short_form_and_errors(tmp_path):
    assert make(store="runs/store").training.store.path == "runs/store"
    with pytest.raises(SpecError, match=r"training\.store\.path: the store's folder is empty"):
        make(store="")
    with pytest.raises(SpecError, match=r"training\.store: expected a folder"):
        make(store=5)
    with pytest.raises(SpecError, match=r"training\.store\.chunk"):
        make(store={"path": "x", "chunk": 0})


def test_unwritable_store_falls_back_to_memory_with_a_warning(cohort, pres, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="not usable"):
        x, _ = stored_arrays(pres, cohort, blocker / "store", CHUNK)
    x0, _ = transform_cohort(pres, cohort)
    assert all(same(x[m], x0[m]) for m in x0)


def test_damaged_store_is_an_error_naming_the_folder(cohort, pres, tmp_path):
    st = open_store(pres, cohort, tmp_path, CHUNK)
    np.save(st.folder / "m0.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(CohortError, match="delete it"):
        open_store(pres, cohort, tmp_path, CHUNK)
    assert Path(st.folder).is_dir()


def test_a_saved_model_predicts_through_its_store(cohort, tmp_path):
    from holomed.candidates import load

    model = Model(make(store={"path": str(tmp_path / "store"), "chunk": CHUNK})).fit(cohort)
    model.save(tmp_path / "bundle")
    again = load(tmp_path / "bundle")
    assert again.spec.training.store.path == str(tmp_path / "store")
    np.testing.assert_array_equal(again.predict_proba(cohort), model.predict_proba(cohort))
    only_labs = cohort.subset(np.arange(20))
    only_labs.modalities = {"labs": only_labs.modalities["labs"]}  # the others absent
    x, present = again.transform(only_labs)
    assert isinstance(x["labs"], StoredRows) and not present["omics"].any()
    assert np.isnan(np.asarray(x["vitals"])).all()
