"""The command line under hostile input: every failure is one named line with exit code 2
(never a traceback), and nothing a user gives is silently changed or lost."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from holomed.cli import _exclusion_lines, app
from holomed.synthetic import write_synthetic

runner = CliRunner()
FAST = ["--set", "training.max_epochs=2", "--set", "evaluation.n_bootstrap=10"]
FAST += ["--set", "evaluation.explain=false", "--set", "evaluation.seeds=1"]


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def refused(result, *parts):
    """Exit 2, one 'error:' line naming every part, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for p in parts:
        assert str(p) in flat, (p, result.output)
    return flat


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hs")
    spec_path = write_synthetic(folder, n_patients=80, seed=3)
    ok(runner.invoke(app, ["fit", str(spec_path), "--out", str(folder / "fit"), *FAST]))
    return folder, spec_path, folder / "fit" / "bundle"


def _clinical(folder, tmp_path, n=6, name="c.csv"):
    clin = pd.read_csv(folder / "clinical.csv").head(n)
    clin.to_csv(tmp_path / name, index=False)
    return clin, tmp_path / name


# -- predict / explain / report: outputs ----------------------------------------------


def test_predict_into_an_existing_folder_writes_predictions_csv(fitted, tmp_path):
    folder, _, bundle = fitted
    _, c = _clinical(folder, tmp_path)
    out = tmp_path / "preds"
    out.mkdir()
    ok(runner.invoke(app, ["predict", str(bundle), "-i", f"clinical={c}", "--out", str(out)]))
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 6 and preds["p_event"].between(0, 1).all()


def test_predict_write_failure_is_one_line(fitted, tmp_path):
    folder, _, bundle = fitted
    _, c = _clinical(folder, tmp_path)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "p.csv"  # its folder is a file
    r = runner.invoke(app, ["predict", str(bundle), "-i", f"clinical={c}", "--out", str(out)])
    refused(r, "afile")


def test_explain_out_an_existing_file_is_refused(fitted, tmp_path):
    folder, _, bundle = fitted
    _, c = _clinical(folder, tmp_path)
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    r = runner.invoke(app, ["explain", str(bundle), "-i", f"clinical={c}", "--out", str(out)])
    refused(r, out, "is a file")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{}", "missing key(s) dataset, task, strategies"),
        ('{"kind": "fit", "dataset": "x"}', "missing key(s) task"),
        ('{"kind": "fit", "dataset": "x", "task": "binary", "metrics": [1]}', "metrics: expected"),
        ('{"kind": "nonsense", "dataset": "x"}', "nonsense"),
    ],
)
def test_report_on_invalid_results_is_one_named_line(tmp_path, text, says):
    (tmp_path / "results.json").write_text(text)
    flat = refused(runner.invoke(app, ["report", str(tmp_path)]), "results.json", says)
    assert flat.count("error:") == 1
    assert not (tmp_path / "report.html").exists()


def test_report_without_results(tmp_path):
    refused(runner.invoke(app, ["report", str(tmp_path)]), "results.json", "not found")


# -- specs: duplicate keys, booleans and text for numbers, --set ----------------------


SPEC = "modalities:\n  - {name: a, kind: omics, source: a.csv}\n"


@pytest.mark.parametrize(
    "body, key, line, first",
    [
        (
            "training: {lr: 0.1}\nsplit: {method: kfold}\ntraining: {patience: 3}\n",
            "training",
            5,
            3,
        ),
        ("training:\n  max_epochs: 5\n  lr: 0.1\n  max_epochs: 7\n", "training.max_epochs", 6, 4),
    ],
)
def test_duplicate_keys_name_the_file_the_key_and_the_lines(tmp_path, body, key, line, first):
    p = tmp_path / "dup.yaml"
    p.write_text(SPEC + body)
    r = runner.invoke(app, ["validate", str(p)])
    refused(r, str(p), f"line {line}", repr(key), f"first on line {first}")


@pytest.mark.parametrize(
    "body, field, says",
    [
        ("training: {max_epochs: true}", "training.max_epochs", "not a boolean"),
        ("training: {seed: true}", "training.seed", "not a boolean"),
        ("training: {devices: true}", "training.devices", "not a boolean"),
        ('split: {method: kfold, n_folds: "5"}', "split.n_folds", "not text"),
        ("training: {lr: true}", "training.lr", "not a boolean"),
        ("fusion: {dropout: false}", "fusion.dropout", "not a boolean"),
        ("evaluation: {missing_rates: [0.1, true]}", "evaluation.missing_rates", "item 1"),
    ],
)
def test_booleans_and_text_are_not_numbers(tmp_path, body, field, says):
    p = tmp_path / "s.yaml"
    p.write_text(SPEC + body + "\n")
    r = runner.invoke(app, ["validate", str(p)])
    refused(r, str(p), f"{field}:", says)


def test_numbers_stay_numbers():
    from holomed.spec import load_yaml, parse_spec

    data = load_yaml(SPEC + "training: {lr: 1e-3, weight_decay: 0, max_epochs: 3}\n")
    spec = parse_spec(data)
    assert spec.training.lr == 0.001 and spec.training.weight_decay == 0.0
    assert spec.training.max_epochs == 3


