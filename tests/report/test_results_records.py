"""Typed result records (holomed.results): the committed benchmark results round-trip
exactly, a field of the wrong type is named, an unreadable file is named, unknown keys
survive, NaN is written as null, and each metric's direction is defined once."""

from __future__ import annotations

import ast
import copy
import json
import math
from pathlib import Path

import pytest

from holomed.errors import ResultsError
from holomed.report.html import render_report
from holomed.results import (
    CompareRecord,
    FitRecord,
    MetricSummary,
    RobustnessCurve,
    RobustnessRecord,
    StrategyEntry,
    read_results,
    results_from_json,
    write_results,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
COMPARE = sorted(RESULTS.glob("*/*compare*results.json")) + [
    RESULTS / "physionet2012" / "grud_results.json",
    RESULTS / "covid_cxr" / "attention_after_mask_results.json",
]
FIT = sorted(RESULTS.glob("*/fit*results.json"))
ROBUSTNESS = [RESULTS / "rosmap" / "robustness.json"]
EXAMPLES = (
    [(p, CompareRecord) for p in COMPARE]
    + [(p, FitRecord) for p in FIT]
    + [(p, RobustnessRecord) for p in ROBUSTNESS]
)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def strict(text: str) -> dict:
    """Parse refusing NaN and infinities, as any strict JSON reader does."""

    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def small_compare() -> dict:
    """A compare results object as the harness writes one (two entries)."""

    def summary(mean: float) -> dict:
        return {"mean": mean, "sd": 0.01, "ci": [mean - 0.05, mean + 0.05], "per_seed": [mean]}

    def entry(group: str, auroc: float) -> dict:
        return {
            "group": group,
            "curves": {},
            "calibration": None,
            "contributions": None,
            "features": None,
            "metrics": {"auroc": summary(auroc), "brier": summary(0.2)},
            "survival": None,
            "fit_seconds": 1.5,
            "fit_seconds_total": 3.0,
            "peak_rss_mb": 400.0,
            "params": [{}],
        }

    return {
        "kind": "compare",
        "dataset": "d",
        "synthetic": True,
        "task": "binary",
        "classes": ["no", "yes"],
        "seeds": [0, 1],
        "selection": "cv-on-train",
        "selection_metric": "auroc",
        "selected": "late",
        "selected_params": None,
        "strategies": {"late": entry("fusion", 0.8), "baseline:gbm": entry("baseline", 0.75)},
        "leaderboard": ["late", "baseline:gbm"],
        "n_evaluated": 40,
        "excluded": [],
        "excluded_summary": {},
    }


# -- the committed examples ----------------------------------------------------------


def test_the_examples_cover_every_kind():
    assert COMPARE and FIT and ROBUSTNESS
    assert all(p.is_file() for p, _ in EXAMPLES)


@pytest.mark.parametrize("path, cls", EXAMPLES, ids=lambda x: getattr(x, "name", ""))
def test_committed_results_round_trip_exactly(path, cls):
    d = load(path)
    rec = read_results(path)
    assert type(rec) is cls
    assert rec.to_json() == d
    assert list(rec.to_json()) == list(d)  # the writers' key order too
    assert cls.from_json(d).to_json() == d
    assert results_from_json(d).to_json() == d


@pytest.mark.parametrize("path", COMPARE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compare_examples_are_typed(path):
    rec = read_results(path)
    assert isinstance(rec, CompareRecord) and rec.selected in rec.strategies
    entry = rec.entry(rec.selected)
    assert isinstance(entry, StrategyEntry)
    summary = entry.metrics[rec.selection_metric]
    assert isinstance(summary, MetricSummary) and len(summary.ci) == 2
    assert set(rec.leaderboard) == set(rec.strategies)


def test_fit_and_robustness_examples_are_typed():
    fit = read_results(FIT[0])
    assert isinstance(fit, FitRecord) and fit.kind == "fit"
    assert all(isinstance(m, MetricSummary) for m in fit.metrics.values())
    assert isinstance(fit.calibration, dict) and fit.attention is None
    rob = read_results(ROBUSTNESS[0])
    assert isinstance(rob, RobustnessRecord) and rob.kind is None  # written without a kind
    curve = rob.curves[next(iter(rob.curves))][rob.scenarios[0]][rob.metrics[0]]
    assert isinstance(curve, RobustnessCurve) and len(curve.mean) == len(rob.rates)


# -- wrong types are named -----------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(dataset=3), "dataset: expected a string; got int 3"),
        (lambda d: d.update(synthetic="yes"), "synthetic: expected true or false"),
        (lambda d: d.update(seeds=[0, "1"]), "seeds[1]: expected an integer"),
        (lambda d: d.update(n_evaluated=True), "n_evaluated: expected an integer; got bool"),
        (lambda d: d.update(leaderboard="late"), "leaderboard: expected a list"),
        (lambda d: d.update(excluded="none"), "excluded: expected a list or an integer"),
        (
            lambda d: d["strategies"]["late"].update(fit_seconds="slow"),
            "strategies['late'].fit_seconds: expected a number",
        ),
        (
            lambda d: d["strategies"]["late"]["metrics"]["auroc"].update(ci="[0.7, 0.9]"),
            "strategies['late'].metrics['auroc'].ci: expected a list",
        ),
        (
            lambda d: d["strategies"]["late"]["metrics"]["auroc"].update(ci=[0.7]),
            "strategies['late'].metrics['auroc'].ci: expected [lo, hi]",
        ),
        (
            lambda d: d["strategies"]["late"]["metrics"].update(auroc=0.8),
            "strategies['late'].metrics['auroc']: expected an object",
        ),
        (lambda d: d.update(kind="compare", strategies=[]), "strategies: expected an object"),
    ],
)
def test_a_wrong_field_type_is_named(change, field):
    d = small_compare()
    change(d)
    with pytest.raises(ResultsError) as err:
        CompareRecord.from_json(d)
    assert str(err.value).startswith(field), str(err.value)


