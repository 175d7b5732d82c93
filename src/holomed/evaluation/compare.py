"""The comparison harness: every fusion strategy, each modality alone,
leave-one-modality-out and classical baselines, on the same patient-level splits,
over several seeds, with bootstrap CIs.

Honest selection: each strategy's hyper-parameters (``evaluation.grid``, dotted spec
paths such as ``training.weight_decay``) and the selected strategy are chosen by
stratified CV *inside the training patients* of each outer split; test patients are
only ever predicted. With a k-fold outer split every patient is predicted once per
seed (out of fold) and metrics are computed on the pooled predictions.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from holomed.cohort import Cohort, inner_folds, patient_splits
from holomed.evaluation.baselines import BASELINES, ClassicalBaseline, ScoreBaseline
from holomed.evaluation.metrics import LOWER_IS_BETTER, compute_metrics, metric_names, summarise
from holomed.evaluation.resources import Measure
from holomed.evaluation.trust import curves
from holomed.explain.features import baseline_shap, top_features
from holomed.explain.modality import modality_shapley
from holomed.model import Model
from holomed.spec import Spec, parse_spec

Tick = Callable[[str], None]
_CONTRIB_KEYS = ("metric", "global", "global_loo", "value_all", "value_none")


def apply_overrides(spec: Spec, overrides: dict[str, Any]) -> Spec:
    """A copy of ``spec`` with dotted-path fields replaced, re-validated. A modality is
    addressed by its name or position: ``modalities.series.encoder.name``."""
    if not overrides:
        return spec
    data = spec.model_dump(mode="json", exclude={"base_dir"})
    for path, value in overrides.items():
        node: Any = data
        keys = path.split(".")
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                names = [m.get("name") if isinstance(m, dict) else None for m in node]
                if k in names:
                    node = node[names.index(k)]
                elif k.isdigit() and int(k) < len(node):
                    node = node[int(k)]
                else:
                    where = ".".join(keys[: i + 1])
                    raise ValueError(f"{path}: no item {where!r} (names: {names})")
                continue
            if k not in node or not isinstance(node[k], dict | list):
                node[k] = {}
            node = node[k]
        if isinstance(node, list):
            raise ValueError(f"{path}: cannot set a list item by this path")
        node[keys[-1]] = value
    return parse_spec(data, where="evaluation.grid", base_dir=spec.base_dir)


def grid_points(spec: Spec) -> list[dict[str, Any]]:
    grid = spec.evaluation.grid
    if not grid:
        return [{}]
    keys = sorted(grid)
    return [
        dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid[k] for k in keys))
    ]


def _score(task: str, metric: str, y: np.ndarray, out: np.ndarray) -> float:
    v = compute_metrics(task, y, out)[metric]
    return -v if metric in LOWER_IS_BETTER else v


def cv_score(spec: Spec, train: Cohort, fusion: str, seed: int) -> float:
    """Mean inner-CV score (higher is better) of one configuration on training patients."""
    ev = spec.evaluation
    scores = []
    for a, b in inner_folds(train.y, ev.selection_folds, seed, train.task, train.groups):
        m = Model(spec, fusion=fusion, seed=seed).fit(train.subset(a))
        scores.append(
            _score(train.task, ev.selection_metric, train.y[b], m.predict_proba(train.subset(b)))
        )
    return float(np.nanmean(scores))


def _empty(n: int, task: str, k: int) -> np.ndarray:
    return np.full(n, np.nan) if task == "regression" else np.full((n, k), np.nan)


def compare(
    spec: Spec,
    cohort: Cohort,
    fusions: list[str],
    seeds: int | None = None,
    tick: Tick | None = None,
    baselines: bool | None = None,
    ablations: bool | None = None,
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Run the whole comparison; returns (results dict, per-entry per-seed outputs
    over the evaluated patients, in ``results['eval_ids']`` order)."""
    t_start = time.perf_counter()
    ev = spec.evaluation
    seeds = seeds or ev.seeds
    baselines = ev.baselines if baselines is None else baselines
    ablations = ev.ablations if ablations is None else ablations
    tick = tick or (lambda _msg: None)
    task, n = cohort.task, len(cohort)
    k = len(cohort.classes or []) or 1
    metric = ev.selection_metric
    if metric not in metric_names(task):
        raise ValueError(
            f"evaluation.selection_metric {metric!r} is not a {task} metric; "
            f"expected one of {metric_names(task)}"
        )
    splits = patient_splits(cohort, spec.split, seed=spec.training.seed)
    outputs: dict[str, list[np.ndarray]] = {}
    meta: dict[str, dict[str, Any]] = {}
    selection_log = []
    contributions: dict[str, dict[str, Any]] = {}
    features: dict[str, dict[str, Any]] = {}
    names_all = spec.modality_names

    def record(
        name: str,
        group: str,
        seed: int,
        te: np.ndarray,
        out: np.ndarray,
        seconds: float,
        params: Any = None,
    ) -> None:
        if name not in outputs:
            outputs[name] = [_empty(n, task, k) for _ in range(seeds)]
            meta[name] = {"group": group, "fit_seconds": [], "peak_rss_mb": 0.0, "params": []}
        outputs[name][seed][te] = out
        meta[name]["fit_seconds"].append(seconds)
        if params is not None and params not in meta[name]["params"]:
            meta[name]["params"].append(params)

    for fold, (tr, te) in enumerate(splits):
        train, test = cohort.subset(tr), cohort.subset(te)
        # 1. selection by CV on training patients only
        chosen: dict[str, dict[str, Any]] = {}
        scores: dict[str, dict[str, float]] = {}
        points = grid_points(spec)
        single = len(fusions) * len(points) == 1  # one candidate: nothing to select
        for f in fusions:
            best, best_s = {}, -np.inf
            scores[f] = {}
            for point in points:
                s = (
                    None
                    if single
                    else cv_score(apply_overrides(spec, point), train, f, spec.training.seed)
                )
                scores[f][json.dumps(point, sort_keys=True)] = s
                tick(f"select {f}")
                if s is None or s > best_s:
                    best, best_s = point, (-np.inf if s is None else s)
            chosen[f] = best
        selected = fusions[0] if single else max(fusions, key=lambda f: max(scores[f].values()))
        selection_log.append(
            {"fold": fold, "cv_scores": scores, "chosen_params": chosen, "selected": selected}
        )
        # 2. every strategy, refitted on all training patients, per seed
        for f in fusions:
            fspec = apply_overrides(spec, chosen[f])
            with Measure() as mem:
                for s in range(seeds):
                    m = Model(fspec, fusion=f, seed=s).fit(train)
                    record(f, "fusion", s, te, m.predict_proba(test), m.fit_seconds_, chosen[f])
                    if s == 0 and fold == 0 and ev.explain and len(names_all) > 1:
                        c = modality_shapley(m, test)
                        contributions[f] = {k: c[k] for k in _CONTRIB_KEYS}
                    tick(f"fit {f} seed {s}")
            meta[f]["peak_rss_mb"] = max(meta[f]["peak_rss_mb"], mem.peak_rss_mb)
        # 3. ablations with the selected strategy and its parameters
        sspec = apply_overrides(spec, chosen[selected])
        names = spec.modality_names
        subsets = []
        if ablations and len(names) > 1:
            subsets = [(f"single:{m}", "single", [m]) for m in names]
            if len(names) > 2:
                subsets += [
                    (f"without:{m}", "without", [x for x in names if x != m]) for m in names
                ]
        for label, group, mods in subsets:
            with Measure() as mem:
                for s in range(seeds):
                    m = Model(sspec, fusion=selected, seed=s, modalities=mods).fit(train)
                    record(
                        label,
                        group,
                        s,
                        te,
                        m.predict_proba(test),
                        m.fit_seconds_,
                        {"fusion": selected, **chosen[selected]},
                    )
                    tick(f"fit {label} seed {s}")
            meta[label]["peak_rss_mb"] = max(meta[label]["peak_rss_mb"], mem.peak_rss_mb)
        # 4. existing risk scores alone (SAPS-I, SOFA ...), then classical baselines
        for col in ev.score_baselines if baselines else []:
            sb = ScoreBaseline(col).fit(train)
            for s in range(seeds):  # deterministic: the same output for every seed
                record(
                    f"score:{col}", "baseline", s, te, sb.predict_proba(test), 0.0, sb.describe()
                )
        for b in BASELINES if baselines else []:
            label = f"baseline:{b}"
            with Measure() as mem:
                for s in range(seeds):
                    bl = ClassicalBaseline(spec, b, seed=s).fit(train)
                    record(
                        label,
                        "baseline",
                        s,
                        te,
                        bl.predict_proba(test),
                        bl.fit_seconds_,
                        bl.describe(),
                    )
                    if s == 0 and fold == 0 and ev.explain and task != "multilabel":
                        if len(names_all) > 1:
                            c = modality_shapley(bl, test)
                            contributions[label] = {k: c[k] for k in _CONTRIB_KEYS}
                        names = bl.feature_names()
                        features[label] = {
                            "method": "SHAP (linear / tree explainer)",
                            "top": top_features(baseline_shap(bl, test), names, 10),
                        }
                    tick(f"fit {label} seed {s}")
            meta[label]["peak_rss_mb"] = max(meta[label]["peak_rss_mb"], mem.peak_rss_mb)

    evaluated = np.unique(np.concatenate([te for _, te in splits]))
    y = cohort.y[evaluated]
    entries = {}
    final_outputs = {}
    for name, outs in outputs.items():
        outs = [o[evaluated] for o in outs]
        final_outputs[name] = outs
        entries[name] = {
            "group": meta[name]["group"],
            "curves": curves(y, outs[0]) if task == "binary" else {},
            "contributions": contributions.get(name),
            "features": features.get(name),
            "metrics": summarise(task, y, outs, ev.n_bootstrap, seed=spec.training.seed),
            "fit_seconds": float(np.mean(meta[name]["fit_seconds"])),
            "fit_seconds_total": float(np.sum(meta[name]["fit_seconds"])),
            "peak_rss_mb": round(meta[name]["peak_rss_mb"], 1),
            "params": meta[name]["params"],
        }
    sel_names = [s["selected"] for s in selection_log]
    selected = max(set(sel_names), key=sel_names.count)
    sign = -1 if metric in LOWER_IS_BETTER else 1
    board = sorted(
        entries,
        key=lambda e: (
            -sign * np.nan_to_num(entries[e]["metrics"][metric]["mean"], nan=-np.inf * sign)
        ),
    )
    from holomed.bundle import run_card, versions

    card = run_card(spec)
    results = {
        "kind": "compare",
        "dataset": spec.dataset,
        "synthetic": card["synthetic"],
        "intended_use": card["intended_use"],
        "limitations": card["limitations"],
        "contributions_note": "modality Shapley of the seed-0 model of the first outer split",
        "task": task,
        "classes": cohort.classes,
        "split": spec.split.model_dump(),
        "n_splits": len(splits),
        "seeds": list(range(seeds)),
        "selection": "cv-on-train",
        "selection_metric": metric,
        "selection_folds": ev.selection_folds,
        "selected": selected,
        "selection_detail": selection_log,
        "strategies": entries,
        "leaderboard": board,
        "n_evaluated": int(len(evaluated)),
        "eval_ids": cohort.ids[evaluated].tolist(),
        "y": y.tolist(),
        "cohort": cohort.summary(),
        "excluded": cohort.excluded,
        "excluded_summary": count_reasons(cohort.excluded),
        "n_bootstrap": ev.n_bootstrap,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "versions": versions(),
        "spec": spec.model_dump(mode="json", exclude={"base_dir"}),
    }
    return results, final_outputs


def count_reasons(excluded: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in excluded:
        if e.get("scope") == "value":  # values set to missing; 'count' of them
            key = f"values of modality {e['modality']}: {e['reason']}"
        elif "modality" in e:
            key = f"modality {e['modality']}: {e['reason'].split(' in ')[0]}"
        else:
            key = f"{e.get('scope', 'patient')}: {e['reason']}"
        out[key] = out.get(key, 0) + int(e.get("count", 1))
    return out


def count_fits(
    spec: Spec, fusions: list[str], seeds: int, n_splits: int, baselines: bool, ablations: bool
) -> int:
    m = len(spec.modality_names)
    per = len(fusions) * len(grid_points(spec)) + len(fusions) * seeds
    if ablations and m > 1:
        per += (m + (m if m > 2 else 0)) * seeds
    if baselines:
        per += len(BASELINES) * seeds
    return per * n_splits
