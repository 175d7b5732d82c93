"""The comparison harness: results contract, honest selection, ablations, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from holomed.cohort import load_cohort
from holomed.evaluation.compare import apply_overrides, compare, count_fits, grid_points
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict


def tiny_spec(**evaluation):
    d = synthetic_spec_dict(n_patients=160, seed=3)
    d["training"].update({"max_epochs": 4, "patience": 2})
    d["evaluation"].update({"seeds": 2, "n_bootstrap": 30, "selection_folds": 2, **evaluation})
    return parse_spec(d)


@pytest.fixture(scope="module")
def run():
    spec = tiny_spec(grid={"training.weight_decay": [0.0, 0.01]})
    cohort = load_cohort(spec)
    ticks = []
    results, outputs = compare(
        spec, cohort, ["joint", "late"], tick=lambda msg, units=1: ticks.append((msg, units))
    )
    return spec, cohort, results, outputs, ticks


def test_results_contract(run):
    spec, cohort, results, outputs, ticks = run
    for key in (
        "dataset",
        "task",
        "seeds",
        "selection",
        "selected",
        "strategies",
        "excluded",
        "versions",
        "leaderboard",
        "synthetic",
    ):
        assert key in results
    assert results["selection"] == "cv-on-train"
    assert results["synthetic"] is True
    assert results["seeds"] == [0, 1]
    assert results["selected"] in results["strategies"]
    assert results["selected_family"] in (
        "neural",
        "classical",
        "classical_late",
        "stacking",
        "ensemble",
    )
    # the evaluated procedure: each split's choice predicts its own test patients
    proc = results["strategies"]["selection (per fold)"]
    assert proc["group"] == "selected"
    detail = results["selection_detail"][0]
    assert detail["selected"] in detail["cv_scores"]
    best = max(detail["cv_scores"], key=detail["cv_scores"].get)
    assert detail["selected"] == best
    for name, e in results["strategies"].items():
        for m in ("accuracy", "balanced_accuracy", "f1", "auroc", "auprc", "brier", "ece"):
            v = e["metrics"][m]
            assert set(v) >= {"mean", "sd", "ci"}, name
            lo, hi = v["ci"]
            assert lo <= hi
        assert e["fit_seconds"] >= 0 and e["peak_rss_mb"] > 0
    from holomed.runfiles import clean

    json.dumps(clean(results), allow_nan=False)  # strict JSON once written
    # progress counts model fits: a selection step weighs its inner fits
    assert sum(u for _, u in ticks) == count_fits(spec, ["joint", "late"], 2, 1, True, True)
    folds = spec.evaluation.selection_folds * spec.evaluation.selection_repeats
    assert {u for m, u in ticks if m.startswith("select joint")} == {folds}
    assert {u for m, u in ticks if m.startswith("fit ")} == {1}


def test_every_comparison_has_ablations_and_baselines(run):
    _, cohort, results, outputs, _ = run
    names = set(results["strategies"])
    for m in cohort.modality_names:
        assert f"single:{m}" in names and f"without:{m}" in names
    assert {"baseline:lr_early", "baseline:lr_late", "baseline:gbm"} <= names
    # predictions cover exactly the test patients of the predefined split
    assert results["n_evaluated"] == int((cohort.split == "test").sum())
    for outs in outputs.values():
        assert len(outs) == 2 and all(np.isfinite(o).all() for o in outs)


def test_selection_never_sees_test_labels():
    """Scrambling the test patients' labels must not change what CV-on-train selects."""
    spec = tiny_spec(seeds=1, n_bootstrap=0, baselines=False, ablations=False)
    cohort = load_cohort(spec)
    a, _ = compare(spec, cohort, ["joint", "late"])
    flipped = load_cohort(spec)
    test = flipped.split == "test"
    flipped.y[test] = 1 - flipped.y[test]
    b, _ = compare(spec, flipped, ["joint", "late"])
    assert a["selection_detail"][0]["cv_scores"] == b["selection_detail"][0]["cv_scores"]
    assert a["selected"] == b["selected"]
    ma = a["strategies"]["joint"]["metrics"]["auroc"]["mean"]
    mb = b["strategies"]["joint"]["metrics"]["auroc"]["mean"]
    assert ma != mb  # the test labels do matter for the reported metrics