def test_a_record_of_another_kind_is_refused():
    with pytest.raises(ResultsError, match="kind: expected 'fit'; got 'compare'"):
        FitRecord.from_json(small_compare())
    with pytest.raises(ResultsError, match="unknown kind 'bench'"):
        results_from_json({"kind": "bench"})


# -- files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object of results; got list"),
        ('{"kind": "bench", "dataset": "x"}', "unknown kind 'bench'"),
        ("{}", "not the results of a compare run: missing key(s) dataset, task, strategies"),
        ('{"kind": "fit", "task": "binary"}', "missing key(s) dataset"),
    ],
)
def test_an_unreadable_results_file_is_named(tmp_path, text, says):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ResultsError) as err:
        read_results(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value)


def test_a_missing_file_and_a_field_in_a_file_are_named(tmp_path):
    with pytest.raises(ResultsError, match="results.json: not found"):
        read_results(tmp_path / "results.json")
    d = small_compare()
    d["strategies"]["late"]["peak_rss_mb"] = "400 MB"
    (tmp_path / "results.json").write_text(json.dumps(d))
    with pytest.raises(ResultsError) as err:
        read_results(tmp_path / "results.json")
    assert str(err.value) == (
        f"{tmp_path / 'results.json'}: strategies['late'].peak_rss_mb: expected a number; "
        "got str '400 MB'"
    )
    # the report reads through the records: the same named error, no page
    with pytest.raises(ResultsError, match=r"results\.json: strategies\['late'\]\.peak_rss_mb"):
        render_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_a_robustness_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "robustness.json"
    path.write_text(json.dumps(small_compare()))
    with pytest.raises(ResultsError, match="robustness.json: kind: expected 'robustness'"):
        read_results(path, "robustness")


# -- what is written -----------------------------------------------------------------


def test_unknown_keys_survive_a_round_trip(tmp_path):
    d = small_compare()
    d["note"] = {"by": "a newer holomed", "values": [1, 2]}
    d["strategies"]["late"]["energy_kwh"] = 0.3
    d["strategies"]["late"]["metrics"]["auroc"]["median"] = 0.81
    rec = CompareRecord.from_json(d)
    assert rec.extra == {"note": d["note"]}
    assert rec.strategies["late"].extra == {"energy_kwh": 0.3}
    assert rec.strategies["late"].metrics["auroc"].extra == {"median": 0.81}
    assert rec.to_json() == d
    write_results(rec, tmp_path / "results.json")
    assert read_results(tmp_path / "results.json").to_json() == d


def test_nan_is_written_as_null(tmp_path):
    nan, inf = float("nan"), float("inf")
    m = MetricSummary(mean=nan, sd=0.0, ci=[nan, inf], per_seed=[0.5, nan])
    assert m.to_json() == {"mean": None, "sd": 0.0, "ci": [None, None], "per_seed": [0.5, None]}
    kept = m.to_dict()  # in memory, numbers stay as computed
    assert math.isnan(kept["mean"]) and math.isinf(kept["ci"][1])
    d = small_compare()
    d["strategies"]["late"]["metrics"]["auroc"] = m.to_dict()
    rec = CompareRecord.from_json(d)
    path = write_results(rec, tmp_path / "results.json")
    back = strict(path.read_text())
    assert back["strategies"]["late"]["metrics"]["auroc"]["mean"] is None
    assert read_results(path).strategies["late"].metrics["auroc"].ci == [None, None]


def test_a_record_built_by_a_writer_writes_the_writers_schema():
    entry = StrategyEntry(group="fusion", metrics={"auroc": MetricSummary(0.8, 0.0, [0.7, 0.9])})
    out = entry.to_json()
    assert out["calibration"] is None and out["survival"] is None  # always written
    assert out["metrics"]["auroc"] == {"mean": 0.8, "sd": 0.0, "ci": [0.7, 0.9], "per_seed": None}
    rec = CompareRecord(dataset="d", task="binary", strategies={"late": entry})
    assert rec.to_json()["kind"] == "compare" and "spec_path" not in rec.to_json()
    fit = FitRecord(dataset="d", task="binary").to_json()
    assert fit["kind"] == "fit" and fit["fit_seconds"] is None  # a header field
    assert "metrics" not in fit and "attention" not in fit  # sections this run did not make
    rob = RobustnessRecord(dataset="d", rates=[0.0, 0.5], scenarios=["a"], curves={}).to_json()
    assert rob["kind"] == "robustness" and "synthetic" not in rob


def test_a_record_read_keeps_its_nulls_and_absences():
    d = copy.deepcopy(small_compare())
    del d["kind"]  # older comparisons wrote none
    del d["strategies"]["late"]["calibration"]
    d["spec_path"] = None
    rec = results_from_json(d)
    assert isinstance(rec, CompareRecord) and rec.kind is None
    assert rec.to_json() == d


# -- each metric's direction, once ----------------------------------------------------


def test_metric_direction_is_defined_only_in_scoring():
    """``LOWER_IS_BETTER`` is assigned in holomed.scoring.metrics and nowhere else."""
    where = []
    for path in sorted((ROOT / "src" / "holomed").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign | ast.AugAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == "LOWER_IS_BETTER" for t in targets):
                where.append(path.relative_to(ROOT / "src").as_posix())
    assert where == ["holomed/scoring/metrics.py"]
