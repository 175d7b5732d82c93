"""The comparison harness: every candidate (fusion strategies, classical learners, a
stack of per-modality learners, a greedy ensemble), each modality alone,
leave-one-modality-out, on the same patient-level splits, over several seeds, with
bootstrap CIs.

Honest selection (:mod:`holomed.evaluation.select`): hyper-parameters and the selected
candidate are chosen by CV *inside the training patients* of each outer split; test
patients are only ever predicted. With a k-fold outer split every patient is predicted
once per seed (out of fold) and metrics are computed on the pooled predictions.

What "selected" means:

- the entry ``selection (per fold)`` is the evaluated *procedure*: in each outer split,
  the test patients are predicted by the candidate that split's inner CV chose;
- ``results["selected"]`` is the *deployable* choice: the candidate with the best mean
  inner-CV score over all outer splits (with one split, that split's choice). ``holomed
  fit --from RUN`` trains it on all labelled patients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from holomed.candidate import (
    CLASSICAL,
    candidate_class,
    candidate_entry,
    canonical,
    default_candidates,
)
from holomed.candidates.ensemble import blend
from holomed.cohort import Cohort, count_reasons, patient_splits  # noqa: F401 (re-exported)
from holomed.evaluation.baselines import ScoreBaseline
from holomed.evaluation.resources import Measure
from holomed.evaluation.select import (
    Selection,
    Tick,
    build_candidate,
    choose,
    empty_outputs,
    grid_points,
    no_tick,
    output_columns,
    select,
)
from holomed.evaluation.trust import curves
from holomed.executor import Executor, make_executor
from holomed.explain.features import top_features
from holomed.explain.modality import modality_shapley
from holomed.provenance import run_card, versions
from holomed.results import CompareRecord, MetricSummary, StrategyEntry
from holomed.scoring.calibration import reliability
from holomed.scoring.metrics import (
    LOWER_IS_BETTER,
    calibration_stats,
    metric_names,
    summarise,
)
from holomed.scoring.survival import survival_summary
from holomed.spec import Spec, SpecError, override_spec

_CONTRIB_KEYS = ("metric", "global", "global_loo", "value_all", "value_none")


def apply_overrides(spec: Spec, overrides: dict[str, Any], where: str = "evaluation.grid") -> Spec:
    """A copy of ``spec`` with dotted-path fields replaced (see :func:`override_spec`)."""
    return override_spec(spec, overrides, where)


def _group(name: str) -> str:
    """Leaderboard group: the historical classical baselines stay ``baseline``; other
    classical learners are ``classical``."""
    if canonical(name) in CLASSICAL:
        return "baseline"
    fam = candidate_class(name).family
    return {"neural": "fusion", "classical": "classical", "stacking": "stacking"}.get(fam, fam)


def entries_to_select(spec: Spec, fusions: list[str], baselines: bool) -> list[str]:
    """The candidates a comparison selects from: the fusions, then (with baselines) the
    spec's ``evaluation.candidates`` (classical learners, ``stack``, ``ensemble``)."""
    names = list(fusions)
    task = spec.target.task
    if baselines:
        extra = spec.evaluation.candidates
        extra = default_candidates(task) if extra is None else extra
        names += [canonical(c) for c in extra if canonical(c) not in names]
    wrong = [n for n in names if task not in candidate_class(n).tasks]  # unknown: fails here
    if wrong:
        raise SpecError(
            f"evaluation.candidates: {wrong} cannot learn a {task} task; "
            f"the defaults for it are {default_candidates(task)}"
        )
    return names