def test_set_errors_are_labelled_set(fitted):
    _, spec_path, _ = fitted
    r = runner.invoke(app, ["fit", str(spec_path), "--set", "training.max_epochs=abc"])
    flat = refused(r, "--set: training.max_epochs")
    assert "evaluation.grid" not in flat
    r = runner.invoke(app, ["fit", str(spec_path), "--set", "training.max_epochs=true"])
    refused(r, "--set: training.max_epochs", "not a boolean")
    refused(runner.invoke(app, ["fit", str(spec_path), "--set", "=3"]), "expected KEY=VALUE")
    r = runner.invoke(app, ["fit", str(spec_path), "--set", "training.lr=[1"])
    refused(r, "--set", "not valid YAML")


# -- prediction: unknown categories, excluded patients ---------------------------------


def test_unknown_category_is_counted_and_shown_without_its_value(fitted, tmp_path):
    folder, _, bundle = fitted
    clin = pd.read_csv(folder / "clinical.csv").head(6)
    clin.loc[[0, 2, 3], "site"] = "atlantis"
    clin.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "p.csv"
    r = runner.invoke(
        app, ["predict", str(bundle), "-i", f"clinical={tmp_path / 'c.csv'}", "--out", str(out)]
    )
    text = " ".join(ok(r).split())
    assert "modality 'clinical', column 'site': 3 value(s)" in text
    assert "atlantis" not in text
    assert len(pd.read_csv(out)) == 6

    from holomed.candidates import load

    model = load(bundle)
    cohort_csv = {"clinical": [str(tmp_path / "c.csv")]}
    from holomed.cohort import unlabelled_cohort

    model.predict_proba(unlabelled_cohort(model.spec, cohort_csv))
    assert model.preprocessors_["clinical"].unknown_categories_ == {"site": 3}


def test_patient_without_usable_data_is_listed_with_a_reason(fitted, tmp_path):
    folder, _, bundle = fitted
    clin = pd.read_csv(folder / "clinical.csv").head(5)
    lost = clin.loc[1, "patient_id"]
    clin.loc[1, [c for c in clin.columns if c != "patient_id"]] = None  # its only row: empty
    clin.loc[2, "lab0"] = float("inf")  # one value, set to missing
    clin.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "p.csv"
    r = runner.invoke(
        app, ["predict", str(bundle), "-i", f"clinical={tmp_path / 'c.csv'}", "--out", str(out)]
    )
    text = " ".join(ok(r).split())
    assert "1 patient(s) without usable data" in text
    assert "1 modality row(s) unusable" in text
    assert "1 value(s) set to missing" in text
    preds = pd.read_csv(out, keep_default_na=False).set_index("id")
    assert len(preds) == 5 and lost in preds.index
    assert preds.loc[lost, "p_event"] == "" and preds.loc[lost, "predicted"] == ""
    assert "unusable" in preds.loc[lost, "excluded_reason"]
    others = preds.drop(index=lost)
    assert (others["excluded_reason"] == "").all()
    assert others["p_event"].astype(float).between(0, 1).all()


def test_exclusion_lines_count_values_apart_from_rows():
    excluded = [
        {"id": "A", "modality": "vitals", "reason": "sentinel -1 of 'HR'", "scope": "value"},
        {"id": "B", "modality": "vitals", "reason": "sentinel -1 of 'HR'", "scope": "value"},
        {
            "id": "C",
            "modality": "vitals",
            "reason": "out of range 'HR'",
            "scope": "value",
            "count": 4,
        },
        {"id": "D", "modality": "labs", "reason": "no value at all", "scope": "modality"},
        {"id": "D", "reason": "all of its modality rows were unusable", "scope": "patient"},
    ]
    text = "\n".join(_exclusion_lines(excluded))
    assert "6 value(s) set to missing" in text
    assert "2 x vitals: sentinel -1 of 'HR'" in text
    assert "1 modality row(s) unusable and treated as missing" in text
    assert "1 patient(s) without usable data" in text
    assert "value(s) set to missing" not in "\n".join(_exclusion_lines(excluded[3:]))


# -- damaged bundles -------------------------------------------------------------------


def _drop_key(b, key):
    state = json.loads((b / "state.json").read_text())
    (b / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != key}))


@pytest.mark.parametrize(
    "damage, names",
    [
        (lambda b: (b / "state.json").write_text("{oops"), "state.json"),
        (lambda b: (b / "state.json").write_text("{}"), "state.json"),
        (lambda b: _drop_key(b, "preprocessors"), "state.json"),
        (lambda b: (b / "weights.safetensors").write_bytes(b"junk"), "weights.safetensors"),
        (lambda b: (b / "spec.yaml").write_text("a: [1"), "spec.yaml"),
    ],
)
def test_damaged_bundle_names_the_file(fitted, tmp_path, damage, names):
    folder, _, bundle = fitted
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    damage(copy)
    _, c = _clinical(folder, tmp_path)
    r = runner.invoke(app, ["predict", str(copy), "-i", f"clinical={c}", "--out", str(tmp_path)])
    refused(r, copy / names)
    out = tmp_path / "x"
    r = runner.invoke(app, ["explain", str(copy), "-i", f"clinical={c}", "--out", str(out)])
    refused(r, copy / names)


