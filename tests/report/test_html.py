"""The HTML report: self-contained, rendered from the JSON only, every section present
when its keys are and skipped when they are not, and a real page in a real browser
(headless Chromium: every figure decodes, no script error, a non-blank screenshot)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import warnings
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from holomed.cli import app
from holomed.report.html import render_html, render_report
from holomed.synthetic import write_synthetic

runner = CliRunner()

FIT_SECTIONS = (
    "Cohort",
    "Performance",
    "ROC and precision-recall curves",
    "Calibration",
    "Modality contributions",
    "Top features per modality",
    "Subgroup audit",
    "Model card",
)
BANNER = "SYNTHETIC DATA — not a clinical result"


# -- helpers ----------------------------------------------------------------------


def assert_self_contained(page: str) -> None:
    """Every src/href is inline data or an in-page anchor; nothing is fetched."""
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert links, "expected figures and a table of contents"
    bad = [u for u in links if not (u.startswith("data:image/png;base64,") or u.startswith("#"))]
    assert not bad, bad[:3]
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page, flags=re.I)
    assert "@import" not in page and "url(" not in page
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def metric(mean: float, lo: float, hi: float, sd: float = 0.0) -> dict[str, Any]:
    return {"mean": mean, "sd": sd, "ci": [lo, hi], "per_seed": [mean]}


def group(n: int, too_small: bool = False, auroc: float = 0.7) -> dict[str, Any]:
    val = {"value": None, "ci": [None, None]} if too_small else None
    cell = (lambda v: val) if too_small else (lambda v: {"value": v, "ci": [v - 0.1, v + 0.1]})
    return {
        "n": n,
        "too_small": too_small,
        "auroc": cell(auroc),
        "tpr": cell(0.61),
        "fpr": cell(0.31),
        "ppv": cell(0.66),
        "ece": cell(0.05),
        "calibration_gap": cell(0.01),
        "prevalence": cell(0.4),
    }


def fit_dict() -> dict[str, Any]:
    """A small fit results dict with every section, built by hand."""
    ids = [f"SYN-{i:05d}" for i in range(30)]
    mods = ["clinical", "expression"]
    reliability = {
        "predicted": [0.25, 0.45, 0.65],
        "observed": [0.2, 0.5, 0.7],
        "count": [10, 12, 8],
        "bin_lo": [0.2, 0.4, 0.6],
    }
    return {
        "kind": "fit",
        "dataset": "synthetic",
        "synthetic": True,
        "task": "binary",
        "classes": ["no_event", "event"],
        "fusion": "joint",
        "seed": 0,
        "n_train": 90,
        "n_test": 30,
        "cohort": {
            "patients": 120,
            "task": "binary",
            "modalities": {
                "clinical": {"kind": "tabular", "present": 120, "coverage": 1.0, "features": 8},
                "expression": {"kind": "omics", "present": 95, "coverage": 0.7917, "features": 50},
            },
            "classes": {"no_event": 64, "event": 56},
        },
        "excluded": [
            {"id": "SYN-99998", "reason": "not in the label table", "scope": "patient"},
            {"id": "SYN-99999", "reason": "not in the label table", "scope": "patient"},
        ],
        "excluded_summary": {"patient: not in the label table": 2},
        "intended_use": "Research use only; not a medical device.",
        "limitations": ["Site and batch are confounded with the label in this cohort."],
        "versions": {"holomed": "0.1.0", "torch": "2.13.0"},
        "spec": {"dataset": "synthetic", "description": "tiny hand-built cohort"},
        "metrics": {"auroc": metric(0.8123, 0.7011, 0.9044), "brier": metric(0.18, 0.15, 0.21)},
        "metrics_uncalibrated": {
            "auroc": metric(0.8123, 0.7011, 0.9044),
            "brier": metric(0.19, 0.16, 0.22),
        },
        "calibration": {
            "method": "temperature",
            "temperature": 1.234,
            "fitted_on": "18 validation patients carved from training",
            "before": {"ece": 0.0911, "brier": 0.19, "reliability": reliability},
            "after": {"ece": 0.0422, "brier": 0.18, "reliability": reliability},
        },
        "curves": {
            "roc": {"fpr": [0, 0.1, 0.5, 1], "tpr": [0, 0.5, 0.9, 1]},
            "pr": {"recall": [1, 0.9, 0.5, 0], "precision": [0.5, 0.6, 0.8, 1]},
        },
        "contributions": {
            "method": "exact",
            "metric": "auroc",
            "modalities": mods,
            "global": {"clinical": 0.2101, "expression": 0.1022},
            "global_loo": {"clinical": 0.1503, "expression": 0.0604},
            "mean_abs_patient": {"clinical": 0.1, "expression": 0.05},
            "value_all": 0.8123,
            "value_none": 0.5,
            "ids": ids,
            "patient": {"clinical": [0.1] * 30, "expression": [0.0, -0.05] * 15},
            "patient_loo": {"clinical": [0.08] * 30, "expression": [None, -0.04] * 15},
            "patient_base": [0.5] * 30,
            "patient_score": [0.6] * 30,
        },
        "attention": {
            "names": mods,
            "mean": [0.6, 0.4],
            "examples": [{"id": i, "weights": [0.7, 0.3]} for i in ids[:10]],
        },
        "features": {
            "method": "integrated gradients",
            "top": {
                "clinical": [
                    {"feature": "age", "mean_abs": 0.3, "mean": 0.1},
                    {"feature": "<script>alert(1)</script>", "mean_abs": 0.2, "mean": -0.1},
                ],
                "expression": [{"feature": "g001", "mean_abs": 0.25, "mean": 0.02}],
            },
        },
        "deletion_curve": {
            "metric": "auroc",
            "k": [0, 1, 2, 5],
            "top_first": [0.81, 0.7, 0.6, 0.55],
            "random": [0.81, 0.8, 0.79, 0.77],
        },
        "fairness": {
            "threshold": 0.5,
            "min_group": 20,
            "attributes": {
                "site": {
                    "groups": {
                        "east": group(40, auroc=0.7777),
                        "north": group(35, auroc=0.6666),
                        "tiny": group(7, too_small=True),
                    },
                    "gaps": {
                        "auroc": {
                            "value": 0.1111,
                            "between": ["east", "north"],
                            "ci": [0.02, 0.2],
                            "flag": True,
                        },
                        "tpr": {
                            "value": 0.05,
                            "between": ["north", "east"],
                            "ci": [-0.1, 0.2],
                            "flag": False,
                        },
                    },
                    "binned": False,
                },
                "sex": {
                    "groups": {"F": group(25), "M": group(5, too_small=True)},
                    "gaps": {"note": "fewer than two groups large enough to compare"},
                    "binned": False,
                },
            },
        },
    }


def regression_dict() -> dict[str, Any]:
    """A regression fit: no curves, calibration, deletion curve or fairness."""
    return {
        "kind": "fit",
        "dataset": "my-cohort",
        "synthetic": False,
        "task": "regression",
        "fusion": "late",
        "n_train": 80,
        "n_test": 20,
        "cohort": {"patients": 100, "modalities": {"a": {"kind": "tabular", "present": 100}}},
        "metrics": {"rmse": metric(1.5, 1.2, 1.8), "r2": metric(0.4321, 0.3, 0.5)},
        "attention": None,
    }


def compare_dict(kind: bool = True) -> dict[str, Any]:
    """A small leaderboard; ``kind=False`` mimics older runs without kind/curves/contributions."""

    def entry(group: str, auroc: float, with_extras: bool) -> dict[str, Any]:
        e = {
            "group": group,
            "metrics": {"auroc": metric(auroc, auroc - 0.05, auroc + 0.05, 0.01)},
            "fit_seconds": 1.25,
            "peak_rss_mb": 500.0,
            "params": [{}],
        }
        if with_extras:
            e["curves"] = {
                "roc": {"fpr": [0, 0.3, 1], "tpr": [0, auroc, 1]},
                "pr": {"recall": [1, 0.5, 0], "precision": [0.5, 0.7, 1]},
            }
            e["metrics"]["ece"] = metric(0.1 - auroc / 10, 0.0, 0.2)
            e["calibration"] = {
                "calibration_in_the_large": round(auroc - 0.85, 3),
                "calibration_slope": 1.1,
                "calibration_intercept": -0.2,
                "reliability": {
                    "predicted": [0.2, 0.5, 0.8],
                    "observed": [0.1, 0.5, auroc],
                    "count": [30, 40, 36],
                    "bin_lo": [0.1, 0.4, 0.7],
                },
            }
            e["contributions"] = (
                {
                    "metric": "auroc",
                    "global": {"a": 0.1, "b": 0.05},
                    "global_loo": {"a": 0.08, "b": 0.02},
                    "value_all": auroc,
                    "value_none": 0.5,
                }
                if group == "fusion"
                else None
            )
        return e

    strategies = {
        "late": entry("fusion", 0.8642, kind),
        "early": entry("fusion", 0.8311, kind),
        "single:a": entry("single", 0.7, kind),
        "baseline:gbm": entry("baseline", 0.8762, kind),
    }
    res = {
        "dataset": "rosmap",
        "synthetic": False,
        "task": "binary",
        "seeds": [0, 1],
        "selection": "cv-on-train",
        "selection_metric": "auroc",
        "selected": "late",
        "selection_detail": [
            {
                "fold": 0,
                "cv_scores": {"late": {"{}": 0.82}, "early": {"{}": 0.8}},
                "chosen_params": {"late": {}, "early": {}},
                "selected": "late",
            }
        ],
        "strategies": strategies,
        "leaderboard": ["baseline:gbm", "late", "early", "single:a"],
        "n_evaluated": 106,
        "cohort": {"patients": 351, "modalities": {}},
        "excluded": [],
        "excluded_summary": {},
        "versions": {"holomed": "0.1.0"},
    }
    if kind:
        res["kind"] = "compare"
    return res


def render_quiet(results: dict[str, Any] | None, robustness: dict | None = None) -> str:
    """Render, failing on any section that could not be rendered."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = render_html(results, robustness)
    problems = [str(w.message) for w in caught if "could not be rendered" in str(w.message)]
    assert not problems, problems
    assert "could not be rendered" not in page
    return page


