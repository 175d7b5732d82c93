"""Synthetic cohorts (holomed.generative.synthesize, ``holomed synthesize``) on holomed's
small SYNTHETIC cohort: the written cohort loads through its own spec, keeps the
modalities, columns and class balance, carries no real id; the report's numbers exist;
and a generator that copies training patients fails the privacy check."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from holomed.cohort import load_cohort
from holomed.generative.cli import app
from holomed.generative.synthesize import (
    Generator,
    SynthesisError,
    class_counts,
    new_ids,
    real_split,
    synthesize,
)
from holomed.provenance import run_card
from holomed.spec import load_spec
from holomed.synthetic import write_synthetic

pytest.importorskip("sdv", reason="holomed synthesize needs the SDV library")

runner = CliRunner()
FAST = {"n_bootstrap": 50}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """120 SYNTHETIC 'real' patients as files (each omics absent for ~30 %)."""
    folder = tmp_path_factory.mktemp("real")
    path = write_synthetic(folder, n_patients=120, seed=0, missing=0.3)
    spec = load_spec(path)
    return path, spec, load_cohort(spec)


@pytest.fixture(scope="module")
def made(real, tmp_path_factory):
    path, spec, cohort = real
    out = tmp_path_factory.mktemp("made") / "synth"
    report = synthesize(spec, cohort, out, seed=0, **FAST)
    return out, report


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_written_cohort_loads_with_its_spec_and_keeps_modalities_columns_and_balance(real, made):
    _, spec, cohort = real
    out, report = made
    syn_spec = load_spec(out / "spec.yaml")
    syn = load_cohort(syn_spec)
    assert syn_spec.modality_names == spec.modality_names
    for m in spec.modality_names:
        assert syn.modalities[m].kind == cohort.modalities[m].kind
        assert syn.modalities[m].feature_names == cohort.modalities[m].feature_names
    tr, _, _ = real_split(spec, cohort, 0)
    assert len(syn) == len(tr)  # default n: as many as the real training patients
    real_counts = np.bincount(cohort.y[tr], minlength=2)
    assert np.bincount(syn.y, minlength=2).tolist() == real_counts.tolist()
    assert syn.classes == cohort.classes
    # a modality some patients lack is lacked by some synthetic patients too
    for m in ("expression", "methylation"):
        rate = syn.modalities[m].present.mean()
        assert abs(rate - cohort.modalities[m].present[tr].mean()) < 0.25
    # categories stay categories, from the real ones
    sexes = set(syn.modalities["clinical"].values["sex"].dropna())
    assert sexes <= {"F", "M"}
    # marked synthetic everywhere holomed reports on it
    assert syn_spec.dataset.startswith("synthetic")
    assert run_card(syn_spec)["synthetic"] is True
    assert (out / "SYNTHETIC.md").read_text().startswith("# SYNTHETIC cohort")
    assert report["synthetic"] is True


def test_ids_are_new_and_no_real_id_is_written(real, made):
    _, _, cohort = real
    out, _ = made
    syn = load_cohort(load_spec(out / "spec.yaml"))
    assert not set(syn.ids) & set(cohort.ids)
    text = "\n".join(p.read_text() for p in out.iterdir() if p.is_file())
    assert not [i for i in cohort.ids if i in text]


def test_report_has_fidelity_utility_privacy_numbers(made):
    out, report = made
    saved = json.loads((out / "synthesis_report.json").read_text())
    assert saved["model"] == "copula" and saved["modalities"] == report["modalities"]
    f = saved["fidelity"]
    for key in ("ks_mean", "ks_mean_reference", "wasserstein_sd_mean", "corr_mad"):
        assert _finite(f["summary"][key]), key
    assert 0 <= f["summary"]["ks_mean"] <= 1
    assert _finite(f["correlation"]["synthetic"]["between"])
    assert set(f["per_feature"]["expression"]) == {f"g{i:03d}" for i in range(50)}
    assert "tvd" in f["per_feature"]["clinical"]["sex"]
    u = saved["utility"]["learners"]["lr_early"]
    for side in ("train_on_real", "train_on_synthetic"):
        assert 0 <= u[side]["auroc"] <= 1 and len(u[side]["ci"]) == 2
    assert _finite(u["difference"]["auroc"])
    p = saved["privacy"]
    assert 0 <= p["membership"]["auroc"] <= 1
    assert p["dcr"]["exact_copies"] == 0
    assert p["dcr"]["synthetic_to_train"]["median"] > 0
    assert isinstance(p["passed"], bool)
    assert report["reduced"]  # omics wider than the column budget went through PCA


class CopyRows(Generator):
    """A leaky 'generator': hands back the training patients' own rows."""

    name = "copy"

    def fit(self, table, discrete, y):
        self.table, self.y = table.reset_index(drop=True), np.asarray(y)
        return self

    def sample(self, y):
        used: dict[int, int] = {}
        rows = []
        for c in y:
            pool = np.flatnonzero(self.y == c)
            rows.append(pool[used.get(c, 0) % len(pool)])
            used[c] = used.get(c, 0) + 1
        return self.table.iloc[rows].reset_index(drop=True)


