"""Render BENCHMARKS.md tables from benchmark JSON results (never recomputed).

python benchmarks/render.py runs/bench > runs/bench/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ci(m: dict) -> str:
    if m.get("mean") is None:
        return "—"
    lo, hi = m["ci"]
    rng = "" if lo is None else f" [{lo:.3f}, {hi:.3f}]"
    return f"{m['mean']:.3f} ± {m['sd']:.3f}{rng}"


def compare_table(res: dict) -> str:
    metrics = ["accuracy", "f1", "auroc", "auprc", "brier"]
    if res.get("task") == "multilabel":
        metrics = ["auroc", "auprc", "f1_macro", "f1_micro", "hamming_loss"]
    lines = [
        f"Selected by {res['selection_folds']}-fold CV on the training patients "
        f"({res['selection_metric']}): **{res['selected']}** "
        f"({res.get('selected_family', '')}). "
        f"{len(res['seeds'])} seeds; mean ± sd over seeds [95 % stratified bootstrap CI of "
        f"the seed-mean, {res['n_bootstrap']} resamples, {res['n_evaluated']} test patients]. "
        f"Whole run: {res['total_seconds']:.0f} s.",
        "",
        "| entry | group | " + " | ".join(metrics) + " | fit s (mean) | peak RSS MB |",
        "|---" * (len(metrics) + 4) + "|",
    ]
    for name in res["leaderboard"]:
        e = res["strategies"][name]
        star = " (selected)" if name == res["selected"] else ""
        lines.append(
            f"| {name}{star} | {e['group']} | "
            + " | ".join(ci(e["metrics"][m]) for m in metrics)
            + f" | {e['fit_seconds']:.2f} | {e['peak_rss_mb']:.0f} |"
        )
    detail = res["selection_detail"]
    lines += [
        "",
        "Inner-CV scores (mean over inner folds of the training patients) used for selection, "
        "per outer split; the chosen parameters of searched or grid-tuned candidates:",
        "",
        "| candidate | " + " | ".join(f"split {d['fold']}" for d in detail) + " | parameters |",
        "|---" * (len(detail) + 2) + "|",
    ]
    names = sorted({n for d in detail for n in d["cv_scores"]})
    for n in names:
        cells = []
        for d in detail:
            v = d["cv_scores"].get(n)
            mark = " ★" if d.get("selected") == n else ""
            cells.append("—" if v is None else f"{v:.4f}{mark}")
        params = (detail[0].get("chosen_params") or {}).get(n)
        shown = "" if not params else f"`{json.dumps(params, sort_keys=True)[:120]}`"
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {shown} |")
    return "\n".join(lines)


def _v(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    lo, hi = m.get("ci") or (None, None)
    if lo is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def fit_table(res: dict) -> str:
    """Test metrics of one fit run, calibration before/after, and its subgroup audit."""
    m, mu = res["metrics"], res["metrics_uncalibrated"]
    where = (
        f"{res['evaluation']}; seed {res['seed']}"
        if res.get("evaluation")
        else f"{res['n_train']} training / {res['n_test']} test patients (first outer fold, "
        f"seed {res['seed']})"
    )
    lines = [
        f"`{res['fusion']}`, {where}; 95 % bootstrap CIs.",
        "",
        "| metric | uncalibrated | calibrated |",
        "|---|---|---|",
    ]
    for k in ("auroc", "auprc", "brier", "ece", "accuracy", "f1"):
        if k in m:
            lines.append(f"| {k} | {ci_fit(mu[k])} | {ci_fit(m[k])} |")
    cal = res.get("calibration") or {}
    if cal:
        t = cal.get("temperature")
        lines += [
            "",
            f"Calibration: {cal.get('method')}"
            + (f" (T = {t:.3f})" if isinstance(t, float) else "")
            + f", fitted on {cal.get('fitted_on')}; ECE {cal['before']['ece']:.3f} → "
            f"{cal['after']['ece']:.3f}, Brier {cal['before']['brier']:.3f} → "
            f"{cal['after']['brier']:.3f}.",
        ]
    fair = res.get("fairness") or {}
    for attr, a in (fair.get("attributes") or {}).items():
        lines += [
            "",
            f"Subgroups by **{attr}** (threshold {fair.get('threshold')}, "
            f"{fair.get('n_boot')} bootstrap resamples; groups under "
            f"{fair.get('min_group')} patients are not scored):",
            "",
            "| group | n | AUROC | TPR | FPR | PPV | ECE |",
            "|---|---|---|---|---|---|---|",
        ]
        for g, r in a["groups"].items():
            if r.get("too_small"):
                lines.append(f"| {g} | {r['n']} | too small | | | | |")
                continue
            cells = " | ".join(_v(r.get(k)) for k in ("auroc", "tpr", "fpr", "ppv", "ece"))
            lines.append(f"| {g} | {r['n']} | {cells} |")
        flagged = [
            f"{k} {gp['value']:.3f} ({gp['between'][0]} vs {gp['between'][1]}, CI "
            f"[{gp['ci'][0]:.3f}, {gp['ci'][1]:.3f}], permutation p "
            f"{gp.get('p_value', float('nan')):.3f})"
            for k, gp in (a.get("gaps") or {}).items()
            if gp.get("flag")
        ]
        lines += [
            "",
            "Flagged gaps (permutation test of the largest gap, p < 0.05): "
            + ("; ".join(flagged) or "none")
            + ".",
        ]
    return "\n".join(lines)


def ci_fit(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"


def contributions_table(res: dict) -> str:
    rows = {n: e["contributions"] for n, e in res["strategies"].items() if e.get("contributions")}
    if not rows:
        return ""
    mods = list(next(iter(rows.values()))["global"])
    metric = next(iter(rows.values()))["metric"]
    lines = [
        f"Global modality Shapley values of test {metric} (seed-0 model; exact over all "
        "modality subsets; an absent modality is masked, never imputed from test data), "
        "beside leave-one-out deltas (metric with all minus metric without the modality):",
        "",
        "| strategy | "
        + " | ".join(f"{m} Shapley | {m} LOO" for m in mods)
        + f" | {metric} all | {metric} none |",
        "|---" * (2 * len(mods) + 3) + "|",
    ]
    for n, c in rows.items():
        cells = " | ".join(f"{c['global'][m]:+.3f} | {c['global_loo'][m]:+.3f}" for m in mods)
        lines.append(f"| {n} | {cells} | {c['value_all']:.3f} | {c['value_none']:.3f} |")
    return "\n".join(lines)


def robustness_table(curve: dict) -> str:
    metric = curve["metrics"][0]
    out = []
    for sc in curve["scenarios"]:
        out += [
            f"Missing **{sc}** ({metric}, mean over {len(curve['seeds'])} seeds, "
            f"{curve['n_test']} test patients):",
            "",
            "| entry | " + " | ".join(f"{r:.0%}" for r in curve["rates"]) + " |",
            "|---" * (len(curve["rates"]) + 1) + "|",
        ]
        for name, d in curve["curves"].items():
            out.append(
                f"| {name} | " + " | ".join(f"{v:.3f}" for v in d[sc][metric]["mean"]) + " |"
            )
        out.append("")
    return "\n".join(out)


def predict_table(p: dict) -> str:
    lines = [
        f"torch threads: {p['threads']}",
        "",
        "| strategy | batch patients | patients/s | single p50 ms | single p95 ms |",
        "|---|---|---|---|---|",
    ]
    for f, r in p["results"].items():
        lines.append(
            f"| {f} | {r['batch_patients']} | {r['patients_per_second']:,} | "
            f"{r['single_ms_p50']} | {r['single_ms_p95']} |"
        )
    return "\n".join(lines)


def explain_table(e: dict) -> str:
    return (
        f"{e['n_patients']} ROSMAP test patients, fusion `{e['fusion']}`, "
        f"torch threads {e['threads']}: modality Shapley (exact, 2^M subsets) "
        f"{e['shapley_seconds']:.2f} s + Integrated Gradients ({e['ig_steps']} steps, all "
        f"modalities) {e['ig_seconds']:.2f} s = **{e['total_seconds']:.2f} s**."
    )


def main(folder: str) -> None:
    root = Path(folder)
    parts = []
    for sub, title, fn in (
        ("rosmap/results.json", "ROSMAP comparison", compare_table),
        ("rosmap/results.json", "ROSMAP modality contributions", contributions_table),
        ("explain.json", "Explanation speed", explain_table),
        ("rosmap_robustness/robustness.json", "ROSMAP robustness", robustness_table),
        ("predict.json", "Prediction speed", predict_table),
        ("physionet2012/results.json", "PhysioNet 2012 comparison", compare_table),
        ("physionet2012_grud/results.json", "PhysioNet 2012, GRU-D joint", compare_table),
        (
            "physionet2012_fit/results.json",
            "PhysioNet 2012 fit: calibration and subgroups",
            fit_table,
        ),
        ("cpsc2018/results.json", "CPSC 2018 comparison", compare_table),
        ("covid_cxr/results.json", "COVID CXR comparison", compare_table),
        ("covid_cxr/results.json", "COVID CXR modality contributions", contributions_table),
    ):
        p = root / sub
        if p.exists():
            parts += [f"### {title}", "", fn(json.loads(p.read_text())), ""]
    print("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bench")