# -- hand-built results -----------------------------------------------------------


def test_fit_report_has_every_section_and_numbers_from_the_json(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(fit_dict()))
    path = render_report(tmp_path)
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    assert [h for h in FIT_SECTIONS if h not in headings(page)] == []
    assert "Missing-modality robustness" not in headings(page)  # no robustness.json
    assert BANNER in page
    assert "0.812" in page and "[0.701, 0.904]" in page  # AUROC and its CI
    assert "0.091" in page and "0.042" in page  # ECE before / after calibration
    assert "0.210" in page and "0.150" in page  # Shapley beside leave-one-out
    assert "not in the label table" in page and "Research use only" in page
    assert "Site and batch are confounded" in page
    assert page.count('src="data:image/png;base64,') >= 6


def test_subgroups_too_small_groups_and_flagged_gaps(tmp_path):
    page = render_quiet(fit_dict())
    sub = page[page.index('<section id="subgroups">') :]
    sub = sub[: sub.index("</section>")]
    tiny = sub[sub.index("<td>tiny</td>") :]
    tiny = tiny[: tiny.index("</tr>")]
    assert "too small" in tiny and not re.search(r"\d\.\d{3}", tiny)
    assert sub.count('class="too-small"') == 2
    assert "0.778" in sub and "0.667" in sub  # adequate groups as numbers
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', sub)
    assert len(flagged) == 1 and "AUROC" in flagged[0] and "0.111" in flagged[0]
    assert "fewer than two groups large enough" in sub


