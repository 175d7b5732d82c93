"""The command line, end to end on small synthetic files: fit -> bundle -> predict with
missing modalities, compare, robustness, listings and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from holomed.cli import app
from holomed.synthetic import write_synthetic

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syn")
    spec_path = write_synthetic(folder, n_patients=150, seed=5)
    spec = yaml.safe_load(spec_path.read_text())
    spec["training"].update({"max_epochs": 3})
    spec["evaluation"].update({"seeds": 1, "n_bootstrap": 20})
    spec_path.write_text(yaml.safe_dump(spec))
    return folder, spec_path


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_fusions_lists_all_seven():
    out = ok(runner.invoke(app, ["fusions"]))
    for name in ("early", "late", "joint", "gradual", "guided", "attention", "hybrid"):
        assert name in out


def test_datasets_list():
    out = ok(runner.invoke(app, ["datasets", "list"]))
    assert "rosmap" in out and "synthetic" in out
    gbsg = next(line for line in out.splitlines() if "gbsg2" in line)
    assert "scikit-survival" in gbsg and "download" in gbsg and "not found" not in gbsg


def test_fit_then_predict_new_patients_with_missing_modalities(files, tmp_path):
    folder, spec_path = files
    ok(
        runner.invoke(
            app, ["fit", str(spec_path), "--out", str(tmp_path / "fit"), "--fusion", "attention"]
        )
    )
    bundle = tmp_path / "fit" / "bundle"
    for f in ("spec.yaml", "weights.safetensors", "state.json", "card.json"):
        assert (bundle / f).exists()
    card = json.loads((bundle / "card.json").read_text())
    assert "auroc" in card["metrics_test"] and card["intended_use"]
    # new patients: clinical for 10, expression for only 4 of them (+1 unknown to clinical)
    clin = pd.read_csv(folder / "clinical.csv").head(10)
    expr = pd.read_csv(folder / "expression.csv").head(4)
    expr.loc[0, "patient_id"] = "NEW-0001"
    clin.to_csv(tmp_path / "c.csv", index=False)
    expr.to_csv(tmp_path / "e.csv", index=False)
    out_csv = tmp_path / "preds.csv"
    ok(
        runner.invoke(
            app,
            [
                "predict",
                str(bundle),
                "--input",
                f"clinical={tmp_path / 'c.csv'}",
                "--input",
                f"expression={tmp_path / 'e.csv'}",
                "--out",
                str(out_csv),
            ],
        )
    )
    preds = pd.read_csv(out_csv)
    assert len(preds) == 11
    assert preds["p_event"].between(0, 1).all()
    assert not preds["has_methylation"].any()
    new = preds.set_index("id").loc["NEW-0001"]
    assert bool(new["has_expression"]) and not bool(new["has_clinical"])


def test_predict_rejects_unknown_modality(files, tmp_path):
    folder, spec_path = files
    ok(runner.invoke(app, ["fit", str(spec_path), "--out", str(tmp_path / "fit")]))
    r = runner.invoke(
        app,
        ["predict", str(tmp_path / "fit" / "bundle"), "--input", f"xray={folder / 'clinical.csv'}"],
    )
    assert r.exit_code == 2 and "xray" in r.output


def test_compare_writes_results_and_plot(files, tmp_path):
    _, spec_path = files
    out = ok(
        runner.invoke(
            app,
            [
                "compare",
                str(spec_path),
                "--fusion",
                "early,late",
                "--out",
                str(tmp_path),
                "--no-ablations",
            ],
        )
    )
    assert "SYNTHETIC" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert {
        "early",
        "late",
        "baseline:lr_early",
        "baseline:lr_late",
        "baseline:gbm",
        "lr_l1",
        "stack",
        "selection (per fold)",
    } <= set(res["strategies"])
    assert (tmp_path / "leaderboard.png").stat().st_size > 1000
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert set(preds["entry"]) == set(res["strategies"])


def test_robustness_writes_curve(files, tmp_path):
    _, spec_path = files
    ok(
        runner.invoke(
            app,
            [
                "robustness",
                str(spec_path),
                "--fusion",
                "joint",
                "--out",
                str(tmp_path),
                "--no-baselines",
            ],
        )
    )
    curve = json.loads((tmp_path / "robustness.json").read_text())
    assert curve["rates"] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert "random" in curve["scenarios"]
    assert (tmp_path / "robustness.png").stat().st_size > 1000


def test_unknown_fusion_is_a_clear_error(files):
    _, spec_path = files
    for cmd in ("compare", "fit", "robustness"):
        r = runner.invoke(app, [cmd, str(spec_path), "--fusion", "erly"])
        assert r.exit_code == 2, cmd
        assert "unknown candidate 'erly' (did you mean 'early'?)" in " ".join(r.output.split())
        assert "loading cohort" not in r.output and "patients, task" not in r.output  # at once


def test_bad_spec_names_the_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("modalities:\n  - {name: a, kind: omics, source: a.csv}\ntraining: {lr: -1}\n")
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 2 and "training.lr" in r.output and str(p) in r.output


def test_set_overrides_spec_fields(files, tmp_path):
    _, spec_path = files
    ok(
        runner.invoke(
            app,
            [
                "fit",
                str(spec_path),
                "--out",
                str(tmp_path),
                "--set",
                "training.max_epochs=1",
                "--set",
                "fusion.hidden=8",
            ],
        )
    )
    import yaml as _yaml

    saved = _yaml.safe_load((tmp_path / "bundle" / "spec.yaml").read_text())
    assert saved["training"]["max_epochs"] == 1 and saved["fusion"]["hidden"] == 8
    r = runner.invoke(app, ["fit", str(spec_path), "--set", "training.lr=-3"])
    assert r.exit_code == 2 and "training.lr" in r.output


def test_fit_results_carry_the_trust_sections_and_explain_new_patients(files, tmp_path):
    folder, spec_path = files
    ok(
        runner.invoke(
            app, ["fit", str(spec_path), "--out", str(tmp_path / "fit"), "--fusion", "attention"]
        )
    )
    res = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert res["kind"] == "fit" and res["synthetic"]
    for key in (
        "calibration",
        "curves",
        "contributions",
        "attention",
        "features",
        "deletion_curve",
        "fairness",
    ):
        assert res[key], key
    assert set(res["fairness"]["attributes"]) == {"sex", "site"}
    assert res["calibration"]["before"]["reliability"]["count"]
    clin = pd.read_csv(folder / "clinical.csv").head(6)
    clin.to_csv(tmp_path / "c.csv", index=False)
    ok(
        runner.invoke(
            app,
            [
                "explain",
                str(tmp_path / "fit" / "bundle"),
                "--input",
                f"clinical={tmp_path / 'c.csv'}",
                "--out",
                str(tmp_path / "ex"),
            ],
        )
    )
    table = pd.read_csv(tmp_path / "ex" / "contributions.csv")
    assert len(table) == 6
    # only clinical was given: it carries the whole change from the no-data prior
    np.testing.assert_allclose(
        table["shapley_clinical"], table["score"] - table["score_without_any_modality"], atol=1e-6
    )
    assert (table["shapley_expression"] == 0).all()


def test_impute_writes_generated_tables_keyed_by_the_sources_id_column(files, tmp_path):
    _, spec_path = files
    out = ok(
        runner.invoke(
            app,
            ["impute", str(spec_path), "--out", str(tmp_path / "imp"), "-m", "expression"]
            + ["-m", "methylation", "--samples", "2", "--epochs", "5"],
        )
    )
    assert "expression:" in out and "patients generated" in out
    gen = pd.read_csv(tmp_path / "imp" / "expression.generated.csv", dtype={"patient_id": str})
    measured = pd.read_csv(spec_path.parent / "expression.csv", dtype={"patient_id": str})
    assert gen.columns[0] == "patient_id" and (gen["generated"] == 1).all()
    assert not set(gen["patient_id"]) & set(measured["patient_id"])  # only absent patients