def test_a_generator_that_copies_training_patients_fails_the_privacy_check(real, tmp_path):
    _, spec, cohort = real
    report = synthesize(
        spec, cohort, tmp_path / "leak", model=CopyRows(), components=0, learners=(), **FAST
    )
    p = report["privacy"]
    assert not p["passed"]
    assert p["dcr"]["exact_copies"] == report["patients"]["synthetic"]
    assert p["dcr"]["synthetic_to_train"]["median"] < 1e-5  # float32 rounding only
    assert p["membership"]["auroc"] > 0.9
    assert any("copy a training patient" in f for f in p["flags"])
    assert "FAILED" in (tmp_path / "leak" / "SYNTHETIC.md").read_text()


def test_same_seed_same_cohort(real, tmp_path):
    _, spec, cohort = real
    kw = {"learners": (), "n_bootstrap": 0, "n": 40}
    synthesize(spec, cohort, tmp_path / "a", seed=3, **kw)
    synthesize(spec, cohort, tmp_path / "b", seed=3, **kw)
    for name in ("clinical.csv", "expression.csv", "labels.csv"):
        a = pd.read_csv(tmp_path / "a" / name)
        b = pd.read_csv(tmp_path / "b" / name)
        pd.testing.assert_frame_equal(a, b)
    labels = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert len(labels) == 40


def test_refuses_what_it_cannot_do(real, tmp_path, make_tiny_spec):
    from holomed.cohort import build_cohort
    from holomed.synthetic import make_synthetic

    _, spec, cohort = real
    with pytest.raises(SynthesisError, match="unknown model"):
        synthesize(spec, cohort, tmp_path / "x", model="gan9000")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    with pytest.raises(SynthesisError, match="not an empty folder"):
        synthesize(spec, cohort, tmp_path / "full")
    with pytest.raises(SynthesisError, match="not in the cohort"):
        synthesize(spec, cohort, tmp_path / "y", modalities=["nope"])
    reg = make_tiny_spec(target={"column": "age_target", "task": "regression", "classes": None})
    frames, target, _ = make_synthetic(n_patients=40, seed=1)
    target["age_target"] = frames["clinical"]["age"]
    with pytest.raises(SynthesisError, match="binary and multiclass"):
        synthesize(reg, build_cohort(reg, frames, target), tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    # a modality almost no one has: named, with the count (was a pandas shape error)
    from dataclasses import replace

    few = dict(cohort.modalities)
    keep = np.zeros(len(cohort), bool)
    keep[np.flatnonzero(few["noise"].present)[:2]] = True
    few["noise"] = replace(few["noise"], present=keep)
    with pytest.raises(SynthesisError, match=r"modality 'noise': [0-2] training patient"):
        synthesize(spec, replace(cohort, modalities=few), tmp_path / "w")


def test_class_counts_and_ids():
    y = np.array([0] * 30 + [1] * 10)
    assert class_counts(y, 2, 8).tolist() == [6, 2]
    assert class_counts(y, 2, 40).tolist() == [30, 10]
    assert class_counts(np.array([0] * 99 + [1]), 2, 10).tolist() == [9, 1]  # every class
    taken = {"SYNTH-00001"}
    ids = new_ids(5, taken, seed=0)
    assert len(set(ids)) == 5 and not taken & set(ids)


def test_cli_writes_the_cohort_and_prints_the_summary(real, tmp_path):
    path, _, _ = real
    out = tmp_path / "cli"
    res = runner.invoke(app, [str(path), "--out", str(out), "--n-bootstrap", "20", "--n", "60"])
    report = json.loads((out / "synthesis_report.json").read_text())
    assert res.exit_code == (0 if report["privacy"]["passed"] else 1), res.output
    assert "SYNTHETIC" in res.output and "membership AUROC" in res.output
    assert report["patients"]["synthetic"] == 60


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    res = runner.invoke(app, [str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "error:" in res.output and "Traceback" not in res.output


def test_rosmap_meets_the_targets(shared_dataset, tmp_path, monkeypatch):
    """ROSMAP, seed 0: train-on-synthetic AUROC within 0.05 of train-on-real (lr_early,
    106 real test patients) and membership-inference AUROC <= 0.6."""
    folder = shared_dataset("rosmap")
    monkeypatch.setenv("HOLOMED_DATA", str(folder.parent))
    from pathlib import Path

    spec = load_spec(Path(__file__).parents[2] / "examples" / "rosmap.yaml")
    cohort = load_cohort(spec)
    report = synthesize(spec, cohort, tmp_path / "rosmap", seed=0, n_bootstrap=100)
    u = report["utility"]["learners"]["lr_early"]
    assert u["train_on_synthetic"]["auroc"] >= u["train_on_real"]["auroc"] - 0.05
    assert report["privacy"]["membership"]["auroc"] <= 0.6
    assert report["privacy"]["passed"]


@pytest.mark.parametrize("model", ["ctgan", "tvae"])
def test_neural_generators_condition_on_the_label(real, tmp_path, model):
    _, spec, cohort = real
    out = tmp_path / model
    report = synthesize(spec, cohort, out, model=model, epochs=2, n=30, learners=(), n_bootstrap=0)
    syn = load_cohort(load_spec(out / "spec.yaml"))
    assert report["model"] == model and len(syn) == 30
    tr, _, _ = real_split(spec, cohort, 0)
    assert np.bincount(syn.y, minlength=2).tolist() == class_counts(cohort.y[tr], 2, 30).tolist()