def test_fit_report_shows_an_evidence_draft_of_one_test_patient():
    """The example evidence draft (holomed.generative.evidence) is labelled, names the
    patient's absent modality and states numbers of the JSON only."""
    from html import unescape

    from holomed.generative.evidence import EVIDENCE_LABEL

    page = render_quiet(fit_dict())
    assert "Evidence draft (example test patient)" in headings(page)
    sec = page[page.index('<section id="evidence-draft">') :]
    sec = unescape(sec[: sec.index("</section>")])
    assert EVIDENCE_LABEL in sec and "Patient SYN-00000" in sec
    assert "probability of event is 60.0 %" in sec  # patient_score[0]
    assert "would be 50.0 %" in sec  # patient_base[0]
    assert "clinical +10.0 percentage points" in sec  # patient["clinical"][0]
    assert "Not available for this patient: expression." in sec  # null leave-one-out
    assert "AUROC 0.812" in sec
    assert "/prediction/contributions/modalities/clinical/shapley" in sec
    assert "Subgroup caveat" not in sec  # the test patients' attributes are not stored
    assert "<script>" not in sec


def test_text_is_escaped_and_few_patient_ids_are_shown():
    page = render_quiet(fit_dict())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    shown = set(re.findall(r"SYN-0\d{4}", page))
    assert 0 < len(shown) <= 8