def test_kfold_predicts_every_patient_once_per_seed():
    d = synthetic_spec_dict(n_patients=90, seed=1)
    d["split"] = {"method": "kfold", "n_folds": 3}
    d["training"].update({"max_epochs": 2})
    d["evaluation"].update(
        {"seeds": 1, "n_bootstrap": 0, "selection_folds": 2, "baselines": False, "ablations": False}
    )
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    results, outputs = compare(spec, cohort, ["early"])
    assert results["n_evaluated"] == len(cohort)
    assert len(results["selection_detail"]) == 3
    assert np.isfinite(outputs["early"][0]).all()


def test_grid_and_overrides():
    spec = tiny_spec(grid={"training.lr": [0.1, 0.01], "fusion.options.layers": [1]})
    points = grid_points(spec)
    assert len(points) == 2
    new = apply_overrides(spec, points[0])
    assert new.fusion.options["layers"] == 1
    assert new.training.lr in (0.1, 0.01)
    assert spec.training.lr != 0.1 or spec.training.lr == new.training.lr


def test_contributions_and_baseline_shap_are_recorded(run):
    _, cohort, results, _, _ = run
    for name in ("joint", "late", "baseline:lr_late", "baseline:gbm"):
        c = results["strategies"][name]["contributions"]
        assert set(c["global"]) == set(cohort.modality_names), name
        total = sum(c["global"].values())
        assert abs(total - (c["value_all"] - c["value_none"])) < 1e-9
    top = results["strategies"]["baseline:lr_early"]["features"]["top"]
    assert set(top) == set(cohort.modality_names)
    assert results["limitations"] and results["intended_use"]


def test_one_candidate_skips_inner_cv(monkeypatch):
    """With one strategy and no grid there is nothing to select: no inner-CV fits."""
    import holomed.evaluation.compare as cmp

    def boom(*_a, **_k):
        raise AssertionError("inner CV ran for a single candidate")

    monkeypatch.setattr(cmp, "select", boom)
    spec = tiny_spec(seeds=1, n_bootstrap=0, baselines=False, ablations=False)
    res, _ = compare(spec, load_cohort(spec), ["joint"])
    assert res["selected"] == "joint"
    assert res["selection_detail"][0]["cv_scores"] == {}


def test_inner_predictions_are_saved_and_reproduce_the_ensembles_honest_scores(tmp_path):
    """``inner``: per outer split, the training rows, the inner folds and every
    candidate's out-of-fold predictions as selection saw them; written as a plain npz
    (no pickle). Recomputing the ensemble's honest per-fold scores from the saved arrays
    gives the scores in results.json."""
    from holomed.evaluation.select import ensemble_selection, repeats_of
    from holomed.runfiles import write_inner_predictions

    spec = tiny_spec(seeds=1, save_inner_predictions=True, ablations=False)
    cohort = load_cohort(spec)
    inner: list = []
    results, _ = compare(spec, cohort, ["late"], inner=inner)
    assert len(inner) == results["n_splits"]
    path = write_inner_predictions(tmp_path / "inner.npz", inner)
    z = np.load(path, allow_pickle=False)
    for k, detail in enumerate(results["selection_detail"]):
        rows, y = z[f"split{k}/rows"], z[f"split{k}/y"]
        np.testing.assert_array_equal(y, cohort.y[rows])
        tests = [z[f"split{k}/fold{i}/test"] for i in range(spec.evaluation.selection_folds)]
        assert sorted(np.concatenate(tests).tolist()) == list(range(len(rows)))
        oof = {n: [z[f"split{k}/oof/{n}/0"]] for n in detail["cv_scores"] if n != "ensemble"}
        assert all(o[0].shape[0] == len(rows) for o in oof.values())
        folds = [(z[f"split{k}/fold{i}/train"], t) for i, t in enumerate(tests)]
        assert repeats_of(folds, len(rows)) == [list(range(len(folds)))]

        class S:  # what ensemble_selection reads of a scored candidate
            def __init__(self, o):
                self.oofs, self.oof = o, o[0]

        w, scores = ensemble_selection(
            {n: S(o) for n, o in oof.items()}, y, folds, cohort.task,
            spec.evaluation.selection_metric, spec.evaluation.ensemble_objective,
            spec.evaluation.ensemble_bags, spec.training.seed,
        )  # fmt: skip
        assert w == pytest.approx(detail["ensemble_weights"])
        assert scores == pytest.approx(detail["cv_fold_scores"]["ensemble"])
