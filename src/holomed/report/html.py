"""One self-contained HTML report per run, rendered from the run's JSON files only.

``render_report(run_dir)`` reads ``results.json`` (``"kind": "fit"`` for one trained
model, ``"compare"`` or no kind for a leaderboard) and, when present,
``robustness.json`` from the same folder as typed records (:mod:`holomed.results`), and
writes ``run_dir/report.html``. Nothing is recomputed: every number and curve on the
page is read from those files.

The page needs nothing from the network: figures are matplotlib PNGs inlined as
base64 ``data:`` URLs, the style sheet and a few lines of script are inline, and a
Content-Security-Policy forbids loading anything else. The script only records, for
automated checks, whether every figure decoded and whether a script error occurred
(``<body data-ok="1">``). Sections whose keys are absent (regression runs have no
curves or calibration; runs without attributes have no subgroup audit) are left out.
All text from the JSON is HTML-escaped; at most a handful of (pseudonymous) patient
ids appear.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from holomed.errors import ResultsError
from holomed.generative.evidence import evidence_draft, results_example
from holomed.results import (
    CompareRecord,
    FitRecord,
    MetricSummary,
    RobustnessRecord,
    RunRecord,
    StrategyEntry,
    read_results,
    results_from_json,
)
from holomed.scoring.metrics import CHANCE, LOWER_IS_BETTER

__all__ = ["render_report", "render_html"]

Run = CompareRecord | FitRecord  # the run a page is about (robustness: alongside)

REPORT_NAME = "report.html"
MAX_EXAMPLE_PATIENTS = 4  # per-patient contribution examples shown
MAX_CURVE_ENTRIES = 8  # leaderboard entries drawn on the ROC/PR figure
TOP_FEATURES_SHOWN = 10

KEY_METRICS = ("auroc", "auprc", "balanced_accuracy", "brier", "ece", "f1_macro")
KEY_METRICS_REGRESSION = ("rmse", "mae", "r2", "pearson", "spearman")
METRIC_LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "f1_macro": "F1 (macro)",
    "f1_weighted": "F1 (weighted)",
    "brier": "Brier",
    "ece": "ECE",
    "log_loss": "log loss",
    "rmse": "RMSE",
    "mae": "MAE",
    "mse": "MSE",
    "r2": "R²",
    "tpr": "TPR",
    "fpr": "FPR",
    "ppv": "PPV",
    "calibration_gap": "calibration gap",
    "prevalence": "prevalence",
}
GROUP_COLOURS = {
    "fusion": "#1f77b4",
    "single": "#2ca02c",
    "without": "#9467bd",
    "baseline": "#7f7f7f",
    "classical": "#555555",
    "stacking": "#17becf",
    "ensemble": "#d62728",
    "selected": "#000000",
}
SELECTION_LABELS = {"cv-on-train": "cross-validation on the training patients"}
SELECTION_ENTRY = "selection (per fold)"  # a comparison's entry of the selection procedure
SHAPLEY_COLOUR, LOO_COLOUR = "#1f77b4", "#ff7f0e"
POS_COLOUR, NEG_COLOUR = "#2a9d8f", "#e76f51"  # signed per-patient / per-feature bars


def render_report(run_dir: Path | str) -> Path:
    """Render ``run_dir/report.html`` from ``run_dir/results.json`` (and
    ``run_dir/robustness.json`` when present), read as records
    (:func:`holomed.results.read_results`: an unreadable or malformed file is a
    :class:`~holomed.errors.ResultsError` naming it); returns the path written."""
    run_dir = Path(run_dir)
    res_path, rob_path = run_dir / "results.json", run_dir / "robustness.json"
    if not res_path.exists() and not rob_path.exists():
        raise FileNotFoundError(
            f"{run_dir}: no results.json or robustness.json to render; "
            "run `holomed fit`, `holomed compare` or `holomed robustness` with --out there"
        )
    results = read_results(res_path) if res_path.exists() else None
    robustness = read_results(rob_path, "robustness") if rob_path.exists() else None
    out = run_dir / REPORT_NAME
    out.write_text(render_html(results, robustness, run_dir), encoding="utf-8")
    return out


def render_html(
    results: RunRecord | Mapping[str, Any] | None,
    robustness: RobustnessRecord | Mapping[str, Any] | None = None,
    run_dir: Path | str | None = None,
) -> str:
    """The report as one HTML string (see module doc); ``results`` is the run's record
    (or its JSON object, ``results.json`` parsed; ``None`` when only a robustness run
    exists), ``robustness`` the robustness curve's; ``run_dir`` is where the PNG files the
    results list (attribution maps) are read from, to be inlined."""
    run, rob = _record(results), _record(robustness, "robustness")
    if isinstance(run, RobustnessRecord):  # a robustness curve given as the results
        run, rob = None, rob or run
    if rob is not None and not isinstance(rob, RobustnessRecord):
        raise ResultsError(f"robustness: expected a robustness curve; got a {rob.kind} record")
    kind = "fit" if isinstance(run, FitRecord) else "compare" if run or not rob else "robustness"
    fit = run if isinstance(run, FitRecord) else None
    cmp = run if isinstance(run, CompareRecord) else None
    builders: list[tuple[str, str, Callable[[], str | None]]] = [
        ("summary", "Summary", lambda: _summary(run)),
        ("cohort", "Cohort", lambda: _cohort(run)),
    ]
    if cmp is not None:
        builders.append(("leaderboard", "Leaderboard", lambda: _leaderboard(cmp)))
    elif fit is not None:
        builders.append(("performance", "Performance", lambda: _performance(fit)))
    builders += [
        ("curves", "ROC and precision-recall curves", lambda: _curves(run)),
        (
            "survival",
            "Survival: risk groups, time-dependent AUROC, calibration",
            lambda: _survival(run),
        ),
        (
            "calibration",
            "Calibration",
            lambda: _calibration(fit.calibration) if fit else _calibration_compare(cmp),
        ),
        ("robustness", "Missing-modality robustness", lambda: _robustness(rob, cmp)),
        ("contributions", "Modality contributions", lambda: _contributions(run)),
        ("features", "Top features per modality", lambda: _features(fit, run_dir)),
        ("subgroups", "Subgroup audit", lambda: _subgroups(fit.fairness if fit else None)),
        ("evidence-draft", "Evidence draft (example test patient)", lambda: _evidence(fit)),
        ("model-card", "Model card", lambda: _model_card(run, rob)),
    ]
    sections = []
    for sid, title, build in builders:
        try:
            body = build()
        except Exception as err:  # noqa: BLE001 - one malformed section must not hide the rest
            warnings.warn(f"report section {title!r} could not be rendered: {err!r}", stacklevel=2)
            body = _p(f"This section could not be rendered from the JSON ({err!r}).", "error")
        if body:
            sections.append((sid, title, body))
    return _page(run, rob, kind, sections)


def _record(x: RunRecord | Mapping[str, Any] | None, kind: str | None = None) -> RunRecord | None:
    """A record as is; a JSON object as its record (``kind`` when it names none); an
    empty object as no record."""
    if isinstance(x, Mapping):
        return results_from_json(x, kind) if x else None
    return x


# -- page --------------------------------------------------------------------------

CSS = """
:root { --fg:#1d2430; --muted:#5b6574; --line:#d9dee5; --bg:#ffffff; --soft:#f4f6f9;
        --accent:#1f5fa8; --warn:#b3261e; --warnbg:#fdecea; --sel:#fff6d6; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 0 24px 48px; }
header.top { background: var(--soft); border-bottom: 1px solid var(--line);
             padding: 20px 24px 12px; }
header.top .inner { max-width: 1100px; margin: 0 auto; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 22px 0 6px; }
.sub { color: var(--muted); margin: 0; }
nav.toc { margin-top: 10px; font-size: 0.92em; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 14px;
            white-space: nowrap; }
.banner { background: var(--warn); color: #fff; font-weight: 700; text-align: center;
          padding: 12px; font-size: 1.15em; letter-spacing: 0.03em; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
.tablewrap { overflow-x: auto; max-width: 100%; }
table.stack .ci { display: block; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: var(--muted); font-size: 0.9em; }
tr.selected td { background: var(--sel); font-weight: 600; }
tr.flag td { background: var(--warnbg); color: var(--warn); font-weight: 600; }
td.too-small { color: var(--muted); font-style: italic; text-align: center; }
.note { color: var(--muted); font-size: 0.92em; }
.error { color: var(--warn); }
.draft-label { border: 2px solid var(--warn); background: var(--warnbg); color: var(--warn);
               padding: 6px 10px; }
ol.evidence li { margin: 4px 0; }
ol.evidence details { display: inline; margin: 0 0 0 6px; font-size: 0.85em; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; max-width: 900px; }
.grid { display: flex; flex-wrap: wrap; gap: 4px 28px; align-items: flex-start; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 10px 0; }
.kpi { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
       padding: 8px 14px; min-width: 150px; }
.kpi .v { font-size: 1.35em; font-weight: 700; }
.kpi .k { color: var(--muted); font-size: 0.85em; }
dl.card { display: grid; grid-template-columns: 180px 1fr; gap: 6px 16px; }
dl.card dt { font-weight: 600; color: var(--muted); }
dl.card dd { margin: 0; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--soft); padding: 10px; overflow-x: auto; font-size: 0.85em;
      max-height: 420px; }
@media print { nav.toc, details > summary { display: none; } h2 { break-after: avoid; } }
"""

# The page's only script: record script errors and blocked loads, then, once loaded,
# whether every figure decoded. Automated checks (and a curious reader) read
# <body data-ok="1" data-images="N" data-errors="...">.
HEAD_SCRIPT = """
window.__reportErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target && e.target !== window ? (e.target.tagName || "element") : "script";
  window.__reportErrors.push(t + ": " + (e.message || "failed to load"));
}, true);
document.addEventListener("securitypolicyviolation", function (e) {
  window.__reportErrors.push("blocked: " + e.blockedURI);
});
"""
BODY_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad++; }
  }
  var errs = window.__reportErrors;
  if (bad) { errs.push(bad + " figure(s) did not decode"); }
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.errors = errs.join(" | ");
  document.body.dataset.ok = errs.length === 0 ? "1" : "0";
});
"""
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def _page(
    run: Run | None, rob: RobustnessRecord | None, kind: str, sections: list[tuple[str, str, str]]
) -> str:
    head = run or rob
    dataset = head.dataset if head and head.dataset is not None else "unknown dataset"
    what = {
        "fit": f"one model ({run.fusion or '?'} fusion)" if isinstance(run, FitRecord) else "",
        "compare": "comparison of fusion strategies, ablations and baselines",
        "robustness": "missing-modality robustness",
    }.get(kind, kind)
    task = f" · {head.task} task" if head and head.task else ""
    title = f"holomed report — {dataset}"
    toc = " ".join(f'<a href="#{_esc(sid)}">{_esc(t)}</a>' for sid, t, _ in sections)
    banner = (
        '<div class="banner" role="alert">SYNTHETIC DATA — not a clinical result</div>'
        if head and head.synthetic
        else ""
    )
    body = "\n".join(
        f'<section id="{_esc(sid)}">\n<h2>{_esc(t)}</h2>\n{b}\n</section>' for sid, t, b in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="holomed.report.html">
<title>{_esc(title)}</title>
<style>{CSS}</style>
<script>{HEAD_SCRIPT}</script>
</head>
<body>
{banner}
<header class="top"><div class="inner">
<h1>{_esc(title)}</h1>
<p class="sub">{_esc(what + task)}. Rendered from the run's JSON files; nothing recomputed.</p>
<nav class="toc">{toc}</nav>
</div></header>
<main>
{body}
</main>
<script>{BODY_SCRIPT}</script>
</body>
</html>
"""


# -- small HTML helpers ----------------------------------------------------------


class _Raw(str):
    """HTML that is already safe (built here from escaped parts)."""


def _esc(x: Any) -> str:
    return x if isinstance(x, _Raw) else html.escape(str(x), quote=True)


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{_esc(text)}</p>' if cls else f"<p>{_esc(text)}</p>"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any, digits: int = 3) -> str:
    """A number for display: integers as is, floats to ``digits`` places; missing or
    non-finite values as an em dash."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if not _is_num(v):
        return "—"
    return f"{v:.{digits}f}"


def _ci_text(ci: Any, digits: int = 3) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or not all(_is_num(c) for c in ci):
        return ""
    return f"[{_num(ci[0], digits)}, {_num(ci[1], digits)}]"


def _val_ci(value: Any, ci: Any = None, digits: int = 3) -> _Raw:
    """``0.683 [0.605, 0.760]`` with the interval in muted text."""
    c = _ci_text(ci, digits)
    v = _esc(_num(value, digits))
    return _Raw(f'{v} <span class="ci">{_esc(c)}</span>' if c and _is_num(value) else v)


def _signed(v: Any, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if _is_num(v) else "—"


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if _is_num(v) else "—"


def _label(metric: str) -> str:
    lab = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return lab + (" ↓" if metric in LOWER_IS_BETTER else "")


def _table(
    headers: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    num_cols: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
    caption: str | None = None,
    cls: str = "",
) -> str:
    """A table; cells are escaped unless they are ``_Raw``. A ``_Raw`` cell starting
    with ``<td`` is used as the whole cell (for colspan)."""
    num = set(num_cols)
    head = "".join(
        f'<th class="num">{_esc(h)}</th>' if i in num else f"<th>{_esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        rcls = row_classes[r] if row_classes and row_classes[r] else ""
        cells = []
        for i, c in enumerate(row):
            if isinstance(c, _Raw) and c.startswith("<td"):
                cells.append(str(c))
            else:
                cells.append(
                    f'<td class="num">{_esc(c)}</td>' if i in num else f"<td>{_esc(c)}</td>"
                )
        tr = f'<tr class="{_esc(rcls)}">' if rcls else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    cap = f"<caption class='note'>{_esc(caption)}</caption>" if caption else ""
    attr = f' class="{_esc(cls)}"' if cls else ""
    return (
        f'<div class="tablewrap"><table{attr}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figure(fig: Figure, alt: str, caption: str) -> str:
    """The figure as an inline base64 PNG with a caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw: Any):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _style(ax: Any) -> None:
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)


def _metric_order(metrics: dict[str, Any], task: str | None, first: str | None = None) -> list:
    pref = KEY_METRICS_REGRESSION if task == "regression" else KEY_METRICS
    order = [m for m in [first, *pref] if m and m in metrics]
    return list(dict.fromkeys(order))


# -- sections --------------------------------------------------------------------


def _params_text(params: Any) -> str:
    """A candidate's chosen parameters, readable: an ensemble as its members and weights
    (``gbm 0.40, lr_early 0.35``), others as ``key=value``."""
    if isinstance(params, dict) and isinstance(params.get("members"), list):
        parts = [
            f"{m.get('name', '?')} {_num(m.get('weight'), 2)}"
            for m in params["members"]
            if isinstance(m, dict)
        ]
        return "(" + ", ".join(parts) + ")"
    if isinstance(params, dict):
        return "(" + ", ".join(f"{k}={_num(v) if _is_num(v) else v}" for k, v in
                               sorted(params.items())) + ")"  # fmt: skip
    return json.dumps(params, sort_keys=True)


def _fit_evaluation(run: FitRecord) -> str:
    """How a fit run was evaluated, in words: held-out test patients, out-of-fold
    predictions of k folds, or none (trained on all, evaluated by the run that chose it)."""
    if run.n_folds and run.n_folds > 1:
        return (
            f"out of fold, {run.n_folds} folds over {run.n_train} patients; the model "
            "saved is trained on all of them"
        )
    if not run.n_test:
        text = f"not here: trained on all {run.n_train} patients"
        est = run.estimate or {}
        m = est.get("selection_metric")
        v = (est.get("metrics") or {}).get(m) or {}
        if _is_num(v.get("value")):
            text += (
                f"; expected from the run that chose it ({run.selected_by}): held-out "
                f"{_label(m)} {_num(v['value'])} {_ci_text(v.get('ci'))} on "
                f"{_or_unknown(est.get('n_evaluated'))} patients"
            )
        elif run.selected_by:
            text += f"; its evaluation is the run that chose it ({run.selected_by})"
        return text
    return f"{run.n_train} training / {run.n_test} test patients"


def _summary(run: Run | None) -> str:
    kpis: list[tuple[str, str]] = []
    cohort = (run.cohort if run else None) or {}
    if "patients" in cohort:
        kpis.append(("patients in the cohort", _num(cohort["patients"])))
    if isinstance(run, FitRecord):
        if run.fusion:
            neural = run.family in (None, "neural")
            kpis.append(
                ("fusion strategy" if neural else "candidate", f"{run.fusion}"
                 + ("" if neural else f" ({run.family})"))
            )  # fmt: skip
        if run.n_train is not None:
            kpis.append(("evaluated", _fit_evaluation(run)))
        metrics = run.metrics or {}
        for m in _metric_order(metrics, run.task)[:2]:
            kpis.append((f"test {_label(m)} (95% CI)", _val_ci_plain(metrics[m])))
    elif isinstance(run, CompareRecord):
        sel, metric = run.selected, run.selection_metric
        if sel:
            fam = run.selected_family
            label = f"{sel} ({fam})" if fam else str(sel)
            kpis.append(("selected candidate (CV on training patients)", label))
        proc = _metrics_of(run.entry(SELECTION_ENTRY))
        if metric and metric in proc:
            kpis.append(
                (f"selection procedure: {_label(metric)} (95% CI)", _val_ci_plain(proc[metric]))
            )
        chosen = _metrics_of(run.entry(sel))
        if metric and metric in chosen:
            kpis.append((f"selected: {_label(metric)} (95% CI)", _val_ci_plain(chosen[metric])))
        strategies = run.strategies or {}
        candidates = [  # not an ablation nor the per-fold procedure: a model one could deploy
            n
            for n in run.leaderboard or []
            if n != SELECTION_ENTRY
            and (strategies.get(n) is None or strategies[n].group not in ("single", "without"))
        ]
        if candidates:
            kpis.append(
                ("best candidate on the test patients (shown, never used to choose)", candidates[0])
            )
        if run.n_evaluated is not None:
            kpis.append(("patients evaluated", _num(run.n_evaluated)))
        if run.seeds is not None:
            kpis.append(("seeds", _num(len(run.seeds))))
    if not kpis:
        return ""
    cards = "".join(
        f'<div class="kpi"><div class="v">{_esc(v)}</div><div class="k">{_esc(k)}</div></div>'
        for k, v in kpis
    )
    return f'<div class="kpis">{cards}</div>'


def _or_unknown(v: Any) -> Any:
    return "?" if v is None else v


def _metrics_of(entry: StrategyEntry | None) -> dict[str, MetricSummary]:
    return (entry.metrics if entry else None) or {}


def _val_ci_plain(m: MetricSummary) -> str:
    c = _ci_text(m.ci)
    return f"{_num(m.mean)} {c}".strip()


def _cohort(run: Run | None) -> str | None:
    if run is None:
        return None
    cohort = run.cohort or {}
    parts = []
    facts = []
    if "patients" in cohort:
        facts.append(f"{cohort['patients']} patients")
    if cohort.get("task") or run.task:
        facts.append(f"task: {cohort.get('task') or run.task}")
    classes = cohort.get("classes")
    if isinstance(classes, dict) and classes:
        facts.append("classes: " + ", ".join(f"{k} {v}" for k, v in classes.items()))
    if facts:
        parts.append(_p("; ".join(facts) + "."))
    mods = cohort.get("modalities") or {}
    if mods:
        rows = [
            [
                name,
                m.get("kind", ""),
                _num(m.get("present")),
                _pct(m.get("coverage")),
                _num(m.get("features")),
            ]
            for name, m in mods.items()
        ]
        parts.append("<h3>Modality coverage</h3>")
        parts.append(
            _table(
                ["modality", "kind", "patients with it", "coverage", "features"], rows, {2, 3, 4}
            )
        )
    excluded, summary = run.excluded, run.excluded_summary
    if excluded is not None or summary is not None:
        parts.append("<h3>Exclusions</h3>")
        n_excl = len(excluded) if isinstance(excluded, list) else cohort.get("excluded", 0)
        if summary:
            parts.append(_p(f"{n_excl} exclusion record(s), by reason:"))
            parts.append(
                _table(["reason", "count"], [[r, _num(c)] for r, c in summary.items()], {1})
            )
        elif n_excl:
            parts.append(_p(f"{n_excl} exclusion record(s); no reasons were summarised."))
        else:
            parts.append(_p("No patient or modality record was excluded."))
    return "\n".join(parts) or None


def _performance(run: FitRecord) -> str | None:
    metrics = run.metrics or {}
    if not metrics:
        return None
    raw = run.metrics_uncalibrated or {}
    heads = ["metric", "value (95% bootstrap CI)"] + (["before calibration"] if raw else [])
    rows = []
    for m, v in metrics.items():
        row = [_label(m), _val_ci(v.mean, v.ci)]
        if raw:
            r = raw.get(m) or MetricSummary()
            row.append(_val_ci(r.mean, r.ci))
        rows.append(row)
    n_test = run.n_test
    cap = f"On {n_test} held-out test patients" if n_test else "On the held-out test patients"
    return _p(f"{cap}; ↓ marks metrics where lower is better.", "note") + _table(
        heads, rows, {1, 2}
    )


def _leaderboard(run: CompareRecord) -> str | None:
    strategies = run.strategies or {}
    board = [n for n in (run.leaderboard or list(strategies)) if n in strategies]
    if not board:
        return None
    sel = run.selected
    first_metrics = _metrics_of(strategies[board[0]])
    metric = run.selection_metric or next(iter(first_metrics), None)
    cols = _metric_order(first_metrics, run.task, metric)[:4]
    heads = [
        "#",
        "entry",
        "group",
        *[_label(c) for c in cols],
        "SD (seeds)",
        "fit s",
        "peak RSS MB",
    ]
    rows, classes = [], []
    for i, name in enumerate(board, 1):
        e = strategies[name]
        ms = _metrics_of(e)
        row: list[Any] = [i, name + (" ★" if name == sel else ""), e.group or ""]
        for c in cols:
            m = ms.get(c) or MetricSummary()
            row.append(_val_ci(m.mean, m.ci))
        one_seed = len(run.seeds or []) == 1
        row += [
            "n/a" if one_seed else _num((ms.get(metric) or MetricSummary()).sd if metric else None),
            _num(e.fit_seconds, 1),
            _num(e.peak_rss_mb, 0),
        ]
        rows.append(row)
        classes.append("selected" if name == sel else "")
    n_seeds = len(run.seeds or []) or "?"
    how = _selection_label(run)
    parts = [
        _p(
            f"Sorted by {_label(metric)} on {_or_unknown(run.n_evaluated)} held-out patients "
            f"(mean over {n_seeds} seed(s), 95% bootstrap CI). ★ = the strategy selected by "
            f"{how} on {_label(metric)}, before the test patients were seen; the test "
            "ranking is not used to choose.",
            "note",
        ),
        _table(heads, rows, set(range(3, 3 + len(cols) + 3)), classes, cls="stack"),
    ]
    ablations = [n for n in board if strategies[n].group in ("single", "without")]
    if ablations:
        p = strategies[ablations[0]].params
        of = p[0].get("candidate") if isinstance(p, list) and p and isinstance(p[0], dict) else None
        parts.append(
            _p(
                f"single:M and without:M are ablations of {of or 'the best non-ensemble candidate'}"
                ": refitted on modality M alone, or without it, to show what each modality "
                "adds; they are not candidates and are never selected.",
                "note",
            )
        )
    if metric:
        parts.append(_leaderboard_figure(run, board, metric))
    if run.selection_detail:
        parts.append(_selection_detail(run.selection_detail))
    return "\n".join(parts)


def _selection_label(run: CompareRecord) -> str:
    """How the comparison selected, in words."""
    sel = "?" if run.selection is None else str(run.selection)
    return SELECTION_LABELS.get(sel, sel)


def _leaderboard_figure(run: CompareRecord, board: list[str], metric: str) -> str:
    ent = run.strategies or {}
    shown = {n: m for n in board if (m := _metrics_of(ent[n]).get(metric)) and _is_num(m.mean)}
    if not shown:
        return ""
    names = list(shown)
    means = [m.mean for m in shown.values()]
    cis = [m.ci or [None, None] for m in shown.values()]
    lo = [m - c[0] if _is_num(c[0]) else 0 for m, c in zip(means, cis, strict=True)]
    hi = [c[1] - m if _is_num(c[1]) else 0 for m, c in zip(means, cis, strict=True)]
    fig, axes = _new_figure(7.5, 0.3 * len(names) + 1.3)
    ax = axes[0][0]
    colours = [GROUP_COLOURS.get(ent[n].group or "", "#333333") for n in names]
    # points with CIs, not bars: a bar's length from an arbitrary axis start misleads
    for i, (m, a, b, c) in enumerate(zip(means, lo, hi, colours, strict=True)):
        big = names[i] == run.selected
        ax.errorbar(m, i, xerr=[[a], [b]], fmt="o", color=c, ms=8 if big else 5, capsize=3)
    ax.set_yticks(range(len(names)), [n + (" ★" if n == run.selected else "") for n in names])
    ax.invert_yaxis()
    if metric in CHANCE:
        ax.axvline(CHANCE[metric], ls=":", color="grey", lw=1)
        ax.text(CHANCE[metric], -0.6, " chance", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel(f"{_label(metric)} (mean, 95% bootstrap CI)", fontsize=9)
    _style(ax)
    handles = [
        _patch(c, g) for g, c in GROUP_COLOURS.items() if any(ent[n].group == g for n in names)
    ]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return _figure(
        fig,
        f"leaderboard chart of {metric}",
        f"{_label(metric)} per entry (point) with its 95% bootstrap CI (line); colour = group "
        "(legend); ★ = the selected candidate; dotted = chance.",
    )


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _selection_detail(detail: list[dict[str, Any]]) -> str:
    strategies = sorted({s for d in detail for s in (d.get("cv_scores") or {})})
    heads = ["candidate"] + [f"fold {d.get('fold', i)}" for i, d in enumerate(detail)]
    rows = []
    for s in strategies:
        row: list[Any] = [s]
        for d in detail:
            scores = (d.get("cv_scores") or {}).get(s)
            if isinstance(scores, dict):  # results before candidates: {grid point: score}
                best = max((v for v in scores.values() if _is_num(v)), default=None)
            else:
                best = scores if _is_num(scores) else None
            params = (d.get("chosen_params") or {}).get(s)
            txt = _num(best)
            if params:
                txt += " " + _params_text(params)
            if d.get("selected") == s:
                txt += " ★"
            row.append(txt)
        rows.append(row)
    return (
        "<details><summary>Selection detail: cross-validated scores on training patients"
        "</summary>"
        + _table(
            heads,
            rows,
            caption="mean inner-CV score of each candidate's best configuration, per outer fold "
            "(an ensemble's score: its weights chosen without the scored inner fold); ★ = chosen",
        )
        + "</details>"
    )


def _curves(run: Run | None) -> str | None:
    series: list[tuple[str, dict[str, Any], bool]] = []
    if isinstance(run, FitRecord):
        c = run.curves or {}
        if c.get("roc") or c.get("pr"):
            series.append((str(run.fusion or "model"), c, True))
    elif isinstance(run, CompareRecord):
        strategies = run.strategies or {}
        sel = run.selected
        with_curves = [
            n for n in (run.leaderboard or list(strategies)) if (e := run.entry(n)) and e.curves
        ]
        shown = with_curves[:MAX_CURVE_ENTRIES]
        if sel in with_curves and sel not in shown:
            shown[-1] = sel
        series = [(n, strategies[n].curves or {}, n == sel) for n in shown]
    if not series:
        return None
    fig, axes = _new_figure(10, 4.4, ncols=2)
    ax_roc, ax_pr = axes[0]
    for name, c, bold in series:
        lw, z = (2.6, 3) if bold else (1.3, 2)
        label = name + (" ★" if bold and isinstance(run, CompareRecord) else "")
        roc, pr = c.get("roc") or {}, c.get("pr") or {}
        if roc.get("fpr"):
            ax_roc.plot(roc["fpr"], roc["tpr"], lw=lw, zorder=z, label=label)
        if pr.get("recall"):
            ax_pr.step(pr["recall"], pr["precision"], where="post", lw=lw, zorder=z, label=label)
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        _style(ax)
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
    if isinstance(run, FitRecord):
        cap = "On the held-out test patients (calibrated scores)."
    else:
        cap = (
            f"First seed, on the evaluated patients; up to {MAX_CURVE_ENTRIES} entries "
            "from the top of the leaderboard, the selected strategy (★) drawn thicker."
        )
    return _figure(fig, "ROC and precision-recall curves", cap)


def _survival(run: Run | None) -> str | None:
    """Survival tasks: for the selected entry of a comparison (or a fit's one model),
    Kaplan–Meier curves of its risk tertiles (log-rank p, numbers at risk) and calibration
    at the middle horizon; for the top entries, the time-dependent AUROC at every
    horizon."""
    if run is None or run.task != "survival":
        return None
    if isinstance(run, FitRecord):
        if not run.survival:
            return None
        sel = str(run.fusion or "model")
        survival = {sel: run.survival}
    elif run.kind == "compare":
        board = run.leaderboard or []
        survival = {n: e.survival for n in board if (e := run.entry(n)) and e.survival}
        sel = run.selected
    else:
        return None
    board = list(survival)
    if sel not in survival:
        return None
    fig, axes = _new_figure(15, 4.4, ncols=3)
    ax_km, ax_auc, ax_cal = axes[0]
    surv = survival[sel]
    groups = surv.get("risk_groups") or {}
    names = {1: "lowest risk", 2: "middle", 3: "highest risk"}
    for g in groups.get("groups", []):
        ax_km.step([0, *g["time"]], [1, *g["survival"]], where="post",
                   label=f"{names.get(g['group'], g['group'])} (n={g['n']})")  # fmt: skip
    unit = ((run.spec or {}).get("target") or {}).get("time_unit", "")
    p = groups.get("logrank_p")
    p_text = "< 0.0001" if _is_num(p) and p < 1e-4 else f"= {_num(p, 4)}"
    ax_km.set(xlabel=f"time ({unit})", ylabel="survival (Kaplan–Meier)", ylim=(0, 1.02),
              title=f"{sel}: risk tertiles, log-rank p {p_text}")  # fmt: skip
    for name in board[:MAX_CURVE_ENTRIES]:
        ph = survival[name].get("per_horizon") or {}
        hs = [float(h) for h in ph]
        lw = 2.6 if name == sel else 1.3
        ax_auc.plot(hs, [ph[h].get("auroc") for h in ph], marker="o", lw=lw,
                    label=name + (" ★" if name == sel else ""))  # fmt: skip
    ax_auc.set(xlabel=f"horizon ({unit})", ylabel="cumulative/dynamic AUROC",
               title="time-dependent AUROC")  # fmt: skip
    aucs = [
        v["auroc"]
        for n in board[:MAX_CURVE_ENTRIES]
        for v in (survival[n].get("per_horizon") or {}).values()
        if _is_num(v.get("auroc"))
    ]
    if aucs:  # from chance (or below) to 1: a small spread is not drawn as a large one
        ax_auc.set_ylim(min(0.5, min(aucs) - 0.02), 1.0)
        ax_auc.axhline(0.5, ls=":", color="grey", lw=1)
    cal = surv.get("calibration")
    if cal:
        ax_cal.plot(cal["predicted"], cal["observed"], "o-", label=f"ICI {_num(cal['ici'])}")
        top = max(max(cal["predicted"]), max(cal["observed"]), 0.05)
        ax_cal.plot([0, top], [0, top], ":", color="grey")
        ax_cal.set(
            xlabel=f"predicted P(event by {cal['horizon']:g} {unit})",
            ylabel=f"observed P(event by {cal['horizon']:g} {unit}) (1 − Kaplan–Meier)",
            title=f"{sel}: calibration by risk decile",
        )
    for ax in (ax_km, ax_auc, ax_cal):
        _style(ax)
        ax.legend(fontsize=7)
    caption = (
        "The model's outputs on the evaluated patients (the test patients, or every "
        "patient out of fold for a k-fold fit)."
        if isinstance(run, FitRecord)
        else "Seed-mean outputs on the evaluated patients; the selected entry (★) drawn thicker."
    )
    figure = _figure(
        fig, "survival curves by risk group, time-dependent AUROC and calibration", caption
    )
    ticks = groups.get("at_risk_times") or []
    rows = [
        [names.get(g["group"], g["group"]), *g["at_risk"]]
        for g in groups.get("groups", [])
        if len(g.get("at_risk") or []) == len(ticks)
    ]
    if not ticks or not rows:
        return figure
    heads = ["risk group", *[f"{round(t, 1):g} {unit}".strip() for t in ticks]]
    note = _p(f"{sel}: numbers at risk (followed, no event yet) by risk tertile.", "note")
    return figure + note + _table(heads, rows, set(range(1, len(heads))))


def _calibration(cal: dict[str, Any] | None) -> str | None:
    if not cal:
        return None
    before, after = cal.get("before") or {}, cal.get("after") or {}
    parts = []
    method = cal.get("method")
    facts = [f"method: {method}" if method else "method: not recorded"]
    if _is_num(cal.get("temperature")):
        facts.append(f"temperature {_num(cal['temperature'])}")
    if cal.get("fitted_on"):
        facts.append(f"fitted on {cal['fitted_on']}")
    parts.append(_p("; ".join(facts) + "; assessed on the test patients.", "note"))
    rows = [
        [_label(m), _num(before.get(m)), _num(after.get(m))]
        for m in ("ece", "brier")
        if m in before or m in after
    ]
    if rows:
        parts.append(_table(["metric", "before calibration", "after calibration"], rows, {1, 2}))
    rel = [(lab, d.get("reliability")) for lab, d in (("before", before), ("after", after))]
    rel = [(lab, r) for lab, r in rel if r and r.get("predicted")]
    if rel:
        fig, axes = _new_figure(4.8 * len(rel), 4.2, ncols=len(rel))
        for ax, (lab, r) in zip(axes[0], rel, strict=True):
            ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect")
            _reliability_axes(ax, r, "#1f77b4", "bins (area ∝ patients)")
            ece = (before if lab == "before" else after).get("ece")
            ax.set(
                xlim=(0, 1),
                ylim=(0, 1),
                xlabel="mean predicted probability",
                ylabel="observed frequency",
                title=f"{lab} calibration (ECE {_num(ece)})",
            )
            _style(ax)
            ax.legend(fontsize=7, loc="upper left")
        parts.append(
            _figure(
                fig,
                "reliability diagrams before and after calibration",
                "Reliability diagrams: observed event frequency against mean predicted "
                "probability per bin; points on the dotted diagonal are well calibrated.",
            )
        )
    return "\n".join(parts)


def _reliability_axes(ax: Any, r: dict[str, Any], colour: str, label: str) -> None:
    counts = r.get("count") or [1] * len(r["predicted"])
    size = [20 + 180 * c / max(max(counts), 1) for c in counts]
    ax.plot(r["predicted"], r["observed"], "-", color=colour, lw=1.5)
    ax.scatter(r["predicted"], r["observed"], s=size, color=colour, zorder=3, label=label)


def _calibration_compare(run: CompareRecord | None) -> str | None:
    """Every candidate's calibration on the evaluated patients (seed-mean risks, binary
    tasks): ECE, Brier, calibration-in-the-large, slope and intercept, and the reliability
    diagram of the selected candidate beside the best baseline's."""
    if run is None:
        return None
    strategies = run.strategies or {}
    board = [n for n in (run.leaderboard or list(strategies)) if n in strategies]
    ablation = ("without", "single")
    board = [n for n in board if strategies[n].calibration and strategies[n].group not in ablation]
    if not board:
        return None
    sel = run.selected
    keys = ("calibration_in_the_large", "calibration_slope", "calibration_intercept")
    rows, classes = [], []
    for name in board:
        e = strategies[name]
        ms = _metrics_of(e)
        cal = e.calibration or {}
        rows.append(
            [
                name + (" ★" if name == sel else ""),
                e.group or "",
                _num((ms.get("ece") or MetricSummary()).mean),
                _num((ms.get("brier") or MetricSummary()).mean),
                *[_num(cal.get(k)) for k in keys],
            ]
        )
        classes.append("selected" if name == sel else "")
    parts = [
        _p(
            "On the evaluated (held-out) patients, from each entry's risk of the positive "
            "class averaged over seeds; ECE and Brier are means over seeds. Ideal: ECE 0, "
            "calibration-in-the-large 0 (observed rate minus mean risk), slope 1, "
            "intercept 0. Sorted as the leaderboard.",
            "note",
        ),
        _table(
            ["entry", "group", "ECE", "Brier", "in the large", "slope", "intercept"],
            rows,
            {2, 3, 4, 5, 6},
            classes,
            cls="stack",
        ),
    ]
    baselines = [n for n in board if strategies[n].group == "baseline" and n != sel]
    shown = [(n, "#1f77b4") for n in [sel] if n in board]
    shown += [(n, "#ff7f0e") for n in baselines[:1]]
    shown = [(n, c) for n, c in shown if (strategies[n].calibration or {}).get("reliability")]
    if shown:
        fig, axes = _new_figure(5.2, 4.4)
        ax = axes[0][0]
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect")
        for name, colour in shown:
            ece = (_metrics_of(strategies[name]).get("ece") or MetricSummary()).mean
            star = " ★" if name == sel else ""
            _reliability_axes(
                ax, strategies[name].calibration["reliability"], colour,
                f"{name}{star} (ECE {_num(ece)})",
            )  # fmt: skip
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="mean predicted risk (seed mean)",
            ylabel="observed event rate",
            title="reliability: selected (★) and best baseline",
        )
        _style(ax)
        ax.legend(fontsize=7, loc="upper left")
        parts.append(
            _figure(
                fig,
                "reliability diagram of the selected candidate and the best baseline",
                "Observed event rate against mean predicted risk per risk bin (area ∝ "
                "patients) on the evaluated patients; points on the dotted diagonal are "
                "well calibrated.",
            )
        )
    return "\n".join(parts)


def _robustness(rob: RobustnessRecord | None, run: CompareRecord | None) -> str | None:
    if rob is None or not rob.curves:
        return None
    metrics = rob.metrics or []
    chosen = run.selection_metric if run else None
    metric = chosen if chosen in metrics else (metrics[0] if metrics else None)
    scenarios = rob.scenarios or []
    rates = rob.rates or []
    curves = rob.curves
    if not metric or not scenarios or not rates:
        return None
    ncols = min(len(scenarios), 3)
    nrows = math.ceil(len(scenarios) / ncols)
    fig, axes = _new_figure(3.6 * ncols, 3.1 * nrows + 0.4, ncols=ncols, nrows=nrows, sharey=True)
    flat = [ax for row in axes for ax in row]
    x = [100 * r for r in rates]
    for ax, sc in zip(flat, scenarios, strict=False):
        for name, d in curves.items():
            m = d.get(sc, {}).get(metric)
            if m is None or not m.mean:
                continue
            style = "--" if str(name).startswith("baseline") else "-"
            ax.plot(x, m.mean, style, marker="o", ms=3, label=name)
            sd = m.sd
            if sd and len(sd) == len(m.mean) and all(_is_num(s) for s in sd):
                ax.fill_between(
                    x,
                    [a - s for a, s in zip(m.mean, sd, strict=True)],
                    [a + s for a, s in zip(m.mean, sd, strict=True)],
                    alpha=0.12,
                )
        ax.set_title(f"missing: {sc}", fontsize=9)
        xlabel = "% chance each is removed" if sc == "random" else "% of test patients losing it"
        ax.set_xlabel(xlabel, fontsize=8)
        _style(ax)
    for ax in flat[len(scenarios) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(_label(metric), fontsize=9)
    flat[0].legend(fontsize=7, loc="lower left")
    fig_html = _figure(
        fig,
        f"{metric} against the share of test patients missing a modality",
        f"{_label(metric)} as x% of the test patients additionally lose the modality of the "
        "panel title (on top of those who never had it); 'random': each patient's "
        "modalities are each removed with probability x, at least one kept. Mean ± SD over "
        f"{len(rob.seeds or []) or '?'} seed(s), {_or_unknown(rob.n_test)} test "
        "patients. Dashed = classical baselines.",
    )
    last = len(rates) - 1
    heads = ["entry"] + [str(sc) for sc in scenarios]
    rows = []
    for name, d in curves.items():
        row: list[Any] = [name]
        for sc in scenarios:
            m = d.get(sc, {}).get(metric)
            mean = (m.mean if m else None) or []
            if len(mean) > last and _is_num(mean[last]) and _is_num(mean[0]):
                delta = mean[last] - mean[0]
                row.append(_Raw(f'{_num(mean[last])} <span class="ci">({delta:+.3f})</span>'))
            else:
                row.append("—")
        rows.append(row)
    table = _table(
        heads,
        rows,
        set(range(1, len(heads))),
        caption=f"{_label(metric)} with {100 * rates[last]:.0f}% of test patients additionally "
        "losing the modality ('random': each of a patient's modalities removed with probability "
        f"{rates[last]:.1f}, at least one kept); in brackets, the change from none removed",
    )
    return fig_html + table


def _contributions(run: Run | None) -> str | None:
    if isinstance(run, CompareRecord):
        return _contributions_compare(run)
    if run is None:
        return None
    c = run.contributions
    parts = []
    if c and c.get("global"):
        parts.append(_contribution_global(c))
        parts.append(_contribution_patients(c))
    att = run.attention
    if att and att.get("names"):
        parts.append(_attention(att))
    if att and att.get("set_pooling"):
        parts.append(_set_pooling(att["set_pooling"]))
    return "\n".join(p for p in parts if p) or None


def _contribution_global(c: dict[str, Any]) -> str:
    metric = str(c.get("metric", "metric"))
    mods = list(c.get("modalities") or c["global"])
    shap, loo = c["global"], c.get("global_loo") or {}
    mabs = c.get("mean_abs_patient") or {}
    intro = _p(
        f"How much each modality adds to the test {_label(metric)} ({c.get('method', '')} "
        "Shapley values over modality subsets, a missing modality handled as the model "
        "handles any absent modality), beside leave-one-out: the loss when only that "
        f"modality is removed. All modalities: {_num(c.get('value_all'))}; none: "
        f"{_num(c.get('value_none'))}"
        + ("; signs are such that positive = helps." if metric in LOWER_IS_BETTER else "."),
        "note",
    )
    rows = [[m, _num(shap.get(m)), _num(loo.get(m)), _num(mabs.get(m))] for m in mods]
    table = _table(
        ["modality", "Shapley", "leave-one-out", "mean |per-patient Shapley|"], rows, {1, 2, 3}
    )
    return intro + '<div class="grid">' + table + _contribution_figure(c) + "</div>"


def _contribution_figure(c: dict[str, Any], name: str | None = None) -> str:
    """Grouped bars: global Shapley beside leave-one-out per modality."""
    metric = str(c.get("metric", "metric"))
    shap, loo = c["global"], c.get("global_loo") or {}
    mods = [m for m in (c.get("modalities") or shap) if m in shap]
    fig, axes = _new_figure(6.5, 0.45 * len(mods) + 1.4)
    ax = axes[0][0]
    y, h = list(range(len(mods))), 0.38
    shap_v = [shap.get(m) if _is_num(shap.get(m)) else 0.0 for m in mods]
    loo_v = [loo.get(m) if _is_num(loo.get(m)) else 0.0 for m in mods]
    ax.barh([i - h / 2 for i in y], shap_v, h, color=SHAPLEY_COLOUR, label="Shapley")
    ax.barh([i + h / 2 for i in y], loo_v, h, color=LOO_COLOUR, label="leave-one-out")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, mods)
    ax.invert_yaxis()
    ax.set_xlabel(f"contribution to {_label(metric)}", fontsize=9)
    _style(ax)
    ax.legend(fontsize=8)
    prefix = f"{name}: " if name else ""
    return _figure(
        fig,
        "global modality contributions",
        prefix + "global modality Shapley values (blue) beside leave-one-out deltas (orange).",
    )


def _example_patients(c: dict[str, Any], mods: list[str]) -> list[int]:
    """A handful of patients covering different modality-presence patterns first."""
    n = len(c.get("ids") or [])
    seen, chosen = set(), []
    for i in range(n):
        pattern = tuple(not _absent(c, m, i) for m in mods)
        if pattern not in seen:
            seen.add(pattern)
            chosen.append(i)
    chosen = chosen[:MAX_EXAMPLE_PATIENTS]
    extra = [i for i in range(n) if i not in chosen]
    return sorted(chosen + extra[: MAX_EXAMPLE_PATIENTS - len(chosen)])


def _absent(c: dict[str, Any], m: str, i: int) -> bool:
    """A patient lacks a modality where its per-patient leave-one-out value is null."""
    loo = (c.get("patient_loo") or {}).get(m)
    return bool(loo) and i < len(loo) and loo[i] is None


def _contribution_patients(c: dict[str, Any]) -> str:
    patient = c.get("patient") or {}
    ids = c.get("ids") or []
    if not patient or not ids:
        return ""
    mods = [m for m in (c.get("modalities") or list(patient)) if m in patient]
    base, score = c.get("patient_base") or [], c.get("patient_score") or []
    picks = _example_patients(c, mods)
    if not picks:
        return ""
    absent = partial(_absent, c)
    rows = []
    for i in picks:
        row: list[Any] = [ids[i], _num(base[i] if i < len(base) else None)]
        row += ["absent" if absent(m, i) else _signed(patient[m][i]) for m in mods]
        row.append(_num(score[i] if i < len(score) else None))
        rows.append(row)
    heads = ["patient", "output with no modality", *mods, "model output"]
    table = _table(heads, rows, set(range(1, len(heads))))
    fig, axes = _new_figure(2.6 * len(picks), 0.35 * len(mods) + 1.3, ncols=len(picks), sharex=True)
    for ax, i in zip(axes[0], picks, strict=True):
        vals = [patient[m][i] if _is_num(patient[m][i]) and not absent(m, i) else 0.0 for m in mods]
        ax.barh(range(len(mods)), vals, color=[POS_COLOUR if v >= 0 else NEG_COLOUR for v in vals])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(
            range(len(mods)), [m + (" (absent)" if absent(m, i) else "") for m in mods], fontsize=7
        )
        ax.invert_yaxis()
        ax.set_title(str(ids[i]), fontsize=8)
        _style(ax)
    fig.supxlabel("per-patient Shapley (change in model output)", fontsize=8)
    figure = _figure(
        fig,
        "per-patient modality contributions for a few example patients",
        "Per-patient modality Shapley values for a few (pseudonymous) test patients with "
        "different modalities present: how each modality moves this patient's model output "
        "from the output with no modality. An absent modality contributes nothing.",
    )
    return f"<h3>Example patients ({len(picks)} of {len(ids)})</h3>" + table + figure


def _attention(att: dict[str, Any]) -> str:
    names = list(att.get("names") or [])
    mean = att.get("mean") or []
    rows = [["mean over test patients", *[_num(v) for v in mean]]]
    for ex in (att.get("examples") or [])[:MAX_EXAMPLE_PATIENTS]:
        rows.append([ex.get("id", "?"), *[_num(v) for v in ex.get("weights") or []]])
    return (
        "<h3>Attention weights</h3>"
        + _p("Fusion weights read from the model per modality (they sum to 1 per patient).", "note")
        + _table(["", *names], rows, set(range(1, len(names) + 1)))
    )


def _set_pooling(pool: dict[str, Any]) -> str:
    parts = ["<h3>Set pooling weights</h3>"]
    parts.append(
        _p(
            "Encoders that pool a set per patient weigh its elements (they sum to 1 per "
            "patient); a mean largest weight near 1 means one element decides.",
            "note",
        )
    )
    for m, info in pool.items():
        rows = [
            [ex.get("id", "?"), ", ".join(_num(v) for v in ex.get("weights") or [])]
            for ex in (info.get("examples") or [])[:MAX_EXAMPLE_PATIENTS]
        ]
        parts.append(
            _p(
                f"{m}: {info.get('slots', '')}; {info.get('n_patients', '?')} patients, "
                f"{_num(info.get('mean_slots_used'))} elements on average, mean largest "
                f"weight {_num(info.get('mean_max_weight'))}."
            )
        )
        parts.append(_table(["patient", "weights"], rows, set()))
    return "".join(parts)


def _contributions_compare(run: CompareRecord) -> str | None:
    board = run.leaderboard or list(run.strategies or {})
    have = {n: e.contributions for n in board if (e := run.entry(n)) and e.contributions}
    if not have:
        return None
    mods: list[str] = []
    for c in have.values():
        for m in c.get("global") or {}:
            if m not in mods:
                mods.append(m)
    rows, classes = [], []
    sel = run.selected
    for n, c in have.items():
        g, loo = c.get("global") or {}, c.get("global_loo") or {}
        row: list[Any] = [n + (" ★" if n == sel else ""), str(c.get("metric", ""))]
        row += [
            _Raw(f'{_esc(_num(g.get(m)))} <span class="ci">({_esc(_num(loo.get(m)))})</span>')
            if m in g
            else "—"
            for m in mods
        ]
        row.append(f"{_num(c.get('value_none'))} → {_num(c.get('value_all'))}")
        rows.append(row)
        classes.append("selected" if n == sel else "")
    parts = [
        _p(
            "Global modality Shapley values per candidate with a modality-level "
            "explanation (first seed; entries without one, such as ensembles, are not "
            "listed), with leave-one-out deltas in brackets; the last column is the metric "
            "with no modality and with all of them, first seed.",
            "note",
        ),
        _table(
            ["candidate", "metric", *mods, "none → all"],
            rows,
            set(range(2, len(mods) + 3)),
            classes,
        ),
    ]
    pick = sel if sel in have else next(iter(have))
    parts.append(_contribution_figure(have[pick], pick))
    return "\n".join(parts)


def _features(run: FitRecord | None, run_dir: Path | str | None = None) -> str | None:
    if run is None:
        return None
    feats = run.features or {}
    top = {m: rows for m, rows in (feats.get("top") or {}).items() if rows}
    parts = []
    if top:
        parts.append(
            _p(
                f"Per modality, the features with the largest mean |attribution| over "
                f"{feats.get('on') or 'the test patients'} who have it "
                f"({feats.get('method', 'method not recorded')}). "
                "The signed mean is the feature's average push against the average patient, "
                "not the direction of its effect: for a linear term it is near 0 whatever "
                "the sign of the coefficient.",
                "note",
            )
        )
        tables = []
        for m, rows in top.items():
            body = [
                [
                    r.get("feature", "?"),
                    _num(r.get("mean_abs")),
                    _signed(r.get("mean")),
                ]
                for r in rows[:TOP_FEATURES_SHOWN]
            ]
            tables.append(
                f"<div><h3>{_esc(m)}</h3>"
                + _table(["feature", "mean |attr|", "mean attr"], body, {1, 2})
                + "</div>"
            )
        parts.append(_features_figure(top))
        parts.append(
            "<details><summary>The same as tables (mean |attribution| and signed mean)"
            '</summary><div class="grid">' + "".join(tables) + "</div></details>"
        )
    inter = feats.get("interactions") or []
    if inter:
        parts.append("<h3>Cross-modal products the model kept</h3>")
        parts.append(
            _p(
                "The largest coefficients of the model's products of two features from "
                "different modalities (on the scaled features' log-odds scale; a principal "
                "component is named PCk when a wide modality was reduced).",
                "note",
            )
        )
        body = [[d.get("a", "?"), d.get("b", "?"), _signed(d.get("coef"))] for d in inter]
        parts.append(_table(["feature", "× feature", "coefficient"], body, {2}))
    dc = run.deletion_curve
    if dc and dc.get("k") and dc.get("top_first"):
        fig, axes = _new_figure(6, 3.6)
        ax = axes[0][0]
        ax.plot(dc["k"], dc["top_first"], "-o", ms=3, label="top-attributed first")
        if dc.get("random"):
            ax.plot(dc["k"], dc["random"], "--o", ms=3, color="grey", label="random order")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(dc["k"], [str(k) for k in dc["k"]])
        ax.minorticks_off()
        ax.set(xlabel="features reset to baseline", ylabel=_label(str(dc.get("metric", ""))))
        _style(ax)
        ax.legend(fontsize=8)
        parts.append("<h3>Deletion check</h3>")
        parts.append(
            _figure(
                fig,
                "deletion curve",
                "Faithfulness check: the test metric as the most-attributed features are "
                "reset first, against the same number reset in random order. A faster drop "
                "for the attributed order means the attributions point at what the model uses.",
            )
        )
    maps = _attribution_maps(run.attribution_plots or [], run_dir)
    if maps:
        parts.append(maps)
    return "\n".join(parts) or None


def _attribution_maps(plots: list[dict[str, Any]], run_dir: Path | str | None) -> str | None:
    """The attribution maps the run wrote as PNG files (signals, images), inlined."""
    if not plots or run_dir is None:
        return None
    figs = []
    root = Path(run_dir).resolve()
    for p in plots:
        if not isinstance(p, dict):
            continue
        f = (root / str(p.get("file", ""))).resolve()
        # only PNG files inside the run folder: a results file cannot point elsewhere
        if root not in f.parents or not f.is_file() or f.suffix.lower() != ".png":
            continue
        data = base64.b64encode(f.read_bytes()).decode("ascii")
        cap = (
            f"{p.get('modality', '?')} ({p.get('kind', '?')}), patient {p.get('patient', '?')}: "
            f"{p.get('method', '')}, window {p.get('window', '')}"
        )
        figs.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(cap)}">'
            f"<figcaption>{_esc(cap)}</figcaption></figure>"
        )
    if not figs:
        return None
    return (
        "<h3>Attribution maps</h3>"
        + _p(
            "Occlusion: how much the score drops when a window of the input is reset to the "
            "training mean; red raises the score, blue lowers it (signals), bright = large "
            "|attribution| (images).",
            "note",
        )
        + "".join(figs)
    )


def _features_figure(top: dict[str, list[dict[str, Any]]]) -> str:
    mods = list(top)
    k = min(TOP_FEATURES_SHOWN, max(len(top[m]) for m in mods))
    ncols = len(mods) if len(mods) <= 4 else 3
    nrows = math.ceil(len(mods) / ncols)
    fig, axes = _new_figure(2.9 * ncols, (0.22 * k + 1.0) * nrows, ncols=ncols, nrows=nrows)
    flat = [ax for row in axes for ax in row]
    for ax, m in zip(flat, mods, strict=False):
        rows = top[m][:k]
        vals = [r.get("mean_abs") or 0 for r in rows]
        # one colour: the mean signed attribution is not a direction of effect (for a
        # linear term it is ~0 whatever the coefficient's sign)
        ax.barh(range(len(rows)), vals, color="#577590")
        ax.set_yticks(range(len(rows)), [str(r.get("feature", "?")) for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("mean |attribution|", fontsize=7)
        _style(ax)
    for ax in flat[len(mods) :]:
        ax.set_visible(False)
    return _figure(
        fig,
        "top features per modality",
        "Mean |attribution| of the top features per modality, in the units of the model "
        "output the attributions explain: how much a feature moves predictions, not in "
        "which direction.",
    )


FAIRNESS_COLS = ("auroc", "tpr", "fpr", "ppv", "ece", "prevalence")


def _subgroups(fair: dict[str, Any] | None) -> str | None:
    fair = fair or {}
    attrs = fair.get("attributes") or {}
    if not attrs:
        return None
    min_group = fair.get("min_group")
    cols = list(fair.get("metrics") or FAIRNESS_COLS)
    where = (
        "Harrell's C of the risk score per group"
        if fair.get("task") == "survival"
        else f"Test-patient metrics per group at threshold {_num(fair.get('threshold'), 2)}"
    )
    parts = [
        _p(
            f"{where} "
            f"with 95% bootstrap CIs. Groups with fewer than {min_group if min_group else '?'} "
            "patients or only one outcome class are shown as too small, not as numbers. "
            "Gaps are the largest difference between adequate groups, with a bootstrap CI of "
            "that pair; highlighted rows are flagged by a permutation test of the largest "
            "gap (p < 0.05; the pair was chosen after looking, so its CI alone would flag "
            "gaps that chance made; results written before the test have no p and were "
            "flagged by that CI).",
            "note",
        )
    ]
    for attr, a in attrs.items():
        parts.append(f"<h3>{_esc(attr)}" + (" (binned)" if a.get("binned") else "") + "</h3>")
        rows = []
        for g, d in (a.get("groups") or {}).items():
            row: list[Any] = [g, _num(d.get("n"))]
            if d.get("too_small"):
                row.append(
                    _Raw(
                        f'<td class="too-small" colspan="{len(cols)}">too small '
                        f"(n &lt; {_esc(min_group)} or one outcome class)</td>"
                    )
                )
            else:
                for m in cols:
                    v = d.get(m) or {}
                    row.append(_val_ci(v.get("value"), v.get("ci")))
            rows.append(row)
        parts.append(
            _table(
                ["group", "n", *[_label(m) for m in cols]],
                rows,
                set(range(1, len(cols) + 2)),
            )
        )
        gaps = a.get("gaps") or {}
        if "note" in gaps:
            parts.append(_p(f"Gaps: {gaps['note']}.", "note"))
        elif gaps:
            grows, gclass = [], []
            for m, gp in gaps.items():
                between = gp.get("between") or []
                flag = bool(gp.get("flag"))
                grows.append(
                    [
                        _label(m),
                        _num(gp.get("value")),
                        " vs ".join(str(b) for b in between),
                        _ci_text(gp.get("ci")) or "—",
                        _num(gp.get("p_value")),
                        "⚠ flagged" if flag else "",
                    ]
                )
                gclass.append("flag" if flag else "")
            parts.append(
                _table(
                    ["metric", "largest gap", "between (high vs low)", "95% CI", "p", "flag"],
                    grows,
                    {1, 3, 4},
                    gclass,
                )
            )
    mit = fair.get("mitigation") or {}
    for attr, mdata in mit.items():
        if not isinstance(mdata, dict) or "before" not in mdata:
            continue
        parts.append(f"<h3>Mitigation for {_esc(attr)}: {_esc(mdata.get('method', ''))}</h3>")
        before, after = mdata.get("before") or {}, mdata.get("after") or {}
        rows = []
        for g, b in before.items():
            a2 = after.get(g) or {}
            rows.append(
                [
                    g,
                    _num(b.get("n")),
                    f"{_num(b.get('tpr'))} → {_num(a2.get('tpr'))}",
                    f"{_num(b.get('fpr'))} → {_num(a2.get('fpr'))}",
                ]
            )
        acc = mdata.get("accuracy") or {}
        parts.append(
            _table(
                ["group", "n", "TPR before → after", "FPR before → after"],
                rows,
                {1, 2, 3},
                caption=f"group thresholds fitted on validation patients; accuracy "
                f"{_num(acc.get('before'))} → {_num(acc.get('after'))}",
            )
        )
    return "\n".join(parts)


def _evidence(run: FitRecord | None) -> str | None:
    """One test patient's evidence draft (:mod:`holomed.generative.evidence`: fixed
    templates, no language model), from this run's JSON only; each sentence with the
    places its values come from."""
    if run is None:
        return None

    ex = results_example(run.to_dict())
    if ex is None:
        return None
    d = evidence_draft(
        ex["prediction"], ex["card"], ex["audit"], ex["attributes"], ex["model"], ex["bins"]
    )
    i = ex["index"]
    intro = _p(
        "What `holomed draft` and the clinician page write for a patient, shown for one "
        "(pseudonymous) test patient. Every number is read from this run's results.json: "
        f"/prediction is that patient's entries (contributions.patient[*][{i}], "
        f"patient_base[{i}], patient_score[{i}]; a modality whose leave-one-out value is "
        "null was absent), /card the test metrics, evaluation, calibration and cohort "
        "coverage, /audit the subgroup audit. Per-patient feature attributions and the "
        "test patients' attributes are not stored in results.json, so this example has no "
        "feature sentence and cannot match the audit's subgroups.",
        "note",
    )
    items = []
    for st in d.sentences:
        srcs = "".join(
            f"<li><code>{_esc(x['path'])}</code> = {_esc(x['value'])}</li>" for x in st.sources
        )
        more = f"<details><summary>sources</summary><ul>{srcs}</ul></details>" if srcs else ""
        items.append(f'<li data-kind="{_esc(st.kind)}">{_esc(st.text)}{more}</li>')
    return (
        intro
        + f'<p class="draft-label"><strong>{_esc(d.label)}</strong></p>'
        + f"<p>Patient {_esc(d.patient)}</p>"
        + '<ol class="evidence">'
        + "".join(items)
        + "</ol>"
    )


def _model_card(run: Run | None, rob: RobustnessRecord | None = None) -> str | None:
    """Intended use, data, evaluation, model, limitations and versions of the run (of a
    robustness-only page: its dataset)."""
    items: list[tuple[str, str]] = []
    intended = run.intended_use if run else None
    items.append(("intended use", _esc(intended or "not recorded in the results")))
    cohort = (run.cohort if run else None) or {}
    spec = (run.spec if run else None) or {}
    head = run or rob
    data = [str(_or_unknown(head.dataset if head else None))]
    if "patients" in cohort:
        data.append(f"{cohort['patients']} patients")
    mods = cohort.get("modalities") or {}
    if mods:
        data.append(
            "modalities: " + ", ".join(f"{n} ({m.get('kind', '?')})" for n, m in mods.items())
        )
    if head and head.synthetic:
        data.append("SYNTHETIC")
    items.append(("data", _esc("; ".join(data))))
    lims = (run.limitations if run else None) or []
    if spec.get("description") and spec["description"] not in lims:
        items.append(("description", _esc(spec["description"])))
    split = (run.split if isinstance(run, CompareRecord) else None) or spec.get("split") or {}
    ev = []
    if split.get("method"):
        ev.append(f"split: {split['method']}")
    if isinstance(run, FitRecord):
        if run.n_train is not None:
            ev.append(_fit_evaluation(run))
    elif isinstance(run, CompareRecord):
        if run.n_evaluated is not None:
            ev.append(f"{run.n_evaluated} patients evaluated")
        if run.seeds is not None:
            ev.append(f"{len(run.seeds)} seed(s)")
        if run.n_bootstrap:
            ev.append(f"{run.n_bootstrap} bootstrap resamples")
    if ev:
        items.append(("evaluation", _esc("; ".join(ev))))
    if isinstance(run, FitRecord):
        model = [f"fusion: {_or_unknown(run.fusion)}", f"seed {_or_unknown(run.seed)}"]
        if _is_num(run.fit_seconds):
            model.append(f"trained in {run.fit_seconds:.1f} s")
        items.append(("model", _esc("; ".join(model))))
    elif isinstance(run, CompareRecord) and run.selected:
        items.append(("selected model", _esc(f"{run.selected} (by {_selection_label(run)})")))
    if lims:
        items.append(
            ("limitations", "<ul>" + "".join(f"<li>{_esc(x)}</li>" for x in lims) + "</ul>")
        )
    else:
        items.append(("limitations", "none recorded in the results"))
    versions = (run.versions if run else None) or {}
    if versions:
        items.append(("versions", _esc(", ".join(f"{k} {v}" for k, v in versions.items()))))
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    out = f'<dl class="card">{dl}</dl>'
    if spec:
        out += (
            "<details><summary>Full spec of the run</summary><pre>"
            + _esc(json.dumps(spec, indent=1, default=str))
            + "</pre></details>"
        )
    return out
