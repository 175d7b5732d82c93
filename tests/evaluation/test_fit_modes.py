"""``holomed fit`` in its three modes, deployment from a comparison, the run-folder lock,
strict JSON, thread bounds and the calibration metrics."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from holomed.candidates import load
from holomed.cli import app
from holomed.cohort import load_cohort
from holomed.evaluation.fitrun import fit_run
from holomed.evaluation.metrics import calibration_stats, ece
from holomed.runfiles import RunLockedError, run_lock, write_json
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict, write_synthetic
from holomed.threads import available_cores, cores, torch_threads_for

runner = CliRunner()


def kfold_spec(n=150):
    d = synthetic_spec_dict(n_patients=n, seed=2)
    d["split"] = {"method": "kfold", "n_folds": 3}
    d["training"].update({"max_epochs": 3, "patience": 2})
    d["evaluation"].update({"n_bootstrap": 20, "selection_folds": 2, "explain": False})
    return parse_spec(d)


def test_kfold_fit_evaluates_every_patient_out_of_fold_and_deploys_on_all():
    spec = kfold_spec()
    cohort = load_cohort(spec)
    model, res = fit_run(spec, cohort, "lr_early", mode="kfold")
    assert res["n_train"] == len(cohort) and res["n_folds"] == 3
    assert len(res["predictions"]["ids"]) == len(cohort)  # everyone, once
    assert "out-of-fold" in res["evaluation"]
    # the deployed model saw every patient: it equals a fit on all of them
    again, _ = fit_run(spec, cohort, "lr_early", mode="all")
    np.testing.assert_allclose(model.predict_proba(cohort), again.predict_proba(cohort))
    # pooled out-of-fold predictions are not the deployed model's in-sample ones
    score = np.asarray(res["predictions"]["score"])
    assert not np.allclose(score, model.predict_proba(cohort)[:, 1], atol=1e-3)


def test_fit_from_a_comparison_deploys_its_selection(tmp_path):
    spec_path = write_synthetic(tmp_path / "data", n_patients=140, seed=4)
    common = ["--set", "training.max_epochs=2", "--set", "evaluation.n_bootstrap=10"]
    r = runner.invoke(
        app,
        [
            "compare",
            str(spec_path),
            "--fusion",
            "late",
            "--seeds",
            "1",
            "--no-ablations",
            "--out",
            str(tmp_path / "cmp"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert not (tmp_path / "cmp" / "INCOMPLETE").exists()
    deploy = [
        "fit",
        str(spec_path),
        "--from",
        str(tmp_path / "cmp"),
        "--out",
        str(tmp_path / "dep"),
    ]
    # the comparison ran with --set training.max_epochs=2: a refit without it would train
    # another model than the one evaluated, so it is refused, naming the field
    r = runner.invoke(app, deploy)
    assert r.exit_code != 0 and "training.max_epochs: run 2, here 40" in " ".join(r.output.split())
    assert "Traceback" not in r.output
    # --fusion naming another candidate than the run selected is refused too
    other = "gbm" if res["selected"] != "baseline:gbm" else "late"
    r = runner.invoke(app, [*deploy, "--fusion", other, *common])
    assert r.exit_code != 0 and "disagree" in r.output
    r = runner.invoke(app, [*deploy, *common])  # n_bootstrap may differ: run-only
    assert r.exit_code == 0, r.output
    # a run written before a spec field existed lacks it: the field's default is compared
    older = json.loads((tmp_path / "cmp" / "results.json").read_text())
    del older["spec"]["evaluation"]["tree_bags"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(older))
    r = runner.invoke(
        app,
        ["fit", str(spec_path), "--from", str(tmp_path / "old"), "--out",
         str(tmp_path / "dep_old"), *common],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    model = load(tmp_path / "dep" / "bundle")
    assert model.name == res["selected"].removeprefix("baseline:")
    fitres = json.loads((tmp_path / "dep" / "results.json").read_text())
    assert fitres["n_train"] == 140 and fitres["n_test"] == 0
    # no test patients here: the expected performance is the comparison's held-out one,
    # in the results, the bundle's card, the console and the report
    sel = res["strategies"][res["selected"]]["metrics"]["auroc"]
    est = fitres["estimate"]
    assert (
        est["metrics"]["auroc"]["value"] == sel["mean"] and est["n_evaluated"] == res["n_evaluated"]
    )
    # inner CV names a baseline by its candidate: baseline:gbm was scored as gbm
    inner = res["selection_cv_mean"][res["selected"].removeprefix("baseline:")]
    assert est["inner_cv"] == inner is not None
    # the spec recorded is the one run: --seeds 1 --no-ablations, not the file's
    assert res["spec"]["evaluation"]["seeds"] == 1
    assert res["spec"]["evaluation"]["ablations"] is False
    card = json.loads((tmp_path / "dep" / "bundle" / "card.json").read_text())
    assert card["estimate"]["metrics"]["auroc"]["ci"] == sel["ci"]
    assert card["estimate"]["from"] == str(tmp_path / "cmp")
    assert f"held-out auroc {sel['mean']:.3f}" in " ".join(r.output.split())
    # what the model learned is shown on the patients it was trained on
    assert fitres["features"]["on"].startswith("the training patients")
    # the deployable run (no test patients, so no test metrics) has a report too
    r = runner.invoke(app, ["report", str(tmp_path / "dep")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "dep" / "report.html").read_text()
    assert f"held-out AUROC {sel['mean']:.3f}" in page and "Top features" in page
    # a classical baseline can be fitted and deployed by name
    r = runner.invoke(
        app,
        [
            "fit",
            str(spec_path),
            "--fusion",
            "baseline:gbm",
            "--out",
            str(tmp_path / "g"),
            "--set",
            "evaluation.explain=false",
        ],
    )
    assert r.exit_code == 0, r.output
    assert load(tmp_path / "g" / "bundle").family == "classical"


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    with run_lock(tmp_path / "out"):
        assert (tmp_path / "out" / "INCOMPLETE").exists()
        with pytest.raises(RunLockedError, match="another holomed run"):
            with run_lock(tmp_path / "out"):
                pass
    assert not (tmp_path / "out" / "INCOMPLETE").exists()
    # a lock left by a dead process is taken over
    (tmp_path / "out" / ".holomed.lock").write_text("999999")
    with run_lock(tmp_path / "out"):
        pass
    # an interrupted run leaves its marker
    with pytest.raises(KeyboardInterrupt):
        with run_lock(tmp_path / "x"):
            raise KeyboardInterrupt
    assert (tmp_path / "x" / "INCOMPLETE").exists()
    # a run that fails with an error before writing anything leaves no folder behind
    with pytest.raises(ValueError):
        with run_lock(tmp_path / "y"):
            raise ValueError("spec file not found")
    assert not (tmp_path / "y").exists()
    with pytest.raises(ValueError):  # ... but never removes a folder it did not make
        with run_lock(tmp_path / "out"):
            raise ValueError("bad argument")
    assert (tmp_path / "out").is_dir()


def test_results_are_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float32(1.5), np.inf]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [1.5, None]}


def test_threads_follow_the_cores_available(monkeypatch):
    import holomed.threads as T

    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    monkeypatch.setattr(T, "_SET", None)
    monkeypatch.setenv("HOLOMED_THREADS", "1")
    assert cores() == 1
    import torch

    before = torch.get_num_threads()
    with torch_threads_for(10_000) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_binary_ece_is_on_the_risk_scale_and_calibration_slope():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 20000)
    y = (rng.random(20000) < p).astype(int)
    out = np.stack([1 - p, p], 1)
    assert ece(y, out) < 0.02
    # every risk overstated: the top-class ECE would hide it, the risk-scale one does not
    shifted = np.clip(p + 0.2, 0, 1)
    assert ece(y, np.stack([1 - shifted, shifted], 1)) > 0.15
    c = calibration_stats(y, p)
    assert abs(c["calibration_slope"] - 1) < 0.05 and abs(c["calibration_intercept"]) < 0.05
    assert abs(c["calibration_in_the_large"]) < 0.01
    z = np.log(p / (1 - p))
    over = 1 / (1 + np.exp(-2 * z))  # overconfident: slope 0.5
    assert abs(calibration_stats(y, over)["calibration_slope"] - 0.5) < 0.05
    # very overconfident risks near 0 and 1 on few patients: a full Newton step from
    # slope 1 overshot and diverged (slope 1e11); the damped fit is the maximum
    # likelihood, as scikit-learn's unpenalised logistic regression finds it
    from sklearn.linear_model import LogisticRegression

    zz = rng.normal(0, 1, 160)
    yy = (rng.random(160) < 1 / (1 + np.exp(-zz))).astype(int)
    wild = 1 / (1 + np.exp(-5 * zz))
    c = calibration_stats(yy, wild)
    clipped = np.clip(wild, 1e-6, 1 - 1e-6)  # as calibration_stats reads risks
    logit = np.log(clipped / (1 - clipped))[:, None]
    ref = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10).fit(logit, yy)
    assert np.isclose(c["calibration_slope"], ref.coef_[0, 0], atol=1e-4)
    assert np.isclose(c["calibration_intercept"], ref.intercept_[0], atol=1e-4)
    # risks that separate the outcomes: the slope has no finite value, none is made up
    sep = np.r_[rng.uniform(0.01, 0.4, 50), rng.uniform(0.6, 0.99, 50)]
    c = calibration_stats(np.r_[np.zeros(50), np.ones(50)], sep)
    assert np.isnan(c["calibration_slope"]) and np.isnan(c["calibration_intercept"])
    assert np.isfinite(c["calibration_in_the_large"])


def test_predict_and_explain_do_not_care_which_family_won(tmp_path):
    """A classical bundle goes through predict and explain like a network does."""
    spec_path = write_synthetic(tmp_path / "data", n_patients=120, seed=9)
    r = runner.invoke(app, ["fit", str(spec_path), "--fusion", "gbm", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "g" / "results.json").read_text())
    assert res["family"] == "classical" and "contributions" in res
    assert "SHAP" in res["features"]["method"]
    inputs = ["--input", f"clinical={tmp_path / 'data' / 'clinical.csv'}"]
    r = runner.invoke(
        app, ["predict", str(tmp_path / "g" / "bundle"), *inputs, "--out", str(tmp_path / "p.csv")]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["explain", str(tmp_path / "g" / "bundle"), *inputs, "--out", str(tmp_path / "e")]
    )
    assert r.exit_code == 0, r.output
    why = json.loads((tmp_path / "e" / "explanations.json").read_text())
    assert why["family"] == "classical" and why["contributions"]["modalities"]


def test_the_fit_report_says_how_the_model_was_evaluated():
    from holomed.report.html import render_html

    spec = kfold_spec()
    cohort = load_cohort(spec)
    _, res = fit_run(spec, cohort, "lr_early", mode="kfold")
    html = render_html(res)
    assert "out of fold, 3 folds over 150 patients" in html
    assert "candidate" in html and "lr_early (classical)" in html
    assert "green = raises" not in html
    _, res = fit_run(spec, cohort, "lr_early", mode="all")
    assert "not here: trained on all 150 patients" in render_html(res)