def test_spec_yaml_of_a_bundle_round_trips(fitted):
    _, _, bundle = fitted
    from holomed.spec import load_yaml

    assert load_yaml((bundle / "spec.yaml").read_text()) == yaml.safe_load(
        (bundle / "spec.yaml").read_text()
    )


def test_a_candidate_typo_is_refused_by_validate_before_any_data_is_read(fitted, tmp_path):
    _, spec_path, _ = fitted
    d = yaml.safe_load(spec_path.read_text())
    d["evaluation"]["candidates"] = ["lr_erly", "gbm"]
    bad = spec_path.parent / "typo_candidates.yaml"
    bad.write_text(yaml.safe_dump(d))
    refused(runner.invoke(app, ["validate", str(bad)]), "evaluation.candidates", "'lr_erly'")
    d["evaluation"]["candidates"] = ["gbm"]
    d["evaluation"]["search"] = {"trials": 2, "candidates": ["cox"]}  # a survival learner
    bad.write_text(yaml.safe_dump(d))
    refused(
        runner.invoke(app, ["validate", str(bad)]),
        "evaluation.search.candidates",
        "cannot learn a binary task",
    )


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_seeds_below_one_are_refused(seeds, tmp_path):
    r = runner.invoke(app, ["compare", "--seeds", seeds, "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--seeds" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c").exists()


def test_predict_input_without_a_trained_column_names_the_file_and_column(fitted, tmp_path):
    folder, _, bundle = fitted
    clin, c = _clinical(folder, tmp_path)
    clin.drop(columns=["lab1"]).to_csv(c, index=False)
    r = runner.invoke(
        app, ["predict", str(bundle), "-i", f"clinical={c}", "--out", str(tmp_path / "p")]
    )
    refused(r, str(c), "['lab1']")


def test_report_renders_a_robustness_run_folder(fitted, tmp_path):
    _, spec_path, _ = fitted
    out = tmp_path / "rob"
    args = ["robustness", str(spec_path), "--fusion", "gbm", "--seeds", "1", "--no-baselines"]
    ok(runner.invoke(app, [*args, "--out", str(out), *FAST]))
    assert not (out / "results.json").exists()
    ok(runner.invoke(app, ["report", str(out)]))
    assert "robustness" in (out / "report.html").read_text().lower()


def test_robustness_from_a_run_of_another_spec_is_refused(fitted, tmp_path):
    _, spec_path, _ = fitted
    cmp = tmp_path / "cmp"
    args = ["--fusion", "gbm", "--seeds", "1", "--no-ablations", "--no-baselines"]
    ok(runner.invoke(app, ["compare", str(spec_path), *args, "--out", str(cmp), *FAST]))
    rob = ["robustness", str(spec_path), "--from", str(cmp), "--no-baselines", "--seeds", "1"]
    refused(runner.invoke(app, [*rob, "--out", str(tmp_path / "r1")]), "training.max_epochs")
    ok(runner.invoke(app, [*rob, "--out", str(tmp_path / "r2"), *FAST]))


def test_a_set_value_that_the_grid_overrides_is_pointed_out(fitted, tmp_path):
    _, spec_path, _ = fitted
    d = yaml.safe_load(spec_path.read_text())
    d["evaluation"]["grid"] = {"training.max_epochs": [3, 4]}
    grid = spec_path.parent / "grid_spec.yaml"
    grid.write_text(yaml.safe_dump(d))
    args = ["compare", str(grid), "--fusion", "gbm", "--seeds", "1", "--no-ablations"]
    out = ok(runner.invoke(app, [*args, "--no-baselines", "--out", str(tmp_path / "c"), *FAST]))
    assert "--set training.max_epochs is also in evaluation.grid" in " ".join(out.split())


def test_predict_says_which_input_columns_it_ignored(fitted, tmp_path):
    folder, _, bundle = fitted
    clin, c = _clinical(folder, tmp_path)
    clin.assign(ward="7B", bed=3).to_csv(c, index=False)
    out = ok(
        runner.invoke(
            app, ["predict", str(bundle), "-i", f"clinical={c}", "-o", str(tmp_path / "p.csv")]
        )
    )
    flat = " ".join(out.split())
    assert "2 column(s) the model does not read were ignored: ['ward', 'bed']" in flat


def test_predict_flags_values_far_outside_the_training_range(fitted, tmp_path):
    folder, _, bundle = fitted
    clin, c = _clinical(folder, tmp_path)
    clin.loc[clin.index[:2], "age"] = 62000  # months, not years
    clin.to_csv(c, index=False)
    args = ["predict", str(bundle), "-i", f"clinical={c}", "-o", str(tmp_path / "p.csv")]
    flat = " ".join(ok(runner.invoke(app, args)).split())
    assert "values far outside the training range" in flat and "age 2" in flat