def compare(
    spec: Spec,
    cohort: Cohort,
    fusions: list[str],
    seeds: int | None = None,
    tick: Tick | None = None,
    baselines: bool | None = None,
    ablations: bool | None = None,
    executor: Executor | None = None,
    inner: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Run the whole comparison; returns (results, per-entry per-seed outputs over the
    evaluated patients, in ``results['eval_ids']`` order). The results are a
    :class:`~holomed.results.CompareRecord` as :meth:`~holomed.results.Record.to_dict`
    (numbers as computed, NaN kept; ``to_json`` of the same record is what is written
    to ``results.json``). The fits run through
    ``executor`` (default: the spec's ``evaluation.executor``,
    :mod:`holomed.executor`). With a list ``inner``, one record per outer split
    is appended to it: ``rows`` (the training patients' positions in ``cohort``), ``y``,
    the inner ``folds`` and every candidate's out-of-fold predictions per repeat
    (``oofs``), as selection saw them."""
    t_start = time.perf_counter()
    ev = spec.evaluation
    seeds = seeds or ev.seeds
    baselines = ev.baselines if baselines is None else baselines
    ablations = ev.ablations if ablations is None else ablations
    tick = tick or no_tick
    task, n = cohort.task, len(cohort)
    k = output_columns(spec, cohort)
    metric = ev.selection_metric
    if metric not in metric_names(task):
        raise ValueError(
            f"evaluation.selection_metric {metric!r} is not a {task} metric; "
            f"expected one of {metric_names(task)}"
        )
    names = entries_to_select(spec, fusions, baselines)
    fitted = [c for c in names if c != "ensemble"]
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
            outputs[name] = [empty_outputs(n, task, k) for _ in range(seeds)]
            meta[name] = {"group": group, "fit_seconds": [], "peak_rss_mb": 0.0, "params": []}
        outputs[name][seed][te] = out
        meta[name]["fit_seconds"].append(seconds)
        if params is not None and params not in meta[name]["params"]:
            meta[name]["params"].append(params)

    own = executor is None
    tr_spec = spec.training
    several = tr_spec.num_nodes > 1 or not (
        tr_spec.devices in (1, "1", "auto") or tr_spec.devices == [0]
    )
    # a fit that itself runs on several processes (DDP) is not run beside others
    kind = "serial" if several and ev.executor == "auto" else ev.executor
    executor = executor or make_executor(kind, ev.workers, ev.ray_address)
    shared = (spec, cohort)

    def run(jobs: list[FitJob]) -> list[tuple[FitJob, FitResult]]:
        def done(i: int, _res: FitResult) -> None:
            tick(f"fit {jobs[i].entry} seed {jobs[i].seed}")

        return list(zip(jobs, executor.map(fit_job, shared, jobs, done), strict=True))

    def keep(job: FitJob, res: FitResult) -> None:
        record(job.entry, job.group, job.seed, job.te, res.out, res.seconds, res.params)
        meta[job.entry]["peak_rss_mb"] = max(meta[job.entry]["peak_rss_mb"], res.peak_rss_mb)
        if res.contributions is not None:
            contributions[job.entry] = res.contributions
        if res.features is not None:
            features[job.entry] = res.features

    derived: dict[str, set[str]] = {}  # entries made of other entries' fits
    try:
        for fold, (tr, te) in enumerate(splits):
            train = cohort.subset(tr)
            # 1. selection by inner CV on training patients only
            if len(names) == 1 and not (ev.grid or ev.search.trials or ev.search.seconds):
                sel = Selection({}, {}, names[0])  # one candidate: nothing to select
                chosen: dict[str, Any] = {names[0]: None}
            else:
                sel = select(spec, train, names, spec.training.seed, tick, executor, (shared, tr))
                chosen = {nm: s.params for nm, s in sel.scored.items()}
            selection_log.append({"fold": fold, **sel.to_json()})
            if inner is not None and sel.scored:
                inner.append(
                    {
                        "rows": tr,
                        "y": train.y,
                        "folds": sel.folds,
                        "oofs": {nm: s.oofs for nm, s in sel.scored.items()},
                    }
                )
            # 2. every candidate, refitted on all training patients, per seed
            jobs = [
                FitJob(
                    candidate_entry(c),
                    _group(c),
                    c,
                    s,
                    None,
                    chosen.get(c),
                    tr,
                    te,
                    s == 0 and fold == 0 and ev.explain,
                )
                for c in fitted
                for s in range(seeds)
            ]
            test_out: dict[str, list[np.ndarray]] = {}
            for job, res in run(jobs):
                test_out.setdefault(job.candidate, []).append(res.out)
                keep(job, res)
            if sel.ensemble_weights:  # the members' test outputs, blended: no extra fit
                w = sel.ensemble_weights
                members = [candidate_entry(m) for m in w]
                for s in range(seeds):
                    out = blend([test_out[m][s] for m in w], list(w.values()))
                    cost = sum(meta[e]["fit_seconds"][-seeds + s] for e in members)
                    record("ensemble", "ensemble", s, te, out, cost, {"weights": w})
                derived.setdefault("ensemble", set()).update(members)
            for s in range(seeds):  # the procedure: this split's choice predicts its test patients
                pick = candidate_entry(sel.selected)
                out = outputs[pick][s][te]
                cost = meta[pick]["fit_seconds"][-seeds + s] if pick in meta else 0.0
                record(
                    SELECTION_ENTRY, "selected", s, te, out, cost, {"fold": fold, "choice": pick}
                )
                derived.setdefault(SELECTION_ENTRY, set()).update(derived.get(pick, {pick}))
            # 3. ablations with the best non-ensemble candidate and its parameters
            abl = sel.selected
            if abl == "ensemble":
                abl = max(
                    (x for x in sel.scored if x != "ensemble"), key=lambda x: sel.scored[x].score
                )
            subsets = []
            if ablations and len(names_all) > 1:
                subsets = [(f"single:{mo}", "single", [mo]) for mo in names_all]
                if len(names_all) > 2:
                    subsets += [
                        (f"without:{mo}", "without", [x for x in names_all if x != mo])
                        for mo in names_all
                    ]
            jobs = [
                FitJob(label, group, abl, s, mods, chosen.get(abl), tr, te, False)
                for label, group, mods in subsets
                for s in range(seeds)
            ]
            for job, res in run(jobs):
                res.params = {"candidate": abl, "params": chosen.get(abl)}
                keep(job, res)
            # 4. existing risk scores alone (SAPS-I, SOFA ...)
            for col in ev.score_baselines if baselines else []:
                sb = ScoreBaseline(col).fit(train)
                out = sb.predict_proba(cohort.subset(te))
                for s in range(seeds):  # deterministic: the same output for every seed
                    record(f"score:{col}", "baseline", s, te, out, 0.0, sb.describe())
        evaluated = np.unique(np.concatenate([te for _, te in splits]))
        # survival: the censoring distribution (Uno's C, td-AUROC, Brier) from every
        # labelled patient's follow-up, a label-only quantity shared by all candidates
        ctx = (
            {"horizons": spec.target.horizons, "reference": cohort.y} if task == "survival" else {}
        )
        y = cohort.y[evaluated]
        final_outputs = {name: [o[evaluated] for o in outs] for name, outs in outputs.items()}
        # the bootstrap CIs of every entry, on the executor's workers too (about 1 s each);
        # with split.group, whole persons are resampled
        groups = None if cohort.groups is None else cohort.groups[evaluated]
        jobs = [
            MetricsJob(task, y, outs, ev.n_bootstrap, spec.training.seed, ctx, groups)
            for outs in final_outputs.values()
        ]
        metrics_of = dict(zip(final_outputs, executor.map(metrics_job, shared, jobs), strict=True))
    finally:
        if own:
            executor.close()

    for name, parts in derived.items():  # memory of an entry made of others: their peak
        meta[name]["peak_rss_mb"] = max(meta[p]["peak_rss_mb"] for p in parts if p in meta)
    entries = {
        name: StrategyEntry(
            group=meta[name]["group"],
            curves=curves(y, outs[0]) if task == "binary" else {},
            calibration={
                **calibration_stats(y, np.mean(outs, 0)[:, 1]),
                "reliability": reliability(y, np.mean(outs, 0)),
            }
            if task == "binary"
            else None,
            contributions=contributions.get(name),
            features=features.get(name),
            metrics=metric_summaries(metrics_of[name]),
            survival=survival_summary(y, np.mean(outs, 0), spec.target.horizons, cohort.y)
            if task == "survival"
            else None,
            fit_seconds=float(np.mean(meta[name]["fit_seconds"])),
            fit_seconds_total=float(np.sum(meta[name]["fit_seconds"])),
            peak_rss_mb=round(meta[name]["peak_rss_mb"], 1),
            params=meta[name]["params"],
        )
        for name, outs in final_outputs.items()
    }
    selected, cv_mean = deployable_choice(selection_log, ev.selection_rule)
    card = run_card(spec)
    record = CompareRecord(
        dataset=spec.dataset,
        synthetic=card["synthetic"],
        intended_use=card["intended_use"],
        limitations=card["limitations"],
        contributions_note="modality Shapley of the seed-0 model of the first outer split",
        task=task,
        classes=cohort.classes,
        split=spec.split.model_dump(),
        n_splits=len(splits),
        seeds=list(range(seeds)),
        selection="cv-on-train",
        selection_rule=SELECTION_RULES[ev.selection_rule],
        selection_metric=metric,
        selection_folds=ev.selection_folds,
        selection_repeats=ev.selection_repeats,
        candidates=names,
        selected=candidate_entry(selected),
        selected_family=candidate_class(selected).family,
        selected_params=_deploy_params(selection_log, selected),
        selection_cv_mean=cv_mean,
        selection_detail=selection_log,
        strategies=entries,
        leaderboard=ranked(entries, metric),
        n_evaluated=int(len(evaluated)),
        eval_ids=cohort.ids[evaluated].tolist(),
        y=y.tolist(),
        cohort=cohort.summary(),
        excluded=cohort.excluded,
        excluded_summary=count_reasons(cohort.excluded),
        n_bootstrap=ev.n_bootstrap,
        total_seconds=round(time.perf_counter() - t_start, 1),
        versions=versions(),
        # the spec as run: the seeds, baselines and ablations of the call, not the file's
        spec=override_spec(
            spec,
            {
                "evaluation.seeds": seeds,
                "evaluation.baselines": baselines,
                "evaluation.ablations": ablations,
            },
            "compare",
        ).model_dump(mode="json", exclude={"base_dir"}),
    )
    return record.to_dict(), final_outputs


def metric_summaries(summary: dict[str, Any]) -> dict[str, MetricSummary]:
    """:func:`summarise`'s {metric: {mean, sd, ci, per_seed}} as records."""
    return {m: MetricSummary.from_json(v, f"metrics[{m!r}]") for m, v in summary.items()}


def ranked(entries: dict[str, StrategyEntry], metric: str) -> list[str]:
    """The entries' names, best first on ``metric`` (its direction:
    :data:`~holomed.scoring.metrics.LOWER_IS_BETTER`); undefined values last."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return sorted(
        entries,
        key=lambda e: -sign * np.nan_to_num(entries[e].metrics[metric].mean, nan=-np.inf * sign),
    )


def _params(model: Any, chosen: Any) -> Any:
    if chosen is not None or model.family == "neural":
        return chosen or {}
    return model.describe()


@dataclass
class FitJob:
    """One fit of a comparison: ``candidate`` at ``seed`` on the modalities ``mods``
    (None: all) with ``params``, trained on rows ``tr`` and predicting rows ``te``; with
    ``explain``, its modality Shapley values (and a baseline's top features) too."""

    entry: str
    group: str
    candidate: str
    seed: int
    mods: list[str] | None
    params: Any
    tr: np.ndarray
    te: np.ndarray
    explain: bool


@dataclass
class FitResult:
    out: np.ndarray
    seconds: float
    params: Any
    peak_rss_mb: float
    contributions: dict[str, Any] | None = None
    features: dict[str, Any] | None = None


def fit_job(shared: tuple[Spec, Cohort], job: FitJob) -> FitResult:
    """Run one :class:`FitJob` (in this process or an executor's worker)."""
    spec, cohort = shared
    train, test = cohort.subset(job.tr), cohort.subset(job.te)
    with Measure() as mem:
        m = build_candidate(spec, job.candidate, job.seed, job.mods, job.params).fit(train)
        out = m.predict_proba(test)
    res = FitResult(out, m.fit_seconds_, _params(m, job.params), mem.peak_rss_mb)
    if job.explain:
        if len(spec.modality_names) > 1:
            c = modality_shapley(m, test)
            res.contributions = {key: c[key] for key in _CONTRIB_KEYS}
        if job.entry.startswith("baseline:") and cohort.task != "multilabel":
            attr = m.feature_attributions(test)
            if attr:
                res.features = {
                    "method": "SHAP (exact linear / LightGBM TreeSHAP)",
                    "top": top_features(attr, m.feature_names(), 10),
                }
    return res


SELECTION_ENTRY = "selection (per fold)"
SELECTION_RULES = {
    "one_se": (
        "In each outer split, every candidate is scored on the inner folds of the training "
        "patients by the selection metric; the simplest candidate (linear < boosted trees < "
        "stack < network < ensemble) whose mean is within one standard error (paired "
        "per-fold difference) of the best mean predicts that split's test patients (entry "
        "'selection (per fold)'). The deployable choice ('selected') applies the same rule "
        "to the inner folds of all outer splits together."
    ),
    "best": (
        "In each outer split, every candidate is scored by the mean over inner folds of the "
        "training patients of the selection metric; the best one (within 0.001: the simplest "
        "of the tied, linear < boosted trees < stack < network < ensemble) predicts that "
        "split's test patients (entry 'selection (per fold)'). The deployable choice "
        "('selected') applies the same rule to the inner folds of all outer splits together."
    ),
}


@dataclass
class MetricsJob:
    """The bootstrap summary of one entry's per-seed outputs (:func:`summarise`)."""

    task: str
    y: np.ndarray
    outputs: list[np.ndarray]
    n_bootstrap: int
    seed: int
    context: dict[str, Any]
    groups: np.ndarray | None = None  # one id per row (split.group): persons resampled


def metrics_job(_shared: Any, job: MetricsJob) -> dict[str, Any]:
    """Run one :class:`MetricsJob` (here or in an executor's worker)."""
    return summarise(
        job.task,
        job.y,
        job.outputs,
        job.n_bootstrap,
        seed=job.seed,
        groups=job.groups,
        **job.context,
    )


def deployable_choice(
    log: list[dict[str, Any]], rule: str = "best"
) -> tuple[str, dict[str, float]]:
    """The selection rule applied to the inner folds of all outer splits together (each
    candidate's per-fold scores, paired by outer split and inner fold), and each
    candidate's mean inner-CV score over the outer splits."""
    scores: dict[str, list[float]] = {}
    folds: dict[str, list[float]] = {}
    for entry in log:
        k = max((len(v) for v in entry.get("cv_fold_scores", {}).values()), default=0)
        for name, v in entry.get("cv_scores", {}).items():
            scores.setdefault(name, []).append(v)
            f = list(entry.get("cv_fold_scores", {}).get(name, []))
            folds.setdefault(name, []).extend(f + [float("nan")] * (k - len(f)))
    if not scores:
        return log[0]["selected"], {}
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    if not any(folds.values()):
        return max(mean, key=lambda k: mean[k]), mean
    return choose(folds, rule), mean


def _deploy_params(log: list[dict[str, Any]], name: str) -> Any:
    """The chosen parameters of ``name`` in the outer split where it scored best."""
    best, params = -np.inf, None
    for entry in log:
        v = entry.get("cv_scores", {}).get(name)
        if v is not None and v > best:
            best, params = v, entry.get("chosen_params", {}).get(name)
    return params


def count_fits(
    spec: Spec, fusions: list[str], seeds: int, n_splits: int, baselines: bool, ablations: bool
) -> int:
    """The progress units a comparison makes: model fits, those of the inner CV
    (``selection_folds`` x ``selection_repeats`` per configuration scored) and the outer
    fits (one each); the greedy ensemble's selection counts one."""
    m = len(spec.modality_names)
    names = entries_to_select(spec, fusions, baselines)
    fitted = [c for c in names if c != "ensemble"]
    search = spec.evaluation.search
    ev = spec.evaluation
    inner = ev.selection_folds * ev.selection_repeats
    per = 0
    if len(names) > 1 or spec.evaluation.grid or search.trials or search.seconds:
        for c in fitted:
            cls = candidate_class(c)
            if cls.family == "neural" and spec.evaluation.grid:
                per += len(grid_points(spec)) * inner
            elif (
                search.trials
                and (search.candidates is None or c in search.candidates)
                and (cls.search_space(spec))
            ):
                per += search.trials * inner
            else:
                per += inner
        per += "ensemble" in names
    per += len(fitted) * seeds
    if ablations and m > 1:
        per += (m + (m if m > 2 else 0)) * seeds
    return per * n_splits