def test_regression_like_results_skip_absent_sections():
    page = render_quiet(regression_dict())
    hs = headings(page)
    for absent in ("ROC and precision-recall curves", "Calibration", "Subgroup audit"):
        assert absent not in hs
    assert {"Cohort", "Performance", "Model card"} <= set(hs)
    assert "RMSE ↓" in page and "0.432" in page
    assert BANNER not in page


def test_minimal_and_robustness_only_inputs_render(tmp_path):
    assert "Model card" in headings(render_quiet({"kind": "fit"}))
    rob = {
        "dataset": "d",
        "task": "binary",
        "rates": [0.0, 0.5],
        "scenarios": ["a", "random"],
        "metrics": ["auroc"],
        "seeds": [0],
        "n_test": 10,
        "curves": {
            "late": {s: {"auroc": {"mean": [0.8, 0.7], "sd": [0, 0]}} for s in ("a", "random")}
        },
    }
    (tmp_path / "robustness.json").write_text(json.dumps(rob))
    page = render_report(tmp_path).read_text()
    assert "Missing-modality robustness" in headings(page)
    assert "0.700" in page and "(-0.100)" in page
    # what 'random' removes, in words: each modality with probability x, one kept
    assert "each removed with probability x, at least one kept" in page
    assert "additionally lose" in page


def test_compare_report_leaderboard_and_selection():
    page = render_quiet(compare_dict())
    assert_self_contained(page)
    hs = headings(page)
    assert {"Leaderboard", "ROC and precision-recall curves", "Modality contributions"} <= set(hs)
    board = page[page.index('<section id="leaderboard">') :]
    board = board[: board.index("</section>")]
    sel = re.findall(r'<tr class="selected">(.*?)</tr>', board)
    assert len(sel) == 1 and "late ★" in sel[0] and "0.864" in sel[0]
    assert board.index("baseline:gbm") < board.index("late ★") < board.index("single:a")
    assert "0.876" in board  # best entry on test
    assert "selected strategy" in page


def test_compare_report_calibration_of_every_candidate_and_a_reliability_diagram():
    page = render_quiet(compare_dict())
    assert "Calibration" in headings(page)
    sec = page[page.index('<section id="calibration">') :]
    sec = sec[: sec.index("</section>")]
    # every candidate, not the ablations; the selected row marked; numbers from the JSON
    assert "late ★" in sec and "baseline:gbm" in sec and "early" in sec
    assert "single:a" not in sec
    sel = re.findall(r'<tr class="selected">(.*?)</tr>', sec)
    assert len(sel) == 1 and "0.014" in sel[0] and "1.100" in sel[0] and "-0.200" in sel[0]
    assert sec.count("data:image/png;base64,") == 1  # selected beside the best baseline
    assert "reliability diagram of the selected candidate and the best baseline" in sec


def test_an_ablation_is_never_the_best_candidate_and_ablations_are_explained():
    res = compare_dict()
    res["strategies"]["single:a"]["metrics"]["auroc"] = metric(0.95, 0.9, 0.99)
    res["strategies"]["single:a"]["params"] = [{"candidate": "late", "params": None}]
    res["leaderboard"] = ["single:a", "baseline:gbm", "late", "early"]
    page = render_quiet(res)
    tile = re.search(r'<div class="v">([^<]*)</div><div class="k">best candidate on the test', page)
    assert tile and tile.group(1) == "baseline:gbm"
    assert "ablations of late" in page and "never selected" in page


def test_older_compare_without_kind_or_curves_renders_as_compare(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(compare_dict(kind=False)))
    page = render_report(tmp_path).read_text()
    hs = headings(page)
    assert "Leaderboard" in hs and "Performance" not in hs
    assert "ROC and precision-recall curves" not in hs and "Modality contributions" not in hs
    assert "Calibration" not in hs  # older runs have no per-entry calibration
    assert BANNER not in page


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json"):
        render_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        render_report(tmp_path)


# -- results written by holomed itself ---------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """fit, compare and robustness through the CLI on a tiny synthetic cohort."""
    root = tmp_path_factory.mktemp("report")
    spec_path = write_synthetic(root / "data", n_patients=150, seed=5)
    spec = yaml.safe_load(spec_path.read_text())
    spec["training"].update({"max_epochs": 3})
    spec["evaluation"].update({"seeds": 1, "n_bootstrap": 20})
    spec_path.write_text(yaml.safe_dump(spec))
    calls = {
        "fit": ["fit", str(spec_path), "--out", str(root / "fit")],
        "compare": ["compare", str(spec_path), "--fusion", "late", "--no-ablations"]
        + ["--out", str(root / "compare")],
        "robustness": ["robustness", str(spec_path), "--fusion", "late", "--no-baselines"]
        + ["--seeds", "1", "--out", str(root / "compare")],
    }
    for args in calls.values():
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    return root


def test_report_from_a_real_fit_run(runs):
    res = json.loads((runs / "fit" / "results.json").read_text())
    page = render_report(runs / "fit").read_text()
    assert_self_contained(page)
    expected = [h for h in FIT_SECTIONS if h != "Subgroup audit" or res.get("fairness")]
    assert [h for h in expected if h not in headings(page)] == []
    assert f"{res['metrics']['auroc']['mean']:.3f}" in page
    assert BANNER in page and "could not be rendered" not in page


def test_report_from_a_real_compare_and_robustness_run(runs):
    res = json.loads((runs / "compare" / "results.json").read_text())
    page = render_report(runs / "compare").read_text()
    assert_self_contained(page)
    assert {"Leaderboard", "Missing-modality robustness"} <= set(headings(page))
    sel = re.findall(r'<tr class="selected">(.*?)</tr>', page)
    assert sel and f"{res['selected']} ★" in sel[0]
    assert f"{res['strategies'][res['selected']]['metrics']['auroc']['mean']:.3f}" in sel[0]
    rel = res["strategies"][res["selected"]]["calibration"]["reliability"]
    assert sum(rel["count"]) == res["n_evaluated"]  # every evaluated patient in a bin
    assert "Calibration" in headings(page)
    assert "could not be rendered" not in page


# -- a real browser ----------------------------------------------------------------


def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        reason = "headless Chromium not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(reason + "; CI must run the browser test")
        pytest.skip(reason)
    return exe


def test_report_loads_in_headless_chromium(runs, tmp_path):
    """Every figure decodes, no script error or blocked load, and the page paints."""
    from PIL import Image

    exe = _chromium()
    url = (runs / "fit" / "report.html").resolve().as_uri()
    base = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert 'data-ok="1"' in body.group(0), body.group(0)
    assert 'data-errors=""' in body.group(0), body.group(0)
    assert int(re.search(r'data-images="(\d+)"', body.group(0)).group(1)) >= 5

    shot = tmp_path / "report.png"
    subprocess.run(
        [*base, "--window-size=1200,1600", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    assert img.getcolors(maxcolors=256) is None  # figures and text, not a blank page
    r, g, b = img.getpixel((600, 10))  # the synthetic-data banner across the top
    assert r > 150 and g < 90 and b < 90


def test_chosen_parameters_read_as_text_not_json():
    from holomed.report.html import _params_text

    ens = {
        "members": [{"name": "gbm", "weight": 0.4, "params": None}, {"name": "late", "weight": 0.6}]
    }
    assert _params_text(ens) == "(gbm 0.40, late 0.60)"
    assert (
        _params_text({"n_estimators": 200, "num_leaves": 15}) == "(n_estimators=200, num_leaves=15)"
    )
